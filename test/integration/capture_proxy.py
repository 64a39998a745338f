#!/usr/bin/env python3
"""A minimal capturing proxy, used only by test_mesh_hosts.py to show that the
capture rules of mesh_hosts work without ringtunnel. Not a product.

    capture_proxy.py [--mark 0x539] LISTEN...      (LISTEN: 127.0.0.1:15001, [::1]:15001)

For each accepted connection it reads SO_ORIGINAL_DST, connects to that
destination from a socket carrying SO_MARK (so the capture rules leave it
alone), relays bytes both ways (half-closes passed on), and prints one line:

    captured client=IP:PORT orig=IP:PORT upstream=IP:PORT     relayed
    loop client=IP:PORT orig=IP:PORT       the connection is one of its own
                                           upstream sockets, captured again:
                                           closed, not followed
    no-orig client=IP:PORT error=...       not a redirected connection: closed
    upstream-error client=... orig=... error=...

It prints "listening" once every listener is up. Every socket has a timeout;
it exits on SIGTERM (and dies with its parent: the harness's PDEATHSIG)."""

import os
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80
SO_MARK = getattr(socket, "SO_MARK", 36)
TIMEOUT = 20.0

out_lock = threading.Lock()
own_ports = set()           # local ports of this proxy's upstream sockets
own_lock = threading.Lock()


def say(line):
    with out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fmt(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def original_dst(sock):
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                struct.unpack_from("!H", raw, 2)[0])
    raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from("!H", raw, 2)[0]


def pump(src, dst):
    try:
        while True:
            b = src.recv(65536)
            if not b:
                break
            dst.sendall(b)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(conn, peer, mark):
    client = fmt(peer[0], peer[1])
    try:
        conn.settimeout(TIMEOUT)
        try:
            orig = original_dst(conn)
        except OSError as e:
            say("no-orig client=%s error=%s" % (client, e.strerror))
            return
        with own_lock:
            looped = peer[1] in own_ports
        if looped:
            say("loop client=%s orig=%s" % (client, fmt(*orig)))
            return
        up = socket.socket(conn.family, socket.SOCK_STREAM)
        try:
            up.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            up.bind(("::" if conn.family == socket.AF_INET6 else "0.0.0.0", 0))
            with own_lock:
                own_ports.add(up.getsockname()[1])   # before connect: a loop is seen
            up.settimeout(TIMEOUT)
            up.connect(orig)
        except OSError as e:
            say("upstream-error client=%s orig=%s error=%s" % (client, fmt(*orig), e))
            up.close()
            return
        say("captured client=%s orig=%s upstream=%s" % (client, fmt(*orig),
                                                       fmt(*up.getsockname()[:2])))
        t = threading.Thread(target=pump, args=(up, conn), daemon=True)
        t.start()
        pump(conn, up)
        t.join(TIMEOUT)
        up.close()
    finally:
        conn.close()


def accept_loop(ls, mark):
    while True:
        try:
            conn, peer = ls.accept()
        except OSError:
            return
        threading.Thread(target=serve, args=(conn, peer, mark), daemon=True).start()


def main(argv):
    mark = 0x539
    if len(argv) >= 2 and argv[0] == "--mark":
        mark = int(argv[1], 0)
        argv = argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    listeners = []
    for a in argv:
        host, port = parse(a)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        ls.bind((host, port))
        ls.listen(128)
        listeners.append(ls)
    for ls in listeners:
        threading.Thread(target=accept_loop, args=(ls, mark), daemon=True).start()
    say("listening")
    threading.Event().wait(120)     # bounded even if nobody stops it
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        os._exit(1)

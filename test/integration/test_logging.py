#!/usr/bin/env python3
"""A log output nobody reads never stalls the proxy.

unread-stderr: ringtunnel --workers 1 with its standard error (where the access
log and the operational messages go) connected to a pipe that this test does
not read while it relays 3000 short connections: 8 client threads, each
connection sends a few bytes, half-closes, must get them back byte-exact from
the echo target followed by EOF, and is closed; all 3000 must be done within
60 s. Their access lines come to ~500 KB, far more than the 64 KiB a pipe
holds: a proxy that writes its log on the worker thread stops relaying after
~400 connections, and the clients time out. Then the test reads the pipe and
stops the proxy (SIGTERM; it must exit 0 within 15 s, having written out what
it had queued): every line is a well-formed access line (strict format,
end=closed, the bytes each way) or a "ringtunnel: " message, no client has two
access lines, and every connection has its access line unless a
"ringtunnel: log: dropped N lines" message accounts for it (access lines plus
the N's add up to 3000 exactly)."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (STRICT_ACCESS_RE, TargetServer, Threads, binary, check,  # noqa: E402
                     ops_listen_off, check_kv, echo_handler, fail, fmt_addr, forward_arg, free_port, log,
                     parse_access_kv_line, reap, run_tests, sock_addr_str, spawn,
                     tcp_listen_ports)

CONNECTIONS = 3000
CLIENT_THREADS = 8
ALL_DONE_WITHIN = 60.0
CONN_TIMEOUT = 10.0
DROPPED_RE = re.compile(r"^ringtunnel: log: dropped (\d+) lines \(the log output did not keep up\)$")


def wait_listening(proc, addr, timeout=15.0):
    end = time.monotonic() + timeout
    while (socket.AF_INET, addr[1]) not in tcp_listen_ports():
        if proc.poll() is not None:
            fail("ringtunnel exited with code %s before listening" % proc.returncode)
        if time.monotonic() > end:
            fail("ringtunnel not listening on %s after %.0f s" % (fmt_addr(*addr), timeout))
        time.sleep(0.02)


def one_connection(listen, n):
    """Relays one short message through the proxy; returns the client address."""
    msg = b"connection %d\n" % n
    s = socket.create_connection(listen, timeout=CONN_TIMEOUT)
    try:
        me = sock_addr_str(s.getsockname())
        s.sendall(msg)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
        check(got == msg, "connection %d (%s): echo %r, sent %r" % (n, me, got, msg))
        return me
    finally:
        s.close()


def unread_stderr():
    target = TargetServer(echo_handler, conn_timeout=CONN_TIMEOUT, backlog=1024)
    proc = None
    try:
        listen = ("127.0.0.1", free_port())
        proc = spawn([binary()] + ops_listen_off(["--workers", "1", "--forward",
                                                   forward_arg(listen, target.addr)]),
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_listening(proc, listen)

        # client address -> the connection numbers that used it (the kernel may hand a source
        # port out again once an earlier connection from it is gone)
        clients = {}
        lock = threading.Lock()
        done = [0]

        def client(first):
            for n in range(first, CONNECTIONS, CLIENT_THREADS):
                me = one_connection(listen, n)
                with lock:
                    clients.setdefault(me, []).append(n)
                    done[0] += 1

        t0 = time.monotonic()
        th = Threads()
        for i in range(CLIENT_THREADS):
            th.start(client, i, name="client-%d" % i)
        try:
            th.join(ALL_DONE_WITHIN, "client threads")
        except Exception:
            log("%d of %d connections completed before the failure" % (done[0], CONNECTIONS))
            raise
        took = time.monotonic() - t0
        check(done[0] == CONNECTIONS, "%d of %d connections done" % (done[0], CONNECTIONS))
        log("%d connections relayed byte-exactly in %.1f s with nobody reading stderr"
            % (CONNECTIONS, took))

        # Now read: the proxy must write out what it queued, then exit cleanly.
        out = []
        reader = threading.Thread(target=lambda: out.append(proc.stderr.read()), daemon=True)
        reader.start()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            fail("ringtunnel did not exit within 15 s of SIGTERM")
        check(rc == 0, "ringtunnel exit code %s after SIGTERM" % rc)
        reader.join(10)
        check(out, "standard error not read to EOF within 10 s of the exit")
        text = out[0].decode("utf-8", "replace")
    finally:
        if proc is not None:
            reap(proc)
            if proc.stderr:
                proc.stderr.close()
        target.close()

    seen, dropped, messages = [], 0, 0
    for line in text.split("\n")[:-1]:
        if line.startswith("access "):
            e = parse_access_kv_line(line)
            check(STRICT_ACCESS_RE.match(line), "access line not of the documented form: %r"
                  % line)
            c = e["client"]
            check(clients.get(c), "access line for an unknown client, or more lines than"
                  " connections from it: %r" % line)
            # one of the connections from that address, by its size (ordered by the counts)
            sizes = [len(b"connection %d\n" % n) for n in clients[c]]
            check(e["bytes_up"] in sizes, "access line with a byte count no connection from %s"
                  " sent (%s): %r" % (c, sizes, line))
            clients[c].pop(sizes.index(e["bytes_up"]))
            seen.append(c)
            check_kv(e, end="closed", bytes_down=e["bytes_up"], target=fmt_addr(*target.addr))
        elif line.startswith("ringtunnel: "):
            messages += 1
            m = DROPPED_RE.match(line)
            if m:
                dropped += int(m.group(1))
        else:
            fail("a line that is neither an access line nor a message: %r" % line)
    check(text.endswith("\n"), "standard error ends in a partial line: %r" % text[-200:])
    check(len(seen) + dropped == CONNECTIONS,
          "%d access lines and %d reported dropped, for %d connections"
          % (len(seen), dropped, CONNECTIONS))
    log("read %d KiB: %d access lines, %d dropped (reported), %d other messages"
        % (len(text) // 1024, len(seen), dropped, messages))


if __name__ == "__main__":
    run_tests("logging", [
        ("unread-stderr", unread_stderr),
    ], 150)

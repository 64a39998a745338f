#!/usr/bin/env python3
"""Bulk relay: 64 concurrent connections, 4 MiB each way at the same time,
byte-exact (sha256 on both sides), access-log byte counts and end=closed.

Runs: default flags; --tcp-splice; --workers 1 --buffer-sizes 1k,4k,16k;
a starved pool (4 buffers per class for 128 directions, so receives run out of
buffers, -ENOBUFS, all the time and must wait for buffers to come back, with
plain sendmsg and plain fds); IPv6 ([::1]) listen and target. After each run the proxy must exit 0 on
SIGTERM.

relay-bulk-then-small: one connection, 20 rounds of 1 MiB from the client
followed at once by a 16-byte request, each answered by a 16-byte reply from
the target; the last round's request is followed by the client's EOF, which the
target must see before it replies and closes. A bulk read makes the worker's
next wait gather completions (--ring-min-wait); that wait must still end when
the small request or reply comes, so all rounds must finish within 10 s (each
takes milliseconds; a wait that held on for more data, or until its 1 s
ceiling, would take seconds or forever). Run with the default min-wait and
with 1ms."""

import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, Threads, check, check_entry, fmt_addr,  # noqa: E402
                     forward_arg, free_port, connect, log, recv_exact, recv_until_eof,
                     run_tests, send_stream, sock_addr_str, time_left)

NCONN = int(os.environ.get("RINGTUNNEL_RELAY_CONNS", "64"))
SIZE = 4 * 1024 * 1024
DEADLINE = 280


def relay_run(run_id, host, flags):
    def seed_up(i):
        return 1000 * run_id + 2 * i + 1

    def seed_down(i):
        return 1000 * run_id + 2 * i + 2   # differs from every upstream seed

    results = {}     # (i, dir, 'sent'|'recv') -> (nbytes, sha256hex)
    clients = {}     # i -> client address string as the access log writes it

    def target_handler(conn, peer):
        hdr = recv_exact(conn, 8)
        (i,) = struct.unpack("!Q", hdr)
        check(0 <= i < NCONN, "target got a bad connection id %d" % i)
        th = Threads()

        def send_down():
            results[(i, "down", "sent")] = send_stream(conn, seed_down(i), SIZE)
            conn.shutdown(socket.SHUT_WR)

        th.start(send_down, name="target-send-%d" % i)
        results[(i, "up", "recv")] = recv_until_eof(conn, limit=SIZE, prefix=hdr)
        th.join(max(5, time_left() - 10), "target sender")
        conn.close()

    target = TargetServer(target_handler, host=host, conn_timeout=60)
    try:
        listen = (host, free_port(host))
        proxy = Proxy(flags + ["--forward", forward_arg(listen, target.addr)], listens=[listen])

        def client(i):
            s = connect(listen, timeout=60)
            try:
                clients[i] = sock_addr_str(s.getsockname())
                th = Threads()

                def send_up():
                    results[(i, "up", "sent")] = send_stream(
                        s, seed_up(i), SIZE, prefix=struct.pack("!Q", i))
                    s.shutdown(socket.SHUT_WR)

                th.start(send_up, name="client-send-%d" % i)
                results[(i, "down", "recv")] = recv_until_eof(s, limit=SIZE)
                th.join(max(5, time_left() - 10), "client sender")
            finally:
                s.close()

        t0 = time.monotonic()
        cl = Threads()
        for i in range(NCONN):
            cl.start(client, i, name="client-%d" % i)
        budget = max(10, min(60, time_left() - 20))
        cl.join(budget, "client connections")
        target.join(10)
        dt = time.monotonic() - t0
        check(target.accepted == NCONN, "target accepted %d connections, expected %d"
              % (target.accepted, NCONN))
        for i in range(NCONN):
            for d in ("up", "down"):
                sent = results.get((i, d, "sent"))
                got = results.get((i, d, "recv"))
                check(sent is not None and got is not None,
                      "connection %d %s: missing result (sent=%r recv=%r)" % (i, d, sent, got))
                check(sent[0] == SIZE, "connection %d %s: sent %d bytes, expected %d"
                      % (i, d, sent[0], SIZE))
                check(got == sent, "connection %d %s: received %d bytes sha256 %s, sent %d "
                      "bytes sha256 %s" % (i, d, got[0], got[1][:16], sent[0], sent[1][:16]))
        log("%d connections x %d MiB each way: all %d streams byte-exact (sha256), %.1f s, "
            "%.0f MiB/s total" % (NCONN, SIZE >> 20, 2 * NCONN, dt,
                                  2 * NCONN * SIZE / (1 << 20) / dt))
        entries = proxy.wait_access(clients.values(), timeout=5)
        for e in entries.values():
            check_entry(e, listener=fmt_addr(*listen), target=fmt_addr(*target.addr),
                        bytes_up=SIZE, bytes_down=SIZE, end="closed")
        log("access log: %d entries, each listener=%s target=%s bytes_up=bytes_down=%d end=closed"
            % (len(entries), fmt_addr(*listen), fmt_addr(*target.addr), SIZE))
        proxy.stop_ok()
        log("ringtunnel exited 0 on SIGTERM")
    finally:
        target.close()


TAIL_ROUNDS = 20
TAIL_BULK = 1 << 20
TAIL_MSG = 16
TAIL_BOUND = 10.0


def bulk_then_small(flags):
    bulk = bytes(range(256)) * (TAIL_BULK // 256)

    def request(n):
        return b"req-%012d" % n

    def reply(n):
        return b"rep-%012d" % n

    def target_handler(conn, peer):
        conn.settimeout(TAIL_BOUND)
        for n in range(TAIL_ROUNDS):
            got = recv_exact(conn, TAIL_BULK + TAIL_MSG)
            check(got == bulk + request(n), "target: round %d: bulk + request not byte-exact" % n)
            if n == TAIL_ROUNDS - 1:
                check(conn.recv(1) == b"", "target: no EOF after the last request")
            conn.sendall(reply(n))
        conn.shutdown(socket.SHUT_WR)
        conn.close()

    target = TargetServer(target_handler, conn_timeout=TAIL_BOUND + 5)
    try:
        listen = ("127.0.0.1", free_port())
        proxy = Proxy(["--workers", "1"] + flags + ["--forward", forward_arg(listen, target.addr)],
                      listens=[listen])
        with open(proxy.err_path, "rb") as f:
            start_line = f.read().decode(errors="replace")
        if "min-wait on" not in start_line:
            log("note: min-wait is not in use here: %s" % start_line.strip().splitlines()[0])
        s = connect(listen, timeout=TAIL_BOUND)
        try:
            s.settimeout(TAIL_BOUND)
            t0 = time.monotonic()
            for n in range(TAIL_ROUNDS):
                s.sendall(bulk + request(n))
                if n == TAIL_ROUNDS - 1:
                    s.shutdown(socket.SHUT_WR)
                check(recv_exact(s, TAIL_MSG) == reply(n), "client: round %d: wrong reply" % n)
            check(s.recv(1) == b"", "client: no EOF after the last reply")
            dt = time.monotonic() - t0
        finally:
            s.close()
        check(dt < TAIL_BOUND, "%d rounds of 1 MiB + a %d-byte request/reply took %.1f s (bound "
              "%.0f s): a small message or EOF after bulk data waited" % (TAIL_ROUNDS, TAIL_MSG,
                                                                          dt, TAIL_BOUND))
        target.join(5)
        log("%d rounds of 1 MiB + %d-byte request and reply, then EOF both ways: %.3f s"
            % (TAIL_ROUNDS, TAIL_MSG, dt))
        proxy.stop_ok()
    finally:
        target.close()


if __name__ == "__main__":
    run_tests("relay", [
        ("relay-default", lambda: relay_run(1, "127.0.0.1", [])),
        ("relay-tcp-splice", lambda: relay_run(2, "127.0.0.1", ["--tcp-splice"])),
        ("relay-1-worker-tiny-buffers",
         lambda: relay_run(3, "127.0.0.1", ["--workers", "1", "--buffer-sizes", "1k,4k,16k"])),
        ("relay-starved-buffers",
         lambda: relay_run(5, "127.0.0.1", ["--workers", "1", "--buffer-ring-entries", "4",
                                            "--max-queued", "256k", "--registered-buffers", "off",
                                            "--fixed-files", "off"])),
        ("relay-ipv6", lambda: relay_run(4, "::1", [])),
        ("relay-bulk-then-small", lambda: bulk_then_small([])),
        ("relay-bulk-then-small-1ms", lambda: bulk_then_small(["--ring-min-wait", "1ms"])),
    ], DEADLINE)

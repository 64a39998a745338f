#!/usr/bin/env python3
"""Bulk relay: 64 concurrent connections, 4 MiB each way at the same time,
byte-exact (sha256 on both sides), access-log byte counts and end=closed.

Runs: default flags; --tcp-splice; --workers 1 --buffer-sizes 1k,4k,16k;
a starved pool (4 buffers per class for 128 directions, so receives run out of
buffers, -ENOBUFS, all the time and must wait for buffers to come back, with
plain sendmsg and plain fds); IPv6 ([::1]) listen and target. After each run the proxy must exit 0 on
SIGTERM."""

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
    ], DEADLINE)

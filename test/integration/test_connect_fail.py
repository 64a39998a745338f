#!/usr/bin/env python3
"""Failed connects to the target.

One ringtunnel with --connect-timeout 300ms and three listeners:
  L1 -> a port with nothing listening     (refused)
  L2 -> a "black hole": a listening socket with backlog 0 that never accepts,
        whose accept queue has been filled first, so further SYNs are dropped
  L3 -> a working echo target

Asserts: 5 clients of L1 each see EOF or reset within 3 s, access log
end=connect_refused, bytes 0/0, target = the refused address; a client of L2
is closed within 3 s, end=connect_timeout; afterwards L3 still relays
byte-exact (end=closed); one relay held open through L3 shows as 2 more sockets
(in the rings' file tables with --fixed-files, the default, where
/proc/PID/fd does not move; else as 2 more fds), so the measurement sees
relayed sockets; once it closes, the proxy's fd count and the rings' file
tables are back to their values before the failures (no socket left behind);
exit code 0 on SIGTERM."""

import os
import select
import socket
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, TestFailure, check, check_entry, connect,  # noqa: E402
                     connect_bound, echo_handler, echo_roundtrip, expect_eof_or_reset, fail,
                     fmt_addr, forward_arg, free_port, log, recv_exact, run_tests,
                     sock_addr_str, tcp_listen_ports, wait_until)

PROMPT = 3.0


def make_black_hole():
    """Listening socket whose accept queue is full: SYNs to it are dropped.
    Returns (listener, fillers, addr). Verified with a probe connect."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    addr = lst.getsockname()
    fillers = []
    for _ in range(3):
        f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        f.setblocking(False)
        f.connect_ex(addr)
        fillers.append(f)
    time.sleep(0.2)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect_ex(addr)
        _, w, _ = select.select([], [probe], [], 1.0)
        if w:
            err = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            fail("test setup: could not make a black-hole target (probe connect finished, "
                 "SO_ERROR=%d) -- the kernel did not drop SYNs to a full accept queue" % err)
    finally:
        probe.close()
    log("black hole at %s: accept queue full, a probe SYN got no answer for 1 s" % fmt_addr(*addr))
    return lst, fillers, addr


def connect_failures():
    refused = ("127.0.0.1", free_port())     # bound once, closed: nothing listens
    check(not any(p == refused[1] for _, p in tcp_listen_ports()),
          "test setup: refused port %d is listening" % refused[1])
    hole, fillers, hole_addr = make_black_hole()
    good = TargetServer(echo_handler)
    try:
        l1, l2, l3 = (("127.0.0.1", free_port()) for _ in range(3))
        proxy = Proxy(["--connect-timeout", "300ms",
                       "--forward", forward_arg(l1, refused),
                       "--forward", forward_arg(l2, hole_addr),
                       "--forward", forward_arg(l3, good.addr)], listens=[l1, l2, l3])
        # warm up, then take the baseline: fds, and sockets in the rings' file tables
        me = echo_roundtrip(l3)
        proxy.wait_access([me])
        wait_until(lambda: proxy.ring_sockets() in (None, 0), PROMPT,
                   what="the rings' file tables to empty after the warm-up connection")
        base_fds, base_ring = proxy.sockets_held()
        log("proxy has %d fds after a warm-up connection; rings' file tables: %s"
            % (base_fds, "none" if base_ring is None else "%d sockets" % base_ring))

        # 1. refused target
        names = []
        hows = []
        mark = proxy.mark()
        for i in range(5):
            s, name, how = connect_bound(l1, 10)
            try:
                names.append(name)
                hows.append(how or expect_eof_or_reset(s, PROMPT,
                                                       "client of the refused-target listener"))
            finally:
                s.close()
        log("5 clients of %s (target %s refuses): each closed within %.0f s (%s)"
            % (fmt_addr(*l1), fmt_addr(*refused), PROMPT, ", ".join(hows)))
        for e in proxy.wait_access(names, since=mark).values():
            check_entry(e, listener=fmt_addr(*l1), target=fmt_addr(*refused),
                        end="connect_refused", bytes_up=0, bytes_down=0)
        log("access log: 5 x end=connect_refused bytes_up=0 bytes_down=0")

        # 2. unanswered SYN
        mark = proxy.mark()
        t0 = time.monotonic()
        s, me, how = connect_bound(l2, 10)
        try:
            how = how or expect_eof_or_reset(s, PROMPT, "client of the black-hole listener")
            dt = time.monotonic() - t0
        finally:
            s.close()
        log("client of %s (target drops SYNs, --connect-timeout 300ms): closed (%s) after %.2f s"
            % (fmt_addr(*l2), how, dt))
        e = proxy.wait_access([me], since=mark)[me]
        check_entry(e, listener=fmt_addr(*l2), target=fmt_addr(*hole_addr),
                    end="connect_timeout", bytes_up=0, bytes_down=0)
        log("access log: end=connect_timeout, duration_ms=%d" % e["duration_ms"])

        # 3. the same process still relays on another listener
        mark = proxy.mark()
        me = echo_roundtrip(l3, nbytes=500000, seed=99)
        e = proxy.wait_access([me], since=mark)[me]
        check_entry(e, end="closed", bytes_up=500000, bytes_down=500000)
        log("afterwards %s still relays 500000 bytes each way byte-exact, end=closed"
            % fmt_addr(*l3))

        # 3b. the measurement sees a relay's sockets: hold one open through L3
        held = connect(l3)
        try:
            me = sock_addr_str(held.getsockname())
            held.sendall(b"x")
            check(recv_exact(held, 1) == b"x", "the held relay did not echo its byte")
            if base_ring is None:
                def moved():
                    return proxy.fd_count() == base_fds + 2
            else:
                def moved():
                    return proxy.ring_sockets() == base_ring + 2
            try:
                wait_until(moved, PROMPT, what="2 more sockets held")
            except TestFailure:
                fail("with one relay open the proxy holds (fds, ring sockets) = %r, before "
                     "(%d, %s): 2 more were expected in %s, else the check below would not see "
                     "a relay left behind" % (proxy.sockets_held(), base_fds, base_ring,
                                              "the fd table" if base_ring is None
                                              else "the rings' file tables"))
            log("one relay open: %s (fds %d -> %d)"
                % ("2 more sockets in the rings' file tables" if base_ring is not None
                   else "2 more fds", base_fds, proxy.fd_count()))
            mark = proxy.mark()
        finally:
            held.close()
        e = proxy.wait_access([me], since=mark)[me]
        check_entry(e, end="closed", bytes_up=1, bytes_down=1)

        # 4. nothing left behind
        def back():
            fds, ring = proxy.sockets_held()
            return fds == base_fds and ring in (None, base_ring)
        try:
            wait_until(back, PROMPT, what="fd count and the rings' file tables")
        except TestFailure:
            fail("proxy holds %d fds and %s sockets in the rings' file tables, %d and %s before "
                 "the failed connects (socket leak?)"
                 % (proxy.fd_count(), proxy.ring_sockets(), base_fds, base_ring))
        log("proxy fd count back to %d, rings' file tables back to %s" % (base_fds, base_ring))
        proxy.stop_ok()
        log("ringtunnel exited 0 on SIGTERM")
    finally:
        good.close()
        hole.close()
        for f in fillers:
            f.close()


if __name__ == "__main__":
    run_tests("connect_fail", [("refused-timeout-then-good", connect_failures)], 100)

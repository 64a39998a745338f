#!/usr/bin/env python3
"""10,000 concurrent idle connections.

Opens N (default 10,000) connections through one listener to a selector-based
echo target running in a child process (so neither process needs more than
~N fds), holds them all open at once, then checks every one of them relays
(1 byte sent on each, its echo read back on each). Reports the proxy's fd
count and VmRSS before and while holding them, and RSS per connection
(informational, not asserted). Then closes all and asserts that within 30 s
the proxy's fd count returns to its value before (no fd left behind), the
access log has an entry for each of the N clients (end=closed, 1 byte each way)
and the proxy exits 0 on SIGTERM.

ringtunnel keeps relayed sockets as io_uring direct descriptors (its ring's
file table, one per worker), so they count neither in /proc/PID/fd nor against
the process's RLIMIT_NOFILE; the test also reads the rings' file tables from
/proc/PID/fdinfo and asserts they hold 2*N sockets while the connections are
open and none after. Only if the proxy has no file table (a kernel without
direct descriptors, or --fixed-files off) is N lowered, with a NOTE, to what
2*N plain fds allow. RINGTUNNEL_IDLE_CONNS overrides N."""

import os
import select
import selectors
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, check, check_entry, echo_roundtrip, fail, fmt_addr,  # noqa: E402
                     forward_arg, free_port, log, raise_nofile, reap, run_tests, spawn, wait_until)

WANT = int(os.environ.get("RINGTUNNEL_IDLE_CONNS", "10000"))
DEADLINE = 240
BATCH = 500

TARGET_CHILD = r'''
import os, resource, selectors, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.bind(("127.0.0.1", 0))
lst.listen(4096)
lst.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(lst, selectors.EVENT_READ, "L")
sel.register(sys.stdin, selectors.EVENT_READ, "C")
st = dict(accepted=0, open=0, bytes=0, eofs=0, resets=0, accept_errors=0)
print("PORT %d NOFILE %d" % (lst.getsockname()[1], hard), flush=True)
while True:
    for key, ev in sel.select():
        if key.data == "L":
            for _ in range(256):
                try:
                    c, _a = lst.accept()
                except BlockingIOError:
                    break
                except OSError:
                    st["accept_errors"] += 1
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, "S")
                st["accepted"] += 1
                st["open"] += 1
        elif key.data == "C":
            line = sys.stdin.readline()
            if not line or line.strip() == "QUIT":
                sys.exit(0)
            print("STATS " + " ".join("%s=%d" % kv for kv in st.items()), flush=True)
        else:
            c = key.fileobj
            try:
                b = c.recv(4096)
            except ConnectionResetError:
                b = None
            if b:
                st["bytes"] += len(b)
                c.send(b)
                continue
            st["eofs" if b == b"" else "resets"] += 1
            st["open"] -= 1
            sel.unregister(c)
            c.close()
'''


class TargetChild:
    def __init__(self):
        self.proc = spawn([sys.executable, "-c", TARGET_CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, bufsize=1)
        words = self._line(10).split()
        check(words[0] == "PORT", "target child said %r" % words)
        self.addr = ("127.0.0.1", int(words[1]))
        self.nofile = int(words[3])

    def _line(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            fail("target child did not answer within %.0f s" % timeout)
        line = self.proc.stdout.readline()
        if not line:
            fail("target child exited (code %s)" % self.proc.poll())
        return line

    def stats(self):
        self.proc.stdin.write("STATS\n")
        self.proc.stdin.flush()
        words = self._line(20).split()
        return {k: int(v) for k, v in (w.split("=") for w in words[1:])}

    def close(self):
        try:
            self.proc.stdin.write("QUIT\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        reap(self.proc, term_timeout=3)


def idle_connections():
    my_soft = raise_nofile(65536)
    child = TargetChild()
    clients = []
    try:
        listen = ("127.0.0.1", free_port())
        proxy = Proxy(["--forward", forward_arg(listen, child.addr)], listens=[listen])
        me = echo_roundtrip(listen, nbytes=1000)
        proxy.wait_access([me])
        wait_until(lambda: child.stats()["open"] == 0, 5, what="warm-up connection to close")
        time.sleep(0.2)
        base_fds, base_rss = proxy.fd_count(), proxy.rss_kib()
        mark = proxy.mark()
        p_soft, p_hard = proxy.nofile_limit()
        base_ring = proxy.ring_sockets()
        n = min(WANT, my_soft - 200, child.nofile - 200)
        if base_ring is None:
            n = min(n, (p_soft - base_fds - 64) // 2)
        else:
            check(base_ring == 0, "%d sockets in the rings' file tables while idle" % base_ring)
            check(n == WANT, "this test process or the target can hold only %d connections" % n)
        log("proxy RLIMIT_NOFILE %d/%d, this process %d, target child %d; sockets as direct "
            "descriptors: %s" % (p_soft, p_hard, my_soft, child.nofile, base_ring is not None))
        if n < WANT:
            print("    NOTE: running %d connections instead of %d: the proxy's fd limit (%d) "
                  "cannot hold 2 x %d sockets (hard limit not raisable here)"
                  % (n, WANT, p_soft, WANT), flush=True)
        check(n >= 1000, "fd limits allow only %d connections -- too few to test" % n)
        log("proxy idle after warm-up: %d fds, VmRSS %d KiB" % (base_fds, base_rss))

        t0 = time.monotonic()
        names = set()
        while len(clients) < n:
            for _ in range(min(BATCH, n - len(clients))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(10)
                try:
                    s.connect(listen)
                except OSError as e:
                    s.close()
                    fail("connect #%d to the proxy failed: %s" % (len(clients) + 1, e))
                clients.append(s)
                names.add("%s:%d" % s.getsockname()[:2])
            want_acc = len(clients) + 1
            wait_until(lambda: child.stats()["accepted"] >= want_acc, 30, interval=0.05,
                       what="the target to accept %d connections via the proxy" % len(clients))
        st = child.stats()
        check(st["open"] == n and st["accepted"] == n + 1,
              "target has %d open / %d accepted, expected %d / %d (%s)"
              % (st["open"], st["accepted"], n, n + 1, st))
        dt = time.monotonic() - t0
        time.sleep(0.5)
        hold_fds, hold_rss = proxy.fd_count(), proxy.rss_kib()
        log("%d connections open through the proxy in %.1f s" % (n, dt))
        log("proxy holding them: %d fds (+%d), VmRSS %d KiB (+%d KiB)"
            % (hold_fds, hold_fds - base_fds, hold_rss, hold_rss - base_rss))
        log("INFO: RSS per connection above the idle process: %.2f KiB"
            % ((hold_rss - base_rss) / n))
        if base_ring is not None:
            held = proxy.ring_sockets()
            check(held == 2 * n, "the rings' file tables hold %d sockets for %d connections, "
                  "expected %d" % (held, n, 2 * n))
            log("the rings' file tables hold %d sockets (2 per connection)" % held)

        # every connection relays: 1 byte out, the echo back
        for s in clients:
            s.setblocking(False)
            check(s.send(b"z") == 1, "could not send 1 byte")
        sel = selectors.DefaultSelector()
        for s in clients:
            sel.register(s, selectors.EVENT_READ)
        pending = len(clients)
        end = time.monotonic() + 30
        while pending and time.monotonic() < end:
            for key, _ in sel.select(timeout=1.0):
                try:
                    b = key.fileobj.recv(16)
                except ConnectionResetError:
                    fail("connection %s reset while idle" % (key.fileobj.getsockname(),))
                check(b == b"z", "expected the echoed byte, got %r on %s"
                      % (b, key.fileobj.getsockname()))
                sel.unregister(key.fileobj)
                pending -= 1
        sel.close()
        check(pending == 0, "%d of %d connections did not echo 1 byte within 30 s"
              % (pending, n))
        log("all %d connections relayed 1 byte each way" % n)

        for s in clients:
            s.close()
        clients = []
        try:
            wait_until(lambda: proxy.fd_count() <= base_fds, 30, interval=0.2,
                       what="proxy fd count to return to %d" % base_fds)
        except Exception:
            fail("proxy still has %d fds 30 s after all %d connections closed, %d before "
                 "(fds left behind)" % (proxy.fd_count(), n, base_fds))
        after = proxy.fd_count()
        check(after == base_fds, "proxy fd count %d after, %d before" % (after, base_fds))
        log("all closed: proxy fd count back to %d; VmRSS now %d KiB"
            % (after, proxy.rss_kib()))
        if base_ring is not None:
            try:
                wait_until(lambda: proxy.ring_sockets() == 0, 30, interval=0.2,
                           what="the rings' file tables to empty")
            except Exception:
                fail("%d sockets still in the rings' file tables 30 s after all %d connections "
                     "closed (sockets left behind)" % (proxy.ring_sockets(), n))
            log("the rings' file tables are empty again")
        entries = proxy.wait_access(names, timeout=30, since=mark)
        for e in entries.values():
            check_entry(e, listener=fmt_addr(*listen), target=fmt_addr(*child.addr),
                        bytes_up=1, bytes_down=1, end="closed")
        log("access log: %d entries for our clients, each bytes_up=1 bytes_down=1 end=closed"
            % len(entries))
        st = child.stats()
        check(st["eofs"] == n + 1 and st["resets"] == 0 and st["open"] == 0,
              "target saw %d EOFs, %d resets, %d still open (expected %d/0/0)"
              % (st["eofs"], st["resets"], st["open"], n + 1))
        log("target saw an orderly EOF on every connection")
        proxy.stop_ok(timeout=20)
        log("ringtunnel exited 0 on SIGTERM")
    finally:
        for s in clients:
            s.close()
        child.close()


if __name__ == "__main__":
    run_tests("idle", [("idle-%d" % WANT, idle_connections)], DEADLINE)

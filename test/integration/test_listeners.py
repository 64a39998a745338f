#!/usr/bin/env python3
"""Every listener reaches its own target, however many there are.

300-listeners: ringtunnel --workers 1 with 300 --forward listeners, listener i
forwarding to target i (300 target sockets served by one thread of this test;
target i answers "target i got " + what it read, then closes). Connections to
listeners 0, 1, 255, 256, 257 and 299 must each be answered by their own
target, and each access line must name its listener and its target. (An accept
that names its listener in 8 bits sends listener 256 to target 0 and 299 to
target 43.)"""

import os
import selectors
import socket
import sys
import threading

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, check, check_entry, fmt_addr, forward_arg, free_port,  # noqa: E402
                     log, raise_nofile, run_tests, sock_addr_str)

LISTENERS = 300
PROBE = (0, 1, 255, 256, 257, 299)
TIMEOUT = 10.0


class TaggedTargets:
    """LISTENERS listening sockets; target i answers b"target i got " + the request."""

    def __init__(self, count):
        self.socks = []
        self.sel = selectors.DefaultSelector()
        for i in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            s.setblocking(False)
            self.socks.append(s)
            self.sel.register(s, selectors.EVENT_READ, i)
        self.addrs = [s.getsockname()[:2] for s in self.socks]
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True, name="targets")
        self._t.start()

    def _loop(self):
        while not self._stop:
            for key, _ in self.sel.select(0.2):
                try:
                    c, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                threading.Thread(target=self._answer, args=(c, key.data), daemon=True).start()

    @staticmethod
    def _answer(c, i):
        try:
            c.settimeout(TIMEOUT)
            got = b""
            while True:
                b = c.recv(4096)
                if not b:
                    break
                got += b
            c.sendall(b"target %d got " % i + got)
        finally:
            c.close()

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sel.close()
        for s in self.socks:
            s.close()


def distinct_free_ports(n):
    ports = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def three_hundred_listeners():
    raise_nofile(4096)
    targets = TaggedTargets(LISTENERS)
    try:
        listens = [("127.0.0.1", p) for p in distinct_free_ports(LISTENERS)]
        args = ["--workers", "1"]
        for listen, target in zip(listens, targets.addrs):
            args += ["--forward", forward_arg(listen, target)]
        proxy = Proxy(args, listens=listens, timeout=30)
        clients = {}
        for i in PROBE:
            s = socket.create_connection(listens[i], timeout=TIMEOUT)
            try:
                clients[i] = sock_addr_str(s.getsockname())
                s.sendall(b"hello listener %d" % i)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    got += b
            finally:
                s.close()
            want = b"target %d got hello listener %d" % (i, i)
            check(got == want, "listener %d (%s): answered %r, expected %r"
                  % (i, fmt_addr(*listens[i]), got, want))
        log("listeners %s each reached their own target" % ", ".join(map(str, PROBE)))
        entries = proxy.wait_access(clients.values(), timeout=5)
        for i in PROBE:
            check_entry(entries[clients[i]], listener=fmt_addr(*listens[i]),
                        target=fmt_addr(*targets.addrs[i]), end="closed")
        log("their access lines name their own listener and target")
        proxy.stop_ok()
    finally:
        targets.close()


if __name__ == "__main__":
    run_tests("listeners", [
        ("300-listeners", three_hundred_listeners),
    ], 120)

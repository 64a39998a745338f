"""The two ways a connection crosses ringtunnel in the integration tests, behind
one interface, so that a scenario is written once and run over both:

  Direct: client -> L (one proxy, --forward L=tcp://T) -> target T.
  Hbone:  client -> L (A, --forward L=hbone://B/T?identity=node-b)
          -> B (--hbone-listen, node-b's identity) -> target T,
          all on 127.0.0.1 (certificates: hbone_common).

Interface (both classes):
  start(targets, extra=())  one forward per target; `extra`: flags for the
                            proxy that dials the targets (Direct's proxy, B)
  .name                     "direct" / "hbone"
  .listen, .listens         where a client connects (first / per target)
  .marks()                  what entries() needs to ignore earlier entries
  .entries(client, target, marks)
                            the access entries of one connection, in path
                            order: [proxy's] / [A's, B's]; each is already
                            checked for its listener and target (and for
                            HBONE its identities)
  .drained, .drained_listen the proxy a drain scenario signals and the
                            listener that must close (the proxy and L / B and
                            its HBONE listener)
  .stop_ok()                stop every proxy, each must exit 0 (one that
                            already exited must have exited 0)

Hbone fails the test at once if the binary has no HBONE (require_hbone). For
test_hbone's own cases it also takes a_extra=, b_extra= and identity= (what A
expects of B), and has .A, .B, a_entries() and b_entries().
"""

import collections
import os

from harness import (Proxy, check, check_kv, fmt_addr, forward_arg, free_port,
                     wait_access_kv)
from hbone_common import ID_A, ID_B, require_hbone, start_inbound, start_outbound


def check_identities(e):
    check_kv(e, src_identity=ID_A, dst_identity=ID_B)


class Direct:
    """One proxy, --forward L=tcp://T per target."""

    name = "direct"

    def __init__(self, targets, extra=()):
        self.listens = [("127.0.0.1", free_port()) for _ in targets]
        self.listen_of = {tuple(t): l for t, l in zip(targets, self.listens)}
        args = []
        for listen, target in zip(self.listens, targets):
            args += ["--forward", forward_arg(listen, target)]
        self.P = Proxy(args + list(extra), listens=self.listens)
        self.listen = self.listens[0]
        self.drained, self.drained_listen = self.P, self.listen

    @classmethod
    def start(cls, targets, extra=()):
        return cls(targets, extra)

    def marks(self):
        return (self.P.mark(),)

    def entries(self, client, target, marks, timeout=10.0):
        e = self.P.wait_access([client], timeout=timeout, since=marks[0])[client]
        check_kv(e, listener=fmt_addr(*self.listen_of[tuple(target)]), target=fmt_addr(*target))
        return [e]

    def stop_ok(self):
        self.P.stop_ok()


class Hbone:
    """A (outbound) and B (inbound) with one forward per target."""

    name = "hbone"

    def __init__(self, targets, a_extra=(), b_extra=(), identity=ID_B):
        require_hbone()
        dev = os.environ.get("HBONE_EXTRA", "").split()   # extra flags for both (diagnosis)
        a_extra, b_extra = list(a_extra) + dev, list(b_extra) + dev
        self.B = start_inbound(b_extra)
        self.listens = [("127.0.0.1", free_port()) for _ in targets]
        self.listen_of = {tuple(t): l for t, l in zip(targets, self.listens)}
        self.A = start_outbound([(l, self.B.hbone_addr, t, identity)
                                 for l, t in zip(self.listens, targets)], a_extra)
        self.listen = self.listens[0]
        self.drained, self.drained_listen = self.B, self.B.hbone_addr

    @classmethod
    def start(cls, targets, extra=()):
        return cls(targets, b_extra=extra)

    def marks(self):
        return self.A.mark(), self.B.mark()

    def a_entries(self, clients, since, timeout=10.0):
        """A's entries for `clients` (one per connection; an address may repeat
        when the kernel hands a source port out again), by client address (the
        last)."""
        want = collections.Counter(clients)
        got = wait_access_kv(self.A, lambda e: e.get("client") in want, sum(want.values()),
                             timeout, since,
                             "A's access-log entries for %d clients" % sum(want.values()))
        seen = collections.Counter(e["client"] for e in got)
        extra = [c for c in seen if seen[c] > want[c]]
        check(not extra, "more A entries than connections for client(s) %s: %s"
              % (extra, [e["_line"] for e in got if e["client"] in extra][:2]))
        return {e["client"]: e for e in got}

    def b_entries(self, target, count, since, timeout=10.0):
        t = fmt_addr(*target)
        return wait_access_kv(self.B, lambda e: e.get("target") == t, count, timeout, since,
                              "B's access-log entries for target %s" % t)

    def entries(self, client, target, marks, timeout=10.0):
        ea = self.a_entries([client], marks[0], timeout)[client]
        check_kv(ea, listener=fmt_addr(*self.listen_of[tuple(target)]), target=fmt_addr(*target))
        eb = self.b_entries(target, 1, marks[1], timeout)
        check(len(eb) == 1, "B logged %d streams for target %s, expected 1: %s"
              % (len(eb), fmt_addr(*target), [e["_line"] for e in eb]))
        eb = eb[0]
        check_kv(eb, listener=fmt_addr(*self.B.hbone_addr))
        for e in (ea, eb):
            check_identities(e)
        return [ea, eb]

    def stop_ok(self):
        self.A.stop_ok()
        self.B.stop_ok()


TOPOLOGIES = (Direct, Hbone)

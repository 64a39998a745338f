#!/usr/bin/env python3
"""Half-close in each direction is relayed on its own, directly (--forward
L=tcp://T) and through an HBONE tunnel (A -> B -> T, END_STREAM <-> FIN each
way; see topology.py): each case runs as direct/<case> and as hbone/<case>.

client-half-closes-first: the target sends 64 KiB at once; the client sends
1 MiB and shuts down its write side; the target must see exactly that 1 MiB and
then EOF, while the connection stays open the other way: only after that EOF
(and a 0.5 s pause) does the target send 2 MiB more, which the client must
receive in full, followed by EOF. Access log (the proxy's; for HBONE A's and
B's, each with src_identity=node-a dst_identity=node-b): the listener, the
target, bytes_up=1 MiB, bytes_down=64 KiB + 2 MiB, end=closed.

target-half-closes-first: the mirror image (the client sends first, the target
half-closes, the client keeps sending afterwards).

Both cases also run as direct-fds/<case>: --forward with --fixed-files off, whose
relay passes a FIN with shutdown(2) itself rather than through the ring."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TargetServer, check, check_entry, connect, gen_bytes, log,  # noqa: E402
                     recv_exact, recv_until_eof, run_tests, sha256_hex, sock_addr_str)
from topology import TOPOLOGIES, Direct  # noqa: E402

PRE = 64 * 1024          # sent by the far side before the half-close
MAIN = 1024 * 1024       # sent by the side that half-closes
POST = 2 * 1024 * 1024   # sent by the far side after it saw EOF
TIMEOUT = 20.0


def half_close_case(topo, first_closer):
    """topo: a topology class (topology.py); first_closer: 'client' or
    'target' -- who shuts down its write side first."""
    pre, main, post = gen_bytes(11, PRE), gen_bytes(12, MAIN), gen_bytes(13, POST)
    seen = {}

    def closer(sock, name):
        # Receive the far side's early data, send ours, half-close, then read
        # the rest until EOF.
        got_pre = recv_exact(sock, PRE)
        sock.sendall(main)
        sock.shutdown(socket.SHUT_WR)
        seen[name + "_sent_main_and_shut"] = time.monotonic()
        seen[name + "_pre"] = got_pre
        seen[name + "_after"] = recv_until_eof(sock, limit=POST)

    def far(sock, name):
        sock.sendall(pre)
        got = recv_until_eof(sock, limit=MAIN)
        seen[name + "_main"] = got
        seen[name + "_eof_at"] = time.monotonic()
        time.sleep(0.5)   # the half-closed connection must stay usable
        sock.sendall(post)
        sock.shutdown(socket.SHUT_WR)
        # the closer side sends nothing more; we must see EOF again (already
        # seen), so just close.

    def handler(conn, peer):
        if first_closer == "target":
            closer(conn, "target")
        else:
            far(conn, "target")
        conn.close()

    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        t = topo.start([target.addr])
        marks = t.marks()
        s = connect(t.listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            if first_closer == "client":
                closer(s, "client")
            else:
                far(s, "client")
        finally:
            s.close()
        target.join(TIMEOUT)
        other = "target" if first_closer == "client" else "client"
        check(seen[first_closer + "_pre"] == pre,
              "%s: the %d bytes sent before the half-close differ" % (first_closer, PRE))
        check(seen[other + "_main"] == (MAIN, sha256_hex(main)),
              "%s received %d bytes (sha %s) before EOF, expected exactly %d (sha %s)"
              % (other, seen[other + "_main"][0], seen[other + "_main"][1][:12], MAIN,
                 sha256_hex(main)[:12]))
        log("%s shut down its write side after %d bytes; %s got exactly those bytes, then EOF"
            % (first_closer, MAIN, other))
        check(seen[first_closer + "_after"] == (POST, sha256_hex(post)),
              "after its half-close, %s received %d bytes (sha %s), expected %d (sha %s)"
              % (first_closer, seen[first_closer + "_after"][0],
                 seen[first_closer + "_after"][1][:12], POST, sha256_hex(post)[:12]))
        log("%s then sent %d bytes the other way (0.5 s after EOF); %s received all of it, then EOF"
            % (other, POST, first_closer))
        if first_closer == "client":
            up, down = MAIN, PRE + POST
        else:
            up, down = PRE + POST, MAIN
        es = t.entries(me, target.addr, marks)
        for e in es:
            check_entry(e, bytes_up=up, bytes_down=down, end="closed")
        log("access log (%d entries): bytes_up=%d bytes_down=%d end=closed"
            % (len(es), up, down))
        t.stop_ok()
    finally:
        target.close()


class DirectFds(Direct):
    """--forward with --fixed-files off: the relay's sockets are ordinary descriptors, and it
    passes a FIN with a shutdown(2) of its own instead of the ring's."""

    name = "direct-fds"

    @classmethod
    def start(cls, targets, extra=()):
        return cls(targets, list(extra) + ["--fixed-files", "off"])


if __name__ == "__main__":
    run_tests("halfclose", [("%s/%s-half-closes-first" % (topo.name, who),
                             lambda topo=topo, who=who: half_close_case(topo, who))
                            for topo in TOPOLOGIES + (DirectFds,)
                            for who in ("client", "target")], 100)

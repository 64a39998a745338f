#!/usr/bin/env python3
"""A reset on one side becomes a reset on the other, directly (--forward
L=tcp://T) and through an HBONE tunnel (A -> B -> T; see topology.py): each
case runs as direct/<case> and as hbone/<case>.

client-reset: after 100000 bytes up and 50000 bytes down have been exchanged,
the client closes with SO_LINGER {1,0} (RST). The target, blocked in recv, must
get ConnectionResetError (not EOF) within 3 s. Access log (the proxy's; for
HBONE A's and B's, each with src_identity=node-a dst_identity=node-b): the
listener, the target, end=client_reset, bytes_up=100000, bytes_down=50000.

target-reset: the mirror image; the client must get ConnectionResetError;
end=target_reset.

client-reset-mid-download / target-reset-mid-upload: the far side streams
data continuously; the near side reads 1 MiB and resets. The streaming side's
send/recv must fail within 3 s (the proxy tears the connection down instead of
buffering on), and each access entry says client_reset / target_reset and
counts at least the 1 MiB the resetting side read."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, TargetServer, check, check_entry, connect,  # noqa: E402
                     expect_reset, fail, gen_bytes, log, recv_exact, reset_close, run_tests,
                     sock_addr_str)
from topology import TOPOLOGIES  # noqa: E402

TIMEOUT = 20.0
PROMPT = 3.0


def handler_result(target, res, done, key):
    """res[key], once the target's handler has finished. target.join() alone may not wait
    for it: the accept thread registers a handler's thread only after starting it, so the
    handler can already be serving (and the client done) while join() finds nothing to
    wait for. The handler sets `done` when it ends, however it ends."""
    if not done.wait(TIMEOUT):
        fail("the target's handler still running %.0f s later" % TIMEOUT)
    target.check_errors()   # the handler's own failure, if it failed
    check(key in res, "the target's handler ended without a result (%s)" % key)
    return res[key]


def with_topology(topo, handler, body):
    """Start `topo` in front of a target running `handler`, run
    body(t, target, marks), then stop the proxies (each must exit 0)."""
    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        t = topo.start([target.addr])
        body(t, target, t.marks())
        t.stop_ok()
    finally:
        target.close()


def quiet_reset_case(topo, resetter):
    UP, DOWN = 100000, 50000
    up, down = gen_bytes(21, UP), gen_bytes(22, DOWN)
    res = {}
    done = threading.Event()

    def handler(conn, peer):
        try:
            check(recv_exact(conn, UP) == up, "target: upstream data differs")
            conn.sendall(down)
            if resetter == "target":
                time.sleep(0.2)   # let the client see the data first
                reset_close(conn)
            else:
                res["target_wait"] = expect_reset(conn, PROMPT, "target")
                conn.close()
        finally:
            done.set()

    def body(t, target, marks):
        s = connect(t.listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            s.sendall(up)
            check(recv_exact(s, DOWN) == down, "client: downstream data differs")
            if resetter == "client":
                reset_close(s)
                wait = handler_result(target, res, done, "target_wait")
                log("client reset after %d up / %d down; target got ConnectionResetError"
                    " after %.2f s" % (UP, DOWN, wait))
            else:
                w = expect_reset(s, PROMPT, "client")
                log("target reset after %d up / %d down; client got ConnectionResetError"
                    " after %.2f s" % (UP, DOWN, w))
                if not done.wait(TIMEOUT):
                    fail("the target's handler still running %.0f s later" % TIMEOUT)
                target.check_errors()
        finally:
            s.close()
        es = t.entries(me, target.addr, marks)
        for e in es:
            check_entry(e, bytes_up=UP, bytes_down=DOWN, end=resetter + "_reset")
        log("access log (%d entries): bytes_up=%d bytes_down=%d end=%s_reset"
            % (len(es), UP, DOWN, resetter))

    with_topology(topo, handler, body)


def streaming_reset_case(topo, resetter):
    """The side that does NOT reset streams until its socket fails."""
    MIB = 1024 * 1024
    blob = gen_bytes(23, CHUNK)
    res = {}
    done = threading.Event()

    def stream_until_error(sock, who):
        sent = 0
        end = time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < end:
                sock.sendall(blob)
                sent += len(blob)
        except (ConnectionResetError, BrokenPipeError) as e:
            return sent, type(e).__name__
        except socket.timeout:
            pass
        fail("%s streamed %d bytes and its send never failed after the other side reset"
             % (who, sent))

    def handler(conn, peer):
        try:
            if resetter == "client":
                recv_exact(conn, 1)          # the client says hello first
                res["stream"] = stream_until_error(conn, "target")
                res["t1"] = time.monotonic()
            else:
                recv_exact(conn, MIB)
                res["reset_at"] = time.monotonic()
                reset_close(conn)
        finally:
            done.set()

    def body(t, target, marks):
        s = connect(t.listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            if resetter == "client":
                s.sendall(b"x")
                recv_exact(s, MIB)
                t_reset = time.monotonic()
                reset_close(s)
                dt = handler_result(target, res, done, "t1") - t_reset
                check(dt <= PROMPT, "target's send failed only %.1f s after the client reset" % dt)
                log("client reset after reading 1 MiB; target's send failed (%s) %.2f s later"
                    % (res["stream"][1], dt))
            else:
                sent, err = stream_until_error(s, "client")
                t_fail = time.monotonic()
                dt = t_fail - handler_result(target, res, done, "reset_at")
                check(dt <= PROMPT, "client's send failed only %.1f s after the target reset" % dt)
                log("target reset after reading 1 MiB; client's send failed (%s) %.2f s later"
                    % (err, dt))
        finally:
            s.close()
        es = t.entries(me, target.addr, marks)
        towards = "bytes_down" if resetter == "client" else "bytes_up"
        for e in es:
            check_entry(e, end=resetter + "_reset")
            check(e[towards] >= MIB, "access log says only %d bytes were relayed towards the"
                  " %s, which read %d: %r" % (e[towards], resetter, MIB, e["_line"]))
        log("access log (%d entries): end=%s_reset, %s=%s (>= the 1 MiB the %s read)"
            % (len(es), resetter, towards, "/".join(str(e[towards]) for e in es), resetter))

    with_topology(topo, handler, body)


CASES = [
    ("client-reset", lambda topo: quiet_reset_case(topo, "client")),
    ("target-reset", lambda topo: quiet_reset_case(topo, "target")),
    ("client-reset-mid-download", lambda topo: streaming_reset_case(topo, "client")),
    ("target-reset-mid-upload", lambda topo: streaming_reset_case(topo, "target")),
]

if __name__ == "__main__":
    run_tests("reset", [("%s/%s" % (topo.name, name), lambda f=f, topo=topo: f(topo))
                        for topo in TOPOLOGIES for name, f in CASES], 160)

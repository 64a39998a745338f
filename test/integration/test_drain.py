#!/usr/bin/env python3
"""Graceful shutdown (drain).

The first two cases run directly (one proxy, --forward L=tcp://T: it is the
one signalled, L the listener that must close) and through an HBONE tunnel
(A -> B -> T, see topology.py: B is signalled, its HBONE listener must close),
as direct/<case> and hbone/<case>. "The proxy" below is the signalled one; the
access-log checks hold for the proxy's entry, for HBONE for A's and B's (each
also with the listener, the target and src/dst identities node-a/node-b).

drain-finishes-open-connection: a connection exchanges 1 MiB each way; then
SIGTERM. Within 3 s the listen socket is gone and a new connect to it is
refused; the process is still running; the open connection then relays 1 MiB
more each way, both sides half-close, everything arrives byte-exact; the process
exits 0 within 3 s after the connection closed; access log: 2 MiB each way,
end=closed. Then every proxy stops with exit code 0.

drain-timeout-resets-idle: --drain-timeout 500ms (on the signalled proxy) with
an idle connection held open by both ends: after SIGTERM the process exits 0
within 3 s, the client and the target each see their connection reset or closed
(within 3 s), and the access log says bytes_up = bytes_down = the 1000 bytes
echoed, and the signalled proxy's entry end=drain_timeout (A's, whose tunnel
connection B ended: peer_error or target_reset).

idle-sigterm / idle-sigint: with no connection the process exits 0 within 3 s
of SIGTERM and of SIGINT, and its listener is gone (direct only)."""

import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, Threads, check, check_entry, connect,  # noqa: E402
                     expect_eof_or_reset, fail, fmt_addr, forward_arg, free_port, gen_bytes,
                     is_listening, log, recv_exact, recv_until_eof, run_tests, sha256_hex,
                     sock_addr_str, wait_until)
from topology import TOPOLOGIES  # noqa: E402

MIB = 1024 * 1024
TIMEOUT = 20.0
PROMPT = 3.0


def assert_refused(listen):
    wait_until(lambda: not is_listening(*listen), PROMPT,
               what="the listen socket %s to be closed after the signal" % fmt_addr(*listen))
    try:
        s = connect(listen, PROMPT)
    except ConnectionRefusedError:
        return
    except socket.timeout:
        fail("connect to %s after the signal timed out instead of being refused"
             % fmt_addr(*listen))
    s.close()
    fail("a new connection to %s was accepted after the signal" % fmt_addr(*listen))


def drain_finishes_open_connection(topo):
    a1, a2, b1, b2 = (gen_bytes(s, MIB) for s in (31, 32, 33, 34))
    phase2 = threading.Event()
    res = {}

    def handler(conn, peer):
        th = Threads()
        th.start(conn.sendall, b1, name="target-send-1")
        res["t1"] = recv_exact(conn, MIB)
        th.join(TIMEOUT, "target sender")
        check(phase2.wait(TIMEOUT), "target: phase 2 never started")

        def send2():
            conn.sendall(b2)
            conn.shutdown(socket.SHUT_WR)
        th2 = Threads()
        th2.start(send2, name="target-send-2")
        res["t2"] = recv_until_eof(conn, limit=MIB)
        th2.join(TIMEOUT, "target sender")
        conn.close()

    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        t = topo.start([target.addr])
        proxy = t.drained
        marks = t.marks()
        s = connect(t.listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            th = Threads()
            th.start(s.sendall, a1, name="client-send-1")
            got1 = recv_exact(s, MIB)
            th.join(TIMEOUT, "client sender")
            check(got1 == b1, "client: first MiB differs")
            wait_until(lambda: "t1" in res, TIMEOUT, what="the target to get the first MiB")
            check(res["t1"] == a1, "target: first MiB differs")
            log("1 MiB exchanged each way; sending SIGTERM")
            proxy.signal(signal.SIGTERM)
            assert_refused(t.drained_listen)
            log("after SIGTERM: listener closed, a new connect is refused")
            check(proxy.alive(), "ringtunnel exited (code %s) with a connection still open"
                  % proxy.proc.returncode)
            phase2.set()

            def send2():
                s.sendall(a2)
                s.shutdown(socket.SHUT_WR)
            th2 = Threads()
            th2.start(send2, name="client-send-2")
            got2 = recv_until_eof(s, limit=MIB)
            th2.join(TIMEOUT, "client sender")
        finally:
            s.close()
        t_closed = time.monotonic()
        target.join(TIMEOUT)
        check(got2 == (MIB, sha256_hex(b2)), "client: after SIGTERM received %d bytes (sha %s),"
              " expected %d (sha %s)" % (got2[0], got2[1][:12], MIB, sha256_hex(b2)[:12]))
        check(res["t2"] == (MIB, sha256_hex(a2)), "target: after SIGTERM received %d bytes"
              " (sha %s), expected %d" % (res["t2"][0], res["t2"][1][:12], MIB))
        log("the open connection relayed 1 MiB more each way after SIGTERM, byte-exact, "
            "then closed with FIN both ways")
        rc = proxy.wait_exit(PROMPT)
        check(rc == 0, "ringtunnel exit code %s after draining, expected 0; stderr:\n%s"
              % (rc, proxy.stderr_tail()))
        log("ringtunnel exited 0, %.2f s after the last connection closed"
            % (time.monotonic() - t_closed))
        es = t.entries(me, target.addr, marks, timeout=5)
        for e in es:
            check_entry(e, bytes_up=2 * MIB, bytes_down=2 * MIB, end="closed")
        log("access log (%d entries): bytes_up=bytes_down=%d end=closed" % (len(es), 2 * MIB))
        t.stop_ok()
    finally:
        target.close()


def drain_timeout_resets_idle(topo):
    res = {}
    hello = gen_bytes(35, 1000)

    def handler(conn, peer):
        conn.sendall(recv_exact(conn, len(hello)))
        res["target_end"] = expect_eof_or_reset(conn, 10.0, "target")
        res["target_end_at"] = time.monotonic()
        conn.close()

    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        t = topo.start([target.addr], extra=["--drain-timeout", "500ms"])
        proxy = t.drained
        marks = t.marks()
        s = connect(t.listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            s.sendall(hello)
            check(recv_exact(s, len(hello)) == hello, "echo differs")
            log("connection established and idle; SIGTERM with --drain-timeout 500ms")
            t0 = time.monotonic()
            proxy.signal(signal.SIGTERM)
            rc = proxy.wait_exit(PROMPT)
            t_exit = time.monotonic() - t0
            check(rc == 0, "ringtunnel exit code %s after drain timeout, expected 0; stderr:\n%s"
                  % (rc, proxy.stderr_tail()))
            log("ringtunnel exited 0 after %.2f s" % t_exit)
            how = expect_eof_or_reset(s, PROMPT, "held client")
            log("held client: connection %s" % ("reset" if how == "reset" else "closed (EOF)"))
        finally:
            s.close()
        target.join(PROMPT)
        check(res["target_end_at"] - t0 <= t_exit + PROMPT, "target side closed late")
        log("target side: connection %s" % res["target_end"])
        es = t.entries(me, target.addr, marks, timeout=5)
        for e in es:
            check_entry(e, bytes_up=len(hello), bytes_down=len(hello))
        check_entry(es[-1], end="drain_timeout")    # the signalled proxy's (the last)
        for e in es[:-1]:   # HBONE: A, whose tunnel connection B ended
            check(e["end"] in ("peer_error", "target_reset"), "A logged end=%s for a stream"
                  " that B reset at its drain timeout: %r" % (e["end"], e["_line"]))
        log("access log (%d entries): bytes_up=bytes_down=%d, ends %s"
            % (len(es), len(hello), "/".join(e["end"] for e in es)))
        t.stop_ok()
    finally:
        target.close()


def idle_signal(sig):
    def run():
        listen = ("127.0.0.1", free_port())
        tgt = ("127.0.0.1", free_port())
        proxy = Proxy(["--forward", forward_arg(listen, tgt)], listens=[listen])
        proxy.signal(sig)
        rc = proxy.wait_exit(PROMPT)
        check(rc == 0, "exit code %s after %s with no connections, expected 0; stderr:\n%s"
              % (rc, sig.name, proxy.stderr_tail()))
        check(not is_listening(*listen), "listener still there after exit")
        log("%s with no connections: exit 0 within %.0f s" % (sig.name, PROMPT))
    return run


if __name__ == "__main__":
    run_tests("drain", [
        ("%s/%s" % (topo.name, name), lambda f=f, topo=topo: f(topo))
        for topo in TOPOLOGIES
        for name, f in (("drain-finishes-open-connection", drain_finishes_open_connection),
                        ("drain-timeout-resets-idle", drain_timeout_resets_idle))
    ] + [
        ("idle-sigterm", idle_signal(signal.SIGTERM)),
        ("idle-sigint", idle_signal(signal.SIGINT)),
    ], 100)

#!/usr/bin/env python3
"""HBONE end to end: client -> ringtunnel A (outbound,
--forward L=hbone://B/T?identity=<node-b>) -> ringtunnel B (--hbone-listen,
node-b's identity) -> target T, all on 127.0.0.1. Certificates from
scripts/gen-certs.sh in a temporary directory (A = node-a, B = node-b). The
pair is topology.Hbone. Half-close, reset and drain through the tunnel run in
test_halfclose, test_reset and test_drain (their hbone/... cases).

bulk-64-streams: 64 concurrent connections, 4 MiB of seeded random data each
  way on each (distinct per stream), sha256 checked at the target and at the
  client; A's log has 64 lines and B's 64 lines with bytes_up = bytes_down =
  4 MiB, end=closed, src_identity=node-a, dst_identity=node-b.
refused-target: nothing listens at T: the client is reset within 3 s; A's log
  end=refused, B's log end=connect_refused.
wrong-identity: identity= names spiffe://.../sa/intruder, B presents node-b:
  the client is reset within 5 s, B sees no stream, the target no connection,
  A's log has a non-closed end and a line that says why.
pool-reuse: A with --workers 1; 100 sequential short echo exchanges; after
  each, the ESTABLISHED connections to B's port are noted (/proc/net/tcp): one
  and the same connection all along, 1 at the end, and B logged 100 streams.
slow-reader: the client sends 200 MiB as fast as it can; the target reads 64 KiB
  every 50 ms for 4 s: the client's sent count stays below 64 MiB and stops
  growing (from 2 s to 4 s: < 16 MiB more than the target read), A's and B's
  VmRSS stay below baseline + 64 MiB (+ 384 MiB under ASan); then the target
  reads everything and all 200 MiB arrive intact (sha256).
peer-killed: while a client streams data, B is SIGKILLed: the client's
  connection is closed (EOF or reset) within 5 s and A logs end=peer_error; a
  new B on the same port, and a new connection through A relays byte-exact.
pool-idle-close: with --pool-idle-timeout 1s, A's pooled connection to B closes
  once it has had no stream for that long; the next stream opens a new one.
silent-client-timed-out: a TCP client on B's HBONE port that never starts TLS is
  closed once --connect-timeout (500 ms) has passed, and B keeps serving."""

import hashlib
import os
import signal
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, TargetServer, Threads, check, check_kv, connect,  # noqa: E402
                     connect_bound, echo_handler, echo_roundtrip, established_to, tcp_connections,
                     expect_eof_or_reset, expect_reset, fmt_addr, free_port, gen_bytes, log,
                     recv_exact, run_tests, sock_addr_str, wait_until)
from hbone_common import (ID_A, ID_B, duplex, entries_for, rss_slack_kib,  # noqa: E402
                          spiffe, start_inbound, stderr_reason_lines, wait_port_free)
from topology import Hbone, check_identities  # noqa: E402

TIMEOUT = float(os.environ.get("HBONE_TIMEOUT", "60"))   # per socket operation
PROMPT = 3.0
MIB = 1024 * 1024


# ---------------------------------------------------------------------------


def bulk_64_streams():
    N, SIZE = int(os.environ.get("HBONE_BULK_N", "64")), 4 * MIB   # (env: for diagnosis)
    up_base = gen_bytes(101, SIZE + N * 4096)
    down_base = gen_bytes(102, SIZE + N * 4096)
    ups = [memoryview(up_base)[i * 4096:i * 4096 + SIZE - 8] for i in range(N)]
    downs = [memoryview(down_base)[i * 4096:i * 4096 + SIZE] for i in range(N)]
    up_rest_sha = [hashlib.sha256(ups[i]).hexdigest() for i in range(N)]
    down_sha = [hashlib.sha256(downs[i]).hexdigest() for i in range(N)]
    at_target = {}

    def handler(conn, peer):
        i = int(recv_exact(conn, 8))
        n, h, err = duplex(conn, downs[i], SIZE - 8, timeout=TIMEOUT)
        at_target[i] = (n, h, err)
        conn.close()

    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        tun = Hbone([target.addr])
        ma, mb = tun.marks()
        at_client = {}
        names = {}

        def client(i):
            s = connect(tun.listen, TIMEOUT)
            try:
                names[i] = sock_addr_str(s.getsockname())
                s.sendall(b"%08d" % i)
                at_client[i] = duplex(s, ups[i], SIZE, timeout=TIMEOUT)
            finally:
                s.close()

        th = Threads()
        t0 = time.monotonic()
        for i in range(N):
            th.start(client, i, name="client-%d" % i)
        th.join(TIMEOUT * 2, "clients")
        target.join(TIMEOUT)
        dt = time.monotonic() - t0
        for i in range(N):
            n, h, err = at_target.get(i, (None, None, "no connection"))
            check(err is None and n == SIZE - 8 and h == up_rest_sha[i],
                  "stream %d: target received %s bytes (sha %s), expected %d (sha %s);"
                  " send error %r"
                  % (i, n, (h or "")[:12], SIZE - 8, up_rest_sha[i][:12], err))
            n, h, err = at_client[i]
            check(err is None and n == SIZE and h == down_sha[i],
                  "stream %d: client received %d bytes (sha %s), expected %d (sha %s);"
                  " send error %r"
                  % (i, n, h[:12], SIZE, down_sha[i][:12], err))
        log("%d streams x %d MiB each way, byte-exact at both ends, in %.1f s (%.0f MiB/s total)"
            % (N, SIZE // MIB, dt, 2 * N * SIZE / MIB / dt))
        by = tun.a_entries(names.values(), ma)
        for i in range(N):
            e = by[names[i]]
            check_kv(e, listener=fmt_addr(*tun.listen), target=fmt_addr(*target.addr),
                     bytes_up=SIZE, bytes_down=SIZE, end="closed")
            check_identities(e)
        es = tun.b_entries(target.addr, N, mb)
        check(len(es) == N, "B logged %d streams for the target, expected %d" % (len(es), N))
        for e in es:
            check_kv(e, listener=fmt_addr(*tun.B.hbone_addr), bytes_up=SIZE, bytes_down=SIZE,
                     end="closed")
            check_identities(e)
        log("A: %d lines, B: %d lines: bytes_up=bytes_down=%d end=closed src=%s dst=%s"
            % (N, N, SIZE, ID_A, ID_B))
        tun.stop_ok()
    finally:
        target.close()


# ---------------------------------------------------------------------------


def refused_target():
    refused = ("127.0.0.1", free_port())   # nothing listens there
    tun = Hbone([refused])
    ma, mb = tun.marks()
    s, me, how = connect_bound(tun.listen, TIMEOUT)
    try:
        t0 = time.monotonic()
        if how is None:
            try:
                s.sendall(b"hello")
            except (ConnectionResetError, BrokenPipeError):
                pass
            expect_reset(s, PROMPT, "client")
        log("client reset %.2f s after connecting (%s)"
            % (time.monotonic() - t0, how or "reset on recv"))
    finally:
        s.close()
    e = tun.a_entries([me], ma)[me]
    check_kv(e, target=fmt_addr(*refused), end="refused", bytes_down=0)
    eb = tun.b_entries(refused, 1, mb)[0]
    check_kv(eb, end="connect_refused", bytes_up=0, bytes_down=0)
    log("A: end=refused; B: end=connect_refused")
    tun.stop_ok()


def wrong_identity(expected_name="intruder"):
    target = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr], identity=spiffe(expected_name))
        ma, mb = tun.marks()
        err_at = len(tun.A.stderr_text())
        s, me, how = connect_bound(tun.listen, TIMEOUT)
        try:
            if how is None:
                try:
                    s.sendall(b"hello")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                w = expect_reset(s, 5.0, "client")
                log("client reset after %.2f s" % w)
        finally:
            s.close()
        e = tun.a_entries([me], ma)[me]
        check(e.get("end") not in ("closed", None),
              "A logged end=%s for a peer with the wrong identity: %r" % (e.get("end"), e["_line"]))
        why = stderr_reason_lines(tun.A, ["identity", "san", "spiffe", "certificate", "verif"],
                                  after=err_at)
        check(why or any(k not in ("listener", "client", "target", "bytes_up", "bytes_down",
                                   "duration_ms", "end", "start", "src_identity",
                                   "dst_identity", "_line") for k in e),
              "A's log says nowhere why the stream failed (no line about the identity);"
              " stderr tail:\n%s" % tun.A.stderr_tail(15))
        log("A: end=%s; why: %s" % (e["end"], (why[0] if why else e["_line"])[:200]))
        time.sleep(0.3)
        check(not entries_for(tun.B, mb), "B logged a stream from A although A should not trust"
              " it: %r" % [x["_line"] for x in entries_for(tun.B, mb)])
        check(target.accepted == 0, "the target got %d connections through a peer A should"
              " not trust" % target.accepted)
        log("B logged no stream; the target saw no connection")
        tun.stop_ok()
    finally:
        target.close()


def pool_reuse():
    N = 100
    target = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr], a_extra=["--workers", "1"])
        ma, mb = tun.marks()
        port = tun.B.hbone_addr[1]
        names = []
        seen = set()       # (local port, inode) of every connection to B seen after a stream
        for i in range(N):
            names.append(echo_roundtrip(tun.listen, nbytes=1000 + i, seed=300 + i))
            seen |= {(lp, ino) for lp, rp, st, ino in tcp_connections()
                     if rp == port and st == "ESTABLISHED"}
        tun.a_entries(names, ma)
        es = tun.b_entries(target.addr, N, mb)
        check(len(es) == N, "B logged %d streams, expected %d" % (len(es), N))
        n = established_to(port)
        check(n == 1, "%d ESTABLISHED TCP connections to B's port %d after %d sequential"
              " streams from A (--workers 1); expected 1 pooled connection" % (n, port, N))
        check(len(seen) == 1, "%d distinct TCP connections to B's port were seen over the %d"
              " streams (local ports %s...); expected one pooled connection for all"
              % (len(seen), N, sorted(p for p, _ in seen)[:5]))
        log("%d sequential streams: 1 TCP connection A->B (the same one after every stream),"
            " B logged %d streams" % (N, N))
        tun.stop_ok()
    finally:
        target.close()


# ---------------------------------------------------------------------------


def slow_reader():
    TOTAL = 200 * MIB
    BLOCK = MIB
    block = gen_bytes(401, BLOCK)

    def blk(i):
        return b"%08d" % i + block[8:]

    expect = hashlib.sha256()
    for i in range(TOTAL // BLOCK):
        expect.update(blk(i))
    expect = expect.hexdigest()

    st = {"sent": 0, "read": 0, "phase": 1}
    go_fast = threading.Event()
    res = {}

    def handler(conn, peer):
        h = hashlib.sha256()
        n = 0
        end = time.monotonic() + 4.0
        while time.monotonic() < end:        # 64 KiB every 50 ms
            want = 64 * 1024
            while want:
                b = conn.recv(want)
                if not b:
                    res["early_eof"] = n
                    return
                h.update(b)
                n += len(b)
                want -= len(b)
            st["read"] = n
            time.sleep(0.05)
        go_fast.wait(30)
        while True:
            b = conn.recv(1 << 20)
            if not b:
                break
            h.update(b)
            n += len(b)
            st["read"] = n
        res["target"] = (n, h.hexdigest())
        conn.close()

    target = TargetServer(handler, conn_timeout=TIMEOUT)
    echo = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr, echo.addr])
        echo_roundtrip(tun.listens[1], nbytes=4 * MIB)       # warm up the pool and buffers
        time.sleep(0.3)
        base_a, base_b = tun.A.rss_kib(), tun.B.rss_kib()
        log("baseline VmRSS: A %d KiB, B %d KiB" % (base_a, base_b))
        ma, mb = tun.marks()
        s = connect(tun.listen, TIMEOUT)
        me = sock_addr_str(s.getsockname())

        def sender():
            for i in range(TOTAL // BLOCK):
                mv = memoryview(blk(i))
                while len(mv):
                    k = s.send(mv)
                    st["sent"] += k
                    mv = mv[k:]
            s.shutdown(socket.SHUT_WR)
            res["sent_done"] = time.monotonic()

        th = Threads()
        th.start(sender, name="sender")
        samples = []
        max_a = max_b = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:
            max_a = max(max_a, tun.A.rss_kib())
            max_b = max(max_b, tun.B.rss_kib())
            samples.append((time.monotonic() - t0, st["sent"], st["read"]))
            time.sleep(0.1)
        sent_2s = [x for x in samples if x[0] >= 2.0][0]
        sent_end = samples[-1]
        log("slow phase: client sent %.1f MiB (at 2 s: %.1f MiB), target read %.1f MiB;"
            " max VmRSS A %d KiB (+%d), B %d KiB (+%d)"
            % (sent_end[1] / MIB, sent_2s[1] / MIB, sent_end[2] / MIB, max_a, max_a - base_a,
               max_b, max_b - base_b))
        check("early_eof" not in res, "target saw EOF after %s bytes" % res.get("early_eof"))
        check(sent_end[1] < 64 * MIB,
              "the client got %.1f MiB into the tunnel while the target read only %.1f MiB:"
              " flow control does not hold the sender back" % (sent_end[1] / MIB,
                                                               sent_end[2] / MIB))
        grew = (sent_end[1] - sent_2s[1]) - (sent_end[2] - sent_2s[2])
        check(grew < 16 * MIB, "between 2 s and 4 s the client's sent count grew %.1f MiB more"
              " than the target read: the tunnel keeps buffering" % (grew / MIB))
        slack = rss_slack_kib()     # 64 MiB (more under ASan: its quarantine)
        check(max_a - base_a < slack, "A's VmRSS grew by %d KiB (> %d KiB) with a slow"
              " reader" % (max_a - base_a, slack))
        check(max_b - base_b < slack, "B's VmRSS grew by %d KiB (> %d KiB) with a slow"
              " reader" % (max_b - base_b, slack))
        go_fast.set()
        t1 = time.monotonic()
        th.join(TIMEOUT * 2, "sender")
        target.join(TIMEOUT)
        n, h = res["target"]
        check((n, h) == (TOTAL, expect), "target received %d bytes (sha %s), expected %d (sha %s)"
              % (n, h[:12], TOTAL, expect[:12]))
        log("then the target read all %d MiB intact (%.1f s)" % (TOTAL // MIB,
                                                                 time.monotonic() - t1))
        check(expect_eof_or_reset(s, 10, "client") == "eof", "client: reset instead of EOF")
        s.close()
        e = tun.a_entries([me], ma)[me]
        check_kv(e, bytes_up=TOTAL, bytes_down=0, end="closed")
        tun.stop_ok()
    finally:
        target.close()
        echo.close()


# ---------------------------------------------------------------------------


def peer_killed():
    blob = gen_bytes(501, CHUNK)
    got = {"n": 0}

    def sink(conn, peer):
        try:
            while True:
                b = conn.recv(CHUNK)
                if not b:
                    break
                got["n"] += len(b)
        except OSError:
            pass
        conn.close()

    target = TargetServer(sink, conn_timeout=TIMEOUT)
    echo = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr, echo.addr])
        echo_roundtrip(tun.listens[1])
        ma, _ = tun.marks()
        s = connect(tun.listen, TIMEOUT)
        me = sock_addr_str(s.getsockname())
        stop = threading.Event()

        def sender():
            try:
                while not stop.is_set():
                    s.sendall(blob)
            except OSError:
                pass

        th = Threads()
        th.start(sender, name="sender")
        end = time.monotonic() + 20
        while got["n"] < 8 * MIB:
            check(time.monotonic() < end, "only %d bytes reached the target in 20 s" % got["n"])
            time.sleep(0.02)
        port = tun.B.hbone_addr[1]
        os.kill(tun.B.pid, signal.SIGKILL)
        t0 = time.monotonic()
        tun.B.proc.wait(10)
        how = expect_eof_or_reset(s, 5.0, "client")
        dt = time.monotonic() - t0
        stop.set()
        s.close()
        th.join(10, "sender")
        log("B SIGKILLed after %.1f MiB; the client saw %s %.2f s later"
            % (got["n"] / MIB, how, dt))
        e = tun.a_entries([me], ma)[me]
        check_kv(e, end="peer_error")
        log("A: end=peer_error (bytes_up=%s)" % e.get("bytes_up"))
        check(tun.A.alive(), "A died with its peer")
        wait_port_free(port)
        tun.B = start_inbound(port=port)
        me2 = echo_roundtrip(tun.listens[1], nbytes=2 * MIB, seed=502)
        e2 = tun.a_entries([me2], ma)[me2]
        check_kv(e2, end="closed", bytes_up=2 * MIB, bytes_down=2 * MIB)
        log("a new B on port %d: a new stream through A relays 2 MiB each way byte-exact"
            % port)
        tun.stop_ok()
    finally:
        target.close()
        echo.close()


def pool_idle_close():
    """An outbound connection with no stream left closes after --pool-idle-timeout."""
    target = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr], a_extra=["--workers", "1", "--pool-idle-timeout", "1s"])
        port = tun.B.hbone_addr[1]
        echo_roundtrip(tun.listen, nbytes=1000, seed=700)
        check(established_to(port) == 1, "no pooled connection to B after a stream")
        wait_until(lambda: established_to(port) == 0, 6, interval=0.1,
                   what="the idle pooled connection to close (--pool-idle-timeout 1s)")
        log("idle pooled connection closed after --pool-idle-timeout; a new stream opens a new"
            " one")
        echo_roundtrip(tun.listen, nbytes=1000, seed=701)
        check(established_to(port) == 1, "no new pooled connection for a new stream")
        tun.stop_ok()
    finally:
        target.close()


def silent_client_timed_out():
    """A TCP client on the HBONE port that never starts TLS is closed after --connect-timeout
    (the handshake deadline), and the inbound side keeps serving."""
    target = TargetServer(echo_handler)
    try:
        tun = Hbone([target.addr], b_extra=["--connect-timeout", "500ms"])
        silent = connect(tun.B.hbone_addr)
        t0 = time.monotonic()
        expect_eof_or_reset(silent, 5, who="the silent client")
        took = time.monotonic() - t0
        silent.close()
        check(took >= 0.4, "closed after %.2f s, before the 500 ms deadline" % took)
        echo_roundtrip(tun.listen, nbytes=5000, seed=703)
        log("a client that never started TLS was closed after %.1f s; B still serves" % took)
        tun.stop_ok()
    finally:
        target.close()


if __name__ == "__main__":
    TESTS = [
        ("bulk-64-streams", bulk_64_streams),
        ("refused-target", refused_target),
        ("wrong-identity", wrong_identity),
        ("pool-reuse", pool_reuse),
        ("slow-reader", slow_reader),
        ("peer-killed", peer_killed),
        ("pool-idle-close", pool_idle_close),
        ("silent-client-timed-out", silent_client_timed_out),
    ]
    # HBONE_ONLY=name1,name2 (or RINGTUNNEL_IT_ONLY) runs only those sub-tests
    run_tests("hbone", TESTS, 280, only_alias="HBONE_ONLY")

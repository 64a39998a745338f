#!/usr/bin/env python3
"""Slow readers must not starve other connections of the same worker.

Every proxy here runs with --workers 1, so every connection shares one worker's
receive buffers and one event loop. In each case some connections are made to
hold as much data as the proxy lets them (their far end never reads), and then
a fresh, well-behaved client on another route of the same worker must be
served at once: its 64 KiB echo comes back byte-exact within 5 s.

tcp-relay: route S (--forward to a target that accepts and never reads) and
  route E (to an echo target). 64 stallers connect to S and push data as fast
  as they can until their sends block. A fresh client on E then gets its
  64 KiB echo (and EOF) within 5 s. Then the stallers half-close (FIN) while the
  target still does not read, and a second fresh client on E must again get
  its echo within 5 s.
hbone-inbound: B (--hbone-listen). A raw mTLS HTTP/2 client opens 32 CONNECT
  streams to a data source (a target that writes continuously from accept on),
  then never reads again: no WINDOW_UPDATE, its socket not read. A second
  HTTP/2 client (another connection, honouring flow control and reading) opens
  a stream to an echo target and must get its 64 KiB echo and END_STREAM
  within 5 s.
pooled-outbound: A (two hbone:// forwards to the same B and identity, so one
  pooled connection) -> B. 8 clients push through A's first forward to a target
  behind B that never reads, until their sends block; then a fresh client on
  A's second forward (to an echo target behind B) must get its 64 KiB echo
  within 5 s.

B gets --allow-dest 127.0.0.0/8 when the binary knows that flag. The test's
own sockets have fixed, small kernel buffers (so the pressure lands on the
proxy, not on loopback autotuning). STARVE_N_TCP / STARVE_N_HBONE /
STARVE_N_POOLED override the staller counts (for diagnosis: with small counts
the old binary passes)."""

import os
import selectors
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, Proxy, SinkServer, TargetServer, Threads, binary, check, echo_handler,  # noqa: E402
                     gen_chunks, parse_access_kv, wait_until,
                     fmt_addr, forward_arg, free_port, gen_bytes, log, raise_nofile,
                     run_tests, set_linger0)
import hbone_h2 as h2  # noqa: E402
from hbone_common import (ID_B, ca, cert, key, require_hbone, start_inbound,  # noqa: E402
                          start_outbound)

N_TCP = int(os.environ.get("STARVE_N_TCP", "64"))
N_HBONE = int(os.environ.get("STARVE_N_HBONE", "32"))
N_POOLED = int(os.environ.get("STARVE_N_POOLED", "8"))
ECHO_BYTES = 64 * 1024
SERVE_WITHIN = 5.0           # the fresh client's whole budget, connect to EOF
STALL_MIN, STALL_QUIET, STALL_MAX = 1.5, 0.5, 6.0
SOCK_BUF = 64 * 1024         # SO_SNDBUF / SO_RCVBUF of the test's pushing and sink sockets
KIB = 1024
MIB = 1024 * 1024
COMMON = ["--workers", "1", "--drain-timeout", "2s"]

_allow_dest = None


def inbound_extra():
    """--allow-dest 127.0.0.0/8 if the binary's --help names it."""
    global _allow_dest
    if _allow_dest is None:
        r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        _allow_dest = b"--allow-dest" in r.stdout
        log("binary %s --allow-dest" % ("knows" if _allow_dest else "does not know"))
    return COMMON + (["--allow-dest", "127.0.0.0/8"] if _allow_dest else [])


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------


class DataSource:
    """On accept, writes data continuously until the connection fails or close()."""

    def __init__(self):
        self.block = gen_bytes(31, CHUNK)
        self.sent = 0
        self._stop = False
        self.lock = threading.Lock()
        self.srv = TargetServer(self._handler, conn_timeout=0.5)
        self.addr = self.srv.addr

    def _handler(self, conn, peer):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
        mv = memoryview(self.block)
        while not self._stop:
            try:
                n = conn.send(mv)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.sent += n

    def close(self):
        self._stop = True
        for c in list(self.srv.conns):
            try:
                set_linger0(c)
            except OSError:
                pass
        self.srv.close()


# ---------------------------------------------------------------------------
# Stallers: TCP clients that push as fast as they can
# ---------------------------------------------------------------------------


class Stallers:
    """n non-blocking TCP connections to addr, each pushing data from one
    selector thread until its sends block (what the proxy no longer reads)."""

    def __init__(self, addr, n):
        self.block = memoryview(gen_bytes(32, 256 * KIB))
        self.socks = []
        for _ in range(n):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
            s.settimeout(5.0)
            s.connect(addr)
            s.setblocking(False)
            self.socks.append(s)
        self.sent = [0] * n
        self.errors = []
        self._stop = threading.Event()
        self.sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            self.sel.register(s, selectors.EVENT_WRITE, i)
        self._t = threading.Thread(target=self._run, daemon=True, name="stallers")
        self._t.start()

    def total(self):
        return sum(self.sent)

    def _run(self):
        while not self._stop.is_set():
            for k, _ in self.sel.select(0.1):
                i = k.data
                try:
                    self.sent[i] += k.fileobj.send(self.block)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:        # a proxy that resets a staller: fine here
                    self.errors.append("staller %d: %s" % (i, e))
                    self.sel.unregister(k.fileobj)

    def wait_stuck(self):
        """At least STALL_MIN s, then until the total stops growing for
        STALL_QUIET s (at most STALL_MAX s). Returns (total bytes, seconds)."""
        t0 = time.monotonic()
        time.sleep(STALL_MIN)
        last, since = self.total(), time.monotonic()
        while time.monotonic() - t0 < STALL_MAX:
            time.sleep(0.1)
            cur = self.total()
            if cur != last:
                last, since = cur, time.monotonic()
            elif time.monotonic() - since >= STALL_QUIET:
                break
        return self.total(), time.monotonic() - t0

    def stop(self):
        self._stop.set()
        self._t.join(2)

    def shutdown_wr(self):
        """Stop pushing and send FIN on every connection (after what is queued)."""
        self.stop()
        n = 0
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_WR)
                n += 1
            except OSError:
                pass
        return n

    def close(self):
        self.stop()
        for s in self.socks:
            try:
                set_linger0(s)
                s.close()
            except OSError:
                pass
        self.sel.close()


# ---------------------------------------------------------------------------
# The fresh clients
# ---------------------------------------------------------------------------


class Outcome:
    """What a fresh client measured: bytes echoed, whether the echo was exact
    and ended (EOF / END_STREAM), how long it took, where it stopped."""

    def __init__(self):
        self.got = 0
        self.exact = False
        self.ended = False
        self.secs = 0.0
        self.stage = "connect"
        self.error = None

    def ok(self):
        return self.exact and self.ended and self.secs <= SERVE_WITHIN

    def __str__(self):
        return ("%d of %d bytes echoed (%s), %s, after %.2f s%s" % (
            self.got, ECHO_BYTES, "byte-exact" if self.exact else "not all/not exact",
            "end seen" if self.ended else "no end", self.secs,
            "" if self.ok() else "; stopped at %s%s" % (
                self.stage, ": %s" % self.error if self.error else "")))


def tcp_echo(addr, seed):
    """A fresh TCP client: connect, send ECHO_BYTES, half-close, read the echo
    and EOF, all within SERVE_WITHIN seconds."""
    out = Outcome()
    data = gen_bytes(seed, ECHO_BYTES)
    t0 = time.monotonic()
    end = t0 + SERVE_WITHIN
    s = socket.socket()
    try:
        s.settimeout(SERVE_WITHIN)
        s.connect(addr)
        out.stage = "echo"

        def sender():
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        threading.Thread(target=sender, daemon=True, name="fresh-send").start()
        buf = bytearray()
        while time.monotonic() < end:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                b = s.recv(CHUNK)
            except socket.timeout:
                break
            if not b:
                out.ended = True
                break
            buf += b
        out.got = len(buf)
        out.exact = bytes(buf) == data
        if not out.ended:
            out.error = "no EOF" if out.got >= ECHO_BYTES else "timed out"
    except OSError as e:
        out.error = "%s: %s" % (type(e).__name__, e)
    finally:
        out.secs = time.monotonic() - t0
        try:
            set_linger0(s)
            s.close()
        except OSError:
            pass
    return out


def h2_ctx():
    return h2.tls_context(ca(), cert("node-a"), key("node-a"))


def h2_echo(addr, target, seed):
    """A fresh, well-behaved HTTP/2 client on its own mTLS connection: CONNECT
    to target, send ECHO_BYTES within the server's flow-control windows while
    reading (its own windows: 1 MiB per stream, 16 MiB more for the connection),
    until the echo and END_STREAM, all within SERVE_WITHIN seconds."""
    out = Outcome()
    data = gen_bytes(seed, ECHO_BYTES)
    t0 = time.monotonic()
    end = t0 + SERVE_WITHIN
    c = None
    try:
        out.stage = "TLS handshake"
        c = h2.H2Conn(addr, h2_ctx(), timeout=SERVE_WITHIN)
        out.stage = "server SETTINGS"
        c.start()
        f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK,
                       max(0.01, end - time.monotonic()))
        if f is None:
            out.error = c.summary(6)
            return out
        c.send(h2.settings_frame(ack=True) + h2.window_update_frame(0, 1 << 24)
               + h2.headers_frame(1, h2.connect_headers(fmt_addr(*target))))
        out.stage = "CONNECT answer"
        f = c.wait_for(lambda f: f.stream == 1 and f.type in (h2.HEADERS, h2.RST_STREAM)
                       or f.type == h2.GOAWAY, max(0.01, end - time.monotonic()))
        if f is None or c.status(1) != "200":
            out.error = c.summary(6)
            return out
        out.stage = "echo"
        sent = 0
        while time.monotonic() < end:
            if sent < ECHO_BYTES:
                with c.lock:
                    fs = list(c.frames)
                settings = c.server_settings() or {}
                conn_win = 65535 + sum(int.from_bytes(f.payload[:4], "big") & 0x7fffffff
                                       for f in fs if f.type == h2.WINDOW_UPDATE
                                       and f.stream == 0)
                stream_win = settings.get(h2.INITIAL_WINDOW_SIZE, 65535) + sum(
                    int.from_bytes(f.payload[:4], "big") & 0x7fffffff
                    for f in fs if f.type == h2.WINDOW_UPDATE and f.stream == 1)
                room = min(conn_win, stream_win) - sent
                while room > 0 and sent < ECHO_BYTES:
                    n = min(room, 16384, ECHO_BYTES - sent)
                    c.send(h2.data_frame(1, data[sent:sent + n],
                                         end_stream=sent + n == ECHO_BYTES))
                    sent += n
                    room -= n
            try:
                c.read_some(min(0.1, max(0.01, end - time.monotonic())))
            except h2.Closed:
                out.error = "connection closed: %s" % c.summary(6)
                break
            if 1 in c.ended or c.rst(1) or c.goaway():
                break
        got = bytes(c.data.get(1, b""))
        out.got = len(got)
        out.exact = got == data
        out.ended = 1 in c.ended
        if not out.ended and out.error is None:
            out.error = ("sent %d of %d bytes; %s" % (sent, ECHO_BYTES, c.summary(6))
                         if c.rst(1) or c.goaway() else "timed out (sent %d of %d bytes)"
                         % (sent, ECHO_BYTES))
    except (OSError, h2.Closed) as e:
        out.error = "%s: %s" % (type(e).__name__, e)
    finally:
        out.secs = time.monotonic() - t0
        if c is not None:
            c.close()
    return out


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def wait_count(fn, want, timeout):
    end = time.monotonic() + timeout
    while fn() < want and time.monotonic() < end:
        time.sleep(0.05)
    return fn()


def tcp_relay():
    raise_nofile(4096)
    sink = SinkServer(rcvbuf=SOCK_BUF)
    echo = TargetServer(echo_handler, conn_timeout=10)
    st = None
    try:
        ls, le = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        P = Proxy(COMMON + ["--forward", forward_arg(ls, sink.addr),
                            "--forward", forward_arg(le, echo.addr)], listens=[ls, le])
        first = tcp_echo(le, 1)
        check(first.ok(), "before any staller, the echo route is not served: %s" % first)
        st = Stallers(ls, N_TCP)
        n_acc = wait_count(lambda: len(sink.conns), N_TCP, 5.0)
        check(n_acc == N_TCP, "the sink target accepted %d of %d staller connections"
              % (n_acc, N_TCP))
        total, secs = st.wait_stuck()
        log("%d stallers pushed %.1f MiB in %.1f s, then stopped moving%s"
            % (N_TCP, total / MIB, secs, "; errors: %s" % st.errors[:2] if st.errors else ""))
        r1 = tcp_echo(le, 2)
        log("fresh client on the echo route while the stallers push: %s" % r1)
        nfin = st.shutdown_wr()
        time.sleep(1.0)
        r2 = tcp_echo(le, 3)
        log("fresh client after %d stallers sent FIN (target still not reading): %s"
            % (nfin, r2))
        check(r1.ok(), "a fresh connection on another route of the worker was starved by %d"
              " stalled connections: %s" % (N_TCP, r1))
        check(r2.ok(), "a fresh connection was starved after the %d stallers sent FIN: %s"
              % (N_TCP, r2))
        st.close()
        sink.close()
        P.stop_ok()
    finally:
        if st is not None:
            st.close()
        sink.close()
        echo.close()


def echo_on(sock, nbytes, seed, timeout):
    """An echo round trip of `nbytes` on an open connection: (ok, bytes back, seconds)."""
    data = gen_bytes(seed, nbytes)
    sock.settimeout(timeout)
    t0 = time.monotonic()
    sender = threading.Thread(target=lambda: sock.sendall(data), daemon=True)
    sender.start()
    got = b""
    try:
        while len(got) < nbytes and time.monotonic() - t0 < timeout:
            b = sock.recv(nbytes - len(got))
            if not b:
                break
            got += b
    except OSError:
        pass
    return got == data, len(got), time.monotonic() - t0


def memory_budget():
    """With a tiny pool and --memory-budget 4m, stallers move their bytes to the
    heap until the budget is spent; then the stalled holders with the most of the
    pool are reset (end=overload, with a log line) until the rest fit, so that a
    connection that was already open is still served; and new ones are served
    once the stallers are gone. (New connections arriving while the budget is
    spent are refused; whether one arrives in that window is timing.)"""
    raise_nofile(4096)
    sink = SinkServer(rcvbuf=SOCK_BUF)
    echo = TargetServer(echo_handler, conn_timeout=10)
    st = None
    try:
        ls, le = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        P = Proxy(COMMON + ["--memory-budget", "4m", "--buffer-ring-entries", "16,8,4",
                            "--forward", forward_arg(ls, sink.addr),
                            "--forward", forward_arg(le, echo.addr)], listens=[ls, le])
        first = tcp_echo(le, 1)
        check(first.ok(), "before any staller, the echo route is not served: %s" % first)
        victim = socket.create_connection(le, timeout=5)
        ok, _, _ = echo_on(victim, 1000, 4, 5.0)
        check(ok, "the open victim connection does not echo before the stallers")
        st = Stallers(ls, 16)
        total, secs = st.wait_stuck()
        log("16 stallers pushed %.1f MiB in %.1f s, then stopped moving" % (total / MIB, secs))
        ok, n, took = echo_on(victim, ECHO_BYTES, 5, SERVE_WITHIN)
        log("the connection open since before the stallers: %d of %d bytes echoed in %.2f s"
            % (n, ECHO_BYTES, took))
        check(ok, "a connection open before the stallers starved once they spent the pool and the"
              " budget: %d of %d bytes in %.1f s" % (n, ECHO_BYTES, took))
        victim.close()
        shed = [e for e in parse_access_kv(P.stderr_text()) if e["end"] == "overload"]
        log("stalled relays reset for overload: %d; log: %s" % (len(shed), next(
            (x for x in P.stderr_text().splitlines() if "overload:" in x), "none")))
        check(shed, "no stalled relay was reset although the pool and the budget were spent")
        refusals = [x for x in P.stderr_text().splitlines() if "over --memory-budget" in x]
        log("new connections refused at the budget meanwhile: %s" % (refusals[:1] or "none"))
        # The stalled relays end (their target resets), and the heap they held is freed.
        st.close()
        st = None
        sink.close()
        wait_until(lambda: sum(1 for e in parse_access_kv(P.stderr_text())
                               if e["listener"] == fmt_addr(*ls)) >= 16, 10.0,
                   what="the 16 stalled relays to end")
        r2 = tcp_echo(le, 3)
        log("fresh client after the stalled relays ended: %s" % r2)
        check(r2.ok(), "once the stalled relays ended, a new connection was still refused: %s"
              % r2)
        P.stop_ok()
    finally:
        if st is not None:
            st.close()
        sink.close()
        echo.close()


def stall_and_drain(extra=()):
    """Readers that alternate short reads with 30-120 ms stalls, both ways, with a
    tiny pool and never-reading holders keeping it under pressure: their queued
    bytes move to the heap while sends are in flight (cancelled, maybe mid-way),
    and every byte must still arrive, in order, with no relay reset."""
    import hashlib
    import random
    total, n_conns, n_holders = 6 * MIB, 4, 4
    digests, errors = {}, []

    def slow_read(sock, tag, seed):
        rng = random.Random(seed)
        h, n = hashlib.sha256(), 0
        sock.settimeout(30)
        try:
            while True:
                end = time.monotonic() + rng.uniform(0.02, 0.08)
                while time.monotonic() < end:
                    b = sock.recv(65536)
                    if not b:
                        digests[tag] = (n, h.hexdigest())
                        return
                    h.update(b)
                    n += len(b)
                time.sleep(rng.uniform(0.03, 0.12))
        except OSError as e:
            errors.append("%s: %r after %d bytes" % (tag, e, n))

    def send(sock, seed, tag):
        try:
            for c in gen_chunks(seed, total):
                sock.sendall(c)
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append("%s: send %r" % (tag, e))

    def handler(conn, peer):
        hdr = b""
        while len(hdr) < 5:
            b = conn.recv(5 - len(hdr))
            if not b:
                return
            hdr += b
        cid, holder = int.from_bytes(hdr[:4], "big"), hdr[4]
        if holder:                      # never reads; writes until it blocks
            try:
                conn.settimeout(30)
                while True:
                    conn.sendall(b"h" * 65536)
            except OSError:
                return
        t = threading.Thread(target=send, args=(conn, 1000 + cid, "down-send%d" % cid))
        t.start()
        slow_read(conn, "up%d" % cid, cid)
        t.join(30)
        conn.close()

    def want(seed):
        h = hashlib.sha256()
        for c in gen_chunks(seed, total):
            h.update(c)
        return total, h.hexdigest()

    target = TargetServer(handler, conn_timeout=40)
    holders, socks = [], []
    try:
        L = ("127.0.0.1", free_port())
        P = Proxy(COMMON + ["--buffer-ring-entries", "16,16,4", "--max-queued", "512k",
                            "--forward", forward_arg(L, target.addr)] + list(extra),
                  listens=[L])
        for i in range(n_holders):
            h = socket.create_connection(L, timeout=5)
            h.sendall((100 + i).to_bytes(4, "big") + b"\x01")
            holders.append(h)
        time.sleep(0.5)
        th = Threads()
        for i in range(n_conns):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            c.connect(L)
            c.sendall(i.to_bytes(4, "big") + b"\x00")
            socks.append(c)
            th.start(lambda c=c, i=i: send(c, i, "up-send%d" % i), name="send%d" % i)
            th.start(lambda c=c, i=i: slow_read(c, "down%d" % i, 1000 + i), name="read%d" % i)
        th.join(60, "stall-and-drain transfers")
        # the targets' readers (upstream) finish on their own threads
        # the targets' readers (upstream) finish on their own threads
        wait_until(lambda: len(digests) + len(errors) >= 2 * n_conns, 30,
                   what="every direction to finish")
        target.check_errors()
        bad = [tag for tag, seed in [("up%d" % i, i) for i in range(n_conns)]
               + [("down%d" % i, 1000 + i) for i in range(n_conns)]
               if digests.get(tag) != want(seed)]
        def ends():
            return [e["end"] for e in parse_access_kv(P.stderr_text())
                    if e["bytes_up"] == total + 5 and e["bytes_down"] == total]  # + header
        if not bad and not errors:
            wait_until(lambda: len(ends()) == n_conns, 10, what="the relays' access lines")
        log("%d connections x 2 directions x %d MiB with stalling readers: %d directions"
            " wrong, errors %s; relays ended %s" % (n_conns, total // MIB, len(bad), errors[:3],
                                                     ends()))
        check(not bad and not errors, "bytes lost or a relay reset while stalled data moved out"
              " of the pool: %s %s" % (bad, errors[:3]))
        check(ends() == ["closed"] * n_conns, "relays did not end cleanly: %s" % ends())
    finally:
        for s in holders + socks:
            s.close()
        target.close()


def healthy_upload():
    """Uploads through A to a target behind B that reads, but more slowly than
    its client sends: B holds their tunnel bytes in stream queues (their
    connection window came back on arrival). That is healthy traffic: with a
    small --memory-budget, B must still serve new connections."""
    require_hbone()

    def slow_reader(conn, peer):
        try:
            while conn.recv(65536):
                time.sleep(0.005)          # about 10 MB/s
        except OSError:
            pass
        conn.close()

    target = TargetServer(slow_reader, conn_timeout=30)
    echo = TargetServer(echo_handler, conn_timeout=10)
    stop = threading.Event()

    def upload():
        try:
            with socket.create_connection(lu, timeout=10) as s:
                while not stop.is_set():
                    s.sendall(b"u" * 65536)
        except OSError:
            pass

    try:
        le, lu = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        B = start_inbound(inbound_extra() + ["--memory-budget", "8m",
                                             "--forward", forward_arg(le, echo.addr)])
        A = start_outbound([(lu, B.hbone_addr, target.addr, ID_B)], COMMON)
        for i in range(2):
            threading.Thread(target=upload, daemon=True, name="upload%d" % i).start()
        time.sleep(2.0)
        results = [tcp_echo(le, 10 + i) for i in range(5)]
        log("fresh relays on B during two uploads to a slow target: %s"
            % ", ".join("ok" if r.ok() else str(r) for r in results))
        check(all(r.ok() for r in results), "healthy uploads made B refuse new connections: %s"
              % [str(r) for r in results if not r.ok()][:2])
        stop.set()
        A.stop_ok()
        B.stop_ok()
    finally:
        stop.set()
        target.close()
        echo.close()


def open_hostile_streams(B, src, n):
    """A raw mTLS HTTP/2 client on B with `n` CONNECT streams to `src`, all
    answered 200; from then on it never reads and never sends WINDOW_UPDATE."""
    hostile = h2.H2Conn(B.hbone_addr, h2_ctx(), timeout=10.0)
    hostile.start(settings=())           # default windows: 65,535 bytes
    f = hostile.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, 5.0)
    check(f is not None, "hostile client: no SETTINGS from B: %s" % hostile.summary())
    blob = h2.settings_frame(ack=True)
    for i in range(n):
        blob += h2.headers_frame(1 + 2 * i, h2.connect_headers(fmt_addr(*src.addr)))
    hostile.send(blob)
    sids = [1 + 2 * i for i in range(n)]
    end = time.monotonic() + 5.0
    while time.monotonic() < end and not all(hostile.status(s) or hostile.rst(s) for s in sids):
        try:
            hostile.read_some(0.1)
        except h2.Closed:
            break
    ok = sum(1 for s in sids if hostile.status(s) == "200")
    check(ok == n, "hostile client: %d of %d CONNECTs answered 200: %s"
          % (ok, n, hostile.summary()))
    return hostile


def hbone_overload():
    """One authenticated peer's 24 non-reading streams spend B's pool and its
    --memory-budget: B closes that peer's connection (the holder with the most
    of the pool, end=overload), and a connection that was open before is still
    served."""
    require_hbone()
    src = DataSource()
    echo = TargetServer(echo_handler, conn_timeout=10)
    hostile = None
    try:
        le = ("127.0.0.1", free_port())
        B = start_inbound(inbound_extra() + ["--memory-budget", "3m", "--max-queued", "512k",
                                             "--buffer-ring-entries", "64,64,16",
                                             "--forward", forward_arg(le, echo.addr)])
        victim = socket.create_connection(le, timeout=5)
        ok, _, _ = echo_on(victim, 1000, 6, 5.0)
        check(ok, "the open victim connection does not echo before the hostile streams")
        hostile = open_hostile_streams(B, src, 24)
        time.sleep(2.0)
        ok, n, took = echo_on(victim, ECHO_BYTES, 7, SERVE_WITHIN)
        log("24 non-reading streams, data source wrote %.1f MiB; the connection open since"
            " before: %d of %d bytes echoed in %.2f s" % (src.sent / MIB, n, ECHO_BYTES, took))
        check(ok, "one peer's stalled streams starved a connection that was already open: %d"
              " of %d bytes in %.1f s" % (n, ECHO_BYTES, took))
        victim.close()
        line = next((x for x in B.stderr_text().splitlines() if "overload" in x), None)
        log("B: %s" % line)
        check(line is not None, "B logged no overload although its pool and budget were spent")
        hostile.close()
        hostile = None
        B.stop_ok()
    finally:
        if hostile is not None:
            hostile.close()
        src.close()
        echo.close()


def hbone_inbound():
    require_hbone()
    src = DataSource()
    echo = TargetServer(echo_handler, conn_timeout=10)
    hostile = None
    try:
        B = start_inbound(inbound_extra())
        first = h2_echo(B.hbone_addr, echo.addr, 1)
        check(first.ok(), "before the hostile client, B does not serve an echo stream: %s"
              % first)
        hostile = open_hostile_streams(B, src, N_HBONE)
        # from here on it never reads again and never sends a WINDOW_UPDATE
        t0 = time.monotonic()
        time.sleep(STALL_MIN)
        last, since = src.sent, time.monotonic()
        while time.monotonic() - t0 < STALL_MAX:
            time.sleep(0.1)
            if src.sent != last:
                last, since = src.sent, time.monotonic()
            elif time.monotonic() - since >= STALL_QUIET:
                break
        log("%d non-reading streams: the data source wrote %.1f MiB in %.1f s, then stopped"
            " moving" % (N_HBONE, src.sent / MIB, time.monotonic() - t0))
        r = h2_echo(B.hbone_addr, echo.addr, 2)
        log("fresh HTTP/2 client on its own connection to B: %s" % r)
        check(r.ok(), "%d non-reading streams of one client starved another client's stream"
              " on B: %s" % (N_HBONE, r))
        hostile.close()
        hostile = None
        r2 = h2_echo(B.hbone_addr, echo.addr, 3)
        log("fresh HTTP/2 client after the hostile connection closed: %s" % r2)
        check(r2.ok(), "after the hostile client closed its %d streams, B did not serve a fresh"
              " stream: %s" % (N_HBONE, r2))
        src.close()
        B.stop_ok()
    finally:
        if hostile is not None:
            hostile.close()
        src.close()
        echo.close()


def pooled_outbound():
    require_hbone()
    sink = SinkServer(rcvbuf=SOCK_BUF)
    echo = TargetServer(echo_handler, conn_timeout=10)
    st = None
    try:
        B = start_inbound(inbound_extra())
        ls, le = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        A = start_outbound([(ls, B.hbone_addr, sink.addr, ID_B),
                            (le, B.hbone_addr, echo.addr, ID_B)], COMMON)
        first = tcp_echo(le, 1)
        check(first.ok(), "before any staller, A's echo route is not served: %s" % first)
        st = Stallers(ls, N_POOLED)
        n_acc = wait_count(lambda: len(sink.conns), N_POOLED, 5.0)
        check(n_acc == N_POOLED, "the sink target behind B accepted %d of %d staller streams"
              % (n_acc, N_POOLED))
        total, secs = st.wait_stuck()
        log("%d stallers through A's pooled connection pushed %.1f MiB in %.1f s, then stopped"
            " moving%s" % (N_POOLED, total / MIB, secs,
                           "; errors: %s" % st.errors[:2] if st.errors else ""))
        r = tcp_echo(le, 2)
        log("fresh client on A's echo route (same peer, same pooled connection): %s" % r)
        check(r.ok(), "%d non-reading targets behind one pooled HBONE connection starved a"
              " fresh stream on it: %s" % (N_POOLED, r))
        st.shutdown_wr()
        time.sleep(1.0)
        r2 = tcp_echo(le, 3)
        log("fresh client after the %d stallers sent FIN (targets still not reading): %s"
            % (N_POOLED, r2))
        check(r2.ok(), "after %d stallers sent FIN, a fresh stream on the pooled connection was"
              " starved: %s" % (N_POOLED, r2))
        st.close()
        sink.close()
        A.stop_ok()
        B.stop_ok()
    finally:
        if st is not None:
            st.close()
        sink.close()
        echo.close()


if __name__ == "__main__":
    TESTS = [
        ("tcp-relay", tcp_relay),
        ("hbone-inbound", hbone_inbound),
        ("pooled-outbound", pooled_outbound),
        ("memory-budget", memory_budget),
        ("stall-and-drain", stall_and_drain),
        ("healthy-upload", healthy_upload),
        ("hbone-overload", hbone_overload),
        ("stall-and-drain-sendmsg", lambda: stall_and_drain(["--registered-buffers", "off"])),
    ]
    # STARVE_ONLY=name1,name2 (or RINGTUNNEL_IT_ONLY) runs only those sub-tests
    run_tests("starvation", TESTS, 240, only_alias="STARVE_ONLY")

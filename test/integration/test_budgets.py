#!/usr/bin/env python3
"""Budgets and timeouts: every resource a client can make the proxy hold has a limit.

silent-connections-cost-little: 2,000 TCP connections to --hbone-listen that never send a
  byte; B's VmRSS growth per connection must be <= 8 KiB (no TLS or HTTP/2 state before the
  first byte).
handshake-caps: 100 silent connections from 127.0.0.1 with --max-handshakes-per-source 8:
  at most 8 are held, the others are closed by the proxy; a real client from 127.0.0.2
  still completes its handshake and a stream; the closes are logged in summary lines.
inbound-idle-close: a raw client that completes the handshake and answers PINGs but opens no
  stream gets GOAWAY and EOF after --hbone-idle-timeout.
stream-cap-counts-draining: 200 streams whose HTTP/2 side has closed but whose TCP side still
  drains (the target never reads) count against the connection's 200 streams: the 201st
  CONNECT is refused.
opening-stream-times-out: an outbound stream whose CONNECT is never answered (a fake HBONE
  peer) is reset after --connect-timeout (end=connect_timeout).
max-connections: over --max-connections a new client is reset, the others carry on.
max-streams: over --max-streams an outbound client is reset and an inbound CONNECT gets 503.
accept-resumes-after-emfile: --workers 2 --fixed-files off, started with RLIMIT_NOFILE
  64-67: clients steered by source port to one worker's listener fill every descriptor, and
  a client of the other worker (no connection of its own) makes its accept fail with EMFILE;
  once two of the first worker's relays close, the waiting client and a new one of the
  blocked worker are served within 5 s.

Flags the binary does not know (an older build) are left out, so that such a build runs the
same scenario and fails on its behaviour, not on its command line."""

import errno
import os
import resource
import select
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hbone_h2 as h2  # noqa: E402
import harness  # noqa: E402
from harness import (CHUNK, Proxy, SinkServer, TargetServer, TestFailure, binary, check,  # noqa: E402
                     connect, echo_handler, echo_roundtrip, fail, fmt_addr, forward_arg,
                     free_port, log, raise_nofile, recv_exact, reset_close, run_tests, wait_until)
from hbone_common import (ID_B, ca, cert, entries_for, key, require_hbone,  # noqa: E402
                          sanitized, start_inbound, start_outbound)

_help = None


def supported(flag):
    global _help
    if _help is None:
        r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=10)
        _help = r.stdout.decode(errors="replace")
    return (" %s " % flag) in _help


def opt(flag, value):
    """[flag, value] if the binary knows the flag, else [] (with a note)."""
    if supported(flag):
        return [flag, value]
    log("NOTE: the binary has no %s: running without it" % flag)
    return []


def good_ctx():
    return h2.tls_context(ca(), cert("node-a"), key("node-a"))


def h2_conn(addr, source=None, timeout=10.0):
    """hbone_h2.H2Conn, its socket bound to `source` (a loopback address) first."""
    if source is None:
        return h2.H2Conn(addr, good_ctx(), timeout=timeout)
    c = h2.H2Conn.__new__(h2.H2Conn)
    c.addr = addr
    c.raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.raw.bind((source, 0))
    c.raw.settimeout(timeout)
    c.raw.connect(addr)
    c.sock = good_ctx().wrap_socket(c.raw, do_handshake_on_connect=False)
    c.parser = h2.FrameParser()
    c.frames, c.closed, c.hpack = [], None, h2.HpackDecoder()
    c.headers, c.data, c.ended = {}, {}, set()
    c.reader, c.lock, c.bytes_in = None, threading.Lock(), 0
    c.sock.do_handshake()
    return c


def open_h2(addr, source=None):
    """mTLS + preface + SETTINGS; waits for the server's SETTINGS and ACKs it."""
    c = h2_conn(addr, source)
    c.start(((h2.INITIAL_WINDOW_SIZE, 1 << 20),))
    f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, 10)
    check(f is not None, "no SETTINGS from the server: %s" % c.summary())
    c.send(h2.settings_frame(ack=True) + h2.window_update_frame(0, 1 << 24))
    return c


def stream_answer(c, sid, timeout=10.0):
    """':status' of stream sid, 'RST <code>', or fails."""
    f = c.wait_for(lambda f: f.stream == sid and f.type in (h2.HEADERS, h2.RST_STREAM)
                   or f.type == h2.GOAWAY, timeout)
    if f is None or f.type == h2.GOAWAY:
        fail("stream %d: no answer within %.0f s: %s" % (sid, timeout, c.summary()))
    if f.type == h2.RST_STREAM:
        return "RST " + h2.err_name(f.error_code())
    return c.status(sid)


def connection_window(c):
    """What the server has let us send on the connection so far."""
    with c.lock:
        return 65535 + sum(int.from_bytes(f.payload[:4], "big") & 0x7fffffff for f in c.frames
                           if f.type == h2.WINDOW_UPDATE and f.stream == 0)


def closed_state(s):
    """'open', 'eof' or 'reset' for a client socket, without blocking."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return "open"
    try:
        b = s.recv(1, socket.MSG_DONTWAIT)
    except ConnectionResetError:
        return "reset"
    except BlockingIOError:
        return "open"
    return "eof" if not b else "data"


def stderr_lines(proxy, *words):
    return [line for line in proxy.stderr_text().splitlines()
            if not line.startswith("access ") and all(w in line for w in words)]


def wait_log(proxy, what, *words, timeout=4.0):
    wait_until(lambda: stderr_lines(proxy, *words), timeout, interval=0.1, what=what)
    return stderr_lines(proxy, *words)


# ---------------------------------------------------------------------------


def silent_connections_cost_little():
    """2,000 connections that never send a byte cost (almost) nothing."""
    require_hbone()
    n = 2000
    raise_nofile(n + 500)
    caps = opt("--max-handshakes", "4096") + opt("--max-handshakes-per-source", "4096")
    B = start_inbound(["--workers", "1", "--connect-timeout", "60s"] + caps)
    socks = []
    try:
        # warm-up: one connection that handshakes and one that stays silent
        c = open_h2(B.hbone_addr)
        c.close()
        s = connect(B.hbone_addr)
        s.close()
        time.sleep(0.5)
        base_fds, base = B.fd_count(), B.rss_kib()
        for _ in range(n):
            socks.append(connect(B.hbone_addr))
        wait_until(lambda: B.fd_count() >= base_fds + n, 20, interval=0.1,
                   what="B to accept %d connections" % n)
        time.sleep(0.5)
        held = B.rss_kib()
        per = (held - base) / n
        log("%d silent connections: VmRSS %d -> %d KiB, %.2f KiB per connection"
            % (n, base, held, per))
        bound = 8 if not sanitized() else 40
        check(per <= bound, "%.1f KiB of VmRSS per silent connection (allowed %d KiB): state "
              "allocated before the first byte" % (per, bound))
        states = [closed_state(x) for x in socks[:50]]
        check(all(st == "open" for st in states), "silent connections closed early: %s"
              % sorted(set(states)))
        for x in socks:
            x.close()
        socks = []
        wait_until(lambda: B.fd_count() <= base_fds, 10, interval=0.1,
                   what="B to close the silent connections")
        c = open_h2(B.hbone_addr)   # still serving
        c.close()
        B.stop_ok()
    finally:
        for x in socks:
            x.close()


def handshake_caps():
    """A flood of silent connections from one source holds at most the per-source cap; a
    client from another source still gets through; the closes are logged in summary."""
    require_hbone()
    cap = 8 if supported("--max-handshakes-per-source") else 32   # 32: the documented default
    echo = TargetServer(echo_handler)
    B = start_inbound(["--workers", "1", "--connect-timeout", "3s"]
                      + opt("--max-handshakes-per-source", str(cap)))
    socks = []
    try:
        refused_at_connect = 0
        for _ in range(100):
            try:
                socks.append(connect(B.hbone_addr))
            except ConnectionResetError:   # the proxy's reset can beat connect() on loopback
                refused_at_connect += 1
        time.sleep(1.0)
        states = [closed_state(s) for s in socks]
        held = states.count("open")
        log("100 silent connections from 127.0.0.1 (cap %d): %d held, %d closed by the proxy "
            "(%d reset, %d EOF, %d reset before connect() returned)"
            % (cap, held, states.count("reset") + states.count("eof") + refused_at_connect,
               states.count("reset"), states.count("eof"), refused_at_connect))
        check(held <= cap, "%d silent connections held from one source, cap %d" % (held, cap))
        check(held >= 1, "no silent connection held at all")
        # another source still gets a handshake and a stream
        c = open_h2(B.hbone_addr, source="127.0.0.2")
        try:
            c.send(h2.headers_frame(1, h2.connect_headers(fmt_addr(*echo.addr))))
            st = stream_answer(c, 1)
            check(st == "200", "CONNECT from 127.0.0.2 answered %r: %s" % (st, c.summary()))
            c.send(h2.data_frame(1, b"hello", end_stream=True))
            f = c.wait_for(lambda f: f.stream == 1 and f.flags & h2.END_STREAM, 10)
            check(f is not None and bytes(c.data.get(1, b"")) == b"hello",
                  "stream from 127.0.0.2: echo %r, %s" % (bytes(c.data.get(1, b"")), c.summary()))
        finally:
            c.close()
        log("a client from 127.0.0.2 completed its handshake and a stream")
        # the held ones are cut off at the handshake deadline (3 s)
        wait_until(lambda: all(closed_state(s) != "open" for s in socks), 6, interval=0.2,
                   what="the held silent connections to be closed at the handshake deadline")
        over = wait_log(B, "a summary line for the connections over the cap",
                        "before the handshake", "per-source")
        wait_log(B, "a summary line for the handshake timeouts", "before the handshake",
                 "handshake timeouts")
        single = [line for line in B.stderr_text().splitlines()
                  if "127.0.0.1:" in line and "closed" in line and not line.startswith("access")]
        check(len(single) <= 5, "%d log lines about single connections (e.g. %r)"
              % (len(single), single[:2]))
        log("summary: %s" % over[0])
        B.stop_ok()
    finally:
        for s in socks:
            s.close()
        echo.close()


def inbound_idle_close():
    """An inbound connection with no stream gets GOAWAY and EOF after --hbone-idle-timeout,
    although it answers every PING."""
    require_hbone()
    B = start_inbound(["--h2-keepalive", "1s"] + opt("--hbone-idle-timeout", "2s"))
    c = open_h2(B.hbone_addr)
    try:
        t0 = time.monotonic()
        goaway_at = None
        pings = 0
        while time.monotonic() - t0 < 8:
            try:
                fs = c.read_some(0.2)
            except h2.Closed:
                break
            for f in fs:
                if f.type == h2.PING and not f.flags & h2.ACK:
                    c.send(h2.ping_frame(f.payload, ack=True))
                    pings += 1
                elif f.type == h2.GOAWAY and goaway_at is None:
                    goaway_at = time.monotonic() - t0
        end = time.monotonic() - t0
        check(goaway_at is not None, "no GOAWAY within %.1f s of an idle connection (%d PINGs "
              "answered): %s" % (end, pings, c.summary()))
        check(c.closed is not None, "GOAWAY after %.1f s but the connection still open at %.1f s"
              % (goaway_at, end))
        check(1.5 <= goaway_at <= 4.0, "GOAWAY after %.1f s, --hbone-idle-timeout 2s" % goaway_at)
        log("idle connection (%d PINGs answered): GOAWAY after %.1f s, closed (%s) after %.1f s"
            % (pings, goaway_at, c.closed, end))
        B.stop_ok()
    finally:
        c.close()


def stream_cap_counts_draining():
    """Streams whose HTTP/2 side closed while their TCP side drains still count."""
    require_hbone()
    # EOF at once, never reads; with a tiny receive buffer and MSS the kernel takes ~50 KiB
    # of what B sends it, so 80 KiB per stream (16 MB in all: within B's connection window,
    # which it widens only once 8 MiB are consumed) keep B's send to the target pending
    target = SinkServer(rcvbuf=1024, mss=88, shut_wr=True, reset=False)
    B = start_inbound(["--workers", "1"])
    c = open_h2(B.hbone_addr)
    try:
        ids = [1 + 2 * i for i in range(200)]
        c.send(b"".join(h2.headers_frame(sid, h2.connect_headers(fmt_addr(*target.addr)))
                        for sid in ids))
        wait_until(lambda: (c.read_some(0.2), all(c.status(sid) for sid in ids))[1], 20,
                   interval=0, what="answers to 200 CONNECTs")
        bad = [sid for sid in ids if c.status(sid) != "200"]
        check(not bad, "CONNECTs answered other than 200: %s" % bad[:5])
        payload = b"x" * 16384
        sent = 0
        for sid in ids:
            # within B's connection window: 65535 and its WINDOW_UPDATEs on stream 0
            if connection_window(c) - sent < 5 * 16384:
                wait_until(lambda: (c.read_some(0.05),
                                    connection_window(c) - sent >= 5 * 16384)[1],
                           20, interval=0, what="B's connection window to open")
            c.send(b"".join(h2.data_frame(sid, payload, end_stream=(i == 4)) for i in range(5)))
            sent += 5 * 16384
        wait_until(lambda: (c.read_some(0.2), all(sid in c.ended for sid in ids))[1], 20,
                   interval=0, what="END_STREAM from B on all 200 streams (the target's EOF)")
        time.sleep(0.5)
        check(not any(c.rst(sid) for sid in ids), "a stream was reset: %s" % c.summary())
        log("200 streams ended both ways in HTTP/2; their 80 KiB each wait for a target that "
            "never reads")
        c.send(h2.headers_frame(401, h2.connect_headers(fmt_addr(*target.addr))))
        st = stream_answer(c, 401)
        check(st in ("503", "RST REFUSED_STREAM"), "the 201st CONNECT was answered %r while "
              "200 streams still drain to their target" % st)
        lines = wait_log(B, "a log line for the refused CONNECT", "refused", "CONNECT")
        log("the 201st CONNECT: %s; log: %s" % (st, lines[0]))
        B.stop()
    finally:
        c.close()
        target.close()


class FakePeer:
    """A TLS 1.3 server with node-b's identity that speaks just enough HTTP/2 (SETTINGS, ACKs)
    and never answers a CONNECT."""

    def __init__(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(cert("node-b"), key("node-b"))
        ctx.load_verify_locations(ca())
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.headers = 0
        self.rsts = 0
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True, name="fake-peer")
        self._t.start()

    def _loop(self):
        while not self._stop:
            try:
                raw, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            raw.settimeout(30)
            s = self.ctx.wrap_socket(raw, server_side=True)
            s.sendall(h2.settings_frame())
            buf = b""
            while len(buf) < len(h2.PREFACE):
                b = s.recv(4096)
                if not b:
                    return
                buf += b
            parser = h2.FrameParser()
            fs = parser.feed(buf[len(h2.PREFACE):])
            while not self._stop:
                for f in fs:
                    if f.type == h2.SETTINGS and not f.flags & h2.ACK:
                        s.sendall(h2.settings_frame(ack=True))
                    elif f.type == h2.PING and not f.flags & h2.ACK:
                        s.sendall(h2.ping_frame(f.payload, ack=True))
                    elif f.type == h2.HEADERS:
                        self.headers += 1
                    elif f.type == h2.RST_STREAM:
                        self.rsts += 1
                b = s.recv(65536)
                if not b:
                    return
                fs = parser.feed(b)
        except (OSError, ssl.SSLError):
            return
        finally:
            raw.close()

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


def opening_stream_times_out():
    """A CONNECT never answered on an open pooled connection is reset after
    --connect-timeout."""
    require_hbone()
    peer = FakePeer()
    try:
        la = ("127.0.0.1", free_port())
        A = start_outbound([(la, peer.addr, ("127.0.0.1", 9), ID_B)],
                           extra=["--connect-timeout", "2s"])
        s = connect(la)
        me = "%s:%d" % s.getsockname()[:2]
        t0 = time.monotonic()
        s.sendall(b"hello")
        wait_until(lambda: peer.headers >= 1, 5, what="the CONNECT to reach the fake peer")
        s.settimeout(6)
        try:
            b = s.recv(CHUNK)
            how = "eof" if not b else "data %r" % b[:20]
        except ConnectionResetError:
            how = "reset"
        except socket.timeout:
            how = "nothing"
        took = time.monotonic() - t0
        s.close()
        check(how == "reset", "the client saw %s %.1f s after its CONNECT went unanswered "
              "(--connect-timeout 2s)" % (how, took))
        check(took <= 4.0, "reset only after %.1f s (--connect-timeout 2s)" % took)
        wait_until(lambda: entries_for(A, client=me), 3, what="the access-log entry")
        e = entries_for(A, client=me)[0]
        check(e["end"] == "connect_timeout", "access log end=%s, expected connect_timeout"
              % e["end"])
        wait_until(lambda: peer.rsts >= 1, 3, what="a RST_STREAM to the fake peer")
        log("unanswered CONNECT: client reset after %.1f s, end=connect_timeout, RST_STREAM "
            "sent to the peer" % took)
        A.stop_ok()
    finally:
        peer.close()


def echo_once(s, data=b"ping"):
    s.sendall(data)
    got = recv_exact(s, len(data))
    check(got == data, "echo %r, expected %r" % (got, data))


def expect_refused(addr, who):
    """A new client to addr must be reset (or closed) by the proxy at once."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(addr)     # the reset can come before connect() returns, on loopback
    except ConnectionResetError:
        s.close()
        return "reset"
    try:
        s.sendall(b"x")
        b = s.recv(CHUNK)
        check(not b, "%s: got data %r, expected a reset" % (who, b[:20]))
        return "eof"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except socket.timeout:
        fail("%s: neither reset nor EOF within 5 s (not refused)" % who)
    finally:
        s.close()


def max_connections():
    echo = TargetServer(echo_handler)
    held = []
    try:
        la = ("127.0.0.1", free_port())
        P = Proxy(["--forward", forward_arg(la, echo.addr), "--workers", "1"]
                  + opt("--max-connections", "3"), listens=[la])
        for _ in range(3):
            s = connect(la)
            echo_once(s)
            held.append(s)
        how = expect_refused(la, "the 4th client with --max-connections 3")
        for s in held:
            echo_once(s, b"still")
        lines = wait_log(P, "the refusal log line", "refused", "--max-connections")
        log("4th client: %s; the 3 others still relay; log: %s" % (how, lines[0]))
        held.pop().close()
        wait_until(lambda: echo.accepted == 3 and len(P.access()) >= 1, 5,
                   what="the closed connection to be released")
        time.sleep(0.2)
        echo_roundtrip(la, nbytes=1000)
        log("after one closed, a new client is served")
        for s in held:
            s.close()
        held = []
        P.stop_ok()
    finally:
        for s in held:
            s.close()
        echo.close()


def max_streams():
    require_hbone()
    echo = TargetServer(echo_handler)
    held = []
    c = None
    try:
        # outbound: A resets the 3rd client with --max-streams 2
        B = start_inbound()
        la = ("127.0.0.1", free_port())
        A = start_outbound([(la, B.hbone_addr, echo.addr, ID_B)],
                           extra=["--workers", "1"] + opt("--max-streams", "2"))
        for _ in range(2):
            s = connect(la)
            echo_once(s)
            held.append(s)
        how = expect_refused(la, "the 3rd outbound client with --max-streams 2")
        for s in held:
            echo_once(s, b"still")
        wait_log(A, "A's refusal log line", "refused", "--max-streams")
        log("outbound: 3rd client %s, the 2 streams carry on" % how)
        # inbound: B2 answers the 4th CONNECT with 503 with --max-streams 3
        B2 = start_inbound(["--workers", "1"] + opt("--max-streams", "3"))
        c = open_h2(B2.hbone_addr)
        for sid in (1, 3, 5):
            c.send(h2.headers_frame(sid, h2.connect_headers(fmt_addr(*echo.addr))))
            st = stream_answer(c, sid)
            check(st == "200", "CONNECT %d answered %r" % (sid, st))
        c.send(h2.headers_frame(7, h2.connect_headers(fmt_addr(*echo.addr))))
        st = stream_answer(c, 7)
        check(st == "503", "the 4th CONNECT with --max-streams 3 answered %r" % st)
        c.send(h2.data_frame(1, b"abc"))
        f = c.wait_for(lambda f: f.type == h2.DATA and f.stream == 1, 5)
        check(f is not None and bytes(c.data.get(1, b"")) == b"abc",
              "stream 1 after the refusal: %s" % c.summary())
        wait_log(B2, "B2's refusal log line", "refused", "--max-streams")
        log("inbound: 4th CONNECT 503, stream 1 still echoes")
        for s in held:
            s.close()
        c.close()
        A.stop_ok()
        B.stop_ok()
        B2.stop_ok()
    finally:
        for s in held:
            s.close()
        if c:
            c.close()
        echo.close()


def steered_ports(port, n):
    """n source ports on 127.0.0.1, split by the listener of a 2-socket SO_REUSEPORT group on
    `port` that their connection lands on. The kernel picks the listener from a hash of the
    4-tuple (no program attached), so a client bound to one of these ports later lands on the
    same one of the 2 listeners that ringtunnel's 2 workers have on `port`. The probes close
    with a reset: no TIME_WAIT holds their ports."""
    ls = []
    groups = ([], [])
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            ls.append(s)
            s.bind(("127.0.0.1", port))
            s.listen(64)
        for _ in range(n):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(5)
            c.bind(("127.0.0.1", 0))
            c.connect(("127.0.0.1", port))
            r, _, _ = select.select(ls, [], [], 5)
            check(r, "a probe connection to a SO_REUSEPORT listener was never accepted")
            a, _ = r[0].accept()
            groups[ls.index(r[0])].append(c.getsockname()[1])
            reset_close(c)
            a.close()
    finally:
        for s in ls:
            s.close()
    return groups


def connect_from(addr, ports, timeout=5.0):
    """A client bound to the first port of `ports` (taken from the list) that is free."""
    while ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", ports.pop(0)))
        except OSError:     # taken meanwhile
            s.close()
            continue
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except OSError as e:
            s.close()
            if e.errno == errno.EADDRNOTAVAIL:
                continue    # this port still has a connection to addr (TIME_WAIT): the next
            raise
        except BaseException:
            s.close()
            raise
        return s
    fail("no steered source port left")


# UBSan's vptr check reads the object's vtable only after testing that the memory is readable,
# which it does through a pipe(2); with every descriptor in use that pipe fails and a valid
# object is reported as not of its type (shown with a 10-line program: the same object passes
# until RLIMIT_NOFILE is used up; the report's notes then read "invalid vptr" or, if another
# thread freed a descriptor meanwhile, the object's true type). In the process whose
# descriptors this test uses up, UBSan goes on after a report and neither symbolises nor
# prints stacks, which would open files and take the descriptors the test counts;
# ubsan_reports() then fails the test on any report but the vptr check's.
UBSAN_WITHOUT_DESCRIPTORS = "halt_on_error=0:print_stacktrace=0:symbolize=0:print_summary=0"


def ubsan_reports(text):
    """The UBSan reports in a process's stderr: (how many are vptr checks, every other
    report's first line)."""
    vptr, other = 0, []
    for line in text.splitlines():
        if "runtime error:" not in line:
            continue
        if "which does not point to an object of type" in line:
            vptr += 1
        else:
            other.append(line)
    return vptr, other


def start_with_nofile(args, listens, nofile):
    """A Proxy whose process starts with RLIMIT_NOFILE `nofile` (soft and hard), set in the
    child before exec: ringtunnel raises its soft limit to the hard one at startup, and an
    io_uring accept takes the limit when it is armed, so a limit lowered later (prlimit) makes
    the target's socket() fail, never the accept."""
    setup = harness._child_setup
    relaxed = sanitized()

    def limited():
        setup()
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if relaxed:
            os.putenv("UBSAN_OPTIONS", UBSAN_WITHOUT_DESCRIPTORS)

    harness._child_setup = limited
    try:
        return Proxy(args, listens=listens)
    finally:
        harness._child_setup = setup


def answer(s, data, timeout):
    """Sends data; 'served' (echoed), 'waiting' (nothing within timeout), 'reset' or 'eof'."""
    s.settimeout(timeout)
    try:
        s.sendall(data)
        got = recv_exact(s, len(data))
    except socket.timeout:
        return "waiting"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except TestFailure:     # EOF
        return "eof"
    check(got == data, "echo %r, expected %r" % (got, data))
    return "served"


def block_one_worker(la, echo, fills, others, nofile):
    """ringtunnel (--workers 2 --fixed-files off) started with RLIMIT_NOFILE `nofile`; clients
    from `fills` (worker Y's listener), connected one at a time and each served, until Y's
    relays (2 descriptors each) hold every descriptor; then a client from `others` (worker X's
    listener, X has no connection): X's accept fails with EMFILE and the client waits.
    Returns (proxy, fill clients, waiting client), or None (logged) where the descriptors
    did not come out even."""
    P = start_with_nofile(["--forward", forward_arg(la, echo.addr), "--workers", "2",
                           "--fixed-files", "off"], [la], nofile)
    held = []
    ok = False
    try:
        time.sleep(0.3)
        base = P.fd_count()
        if (nofile - base) % 2:
            return None
        n = (nofile - base) // 2
        for i in range(n):
            s = connect_from(la, fills)
            held.append(s)
            st = answer(s, b"y", 5)
            if st != "served":
                log("(RLIMIT_NOFILE %d, %d descriptors at rest: fill client %d of %d %s: "
                    "again with %d)" % (nofile, base, i + 1, n, st, nofile + 1))
                return None
        try:
            xa = connect_from(la, others)
        except ConnectionResetError:
            xa, st = None, "reset"
        else:
            held.append(xa)
            st = answer(xa, b"a", 1.0)
        if st != "waiting":
            log("(RLIMIT_NOFILE %d, %d descriptors at rest, %d after %d relays: the other "
                "worker's client %s, not waiting: again with %d)"
                % (nofile, base, P.fd_count(), n, st, nofile + 1))
            return None
        ok = True
        return P, held[:-1], xa
    finally:
        if not ok:
            for s in held:
                s.close()
            P.stop()


def accept_resumes_after_emfile():
    """A worker whose accept failed with EMFILE, and that has no connection of its own to
    release, accepts again once another worker's connections free descriptors."""
    echo = TargetServer(echo_handler, backlog=1024)
    held = []
    try:
        la = ("127.0.0.1", free_port())
        fills, others = steered_ports(la[1], 240)
        check(min(len(fills), len(others)) >= 80, "the probes all but avoided one listener: "
              "%d and %d of 240" % (len(fills), len(others)))
        for nofile in (64, 65, 66, 67):
            got = block_one_worker(la, echo, fills, others, nofile)
            if got:
                break
        check(got, "no RLIMIT_NOFILE tried (64 to 67) left one worker's accept failing while "
              "the other's relays held every descriptor")
        P, fill, xa = got
        held = fill + [xa]
        lines = wait_log(P, "the log line of the failed accept", "accept on")
        check(len(lines) == 1, "accept failures logged: %r (expected one worker's)" % lines)
        log("RLIMIT_NOFILE %d: %d relays of one worker hold every descriptor; a client of the "
            "other waits: %s" % (nofile, len(fill), lines[0]))
        # 4 descriptors become free: two of Y's relays close (no client waits on Y's listener)
        for s in fill[:2]:
            s.close()
        wait_until(lambda: P.fd_count() < nofile, 5, what="the closed relays' descriptors")
        t0 = time.monotonic()
        xa.settimeout(5)
        try:
            got = recv_exact(xa, 1)
        except socket.timeout:
            fail("the client waiting on the worker whose accept failed was not served within "
                 "5 s of descriptors being free (%d of %d in use); that worker had no "
                 "connection to release" % (P.fd_count(), nofile))
        check(got == b"a", "the waiting client got %r, expected its echo" % got)
        log("descriptors free: the waiting client served after %.2f s"
            % (time.monotonic() - t0))
        xb = connect_from(la, others)
        held.append(xb)
        st = answer(xb, b"new", 5)
        check(st == "served", "a new client of that worker: %s within 5 s" % st)
        log("a new client of that worker served")
        for s in held:
            s.close()
        held = []
        P.stop_ok(timeout=20)
        vptr, other = ubsan_reports(P.stderr_text())
        check(not other, "UBSan reports other than the vptr check's, which cannot read memory "
              "while no descriptor is free:\n%s" % "\n".join(other))
        if vptr:
            log("(%d UBSan vptr report(s) while no descriptor was free: left out, see "
                "UBSAN_WITHOUT_DESCRIPTORS)" % vptr)
    finally:
        for s in held:
            s.close()
        echo.close()


if __name__ == "__main__":
    TESTS = [
        ("silent-connections-cost-little", silent_connections_cost_little),
        ("handshake-caps", handshake_caps),
        ("inbound-idle-close", inbound_idle_close),
        ("stream-cap-counts-draining", stream_cap_counts_draining),
        ("opening-stream-times-out", opening_stream_times_out),
        ("max-connections", max_connections),
        ("max-streams", max_streams),
        ("accept-resumes-after-emfile", accept_resumes_after_emfile),
    ]
    # BUDGETS_ONLY=name1,name2 (or RINGTUNNEL_IT_ONLY) runs only those sub-tests
    run_tests("budgets", TESTS, 200, only_alias="BUDGETS_ONLY")

#!/usr/bin/env python3
"""Hostile input on ringtunnel B's HBONE port (Python's ssl module for mTLS 1.3,
hand-made HTTP/2 frames from hbone_h2.py).

One B (--hbone-listen, node-b) and one A forwarding to it run for the whole
sub-test `hostile-cases`; a long transfer goes client -> A -> B -> echo target
-> back the whole time (about 2 MiB/s each way). Each case below is followed by:
B is alive; B still serves a good stream (a raw CONNECT from Python to an echo
target: 200, 60 KB echoed byte-exact, END_STREAM both ways); the long transfer
kept moving; B's VmRSS stayed below its baseline + 64 MiB (sampled every 50 ms;
+ 384 MiB for an ASan build, whose allocator quarantines freed memory).
At the end the long transfer is half-closed and its sha256 both ways compared.

TLS: no client certificate / a certificate from other-ca / ALPN http/1.1 only
  -> the handshake fails or the connection closes before any HTTP/2 frame;
  plain text (no TLS) -> closed within 5 s.
HTTP/2: bad connection preface -> GOAWAY PROTOCOL_ERROR or close; a frame of
  exactly the advertised SETTINGS_MAX_FRAME_SIZE (unknown type: ignored, a PING
  after it is answered) then one of that size + 1 -> GOAWAY FRAME_SIZE_ERROR;
  a 16 MiB length field -> GOAWAY FRAME_SIZE_ERROR; HPACK index 0 -> GOAWAY
  COMPRESSION_ERROR; CONNECT without :authority -> RST_STREAM PROTOCOL_ERROR or
  400; CONNECT to a name / to an address without port -> 400; a GET (with
  :scheme, :path) -> 400; HEADERS on an even stream id / on stream 0 -> GOAWAY
  PROTOCOL_ERROR; a stream id lower than an open one -> GOAWAY PROTOCOL_ERROR or
  nothing; a WINDOW_UPDATE taking the connection window past 2^31-1 -> GOAWAY
  FLOW_CONTROL_ERROR.
Floods (each must end in a GOAWAY, any code, or a close, within 20 s): 10,000
  SETTINGS (sent without reading), 5,000 HEADERS+RST_STREAM pairs (rapid
  reset), HEADERS + 100 CONTINUATION frames; PINGs without reading: 10,000,
  then, if the server answered them all and stays open, on (8 KiB receive
  buffer, up to 1,000,000) until the ACKs back up: GOAWAY/close, or the server
  stops reading (our sends block 5 s) with bounded memory.

wrong-server-identity (part of the same sub-test): an A configured with
  identity=<node-a's ID> for B (who is node-b) -> its client is reset within 5 s,
  its log has a non-closed end and a line saying why, B logs no stream from it."""

import os
import socket
import ssl
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, TargetServer, TestFailure, check, connect,  # noqa: E402
                     connect_bound, echo_handler, expect_reset, fail, fmt_addr, free_port,
                     gen_bytes, log, proxy_access_kv, run_tests, wait_access_kv)
import hbone_h2 as h2  # noqa: E402
from hbone_common import sanitized  # noqa: E402
from hbone_common import (ID_A, ID_B, ca, cert, key, proc_rss_kib, require_hbone,  # noqa: E402
                          rss_slack_kib, start_inbound, start_outbound, stderr_reason_lines)

CASE_TIMEOUT = 10.0
FLOOD_TIMEOUT = 20.0


# ---------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------


def good_ctx(alpn=("h2",)):
    return h2.tls_context(ca(), cert("node-a"), key("node-a"), alpn=alpn)


def open_h2(fx, settings=((h2.INITIAL_WINDOW_SIZE, 1 << 20),), ack=True):
    """mTLS + preface + our SETTINGS; waits for the server's SETTINGS and ACKs it."""
    c = h2.H2Conn(fx.addr, good_ctx(), timeout=CASE_TIMEOUT)
    check(c.sock.selected_alpn_protocol() == "h2",
          "ALPN: server selected %r, expected h2" % c.sock.selected_alpn_protocol())
    c.start(settings)
    f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, CASE_TIMEOUT)
    check(f is not None, "no SETTINGS from the server after the preface: %s" % c.summary())
    if ack:
        c.send(h2.settings_frame(ack=True))
    return c


def expect_goaway(c, codes, timeout=CASE_TIMEOUT, allow_close=False):
    """Read until a GOAWAY or the end of the connection. The GOAWAY's code must
    be one of `codes` (None: any). A close without GOAWAY passes only with
    allow_close. Returns a description."""
    f = c.wait_for(lambda f: f.type == h2.GOAWAY, timeout)
    if f is None:
        if c.closed and allow_close:
            return "closed (%s) without GOAWAY" % c.closed
        fail("expected GOAWAY %s; got %s" % ("/".join(codes) if codes else "(any)",
                                             c.summary()))
    name = h2.err_name(f.error_code())
    check(codes is None or name in codes, "GOAWAY %s, expected %s (frames: %s)"
          % (name, "/".join(codes), c.summary()))
    # after a GOAWAY for an error the server must also close the connection
    how = c.drain(5.0)
    check(how is not None, "GOAWAY %s but the connection stayed open 5 s later" % name)
    return "GOAWAY %s, then closed (%s)" % (name, how)


def expect_refused_tls(fx, ctx, what):
    """The handshake fails, or the connection closes before any HTTP/2 frame."""
    try:
        c = h2.H2Conn(fx.addr, ctx, timeout=CASE_TIMEOUT)
    except socket.timeout:
        fail("%s: the TLS handshake neither completed nor failed within %.0f s"
             % (what, CASE_TIMEOUT))
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return "handshake refused: %s" % (getattr(e, "reason", None) or e)
    except OSError as e:
        return "handshake failed: %s" % e
    try:
        err = c.try_send(h2.PREFACE + h2.settings_frame())
        how = c.drain(CASE_TIMEOUT)
        check(not c.frames, "%s: the server sent HTTP/2 frames: %s" % (what, c.summary()))
        check(how is not None, "%s: handshake done and the connection still open %.0f s later,"
              " nothing received" % (what, CASE_TIMEOUT))
        return "handshake completed on our side, then closed before any frame (%s%s)" % (
            how, "; send: " + err if err else "")
    finally:
        c.close()


def stream_status(c, sid, timeout=CASE_TIMEOUT):
    """':status' of stream sid, or 'RST <code>', or fails."""
    f = c.wait_for(lambda f: f.stream == sid and f.type in (h2.HEADERS, h2.RST_STREAM)
                   or f.type == h2.GOAWAY, timeout)
    if f is None:
        fail("stream %d: no answer within %.0f s: %s" % (sid, timeout, c.summary()))
    if f.type == h2.GOAWAY:
        fail("stream %d: GOAWAY %s instead of a stream answer: %s"
             % (sid, h2.err_name(f.error_code()), c.summary()))
    if f.type == h2.RST_STREAM:
        return "RST " + h2.err_name(f.error_code())
    return c.status(sid)


def good_stream(fx, nbytes=60000):
    """A valid CONNECT to the echo target; 200, echoed byte-exact, END_STREAM."""
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(1, h2.connect_headers(fmt_addr(*fx.echo_addr))))
        st = stream_status(c, 1)
        check(st == "200", "good CONNECT answered %r, expected 200: %s" % (st, c.summary()))
        data = gen_bytes(77, nbytes)
        for i in range(0, nbytes, 16384):
            c.send(h2.data_frame(1, data[i:i + 16384], end_stream=i + 16384 >= nbytes))
        # (60000 bytes: within the initial 65535-byte connection window, whatever the
        # server's WINDOW_UPDATEs); our receive windows: stream 1 MiB, connection +16 MiB
        c.send(h2.window_update_frame(0, 1 << 24))
        f = c.wait_for(lambda f: f.stream == 1 and f.flags & h2.END_STREAM
                       and f.type in (h2.DATA, h2.HEADERS) or f.type in (h2.RST_STREAM,
                                                                         h2.GOAWAY),
                       CASE_TIMEOUT)
        got = bytes(c.data.get(1, b""))
        check(f is not None and f.type in (h2.DATA, h2.HEADERS) and got == data,
              "good stream: echoed %d of %d bytes (equal: %s), end: %r; frames %s"
              % (len(got), nbytes, got == data[:len(got)], f, c.summary()))
        return "good stream ok"
    finally:
        c.close()


# ---------------------------------------------------------------------------
# Cases: each takes the fixture, returns what happened, fails if wrong
# ---------------------------------------------------------------------------


def case_no_client_cert(fx):
    return expect_refused_tls(fx, h2.tls_context(ca(), None, None), "no client certificate")


def case_other_ca(fx):
    return expect_refused_tls(fx, h2.tls_context(ca(), cert("other-node"), key("other-node")),
                              "certificate from other-ca")


def case_alpn_http11(fx):
    return expect_refused_tls(fx, good_ctx(alpn=("http/1.1",)), "ALPN http/1.1 only")


def case_plain_text(fx):
    s = socket.create_connection(fx.addr, timeout=CASE_TIMEOUT)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + h2.PREFACE)
        got = b""
        end = time.monotonic() + 5.0
        while True:
            s.settimeout(max(0.01, end - time.monotonic()))
            try:
                b = s.recv(4096)
            except ConnectionResetError:
                return "reset (after %d bytes)" % len(got)
            except socket.timeout:
                fail("plain text: connection still open 5 s later (received %r)" % got[:40])
            if not b:
                return "closed (after %d bytes: %s)" % (len(got), got[:16].hex())
            got += b
    finally:
        s.close()


def case_bad_preface(fx):
    c = h2.H2Conn(fx.addr, good_ctx(), timeout=CASE_TIMEOUT)
    try:
        c.send(b"PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n" + h2.settings_frame())
        return expect_goaway(c, ["PROTOCOL_ERROR"], allow_close=True)
    finally:
        c.close()


def case_frame_too_large(fx):
    c = open_h2(fx)
    try:
        mfs = c.server_settings().get(h2.MAX_FRAME_SIZE, 16384)
        # our ACK of its SETTINGS went first: a frame of exactly mfs bytes is allowed
        c.send(h2.frame(0x21, 0, 0, b"\0" * mfs) + h2.ping_frame(b"pingpong"))
        f = c.wait_for(lambda f: f.type == h2.PING and f.flags & h2.ACK or f.type == h2.GOAWAY,
                       CASE_TIMEOUT)
        check(f is not None and f.type == h2.PING,
              "an unknown frame of exactly the advertised max frame size (%d) was not ignored:"
              " %s" % (mfs, c.summary()))
        err = c.try_send(h2.frame(0x21, 0, 0, b"\0" * (mfs + 1)))
        r = expect_goaway(c, ["FRAME_SIZE_ERROR"])
        return "advertised max %d: a frame of %d ignored, %d -> %s%s" % (
            mfs, mfs, mfs + 1, r, " (send: %s)" % err if err else "")
    finally:
        c.close()


def case_16mib_length(fx):
    c = open_h2(fx)
    try:
        c.try_send(h2.frame(h2.DATA, 0, 1, b"\0" * 4096, length=0xffffff))
        return expect_goaway(c, ["FRAME_SIZE_ERROR"])
    finally:
        c.close()


def case_bad_hpack(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(1, None, block=b"\x80"))   # indexed field, index 0
        return expect_goaway(c, ["COMPRESSION_ERROR"])
    finally:
        c.close()


def case_no_authority(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(1, h2.connect_headers(None)))
        st = stream_status(c, 1)
        check(st in ("RST PROTOCOL_ERROR", "400"),
              "CONNECT without :authority: %r, expected RST_STREAM PROTOCOL_ERROR or 400" % st)
        return st
    finally:
        c.close()


def case_bad_authority(fx):
    c = open_h2(fx)
    try:
        out = []
        for sid, auth in ((1, "example.com:%d" % fx.echo_addr[1]), (3, "127.0.0.1"),
                          (5, "localhost"), (7, "127.0.0.1:0")):
            c.send(h2.headers_frame(sid, h2.connect_headers(auth)))
            st = stream_status(c, sid)
            check(st == "400", "CONNECT :authority %r: %r, expected 400" % (auth, st))
            out.append("%s -> %s" % (auth, st))
        return "; ".join(out)
    finally:
        c.close()


def case_get(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(1, [(":method", "GET"), (":scheme", "https"), (":path", "/"),
                                    (":authority", fmt_addr(*fx.echo_addr))], end_stream=True))
        st = stream_status(c, 1)
        check(st == "400", "GET: %r, expected 400" % st)
        return "GET -> 400"
    finally:
        c.close()


def case_even_stream(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(2, h2.connect_headers(fmt_addr(*fx.echo_addr))))
        return expect_goaway(c, ["PROTOCOL_ERROR"])
    finally:
        c.close()


def case_stream_zero(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(0, h2.connect_headers(fmt_addr(*fx.echo_addr))))
        return expect_goaway(c, ["PROTOCOL_ERROR"])
    finally:
        c.close()


def case_decreasing_ids(fx):
    c = open_h2(fx)
    try:
        c.send(h2.headers_frame(5, h2.connect_headers(fmt_addr(*fx.echo_addr))))
        st = stream_status(c, 5)
        check(st == "200", "CONNECT on stream 5: %r, expected 200" % st)
        c.send(h2.headers_frame(3, h2.connect_headers(fmt_addr(*fx.echo_addr))))
        f = c.wait_for(lambda f: f.type == h2.GOAWAY or f.stream == 3, 3.0)
        if f is None:
            return "no answer for stream 3 (ignored)%s" % (
                "; closed: %s" % c.closed if c.closed else "")
        if f.type == h2.GOAWAY:
            name = h2.err_name(f.error_code())
            check(name in ("PROTOCOL_ERROR", "STREAM_CLOSED"),
                  "stream 3 after 5: GOAWAY %s, expected PROTOCOL_ERROR" % name)
            return "GOAWAY %s" % name
        fail("stream 3 after stream 5 was answered as a new stream: %r (%s)" % (f, c.summary()))
    finally:
        c.close()


def case_window_overflow(fx):
    c = open_h2(fx)
    try:
        c.send(h2.window_update_frame(0, 0x7fffffff))
        return expect_goaway(c, ["FLOW_CONTROL_ERROR"])
    finally:
        c.close()


def flood_end(c, t0, what):
    """After a flood: a GOAWAY (any code) or a close within FLOOD_TIMEOUT."""
    f = c.wait_for(lambda f: f.type == h2.GOAWAY, FLOOD_TIMEOUT - (time.monotonic() - t0))
    if f is not None:
        name = h2.err_name(f.error_code())
        how = c.drain(5.0)
        check(how is not None, "%s: GOAWAY %s but the connection stayed open" % (what, name))
        return "GOAWAY %s after %.1f s (%d frames read, then %s)" % (
            name, time.monotonic() - t0, len(c.frames), how)
    if c.closed:
        return "closed without GOAWAY (%s) after %.1f s" % (c.closed, time.monotonic() - t0)
    fail("%s: neither GOAWAY nor close within %.0f s (%d frames read: %s)"
         % (what, FLOOD_TIMEOUT, len(c.frames), c.summary(6)))


def case_settings_flood(fx):
    c = open_h2(fx)
    try:
        t0 = time.monotonic()
        err = c.try_send(h2.settings_frame([(h2.ENABLE_PUSH, 0)]) * 10000)
        return flood_end(c, t0, "10,000 SETTINGS") + (" (send: %s)" % err if err else "")
    finally:
        c.close()


def case_ping_flood(fx):
    """10,000 PINGs without reading. A server may answer them all (RFC 9113 says
    it must, and 170 KB of ACKs fit in the socket buffers), so if the connection
    is still open the flood goes on -- still never reading, with an 8 KiB receive
    buffer -- until the ACKs must back up in the server: then it must end the
    connection (GOAWAY or close), or stop reading (our sends block for 5 s) with
    its memory bounded (checked after each case). Up to 1,000,000 PINGs."""
    c = h2.H2Conn(fx.addr, good_ctx(), timeout=CASE_TIMEOUT, rcvbuf=8192)
    try:
        c.start()
        t0 = time.monotonic()
        pings = b"".join(h2.ping_frame(struct.pack(">Q", i)) for i in range(10000))
        err = c.try_send(pings)
        if err is None:
            time.sleep(1.0)
            # ended by now? (this reads what has arrived: the ACKs so far)
            f = c.wait_for(lambda f: f.type == h2.GOAWAY, 0.5)
            if f is None and not c.closed:
                acks = sum(1 for f in c.frames if f.type == h2.PING and f.flags & h2.ACK)
                first = "10,000 PINGs: connection open, %d ACKs read so far" % acks
                sent = 10000
                c.sock.settimeout(5.0)
                while sent < 1000000 and time.monotonic() - t0 < FLOOD_TIMEOUT:
                    try:
                        c.sock.sendall(pings)
                    except socket.timeout:
                        return ("%s; then our sends blocked for 5 s after %d PINGs (the server"
                                " stopped reading: held back)" % (first, sent))
                    except (OSError, ssl.SSLError) as e:
                        err = "%s: %s" % (type(e).__name__, e)
                        break
                    sent += 10000
                r = flood_end(c, t0, "%d PINGs without reading" % sent)
                return "%s; then %s after %d PINGs%s" % (first, r, sent,
                                                         " (send: %s)" % err if err else "")
        return flood_end(c, t0, "10,000 PINGs") + (" (send: %s)" % err if err else "")
    finally:
        c.close()


def case_rapid_reset(fx):
    c = open_h2(fx)
    try:
        c.start_reader()
        t0 = time.monotonic()
        hdr = h2.connect_headers(fmt_addr(*fx.sink_addr))
        err = None
        sent = 0
        for batch in range(50):
            buf = b"".join(h2.headers_frame(sid, hdr) + h2.rst_stream_frame(sid, 0x8)
                           for sid in range(1 + batch * 200, 1 + (batch + 1) * 200, 2))
            err = c.try_send(buf)
            if err or c.closed or c.goaway():
                break
            sent += 100
        c.stop_reader()
        r = flood_end(c, t0, "rapid reset")
        return "%s after %d HEADERS+RST pairs sent%s" % (r, sent,
                                                           " (send: %s)" % err if err else "")
    finally:
        c.close()


def case_continuation_flood(fx):
    c = open_h2(fx)
    try:
        t0 = time.monotonic()
        buf = h2.headers_frame(1, h2.connect_headers(fmt_addr(*fx.echo_addr)), end_headers=False)
        for i in range(100):
            buf += h2.continuation_frame(1, h2.encode_headers([("x-pad-%d" % i, "a" * 20)]),
                                         end_headers=(i == 99))
        err = c.try_send(buf)
        return flood_end(c, t0, "100 CONTINUATION") + (" (send: %s)" % err if err else "")
    finally:
        c.close()


def case_wrong_server_identity(fx):
    """An A that expects node-a's ID at B (who is node-b) must refuse B."""
    la = ("127.0.0.1", free_port())
    A2 = start_outbound([(la, fx.addr, fx.echo_addr, ID_A)])
    try:
        mb = len(proxy_access_kv(fx.B)) if fx.B else 0
        err_at = len(A2.stderr_text())
        s, me, how = connect_bound(la, CASE_TIMEOUT)
        try:
            if how is None:
                try:
                    s.sendall(b"hello")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                w = expect_reset(s, 5.0, "client")
        finally:
            s.close()
        e = wait_access_kv(A2, lambda e: e.get("client") == me, 1, 10, 0, "A2's line")[0]
        check(e.get("end") not in ("closed", None),
              "A2 logged end=%s for a peer with the wrong identity" % e.get("end"))
        why = stderr_reason_lines(A2, ["identity", "san", "spiffe", "certificate", "verif"],
                                  after=err_at)
        check(why, "A2's log does not say why the stream failed; stderr tail:\n%s"
              % A2.stderr_tail(10))
        if fx.B:
            time.sleep(0.3)
            new = proxy_access_kv(fx.B, mb)
            check(not new, "B logged streams while only A2 talked to it: %r"
                  % [x["_line"] for x in new])
        A2.stop_ok()
        return "client reset after %.2f s; A2 end=%s; why: %s" % (
            w if how is None else 0.0, e["end"], why[0][:160])
    finally:
        if A2.alive():
            A2.stop()


CASES = [
    ("tls-no-client-cert", case_no_client_cert),
    ("tls-other-ca", case_other_ca),
    ("tls-alpn-http1.1", case_alpn_http11),
    ("tls-plain-text", case_plain_text),
    ("h2-bad-preface", case_bad_preface),
    ("h2-frame-over-max", case_frame_too_large),
    ("h2-16mib-length", case_16mib_length),
    ("h2-bad-hpack", case_bad_hpack),
    ("h2-connect-no-authority", case_no_authority),
    ("h2-connect-bad-authority", case_bad_authority),
    ("h2-get", case_get),
    ("h2-even-stream-id", case_even_stream),
    ("h2-stream-id-0", case_stream_zero),
    ("h2-decreasing-stream-id", case_decreasing_ids),
    ("h2-window-overflow", case_window_overflow),
    ("flood-settings", case_settings_flood),
    ("flood-ping", case_ping_flood),
    ("flood-rapid-reset", case_rapid_reset),
    ("flood-continuation", case_continuation_flood),
    ("wrong-server-identity", case_wrong_server_identity),
]


# ---------------------------------------------------------------------------
# The fixture: B, A, a long transfer through them, an RSS sampler
# ---------------------------------------------------------------------------


class LongTransfer:
    """client -> A -> B -> echo -> back, ~2 MiB/s each way, until stop()."""

    def __init__(self, listen):
        import hashlib
        self.s = connect(listen, 60)
        self.sent = 0
        self.recvd = 0
        self.h_sent = hashlib.sha256()
        self.h_recv = hashlib.sha256()
        self.err = []
        self._stop = threading.Event()
        self.blocks = [gen_bytes(600 + i, CHUNK) for i in range(8)]
        self.ts = threading.Thread(target=self._send, daemon=True, name="long-send")
        self.tr = threading.Thread(target=self._recv, daemon=True, name="long-recv")
        self.ts.start()
        self.tr.start()

    def _send(self):
        try:
            i = 0
            while not self._stop.is_set():
                b = self.blocks[i % len(self.blocks)]
                self.s.sendall(b)
                self.h_sent.update(b)
                self.sent += len(b)
                i += 1
                time.sleep(0.03)
            self.s.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa
            self.err.append("send: %r" % e)

    def _recv(self):
        try:
            while True:
                b = self.s.recv(CHUNK)
                if not b:
                    return
                self.h_recv.update(b)
                self.recvd += len(b)
        except Exception as e:  # noqa
            self.err.append("recv: %r" % e)

    def check_moving(self, what):
        start = self.recvd
        end = time.monotonic() + 5.0
        while self.recvd == start:
            check(not self.err, "long transfer failed after %s: %s" % (what, self.err))
            check(time.monotonic() < end, "long transfer stalled after %s (at %d bytes back)"
                  % (what, self.recvd))
            time.sleep(0.05)

    def finish(self):
        self._stop.set()
        self.ts.join(10)
        self.tr.join(30)
        check(not self.err, "long transfer: %s" % self.err)
        check(not self.tr.is_alive(), "long transfer: no EOF 30 s after the half-close")
        check(self.sent == self.recvd and self.h_sent.hexdigest() == self.h_recv.hexdigest(),
              "long transfer: sent %d bytes (sha %s), echoed back %d (sha %s)"
              % (self.sent, self.h_sent.hexdigest()[:12], self.recvd,
                 self.h_recv.hexdigest()[:12]))
        self.s.close()
        return self.sent


class RssSampler:
    def __init__(self, pid):
        self.pid = pid
        self.max = 0
        self._stop = False
        self.t = threading.Thread(target=self._run, daemon=True, name="rss")
        self.t.start()

    def _run(self):
        while not self._stop:
            self.max = max(self.max, proc_rss_kib(self.pid))
            time.sleep(0.05)

    def take(self):
        m, self.max = self.max, proc_rss_kib(self.pid)
        return m

    def stop(self):
        self._stop = True


class Fixture:
    pass


def hostile_cases():
    require_hbone()
    echo = TargetServer(echo_handler)
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(4096)        # never accepts: CONNECTs to it succeed at the TCP level
    try:
        fx = Fixture()
        fx.B = start_inbound()
        fx.addr = fx.B.hbone_addr
        fx.echo_addr = echo.addr
        fx.sink_addr = sink.getsockname()
        la = ("127.0.0.1", free_port())
        A = start_outbound([(la, fx.addr, echo.addr, ID_B)])
        log(good_stream(fx))
        lt = LongTransfer(la)
        lt.check_moving("start")
        time.sleep(0.5)
        base = fx.B.rss_kib()
        rss = RssSampler(fx.B.pid)
        log("B's baseline VmRSS %d KiB (allowed growth %d KiB%s); long transfer running"
            % (base, rss_slack_kib(), ", ASan build" if sanitized() else ""))
        failed = []
        only = [n for n in os.environ.get("HBONE_CASES", "").split(",") if n]   # development
        for name, fn in CASES:
            if only and name not in only:
                continue
            t0 = time.monotonic()
            try:
                what = fn(fx)
                check(fx.B.alive(), "B died (exit code %s)" % fx.B.proc.poll())
                good_stream(fx)
                lt.check_moving(name)
                m = rss.take()
                check(m - base < rss_slack_kib(), "B's VmRSS reached %d KiB (baseline %d KiB,"
                      " allowed +%d KiB)" % (m, base, rss_slack_kib()))
                log("ok   %-26s %s  [%.1f s, B max VmRSS +%d KiB]"
                    % (name, what, time.monotonic() - t0, m - base))
            except (TestFailure, OSError, ssl.SSLError) as e:
                log("FAIL %-26s %s: %s" % (name, type(e).__name__, e))
                failed.append(name)
                if not fx.B.alive():
                    log("B is dead (exit code %s); stopping here; stderr tail:\n%s"
                        % (fx.B.proc.poll(), fx.B.stderr_tail(20)))
                    break
        rss.stop()
        n = lt.finish()
        log("long transfer through A->B during all cases: %d bytes each way, sha256 equal" % n)
        check(not failed, "%d of %d cases failed: %s" % (len(failed), len(CASES),
                                                         ", ".join(failed)))
        A.stop_ok()
        fx.B.stop_ok()
    finally:
        echo.close()
        sink.close()


if __name__ == "__main__":
    TESTS = [
        ("hostile-cases", hostile_cases),
    ]
    # HBONE_ONLY=name1,name2 (or RINGTUNNEL_IT_ONLY) runs only those sub-tests
    run_tests("hbone-hostile", TESTS, 280, only_alias="HBONE_ONLY")

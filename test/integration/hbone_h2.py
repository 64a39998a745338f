"""A tiny HTTP/2 toolkit for the HBONE tests (Python 3 stdlib only): frame
builder and parser, an HPACK encoder (literal header fields without indexing,
no Huffman) and a small HPACK decoder (static + dynamic table, Huffman for the
digits a :status needs), and a raw mTLS 1.3 client connection that sends
hand-made frames and collects what the server answers.

Nothing here is an HTTP/2 implementation to trust: it is the hostile peer.
`python3 hbone_h2.py` runs a self-check (round trips, RFC 7541 examples)."""

import socket
import ssl
import struct
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
TYPE_NAMES = {DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
              SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING",
              GOAWAY: "GOAWAY", WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION"}

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, \
    MAX_HEADER_LIST_SIZE = range(1, 7)

# Error codes
ERRORS = {0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
          0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
          0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
          0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR", 0xb: "ENHANCE_YOUR_CALM",
          0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED"}
CODES = {v: k for k, v in ERRORS.items()}


def err_name(code):
    return ERRORS.get(code, "0x%x" % code)


# ---------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------


def frame(ftype, flags, stream_id, payload=b"", length=None):
    """One frame. `length` overrides the length field (for lying frames)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0xffffffff) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping_frame(data=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def window_update_frame(stream_id, increment):
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def rst_stream_frame(stream_id, code):
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def goaway_frame(last_stream_id, code, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)


def data_frame(stream_id, payload, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)


def headers_frame(stream_id, headers, end_stream=False, end_headers=True, block=None):
    """HEADERS with `headers` [(name, value)] encoded as literals without
    indexing (or the raw header block `block`)."""
    if block is None:
        block = encode_headers(headers)
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream_id, block)


def continuation_frame(stream_id, block, end_headers=False):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


def connect_headers(authority, extra=()):
    h = [(":method", "CONNECT")]
    if authority is not None:
        h.append((":authority", authority))
    return h + list(extra)


class Frame:
    __slots__ = ("type", "flags", "stream", "payload", "length")

    def __init__(self, ftype, flags, stream, payload, length=None):
        self.type, self.flags, self.stream, self.payload = ftype, flags, stream, payload
        self.length = len(payload) if length is None else length

    def __repr__(self):
        extra = ""
        if self.type == GOAWAY and len(self.payload) >= 8:
            last, code = struct.unpack(">II", self.payload[:8])
            extra = " last=%d %s %r" % (last & 0x7fffffff, err_name(code), self.payload[8:60])
        elif self.type == RST_STREAM and len(self.payload) >= 4:
            extra = " " + err_name(struct.unpack(">I", self.payload[:4])[0])
        elif self.type == SETTINGS:
            extra = " " + repr(parse_settings(self.payload))
        elif self.type == WINDOW_UPDATE and len(self.payload) >= 4:
            extra = " +%d" % (struct.unpack(">I", self.payload[:4])[0] & 0x7fffffff)
        return "<%s flags=0x%x stream=%d len=%d%s>" % (
            TYPE_NAMES.get(self.type, "type0x%x" % self.type), self.flags, self.stream,
            self.length, extra)

    def error_code(self):
        if self.type == GOAWAY:
            return struct.unpack(">I", self.payload[4:8])[0]
        if self.type == RST_STREAM:
            return struct.unpack(">I", self.payload[:4])[0]
        return None


def parse_settings(payload):
    return [struct.unpack(">HI", payload[i:i + 6]) for i in range(0, len(payload) - 5, 6)]


class FrameParser:
    """Feed bytes, take whole frames."""

    def __init__(self, max_len=1 << 24):
        self.buf = bytearray()
        self.max_len = max_len

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + n:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7fffffff
            out.append(Frame(ftype, flags, sid, bytes(self.buf[9:9 + n])))
            del self.buf[:9 + n]
        return out


# ---------------------------------------------------------------------------
# HPACK (RFC 7541)
# ---------------------------------------------------------------------------

STATIC_TABLE = [
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"),
    (":path", "/index.html"), (":scheme", "http"), (":scheme", "https"), (":status", "200"),
    (":status", "204"), (":status", "206"), (":status", "304"), (":status", "400"),
    (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""),
    ("accept", ""), ("access-control-allow-origin", ""), ("age", ""), ("allow", ""),
    ("authorization", ""), ("cache-control", ""), ("content-disposition", ""),
    ("content-encoding", ""), ("content-language", ""), ("content-length", ""),
    ("content-location", ""), ("content-range", ""), ("content-type", ""), ("cookie", ""),
    ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""),
    ("max-forwards", ""), ("proxy-authenticate", ""), ("proxy-authorization", ""),
    ("range", ""), ("referer", ""), ("refresh", ""), ("retry-after", ""), ("server", ""),
    ("set-cookie", ""), ("strict-transport-security", ""), ("transfer-encoding", ""),
    ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", "")]

# Huffman codes (RFC 7541 appendix B) of the symbols a :status or a short
# numeric value needs: digits and a few more. Anything else is reported as
# undecodable rather than guessed.
HUFFMAN_SOME = {
    "0": (0x0, 5), "1": (0x1, 5), "2": (0x2, 5), "a": (0x3, 5), "c": (0x4, 5), "e": (0x5, 5),
    "i": (0x6, 5), "o": (0x7, 5), "s": (0x8, 5), "t": (0x9, 5),
    " ": (0x14, 6), "%": (0x15, 6), "-": (0x16, 6), ".": (0x17, 6), "/": (0x18, 6),
    "3": (0x19, 6), "4": (0x1a, 6), "5": (0x1b, 6), "6": (0x1c, 6), "7": (0x1d, 6),
    "8": (0x1e, 6), "9": (0x1f, 6), "=": (0x20, 6), "A": (0x21, 6), "_": (0x22, 6),
    "b": (0x23, 6), "d": (0x24, 6), "f": (0x25, 6), "g": (0x26, 6), "h": (0x27, 6),
    "l": (0x28, 6), "m": (0x29, 6), "n": (0x2a, 6), "p": (0x2b, 6), "r": (0x2c, 6),
    "u": (0x2d, 6), ":": (0x5c, 7),
}
_HUFF_DECODE = {(code, n): ch for ch, (code, n) in HUFFMAN_SOME.items()}


class HpackError(Exception):
    pass


def enc_int(value, prefix_bits, first_byte_flags=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7f) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def enc_str(s):
    b = s.encode() if isinstance(s, str) else s
    return enc_int(len(b), 7, 0) + b        # H = 0: no Huffman


def encode_headers(headers):
    """Literal header fields without indexing, new names (0x00 prefix)."""
    out = bytearray()
    for name, value in headers:
        out += b"\x00" + enc_str(name) + enc_str(value)
    return bytes(out)


def huffman_encode(s):
    """For the self-check only (symbols of HUFFMAN_SOME)."""
    bits, n = 0, 0
    for ch in s:
        code, ln = HUFFMAN_SOME[ch]
        bits = (bits << ln) | code
        n += ln
    pad = (-n) % 8
    bits = (bits << pad) | ((1 << pad) - 1)
    return bits.to_bytes((n + pad) // 8, "big")


def huffman_decode(data):
    bits = int.from_bytes(data, "big")
    total = len(data) * 8
    out = []
    pos = 0
    while True:
        left = total - pos
        if left == 0:
            break
        for ln in range(5, min(7, left) + 1):
            code = (bits >> (left - ln)) & ((1 << ln) - 1)
            ch = _HUFF_DECODE.get((code, ln))
            if ch is not None:
                out.append(ch)
                pos += ln
                break
        else:
            # what is left must be EOS padding: fewer than 8 one bits
            if left < 8 and (bits & ((1 << left) - 1)) == (1 << left) - 1:
                break
            raise HpackError("huffman: symbol outside the small table this decoder knows")
    return "".join(out)


class HpackDecoder:
    def __init__(self, max_size=4096):
        self.dyn = []           # newest first
        self.size = 0
        self.max_size = max_size

    def _get(self, idx):
        if idx == 0:
            raise HpackError("index 0")
        if idx <= len(STATIC_TABLE):
            return STATIC_TABLE[idx - 1]
        i = idx - len(STATIC_TABLE) - 1
        if i >= len(self.dyn):
            raise HpackError("index %d beyond the tables" % idx)
        return self.dyn[i]

    def _add(self, name, value):
        sz = len(name) + len(value) + 32
        self.dyn.insert(0, (name, value))
        self.size += sz
        self._evict()

    def _evict(self):
        while self.size > self.max_size and self.dyn:
            n, v = self.dyn.pop()
            self.size -= len(n) + len(v) + 32

    @staticmethod
    def _int(data, pos, prefix_bits):
        limit = (1 << prefix_bits) - 1
        v = data[pos] & limit
        pos += 1
        if v < limit:
            return v, pos
        m = 0
        while True:
            if pos >= len(data):
                raise HpackError("truncated integer")
            b = data[pos]
            pos += 1
            v += (b & 0x7f) << m
            m += 7
            if not b & 0x80:
                return v, pos
            if m > 28:
                raise HpackError("integer too long")

    def _str(self, data, pos):
        huff = data[pos] & 0x80
        n, pos = self._int(data, pos, 7)
        if pos + n > len(data):
            raise HpackError("truncated string")
        raw = data[pos:pos + n]
        pos += n
        if huff:
            try:
                return huffman_decode(raw), pos
            except HpackError:
                return "<huffman:%s>" % raw.hex(), pos
        return raw.decode("latin-1"), pos

    def decode(self, data):
        out = []
        pos = 0
        while pos < len(data):
            b = data[pos]
            if b & 0x80:                       # indexed
                idx, pos = self._int(data, pos, 7)
                out.append(self._get(idx))
            elif b & 0x40:                     # literal, incremental indexing
                idx, pos = self._int(data, pos, 6)
                name = self._get(idx)[0] if idx else None
                if name is None:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                self._add(name, value)
                out.append((name, value))
            elif b & 0x20:                     # table size update
                sz, pos = self._int(data, pos, 5)
                self.max_size = sz
                self._evict()
            else:                              # literal without / never indexed
                idx, pos = self._int(data, pos, 4)
                name = self._get(idx)[0] if idx else None
                if name is None:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                out.append((name, value))
        return out


# ---------------------------------------------------------------------------
# TLS + raw HTTP/2 client
# ---------------------------------------------------------------------------


def tls_context(ca=None, cert=None, key=None, alpn=("h2",), verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    if verify and ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class Closed(Exception):
    """The connection ended; .how = 'eof', 'reset' or 'ssl: ...'."""

    def __init__(self, how):
        Exception.__init__(self, how)
        self.how = how


class H2Conn:
    """A raw client connection. Everything received is kept in self.frames
    (in order); self.closed says how the connection ended, once it did."""

    def __init__(self, addr, ctx, timeout=10.0, handshake=True, rcvbuf=None):
        self.addr = addr
        self.raw = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
        if rcvbuf:      # set before connecting, so that the window scale stays small
            self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.raw.settimeout(timeout)
        try:
            self.raw.connect(addr)
        except BaseException:
            self.raw.close()
            raise
        self.sock = ctx.wrap_socket(self.raw, do_handshake_on_connect=False)
        self.parser = FrameParser()
        self.frames = []
        self.closed = None
        self.hpack = HpackDecoder()
        self.headers = {}           # stream -> list of decoded header lists
        self.data = {}              # stream -> bytearray
        self.ended = set()          # streams with END_STREAM seen
        self.reader = None
        self.lock = threading.Lock()
        self.bytes_in = 0
        if handshake:
            try:
                self.sock.do_handshake()
            except BaseException:
                self.close()
                raise

    # -- sending -------------------------------------------------------------
    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """sendall that reports instead of raising when the server has gone."""
        try:
            self.sock.sendall(data)
            return None
        except (OSError, ssl.SSLError) as e:
            return "%s: %s" % (type(e).__name__, e)

    def start(self, settings=((INITIAL_WINDOW_SIZE, 1 << 20),)):
        self.send(PREFACE + settings_frame(settings))

    # -- receiving -----------------------------------------------------------
    def _on_frame(self, f):
        with self.lock:
            self.frames.append(f)
        if f.type in (HEADERS, CONTINUATION) and f.stream:
            block = f.payload
            if f.type == HEADERS:
                off = 0
                pad = 0
                if f.flags & PADDED:
                    pad = block[0]
                    off = 1
                if f.flags & PRIORITY_FLAG:
                    off += 5
                block = block[off:len(block) - pad]
            try:
                self.headers.setdefault(f.stream, []).append(self.hpack.decode(block))
            except (HpackError, IndexError) as e:
                self.headers.setdefault(f.stream, []).append([("<hpack-error>", str(e))])
            if f.flags & END_STREAM:
                self.ended.add(f.stream)
        elif f.type == DATA:
            self.data.setdefault(f.stream, bytearray()).extend(f.payload)
            if f.flags & END_STREAM:
                self.ended.add(f.stream)

    def read_some(self, timeout):
        """One recv (up to timeout); parses frames. Raises Closed at the end."""
        if self.closed:
            raise Closed(self.closed)
        self.sock.settimeout(timeout)
        try:
            b = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        except ssl.SSLError as e:
            self.closed = "ssl: %s" % (e.reason or e)
            raise Closed(self.closed)
        except ConnectionResetError:
            self.closed = "reset"
            raise Closed(self.closed)
        except OSError as e:
            self.closed = "oserror: %s" % e
            raise Closed(self.closed)
        if not b:
            self.closed = "eof"
            raise Closed(self.closed)
        self.bytes_in += len(b)
        fs = self.parser.feed(b)
        for f in fs:
            self._on_frame(f)
        return fs

    def wait_for(self, pred, timeout):
        """Read until pred(frame) holds for a received frame (returns it), the
        connection closes (returns None) or timeout (returns None)."""
        end = time.monotonic() + timeout
        with self.lock:
            for f in self.frames:
                if pred(f):
                    return f
        while time.monotonic() < end:
            try:
                fs = self.read_some(min(0.5, max(0.01, end - time.monotonic())))
            except Closed:
                return None
            for f in fs:
                if pred(f):
                    return f
        return None

    def drain(self, timeout):
        """Read until the connection closes or timeout; returns self.closed."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.read_some(min(0.5, max(0.01, end - time.monotonic())))
            except Closed:
                break
        return self.closed

    def start_reader(self):
        """Read in a background thread until the connection closes."""
        self._stop_reader = False

        def run():
            while not self.closed and not self._stop_reader:
                try:
                    self.read_some(0.5)
                except Closed:
                    return
                except Exception as e:      # noqa
                    self.closed = "reader: %r" % e
                    return
        self.reader = threading.Thread(target=run, daemon=True, name="h2-reader")
        self.reader.start()

    def stop_reader(self, timeout=5.0):
        """Stop the background reader (after its current recv, <= 0.5 s)."""
        self._stop_reader = True
        if self.reader:
            self.reader.join(timeout)

    def goaway(self):
        with self.lock:
            for f in self.frames:
                if f.type == GOAWAY:
                    return f
        return None

    def status(self, stream):
        for hl in self.headers.get(stream, []):
            for n, v in hl:
                if n == ":status":
                    return v
        return None

    def rst(self, stream):
        with self.lock:
            for f in self.frames:
                if f.type == RST_STREAM and f.stream == stream:
                    return f
        return None

    def server_settings(self):
        with self.lock:
            for f in self.frames:
                if f.type == SETTINGS and not f.flags & ACK:
                    return dict(parse_settings(f.payload))
        return None

    def summary(self, n=12):
        with self.lock:
            fs = list(self.frames)
        s = ", ".join(repr(f) for f in fs[:n])
        if len(fs) > n:
            s += ", ... (%d frames)" % len(fs)
        return "[%s] closed=%s" % (s, self.closed)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            self.raw.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------
# Self-check
# ---------------------------------------------------------------------------


def _selfcheck():
    # frames round trip
    p = FrameParser()
    blob = (settings_frame([(MAX_FRAME_SIZE, 1 << 20)]) + ping_frame(b"12345678")
            + headers_frame(3, connect_headers("127.0.0.1:80")) + data_frame(3, b"x" * 70000, True)
            + goaway_frame(7, 0xb, b"calm") + rst_stream_frame(5, 8)
            + window_update_frame(0, 12345))
    fs = []
    for i in range(0, len(blob), 7):
        fs += p.feed(blob[i:i + 7])
    assert [f.type for f in fs] == [SETTINGS, PING, HEADERS, DATA, GOAWAY, RST_STREAM,
                                    WINDOW_UPDATE], fs
    assert parse_settings(fs[0].payload) == [(MAX_FRAME_SIZE, 1 << 20)]
    assert fs[2].stream == 3 and fs[2].flags == END_HEADERS
    assert fs[3].payload == b"x" * 70000 and fs[3].flags == END_STREAM
    assert fs[4].error_code() == 0xb and fs[5].error_code() == 8
    assert frame(DATA, 0, 1, b"", length=0xffffff)[:3] == b"\xff\xff\xff"
    # HPACK: our encoding decodes back
    hs = [(":method", "CONNECT"), (":authority", "127.0.0.1:15008"), ("x" * 200, "y" * 300)]
    assert HpackDecoder().decode(encode_headers(hs)) == hs
    assert enc_int(10, 5) == b"\x0a" and enc_int(1337, 5) == b"\x1f\x9a\x0a"  # RFC 7541 C.1
    # RFC 7541 C.6.1 (response with Huffman): ":status: 302" as 48 82 64 02
    d = HpackDecoder(256)
    out = d.decode(bytes.fromhex("48826402"))       # :status 302, Huffman-coded value
    assert out == [(":status", "302")], out
    assert huffman_encode("302") == bytes.fromhex("6402")
    for s in ("200", "400", "503", "401", "1234567890"):
        assert huffman_decode(huffman_encode(s)) == s, s
    # indexed statics and dynamic table
    d = HpackDecoder()
    assert d.decode(b"\x88\x8c") == [(":status", "200"), (":status", "400")]
    d.decode(b"\x48\x03503")                       # literal w/ indexing, name idx 8
    assert d.decode(b"\xbe") == [(":status", "503")]
    try:
        HpackDecoder().decode(b"\x80")
        raise AssertionError("index 0 accepted")
    except HpackError:
        pass
    print("hbone_h2 self-check ok")


if __name__ == "__main__":
    _selfcheck()

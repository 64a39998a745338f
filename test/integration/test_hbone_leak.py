#!/usr/bin/env python3
"""No cross-connection data leak on ringtunnel B's HBONE port.

An attacker with a CA-signed identity (node-a's certificate, raw mTLS HTTP/2
from hbone_h2.py) arranges for DATA frames of one of its streams to wait in
B's output, still referencing B's receive buffers, while the stream is reset;
a victim meanwhile pushes a recognisable pattern through the same B. The
attacker must never receive a byte that its own data-source targets did not
send: no byte of the victim's marker, and each stream's DATA exactly a prefix
of its own target's stream.

Setup: B (--hbone-listen, --workers 1; --allow-dest 127.0.0.0/8 and
--debug-poison-buffers when its --help lists them), an outbound A in front of
B for the victim, an echo target that echoes in 256 KiB batches (so that B
reads the echo into its largest receive buffers), and data-source targets:
every accepted connection gets a number and sends 16-byte cells "src:" +
number + offset, so each byte names its connection and position.

One round (ATTACK_ROUNDS rounds, each on a new attacker connection):
  1. the attacker connects with a small receive buffer, sends SETTINGS
     INITIAL_WINDOW_SIZE=0 and a connection WINDOW_UPDATE of 1 GiB, opens
     stream 1 (the filler) to a data source and from then on reads nothing;
  2. it grants stream 1 window in steps (its target sends exactly the bytes
     granted) until, by /proc/net/tcp, 1.25 MiB of the granted bytes are in
     neither B's send queue nor the attacker's receive queue: B's TLS output
     is past its 1 MiB high-water mark and B encrypts no more for it;
  3. it opens stream 3 to another data source (window 0: B reads that
     target's bytes into receive buffers, up to --max-queued, unframed);
  4. it sends WINDOW_UPDATE(stream 3, 512 KiB) and a PING: B frames 512 KiB
     of stream 3 DATA into its HTTP/2 output, referencing the receive
     buffers, and cannot encrypt them yet;
  5. it sends RST_STREAM(3, CANCEL);
  6. a victim client starts echoing a 16-byte marker, repeated, through A, B
     and the echo target, without pause until step 7 is done (VICTIM_BYTES
     echoed before it begins);
  7. the attacker reads everything B has for it: stream 1's granted bytes,
     then the ACK of a PING sent after them (queued behind every DATA frame
     framed before it, stream 3's included).
Assertions: no copy of the marker in the attacker's DATA; stream 1's and
stream 3's DATA are byte-exact prefixes of their own targets' streams (with
--debug-poison-buffers, a buffer read after its release shows as poison
bytes, which fails the same check); stream 1 delivered every granted byte;
no GOAWAY; the victim's echo byte-exact; B exits 0 on SIGTERM at the end.
The log line of each round says how many marker copies the attacker got.

Before the fix (a stream's release of its unframed tail gave back, by byte
count, the receive buffers at the front of the stream, which its framed DATA
still referenced; the kernel refilled them with the victim's bytes), the
attacker got about 28,670 copies of the marker (448 of the 512 KiB of stream
3) in every round.
LEAK_ROUNDS=N runs N rounds (development)."""

import inspect
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, TargetServer, binary, check, connect,  # noqa: E402
                     fail, fmt_addr, free_port, log, run_tests, sha256_hex, wait_until)
import hbone_common  # noqa: E402
import hbone_h2 as h2  # noqa: E402
from hbone_common import (ID_B, ca, cert, duplex, key, require_hbone,  # noqa: E402
                          start_inbound, start_outbound)

ATTACK_ROUNDS = int(os.environ.get("LEAK_ROUNDS", "3"))   # more for development
MARKER = b"VICTIM:secret#42"                 # 16 bytes, repeated by the victim
VICTIM_BYTES = 32 << 20                      # echoed after the reset before the attacker reads
HELD_TARGET = (1 << 20) + (256 << 10)        # granted bytes B must hold: past 1 MiB high water
PROBE_WINDOW = 512 << 10                     # stream 3 DATA framed before its reset
ATTACKER_RCVBUF = 16384
STEP_TIMEOUT = 10.0

CELL = struct.Struct(">4sIQ")                # b"src:", connection number, offset


# ---------------------------------------------------------------------------
# Data sources: every connection sends its own position-dependent cells
# ---------------------------------------------------------------------------


def source_bytes(cid, offset, n):
    """Bytes [offset, offset + n) of data-source connection cid's stream
    (offset and n multiples of 16)."""
    return b"".join(CELL.pack(b"src:", cid, o) for o in range(offset, offset + n, CELL.size))


class DataSources:
    """A target that numbers its connections (1, 2, ...) and sends each one its
    cells, never reading: up to the connection's budget (set by the test; a
    new connection starts with `default_budget`), at most 64 MiB, until the
    peer goes away."""

    CAP = 64 << 20

    def __init__(self):
        self.cond = threading.Condition()
        self.next_cid = 1
        self.sent = {}              # cid -> bytes sent so far
        self.budget = {}            # cid -> bytes it may send
        self.peer_port = {}         # cid -> B's port of the connection
        self.default_budget = self.CAP
        self.stopping = False
        self.server = TargetServer(self._handle, conn_timeout=30.0)
        self.addr = self.server.addr

    def _handle(self, conn, peer):
        with self.cond:
            cid = self.next_cid
            self.next_cid += 1
            self.sent[cid] = 0
            self.peer_port[cid] = peer[1]
            self.budget[cid] = self.default_budget
        off = 0
        try:
            while off < self.CAP:
                with self.cond:
                    while self.budget[cid] <= off and not self.stopping:
                        self.cond.wait(0.2)
                    if self.stopping:
                        return
                    n = min(CHUNK, self.budget[cid] - off)
                conn.sendall(source_bytes(cid, off, n))
                off += n
                self.sent[cid] = off
        except OSError:
            pass                    # reset by B when the stream ends, or closed at the end
        finally:
            conn.close()

    def taken(self, cid):
        """Bytes of connection cid's stream that B has read: sent, less what the
        kernel holds (our send queue, B's receive queue)."""
        b = queues(self.peer_port[cid], self.addr[1])
        s = queues(self.addr[1], self.peer_port[cid])
        return self.sent[cid] - (b[1] if b else 0) - (s[0] if s else 0)

    def set_budget(self, cid, n):
        with self.cond:
            self.budget[cid] = n
            self.cond.notify_all()

    def count(self):
        with self.cond:
            return self.next_cid - 1

    def close(self):
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.server.close()


def batching_echo_handler(conn, peer):
    """Echo in batches of 256 KiB (the rest at EOF), then half-close: B reads
    the echo in large reads, into its largest receive buffers."""
    buf = bytearray()
    while True:
        b = conn.recv(CHUNK)
        if not b:
            break
        buf += b
        if len(buf) >= (256 << 10):
            conn.sendall(buf)
            buf.clear()
    conn.sendall(buf)
    conn.shutdown(socket.SHUT_WR)
    conn.close()


def analyse(cid, got):
    """(ok, description) of stream data `got` against connection cid's stream."""
    want = source_bytes(cid, 0, (len(got) + 15) // 16 * 16)[:len(got)]
    markers = got.count(MARKER)
    if got == want:
        return True, markers, "%d bytes, all from its own target" % len(got)
    first = next(i for i in range(len(got)) if got[i] != want[i])
    bad_cells = sum(1 for i in range(0, len(got), 16) if got[i:i + 16] != want[i:i + 16])
    others = set()
    for i in range(0, len(got) - 15, 16):
        if got[i:i + 4] == b"src:" and got[i:i + 16] != want[i:i + 16]:
            others.add(CELL.unpack(got[i:i + 16])[1])
    poison = len(re.findall(rb"\xa5{64,}", got))
    return False, markers, (
        "%d bytes, first foreign byte at offset %d (%r), %d of %d 16-byte cells foreign:"
        " %d victim marker copies, cells of other target connections %s, %d runs of 64+"
        " 0xA5 poison bytes" % (len(got), first, got[first:first + 16], bad_cells,
                                (len(got) + 15) // 16, markers, sorted(others) or "none",
                                poison))


# ---------------------------------------------------------------------------
# Kernel socket queues (/proc/net/tcp)
# ---------------------------------------------------------------------------


def queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the IPv4 socket local_port -> remote_port, or None."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if len(p) < 5:
                continue
            if int(p[1].rsplit(":", 1)[1], 16) == local_port and \
                    int(p[2].rsplit(":", 1)[1], 16) == remote_port:
                tx, rx = p[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def in_kernel(b_port, a_port):
    """Bytes on their way from B to the attacker that the kernel holds: B's
    send queue plus the attacker's receive queue."""
    b = queues(b_port, a_port)
    a = queues(a_port, b_port)
    check(b is not None and a is not None,
          "attacker connection 127.0.0.1:%d <-> B :%d not in /proc/net/tcp" % (a_port, b_port))
    return b[0] + a[1]


def settled(b_port, a_port, quiet=0.15, timeout=STEP_TIMEOUT):
    """The kernel bytes once they stopped changing for `quiet` seconds."""
    end = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < end:
        k = in_kernel(b_port, a_port)
        if k != last:
            last, since = k, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return k
        time.sleep(0.01)
    fail("B's send queue to the attacker kept changing for %.0f s" % timeout)


# ---------------------------------------------------------------------------
# The attack
# ---------------------------------------------------------------------------


def attacker_ctx():
    return h2.tls_context(ca(), cert("node-a"), key("node-a"))


def stream_200(c, sid, timeout=STEP_TIMEOUT):
    f = c.wait_for(lambda f: f.stream == sid and f.type in (h2.HEADERS, h2.RST_STREAM)
                   or f.type == h2.GOAWAY, timeout)
    check(f is not None and f.type == h2.HEADERS and c.status(sid) == "200",
          "attacker's CONNECT on stream %d: %r, expected 200: %s" % (sid, f, c.summary()))


def victim_echo(listen, nbytes):
    """One victim connection: nbytes of the marker echoed byte-exact."""
    data = MARKER * (nbytes // len(MARKER))
    s = connect(listen, 30)
    try:
        n, h, err = duplex(s, data, len(data), timeout=30)
    finally:
        s.close()
    check(err is None, "victim: send failed: %r" % err)
    check(n == len(data) and h == sha256_hex(data),
          "victim: echoed %d of %d bytes (sha equal: %s)" % (n, len(data), h == sha256_hex(data)))


class Victim:
    """A client that echoes the marker through A and B without pause until
    stop(): B's receive buffers keep cycling through the victim's bytes while
    it runs. The echo must come back byte-exact."""

    def __init__(self, listen):
        self.s = connect(listen, 30)
        self.sent = 0
        self.echoed = 0
        self.err = []
        self._stop = threading.Event()
        self.block = MARKER * (CHUNK // len(MARKER))
        self.ts = threading.Thread(target=self._send, daemon=True, name="victim-send")
        self.tr = threading.Thread(target=self._recv, daemon=True, name="victim-recv")
        self.ts.start()
        self.tr.start()

    def _send(self):
        try:
            while not self._stop.is_set():
                self.s.sendall(self.block)
                self.sent += len(self.block)
            self.s.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa
            self.err.append("send: %r" % e)

    def _recv(self):
        try:
            pattern = MARKER * (2 * CHUNK // len(MARKER) + 2)
            while True:
                b = self.s.recv(CHUNK)
                if not b:
                    return
                at = self.echoed % len(MARKER)
                if b != pattern[at:at + len(b)]:
                    self.err.append("echo differs from what was sent at offset %d" % self.echoed)
                    return
                self.echoed += len(b)
        except Exception as e:  # noqa
            self.err.append("recv: %r" % e)

    def wait_echoed(self, nbytes, timeout=STEP_TIMEOUT):
        end = time.monotonic() + timeout
        start = self.echoed
        while self.echoed - start < nbytes:
            check(not self.err, "victim: %s" % self.err)
            check(time.monotonic() < end, "victim: only %d of %d bytes echoed in %.0f s"
                  % (self.echoed - start, nbytes, timeout))
            time.sleep(0.01)

    def stop(self, checked=True):
        self._stop.set()
        self.ts.join(STEP_TIMEOUT)
        self.tr.join(STEP_TIMEOUT)
        self.s.close()
        if not checked:
            return self.sent
        check(not self.err, "victim: %s" % self.err)
        check(not self.tr.is_alive(), "victim: no EOF %.0f s after its half-close" % STEP_TIMEOUT)
        check(self.sent == self.echoed, "victim: sent %d bytes, %d echoed back"
              % (self.sent, self.echoed))
        return self.sent


def one_round(fx, rnd):
    """Returns (leaked, marker copies, description)."""
    src = fx.src
    c = h2.H2Conn(fx.B.hbone_addr, attacker_ctx(), timeout=STEP_TIMEOUT, rcvbuf=ATTACKER_RCVBUF)
    try:
        a_port = c.sock.getsockname()[1]
        b_port = fx.B.hbone_addr[1]
        check(c.sock.selected_alpn_protocol() == "h2", "attacker: ALPN %r, expected h2"
              % c.sock.selected_alpn_protocol())
        c.start(((h2.INITIAL_WINDOW_SIZE, 0),))
        f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, STEP_TIMEOUT)
        check(f is not None, "attacker: no SETTINGS from B: %s" % c.summary())
        c.send(h2.settings_frame(ack=True) + h2.window_update_frame(0, 1 << 30))

        # 1. the filler: stream 1 to a data source; from here on nothing is read
        base = src.count()
        src.default_budget = 0      # the filler's target sends what stream 1 may take, no more
        c.send(h2.headers_frame(1, h2.connect_headers(fmt_addr(*src.addr))))
        stream_200(c, 1)
        wait_until(lambda: src.count() > base, STEP_TIMEOUT, what="filler target connection")
        filler = base + 1

        # 2. grant stream 1 window until B holds HELD_TARGET bytes past the kernel's queues
        granted = 0
        kernel = settled(b_port, a_port)
        for _ in range(40):
            held = granted - kernel
            if held >= HELD_TARGET:
                break
            step = (max(HELD_TARGET - held, 64 << 10) + 15) // 16 * 16
            src.set_budget(filler, granted + step)
            c.send(h2.window_update_frame(1, step))
            granted += step
            kernel = settled(b_port, a_port)
        else:
            fail("attacker: B did not hold %d granted bytes (granted %d, kernel %d)"
                 % (HELD_TARGET, granted, kernel))

        # 3. stream 3 to another data source, window 0: B reads, cannot frame
        src.default_budget = DataSources.CAP
        c.send(h2.headers_frame(3, h2.connect_headers(fmt_addr(*src.addr))))
        wait_until(lambda: src.count() > filler, STEP_TIMEOUT, what="probe target connection")
        probe = filler + 1
        last, since = -1, time.monotonic()
        end = time.monotonic() + STEP_TIMEOUT
        while True:     # until B stopped reading (--max-queued) and the source blocks
            n = src.sent.get(probe, 0)
            if n != last:
                last, since = n, time.monotonic()
            elif n >= (1 << 20) and time.monotonic() - since > 0.2:
                break
            check(time.monotonic() < end, "probe target sent only %d bytes" % n)
            time.sleep(0.02)

        # 4. window for stream 3 and a PING: 512 KiB of DATA framed, not encrypted
        taken = src.taken(probe)
        c.send(h2.window_update_frame(3, PROBE_WINDOW) + h2.ping_frame(b"leak%04d" % rnd))
        time.sleep(0.3)
        # 5. reset stream 3
        c.send(h2.rst_stream_frame(3, h2.CODES["CANCEL"]))
        time.sleep(0.2)
        check(fx.B.alive(), "B died (exit code %s)" % fx.B.proc.poll())

        # 6. the victim, on until the attacker has read everything
        victim = Victim(fx.victim_listen)
        try:
            victim.wait_echoed(VICTIM_BYTES)

            # 7. read everything B has for the attacker: stream 1's granted bytes, then
            # the ACK of a PING sent after them (queued behind all DATA framed before it)
            end = time.monotonic() + STEP_TIMEOUT
            pinged = acked = False
            while time.monotonic() < end:
                if not pinged and len(c.data.get(1, b"")) >= granted:
                    c.send(h2.ping_frame(b"done%04d" % rnd))
                    pinged = True
                if pinged and any(f.type == h2.PING and f.flags & h2.ACK
                                  and f.payload == b"done%04d" % rnd for f in c.frames):
                    acked = True
                    break
                try:
                    c.read_some(0.3)
                except h2.Closed:
                    break
        except BaseException:
            victim.stop(checked=False)
            raise
        vbytes = victim.stop()
        got1 = bytes(c.data.get(1, b""))
        got3 = bytes(c.data.get(3, b""))
        check(not c.goaway(), "attacker got a GOAWAY: %s" % c.summary())
        check(len(got1) == granted, "attacker: stream 1 delivered %d of the %d bytes granted"
              " (closed: %s)" % (len(got1), granted, c.closed))
        check(acked, "attacker: no ACK of the PING sent after reading stream 1 within %.0f s"
              " (closed: %s)" % (STEP_TIMEOUT, c.closed))
        ok1, m1, d1 = analyse(filler, got1)
        ok3, m3, d3 = analyse(probe, got3)
        desc = ("stream 1: %d bytes granted, %d of them held in B past the kernel's queues;"
                " stream 3: B had read %d bytes of its target; victim echoed %d bytes;"
                " attacker's stream 1: %s; attacker's stream 3: %s"
                % (granted, granted - kernel, taken, vbytes, d1, d3))
        return not (ok1 and ok3 and m1 + m3 == 0), m1 + m3, desc
    finally:
        c.close()


class Fixture:
    pass


def help_text():
    r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    return r.stdout.decode(errors="replace")


def no_cross_connection_leak():
    require_hbone()
    text = help_text()
    extra = ["--workers", "1"]
    allow = ["--allow-dest", "127.0.0.0/8"] if "--allow-dest" in text else []
    kw = {}
    if "allow" in inspect.signature(start_inbound).parameters:
        kw["allow"] = allow     # the helper's own default names [::1]/128 as well
    else:
        extra += allow
    poison = "--debug-poison-buffers" in text
    if poison and not hasattr(hbone_common, "debug_args"):
        extra += ["--debug-poison-buffers"]     # else start_inbound() adds it
    log("B's flags beyond the helper's: %s%s" % (" ".join(allow + extra),
                                                 " (poisoned buffers)" if poison else ""))
    echo = TargetServer(batching_echo_handler)
    fx = Fixture()
    fx.src = DataSources()
    try:
        fx.B = start_inbound(extra, **kw)
        fx.victim_listen = ("127.0.0.1", free_port())
        A = start_outbound([(fx.victim_listen, fx.B.hbone_addr, echo.addr, ID_B)])
        victim_echo(fx.victim_listen, 1 << 20)  # the pooled A -> B connection is up
        leaks, copies = 0, 0
        for rnd in range(1, ATTACK_ROUNDS + 1):
            t0 = time.monotonic()
            leaked, n, desc = one_round(fx, rnd)
            leaks += leaked
            copies += n
            log("round %d: %s, %d marker copies [%.1f s]; %s"
                % (rnd, "LEAK" if leaked else "clean", n, time.monotonic() - t0, desc))
        check(leaks == 0, "the attacker received bytes that its own targets did not send in %d of"
              " %d rounds (%d copies of the victim's 16-byte marker in all)"
              % (leaks, ATTACK_ROUNDS, copies))
        victim_echo(fx.victim_listen, 1 << 20)
        A.stop_ok()
        fx.B.stop_ok()
    finally:
        echo.close()
        fx.src.close()


if __name__ == "__main__":
    run_tests("hbone-leak", [("no-cross-connection-leak", no_cross_connection_leak)],
              60 if ATTACK_ROUNDS <= 3 else 60 + 4 * ATTACK_ROUNDS)

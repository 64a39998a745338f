#!/usr/bin/env python3
"""No open relay: the HBONE inbound (--hbone-listen) dials only what
--allow-dest allows, never its own listeners or addresses that are no
destination, and only for peers of its own trust domain.

The whole file runs in a private network namespace with only loopback up
(`unshare --net`, as root; the script re-executes itself there), so that even
a binary that does dial the non-loopback targets below sends nothing off this
machine. Without one (not root, or no unshare/ip) the two non-loopback
unicast targets (169.254.1.1, 198.51.100.1) are left out, loudly; multicast and
broadcast stay in (the kernel refuses a TCP connect to them before any packet).

relay-targets: B = --hbone-listen with --allow-dest 127.0.0.1/32:PA (an echo
  target listens on 127.0.0.1:PA), 0.0.0.0/0:PC and [::]/0:PC (wide entries,
  which must not cover loopback). Sentinel listeners (counting accepts) sit on
  127.0.0.1:PB, 127.0.0.2:PA, [::1]:PA, 127.0.0.1:PC and [::1]:PC. A raw mTLS
  HTTP/2 client (node-a) sends one CONNECT per case, labelled with a
  `forwarded: for="case-NAME"` header so that its access-log line is known:
    127.0.0.1:PB, [::ffff:127.0.0.1]:PB, [::1]:PA, 127.0.0.2:PA, 127.0.0.1:PC,
    [::1]:PC                              -> 401, end=denied
    127.0.0.1:<B's own HBONE port>        -> 503, end=refused
    0.0.0.0:PA, [::]:PA, 169.254.1.1:PA, [::ffff:169.254.1.1]:PA, 224.0.0.1:PA,
    255.255.255.255:PA                    -> 400, end=bad_request
    198.51.100.1:PA (in no entry)         -> 401, end=denied
  and from a client certificate of another trust domain (other-td, same CA),
    127.0.0.1:PA                          -> 401, end=denied.
  Each refusal's access-log line has its end and a reason="..." naming the
  rule; no sentinel and not the echo target accepted any connection, and no
  second connection to B's own port appeared. Then an allowed CONNECT to
  127.0.0.1:PA gets 200 and 60000 bytes echoed byte-exact, logged end=closed
  without a reason. B exits 0 on SIGTERM.
no-allow-dest: B with --hbone-listen and no --allow-dest says once at start-up
  that every CONNECT is refused, and refuses one to 127.0.0.1:PA with 401
  (reason: no --allow-dest); the echo target sees nothing.

Against a binary without --allow-dest (before the fix) B starts without the
flag and the cases fail: it dials them."""

import os
import re
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TargetServer, binary, check, echo_handler, established_to,  # noqa: E402
                     exec_self, fail, fmt_addr, free_port, gen_bytes, log, proxy_access_kv,
                     run_tests, wait_access_kv)
import hbone_h2 as h2  # noqa: E402
from hbone_common import ca, cert, key, require_hbone, start_inbound  # noqa: E402

NETNS_ENV = "RINGTUNNEL_OPEN_RELAY_OUTER_NETNS"
CASE_TIMEOUT = 10.0
in_private_netns = False


def enter_private_netns():
    """Re-executes this script under `unshare --net` when it can (once); inside,
    brings loopback up. Returns True inside a private namespace."""
    outer = os.environ.get(NETNS_ENV)
    if outer:
        if os.readlink("/proc/self/ns/net") == outer:
            print("FAIL: re-executed for a private network namespace but still in the outer one",
                  flush=True)
            sys.exit(1)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
        return True
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
    if probe.returncode != 0:
        return False
    os.environ[NETNS_ENV] = os.readlink("/proc/self/ns/net")
    exec_self(["unshare", "--net", "--", sys.executable, os.path.abspath(__file__)]
              + sys.argv[1:])
    return False  # not reached


def allow_dest_supported():
    r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    return b"--allow-dest" in r.stdout


def allow_args(entries):
    """--allow-dest flags, or none for a binary that has no such flag (an old
    build: it then dials whatever it is asked, which these tests catch)."""
    if allow_dest_supported():
        return [a for e in entries for a in ("--allow-dest", e)]
    log("the binary has no --allow-dest: B starts without it")
    return []


REASON_RE = re.compile(r' reason="((?:[^"\\]|\\.)*)"')


def reason_of(entry):
    m = REASON_RE.search(entry["_line"])
    return m.group(1) if m else None


def open_h2(addr, name="node-a"):
    """mTLS as `name` + preface + SETTINGS; waits for the server's SETTINGS."""
    ctx = h2.tls_context(ca(), cert(name), key(name))
    c = h2.H2Conn(addr, ctx, timeout=CASE_TIMEOUT)
    c.start()
    f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, CASE_TIMEOUT)
    check(f is not None, "no SETTINGS from B after the preface: %s" % c.summary())
    c.send(h2.settings_frame(ack=True))
    return c


def stream_answer(c, sid):
    """(':status' or 'RST <code>', END_STREAM seen on it)."""
    f = c.wait_for(lambda f: f.stream == sid and f.type in (h2.HEADERS, h2.RST_STREAM)
                   or f.type == h2.GOAWAY, CASE_TIMEOUT)
    if f is None:
        fail("stream %d: no answer within %.0f s: %s" % (sid, CASE_TIMEOUT, c.summary()))
    if f.type == h2.GOAWAY:
        fail("stream %d: GOAWAY %s instead of an answer" % (sid, h2.err_name(f.error_code())))
    if f.type == h2.RST_STREAM:
        return "RST " + h2.err_name(f.error_code()), True
    return c.status(sid), bool(f.flags & h2.END_STREAM)


def send_connect(c, sid, authority, label):
    c.send(h2.headers_frame(sid, h2.connect_headers(
        authority, [("forwarded", 'for="case-%s"' % label)])))
    return stream_answer(c, sid)


def relay_targets():
    require_hbone()
    echo = TargetServer(echo_handler)
    pa = echo.addr[1]
    pb = free_port()
    pc = free_port()
    sentinels = {}
    servers = [echo]
    try:
        for host, port in (("127.0.0.1", pb), ("127.0.0.2", pa), ("::1", pa),
                           ("127.0.0.1", pc), ("::1", pc)):
            s = TargetServer(lambda conn, peer: conn.close(), host=host, port=port)
            servers.append(s)
            sentinels[fmt_addr(host, port)] = s
        B = start_inbound(allow=allow_args(["127.0.0.1/32:%d" % pa, "0.0.0.0/0:%d" % pc,
                                            "[::]/0:%d" % pc]))
        hb = B.hbone_addr
        denied_lo = "is not in a loopback --allow-dest"
        # (label, authority, status, end, reason words, logged target, sentinel or None)
        cases = [
            ("loopback-port", "127.0.0.1:%d" % pb, "401", "denied", denied_lo,
             "127.0.0.1:%d" % pb, "127.0.0.1:%d" % pb),
            ("mapped-loopback", "[::ffff:127.0.0.1]:%d" % pb, "401", "denied", denied_lo,
             "127.0.0.1:%d" % pb, "127.0.0.1:%d" % pb),
            ("ipv6-loopback", "[::1]:%d" % pa, "401", "denied", denied_lo, "[::1]:%d" % pa,
             "[::1]:%d" % pa),
            ("other-loopback", "127.0.0.2:%d" % pa, "401", "denied", denied_lo,
             "127.0.0.2:%d" % pa, "127.0.0.2:%d" % pa),
            ("wide-entry-v4", "127.0.0.1:%d" % pc, "401", "denied", denied_lo,
             "127.0.0.1:%d" % pc, "127.0.0.1:%d" % pc),
            ("wide-entry-v6", "[::1]:%d" % pc, "401", "denied", denied_lo, "[::1]:%d" % pc,
             "[::1]:%d" % pc),
            ("own-hbone-port", fmt_addr(*hb), "503", "refused", "our own --hbone-listen",
             fmt_addr(*hb), None),
            ("unspecified", "0.0.0.0:%d" % pa, "400", "bad_request", "unspecified",
             "0.0.0.0:%d" % pa, None),
            ("unspecified-v6", "[::]:%d" % pa, "400", "bad_request", "unspecified",
             "[::]:%d" % pa, "[::1]:%d" % pa),
            ("multicast", "224.0.0.1:%d" % pa, "400", "bad_request", "multicast",
             "224.0.0.1:%d" % pa, None),
            ("broadcast", "255.255.255.255:%d" % pa, "400", "bad_request", "broadcast",
             "255.255.255.255:%d" % pa, None),
        ]
        if in_private_netns:
            cases += [
                ("link-local", "169.254.1.1:%d" % pa, "400", "bad_request", "link-local",
                 "169.254.1.1:%d" % pa, None),
                ("mapped-link-local", "[::ffff:169.254.1.1]:%d" % pa, "400", "bad_request",
                 "link-local", "169.254.1.1:%d" % pa, None),
                ("not-allowed", "198.51.100.1:%d" % pa, "401", "denied", "is in no --allow-dest",
                 "198.51.100.1:%d" % pa, None),
            ]
        else:
            log("NOTE: no private network namespace (needs root, unshare and ip): the "
                "169.254.1.1 and 198.51.100.1 cases are left out")
        failures = []
        c = open_h2(hb)
        try:
            sid = 1
            for label, auth, status, _, _, _, _ in cases:
                got, ended = send_connect(c, sid, auth, label)
                if got != status or not ended:
                    failures.append("%s: CONNECT %s answered %s%s, expected %s (ended)"
                                    % (label, auth, got, "" if ended else " (stream open)",
                                       status))
                else:
                    log("CONNECT %-28s -> %s" % (auth, got))
                sid += 2
            # B's own port: only our connection to it, no nested one from B.
            n = established_to(hb[1])
            if n != 1:
                failures.append("own-hbone-port: %d connections to B's HBONE port, expected 1 "
                                "(ours): B dialled itself" % n)
        finally:
            c.close()
        foreign = open_h2(hb, name="other-td")
        try:
            got, ended = send_connect(foreign, 1, fmt_addr(*echo.addr), "foreign-td")
            if got != "401" or not ended:
                failures.append("foreign-td: CONNECT %s from spiffe://other-td.local/... "
                                "answered %s, expected 401" % (fmt_addr(*echo.addr), got))
            else:
                log("CONNECT %-28s -> %s (peer of trust domain other-td.local)"
                    % (fmt_addr(*echo.addr), got))
        finally:
            foreign.close()
        cases.append(("foreign-td", None, "401", "denied", "trust domain other-td.local",
                      fmt_addr(*echo.addr), None))

        # The access log: one line per case, with its end and reason.
        try:
            entries = wait_access_kv(B, lambda e: e.get("client", "").startswith("case-"),
                                     len(cases), timeout=5.0, what="access lines of the cases")
        except Exception as e:  # noqa
            failures.append(str(e))
            entries = [e for e in proxy_access_kv(B) if e.get("client", "").startswith("case-")]
        by = {e["client"][len("case-"):]: e for e in entries}
        for label, _, _, end, words, target, _ in cases:
            e = by.get(label)
            if e is None:
                failures.append("%s: no access-log line" % label)
                continue
            r = reason_of(e)
            if e.get("end") != end or e.get("target") != target or not r or words not in r:
                failures.append("%s: access log end=%s target=%s reason=%r; expected end=%s "
                                "target=%s and a reason saying %r (line: %s)"
                                % (label, e.get("end"), e.get("target"), r, end, target, words,
                                   e["_line"]))
        time.sleep(0.3)  # a connection that was dialled is in its listener's queue by now
        for addr, s in sentinels.items():
            if s.accepted:
                failures.append("the sentinel on %s accepted %d connection(s): B dialled it"
                                % (addr, s.accepted))
        if echo.accepted:
            failures.append("the echo target accepted %d connection(s) before the allowed "
                            "CONNECT: B dialled a refused target" % echo.accepted)
        check(not failures, "%d problem(s):\n      %s" % (len(failures),
                                                           "\n      ".join(failures)))
        log("every refusal logged with its end and reason; no sentinel saw a connection")

        # What is allowed still works.
        c = open_h2(hb)
        try:
            got, _ = send_connect(c, 1, fmt_addr(*echo.addr), "allowed")
            check(got == "200", "allowed CONNECT %s answered %s, expected 200"
                  % (fmt_addr(*echo.addr), got))
            data = gen_bytes(11, 60000)
            for i in range(0, len(data), 16384):
                c.send(h2.data_frame(1, data[i:i + 16384], end_stream=i + 16384 >= len(data)))
            c.send(h2.window_update_frame(0, 1 << 24))
            f = c.wait_for(lambda f: f.stream == 1 and f.flags & h2.END_STREAM
                           and f.type in (h2.DATA, h2.HEADERS) or f.type in (h2.RST_STREAM,
                                                                             h2.GOAWAY),
                           CASE_TIMEOUT)
            got_data = bytes(c.data.get(1, b""))
            check(f is not None and f.type in (h2.DATA, h2.HEADERS) and got_data == data,
                  "allowed stream: echoed %d of %d bytes (equal: %s), end: %r"
                  % (len(got_data), len(data), got_data == data, f))
        finally:
            c.close()
        e = wait_access_kv(B, lambda e: e.get("client") == "case-allowed", 1,
                           what="access line of the allowed stream")[0]
        check(e.get("end") == "closed" and reason_of(e) is None and e.get("bytes_up") == 60000
              and e.get("bytes_down") == 60000,
              "allowed stream's access line: %s" % e["_line"])
        check(echo.accepted == 1, "echo target accepted %d connections, expected 1"
              % echo.accepted)
        log("allowed CONNECT %s: 200, 60000 bytes echoed byte-exact, end=closed, no reason"
            % fmt_addr(*echo.addr))
        B.stop_ok()
    finally:
        for s in servers:
            s.close()


def no_allow_dest():
    require_hbone()
    check(allow_dest_supported(), "the binary has no --allow-dest flag")
    echo = TargetServer(echo_handler)
    try:
        B = start_inbound(allow=[])
        c = open_h2(B.hbone_addr)
        try:
            got, ended = send_connect(c, 1, fmt_addr(*echo.addr), "none-allowed")
            check(got == "401" and ended, "CONNECT %s with no --allow-dest answered %s, "
                  "expected 401" % (fmt_addr(*echo.addr), got))
        finally:
            c.close()
        e = wait_access_kv(B, lambda e: e.get("client") == "case-none-allowed", 1,
                           what="access line of the refused stream")[0]
        check(e.get("end") == "denied" and "no --allow-dest" in (reason_of(e) or ""),
              "access line: %s" % e["_line"])
        time.sleep(0.3)
        check(echo.accepted == 0, "the echo target accepted %d connection(s)" % echo.accepted)
        notes = [line for line in B.stderr_text().splitlines()
                 if "no --allow-dest given" in line]
        check(len(notes) == 1, "start-up lines saying no --allow-dest is given: %d, expected 1"
              " (stderr tail:\n%s)" % (len(notes), B.stderr_tail(10)))
        log("no --allow-dest: %r; CONNECT -> 401, echo target untouched" % notes[0])
        B.stop_ok()
    finally:
        echo.close()


if __name__ == "__main__":
    binary()  # the usage message before anything else
    in_private_netns = enter_private_netns()
    log("in a private network namespace: %s" % ("yes" if in_private_netns else "NO"))
    run_tests("open-relay", [("relay-targets", relay_targets),
                             ("no-allow-dest", no_allow_dest)], 120)

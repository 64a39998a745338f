#!/usr/bin/env python3
"""Command line.

help: --help exits 0, and it, the flag table (src/config/flags.cc) and README's flag
      table name the same flags; README's default cell of every flag whose --help ends in
      "Default: X." reads X (backticks aside; a parenthesised gloss may follow).
version: --version exits 0 and prints something on stdout.
bad-usage: each malformed command line exits 2 within 5 s, with a message on
  stderr that names the flag and the offending value.
side-by-side: two instances with different --forward ports run at once, both
  print a 'listening' line and both relay; each one's access log has only its
  own connection.
access-log-destinations: --access-log PATH writes the line to PATH (not to
  stderr); --access-log off writes none; --access-log - writes to stderr.
embedded-default: inside a fresh network namespace (unshare --net, lo up), the
  binary with no flags relays 127.0.0.1:15001 -> 127.0.0.1:8080 and accepts HBONE
  on 127.0.0.1:15008 (TLS with ALPN h2 and the embedded development identity)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, binary, check, check_entry, echo_handler,  # noqa: E402
                     echo_roundtrip, fail, fmt_addr, forward_arg, free_port, log, reap,
                     run_tests, spawn, wait_until)
from harness import run_to_exit as run_binary  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def flag_re(flag):
    return re.compile(r"(?<![\w-])%s(?![\w-])" % re.escape(flag))


def table_flags():
    """The flags of the flag table in src/config/flags.cc (each entry starts {"--name", ...)."""
    with open(os.path.join(ROOT, "src", "config", "flags.cc")) as f:
        return set(re.findall(r'^\s*\{"(--[a-z0-9-]+)",', f.read(), re.M))


def readme_flags():
    """The flags named in the first column of README.md's flag table."""
    found = set()
    with open(os.path.join(ROOT, "README.md")) as f:
        for line in f:
            if line.startswith("| `--"):
                found.update(re.findall(r"`(--[a-z0-9-]+)", line.split("|")[1]))
    return found


def readme_cells(line):
    """The cells of a README table row; '\\|' inside a cell is not a separator."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def readme_defaults():
    """{flag: its README default cell, backticks removed}. A row naming several flags
    ("`--a`, `--b`") gives their defaults in that order, separated by ", "."""
    found = {}
    with open(os.path.join(ROOT, "README.md")) as f:
        for line in f:
            if not line.startswith("| `--"):
                continue
            cells = readme_cells(line)
            names = re.findall(r"`(--[a-z0-9-]+)", cells[0])
            cell = cells[-1].replace("`", "")
            parts = cell.split(", ") if len(names) > 1 else [cell]
            for i, name in enumerate(names):
                found.setdefault(name, []).append(parts[i] if len(parts) == len(names) else cell)
    return found


def help_defaults(out):
    """{flag: X} for each flag of --help whose description ends with "Default: X."."""
    sections, name = {}, None
    for line in out.splitlines():
        if line.startswith("  --"):
            name = line.split()[0]
            sections[name] = ""
        elif name and line.startswith("      "):
            sections[name] = (sections[name] + " " + line.strip()).strip()
        else:
            name = None
    found = {}
    for name, text in sections.items():
        m = re.search(r"(?:^| )Default: (.+)\.$", text)
        if m:
            found[name] = m.group(1)
    return found


def help_test():
    """--help, the flag table and README's flag table name the same flags, and README shows the
    defaults --help shows."""
    rc, out, err = run_binary(["--help"])
    check(rc == 0, "--help exit code %s, expected 0 (stderr %r)" % (rc, err[-300:]))
    table = table_flags()
    check(len(table) >= 20, "found only %d flags in src/config/flags.cc: %s" % (len(table), table))
    shown = set(re.findall(r"^  (--[a-z0-9-]+)", out, re.M))
    check(shown == table, "--help and the flag table differ: only in --help %s, only in the"
          " table %s" % (sorted(shown - table), sorted(table - shown)))
    readme = readme_flags()
    documented = table - {"--help", "--version"}
    check(readme == documented, "README's flag table and the flag table differ: only in README"
          " %s, missing from README %s" % (sorted(readme - documented),
                                          sorted(documented - readme)))
    defaults = help_defaults(out)
    check(len(defaults) >= 20, "only %d flags of --help end with \"Default: X.\": %s"
          % (len(defaults), sorted(defaults)))
    cells = readme_defaults()
    wrong = []
    for flag, value in sorted(defaults.items()):
        if flag not in cells:
            wrong.append("%s: no README row, --help %r" % (flag, value))
        for cell in cells.get(flag, []):
            # The value, alone or followed by a gloss: "- (stderr)".
            if cell != value and not cell.startswith(value + " ("):
                wrong.append("%s: README %r, --help %r" % (flag, cell, value))
    check(not wrong, "README's default cell disagrees with --help's \"Default: X.\":\n      %s"
          % "\n      ".join(wrong))
    log("--help: exit 0; --help, the flag table and README name the same %d flags; README shows"
        " the %d defaults of --help" % (len(table), len(defaults)))


def version_test():
    rc, out, err = run_binary(["--version"])
    check(rc == 0, "--version exit code %s, expected 0" % rc)
    check(out.strip(), "--version printed nothing on stdout")
    log("--version: exit 0, %r" % out.strip().splitlines()[0][:80])


def bad_usage_test():
    good = forward_arg(("127.0.0.1", free_port()), ("127.0.0.1", free_port()))
    # (args, flag the message must name, value the message must quote or None)
    cases = [
        (["--workers", "0"], "--workers", "0"),
        (["--workers", "abc"], "--workers", "abc"),
        (["--workers", "-3"], "--workers", "-3"),
        (["--workers"], "--workers", None),
        (["--ring-entries", "lots"], "--ring-entries", "lots"),
        (["--buffer-sizes", "1k,2k"], "--buffer-sizes", "1k,2k"),
        (["--buffer-sizes", "big,bigger,biggest"], "--buffer-sizes", "big"),
        (["--buffer-ring-entries", "x1"], "--buffer-ring-entries", "x1"),
        (["--registered-buffers", "maybe"], "--registered-buffers", "maybe"),
        (["--connect-timeout", "5"], "--connect-timeout", "5"),
        (["--connect-timeout", "soon"], "--connect-timeout", "soon"),
        (["--drain-timeout", "10parsecs"], "--drain-timeout", "10parsecs"),
        (["--access-log"], "--access-log", None),
        (["--bogus"], "--bogus", None),
        (["--forward", "127.0.0.1:1=http://x"], "--forward", "http"),
        (["--forward", "nonsense"], "--forward", "nonsense"),
        (["--forward", "127.0.0.1:70000=tcp://127.0.0.1:80"], "--forward", "70000"),
        (["--forward", "127.0.0.1:1=tcp://127.0.0.1"], "--forward", "127.0.0.1"),
        (["--forward"], "--forward", None),
    ]
    bad = []
    for args, flag, value in cases:
        # A valid --forward first (so a binary that wrongly accepts the line
        # binds a fresh port, not the default); a missing value stays last.
        full = (args if flag == "--forward" else ["--forward", good] + args)
        rc, out, err = run_binary(full, must_exit=False)
        problems = []
        if rc is None:
            problems.append("still running after 5 s (accepted the command line?), killed")
        elif rc != 2:
            problems.append("exit code %s (expected 2)" % rc)
        if not flag_re(flag).search(err):
            problems.append("stderr does not name %s" % flag)
        if value is not None and value not in err:
            problems.append("stderr does not quote the value %r" % value)
        if problems:
            bad.append("`%s`: %s; stderr: %r" % (" ".join(args), ", ".join(problems),
                                                  err.strip()[-200:]))
        else:
            log("`%s` -> exit 2, stderr: %s" % (" ".join(args), err.strip().splitlines()[0][:100]
                                                  if err.strip() else ""))
    check(not bad, "%d of %d bad usages mishandled:\n      %s"
          % (len(bad), len(cases), "\n      ".join(bad)))


def side_by_side_test():
    target = TargetServer(echo_handler)
    try:
        l1, l2 = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
        p1 = Proxy(["--forward", forward_arg(l1, target.addr)], listens=[l1])
        p2 = Proxy(["--forward", forward_arg(l2, target.addr)], listens=[l2])
        for p in (p1, p2):
            # The workers listen before the main thread logs it: wait a little for the line.
            try:
                wait_until(lambda: any("listening" in line for line in p.stderr_text().splitlines()),
                           5, what="the 'listening' line")
            except Exception:
                pass
            check(any("listening" in line for line in p.stderr_text().splitlines()),
                  "instance pid %d is listening but printed no line containing 'listening'"
                  % p.pid)
        c1 = echo_roundtrip(l1, seed=1)
        c2 = echo_roundtrip(l2, seed=2)
        e1 = p1.wait_access([c1])[c1]
        e2 = p2.wait_access([c2])[c2]
        check_entry(e1, listener=fmt_addr(*l1), end="closed")
        check_entry(e2, listener=fmt_addr(*l2), end="closed")
        check(len(p1.access()) == 1 and len(p2.access()) == 1,
              "each instance should have logged exactly its own connection")
        log("two instances (pids %d, %d) on %s and %s both relay, each logs its own connection"
            % (p1.pid, p2.pid, fmt_addr(*l1), fmt_addr(*l2)))
        p1.stop_ok()
        p2.stop_ok()
    finally:
        target.close()


def access_log_destinations_test():
    target = TargetServer(echo_handler)
    fd, path = tempfile.mkstemp(prefix="ringtunnel-it-access-", suffix=".log")
    os.close(fd)
    os.unlink(path)   # the binary creates it
    try:
        # to a file
        l = ("127.0.0.1", free_port())
        p = Proxy(["--access-log", path, "--forward", forward_arg(l, target.addr)], listens=[l])
        c = echo_roundtrip(l)
        e = p.wait_access([c], path=path)[c]
        check_entry(e, end="closed", bytes_up=100000, bytes_down=100000)
        p.stop_ok()
        check(not p.access(), "--access-log PATH: access lines also went to stderr")
        log("--access-log %s: the line is in the file, none on stderr" % path)
        # off
        l = ("127.0.0.1", free_port())
        p = Proxy(["--access-log", "off", "--forward", forward_arg(l, target.addr)], listens=[l])
        echo_roundtrip(l)
        p.stop_ok()
        check(not p.access(), "--access-log off: access lines were written to stderr")
        check(not any(line.startswith("access ") for line in p.stdout_text().splitlines()),
              "--access-log off: access lines were written to stdout")
        log("--access-log off: no access line anywhere")
        # explicit stderr
        l = ("127.0.0.1", free_port())
        p = Proxy(["--access-log", "-", "--forward", forward_arg(l, target.addr)], listens=[l])
        c = echo_roundtrip(l)
        p.wait_access([c])
        p.stop_ok()
        log("--access-log -: the line is on stderr")
    finally:
        target.close()
        try:
            os.unlink(path)
        except OSError:
            pass


def access_log_format_test():
    """The line is exactly the documented one: seven key=value fields in
    order, nothing more."""
    from harness import STRICT_ACCESS_RE
    target = TargetServer(echo_handler)
    try:
        l = ("127.0.0.1", free_port())
        p = Proxy(["--forward", forward_arg(l, target.addr)], listens=[l])
        c = echo_roundtrip(l, nbytes=1234)
        p.wait_access([c])
        p.stop_ok()
        lines = [x for x in p.stderr_text().splitlines() if x.startswith("access ")]
        check(len(lines) == 1, "expected 1 access line, got %d" % len(lines))
        want = ("access listener=%s client=%s target=%s bytes_up=1234 bytes_down=1234 "
                "duration_ms=N end=closed" % (fmt_addr(*l), c, fmt_addr(*target.addr)))
        check(STRICT_ACCESS_RE.match(lines[0]),
              "access line is not exactly of the documented form\n      got:  %r\n"
              "      want: %r" % (lines[0], want))
        log("access line is exactly: %s" % lines[0])
    finally:
        target.close()


NETNS_SCRIPT = r'''
import ctypes, os, signal, socket, subprocess, sys, tempfile, threading, time
binary, outer_ns = sys.argv[1], sys.argv[2]
proxy = None
def cleanup():
    if proxy is not None and proxy.poll() is None:
        proxy.kill(); proxy.wait()
def die(msg):
    print("FAIL: " + msg, flush=True); cleanup(); os._exit(1)
signal.signal(signal.SIGALRM, lambda *a: die("deadline inside the namespace expired"))
signal.signal(signal.SIGTERM, lambda *a: die("terminated by the outer test"))
signal.alarm(25)
if os.readlink("/proc/self/ns/net") == outer_ns:
    die("not in a new network namespace")
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
print("in new netns %s, lo up" % os.readlink("/proc/self/ns/net"), flush=True)
lst = socket.socket(); lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind(("127.0.0.1", 8080)); lst.listen(16)
accepted = []
def serve():
    c, _ = lst.accept(); accepted.append(1); c.settimeout(10)
    while True:
        b = c.recv(65536)
        if not b: break
        c.sendall(b)
    c.shutdown(socket.SHUT_WR); c.close()
threading.Thread(target=serve, daemon=True).start()
libc = ctypes.CDLL(None)
err = tempfile.TemporaryFile()
proxy = subprocess.Popen([binary], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=err, preexec_fn=lambda: libc.prctl(1, signal.SIGKILL, 0, 0, 0))
def listening(port=15001):
    with open("/proc/net/tcp") as f:
        return any(l.split()[1].endswith(":%04X" % port) and l.split()[3] == "0A"
                   for l in list(f)[1:])
end = time.monotonic() + 10
while not (listening() and listening(15008)):
    if proxy.poll() is not None:
        err.seek(0); die("ringtunnel with no flags exited %s: %r" % (proxy.returncode, err.read()[-500:]))
    if time.monotonic() > end:
        die("ringtunnel with no flags is not listening on 127.0.0.1:15001 after 10 s")
    time.sleep(0.02)
print("ringtunnel with no flags listens on 127.0.0.1:15001 and 127.0.0.1:15008", flush=True)
import ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["h2"])
with socket.create_connection(("127.0.0.1", 15008), timeout=10) as raw:
    with ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        if b"spiffe://cluster.local/ns/default/sa/node-a" not in der:
            die("the HBONE listener's certificate does not carry the development identity")
        if tls.selected_alpn_protocol() != "h2":
            die("the HBONE listener did not agree on ALPN h2")
def stderr_text():
    return open("/proc/%d/fd/2" % proxy.pid, "rb").read() if proxy.poll() is None else b""
end = time.monotonic() + 5
while b"embedded development identity" not in stderr_text():
    if time.monotonic() > end:
        die("no log line says the embedded development identity is in use: %r" % stderr_text()[-500:])
    time.sleep(0.05)
print("127.0.0.1:15008 speaks TLS 1.3 with ALPN h2 and the embedded development identity", flush=True)
data = os.urandom(100000)
s = socket.create_connection(("127.0.0.1", 15001), timeout=10)
me = "%s:%d" % s.getsockname()
s.sendall(data); s.shutdown(socket.SHUT_WR)
got = b""
while True:
    b = s.recv(65536)
    if not b: break
    got += b
s.close()
if got != data: die("echo via 127.0.0.1:15001 returned %d bytes, sent %d (or differs)" % (len(got), len(data)))
if accepted != [1]: die("target on 127.0.0.1:8080 accepted %d connections" % len(accepted))
print("127.0.0.1:15001 relayed 100000 bytes each way via the target on 127.0.0.1:8080", flush=True)
proxy.send_signal(signal.SIGTERM)
try: rc = proxy.wait(10)
except subprocess.TimeoutExpired: die("ringtunnel did not exit within 10 s of SIGTERM")
err.seek(0); text = err.read().decode(errors="replace")
want = "access listener=127.0.0.1:15001 client=%s target=127.0.0.1:8080 " % me
if not any(l.startswith(want) and " end=closed" in l for l in text.splitlines()):
    die("no access line starting %r ending end=closed; stderr: %r" % (want, text[-500:]))
if rc != 0: die("exit code %s after SIGTERM" % rc)
print("access log: listener=127.0.0.1:15001 target=127.0.0.1:8080 end=closed; exit 0", flush=True)
print("INNER-OK", flush=True)
'''


def embedded_default_test():
    for tool in ("unshare", "ip"):
        if not shutil.which(tool):
            fail("this test needs `%s` (util-linux / iproute2) to make a private network "
                 "namespace for the default 127.0.0.1:15001 / :8080 ports; it is not installed"
                 % tool)
    out = tempfile.TemporaryFile()
    p = spawn(["unshare", "--net", sys.executable, "-", binary(),
               os.readlink("/proc/self/ns/net")], stdin=subprocess.PIPE, stdout=out,
              stderr=subprocess.STDOUT)
    p.stdin.write(NETNS_SCRIPT.encode())
    p.stdin.close()
    try:
        p.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    rc = reap(p, term_timeout=3)
    out.seek(0)
    text = out.read().decode(errors="replace")
    for line in text.splitlines():
        if line != "INNER-OK":
            log("[netns] " + line)
    check(rc == 0 and "INNER-OK" in text.splitlines(),
          "embedded-default check in `unshare --net` failed (exit code %s)%s"
          % (rc, "" if text.strip() else "; no output -- can this user unshare --net?"))


if __name__ == "__main__":
    run_tests("cli", [
        ("help", help_test),
        ("version", version_test),
        ("bad-usage", bad_usage_test),
        ("side-by-side", side_by_side_test),
        ("access-log-destinations", access_log_destinations_test),
        ("access-log-format", access_log_format_test),
        ("embedded-default", embedded_default_test),
    ], 150)

#!/usr/bin/env python3
"""The harness leaves nothing behind.

Each sub-test runs a small test program that uses the harness (a certificate
directory from hbone_common.certs(), a proxy that relays, a temporary file it
never removes, a directory with a registered cleanup, a child that writes to
$TMPDIR) with TMPDIR set to an empty directory of its own, and then looks at
that directory:

passing-run-leaves-nothing: the program passes (exit 0; its sub-tests run in
  the order RINGTUNNEL_IT_ORDER=reverse asks for) and the directory is empty.
failing-run-prints-logs: a sub-test fails after its proxy relayed; exit 1, the
  output has the proxy's log (its access line) and the directory is empty.
  With RINGTUNNEL_IT_KEEP=1 the output names the directory the logs are kept
  in, that directory holds the proxy's stdout and stderr (with its access
  line), and the certificate directory is gone (registered cleanups ran).
watchdog-cleans-up: a sub-test hangs past the program's deadline; exit 1 from
  the watchdog, the proxy is dead, the directory is empty (with
  RINGTUNNEL_IT_KEEP=1: its logs are kept, the certificates are gone).
sigterm-cleans-up: the program is sent SIGTERM while a sub-test runs (as a
  runner's timeout does); exit 143, the proxy is dead, its log was printed,
  the directory is empty.
early-exit-cleans-up: the program exits before any test runs (no binary given,
  or RINGTUNNEL_IT_ONLY names no sub-test): exit 2 and the directory is empty.

access-parser: the one access-log parser reads a documented line (HBONE keys
  and a quoted reason included) and fails on each kind of malformed line.
  (The program needs no binary of its own here.)"""

import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import (TestFailure, binary, check, log, parse_access_kv,  # noqa: E402
                     parse_access_kv_line, reap, run_tests, run_to_exit, spawn)

PROGRAM = r'''
import os, shutil, sys, tempfile, time
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["RT_IT_DIR"])
import harness
import hbone_common
from harness import (Proxy, TargetServer, add_cleanup, echo_handler, echo_roundtrip, fail,
                     forward_arg, free_port, run_tests, run_to_exit)

mode = os.environ["RT_IT_MODE"]


def work():
    print("RUN_DIR=%s" % harness.RUN_DIR, flush=True)
    print("CERTS=%s" % hbone_common.certs(), flush=True)
    fd, _ = tempfile.mkstemp()            # never removed by the program
    os.write(fd, b"stray")
    os.close(fd)
    tempfile.TemporaryFile().close()
    d = tempfile.mkdtemp()
    add_cleanup(shutil.rmtree, d, True)
    rc, _, err = run_to_exit(["-c", "import tempfile; tempfile.mkstemp()"],
                             program=sys.executable)
    if rc != 0:
        fail("child exit code %s: %s" % (rc, err))
    target = TargetServer(echo_handler)
    try:
        listen = ("127.0.0.1", free_port())
        p = Proxy(["--forward", forward_arg(listen, target.addr)], listens=[listen])
        print("PROXY_PID=%d" % p.pid, flush=True)
        p.wait_access([echo_roundtrip(listen, nbytes=1000)])
        print("RELAYED", flush=True)
        if mode == "fail":
            fail("failing on purpose")
        if mode == "hang":
            time.sleep(120)
        p.stop_ok()
    finally:
        target.close()


run_tests("harness-" + mode, [("work", work), ("second", lambda: None)],
          10 if mode == "hang" else 60)
'''


def program_env(mode, env_extra, tag=""):
    """(program path, environment, its own empty TMPDIR) for PROGRAM in `mode`."""
    prog = os.path.join(harness.RUN_DIR, "program.py")
    if not os.path.exists(prog):
        with open(prog, "w") as f:
            f.write(PROGRAM)
    tmp = os.path.join(harness.RUN_DIR, "tmp-" + mode + tag)
    os.mkdir(tmp)
    env = dict(os.environ, TMPDIR=tmp, RT_IT_DIR=HERE, RT_IT_MODE=mode)
    for k in ("RINGTUNNEL_IT_ONLY", "RINGTUNNEL_IT_ORDER", "RINGTUNNEL_IT_KEEP", "RINGTUNNEL",
              "HBONE_ONLY"):
        env.pop(k, None)
    env.update(env_extra)
    return prog, env, tmp


def run_program(mode, env_extra=(), with_binary=True, tag=""):
    """Run PROGRAM in `mode` with TMPDIR an empty directory of its own; returns
    (rc, output, tmpdir)."""
    prog, env, tmp = program_env(mode, dict(env_extra), tag)
    rc, out, err = run_to_exit([prog] + ([binary()] if with_binary else []), timeout=90,
                               program=sys.executable, env=env)
    text = out + err
    for line in text.splitlines():
        log("| " + line)
    return rc, text, tmp


def value(text, key):
    m = re.search(r"^%s=(.*)$" % key, text, re.M)
    check(m, "the program did not print %s=" % key)
    return m.group(1)


def passing_run_leaves_nothing():
    rc, text, tmp = run_program("pass", {"RINGTUNNEL_IT_ORDER": "reverse"})
    run_dir = value(text, "RUN_DIR")
    check(os.path.dirname(run_dir) == tmp,
          "the run's directory %s is not in the program's TMPDIR %s" % (run_dir, tmp))
    left = sorted(os.listdir(tmp))
    check(not left, "a passing run left behind in its TMPDIR: %s" % ", ".join(left))
    check(rc == 0 and "all 2 passed" in text, "the program's exit code is %s, expected 0" % rc)
    check(text.index("--- second") < text.index("--- work"),
          "RINGTUNNEL_IT_ORDER=reverse did not run the sub-tests last first")
    log("a passing run (certificates, a proxy, a stray temporary file, a child writing to "
        "$TMPDIR) left its TMPDIR empty")


def kept_logs(text, tmp):
    m = re.search(r"logs kept in (\S+)", text)
    check(m, "the output does not say where the logs are kept")
    kept = m.group(1)
    check(os.path.dirname(kept) == tmp and os.path.isdir(kept),
          "logs said to be kept in %s, which is not a directory in %s" % (kept, tmp))
    check(os.listdir(tmp) == [os.path.basename(kept)],
          "besides the logs, left in TMPDIR: %s" % os.listdir(tmp))
    names = os.listdir(kept)
    check(not [n for n in names if n.startswith("ringtunnel-hbone-certs-")],
          "the certificate directory was not removed: %s" % names)
    errs = [n for n in names if n.startswith("proxy-") and n.endswith(".stderr")]
    check(len(errs) == 1 and [n for n in names if n.startswith("proxy-") and
                              n.endswith(".stdout")],
          "expected one proxy's stdout and stderr among the kept files: %s" % names)
    with open(os.path.join(kept, errs[0])) as f:
        check("access " in f.read(), "the kept stderr has no access line")
    return kept


def printed_logs_nothing_left(text, tmp):
    check("access listener=" in text,
          "the output does not show the proxy's log (its access line)")
    check(not os.listdir(tmp), "left in TMPDIR: %s" % os.listdir(tmp))


def proxy_dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = "gone"
    check(state in ("gone", "Z"), "the program's proxy (pid %d) is still running (state %s)"
          % (pid, state))


def failing_run_prints_logs():
    rc, text, tmp = run_program("fail")
    check(rc == 1 and "failing on purpose" in text,
          "the program's exit code is %s, expected 1 with its failure" % rc)
    printed_logs_nothing_left(text, tmp)
    rc, text, tmp = run_program("fail", {"RINGTUNNEL_IT_KEEP": "1"}, tag="-keep")
    check(rc == 1 and "failing on purpose" in text,
          "RINGTUNNEL_IT_KEEP=1: the program's exit code is %s, expected 1" % rc)
    kept = kept_logs(text, tmp)
    log("a failing run printed its proxy's log and left nothing; with RINGTUNNEL_IT_KEEP=1"
        " it kept the logs in %s and nothing else" % kept)


def watchdog_cleans_up():
    for env, tag in (({}, ""), ({"RINGTUNNEL_IT_KEEP": "1"}, "-keep")):
        rc, text, tmp = run_program("hang", env, tag=tag)
        check(rc == 1 and "global deadline" in text,
              "the program's exit code is %s, expected 1 from the watchdog" % rc)
        proxy_dead(int(value(text, "PROXY_PID")))
        if tag:
            kept = kept_logs(text, tmp)
        else:
            printed_logs_nothing_left(text, tmp)
    log("on the watchdog's path: the proxy was killed and nothing was left (with"
        " RINGTUNNEL_IT_KEEP=1: its logs kept in %s, nothing else)" % kept)


def sigterm_cleans_up():
    prog, env, tmp = program_env("hang", {}, tag="-sigterm")
    p = spawn([sys.executable, prog, binary()], env=env, stdout=subprocess.PIPE,
              stderr=subprocess.STDOUT)
    text = ""
    end = time.monotonic() + 30
    while "RELAYED" not in text and time.monotonic() < end:
        line = p.stdout.readline().decode(errors="replace")
        if not line:
            break
        text += line
    pid = int(value(text, "PROXY_PID"))
    p.send_signal(signal.SIGTERM)
    try:
        rest, _ = p.communicate(timeout=20)
    finally:
        reap(p)
    text += rest.decode(errors="replace")
    for line in text.splitlines():
        log("| " + line)
    check(p.returncode == 128 + signal.SIGTERM,
          "after SIGTERM the program exited %s, expected %d" % (p.returncode,
                                                              128 + signal.SIGTERM))
    proxy_dead(pid)
    printed_logs_nothing_left(text, tmp)
    log("SIGTERM in the middle of a sub-test: exit 143, the proxy killed, its log printed,"
        " nothing left")


def early_exit_cleans_up():
    rc, text, tmp = run_program("nobinary", with_binary=False)
    check(rc == 2, "the program without a binary exited %s, expected 2" % rc)
    check(not os.listdir(tmp), "an early exit left behind: %s" % os.listdir(tmp))
    rc, text, tmp = run_program("only", {"RINGTUNNEL_IT_ONLY": "no-such-test"})
    check(rc == 2 and "no-such-test" in text,
          "RINGTUNNEL_IT_ONLY=no-such-test: exit code %s, expected 2 naming it" % rc)
    check(not os.listdir(tmp), "an early exit left behind: %s" % os.listdir(tmp))
    log("exits before the first test (no binary; an unknown RINGTUNNEL_IT_ONLY name) "
        "exit 2 and leave nothing behind")


GOOD = ('access listener=127.0.0.1:15001 client=127.0.0.1:40000 target=127.0.0.1:8080'
        ' bytes_up=12 bytes_down=34 duration_ms=5 end=closed src_identity=spiffe://a/b'
        ' dst_identity=- reason="a \\"quoted\\" x=y" start=2026-01-02T03:04:05.678Z')


def access_parser():
    e = parse_access_kv_line(GOOD)
    check(e["client"] == "127.0.0.1:40000" and e["bytes_up"] == 12 and e["bytes_down"] == 34
          and e["duration_ms"] == 5 and e["end"] == "closed"
          and e["reason"] == '"a \\"quoted\\" x=y"' and "x" not in e
          and e["start"] == "2026-01-02T03:04:05.678Z", "parsed %r" % e)
    check(parse_access_kv_line("ringtunnel: listening") is None, "a log line parsed as access")
    check(len(parse_access_kv(GOOD + "\n" + GOOD[:60])) == 1,
          "a last line without its newline was parsed")
    bad = {
        "unknown end": GOOD.replace("end=closed", "end=finished"),
        "counter not a number": GOOD.replace("bytes_up=12", "bytes_up=1x"),
        "key missing": GOOD.replace(" duration_ms=5", ""),
        "keys out of order": GOOD.replace("client=127.0.0.1:40000 target=127.0.0.1:8080",
                                          "target=127.0.0.1:8080 client=127.0.0.1:40000"),
        "key twice": GOOD.replace(" end=closed", " end=closed end=closed"),
        "empty client": GOOD.replace("client=127.0.0.1:40000", "client="),
        "not key=value": GOOD + " trailing",
        "no start": GOOD[:GOOD.index(" start=")],
    }
    for what, line in bad.items():
        try:
            parse_access_kv_line(line)
        except TestFailure:
            continue
        check(False, "the parser accepted a line with %s: %r" % (what, line))
    log("the parser reads a documented line and fails on: %s" % ", ".join(bad))


if __name__ == "__main__":
    run_tests("harness", [
        ("passing-run-leaves-nothing", passing_run_leaves_nothing),
        ("failing-run-prints-logs", failing_run_prints_logs),
        ("watchdog-cleans-up", watchdog_cleans_up),
        ("sigterm-cleans-up", sigterm_cleans_up),
        ("early-exit-cleans-up", early_exit_cleans_up),
        ("access-parser", access_parser),
    ], 200)

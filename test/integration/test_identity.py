#!/usr/bin/env python3
"""The node identity at start-up: every bad --cert/--key/--ca is refused before anything
listens, with exit code 1 and a message that names the file and the reason; half a set of
identity flags is bad usage (exit 2). Certificates come from scripts/gen-certs.sh in a
temporary directory made on first use, so each case runs alone or in any order
(RINGTUNNEL_IT_ONLY, RINGTUNNEL_IT_ORDER); no case changes a file another one reads."""

import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, add_cleanup, check, fail, free_port, log, run_tests,  # noqa: E402
                     run_to_exit, wait_until)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 120
_pki = None


def pki():
    """The directory gen-certs.sh filled; made on first use, removed by the harness."""
    global _pki
    if _pki is None:
        d = tempfile.mkdtemp(prefix="rt-identity-")
        add_cleanup(shutil.rmtree, d, True)
        script = os.path.join(ROOT, "scripts", "gen-certs.sh")
        rc, out, err = run_to_exit([script, d], timeout=60, program="bash")
        if rc != 0:
            fail("test setup: %s %s failed (%d): %s" % (script, d, rc, (out + err)[-800:]))
        _pki = d
    return _pki


def p(name):
    return os.path.join(pki(), name)


def start(cert, key, ca):
    """Run the binary with these identity files; it must exit within 10 s.
    Returns (exit code, stderr)."""
    args = ["--hbone-listen", "127.0.0.1:%d" % free_port()]
    for flag, path in (("--cert", cert), ("--key", key), ("--ca", ca)):
        if path is not None:
            args += [flag, path]
    rc, _, err = run_to_exit(args, timeout=10)
    return rc, err


def refused(cert, key, ca, *needles):
    rc, err = start(cert, key, ca)
    check(rc == 1, "exit code %d, expected 1; stderr: %s" % (rc, err))
    for n in needles:
        check(n in err, "stderr does not say %r: %s" % (n, err.strip()))
    check("listening" not in err, "it started listening: %s" % err)
    log("refused: %s" % err.strip().splitlines()[-1])


def bad_files():
    refused(p("missing.crt"), p("node-a.key"), p("ca.crt"), p("missing.crt"), "cannot be opened")
    refused(p("expired.crt"), p("expired.key"), p("ca.crt"), p("expired.crt"), "expired")
    refused(p("not-yet-valid.crt"), p("not-yet-valid.key"), p("ca.crt"), "not valid before")
    refused(p("node-a.crt"), p("mismatch.key"), p("ca.crt"), p("mismatch.key"), "does not match")
    refused(p("no-spiffe.crt"), p("no-spiffe.key"), p("ca.crt"), p("no-spiffe.crt"), "URI SAN")
    refused(p("node-a.crt"), p("node-a.key"), p("node-a.key"), p("node-a.key"))


def unreadable_key():
    """A copy of node-a.key with mode 000 (the shared key stays readable)."""
    if os.geteuid() == 0:
        log("running as root, which reads a mode-000 file anyway: nothing to check")
        return
    key = p("unreadable.key")
    shutil.copyfile(p("node-a.key"), key)
    os.chmod(key, 0o000)
    refused(p("node-a.crt"), key, p("ca.crt"), key)


def half_a_set():
    rc, err = start(p("node-a.crt"), None, None)
    check(rc == 2, "exit code %d, expected 2; stderr: %s" % (rc, err))
    check("--cert, --key and --ca go together" in err, "stderr: %s" % err)
    log("--cert alone: exit 2, %s" % err.strip().splitlines()[0])


def good_files_start():
    addr = ("127.0.0.1", free_port())
    proxy = Proxy(["--hbone-listen", "%s:%d" % addr, "--cert", p("node-a.crt"),
                   "--key", p("node-a.key"), "--ca", p("ca.crt")], listens=[addr])
    wait_until(lambda: "for HBONE" in proxy.stderr_text(), 5, what="the 'for HBONE' log line")
    line = [x for x in proxy.stderr_text().splitlines() if "for HBONE" in x][0]
    check("spiffe://cluster.local/ns/default/sa/node-a" in line, "identity not logged: %s" % line)
    log("good files: %s" % line.strip())
    proxy.stop_ok()


if __name__ == "__main__":
    run_tests("identity", [("bad-files", bad_files), ("unreadable-key", unreadable_key),
                           ("half-a-set", half_a_set), ("good-files", good_files_start)],
              DEADLINE)

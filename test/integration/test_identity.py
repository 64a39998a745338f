#!/usr/bin/env python3
"""The node identity at start-up: every bad --cert/--key/--ca is refused before anything
listens, with exit code 1 and a message that names the file and the reason; half a set of
identity flags is bad usage (exit 2). Certificates come from scripts/gen-certs.sh in a
temporary directory."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import binary, check, free_port, log, run_tests  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 120
PKI = tempfile.mkdtemp(prefix="rt-identity-")


def make_pki():
    subprocess.run([os.path.join(ROOT, "scripts", "gen-certs.sh"), PKI], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def start(cert, key, ca):
    listen = "127.0.0.1:%d" % free_port()
    argv = [binary(), "--hbone-listen", listen]
    for flag, path in (("--cert", cert), ("--key", key), ("--ca", ca)):
        if path is not None:
            argv += [flag, path]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


def p(name):
    return os.path.join(PKI, name)


def refused(cert, key, ca, *needles):
    r = start(cert, key, ca)
    check(r.returncode == 1, "exit code %d, expected 1; stderr: %s" % (r.returncode, r.stderr))
    for n in needles:
        check(n in r.stderr, "stderr does not say %r: %s" % (n, r.stderr.strip()))
    check("listening" not in r.stderr, "it started listening: %s" % r.stderr)
    log("refused: %s" % r.stderr.strip().splitlines()[-1])


def bad_files():
    make_pki()
    refused(p("missing.crt"), p("node-a.key"), p("ca.crt"), p("missing.crt"), "cannot be opened")
    refused(p("expired.crt"), p("expired.key"), p("ca.crt"), p("expired.crt"), "expired")
    refused(p("not-yet-valid.crt"), p("not-yet-valid.key"), p("ca.crt"), "not valid before")
    refused(p("node-a.crt"), p("mismatch.key"), p("ca.crt"), p("mismatch.key"), "does not match")
    refused(p("no-spiffe.crt"), p("no-spiffe.key"), p("ca.crt"), p("no-spiffe.crt"), "URI SAN")
    refused(p("node-a.crt"), p("node-a.key"), p("node-a.key"), p("node-a.key"))
    os.chmod(p("node-a.key"), 0o000)
    try:
        if os.geteuid() != 0:  # root reads it anyway
            refused(p("node-a.crt"), p("node-a.key"), p("ca.crt"), p("node-a.key"))
    finally:
        os.chmod(p("node-a.key"), 0o600)


def half_a_set():
    r = start(p("node-a.crt"), None, None)
    check(r.returncode == 2, "exit code %d, expected 2" % r.returncode)
    check("--cert, --key and --ca go together" in r.stderr, "stderr: %s" % r.stderr)
    log("--cert alone: exit 2, %s" % r.stderr.strip().splitlines()[0])


def good_files_start():
    listen_port = free_port()
    proc = subprocess.Popen([binary(), "--hbone-listen", "127.0.0.1:%d" % listen_port,
                             "--cert", p("node-a.crt"), "--key", p("node-a.key"), "--ca", p("ca.crt")],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "for HBONE" not in line:
            line = proc.stderr.readline()
            check(line != "", "exited before listening (code %s)" % proc.poll())
        check("spiffe://cluster.local/ns/default/sa/node-a" in line, "identity not logged: %s" % line)
        log("good files: %s" % line.strip())
    finally:
        proc.terminate()
        check(proc.wait(timeout=15) == 0, "exit code on SIGTERM: %s" % proc.returncode)


if __name__ == "__main__":
    try:
        run_tests("identity", [("bad-files", bad_files), ("half-a-set", half_a_set),
                               ("good-files", good_files_start)], DEADLINE)
    finally:
        shutil.rmtree(PKI, ignore_errors=True)

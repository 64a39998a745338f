"""Shared pieces of the HBONE integration tests: a development PKI made with
scripts/gen-certs.sh into a temporary directory (once per test file), the
SPIFFE IDs, the command lines of an outbound proxy (A) and an inbound one (B),
and small checks on their logs."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

from harness import (CHUNK, Proxy, add_cleanup, binary, check, fail, fmt_addr, free_port,
                     proxy_access_kv, run_to_exit)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TD = "cluster.local"


def spiffe(name, td=TD):
    return "spiffe://%s/ns/default/sa/%s" % (td, name)


ID_A = spiffe("node-a")
ID_B = spiffe("node-b")

_certs = None


def certs():
    """Directory with ca.crt, node-a.crt/.key, node-b.crt/.key, other-ca.crt,
    other-node.crt/.key, other-td.crt/.key, ... made by scripts/gen-certs.sh
    (removed by the harness's cleanup before the run exits)."""
    global _certs
    if _certs is None:
        d = tempfile.mkdtemp(prefix="ringtunnel-hbone-certs-")
        add_cleanup(shutil.rmtree, d, True)
        script = os.path.join(ROOT, "scripts", "gen-certs.sh")
        rc, out, err = run_to_exit([script, d, TD], timeout=60, program="bash")
        if rc != 0:
            fail("test setup: %s %s failed (%d): %s" % (script, d, rc, (out + err)[-800:]))
        _certs = d
    return _certs


def cert(name):
    return os.path.join(certs(), name + ".crt")


def key(name):
    return os.path.join(certs(), name + ".key")


def ca(name="ca"):
    return cert(name)


def identity_args(name, ca_name="ca"):
    return ["--cert", cert(name), "--key", key(name), "--ca", ca(ca_name)]


def hbone_forward_arg(listen, peer, target, identity):
    """'LISTEN=hbone://PEER/TARGET?identity=SPIFFE_ID'."""
    return "%s=hbone://%s/%s?identity=%s" % (fmt_addr(*listen), fmt_addr(*peer),
                                            fmt_addr(*target), identity)


def hbone_supported():
    """True if the binary's --help names --hbone-listen."""
    r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=10)
    return b"--hbone-listen" in r.stdout


_sanitized = None


def sanitized():
    """True if the binary is built with AddressSanitizer: its allocator keeps
    freed memory in a quarantine (256 MiB by default), so VmRSS bounds meant
    for the release build do not apply."""
    global _sanitized
    if _sanitized is None:
        with open(binary(), "rb") as f:
            data = f.read()
        _sanitized = b"__asan_init" in data or b"AddressSanitizer" in data
    return _sanitized


def rss_slack_kib(release_kib=64 * 1024):
    """The allowed VmRSS growth: `release_kib`, or 384 MiB more under ASan."""
    return release_kib + (384 * 1024 if sanitized() else 0)


def require_hbone():
    check(hbone_supported(), "the binary's --help has no --hbone-listen: HBONE not built in")


def debug_args():
    """Every HBONE proxy of the tests poisons each receive buffer it gives back
    (--debug-poison-buffers), so that a buffer released while still referenced
    shows up as corrupt bytes in the transfers the tests check byte for byte."""
    try:
        out = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return ["--debug-poison-buffers"] if b"--debug-poison-buffers" in out else []


# The tests' targets are all on loopback, which --allow-dest must name explicitly.
LOOPBACK_ALLOW = ["--allow-dest", "127.0.0.0/8", "--allow-dest", "[::1]/128"]


def start_inbound(extra=(), name="node-b", port=None, wait=True, allow=LOOPBACK_ALLOW):
    """Proxy B: --hbone-listen 127.0.0.1:port with node-b's identity, allowed
    to dial loopback targets (`allow`)."""
    addr = ("127.0.0.1", port or free_port())
    p = Proxy(["--hbone-listen", fmt_addr(*addr)] + list(allow) + identity_args(name)
              + debug_args() + list(extra), listens=[addr], wait=wait)
    p.hbone_addr = addr
    return p


def start_outbound(forwards, extra=(), name="node-a"):
    """Proxy A: forwards = [(listen, peer, target, identity)]."""
    args = []
    for listen, peer, target, ident in forwards:
        args += ["--forward", hbone_forward_arg(listen, peer, target, ident)]
    p = Proxy(args + identity_args(name) + debug_args() + list(extra),
              listens=[f[0] for f in forwards])
    return p


def stderr_reason_lines(proxy, words, after=0):
    """Non-access lines of the proxy's stderr (from character `after` on) that
    contain any of `words` (case-insensitive)."""
    out = []
    for line in proxy.stderr_text()[after:].splitlines():
        if line.startswith("access "):
            continue
        low = line.lower()
        if any(w.lower() in low for w in words):
            out.append(line)
    return out


def entries_for(proxy, since=0, **want):
    return [e for e in proxy_access_kv(proxy, since)
            if all(e.get(k) == v for k, v in want.items())]


def duplex(sock, data, expect_len, timeout=60.0, shut=True):
    """Send `data` (then SHUT_WR) in a thread while reading to EOF here;
    returns (n_received, sha256hex, send_error)."""
    import hashlib
    err = []

    def sender():
        try:
            mv = memoryview(data)
            for i in range(0, len(mv), CHUNK):
                sock.sendall(mv[i:i + CHUNK])
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except Exception as e:   # noqa
            err.append(e)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    h = hashlib.sha256()
    n = 0
    sock.settimeout(timeout)
    while True:
        b = sock.recv(CHUNK)
        if not b:
            break
        h.update(b)
        n += len(b)
        if n > expect_len:
            fail("received more than the %d bytes expected" % expect_len)
    t.join(timeout)
    return n, h.hexdigest(), (err[0] if err else None)


def proc_rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def traceparent_ok(v):
    return re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", v or "") is not None \
        and v[3:35] != "0" * 32 and v[36:52] != "0" * 16


def wait_port_free(port, timeout=10.0):
    """Until nothing LISTENs on port (after a proxy died)."""
    from harness import tcp_listen_ports
    end = time.monotonic() + timeout
    while any(p == port for _, p in tcp_listen_ports()):
        if time.monotonic() > end:
            fail("port %d still listening %.0f s later" % (port, timeout))
        time.sleep(0.05)

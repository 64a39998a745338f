#!/usr/bin/env python3
"""Certificate rotation: --cert/--key/--ca are watched and re-read on SIGHUP.

Each case issues its own node-b certificates from gen-certs.sh's CA, all with node-b's SPIFFE ID
and a known serial number (0x1001, 0x1002, ...), each with a key of its own, and starts B
(--hbone-listen on loopback) with them; A (--forward hbone://) tunnels to an echo target through
B. "Served serial" is what a TLS 1.3 client (Python's ssl, with node-a's certificate and the CA)
reads from B's certificate in a new handshake.

rename-over: new cert and key renamed over the files -> "reloaded ... serial 1002" and the next
  handshake presents 1002; a stream opened through A before the rotation keeps echoing after
  it, and a new stream through A still works.
broken-pair: a key that is not the certificate's, a certificate of another SPIFFE ID (node-a),
  an expired one, a file that is not PEM: each logs one line naming the file and the reason and
  "keeping the certificate with serial 1001"; handshakes still present 1001. A good pair then
  replaces it (the watch survived the refusals).
secret-swap: the files are links through a "..data" link, as a Kubernetes secret volume lays
  them out; swapping "..data" to a new directory rotates to 1002.
sighup: the cert and key are links into a directory nobody watches, edited in place: nothing
  changes until SIGHUP, which rotates to 1002; SIGHUP again logs "unchanged".
expiry-warning: a certificate valid for one day is warned about at start-up (once: "expires
  on ... in N minutes"); rotating to a ten-year one ends the warnings, and rotating back to a
  one-day one warns again.
ops-with-certs: with --cert and no --config, readiness is 200 before and after a rotation and
  POST /quitquitquit drains and exits 0 (the certificate watch shares the main thread's wait)."""

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, check, fail, free_port, log, run_tests,  # noqa: E402
                     wait_until)
from hbone_common import (ID_B, LOOPBACK_ALLOW, ca, cert, debug_args,  # noqa: E402
                          hbone_forward_arg, identity_args, key, require_hbone, spiffe)

DEADLINE = 150


def echo_handler(conn, peer):
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)


def openssl(*args):
    r = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    if r.returncode != 0:
        fail("openssl %s: %s" % (" ".join(args[:2]), r.stderr.decode()[-400:]))


def issue(d, name, serial, sa="node-b", days=30):
    """d/name.crt and d/name.key: a new key and a certificate for spiffe(sa), signed by the
    development CA, with this serial number."""
    os.makedirs(d, exist_ok=True)
    k, c, csr, ext = (os.path.join(d, name + s) for s in (".key", ".crt", ".csr", ".ext"))
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k)
    openssl("req", "-new", "-key", k, "-subj", "/O=ringtunnel/CN=%s-%x" % (sa, serial), "-out", csr)
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=URI:%s\n" % spiffe(sa))
    openssl("x509", "-req", "-in", csr, "-CA", ca(), "-CAkey", key("ca"), "-set_serial",
            str(serial), "-days", str(days), "-sha256", "-extfile", ext, "-out", c)
    return c, k


def copy_over(src, dst):
    """Writes src's bytes to a temporary file beside dst and renames it over dst."""
    tmp = dst + ".tmp"
    shutil.copyfile(src, tmp)
    os.rename(tmp, dst)


def served_serial(addr):
    """The serial number of the certificate B presents in a new TLS handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # a SPIFFE URI SAN, no host name
    ctx.load_verify_locations(ca())
    ctx.load_cert_chain(cert("node-a"), key("node-a"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(addr, timeout=5) as raw:
        with ctx.wrap_socket(raw) as t:
            return int(t.getpeercert()["serialNumber"], 16)


def wait_serial(addr, want, timeout=5.0):
    got = []

    def ok():
        got.append(served_serial(addr))
        return got[-1] == want
    wait_until(ok, timeout, interval=0.1, what="B to serve serial %x" % want)


def wait_line(p, needle, count=1, timeout=5.0):
    wait_until(lambda: p.stderr_text().count(needle) >= count, timeout,
               what="%r in B's log" % needle)


def echo(s, n, tag):
    data = bytes([tag]) * n
    s.sendall(data)
    got = b""
    while len(got) < n:
        piece = s.recv(65536)
        check(piece, "EOF after %d of %d echoed bytes" % (len(got), n))
        got += piece
    check(got == data, "echo differs")


class Node:
    """B serving node-b credentials from files in `d` (cert.pem, key.pem; the CA from
    gen-certs.sh), an echo target, and A forwarding to it through B."""

    def __init__(self, d, extra=()):
        self.target = TargetServer(echo_handler)
        self.addr = ("127.0.0.1", free_port())
        self.p = Proxy(["--hbone-listen", "%s:%d" % self.addr] + LOOPBACK_ALLOW +
                       ["--cert", os.path.join(d, "cert.pem"), "--key", os.path.join(d, "key.pem"),
                        "--ca", ca()] + debug_args() + list(extra), listens=[self.addr])
        self.a_listen = ("127.0.0.1", free_port())
        self.a = Proxy(["--forward", hbone_forward_arg(self.a_listen, self.addr,
                                                       ("127.0.0.1", self.target.addr[1]), ID_B)]
                       + identity_args("node-a") + debug_args(), listens=[self.a_listen])

    def stop(self):
        self.a.stop_ok()
        self.p.stop_ok()
        self.target.close()


def pair_dir(c, k):
    d = tempfile.mkdtemp(prefix="creds-")
    shutil.copyfile(c, os.path.join(d, "cert.pem"))
    shutil.copyfile(k, os.path.join(d, "key.pem"))
    return d


def rename_over():
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001)
    c2, k2 = issue(w, "b2", 0x1002)
    d = pair_dir(c1, k1)
    n = Node(d)
    check(served_serial(n.addr) == 0x1001, "B does not serve serial 1001 at start")
    s = socket.create_connection(n.a_listen, timeout=10)
    echo(s, 100000, 1)
    copy_over(k2, os.path.join(d, "key.pem"))
    copy_over(c2, os.path.join(d, "cert.pem"))
    wait_line(n.p, "serial 1002")
    wait_serial(n.addr, 0x1002)
    reloads = [ln for ln in n.p.stderr_text().splitlines() if "identity: reloaded" in ln]
    log("B: %s" % reloads[-1])
    echo(s, 100000, 2)
    log("a stream opened before the rotation echoed 100000 bytes after it")
    s2 = socket.create_connection(n.a_listen, timeout=10)
    echo(s2, 1000, 3)
    s2.close()
    s.close()
    check(served_serial(n.addr) == 0x1002, "B serves another serial again")
    n.stop()


def broken_pair():
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001)
    c2, k2 = issue(w, "b2", 0x1002)
    ca_, ka = issue(w, "a1", 0x2001, sa="node-a")
    d = pair_dir(c1, k1)
    n = Node(d)
    cert_path, key_path = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    junk = os.path.join(w, "junk.pem")
    with open(junk, "w") as f:
        f.write("this is not a certificate\n")
    cases = [
        ("a key that is not the certificate's", [(k2, key_path)], key_path,
         "does not match the certificate"),
        ("another SPIFFE ID", [(ka, key_path), (ca_, cert_path)], cert_path,
         "the certificate's identity is %s" % spiffe("node-a")),
        ("an expired certificate", [(key("expired"), key_path), (cert("expired"), cert_path)],
         cert_path, "the certificate expired on"),
        ("not PEM", [(k1, key_path), (junk, cert_path)], cert_path, "is not PEM"),
    ]
    count = 0
    for what, writes, named, reason in cases:
        before = len(n.p.stderr_text())
        for src, dst in writes:
            copy_over(src, dst)
        count += 1
        wait_line(n.p, "keeping the certificate with serial 1001", count)
        lines = [ln for ln in n.p.stderr_text()[before:].splitlines()
                 if "keeping the certificate with serial 1001" in ln]
        check(any(named in ln and reason in ln for ln in lines),
              "%s: no line names %s and %r: %r" % (what, named, reason, lines))
        check(served_serial(n.addr) == 0x1001, "%s: B no longer serves serial 1001" % what)
        log("%s: %s" % (what, [ln for ln in lines if reason in ln][0]))
        # The mismatched pair's key stays: let each case start from the good pair's bytes
        # without a second refusal line (the next writes replace both files).
        time.sleep(0.3)
        count = n.p.stderr_text().count("keeping the certificate with serial 1001")
    check("reloaded" not in n.p.stderr_text(), "B reloaded a broken pair")
    copy_over(k2, key_path)
    copy_over(c2, cert_path)
    wait_serial(n.addr, 0x1002)
    log("a good pair afterwards: B serves serial 1002")
    s = socket.create_connection(n.a_listen, timeout=10)
    echo(s, 1000, 4)
    s.close()
    n.stop()


def secret_swap():
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001)
    c2, k2 = issue(w, "b2", 0x1002)
    d = tempfile.mkdtemp(prefix="secret-")
    for version, (c, k) in (("..v1", (c1, k1)), ("..v2", (c2, k2))):
        os.mkdir(os.path.join(d, version))
        shutil.copyfile(c, os.path.join(d, version, "cert.pem"))
        shutil.copyfile(k, os.path.join(d, version, "key.pem"))
    os.symlink("..v1", os.path.join(d, "..data"))
    for name in ("cert.pem", "key.pem"):
        os.symlink(os.path.join("..data", name), os.path.join(d, name))
    n = Node(d)
    check(served_serial(n.addr) == 0x1001, "B does not serve serial 1001 at start")
    os.symlink("..v2", os.path.join(d, "..data_tmp"))
    os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
    wait_serial(n.addr, 0x1002)
    log("..data swapped to ..v2: B serves serial 1002")
    n.stop()


def sighup():
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001)
    c2, k2 = issue(w, "b2", 0x1002)
    real = pair_dir(c1, k1)
    d = tempfile.mkdtemp(prefix="watched-")
    for name in ("cert.pem", "key.pem"):
        os.symlink(os.path.join(real, name), os.path.join(d, name))
    n = Node(d)
    # Edited in place, in a directory nobody watches.
    for src, name in ((k2, "key.pem"), (c2, "cert.pem")):
        with open(src, "rb") as f, open(os.path.join(real, name), "wb") as g:
            g.write(f.read())
    time.sleep(0.5)
    check(served_serial(n.addr) == 0x1001, "B rotated without a signal it could not see")
    n.p.signal(signal.SIGHUP)
    wait_serial(n.addr, 0x1002)
    log("SIGHUP: B serves serial 1002")
    n.p.signal(signal.SIGHUP)
    wait_line(n.p, "are unchanged; keeping serial 1002")
    check(n.p.alive(), "SIGHUP ended B")
    n.stop()


def expiry_warning():
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001, days=1)
    c2, k2 = issue(w, "b2", 0x1002, days=3650)
    c3, k3 = issue(w, "b3", 0x1003, days=1)
    d = pair_dir(c1, k1)
    n = Node(d)
    needle = "identity: warning: the certificate %s (serial 1001) expires on" % \
        os.path.join(d, "cert.pem")
    wait_line(n.p, needle)
    line = [ln for ln in n.p.stderr_text().splitlines() if needle in ln][0]
    log("B: %s" % line)
    for k, c, serial in ((k2, c2, 0x1002), (k3, c3, 0x1003)):
        copy_over(k, os.path.join(d, "key.pem"))
        copy_over(c, os.path.join(d, "cert.pem"))
        wait_serial(n.addr, serial)
    wait_line(n.p, "(serial 1003) expires on")
    time.sleep(0.3)
    text = n.p.stderr_text()
    check(text.count("expires on") == 2 and "(serial 1002) expires" not in text,
          "expiry warnings: %r" % [ln for ln in text.splitlines() if "expires" in ln])
    log("one warning per one-day certificate, none for the ten-year one")
    n.stop()


def http(port, method, path):
    """(status, body) of one HTTP/1.1 request to 127.0.0.1:port."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (method, path, port)).encode())
        out = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            out += piece
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def ops_with_certs():
    """Without --config the certificate watch runs the main thread's wait: readiness stays 200
    across a rotation, and POST /quitquitquit still drains and exits 0."""
    require_hbone()
    w = tempfile.mkdtemp(prefix="issued-")
    c1, k1 = issue(w, "b1", 0x1001)
    c2, k2 = issue(w, "b2", 0x1002)
    d = pair_dir(c1, k1)
    admin, readiness = free_port(), free_port()
    n = Node(d, ["--admin-listen", "127.0.0.1:%d" % admin,
                 "--readiness-listen", "127.0.0.1:%d" % readiness])
    wait_until(lambda: http(readiness, "GET", "/healthz/ready")[0] == 200, 5, what="readiness")

    def dumped_serial():
        status, body = http(admin, "GET", "/config_dump")
        check(status == 200, "GET /config_dump: %d" % status)
        return int(json.loads(body)["certificates"]["chain"][0]["serial"], 16)
    check(dumped_serial() == 0x1001, "config_dump before the rotation")
    copy_over(k2, os.path.join(d, "key.pem"))
    copy_over(c2, os.path.join(d, "cert.pem"))
    wait_serial(n.addr, 0x1002)
    check(http(readiness, "GET", "/healthz/ready")[0] == 200, "not ready after the rotation")
    check(dumped_serial() == 0x1002, "config_dump after the rotation")
    # A refused certificate on disk: /config_dump shows the one in use, not the file.
    copy_over(cert("expired"), os.path.join(d, "cert.pem"))
    wait_line(n.p, "keeping the certificate with serial 1002", 1)
    check(dumped_serial() == 0x1002, "config_dump shows the refused file, not the one in use")
    log("config_dump follows the certificate in use: 1001, 1002, still 1002 with an expired "
        "one on disk")
    status, body = http(admin, "POST", "/quitquitquit")
    check(status == 200, "POST /quitquitquit: %d %r" % (status, body))
    rc = n.p.wait_exit(10)
    check(rc == 0, "exit code %s after /quitquitquit" % rc)
    log("ready across the rotation; /quitquitquit: exit 0")
    n.a.stop_ok()
    n.target.close()


TESTS = [
    ("rename-over", rename_over),
    ("broken-pair", broken_pair),
    ("secret-swap", secret_swap),
    ("sighup", sighup),
    ("expiry-warning", expiry_warning),
    ("ops-with-certs", ops_with_certs),
]

if __name__ == "__main__":
    run_tests("certificate rotation", TESTS, DEADLINE)

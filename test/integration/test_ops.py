#!/usr/bin/env python3
"""The operating listeners: readiness, admin, and hostile clients on all three ports.

Every ringtunnel here listens on loopback only, with its three operating listeners
(--metrics-listen, --readiness-listen, --admin-listen) on free 127.0.0.1 ports.

ready-then-draining: --workers 2 and a --forward listener. GET /healthz/ready
reaches 200 "ready" within 10 s of start; the metrics listener answers GET
/metrics with 200 and the text format (test_metrics.py checks what); a connection through the forward moves 1 MiB each way and stays
open; after SIGTERM readiness answers 503 "draining" (polled while the process
still runs, the connection still open); the connection still relays, closes,
and the process exits 0. /config_dump without --config has empty workloads,
services and policies and no certificate.

config-dump: --config (the local workload and two more, a service, a policy)
and the node-a identity. /config_dump parses with json.loads and holds the
three workloads by name, the service's hostname and VIP, the policy, the
flags (--workers 1, --config PATH, --hbone-listen [ADDR], --admin-listen ADDR),
and the certificate chain: the leaf's serial equals `openssl x509 -serial` of
the file, its identity is node-a's SPIFFE ID, notAfter is openssl's enddate.

logging-level: GET /logging says info; requests at info write no debug line;
POST /logging?level=debug -> 200, after which each request writes its debug
line ("ringtunnel: ops: --readiness-listen PEER GET /healthz/ready -> 200");
POST ?level=verbose -> 400 naming "error, warn, info or debug" (level stays
debug); POST without level -> 400; GET /logging?level=x -> 405.

quitquitquit: GET /quitquitquit -> 405 (the process stays); POST
/quitquitquit -> 200 "draining", the log says "/quitquitquit received,
draining" and "stopped", and the process exits 0 within 5 s.

listen-failure: an --admin-listen address already taken -> exit 1 within 10 s,
naming the flag, the address and "Address already in use"; an admin address
that is not loopback (192.0.2.1, not on this host: nothing is sent) is warned
about before the listen fails.

Hostile clients, each case on a fresh ringtunnel that must still be ready after
it and exit 0. hostile-requests: on each of the three ports: a head over 8 KiB
-> 431; garbage or binary -> 400; PUT -> 405; a body (Content-Length: 5) ->
413; an unknown path -> 404; every response with Content-Type, a matching
Content-Length and Connection: close. slow-clients: clients sending one byte a
second, on all three ports at once, get 408 between 4.5 and 7 s after
connecting, while a normal readiness request made meanwhile is answered within
1 s. idle-flood: 100 idle connections on the admin and metrics ports each:
36 of each are closed at once (the cap is 64 per listener), readiness
still answers within 1 s meanwhile, and within 10 s the flooded ports serve again
(the idle ones got 408). The process exits 0 at the end."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, TestFailure, add_cleanup, check, connect, echo_handler,  # noqa: E402
                     fail, forward_arg, free_port, gen_bytes, log, recv_exact, run_tests,
                     run_to_exit, wait_until)
from hbone_common import ID_A, cert, identity_args  # noqa: E402

DEADLINE = 200
LOCAL = "default/vm-a/node-a"
MIB = 1024 * 1024


def ops_ports():
    return {"metrics": free_port(), "readiness": free_port(), "admin": free_port()}


def ops_args(ports):
    return ["--metrics-listen", "127.0.0.1:%d" % ports["metrics"],
            "--readiness-listen", "127.0.0.1:%d" % ports["readiness"],
            "--admin-listen", "127.0.0.1:%d" % ports["admin"]]


def exchange(port, data, timeout=5.0):
    """Sends `data` to 127.0.0.1:port, reads to EOF; returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                fail("port %d: no complete answer within %.0f s to %r (got %r)"
                     % (port, timeout, data[:60], out[:200]))
            if not b:
                break
            out += b
    finally:
        s.close()
    return parse_response(out)


def parse_response(out):
    head, sep, body = out.partition(b"\r\n\r\n")
    check(sep, "no complete HTTP response: %r" % out[:300])
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", lines[0])
    check(m, "bad status line %r" % lines[0])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    check(headers.get("connection") == "close", "no Connection: close in %r" % headers)
    check(int(headers.get("content-length", -1)) == len(body),
          "Content-Length %s, body %d bytes" % (headers.get("content-length"), len(body)))
    check("content-type" in headers, "no Content-Type in %r" % headers)
    return int(m.group(1)), headers, body.decode("utf-8", "replace")


def request(port, method, path, timeout=5.0, headers=""):
    """As curl sends it: Host is the address and port asked for."""
    return exchange(port, ("%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n"
                           % (method, path, port, headers)).encode(), timeout)


def ready(port):
    try:
        return request(port, "GET", "/healthz/ready", 2.0)
    except OSError:
        return None


def start_forward(ports, extra=()):
    target = TargetServer(echo_handler)
    add_cleanup(target.close)
    listen = ("127.0.0.1", free_port())
    p = Proxy(["--workers", "2", "--forward", forward_arg(listen, target.addr)] + ops_args(ports)
              + list(extra), listens=[listen] + [("127.0.0.1", v) for v in ports.values()])
    return p, listen


def wait_ready(p, ports):
    wait_until(lambda: (ready(ports["readiness"]) or (0,))[0] == 200, 10,
               what="readiness 200; stderr:\n%s" % p.stderr_tail())
    status, _, body = ready(ports["readiness"])
    check(body == "ready\n", "readiness body %r" % body)


def ready_then_draining_test():
    ports = ops_ports()
    p, listen = start_forward(ports, ["--drain-timeout", "20s"])
    wait_ready(p, ports)
    log("readiness: 200 \"ready\" once up")
    status, _, body = request(ports["metrics"], "GET", "/metrics")
    check(status == 200 and "# TYPE istio_tcp_connections_opened_total counter" in body,
          "GET /metrics: %d, %r" % (status, body[:200]))
    status, _, body = request(ports["admin"], "GET", "/config_dump")
    check(status == 200, "config_dump %d" % status)
    dump = json.loads(body)
    check(dump["workloads"] == [] and dump["services"] == [] and dump["policies"] == [],
          "without --config: %r" % {k: dump[k] for k in ("workloads", "services", "policies")})
    check(dump["certificates"]["chain"] == [], "a TCP-only proxy shows a certificate")
    c = connect(listen)
    data = gen_bytes(1, MIB)
    c.sendall(data)
    check(recv_exact(c, MIB) == data, "1 MiB echoed")
    p.signal(signal.SIGTERM)
    seen = []
    end = time.monotonic() + 5
    while time.monotonic() < end:
        r = ready(ports["readiness"])
        if r:
            seen.append(r[:1] + (r[2],))
            if r[0] == 503:
                break
        time.sleep(0.05)
    check(seen and seen[-1] == (503, "draining\n"),
          "readiness after SIGTERM: %r, expected 503 \"draining\"" % seen[-3:])
    check(p.alive(), "the process exited with a connection open")
    log("after SIGTERM, with a connection open: readiness 503 \"draining\"")
    c.sendall(data)
    check(recv_exact(c, MIB) == data, "1 MiB echoed during the drain")
    c.close()
    check(p.wait_exit(10) == 0, "exit code %s" % p.proc.returncode)
    log("the connection relayed during the drain; exit 0")


def mesh_yaml():
    return "\n".join([
        "workloads:",
        "- uid: cluster1//v1/Pod/default/vm-a",
        "  name: vm-a",
        "  namespace: default",
        "  serviceAccount: node-a",
        "  workloadIps: [\"127.0.0.1\"]",
        "  protocol: HBONE",
        "  services:",
        "    default/web.default.svc.cluster.local: {80: 8080}",
        "- uid: cluster1//v1/Pod/default/app-0",
        "  name: app-0",
        "  namespace: default",
        "  workloadIps: [\"127.0.1.1\"]",
        "  services: {}",
        "- uid: cluster1//v1/Pod/prod/db-\"quoted\"",
        "  name: db-0",
        "  namespace: prod",
        "  workloadIps: [\"127.0.1.2\"]",
        "  services: {}",
        "services:",
        "- name: web",
        "  namespace: default",
        "  hostname: web.default.svc.cluster.local",
        "  vips: [\"/127.10.0.1\"]",
        "  ports: {80: 8080}",
        "policies:",
        "- name: allow-default",
        "  namespace: default",
        "  scope: Namespace",
        "  action: Allow",
        "  dryRun: false",
        "  rules:",
        "  - - - namespaces: [!Exact default]",
        ""])


def openssl(args):
    r = subprocess.run(["openssl", "x509", "-noout"] + args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=10)
    check(r.returncode == 0, "openssl %s: %r" % (args, r.stdout))
    return r.stdout.decode().strip()


def config_dump_test():
    d = tempfile.mkdtemp(prefix="rt-ops-")
    add_cleanup(shutil.rmtree, d, True)
    path = os.path.join(d, "mesh.yaml")
    with open(path, "w") as f:
        f.write(mesh_yaml())
    ports = ops_ports()
    hbone = free_port()
    p = Proxy(["--config", path, "--workload", LOCAL, "--hbone-listen", "127.0.0.1:%d" % hbone,
               "--workers", "1"] + identity_args("node-a") + ops_args(ports),
              listens=[("127.0.0.1", hbone), ("127.0.0.1", ports["admin"])])
    wait_ready(p, ports)
    status, headers, body = request(ports["admin"], "GET", "/config_dump")
    check(status == 200, "config_dump %d: %r" % (status, body[:300]))
    check(headers["content-type"] == "application/json", "content type %r" % headers)
    dump = json.loads(body)
    names = sorted(w["name"] for w in dump["workloads"])
    check(names == ["app-0", "db-0", "vm-a"], "workloads %r" % names)
    uids = [w["uid"] for w in dump["workloads"]]
    check('cluster1//v1/Pod/prod/db-"quoted"' in uids, "the quoted uid came back: %r" % uids)
    vm_a = [w for w in dump["workloads"] if w["name"] == "vm-a"][0]
    check(vm_a["identity"] == ID_A and vm_a["workloadIps"] == ["127.0.0.1"],
          "vm-a: %r" % vm_a)
    check([s["hostname"] for s in dump["services"]] == ["web.default.svc.cluster.local"],
          "services %r" % dump["services"])
    check(dump["services"][0]["vips"] == ["/127.10.0.1"], "vips %r" % dump["services"][0])
    check([(x["name"], x["action"]) for x in dump["policies"]] == [("allow-default", "Allow")],
          "policies %r" % dump["policies"])
    flags = dump["flags"]
    check(flags["--workers"] == "1" and flags["--config"] == path, "flags %r" % flags)
    check(flags["--hbone-listen"] == ["127.0.0.1:%d" % hbone], "--hbone-listen %r"
          % flags["--hbone-listen"])
    check(flags["--admin-listen"] == "127.0.0.1:%d" % ports["admin"], "--admin-listen")
    check(flags["--cert"] == cert("node-a"), "--cert %r" % flags["--cert"])
    check(flags["--drain-timeout"] == "10s", "--drain-timeout %r" % flags["--drain-timeout"])
    chain = dump["certificates"]["chain"]
    check(len(chain) >= 1, "no certificate chain: %r" % dump["certificates"])
    leaf = chain[0]
    want_serial = openssl(["-serial", "-in", cert("node-a")]).split("=", 1)[1]
    check(int(leaf["serial"], 16) == int(want_serial, 16),
          "serial %s, openssl says %s" % (leaf["serial"], want_serial))
    check(leaf["identity"] == ID_A, "leaf identity %r" % leaf.get("identity"))
    enddate = openssl(["-enddate", "-in", cert("node-a")]).split("=", 1)[1]
    want_end = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                             time.strptime(enddate.replace(" GMT", ""), "%b %d %H:%M:%S %Y"))
    check(leaf["notAfter"] == want_end, "notAfter %s, openssl %s" % (leaf["notAfter"], want_end))
    check(leaf["expired"] is False and "notBefore" in leaf, "leaf %r" % leaf)
    check(len(dump["certificates"]["ca"]) >= 1, "no CA certificate")
    log("config_dump: 3 workloads, 1 service, 1 policy, flags, leaf serial %s = openssl's, "
        "identity %s, notAfter %s" % (leaf["serial"], ID_A, want_end))
    p.stop_ok()


DEBUG_RE = r"^ringtunnel: ops: --readiness-listen 127\.0\.0\.1:\d+ GET /healthz/ready -> 200$"


def debug_lines(p):
    return [l for l in p.stderr_text().splitlines() if re.match(DEBUG_RE, l)]


def logging_level_test():
    ports = ops_ports()
    p, _ = start_forward(ports)
    wait_ready(p, ports)
    status, _, body = request(ports["admin"], "GET", "/logging")
    check((status, body) == (200, "log level: info\n"), "GET /logging: %d %r" % (status, body))
    for _ in range(3):
        check(ready(ports["readiness"])[0] == 200, "readiness")
    time.sleep(0.3)
    check(debug_lines(p) == [], "debug lines at level info: %r" % debug_lines(p))
    status, _, body = request(ports["admin"], "POST", "/logging?level=debug")
    check((status, body) == (200, "log level: debug (was info)\n"),
          "POST level=debug: %d %r" % (status, body))
    for _ in range(3):
        check(ready(ports["readiness"])[0] == 200, "readiness")
    wait_until(lambda: len(debug_lines(p)) >= 3, 3,
               what="3 debug lines after level=debug; stderr:\n%s" % p.stderr_tail())
    log("debug lines appear only after POST /logging?level=debug: %s" % debug_lines(p)[0])
    status, _, body = request(ports["admin"], "POST", "/logging?level=verbose")
    check(status == 400 and "error, warn, info or debug" in body,
          "bad level: %d %r" % (status, body))
    status, _, body = request(ports["admin"], "POST", "/logging")
    check(status == 400 and "error, warn, info or debug" in body, "no level: %d %r"
          % (status, body))
    status, _, body = request(ports["admin"], "GET", "/logging?level=error")
    check(status == 405, "GET with a level: %d %r" % (status, body))
    status, _, body = request(ports["admin"], "GET", "/logging")
    check(body == "log level: debug\n", "the level after bad requests: %r" % body)
    log("bad level -> 400 naming the levels; GET with a level -> 405; level unchanged")
    p.stop_ok()


def quitquitquit_test():
    ports = ops_ports()
    p, _ = start_forward(ports)
    wait_ready(p, ports)
    status, _, _ = request(ports["admin"], "GET", "/quitquitquit")
    check(status == 405, "GET /quitquitquit: %d" % status)
    time.sleep(0.3)
    check(p.alive(), "GET /quitquitquit stopped the process")
    # What a web page in a browser on the host could send: refused, the process stays.
    status, _, _ = request(ports["admin"], "POST", "/quitquitquit",
                           headers="Origin: http://evil.example\r\n")
    check(status == 403, "POST /quitquitquit with an Origin header: %d" % status)
    status, _, _ = exchange(ports["admin"], b"GET /config_dump HTTP/1.1\r\n"
                            b"Host: rebound.example:15000\r\n\r\n", 5)
    check(status == 403, "GET /config_dump with Host rebound.example: %d" % status)
    for host in (b"localhost:15000", b"[::1]:15000", b"127.0.0.1"):
        status, _, _ = exchange(ports["admin"], b"GET /logging HTTP/1.1\r\nHost: " + host +
                                b"\r\n\r\n", 5)
        check(status == 200, "GET /logging with Host %r: %d" % (host, status))
    time.sleep(0.3)
    check(p.alive(), "a refused request stopped the process")
    status, _, body = request(ports["admin"], "POST", "/quitquitquit")
    check((status, body) == (200, "draining\n"), "POST /quitquitquit: %d %r" % (status, body))
    rc = p.wait_exit(5)
    check(rc == 0, "exit code %s after /quitquitquit; stderr:\n%s" % (rc, p.stderr_tail()))
    err = p.stderr_text()
    check("ringtunnel: /quitquitquit received, draining" in err and "ringtunnel: stopped" in err,
          "drain not logged; stderr:\n%s" % p.stderr_tail())
    log("POST /quitquitquit: refused (403) with an Origin header or a Host name; 200, drain "
        "logged, exit 0")


def listen_failure_test():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    add_cleanup(taken.close)
    port = taken.getsockname()[1]
    rc, out, err = run_to_exit(["--forward", "127.0.0.1:%d=tcp://127.0.0.1:9" % free_port(),
                                "--admin-listen", "127.0.0.1:%d" % port], timeout=10)
    check(rc == 1, "exit %s with the admin port taken; stderr %r" % (rc, err))
    want = "--admin-listen 127.0.0.1:%d: cannot listen: Address already in use" % port
    check(want in err, "stderr %r lacks %r" % (err, want))
    rc, out, err = run_to_exit(["--forward", "127.0.0.1:%d=tcp://127.0.0.1:9" % free_port(),
                                "--admin-listen", "192.0.2.1:%d" % free_port()], timeout=10)
    check(rc == 1 and "is not a loopback address" in err and
          "cannot listen: Cannot assign requested address" in err,
          "non-loopback admin: exit %s, stderr %r" % (rc, err))
    log("a taken port: exit 1 naming the flag, address and reason; non-loopback admin warned")


def hostile_requests(ports):
    big = b"GET /healthz/ready HTTP/1.1\r\nX-Fill: " + b"a" * 9000 + b"\r\n\r\n"
    cases = [("oversized head", big, 431),
             ("garbage", b"GARBAGE\r\n\r\n", 400),
             ("binary", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
             ("PUT", b"PUT /healthz/ready HTTP/1.1\r\n\r\n", 405),
             ("body", b"POST /logging HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
             ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n", 404)]
    for name, port in ports.items():
        for what, data, want in cases:
            status, _, body = exchange(port, data)
            check(status == want, "%s port, %s: %d %r, expected %d" % (name, what, status, body,
                                                                    want))
    log("on each port: oversized 431, garbage 400, PUT 405, a body 413, unknown path 404")


SLOW_REQUEST = b"GET /healthz/ready HTTP/1.1\r\nHost: slow\r\n\r\n"


def slow_client(port, results, key):
    """Sends SLOW_REQUEST a byte a second until the server answers; results[key] = (what it
    received, an error or None, seconds from connect to the server's close)."""
    t0 = time.monotonic()
    out = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(1.0)
            for b in SLOW_REQUEST:
                try:
                    s.sendall(bytes([b]))
                    out += s.recv(65536)
                    break  # the server answered (or closed)
                except socket.timeout:
                    continue
            s.settimeout(3)
            while True:
                got = s.recv(65536)
                if not got:
                    break
                out += got
    except OSError as e:
        results[key] = (out, repr(e), time.monotonic() - t0)
        return
    results[key] = (out, None, time.monotonic() - t0)


def slow_clients(ports):
    results = {}
    threads = [threading.Thread(target=slow_client, args=(port, results, name), daemon=True)
               for name, port in ports.items()]
    for t in threads:
        t.start()
    time.sleep(2)
    t0 = time.monotonic()
    r = ready(ports["readiness"])
    took = time.monotonic() - t0
    check(r and r[0] == 200 and took < 1, "readiness during the slow clients: %r in %.2f s"
          % (r, took))
    for t in threads:
        t.join(12)
    for name in ports:
        check(name in results, "the slow client on the %s port did not finish" % name)
        out, err, took = results[name]
        check(err is None, "slow client on %s: %s" % (name, err))
        status, _, body = parse_response(out)
        check(status == 408 and 4.5 <= took <= 7, "slow client on %s: %d %r after %.1f s"
              % (name, status, body, took))
    log("slow clients (1 byte/s) on every port: 408 after %s s; readiness answered meanwhile"
        % ", ".join("%.1f" % results[n][2] for n in ports))


def flood(port, n=100):
    conns, closed = [], 0
    for _ in range(n):
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    time.sleep(0.5)
    for c in conns:
        c.setblocking(False)
        try:
            if c.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return conns, closed


def idle_flood(ports):
    held = []
    for name in ("admin", "metrics"):
        conns, closed = flood(ports[name])
        held += conns
        check(closed == 36, "%s port: %d of 100 idle connections closed at once, "
              "expected 36 (64 kept)" % (name, closed))
    t0 = time.monotonic()
    r = ready(ports["readiness"])
    check(r and r[0] == 200 and time.monotonic() - t0 < 1,
          "readiness while the other ports are full: %r" % (r,))
    log("100 idle connections on the admin and metrics ports: 36 of each closed at once; "
        "readiness served meanwhile")
    # A client that sends its request at once is served on a full port: the oldest idle
    # connection makes room for it.
    t0 = time.monotonic()
    status, _, _ = request(ports["metrics"], "GET", "/nope", 2)
    check(status == 404 and time.monotonic() - t0 < 1,
          "a request on the full metrics port: %d after %.1f s" % (status, time.monotonic() - t0))
    conns, closed = flood(ports["readiness"])
    held += conns
    t0 = time.monotonic()
    r = ready(ports["readiness"])
    check(r and r[0] == 200 and time.monotonic() - t0 < 1,
          "readiness on its own full port: %r after %.1f s" % (r, time.monotonic() - t0))
    log("a request on a full port is served at once (the oldest idle connection makes room); "
        "readiness too, with 100 idle connections on its own port")
    end = time.monotonic() + 10
    for name in ("admin", "metrics"):
        while True:
            try:
                status, _, _ = request(ports[name], "GET", "/nope", 2)
                break
            except (OSError, TestFailure):
                if time.monotonic() > end:
                    fail("the %s port does not serve again within 10 s of the flood" % name)
                time.sleep(0.2)
        check(status == 404, "%s port after the flood: %d" % (name, status))
    for c in held:
        c.close()
    log("the flooded ports serve again once the idle connections timed out")


def hostile_test(attack):
    def test():
        ports = ops_ports()
        p, _ = start_forward(ports)
        wait_ready(p, ports)
        attack(ports)
        check(ready(ports["readiness"])[0] == 200, "readiness after the attack")
        p.stop_ok()
    return test


TESTS = [
    ("ready-then-draining", ready_then_draining_test),
    ("config-dump", config_dump_test),
    ("logging-level", logging_level_test),
    ("quitquitquit", quitquitquit_test),
    ("listen-failure", listen_failure_test),
    ("hostile-requests", hostile_test(hostile_requests)),
    ("slow-clients", hostile_test(slow_clients)),
    ("idle-flood", hostile_test(idle_flood)),
]

if __name__ == "__main__":
    run_tests("operating listeners", TESTS, DEADLINE)

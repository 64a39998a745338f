#!/usr/bin/env python3
"""Prometheus metrics (--metrics-listen): GET /metrics and /stats/prometheus after known traffic.

One proxy on loopback (--workers 2, so that a scrape sums workers), with a workload config whose
local workload vm-a (node-a's identity) is at 127.0.0.1, a client workload at 127.0.0.3 and a
database workload at 127.0.0.2, and a Deny policy for one destination port of vm-a. Clients bind
127.0.0.3, so that their connections carry the client workload's labels.

traffic: a TCP --forward transfer to the database (N bytes up, M down), an HBONE transfer through
  an hbone:// --forward to the proxy's own --hbone-listen (so one source-reported and one
  destination-reported connection), and a raw HBONE CONNECT from a node-b certificate to the
  denied port (401). Then every istio_tcp_* sample is asserted exactly, labels and values:
  opened, closed ("-" and DENY), failed (DENY only), received and sent bytes, which also equal
  the access log's bytes_up and bytes_down, summed over every line; /stats/prometheus serves the
  same series; the Content-Type is the text format 0.0.4; `promtool check metrics` accepts the
  output (skipped with a note when promtool is not installed).
own: ringtunnel's per-worker metrics after the same kind of traffic: every worker has made
  io_uring_enter calls and reaped completions, receives were counted, the TLS handshakes
  completed (1 client, 2 server) with no failure, no HBONE stream is open, one pooled connection.
cap-and-expiry: --workers 1 --metrics-max-series 1 --metrics-series-expiry 1s: a connection from
  the client workload gets its series; ones from addresses of no workload are counted in the
  overflow series (every workload label "unknown"), ringtunnel_metrics_series_overflow_total
  counts them and one line is logged; once the connections are closed the series expire (gone
  from the scrape within seconds) and a new connection starts its series again from 1.
bad-flags: --metrics-max-series 0 and --metrics-series-expiry 0 exit 2 naming the flag."""

import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, add_cleanup, check, free_port, log,  # noqa: E402
                     run_tests, run_to_exit, wait_access_kv, wait_until)
import hbone_h2 as h2  # noqa: E402
from hbone_common import ID_A, ID_B, ca, cert, hbone_forward_arg, identity_args, key  # noqa: E402

DEADLINE = 120
CLIENT_IP = "127.0.0.3"
DB_IP = "127.0.0.2"
LOCAL_IP = "127.0.0.1"
DB_ID = "spiffe://cluster.local/ns/data/sa/db-sa"

CONFIG = """workloads:
- uid: cluster1//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  serviceAccount: node-a
  workloadName: vm-a-deploy
  canonicalName: vm-a-app
  canonicalRevision: v1
  clusterId: cluster1
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  services:
    default/web.default.svc.cluster.local: {80: %d}
- uid: cluster1//v1/Pod/apps/client
  name: client
  namespace: apps
  serviceAccount: client-sa
  workloadName: client-deploy
  canonicalName: client-app
  canonicalRevision: v7
  workloadIps: ["127.0.0.3"]
  protocol: TCP
  services: {}
- uid: cluster1//v1/Pod/data/db
  name: db
  namespace: data
  serviceAccount: db-sa
  workloadName: db-deploy
  canonicalName: db
  workloadIps: ["127.0.0.2"]
  protocol: TCP
  services: {}
services:
- name: web
  namespace: default
  hostname: web.default.svc.cluster.local
  vips: ["/10.9.0.1"]
  ports: {80: %d}
policies:
- name: deny-port
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules:
  - - - destinationPorts: [%d]
"""

LABELS = ["reporter", "source_workload", "source_canonical_service", "source_canonical_revision",
          "source_workload_namespace", "source_principal", "source_app", "source_version",
          "source_cluster", "destination_service", "destination_service_namespace",
          "destination_service_name", "destination_workload", "destination_canonical_service",
          "destination_canonical_revision", "destination_workload_namespace",
          "destination_principal", "destination_app", "destination_version",
          "destination_cluster", "request_protocol", "response_flags",
          "connection_security_policy"]
CLIENT = {"source_workload": "client-deploy", "source_canonical_service": "client-app",
          "source_canonical_revision": "v7", "source_workload_namespace": "apps",
          "source_app": "client-app", "source_version": "v7"}
DB = {"destination_workload": "db-deploy", "destination_canonical_service": "db",
      "destination_workload_namespace": "data", "destination_principal": DB_ID,
      "destination_app": "db"}
VM_A = {"destination_workload": "vm-a-deploy", "destination_canonical_service": "vm-a-app",
        "destination_canonical_revision": "v1", "destination_workload_namespace": "default",
        "destination_principal": ID_A, "destination_app": "vm-a-app",
        "destination_version": "v1", "destination_cluster": "cluster1"}
TRAFFIC = ("istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
           "istio_tcp_connections_failed_total", "istio_tcp_received_bytes_total",
           "istio_tcp_sent_bytes_total")


def labels(**values):
    """The full label set of a traffic sample: `values`, "unknown" for the rest."""
    out = {k: "unknown" for k in LABELS}
    out["request_protocol"] = "tcp"
    out["response_flags"] = "-"
    out.update(values)
    return out


# ---- scraping

def ops_flags():
    """The listener flags of the metrics server; readiness and admin (when the binary has them)
    on free loopback ports, so that the defaults (15021, 15000) are never taken."""
    rc, out, _ = run_to_exit(["--help"], timeout=10)
    port = free_port()
    args = ["--metrics-listen", "127.0.0.1:%d" % port]
    for flag in ("--readiness-listen", "--admin-listen"):
        if flag in out:
            args += [flag, "127.0.0.1:%d" % free_port()]
    return args, ("127.0.0.1", port)


def get(addr, path):
    c = http.client.HTTPConnection(addr[0], addr[1], timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read().decode("utf-8")
        return r.status, r.getheader("Content-Type"), body
    finally:
        c.close()


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text):
    """[(name, {label: value}, value)] of every sample; fails on a line of neither kind."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        check(m, "not a sample line: %r" % line)
        name, body, value = m.groups()
        ls, pos = {}, 0
        while body and pos < len(body):
            lm = _LABEL.match(body, pos)
            check(lm, "bad labels in %r" % line)
            ls[lm.group(1)] = re.sub(r'\\(.)', lambda x: "\n" if x.group(1) == "n" else x.group(1),
                                     lm.group(2))
            pos = lm.end()
        out.append((name, ls, float(value)))
    return out


def scrape(addr, path="/metrics"):
    status, ctype, body = get(addr, path)
    check(status == 200, "GET %s: %s" % (path, status))
    check(ctype and ctype.startswith("text/plain") and "version=0.0.4" in ctype,
          "GET %s: Content-Type %r" % (path, ctype))
    return body


def samples(text, name):
    return [(ls, v) for n, ls, v in parse(text) if n == name]


def total(text, name, **match):
    return sum(v for ls, v in samples(text, name) if all(ls.get(k) == x for k, x in match.items()))


def promtool_check(text):
    tool = shutil.which("promtool")
    if not tool:
        log("NOTE: promtool not installed (Debian package prometheus): check skipped")
        return
    p = subprocess.run([tool, "check", "metrics"], input=text.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    check(p.returncode == 0, "promtool check metrics: exit %d:\n%s"
          % (p.returncode, p.stdout.decode(errors="replace")[-3000:]))
    log("promtool check metrics: ok%s" % (": " + p.stdout.decode().strip() if p.stdout.strip()
                                          else ""))


# ---- traffic

def reply_handler(down):
    """A target that reads to EOF, then sends `down` bytes and closes."""
    def handler(conn, peer):
        while conn.recv(65536):
            pass
        conn.sendall(b"d" * down)
        conn.shutdown(socket.SHUT_WR)
        conn.close()
    return handler


def transfer(listen, up, down):
    """From CLIENT_IP: `up` bytes, half-close, read to EOF (expects `down`). The client address."""
    s = socket.socket()
    s.bind((CLIENT_IP, 0))
    s.settimeout(20)
    s.connect(listen)
    client = "%s:%d" % s.getsockname()
    s.sendall(b"u" * up)
    s.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
    s.close()
    check(got == down, "%s: received %d bytes, expected %d" % (client, got, down))
    return client


def denied_connect(hbone, port):
    """A node-b CONNECT to vm-a's denied port, forwarded for the client workload: 401."""
    c = h2.H2Conn(hbone, h2.tls_context(ca(), cert("node-b"), key("node-b")), timeout=10)
    c.start()
    f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, 10)
    check(f is not None, "no SETTINGS: %s" % c.summary())
    c.send(h2.settings_frame(ack=True))
    c.send(h2.headers_frame(1, h2.connect_headers(
        "%s:%d" % (LOCAL_IP, port), [("forwarded", 'for="%s:4444"' % CLIENT_IP)])))
    f = c.wait_for(lambda f: f.stream == 1 and f.type in (h2.HEADERS, h2.RST_STREAM), 10)
    check(f is not None and f.type == h2.HEADERS and c.status(1) == "401",
          "CONNECT to the denied port: %s" % c.summary())
    c.close()


def start(extra, workers=2, deny_port=None, web_port=None):
    d = tempfile.mkdtemp(prefix="ringtunnel-metrics-")
    add_cleanup(shutil.rmtree, d, True)
    cfg = os.path.join(d, "mesh.yaml")
    with open(cfg, "w") as f:
        web = web_port or free_port()
        f.write(CONFIG % (web, web, deny_port or free_port()))
    ops, metrics = ops_flags()
    p = Proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--workers", str(workers)]
              + identity_args("node-a") + ops + list(extra[0]), listens=extra[1] + [metrics])
    return p, metrics


def run_traffic():
    """The traffic of the `traffic` and `own` cases: returns (proxy, metrics address, facts)."""
    db = TargetServer(reply_handler(12345), DB_IP)
    add_cleanup(db.close)
    local = TargetServer(reply_handler(54321), LOCAL_IP)
    add_cleanup(local.close)
    tcp_listen = ("127.0.0.1", free_port())
    hb_forward = ("127.0.0.1", free_port())
    hbone = ("127.0.0.1", free_port())
    deny_port = free_port()
    args = ["--forward", "%s:%d=tcp://%s:%d" % (tcp_listen + db.addr),
            "--forward", hbone_forward_arg(hb_forward, hbone, local.addr, ID_A),
            "--hbone-listen", "%s:%d" % hbone]
    p, metrics = start((args, [tcp_listen, hb_forward, hbone]), deny_port=deny_port,
                       web_port=local.addr[1])
    tcp_client = transfer(tcp_listen, 300001, 12345)
    hb_client = transfer(hb_forward, 200003, 54321)
    denied_connect(hbone, deny_port)
    # Every connection's line is in the access log: each was counted before its line was written.
    lines = wait_access_kv(p, lambda e: True, 4, timeout=10)
    check(len(lines) == 4, "access lines: %r" % lines)
    return p, metrics, {"tcp_client": tcp_client, "hb_client": hb_client, "lines": lines,
                        "hbone": hbone}


def traffic():
    p, metrics, facts = run_traffic()
    lines = facts["lines"]
    by_listener = {}
    for e in lines:
        by_listener.setdefault(e["listener"], []).append(e)
    tcp = [e for e in lines if e["client"] == facts["tcp_client"]]
    check(len(tcp) == 1 and tcp[0]["bytes_up"] == 300001 and tcp[0]["bytes_down"] == 12345
          and tcp[0]["end"] == "closed", "TCP access line: %r" % tcp)
    hb = [e for e in lines if e["end"] == "closed" and e is not tcp[0]]
    check(len(hb) == 2 and all(e["bytes_up"] == 200003 and e["bytes_down"] == 54321 for e in hb),
          "HBONE access lines (outbound and inbound): %r" % hb)
    denied = [e for e in lines if e["end"] == "denied"]
    check(len(denied) == 1 and denied[0]["bytes_up"] == 0, "denied access line: %r" % denied)

    text = scrape(metrics)
    want = {
        # TCP --forward: reported by ringtunnel as the client's proxy, no TLS.
        "tcp": labels(reporter="source", **CLIENT, **DB, connection_security_policy="unknown"),
        # hbone:// --forward: the same side, in mutual TLS, to vm-a.
        "out": labels(reporter="source", **CLIENT, source_principal=ID_A, **VM_A,
                      connection_security_policy="mutual_tls"),
        # Its other end, on the proxy's --hbone-listen: the client workload (Forwarded), node-a;
        # the service vm-a serves on that port (its only one there: web).
        "in": labels(reporter="destination", **CLIENT, source_principal=ID_A, **VM_A,
                     destination_service="web.default.svc.cluster.local",
                     destination_service_namespace="default", destination_service_name="web",
                     connection_security_policy="mutual_tls"),
        # The denied CONNECT: from node-b.
        "deny": labels(reporter="destination", **CLIENT, source_principal=ID_B, **VM_A,
                       connection_security_policy="mutual_tls"),
    }
    expect = {  # name -> [(labels, value)]
        "istio_tcp_connections_opened_total": [(want[k], 1) for k in want],
        "istio_tcp_connections_closed_total":
            [(want[k], 1) for k in ("tcp", "out", "in")]
            + [(dict(want["deny"], response_flags="DENY"), 1)],
        "istio_tcp_connections_failed_total": [(dict(want["deny"], response_flags="DENY"), 1)],
        "istio_tcp_received_bytes_total": [(want["tcp"], 300001), (want["out"], 200003),
                                           (want["in"], 200003), (want["deny"], 0)],
        "istio_tcp_sent_bytes_total": [(want["tcp"], 12345), (want["out"], 54321),
                                       (want["in"], 54321), (want["deny"], 0)],
    }
    for name, rows in expect.items():
        got = sorted((sorted(ls.items()), v) for ls, v in samples(text, name))
        exp = sorted((sorted(ls.items()), float(v)) for ls, v in rows)
        if got != exp:
            extra = [dict(ls) | {"=": v} for ls, v in got if (ls, v) not in exp]
            missing = [dict(ls) | {"=": v} for ls, v in exp if (ls, v) not in got]
            check(False, "%s:\n unexpected %s\n missing    %s\nscrape:\n%s"
                  % (name, "\n            ".join(map(repr, extra)),
                     "\n            ".join(map(repr, missing)), text))
        log("%s: %d samples as expected" % (name, len(rows)))
    # The bytes are the access log's, line by line summed.
    check(total(text, "istio_tcp_received_bytes_total") == sum(e["bytes_up"] for e in lines)
          and total(text, "istio_tcp_sent_bytes_total") == sum(e["bytes_down"] for e in lines),
          "bytes differ from the access log's")
    # One HELP and TYPE line each, counters.
    for name in TRAFFIC:
        check(text.count("# TYPE %s counter\n" % name) == 1 and
              text.count("# HELP %s " % name) == 1, "%s: HELP/TYPE lines" % name)
    # /stats/prometheus: the same traffic series.
    other = scrape(metrics, "/stats/prometheus")
    for name in TRAFFIC:
        check(sorted(map(repr, samples(other, name))) == sorted(map(repr, samples(text, name))),
              "/stats/prometheus differs from /metrics in %s" % name)
    promtool_check(text)
    p.stop_ok()


def own():
    p, metrics, _ = run_traffic()
    text = scrape(metrics)
    for w in ("0", "1"):
        check(total(text, "ringtunnel_io_uring_enter_total", worker=w) > 0
              and total(text, "ringtunnel_cqes_reaped_total", worker=w) > 0
              and total(text, "ringtunnel_sqes_submitted_total", worker=w) > 0,
              "worker %s: ring counters:\n%s" % (w, text))
        check(total(text, "ringtunnel_registered_buffer_bytes", worker=w) > 0,
              "worker %s: registered bytes" % w)
    check(total(text, "ringtunnel_receives_total", pool="data") > 0, "no data receives counted")
    check(total(text, "ringtunnel_receives_total", pool="tls") > 0, "no TLS receives counted")
    check(total(text, "ringtunnel_tls_handshakes_total", role="client") == 1
          and total(text, "ringtunnel_tls_handshakes_total", role="server") == 2,
          "handshakes: %r" % samples(text, "ringtunnel_tls_handshakes_total"))
    check(total(text, "ringtunnel_tls_handshake_failures_total") == 0, "handshake failures")
    check(total(text, "ringtunnel_h2_streams_open") == 0, "streams open")
    check(total(text, "ringtunnel_hbone_pooled_connections") == 1, "pooled connections: %r"
          % samples(text, "ringtunnel_hbone_pooled_connections"))
    check(total(text, "ringtunnel_metrics_series") >= 4, "series gauge")
    check(total(text, "ringtunnel_metrics_series_overflow_total") == 0, "overflow")
    promtool_check(text)
    p.stop_ok()


def cap_and_expiry():
    db = TargetServer(reply_handler(10), DB_IP)
    add_cleanup(db.close)
    listen = ("127.0.0.1", free_port())
    p, metrics = start((["--forward", "%s:%d=tcp://%s:%d" % (listen + db.addr),
                         "--metrics-max-series", "1", "--metrics-series-expiry", "1s"], [listen]),
                       workers=1)
    global CLIENT_IP
    own_ip = CLIENT_IP
    try:
        transfer(listen, 100, 10)             # the client workload's series
        CLIENT_IP = "127.0.0.4"               # no workload: a second label set, over the cap
        transfer(listen, 200, 10)
        CLIENT_IP = "127.0.0.5"
        transfer(listen, 300, 10)
    finally:
        CLIENT_IP = own_ip
    wait_access_kv(p, lambda e: True, 3, timeout=10)
    text = scrape(metrics)
    opened = samples(text, "istio_tcp_connections_opened_total")
    got = sorted((ls["source_workload"], ls["destination_workload"], v) for ls, v in opened)
    check(got == [("client-deploy", "db-deploy", 1.0), ("unknown", "unknown", 2.0)],
          "opened with a cap of 1: %r" % got)
    check(total(text, "istio_tcp_received_bytes_total", source_workload="unknown") == 500,
          "overflow bytes")
    check(total(text, "ringtunnel_metrics_series_overflow_total") == 2, "overflow count")
    check(total(text, "ringtunnel_metrics_series") == 2, "series gauge")
    notes = [l for l in p.stderr_text().splitlines() if "--metrics-max-series" in l]
    check(len(notes) == 1, "overflow log lines: %r" % notes)
    log("cap: %r; %s" % (got, notes[0]))
    promtool_check(text)
    # Every connection is closed: the series expire.
    wait_until(lambda: not samples(scrape(metrics), "istio_tcp_connections_opened_total"), 10,
               what="the series to expire")
    text = scrape(metrics)
    check(total(text, "ringtunnel_metrics_series") == 0, "series gauge after expiry")
    transfer(listen, 100, 10)
    wait_access_kv(p, lambda e: True, 4, timeout=10)
    got = [(ls["source_workload"], v) for ls, v in
           samples(scrape(metrics), "istio_tcp_connections_opened_total")]
    check(got == [("client-deploy", 1.0)], "after expiry: %r" % got)
    p.stop_ok()


def bad_flags():
    for flag, value in (("--metrics-max-series", "0"), ("--metrics-series-expiry", "0"),
                        ("--metrics-series-expiry", "soon")):
        rc, _, err = run_to_exit([flag, value], timeout=10)
        check(rc == 2 and flag in err, "%s %s: exit %s, stderr %r" % (flag, value, rc, err))
        log("%s %s: %s" % (flag, value, err.strip().splitlines()[0]))


TESTS = [
    ("traffic", traffic),
    ("own", own),
    ("cap-and-expiry", cap_and_expiry),
    ("bad-flags", bad_flags),
]

if __name__ == "__main__":
    run_tests("metrics", TESTS, DEADLINE)

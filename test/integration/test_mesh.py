#!/usr/bin/env python3
"""ringtunnel as one host's node proxy (issue 8, in progress): two network-namespace hosts
(mesh_hosts.py), host A's outbound TCP captured by its rules (REDIRECT to 15001) and routed by
the workload config from its original destination.

passthrough: to an address:port the config routes nowhere special (a TCP workload's port that
  no service names): plain TCP to the original destination; bytes both ways, one access line
  naming it as the target, the client's own address as the client.
service-vip: to a service VIP and port (10.251.0.10:80, ports 80 -> 8080): the endpoint
  workload's mapped port (10.250.0.2:8080); bytes both ways, the access line names it.
No capture loop: the proxy's upstream socket carries the mark the rules skip (the target sees
the connection from A's address, and the proxy logs exactly one line per client)."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempfile  # noqa: E402

from harness import check, echo_handler, log, run_tests, wait_until  # noqa: E402
from mesh_hosts import MeshHosts  # noqa: E402

DEADLINE = 120
CONFIG = """workloads:
- uid: cluster1//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  serviceAccount: node-a
  workloadIps: ["10.250.0.1"]
  protocol: HBONE
  services: {}
- uid: cluster1//v1/Pod/default/vm-b
  name: vm-b
  namespace: default
  serviceAccount: node-b
  workloadIps: ["10.250.0.2"]
  protocol: TCP
  services:
    default/web.default.svc.cluster.local: {80: 8080}
services:
- name: web
  namespace: default
  hostname: web.default.svc.cluster.local
  vips: ["/10.251.0.10"]
  ports: {80: 8080}
"""


def captured(dst, expect_target):
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        a.route("10.251.0.0/24")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        b.server(echo_handler, b.ip, int(expect_target.rsplit(":", 1)[1]))
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a",
                      "--outbound-listen", "0.0.0.0:15001"], listens=[("0.0.0.0", 15001)])
        s = a.connect(dst)
        payload = os.urandom(100000)
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            piece = s.recv(65536)
            check(piece, "EOF after %d of %d echoed bytes" % (len(got), len(payload)))
            got += piece
        check(got == payload, "echo differs")
        client = "%s:%d" % s.getsockname()
        s.close()
        e = pa.wait_access([client])[client]
        wait_until(lambda: len(pa.access()) >= 1, 5)
        check(len(pa.access()) == 1, "access lines: %r (expected one: no capture loop)"
              % pa.access())
        check(e["target"] == expect_target, "target=%s, expected %s" % (e["target"], expect_target))
        check(e["client"] == client, "client=%s, expected %s" % (e["client"], client))
        check(e["end"] == "closed" and e["bytes_up"] == len(payload) and
              e["bytes_down"] == len(payload), "entry %r" % e)
        log("%s -> %s: %d bytes each way, end=closed" % (dst, e["target"], len(payload)))
        pa.stop_ok()


TESTS = [
    ("passthrough", lambda: captured(("10.250.0.2", 9090), "10.250.0.2:9090")),
    ("service-vip", lambda: captured(("10.251.0.10", 80), "10.250.0.2:8080")),
]

if __name__ == "__main__":
    run_tests("mesh", TESTS, DEADLINE)

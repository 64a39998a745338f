#!/usr/bin/env python3
"""ringtunnel as one host's node proxy (issue 8, in progress): two network-namespace hosts
(mesh_hosts.py), host A's outbound TCP captured by its rules (REDIRECT to 15001) and routed by
the workload config from its original destination.

passthrough: to an address in no config (10.250.0.9 on host B): plain TCP to the original
  destination; bytes both ways, one access line naming it as the target, the client's own
  address as the client.
tcp-workload: to a TCP workload's address and a port no service names (10.250.0.2:9090): plain
  TCP to it.
hbone-workload: to an HBONE workload on host B (10.250.0.3:8080, vm-c): captured on A, carried by
  HBONE to B's 15008 (A presents node-a, expects the workload's node-b), admitted on B (its
  local workload's address, no policy) and dialled there; bytes both ways; B's access line names
  A's identity as the source.
deny-policy: the same with a Deny policy on B for A's principal: the client is refused (reset or
  EOF before any echo), B logs end=denied with the policy, and the target sees no connection.
dry-run-deny: the same Deny policy with dryRun: true: the bytes go through, and B logs one
  "authorization dry-run" line naming the policy, A's identity, the target and the enforced
  verdict (allow).
deny-on-reload: an open HBONE stream A -> B, then B's config file gets the Deny policy (written
  to a temporary file and renamed over it): B resets the stream within a second (end=denied),
  the client sees its connection end; a bad edit afterwards keeps the policy (one error line).
plaintext: B captures inbound plaintext (REDIRECT to 15006); a client in A connects straight to
  B's workload address: with no policy the bytes go through (B's access line, listener 15006);
  with an Allow policy that needs a principal, the client (no identity) is refused, B logs
  end=denied, the target sees nothing.
hostile-connects: raw HBONE CONNECTs to B's 15008 from a node-a certificate: to B's loopback,
  to B's own HBONE port, to an address that is not B's workload (A's) -> 400, 503, 400, and
  from a certificate of another trust domain -> 401; none reaches a target. A CONNECT to B's
  workload address is answered 200 (the case's control).
service-vip: to a service VIP and port (10.251.0.10:80, ports 80 -> 8080): the endpoint
  workload's mapped port (10.250.0.2:8080); bytes both ways, the access line names it.
ipv6: host A captures with two outbound listeners (0.0.0.0:15001 and [::]:15001, the rules of
  both families): to B's IPv6 workload address (HBONE to [fd00:250::2]:15008; B listens on
  0.0.0.0:15008 and [::]:15008, and logs the listener each stream came to), to an IPv6 address in no config (passthrough), and to B's IPv4 address beside
  them; each byte-exact, each access line naming the listener, the original destination and
  (HBONE) the identities.
service-headers: to a service VIP (10.251.0.20:80) whose endpoint is an HBONE workload on B,
  served there by an independent HBONE server (Node.js, hbone_node.js): its CONNECT carries
  :authority 10.250.0.3:8080, `forwarded: for="<client>";host=api.default.svc.cluster.local`,
  the source workload's `baggage` (cluster, namespace, workload, service, version, region,
  zone, in that order) and a `traceparent`.
service-hbone: the same with ringtunnel on B: B's access line names the client from the
  `forwarded` header's for= element (the host= after it does not hide it).
listener-loops: connections straight to the capture listeners (A's 127.0.0.1:15001 and
  10.250.0.1:15001; B's 10.250.0.2:15006 from A, which B's rules redirect to itself) are
  refused, one access line each (end=refused), and neither host fills with connections: the
  proxy never dials its own listener.
tproxy: A captures with TPROXY (mangle OUTPUT marks A's TCP to B's addresses, a policy
  route sends it to loopback, PREROUTING TPROXY delivers it to --outbound-listen, which has
  IP_TRANSPARENT): a passthrough, one to B's port 15020 (A's own metrics port, on every address
  of A: a foreign address on it is still captured, not mistaken for a straight connection)
  and an HBONE workload, byte-exact; a straight connection to the listener is still refused.
ops-dual-stack: A's readiness and metrics listeners on [::] answer a prober in B over IPv4
  and over IPv6.
No capture loop: the proxy's upstream socket carries the mark the rules skip (the target sees
the connection from A's address, and the proxy logs exactly one line per client)."""

import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempfile  # noqa: E402

from harness import check, echo_handler, log, run_tests, wait_until  # noqa: E402
import hbone_h2 as h2  # noqa: E402
from hbone_common import ID_A, ID_B, ca, cert, identity_args, key  # noqa: E402
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
        b.add_address("10.250.0.9/24")
        a.route("10.251.0.0/24")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        b.server(echo_handler, expect_target.rsplit(":", 1)[0], int(expect_target.rsplit(":", 1)[1]))
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


HBONE_CONFIG = """workloads:
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
  workloadIps: ["10.250.0.2", "10.250.0.3"]
  protocol: HBONE
  services: {}
%s"""

DENY_A = """policies:
- name: deny-a
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/node-a
"""


DRY_DENY_A = DENY_A.replace("name: deny-a", "name: dry-deny-a").replace("dryRun: false",
                                                                       "dryRun: true")


def hbone_case(deny, dry_run=False):
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("10.250.0.3/24")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh.yaml")
        with open(cfg, "w") as f:
            f.write(HBONE_CONFIG % (DENY_A if deny else DRY_DENY_A if dry_run else ""))
        accepted = []

        def handler(conn, peer):
            accepted.append(peer)
            echo_handler(conn, peer)

        b.server(handler, "10.250.0.3", 8080)
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                      "0.0.0.0:15008"] + identity_args("node-b"), listens=[("0.0.0.0", 15008)])
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "0.0.0.0:15001"] + identity_args("node-a"), listens=[("0.0.0.0", 15001)])
        s = a.connect(("10.250.0.3", 8080))
        client = "%s:%d" % s.getsockname()
        payload = os.urandom(100000)
        got = b""
        try:
            s.sendall(payload)
            while len(got) < len(payload):
                piece = s.recv(65536)
                if not piece:
                    break
                got += piece
        except OSError as e:
            log("client: %s" % e)
        s.close()
        if deny:
            check(got == b"", "the denied client got %d bytes" % len(got))
            wait_until(lambda: pb.access(), 5)
            entries = pb.access()
            check(len(entries) == 1 and entries[0]["end"] == "denied", "B: %r" % entries)
            check(entries[0]["client"].startswith("10.250.0.1:") and
                  entries[0].get("src_identity") == ID_A, "B: %r" % entries[0])
            check('reason="deny: policy default/deny-a"' in pb.stderr_text(),
                  "B's line names no policy")
            check(not accepted, "the target saw %r" % accepted)
            log("denied on B: %s" % entries[0].get("reason", "deny: policy default/deny-a"))
        else:
            check(got == payload, "echo differs (%d of %d bytes)" % (len(got), len(payload)))
            ea = pa.wait_access([client])[client]
            check(ea["target"] == "10.250.0.3:8080" and ea["end"] == "closed", "A: %r" % ea)
            check(ea.get("dst_identity") == ID_B, "A: dst_identity %r" % ea.get("dst_identity"))
            entries = [e for e in pb.access() if e["target"] == "10.250.0.3:8080"]
            check(len(entries) == 1, "B: %r" % pb.access())
            check(entries[0].get("src_identity") == ID_A, "B: src_identity %r" % entries[0])
            check(entries[0]["bytes_up"] == len(payload), "B: %r" % entries[0])
            log("A -> B over HBONE: %d bytes each way; B logs src_identity=%s" % (len(payload),
                                                                                  ID_A))
            dry = [ln for ln in pb.stderr_text().splitlines() if "authorization dry-run" in ln]
            if dry_run:
                check(len(dry) == 1 and "deny policy default/dry-deny-a matched" in dry[0] and
                      ID_A in dry[0] and "target 10.250.0.3:8080" in dry[0] and
                      "enforced: allow" in dry[0], "B's dry-run lines: %r" % dry)
                log("B: %s" % dry[0])
            else:
                check(not dry, "B logged dry-run lines with no dry-run policy: %r" % dry)
        pa.stop_ok()
        pb.stop_ok()


REQUIRE_PRINCIPAL = """policies:
- name: only-node-a
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/node-a
"""


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def mesh_pair(mesh, policies=""):
    a, b = mesh.a, mesh.b
    b.add_address("10.250.0.3/24")
    a.install_capture(inbound=False)
    cfg = os.path.join(tempfile.gettempdir(), "mesh-b.yaml")
    write_atomic(cfg, HBONE_CONFIG % policies)
    cfg_a = os.path.join(tempfile.gettempdir(), "mesh-a.yaml")
    write_atomic(cfg_a, HBONE_CONFIG % "")
    pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                  "0.0.0.0:15008"] + identity_args("node-b"), listens=[("0.0.0.0", 15008)])
    pa = a.proxy(["--config", cfg_a, "--workload", "default/vm-a/node-a", "--outbound-listen",
                  "0.0.0.0:15001"] + identity_args("node-a"), listens=[("0.0.0.0", 15001)])
    return pa, pb, cfg


def deny_on_reload():
    with MeshHosts() as mesh:
        pa, pb, cfg = mesh_pair(mesh)
        mesh.b.server(echo_handler, "10.250.0.3", 8080)
        s = mesh.a.connect(("10.250.0.3", 8080))
        s.sendall(b"x" * 1000)
        got = b""
        while len(got) < 1000:
            got += s.recv(1000)
        t0 = time.monotonic()
        write_atomic(cfg, HBONE_CONFIG % DENY_A)
        s.settimeout(3)
        ended = None
        try:
            while True:
                s.sendall(b"y")
                if not s.recv(10):
                    break
                time.sleep(0.02)
        except (OSError, socket.timeout) as e:
            ended = e
        took = time.monotonic() - t0
        check(took < 1.0, "the stream ended %.2f s after the edit (%r)" % (took, ended))
        wait_until(lambda: any(e["end"] == "denied" for e in pb.access()), 3)
        log("denied %.2f s after the edit (client: %r)" % (took, ended))
        write_atomic(cfg, "workloads: [\n")
        wait_until(lambda: "keeping generation 2" in pb.stderr_text(), 3)
        s2 = mesh.a.connect(("10.250.0.3", 8080))
        s2.settimeout(3)
        try:
            s2.sendall(b"z")
            got2 = s2.recv(10)
        except OSError:
            got2 = b""
        check(got2 == b"", "after a bad edit the Deny policy no longer held: %r" % got2)
        pa.stop_ok()
        pb.stop_ok()


def plaintext(require_principal):
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        cfg = os.path.join(tempfile.gettempdir(), "mesh-b.yaml")
        write_atomic(cfg, HBONE_CONFIG % (REQUIRE_PRINCIPAL if require_principal else ""))
        b.install_capture(outbound=False)
        accepted = []

        def handler(conn, peer):
            accepted.append(peer)
            echo_handler(conn, peer)

        b.server(handler, b.ip, 8080)
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b",
                      "--inbound-plaintext-listen", "0.0.0.0:15006"] + identity_args("node-b"),
                     listens=[("0.0.0.0", 15006)])
        try:
            s = a.connect((b.ip, 8080))
            s.settimeout(3)
            try:
                s.sendall(b"plain")
                got = s.recv(10)
            finally:
                s.close()
        except OSError as e:
            log("client: %s" % e)
            got = b""
        wait_until(lambda: pb.access(), 3)
        e = pb.access()[0]
        check(e["listener"] == "0.0.0.0:15006" and e["target"] == "%s:8080" % b.ip, "B: %r" % e)
        if require_principal:
            check(got == b"" and not accepted, "got %r, target saw %r" % (got, accepted))
            check(e["end"] == "denied", "B: %r" % e)
        else:
            check(got == b"plain", "echo %r" % got)
            wait_until(lambda: pb.access()[0]["end"] == "closed", 3)
        log("plaintext to %s:8080 via 15006: end=%s" % (b.ip, pb.access()[0]["end"]))
        pb.stop_ok()


V6_CONFIG = """workloads:
- uid: cluster1//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  serviceAccount: node-a
  workloadIps: ["10.250.0.1", "fd00:250::1"]
  protocol: HBONE
  services: {}
- uid: cluster1//v1/Pod/default/vm-b
  name: vm-b
  namespace: default
  serviceAccount: node-b
  workloadIps: ["10.250.0.2", "fd00:250::2"]
  protocol: HBONE
  services: {}
"""


def echo_through(s, size=50000):
    payload = os.urandom(size)
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        piece = s.recv(65536)
        check(piece, "EOF after %d of %d echoed bytes" % (len(got), len(payload)))
        got += piece
    check(got == payload, "echo differs")
    return len(payload)


def ipv6():
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("fd00:250::9/64")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh-v6.yaml")
        write_atomic(cfg, V6_CONFIG)
        b.server(echo_handler, "fd00:250::2", 8080)
        b.server(echo_handler, "fd00:250::9", 7070)
        b.server(echo_handler, "10.250.0.2", 7070)
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                      "0.0.0.0:15008", "--hbone-listen", "[::]:15008"] + identity_args("node-b"),
                     listens=[("0.0.0.0", 15008), ("::", 15008)])
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "0.0.0.0:15001", "--outbound-listen", "[::]:15001"] +
                     identity_args("node-a"), listens=[("0.0.0.0", 15001), ("::", 15001)])
        cases = [(("fd00:250::2", 8080), "[fd00:250::2]:8080", ID_B),  # HBONE workload
                 (("fd00:250::9", 7070), "[fd00:250::9]:7070", None),  # passthrough
                 (("10.250.0.2", 7070), "10.250.0.2:7070", ID_B)]      # IPv4 beside it
        for dst, target, dst_identity in cases:
            s = a.connect(dst)
            n = echo_through(s)
            client = "[%s]:%d" % s.getsockname()[:2] if ":" in dst[0] else \
                "%s:%d" % s.getsockname()
            s.close()
            e = pa.wait_access([client])[client]
            check(e["target"] == target and e["end"] == "closed" and e["bytes_up"] == n and
                  e["bytes_down"] == n, "A: %r" % e)
            check(e.get("dst_identity") == dst_identity, "A: dst_identity %r" % e)
            check(e["listener"] == ("[::]:15001" if ":" in dst[0] else "0.0.0.0:15001"),
                  "A: listener %r" % e)
            log("%s captured on %s -> %s%s" % (client, e["listener"], target,
                                              " over HBONE" if dst_identity else ""))
        for target, listener in (("[fd00:250::2]:8080", "[::]:15008"),
                                 ("10.250.0.2:7070", "0.0.0.0:15008")):
            entries = [e for e in pb.access() if e["target"] == target]
            check(len(entries) == 1 and entries[0].get("src_identity") == ID_A and
                  entries[0]["listener"] == listener, "B: %r" % pb.access())
        pa.stop_ok()
        pb.stop_ok()


SERVICE_CONFIG = """workloads:
- uid: cluster1//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  serviceAccount: node-a
  workloadIps: ["10.250.0.1"]
  protocol: HBONE
  clusterId: Kubernetes
  workloadName: vm-a
  workloadType: deployment
  canonicalName: vma
  canonicalRevision: v1
  locality: {region: r1, zone: z1, subzone: ""}
  services: {}
- uid: cluster1//v1/Pod/default/vm-b
  name: vm-b
  namespace: default
  serviceAccount: node-b
  workloadIps: ["10.250.0.3"]
  protocol: HBONE
  services:
    default/api.default.svc.cluster.local: {80: 8080}
services:
- name: api
  namespace: default
  hostname: api.default.svc.cluster.local
  vips: ["/10.251.0.20"]
  ports: {80: 8080}
"""
BAGGAGE_A = ("k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=vm-a,"
             "service.name=vma,service.version=v1,cloud.region=r1,cloud.availability_zone=z1")


def service_hbone(node):
    """A client in A -> the service VIP 10.251.0.20:80, whose endpoint is B's HBONE workload:
    node=True: B is the independent Node.js HBONE server (what the CONNECT carried);
    node=False: B is ringtunnel (its access line names the client from `forwarded`)."""
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("10.250.0.3/24")
        a.route("10.251.0.0/24")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh-svc.yaml")
        write_atomic(cfg, SERVICE_CONFIG)
        b.server(echo_handler, "10.250.0.3", 8080)
        if node:
            import test_hbone_interop as interop
            out = os.path.join(tempfile.gettempdir(), "node-b.out")
            with open(out, "wb") as f:
                b.spawn([interop.node_bin(), interop.NODE_JS, "server", "--listen",
                         "10.250.0.3:15008", "--ca", ca(), "--cert", cert("node-b"), "--key",
                         key("node-b")], stdout=f, stderr=f)

            def events():
                import json
                with open(out, "rb") as f:
                    lines = f.read().decode(errors="replace").splitlines()
                got = []
                for line in lines:
                    try:
                        got.append(json.loads(line))
                    except ValueError:
                        pass
                return got
            wait_until(lambda: any(e.get("event") == "listening" for e in events()), 15)
        else:
            pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                          "0.0.0.0:15008"] + identity_args("node-b"), listens=[("0.0.0.0", 15008)])
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "0.0.0.0:15001"] + identity_args("node-a"), listens=[("0.0.0.0", 15001)])
        s = a.connect(("10.251.0.20", 80))
        client = "%s:%d" % s.getsockname()
        n = echo_through(s)
        s.close()
        e = pa.wait_access([client])[client]
        check(e["target"] == "10.250.0.3:8080" and e["end"] == "closed" and e["bytes_up"] == n,
              "A: %r" % e)
        if node:
            conns = [ev for ev in events() if ev.get("event") == "connect"]
            check(len(conns) == 1, "the Node server saw %r" % events())
            h = conns[0].get("headers", {})
            check(conns[0].get("authority") == "10.250.0.3:8080", "authority %r" % conns[0])
            check(h.get("forwarded") == 'for="%s";host=api.default.svc.cluster.local' % client,
                  "forwarded %r" % h.get("forwarded"))
            check(h.get("baggage") == BAGGAGE_A, "baggage %r, expected %r" % (h.get("baggage"),
                                                                               BAGGAGE_A))
            tp = h.get("traceparent", "")
            parts = tp.split("-")
            check(len(parts) == 4 and parts[0] == "00" and len(parts[1]) == 32 and
                  len(parts[2]) == 16 and parts[3] == "01", "traceparent %r" % tp)
            log("the CONNECT carried forwarded=%s, baggage=%s, traceparent=%s"
                % (h.get("forwarded"), h.get("baggage"), tp))
        else:
            wait_until(lambda: any(x["target"] == "10.250.0.3:8080" for x in pb.access()), 5)
            eb = [x for x in pb.access() if x["target"] == "10.250.0.3:8080"]
            check(len(eb) == 1 and eb[0]["client"] == client,
                  "B's line names client %r, the client was %s" % (eb[0]["client"], client))
            log("B names the client %s from `forwarded: for=...;host=...`" % client)
            pb.stop_ok()
        pa.stop_ok()


def established(host):
    """TCP connections in state ESTAB in the host."""
    rc, out, _ = host.run(["ss", "-Htn", "state", "established"])
    return len([ln for ln in out.splitlines() if ln.strip()])


def refused(host, dst):
    """Connects from `host` to dst and sends a byte: True when the connection ends (EOF or
    reset) with nothing received."""
    try:
        s = host.connect(dst, timeout=3)
        try:
            s.sendall(b"x")
            return s.recv(10) == b""
        finally:
            s.close()
    except OSError:
        return True


def listener_loops():
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        a.install_capture(inbound=False)
        b.install_capture(outbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh-loops.yaml")
        write_atomic(cfg, CONFIG)
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "0.0.0.0:15001"] + identity_args("node-a"), listens=[("0.0.0.0", 15001)])
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b",
                      "--inbound-plaintext-listen", "0.0.0.0:15006"] + identity_args("node-b"),
                     listens=[("0.0.0.0", 15006)])
        # Straight to A's outbound listener: its original destination is the listener itself.
        for dst in (("127.0.0.1", 15001), (a.ip, 15001)):
            check(refused(a, dst), "%s:%d answered" % dst)
        wait_until(lambda: len(pa.access()) >= 2, 3)
        time.sleep(0.5)
        lines = pa.access()
        check(len(lines) == 2 and all(e["end"] == "refused" and "not redirected" in
                                      e.get("reason", "") for e in lines), "A: %r" % lines)
        check(established(a) < 10, "A holds %d established connections (a loop?)" % established(a))
        # From A to B's plaintext port: B's rules redirect it to 15006, whose original
        # destination is B's own 15006.
        check(refused(a, (b.ip, 15006)), "B's 15006 answered")
        wait_until(lambda: pb.access(), 3)
        time.sleep(0.5)
        lines = pb.access()
        check(len(lines) == 1 and lines[0]["end"] == "refused" and
              lines[0]["target"] == "%s:15006" % b.ip, "B: %r" % lines)
        check(established(b) < 10, "B holds %d established connections (a loop?)" % established(b))
        log("A: %s; B: %s" % ("; ".join("%s %s" % (e["target"], e["end"]) for e in pa.access()),
                              "%s %s" % (lines[0]["target"], lines[0]["end"])))
        pa.stop_ok()
        pb.stop_ok()


def tproxy():
    """Host A's outbound capture by TPROXY instead of REDIRECT: A's TCP to 10.250.0.9 and to
    10.250.0.3 (not ringtunnel's own, marked 0x539) is marked, routed to loopback, and
    delivered by TPROXY to the outbound listener, whose accepted socket keeps the original
    destination as its local address (no NAT record). The routing mark (0x2) is a bit that
    ringtunnel's own mark (0x539) does not have: its upstream sockets are routed normally."""
    from mesh_hosts import VARIANTS, iptables_variant
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("10.250.0.3/24")
        b.add_address("10.250.0.9/24")
        ipt = VARIANTS[iptables_variant(a)]["4"]
        for dst in ("10.250.0.9", "10.250.0.3"):
            a.check_run([ipt, "-w", "5", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "-d", dst,
                         "-m", "conntrack", "--ctdir", "ORIGINAL", "-m", "mark", "!", "--mark",
                         "0x539/0xfff", "-j", "MARK", "--set-mark", "0x2/0x2"])
        a.check_run([ipt, "-w", "5", "-t", "mangle", "-A", "PREROUTING", "-i", "lo", "-p", "tcp",
                     "-m", "mark", "--mark", "0x2/0x2", "-j", "TPROXY", "--on-ip", "127.0.0.1",
                     "--on-port", "15001", "--tproxy-mark", "0x2/0x2"])
        a.check_run(["ip", "rule", "add", "fwmark", "0x2/0x2", "lookup", "100"])
        a.check_run(["ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"])
        cfg = os.path.join(tempfile.gettempdir(), "mesh-tproxy.yaml")
        write_atomic(cfg, HBONE_CONFIG % "")
        b.server(echo_handler, "10.250.0.9", 7070)
        b.server(echo_handler, "10.250.0.9", 15020)
        b.server(echo_handler, "10.250.0.3", 8080)
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                      "0.0.0.0:15008"] + identity_args("node-b"), listens=[("0.0.0.0", 15008)])
        # A's metrics listener on every address, port 15020: B's 15020 is still B's.
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "127.0.0.1:15001", "--metrics-listen", "0.0.0.0:15020"] +
                     identity_args("node-a"), listens=[("127.0.0.1", 15001)])
        check("IP_TRANSPARENT" not in pa.stderr_text(), "A: %s" % pa.stderr_text()[-500:])
        for dst, target, dst_identity in ((("10.250.0.9", 7070), "10.250.0.9:7070", None),
                                          (("10.250.0.9", 15020), "10.250.0.9:15020", None),
                                          (("10.250.0.3", 8080), "10.250.0.3:8080", ID_B)):
            s = a.connect(dst)
            client = "%s:%d" % s.getsockname()
            n = echo_through(s)
            s.close()
            e = pa.wait_access([client])[client]
            check(e["target"] == target and e["end"] == "closed" and e["bytes_up"] == n and
                  e.get("dst_identity") == dst_identity, "A: %r" % e)
            log("TPROXY: %s -> %s%s, %d bytes each way" % (client, target,
                                                          " over HBONE" if dst_identity else "", n))
        # Straight to the listener: still refused, never dialled.
        check(refused(a, ("127.0.0.1", 15001)), "127.0.0.1:15001 answered")
        wait_until(lambda: any(e["end"] == "refused" for e in pa.access()), 3)
        check(established(a) < 10, "A holds %d established connections" % established(a))
        pa.stop_ok()
        pb.stop_ok()


def ops_dual_stack():
    """ringtunnel in host A with --readiness-listen [::]:15021 and --metrics-listen [::]:15020:
    a prober in host B reaches both over IPv4 and over IPv6."""
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        cfg = os.path.join(tempfile.gettempdir(), "mesh-ops.yaml")
        write_atomic(cfg, HBONE_CONFIG % "")
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--hbone-listen",
                      "0.0.0.0:15008", "--readiness-listen", "[::]:15021", "--metrics-listen",
                      "[::]:15020"] + identity_args("node-a"), listens=[("0.0.0.0", 15008)])
        for ip in (a.ip, a.ip6):
            for port, path in ((15021, "/healthz/ready"), (15020, "/metrics")):
                def get():
                    try:
                        s = b.connect((ip, port), timeout=3)
                    except OSError:
                        return b""
                    try:
                        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
                        out = b""
                        while True:
                            piece = s.recv(65536)
                            if not piece:
                                return out
                            out += piece
                    finally:
                        s.close()
                wait_until(lambda: get().startswith(b"HTTP/1.1 200"), 5)
                log("B -> %s port %d %s: 200" % (ip, port, path))
        pa.stop_ok()


def open_h2(addr, name):
    """mTLS as `name`, the preface and SETTINGS; waits for the server's SETTINGS."""
    c = h2.H2Conn(addr, h2.tls_context(ca(), cert(name), key(name)), timeout=10)
    c.start()
    f = c.wait_for(lambda f: f.type == h2.SETTINGS and not f.flags & h2.ACK, 10)
    check(f is not None, "no SETTINGS from B: %s" % c.summary())
    c.send(h2.settings_frame(ack=True))
    return c


def connect_status(c, sid, authority):
    c.send(h2.headers_frame(sid, h2.connect_headers(authority, [("forwarded", 'for="x"')])))
    f = c.wait_for(lambda f: f.stream == sid and f.type in (h2.HEADERS, h2.RST_STREAM)
                   or f.type == h2.GOAWAY, 10)
    check(f is not None and f.type != h2.GOAWAY, "stream %d: %s" % (sid, c.summary()))
    return "RST " + h2.err_name(f.error_code()) if f.type == h2.RST_STREAM else c.status(sid)


def hostile_connects():
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("10.250.0.3/24")
        cfg = os.path.join(tempfile.gettempdir(), "mesh-b.yaml")
        write_atomic(cfg, HBONE_CONFIG % "")
        seen = []

        def handler(conn, peer):
            seen.append(peer)
            echo_handler(conn, peer)

        for ip, port in (("127.0.0.1", 8081), (b.ip, 8082), ("10.250.0.3", 8080)):
            b.server(handler, ip, port)
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                      "0.0.0.0:15008"] + identity_args("node-b"), listens=[("0.0.0.0", 15008)])
        cases = [("127.0.0.1:8081", "400"), ("%s:15008" % b.ip, "503"),
                 ("%s:8082" % a.ip, "400"), ("10.250.0.3:8080", "200")]
        with a.inside():
            c = open_h2((b.ip, 15008), "node-a")
            for i, (authority, want) in enumerate(cases):
                got = connect_status(c, 1 + 2 * i, authority)
                check(got == want, "CONNECT %s: %s, expected %s" % (authority, got, want))
                log("CONNECT %-20s -> %s" % (authority, got))
            c.close()
            c = open_h2((b.ip, 15008), "other-td")
            got = connect_status(c, 1, "10.250.0.3:8080")
            check(got == "401", "CONNECT from another trust domain: %s, expected 401" % got)
            log("CONNECT %-20s -> %s (peer of another trust domain)" % ("10.250.0.3:8080", got))
            c.close()
        time.sleep(0.2)
        check(len(seen) == 1, "targets saw %r (expected only the control's connection)" % seen)
        pb.stop_ok()


TESTS = [
    ("hostile-connects", hostile_connects),
    ("deny-on-reload", deny_on_reload),
    ("plaintext", lambda: plaintext(False)),
    ("plaintext-needs-principal", lambda: plaintext(True)),
    ("hbone-workload", lambda: hbone_case(False)),
    ("deny-policy", lambda: hbone_case(True)),
    ("dry-run-deny", lambda: hbone_case(False, dry_run=True)),
    ("passthrough", lambda: captured(("10.250.0.9", 7070), "10.250.0.9:7070")),
    ("tcp-workload", lambda: captured(("10.250.0.2", 9090), "10.250.0.2:9090")),
    ("service-vip", lambda: captured(("10.251.0.10", 80), "10.250.0.2:8080")),
    ("ipv6", ipv6),
    ("service-headers", lambda: service_hbone(True)),
    ("service-hbone", lambda: service_hbone(False)),
    ("listener-loops", listener_loops),
    ("tproxy", tproxy),
    ("ops-dual-stack", ops_dual_stack),
]

if __name__ == "__main__":
    run_tests("mesh", TESTS, DEADLINE)

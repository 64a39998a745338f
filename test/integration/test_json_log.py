#!/usr/bin/env python3
"""--log-format json: every line ringtunnel writes is one JSON object. Access records carry the
access-log fields of Istio's ztunnel (src.addr, src.workload, src.namespace, src.identity,
dst.addr, dst.hbone_addr, dst.service, dst.workload, dst.namespace, dst.identity, direction,
bytes_sent, bytes_recv, duration, error) and its level/time/scope/message; operational messages
carry level, time, scope and message.

Each transfer sends N bytes one way and gets M != N back (the target reads to EOF, then
answers), so bytes_sent and bytes_recv cannot be swapped unnoticed.

tcp-relay: a --forward tcp:// relay on loopback: src.addr is the client, dst.addr the target,
  direction outbound, bytes_sent N (the client's), bytes_recv M, duration "<n>ms", level info,
  no error, no workload/identity/hbone fields (no config, no TLS); every line of stderr parses
  and the start-up lines are operational records (scope ringtunnel, no "ringtunnel: " prefix).
connect-refused: a target that refuses: level error, error "connect_refused", bytes 0.
hbone-loopback: A (--forward hbone://) -> B (--hbone-listen) on loopback, no config: A's record
  is outbound with dst.addr B's address, dst.hbone_addr the target, both identities; B's is
  inbound with dst.addr the address it arrived at, bytes_sent M (the destination's).
mesh-hbone: two network-namespace hosts with --config on both (captured on A, HBONE to B):
  src.workload vm-a, dst.workload vm-b, namespaces "default", on both sides.
mesh-denied: the same with a Deny policy on B for A's principal: B's record has level error and
  an error naming "denied" and the policy; bytes 0.
text-default: without --log-format the access lines are the text ones ("access ..."), and
  --log-format yaml exits 2 naming the flag."""

import json
import os
import re
import socket
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, check, connect_bound, forward_arg, free_port,  # noqa: E402
                     log, run_tests, run_to_exit, wait_until)
from hbone_common import (ID_A, ID_B, LOOPBACK_ALLOW, hbone_forward_arg,  # noqa: E402
                          identity_args, require_hbone)

DEADLINE = 150
UP, DOWN = 70000, 12345
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")
FIELDS = ("src.addr", "src.workload", "src.namespace", "src.identity", "dst.addr",
          "dst.hbone_addr", "dst.service", "dst.workload", "dst.namespace", "dst.identity",
          "direction", "bytes_sent", "bytes_recv", "duration", "error")


def answer_handler(conn, peer):
    """Reads to EOF, then answers DOWN bytes and closes."""
    while conn.recv(65536):
        pass
    conn.sendall(b"d" * DOWN)
    conn.shutdown(socket.SHUT_WR)


def transfer(addr, connect=None):
    """Sends UP bytes, half-closes, reads to EOF; returns (client address, bytes received).
    `connect` (a mesh host's) makes the socket; by default a bound one, so that the address is
    known even when a reset arrives before connect() returns."""
    if connect is None:
        s, client, how = connect_bound(addr)
        if how:
            s.close()
            return client, 0
    else:
        s = connect(addr, timeout=10)
        client = "%s:%d" % s.getsockname()[:2]
    got = 0
    try:
        s.sendall(b"u" * UP)
        s.shutdown(socket.SHUT_WR)
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            got += len(piece)
    except OSError as e:
        log("client: %s" % e)
    s.close()
    return client, got


def records(p):
    """Every stderr line as JSON (each must parse)."""
    out = []
    for line in p.stderr_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            check(False, "not a JSON line: %r" % line)
    return out


def access_for(p, client, timeout=5.0):
    found = []

    def ready():
        found[:] = [r for r in records(p) if r.get("scope") == "access" and
                    r.get("src.addr") == client]
        return found
    wait_until(ready, timeout, what="an access record for %s" % client)
    check(len(found) == 1, "records for %s: %r" % (client, found))
    return found[0]


def check_record(r, want, what):
    """`want`: {field: value}; fields of FIELDS not in `want` must be absent."""
    check(r.get("message") == "connection complete", "%s: message %r" % (what, r.get("message")))
    check(TIME.match(r.get("time", "")), "%s: time %r" % (what, r.get("time")))
    check(re.match(r"^\d+ms$", r.get("duration", "")), "%s: duration %r" % (what, r.get("duration")))
    check(r.get("level") == ("error" if "error" in want else "info"),
          "%s: level %r" % (what, r.get("level")))
    for f in FIELDS:
        if f == "duration":
            continue
        if f not in want:
            check(f not in r, "%s: %s=%r should be absent" % (what, f, r.get(f)))
        elif callable(want[f]):
            check(f in r and want[f](r[f]), "%s: %s=%r" % (what, f, r.get(f)))
        else:
            check(r.get(f) == want[f], "%s: %s=%r, expected %r" % (what, f, r.get(f), want[f]))
    log("%s: %s" % (what, json.dumps(r, sort_keys=True)))


def tcp_relay():
    target = TargetServer(answer_handler)
    listen = ("127.0.0.1", free_port())
    dst = "127.0.0.1:%d" % target.addr[1]
    p = Proxy(["--forward", forward_arg(listen, target.addr), "--log-format", "json"],
              listens=[listen])
    client, got = transfer(listen)
    check(got == DOWN, "client got %d of %d bytes" % (got, DOWN))
    r = access_for(p, client)
    check_record(r, {"src.addr": client, "dst.addr": dst, "direction": "outbound",
                     "bytes_sent": UP, "bytes_recv": DOWN}, "TCP relay")
    ops = [x for x in records(p) if x.get("scope") == "ringtunnel"]
    check(any(x.get("message", "").startswith("listening on %s:%d" % listen) for x in ops),
          "no operational 'listening on' record: %r" % ops)
    for x in ops:
        check(x.get("level") in ("error", "warn", "info", "debug") and
              TIME.match(x.get("time", "")) and
              not x["message"].startswith("ringtunnel:"), "operational record %r" % x)
    log("operational: %s" % json.dumps(ops[0], sort_keys=True))
    p.stop_ok()
    stopped = [x for x in records(p) if x.get("message") == "stopped"]
    check(len(stopped) == 1, "no JSON 'stopped' record after SIGTERM")
    target.close()


def connect_refused():
    closed_port = free_port()
    listen = ("127.0.0.1", free_port())
    p = Proxy(["--forward", forward_arg(listen, ("127.0.0.1", closed_port)), "--log-format",
               "json"], listens=[listen])
    client, got = transfer(listen)
    r = access_for(p, client)
    check_record(r, {"src.addr": client, "dst.addr": "127.0.0.1:%d" % closed_port,
                     "direction": "outbound", "bytes_sent": 0, "bytes_recv": 0, "error": "connect_refused"}, "refused target")
    p.stop_ok()


def hbone_loopback():
    require_hbone()
    target = TargetServer(answer_handler)
    b_addr = ("127.0.0.1", free_port())
    pb = Proxy(["--hbone-listen", "%s:%d" % b_addr, "--log-format", "json"] + LOOPBACK_ALLOW
               + identity_args("node-b"), listens=[b_addr])
    a_listen = ("127.0.0.1", free_port())
    tgt = "127.0.0.1:%d" % target.addr[1]
    pa = Proxy(["--forward", hbone_forward_arg(a_listen, b_addr, target.addr, ID_B),
                "--log-format", "json"] + identity_args("node-a"), listens=[a_listen])
    client, got = transfer(a_listen)
    check(got == DOWN, "client got %d of %d bytes" % (got, DOWN))
    check_record(access_for(pa, client),
                 {"src.addr": client, "src.identity": ID_A, "dst.addr": "%s:%d" % b_addr,
                  "dst.hbone_addr": tgt, "dst.identity": ID_B, "direction": "outbound",
                  "bytes_sent": UP, "bytes_recv": DOWN}, "A (outbound)")
    check_record(access_for(pb, client),
                 {"src.addr": client, "src.identity": ID_A, "dst.addr": "%s:%d" % b_addr,
                  "dst.hbone_addr": tgt, "dst.identity": ID_B, "direction": "inbound",
                  "bytes_sent": DOWN, "bytes_recv": UP}, "B (inbound)")
    pa.stop_ok()
    pb.stop_ok()
    target.close()


def mesh_case(deny):
    from mesh_hosts import MeshHosts
    import test_mesh as tm
    with MeshHosts() as mesh:
        a, b = mesh.a, mesh.b
        b.add_address("10.250.0.3/24")
        a.install_capture(inbound=False)
        cfg = os.path.join(tempfile.gettempdir(), "mesh.yaml")
        with open(cfg, "w") as f:
            f.write(tm.HBONE_CONFIG % (tm.DENY_A if deny else ""))
        b.server(answer_handler, "10.250.0.3", 8080)
        json_flag = ["--log-format", "json"]
        pb = b.proxy(["--config", cfg, "--workload", "default/vm-b/node-b", "--hbone-listen",
                      "0.0.0.0:15008"] + identity_args("node-b") + json_flag,
                     listens=[("0.0.0.0", 15008)])
        pa = a.proxy(["--config", cfg, "--workload", "default/vm-a/node-a", "--outbound-listen",
                      "0.0.0.0:15001"] + identity_args("node-a") + json_flag,
                     listens=[("0.0.0.0", 15001)])
        client, got = transfer(("10.250.0.3", 8080), connect=a.connect)
        common = {"src.addr": client, "src.workload": "vm-a", "src.namespace": "default",
                  "src.identity": ID_A, "dst.addr": "10.250.0.3:15008",
                  "dst.hbone_addr": "10.250.0.3:8080", "dst.workload": "vm-b",
                  "dst.namespace": "default", "dst.identity": ID_B}
        if deny:
            check(got == 0, "the denied client got %d bytes" % got)
            check_record(access_for(pb, client),
                         dict(common, direction="inbound", bytes_sent=0, bytes_recv=0,
                              error=lambda e: e.startswith("denied") and
                              "deny: policy default/deny-a" in e), "B (denied)")
        else:
            check(got == DOWN, "client got %d of %d bytes" % (got, DOWN))
            check_record(access_for(pa, client),
                         dict(common, direction="outbound", bytes_sent=UP, bytes_recv=DOWN),
                         "A (outbound)")
            check_record(access_for(pb, client),
                         dict(common, direction="inbound", bytes_sent=DOWN, bytes_recv=UP),
                         "B (inbound)")
        pa.stop_ok()
        pb.stop_ok()


def text_default():
    target = TargetServer(answer_handler)
    listen = ("127.0.0.1", free_port())
    p = Proxy(["--forward", forward_arg(listen, target.addr)], listens=[listen])
    client, _ = transfer(listen)
    e = p.wait_access([client])[client]
    check(e["bytes_up"] == UP and e["bytes_down"] == DOWN, "text entry %r" % e)
    check(not p.stderr_text().lstrip().startswith("{"), "text mode wrote JSON")
    p.stop_ok()
    target.close()
    rc, out, err = run_to_exit(["--log-format", "yaml"])
    check(rc == 2 and "--log-format" in err and "text or json" in err,
          "--log-format yaml: exit %s, %r" % (rc, err))
    log("text access line by default; --log-format yaml: %s" % err.strip().splitlines()[0])


TESTS = [
    ("tcp-relay", tcp_relay),
    ("connect-refused", connect_refused),
    ("hbone-loopback", hbone_loopback),
    ("mesh-hbone", lambda: mesh_case(False)),
    ("mesh-denied", lambda: mesh_case(True)),
    ("text-default", text_default),
]

if __name__ == "__main__":
    run_tests("json log", TESTS, DEADLINE)

#!/usr/bin/env python3
"""HBONE interoperability with an independent implementation: Node.js's
built-in http2 module (hbone_node.js next to this file; `node` >= 18 on PATH).

node-client-to-inbound: Node (node-a's certificate) opens one mTLS/h2 session
  to ringtunnel B and 3 CONNECT streams to a target at once, plus one to a port
  where nothing listens and one to a name (not ip:port). Each good stream: 200;
  the target first sends 64 KiB, reads Node's 1 MiB (+ stream tag) to EOF, then
  sends 1 MiB more and closes: Node gets exactly 64 KiB + 1 MiB and the end
  (END_STREAM <-> FIN each way on its own), the target exactly what Node sent
  (sha256). The refused one gets 503, the name 400. Node saw B's SPIFFE ID.
  B's log: 3 lines end=closed with the byte counts, src_identity=node-a,
  dst_identity=node-b; one end=connect_refused.
outbound-to-node-server: ringtunnel A forwards to a Node HBONE server
  (node-b's certificate, client certificates required). 3 clients at once, the
  same exchange as above through A: byte-exact both ways. Node saw, for every
  stream, the client certificate's SPIFFE ID (node-a), ALPN h2 over TLSv1.3,
  :authority = the target, `forwarded: for="<client ip:port>"` naming that
  client, and a `traceparent: 00-<32 hex>-<16 hex>-01`, distinct per stream.
  A's log: end=closed, bytes, src=node-a, dst=node-b.
outbound-node-refuses: the Node server answers 503 (nothing at the target):
  the client is reset within 3 s, A's log end=refused."""

import json
import os
import shutil
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (TargetServer, Threads, check, check_kv, connect, connect_bound,  # noqa: E402
                     expect_reset, fail, fmt_addr, free_port, gen_bytes, log, proxy_access_kv,
                     recv_exact, recv_until_eof, reap, run_tests, sha256_hex, sock_addr_str,
                     spawn, wait_access_kv)
from hbone_common import (HERE, ID_A, ID_B, ca, cert, key, require_hbone,  # noqa: E402
                          start_inbound, start_outbound, traceparent_ok)

TIMEOUT = 30.0
PRE, MAIN, POST = 64 * 1024, 1024 * 1024, 1024 * 1024
NODE_JS = os.path.join(HERE, "hbone_node.js")


def node_bin():
    n = shutil.which("node") or shutil.which("nodejs")
    if not n:
        fail("test setup: node (Node.js) is not on PATH")
    return n


class NodeProc:
    def __init__(self, args):
        fd, self.out_path = tempfile.mkstemp(prefix="ringtunnel-node-", suffix=".out")
        self.out = os.fdopen(fd, "wb")
        self.p = spawn([node_bin(), NODE_JS] + args, stdout=self.out, stderr=self.out)

    def text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode(errors="replace")

    def events(self):
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def wait_event(self, pred, timeout, what):
        end = time.monotonic() + timeout
        while True:
            for e in self.events():
                if pred(e):
                    return e
            if time.monotonic() > end or self.p.poll() is not None:
                if self.p.poll() is not None:
                    for e in self.events():
                        if pred(e):
                            return e
                fail("node: no %s within %.0f s (exit code %s); output:\n%s"
                     % (what, timeout, self.p.poll(), self.text()[-2000:]))
            time.sleep(0.05)

    def close(self):
        reap(self.p, term_timeout=3)
        self.out.close()
        os.unlink(self.out_path)


def tagged(i, seed):
    return b"%08d" % i + gen_bytes(seed + i, MAIN - 8)


def exchange_target(res, down_of):
    """Target handler: learns the stream's tag, sends PRE bytes, reads to EOF,
    sends POST bytes, closes (so each direction ends on its own)."""
    def handler(conn, peer):
        tag = recv_exact(conn, 8)
        i = int(tag)
        d = down_of(i)
        conn.sendall(d[:PRE])
        n, h = recv_until_eof(conn, prefix=tag)
        time.sleep(0.2)
        conn.sendall(d[PRE:])
        conn.shutdown(socket.SHUT_WR)
        conn.close()
        res[i] = (n, h)
    return handler


def node_client_to_inbound():
    require_hbone()
    N = 3
    ups = [tagged(i, 700) for i in range(N)]
    downs = [gen_bytes(800 + i, PRE + POST) for i in range(N)]
    res = {}
    target = TargetServer(exchange_target(res, lambda i: downs[i]), conn_timeout=TIMEOUT)
    tmp = tempfile.mkdtemp(prefix="ringtunnel-interop-")
    node = None
    try:
        B = start_inbound()
        mb = len(proxy_access_kv(B))
        refused = ("127.0.0.1", free_port())
        specs = []
        for i in range(N):
            path = os.path.join(tmp, "up%d" % i)
            with open(path, "wb") as f:
                f.write(ups[i])
            specs += ["--stream", "%s,%s" % (fmt_addr(*target.addr), path)]
        specs += ["--stream", "%s,%s" % (fmt_addr(*refused), path)]
        specs += ["--stream", "localhost:%d,%s" % (target.addr[1], path)]
        node = NodeProc(["client", "--connect", fmt_addr(*B.hbone_addr), "--ca", ca(),
                         "--cert", cert("node-a"), "--key", key("node-a"),
                         "--timeout-ms", str(int(TIMEOUT * 1000))] + specs)
        done = node.wait_event(lambda e: e.get("event") == "done", TIMEOUT + 5, "'done' line")
        ev = node.events()
        sess = [e for e in ev if e.get("event") == "session"]
        check(sess and sess[0].get("peer_san") == "URI:" + ID_B and sess[0].get("alpn") == "h2",
              "node's session: %r (expected peer_san URI:%s, alpn h2)" % (sess, ID_B))
        streams = {e["index"]: e for e in ev if e.get("event") == "stream"}
        for i in range(N):
            r = streams.get(i)
            check(r is not None, "node reported nothing for stream %d: %s" % (i, node.text()))
            check(r["status"] == 200,
                  "stream %d: status %r, expected 200 (%r)" % (i, r["status"], r))
            check(r["ended"] and not r["error"] and r["recv_len"] == PRE + POST
                  and r["recv_sha256"] == sha256_hex(downs[i]),
                  "stream %d: node received %d bytes (sha %s, ended %s, error %s), expected %d"
                  " (sha %s)" % (i, r["recv_len"], r["recv_sha256"][:12], r["ended"], r["error"],
                                 PRE + POST, sha256_hex(downs[i])[:12]))
        target.join(TIMEOUT)
        for i in range(N):
            check(res.get(i) == (MAIN, sha256_hex(ups[i])),
                  "stream %d: target received %r, expected %d bytes (sha %s)"
                  % (i, res.get(i), MAIN, sha256_hex(ups[i])[:12]))
        log("node client, %d streams on one session: 200, %d bytes up and %d down byte-exact,"
            " each direction ended on its own; B's identity %s" % (N, MAIN, PRE + POST, ID_B))
        check(streams.get(N, {}).get("status") == 503,
              "CONNECT to a port where nothing listens: node saw %r, expected status 503"
              % streams.get(N))
        check(streams.get(N + 1, {}).get("status") == 400,
              "CONNECT to localhost:port (a name): node saw %r, expected status 400"
              % streams.get(N + 1))
        log("refused target: 503; a name as :authority: 400 (done ok=%s as expected: False)"
            % done.get("ok"))
        t = fmt_addr(*target.addr)
        es = wait_access_kv(B, lambda e: e.get("target") == t and e.get("end") == "closed", N,
                            10, mb, "B's end=closed lines")
        for e in es:
            check_kv(e, bytes_up=MAIN, bytes_down=PRE + POST, src_identity=ID_A,
                     dst_identity=ID_B)
        wait_access_kv(B, lambda e: e.get("target") == fmt_addr(*refused)
                       and e.get("end") == "connect_refused", 1, 10, mb,
                       "B's end=connect_refused line")
        log("B's log: %d lines end=closed with the counts and identities; one connect_refused" % N)
        B.stop_ok()
    finally:
        if node:
            node.close()
        target.close()
        shutil.rmtree(tmp, True)


def start_node_server():
    node = NodeProc(["server", "--listen", "127.0.0.1:0", "--ca", ca(), "--cert", cert("node-b"),
                     "--key", key("node-b")])
    port = node.wait_event(lambda e: e.get("event") == "listening", 15, "'listening'")["port"]
    return node, ("127.0.0.1", port)


def outbound_to_node_server():
    require_hbone()
    N = 3
    ups = [tagged(i, 900) for i in range(N)]
    downs = [gen_bytes(1000 + i, PRE + POST) for i in range(N)]
    res = {}
    target = TargetServer(exchange_target(res, lambda i: downs[i]), conn_timeout=TIMEOUT)
    node = None
    try:
        node, naddr = start_node_server()
        la = ("127.0.0.1", free_port())
        A = start_outbound([(la, naddr, target.addr, ID_B)])
        got = {}
        names = {}

        def client(i):
            s = connect(la, TIMEOUT)
            try:
                names[i] = sock_addr_str(s.getsockname())
                s.sendall(ups[i][:8])
                first = recv_exact(s, PRE)
                s.sendall(ups[i][8:])
                s.shutdown(socket.SHUT_WR)
                n, h = recv_until_eof(s, prefix=first)
                got[i] = (n, h)
            finally:
                s.close()

        th = Threads()
        for i in range(N):
            th.start(client, i, name="client-%d" % i)
        th.join(TIMEOUT * 2, "clients")
        target.join(TIMEOUT)
        for i in range(N):
            check(got.get(i) == (PRE + POST, sha256_hex(downs[i])),
                  "client %d received %r, expected %d bytes (sha %s)"
                  % (i, got.get(i), PRE + POST, sha256_hex(downs[i])[:12]))
            check(res.get(i) == (MAIN, sha256_hex(ups[i])),
                  "target (stream %d) received %r, expected %d bytes (sha %s)"
                  % (i, res.get(i), MAIN, sha256_hex(ups[i])[:12]))
        log("%d clients through A to the node server: byte-exact both ways, half-close each way"
            % N)
        conns = [e for e in node.events() if e.get("event") == "connect"]
        check(len(conns) == N, "node saw %d CONNECT streams, expected %d: %s"
              % (len(conns), N, node.text()[-1500:]))
        fwd_seen = set()
        tps = set()
        for e in conns:
            check(e.get("peer_san") == "URI:" + ID_A,
                  "node saw client certificate SAN %r, expected URI:%s" % (e.get("peer_san"), ID_A))
            check(e.get("alpn") == "h2" and e.get("tls") == "TLSv1.3",
                  "node's session: alpn %r, %r (expected h2, TLSv1.3)"
                  % (e.get("alpn"), e.get("tls")))
            check(e.get("authority") == fmt_addr(*target.addr),
                  "node saw :authority %r, expected %s" % (e.get("authority"),
                                                          fmt_addr(*target.addr)))
            h = e.get("headers", {})
            fwd = h.get("forwarded")
            check(fwd is not None and fwd.startswith('for="') and fwd.endswith('"'),
                  "forwarded header %r, expected for=\"<client ip:port>\" (headers %r)" % (fwd, h))
            fwd_seen.add(fwd[5:-1])
            tp = h.get("traceparent")
            check(traceparent_ok(tp), "traceparent header %r is not 00-<32 hex>-<16 hex>-01" % tp)
            tps.add(tp)
        check(fwd_seen == set(names.values()),
              "forwarded headers name %s, the clients were %s" % (sorted(fwd_seen),
                                                                   sorted(names.values())))
        check(len(tps) == N, "traceparent repeated across streams: %s" % sorted(tps))
        log("node saw: SAN URI:%s, h2/TLSv1.3, :authority %s, forwarded for= each client,"
            " %d distinct traceparents" % (ID_A, fmt_addr(*target.addr), N))
        es = wait_access_kv(A, lambda e: e.get("client") in set(names.values()), N, 10, 0,
                            "A's lines")
        for e in es:
            check_kv(e, target=fmt_addr(*target.addr), bytes_up=MAIN, bytes_down=PRE + POST,
                     end="closed", src_identity=ID_A, dst_identity=ID_B)
        log("A's log: end=closed, bytes, src=%s dst=%s" % (ID_A, ID_B))
        A.stop_ok()
    finally:
        if node:
            node.close()
        target.close()


def outbound_node_refuses():
    require_hbone()
    node = None
    try:
        node, naddr = start_node_server()
        refused = ("127.0.0.1", free_port())
        la = ("127.0.0.1", free_port())
        A = start_outbound([(la, naddr, refused, ID_B)])
        s, me, how = connect_bound(la, TIMEOUT)
        try:
            if how is None:
                try:
                    s.sendall(b"hello")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                w = expect_reset(s, 3.0, "client")
                log("client reset %.2f s after connecting" % w)
        finally:
            s.close()
        node.wait_event(lambda e: e.get("event") == "refused", 5, "'refused' line")
        e = wait_access_kv(A, lambda e: e.get("client") == me, 1, 10, 0, "A's line")[0]
        check_kv(e, end="refused", target=fmt_addr(*refused))
        log("node answered 503; A: end=refused")
        A.stop_ok()
    finally:
        if node:
            node.close()


if __name__ == "__main__":
    TESTS = [
        ("node-client-to-inbound", node_client_to_inbound),
        ("outbound-to-node-server", outbound_to_node_server),
        ("outbound-node-refuses", outbound_node_refuses),
    ]
    # HBONE_ONLY=name1,name2 (or RINGTUNNEL_IT_ONLY) runs only those sub-tests
    run_tests("hbone-interop", TESTS, 200, only_alias="HBONE_ONLY")

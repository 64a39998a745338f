#!/usr/bin/env python3
"""mesh_hosts works, without ringtunnel: two network namespaces joined by a
veth pair, the capture rules of a node (iptables nat), and the clean-up.
A tiny capturing proxy (capture_proxy.py) stands in for ringtunnel's
outbound listener. Needs root and Debian's iptables (scripts/deps.sh).

topology: both hosts reach each other over IPv4 and IPv6; their addresses are
  in no other namespace (not in this machine's own); the namespaces are in
  `ip netns list` while they live and gone after close().
outbound-v4, outbound-v6: in host A, with the capture rules and the capturing
  proxy on 15001, a client connects to a server in host B. The server echoes
  200 KB byte-exact; the proxy saw exactly one connection, the client's, with
  SO_ORIGINAL_DST = the server's address; the server saw exactly one
  connection, from the proxy's upstream socket (not from the client), which
  carries mark 0x539 (ss); no loop.
outbound-vip: the same to an address in no host's subnet (B has it on lo):
  without Host.route() A cannot connect to it; with it, captured and relayed.
outbound-fails-without-redirect / outbound-fails-without-mark-skip: the same
  check, with the rules lacking the REDIRECT to 15001 (the client reaches the
  server directly: "not captured") or lacking the mark exclusion (the proxy's
  own upstream connection comes back to it: "capture loop"), must fail.
inbound-v4, inbound-v6: in host B, with the capture rules, a client in A
  connects to B's workload address (IPv4: also a second workload address) on
  a port nothing listens on: B's 15006 listener accepts it, SO_ORIGINAL_DST
  is (that address, that port), the bytes arrive; a connection to B:15008
  reaches the 15008 listener, not 15006.
inbound-fails-without-redirect: the inbound check without the REDIRECT to
  15006 fails (connection refused).
ringtunnel-in-host: the binary under test started in host B (HostProxy) with
  --forward B:9000=tcp://127.0.0.1:P (an echo server in B): it runs in B's
  namespace, a client in A is relayed byte-exact, B's access log names A's
  address, and it exits 0 on SIGTERM.
passing-run-leaves-nothing, sigterm-leaves-nothing, sigkill-then-swept: a
  program that makes hosts, installs rules, starts a process in A and holds a
  socket in B, then passes / is sent SIGTERM / is SIGKILLed. Passing and
  SIGTERM: its namespaces are gone, its process is dead, its TMPDIR is empty.
  SIGKILL: its process is dead (PDEATHSIG), its namespaces stay until the
  next MeshHosts deletes them (their PID is gone).
"""

import os
import re
import signal
import socket
import sys
import tempfile
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from harness import (TestFailure, Threads, binary, check, check_kv, echo_handler,  # noqa: E402
                     fail, fmt_addr, forward_arg, gen_bytes, log, reap, recv_exact,
                     recv_until_eof, run_tests, sha256_hex, spawn)
import mesh_hosts  # noqa: E402
from mesh_hosts import (HBONE_PORT, INBOUND_PLAINTEXT_PORT, MARK, OUTBOUND_PORT,  # noqa: E402
                        MeshHosts, netns_names, original_dst, sweep_stale)

CAPTURE_PROXY = os.path.join(HERE, "capture_proxy.py")
SECOND_WORKLOAD_IP = "10.250.0.12"
VIP_NET, VIP = "10.251.0.0/24", "10.251.0.10"   # a "service VIP": B has it on lo


def _our_names():
    return [n for n in netns_names() if n.startswith("%s-%d-" % (mesh_hosts.PREFIX,
                                                                os.getpid()))]


# ---------------------------------------------------------------------------


def topology():
    with MeshHosts() as mesh:   # the constructor's probe: TCP each way, IPv4 and IPv6
        names = netns_names()
        for h in mesh.hosts:
            check(h.name in names, "%s is not in `ip netns list`: %s" % (h.name, names))
            text = h.check_run(["ip", "-o", "addr", "show", "dev", "veth0"])
            for ip in (h.ip, h.ip6):
                check(" %s/" % ip in text, "%s has no %s on veth0:\n%s" % (h.name, ip, text))
        rc, text, err = mesh_hosts._cmd(["ip", "-o", "addr"])
        check(rc == 0, "`ip -o addr` failed: %s" % err)
        for ip in (mesh.a.ip, mesh.b.ip, mesh.a.ip6, mesh.b.ip6):
            check(" %s/" % ip not in text, "%s is on this machine's own network namespace:\n%s"
                  % (ip, text))
        log("%s and %s joined by veth0: %s <-> %s, %s <-> %s; none of them outside"
            % (mesh.a.name, mesh.b.name, mesh.a.ip, mesh.b.ip, mesh.a.ip6, mesh.b.ip6))
        made = [h.name for h in mesh.hosts]
    left = [n for n in made if n in netns_names()]
    check(not left, "close() left namespaces: %s" % left)
    log("close(): both namespaces are gone from `ip netns list`")


# ---------------------------------------------------------------------------
# Outbound: OUTPUT -> REDIRECT 15001, SO_ORIGINAL_DST, mark 0x539 not captured
# ---------------------------------------------------------------------------

_LINE_RE = re.compile(r"^([a-z-]+)((?: [a-z]+=\S+)*)$")


def proxy_lines(path):
    with open(path, "rb") as f:
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = _LINE_RE.match(line)
        if m and m.group(1) != "listening":
            d = dict(kv.split("=", 1) for kv in m.group(2).split())
            d["kind"] = m.group(1)
            out.append(d)
    return out


def start_capture_proxy(host):
    fd, path = tempfile.mkstemp(prefix="capture-proxy-", suffix=".out")
    with os.fdopen(fd, "wb") as f:
        p = host.spawn([sys.executable, CAPTURE_PROXY, "--mark", hex(MARK),
                        "127.0.0.1:%d" % OUTBOUND_PORT, "[::1]:%d" % OUTBOUND_PORT],
                       stdout=f, stderr=f, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    host.wait_listening(p, [("127.0.0.1", OUTBOUND_PORT), ("::1", OUTBOUND_PORT)], 10,
                        what="capture proxy", tail=lambda: text_of(path)[-2000:])
    return p, path


def marks_in(host, local):
    """The fwmark `ss -e` shows for the TCP socket whose local address is
    `local` in host (None: the socket has no mark; fails if there is no such
    socket)."""
    text = host.check_run(["ss", "-tnHe", "state", "established"])
    for line in text.splitlines():
        words = line.split()
        if len(words) > 2 and words[2] == local:
            m = re.search(r"\bfwmark:(0x[0-9a-f]+)", line)
            return int(m.group(1), 16) if m else None
    fail("no established socket %s in %s:\n%s" % (local, host.name, text))


def outbound(mesh, dst_ip, **rules_kw):
    """A client in A connects to B's server on dst_ip, through A's capture
    rules and the capturing proxy. Fails when any of the assertions in the
    docstring fails."""
    A, B = mesh.a, mesh.b
    v6 = ":" in dst_ip
    peers = []

    def handler(conn, peer):
        peers.append(fmt_addr(*peer[:2]))
        echo_handler(conn, peer)

    srv = B.server(handler, dst_ip, 0, conn_timeout=10)
    try:
        rules = A.install_capture(**rules_kw)
        log("A's nat rules (IPv%s):\n%s" % ("6" if v6 else "4", "\n".join(
            "      " + l for l in rules.restore_input("6" if v6 else "4").splitlines())))
        cp, cp_out = start_capture_proxy(A)
        dst = (dst_ip, srv.addr[1])
        data = gen_bytes(11, 200000)
        c = A.connect(dst, timeout=5)
        me = fmt_addr(*c.getsockname()[:2])
        got, err, fwmark = None, None, "n/a"
        try:
            c.sendall(data[:1000])
            first = recv_exact(c, 1000)
            check(first == data[:1000], "the first 1000 bytes came back altered")
            caps = [d for d in proxy_lines(cp_out) if d["kind"] == "captured"]
            if len(caps) == 1:
                fwmark = marks_in(A, caps[0]["upstream"])
            th = Threads()
            th.start(lambda: (c.sendall(data[1000:]), c.shutdown(socket.SHUT_WR)),
                     name="client-send")
            got = recv_until_eof(c, limit=len(data), prefix=first)
            th.join(10, "client sender")
        except (OSError, TestFailure) as e:
            err = e
        finally:
            c.close()
        time.sleep(0.1)
        lines = proxy_lines(cp_out)
        loops = [d for d in lines if d["kind"] == "loop"]
        check(not loops, "capture loop: the proxy's own upstream connection was captured"
              " again (%d times): %s" % (len(loops), loops))
        caps = [d for d in lines if d["kind"] == "captured"]
        check(caps, "not captured: the capture proxy on %d saw no connection (the client"
              " reached %s %s); proxy output: %s" % (OUTBOUND_PORT, fmt_addr(*dst),
                                                     "directly" if peers == [me] else
                                                     "with peers %s" % peers, lines))
        check(len(caps) == 1 and len(lines) == 1,
              "the capture proxy saw %d connections, expected 1: %s" % (len(lines), lines))
        cap = caps[0]
        check(cap["client"] == me, "the proxy's connection came from %s, the client is %s"
              % (cap["client"], me))
        check(cap["orig"] == fmt_addr(*dst), "SO_ORIGINAL_DST %s, expected %s"
              % (cap["orig"], fmt_addr(*dst)))
        check(err is None, "echo through the capture failed: %s" % err)
        check(got == (len(data), sha256_hex(data)),
              "echo: %d bytes back (sha %s), sent %d" % (got[0], got[1][:12], len(data)))
        srv.join(5)
        check(peers == [cap["upstream"]], "the server saw connections from %s, expected one"
              " from the proxy's upstream socket %s" % (peers, cap["upstream"]))
        check(fwmark == MARK, "the proxy's upstream socket %s has fwmark %s in ss, expected"
              " 0x%x" % (cap["upstream"], fwmark, MARK))
        reap(cp)
        log("client %s -> %s: captured on %d, SO_ORIGINAL_DST %s, relayed from %s (fwmark"
            " 0x%x), 200000 bytes echoed byte-exact, the server saw only the proxy"
            % (me, fmt_addr(*dst), OUTBOUND_PORT, cap["orig"], cap["upstream"], fwmark))
    finally:
        srv.close()


def outbound_v4():
    with MeshHosts() as mesh:
        outbound(mesh, mesh.b.ip)


def outbound_v6():
    with MeshHosts() as mesh:
        outbound(mesh, mesh.b.ip6)


def outbound_vip():
    with MeshHosts() as mesh:
        A, B = mesh.a, mesh.b
        B.add_address(VIP + "/32", dev="lo", workload=False)
        try:
            A.connect((VIP, 9), timeout=2).close()
            fail("A reached %s before it had a route to it" % VIP)
        except OSError as e:
            log("without a route, A's connect to %s: %s" % (VIP, e))
        A.route(VIP_NET)
        outbound(mesh, VIP)


def must_fail(fn, want, what):
    try:
        fn()
    except TestFailure as e:
        check(want in str(e), "%s failed, but not for the expected reason (%r): %s"
              % (what, want, e))
        log("%s fails as it must: %s" % (what, str(e).splitlines()[0][:200]))
        return
    fail("%s passed; it must fail" % what)


def outbound_fails_without_redirect():
    with MeshHosts() as mesh:
        must_fail(lambda: outbound(mesh, mesh.b.ip, outbound=False), "not captured",
                  "the outbound check without the REDIRECT to %d" % OUTBOUND_PORT)


def outbound_fails_without_mark_skip():
    with MeshHosts() as mesh:
        must_fail(lambda: outbound(mesh, mesh.b.ip, skip_marked=False), "capture loop",
                  "the outbound check without the mark 0x%x exclusion" % MARK)


# ---------------------------------------------------------------------------
# Inbound: PREROUTING -> REDIRECT 15006 (not 15008)
# ---------------------------------------------------------------------------


def free_port_in(host, family):
    have = host.listen_ports()
    for port in range(40000, 41000):
        if (family, port) not in have:
            return port
    fail("no free port in %s" % host.name)


def inbound(mesh, v6, **rules_kw):
    A, B = mesh.a, mesh.b
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    wild = "::" if v6 else "0.0.0.0"
    ips = [B.ip6] if v6 else [B.ip, SECOND_WORKLOAD_IP]
    if not v6:
        B.add_address(SECOND_WORKLOAD_IP + "/32")
    B.install_capture(**rules_kw)
    l6 = B.listen((wild, INBOUND_PLAINTEXT_PORT))
    l8 = B.listen((wild, HBONE_PORT))
    conns = [l6, l8]
    try:
        for ls in (l6, l8):
            ls.settimeout(3)
        for ip in ips:
            port = free_port_in(B, fam)
            try:
                c = A.connect((ip, port), timeout=3)
            except ConnectionRefusedError:
                fail("not redirected: %s refused %s (nothing listens there and PREROUTING"
                     " did not send it to %d)" % (B.name, fmt_addr(ip, port),
                                                  INBOUND_PLAINTEXT_PORT))
            conns.append(c)
            me = fmt_addr(*c.getsockname()[:2])
            payload = ("to %s from %s" % (fmt_addr(ip, port), me)).encode()
            c.sendall(payload)
            s, peer = l6.accept()
            conns.append(s)
            s.settimeout(3)
            check(fmt_addr(*peer[:2]) == me, "%d accepted %s, the client is %s"
                  % (INBOUND_PLAINTEXT_PORT, fmt_addr(*peer[:2]), me))
            od = original_dst(s)
            check(od == (ip, port), "SO_ORIGINAL_DST on %d: %s, expected %s"
                  % (INBOUND_PLAINTEXT_PORT, fmt_addr(*od), fmt_addr(ip, port)))
            check(recv_exact(s, len(payload)) == payload, "the bytes arrived altered")
            log("%s -> %s: accepted on %s:%d, SO_ORIGINAL_DST %s, bytes intact"
                % (me, fmt_addr(ip, port), B.name, INBOUND_PLAINTEXT_PORT, fmt_addr(*od)))
        c = A.connect((ips[0], HBONE_PORT), timeout=3)
        conns.append(c)
        me = fmt_addr(*c.getsockname()[:2])
        s, peer = l8.accept()
        conns.append(s)
        check(fmt_addr(*peer[:2]) == me, "%d accepted %s, the client is %s"
              % (HBONE_PORT, fmt_addr(*peer[:2]), me))
        l6.settimeout(0.3)
        try:
            extra, peer = l6.accept()
            conns.append(extra)
            fail("%d also accepted %s (a connection to %d must not be redirected)"
                 % (INBOUND_PLAINTEXT_PORT, fmt_addr(*peer[:2]), HBONE_PORT))
        except socket.timeout:
            pass
        log("%s -> %s: reached the %d listener itself, not %d"
            % (me, fmt_addr(ips[0], HBONE_PORT), HBONE_PORT, INBOUND_PLAINTEXT_PORT))
    finally:
        for s in conns:
            s.close()


def inbound_v4():
    with MeshHosts() as mesh:
        inbound(mesh, v6=False)


def inbound_v6():
    with MeshHosts() as mesh:
        inbound(mesh, v6=True)


def inbound_fails_without_redirect():
    with MeshHosts() as mesh:
        must_fail(lambda: inbound(mesh, v6=False, inbound=False), "not redirected",
                  "the inbound check without the REDIRECT to %d" % INBOUND_PLAINTEXT_PORT)


# ---------------------------------------------------------------------------
# ringtunnel in a host (the API the mesh tests use)
# ---------------------------------------------------------------------------


def ringtunnel_in_host():
    with MeshHosts() as mesh:
        A, B = mesh.a, mesh.b
        srv = B.server(echo_handler, "127.0.0.1", 0, conn_timeout=10)
        try:
            listen = (B.ip, 9000)
            P = B.proxy(["--forward", forward_arg(listen, srv.addr)], listens=[listen])
            check(B.in_host(P.pid) and not A.in_host(P.pid),
                  "ringtunnel (pid %d) is not in %s's network namespace" % (P.pid, B.name))
            c = A.connect(listen, timeout=5)
            me = fmt_addr(*c.getsockname()[:2])
            try:
                data = gen_bytes(5, 50000)
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                got = recv_until_eof(c, limit=len(data))
            finally:
                c.close()
            check(got == (len(data), sha256_hex(data)), "echo through ringtunnel in %s:"
                  " %d bytes back, sent %d" % (B.name, got[0], len(data)))
            e = P.wait_access([me])[me]
            check_kv(e, listener=fmt_addr(*listen), target=fmt_addr(*srv.addr), end="closed")
            P.stop_ok()
            log("ringtunnel in %s (pid %d): %s from %s relayed to %s, 50000 bytes echoed,"
                " access line %r" % (B.name, P.pid, fmt_addr(*listen), me,
                                     fmt_addr(*srv.addr), e["_line"]))
        finally:
            srv.close()


# ---------------------------------------------------------------------------
# Clean-up on every path
# ---------------------------------------------------------------------------

PROGRAM = r'''
import os, sys, time
sys.dont_write_bytecode = True
sys.path.insert(0, os.environ["RT_IT_DIR"])
import harness
from harness import run_tests
from mesh_hosts import MeshHosts

mode = os.environ["RT_IT_MODE"]


def work():
    mesh = MeshHosts()      # not closed here: the cleanup registry does it
    mesh.b.install_capture()
    p = mesh.a.spawn(["sleep", "60"])
    held = mesh.b.listen((mesh.b.ip, 0))   # an in-process socket in B's namespace
    print("NETNS=%s,%s" % (mesh.a.name, mesh.b.name), flush=True)
    print("CHILD_PID=%d" % p.pid, flush=True)
    print("RUN_DIR=%s" % harness.RUN_DIR, flush=True)
    if mode != "pass":
        print("READY", flush=True)
        time.sleep(30)


run_tests("mesh-program-" + mode, [("work", work)], 40)
'''


def program(mode):
    """Start PROGRAM in `mode` with TMPDIR an empty directory of its own;
    returns (process, output path, its TMPDIR). Waits for READY unless `pass`."""
    d = harness.RUN_DIR
    prog = os.path.join(d, "program.py")
    if not os.path.exists(prog):
        with open(prog, "w") as f:
            f.write(PROGRAM)
    tmp = os.path.join(d, "tmp-" + mode)
    os.mkdir(tmp)
    env = dict(os.environ, TMPDIR=tmp, RT_IT_DIR=HERE, RT_IT_MODE=mode)
    for k in ("RINGTUNNEL_IT_ONLY", "RINGTUNNEL_IT_ORDER", "RINGTUNNEL_IT_KEEP"):
        env.pop(k, None)
    out = os.path.join(d, "program-%s.out" % mode)
    with open(out, "wb") as f:
        p = spawn([sys.executable, prog, binary()], stdout=f, stderr=f, env=env)
    if mode != "pass":
        end = time.monotonic() + 15
        while "READY" not in text_of(out):
            check(p.poll() is None, "the program exited (%s) before READY:\n%s"
                  % (p.returncode, text_of(out)))
            check(time.monotonic() < end, "the program is not READY after 15 s:\n%s"
                  % text_of(out))
            time.sleep(0.05)
    return p, out, tmp


def text_of(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def value(text, key):
    m = re.search(r"^%s=(.*)$" % key, text, re.M)
    check(m, "the program did not print %s=; output:\n%s" % (key, text))
    return m.group(1)


def wait_exit(p, timeout=20):
    try:
        return p.wait(timeout=timeout)
    except Exception:
        reap(p, term_timeout=1)
        fail("the program (pid %d) did not exit within %d s" % (p.pid, timeout))


def pid_dead(pid, what):
    end = time.monotonic() + 5
    while True:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state == "Z" or time.monotonic() > end:
            check(state == "Z", "%s (pid %d) is still running (state %s)" % (what, pid, state))
            return
        time.sleep(0.05)


def after_program(p, out, tmp, want_rc):
    rc = wait_exit(p)
    text = text_of(out)
    for line in text.splitlines():
        log("| " + line)
    check(rc == want_rc, "the program's exit code is %s, expected %s" % (rc, want_rc))
    names = value(text, "NETNS").split(",")
    pid_dead(int(value(text, "CHILD_PID")), "the program's process in host A")
    return names


def passing_run_leaves_nothing():
    p, out, tmp = program("pass")
    names = after_program(p, out, tmp, 0)
    left = [n for n in names if n in netns_names()]
    check(not left, "a passing run left namespaces: %s" % left)
    check(not os.listdir(tmp), "a passing run left in its TMPDIR: %s" % os.listdir(tmp))
    log("passing run: namespaces %s gone, its process dead, its TMPDIR empty" % names)


def sigterm_leaves_nothing():
    p, out, tmp = program("term")
    text = text_of(out)
    names = value(text, "NETNS").split(",")
    have = netns_names()
    check(all(n in have for n in names), "the program's namespaces %s are not listed: %s"
          % (names, have))
    os.kill(p.pid, signal.SIGTERM)
    names = after_program(p, out, tmp, 128 + signal.SIGTERM)
    left = [n for n in names if n in netns_names()]
    check(not left, "after SIGTERM, namespaces left: %s" % left)
    check(not os.listdir(tmp), "after SIGTERM, left in its TMPDIR: %s" % os.listdir(tmp))
    log("SIGTERM mid-run: exit 143, namespaces %s gone, its process dead, its TMPDIR empty"
        % names)


def sigkill_then_swept():
    p, out, tmp = program("kill")
    os.kill(p.pid, signal.SIGKILL)
    names = after_program(p, out, tmp, -signal.SIGKILL)
    have = netns_names()
    check(all(n in have for n in names), "after SIGKILL the namespaces %s are already gone"
          " (%s): then this sub-test shows nothing" % (names, have))
    swept = sweep_stale()
    check(all(n in swept for n in names), "sweep_stale() deleted %s, expected %s"
          % (swept, names))
    left = [n for n in names if n in netns_names()]
    check(not left, "after the sweep, namespaces left: %s" % left)
    log("SIGKILL mid-run: its process died with it (PDEATHSIG); namespaces %s stayed and the"
        " next MeshHosts' sweep deleted them" % names)


def nothing_left():
    left = _our_names()
    check(not left, "namespaces of this run still exist: %s" % left)


if __name__ == "__main__":
    binary()
    mesh_hosts.require_tools()
    before = _our_names()
    check(not before, "namespaces with this PID exist already: %s" % before)
    run_tests("mesh-hosts", [
        ("topology", topology),
        ("outbound-v4", outbound_v4),
        ("outbound-v6", outbound_v6),
        ("outbound-vip", outbound_vip),
        ("outbound-fails-without-redirect", outbound_fails_without_redirect),
        ("outbound-fails-without-mark-skip", outbound_fails_without_mark_skip),
        ("inbound-v4", inbound_v4),
        ("inbound-v6", inbound_v6),
        ("inbound-fails-without-redirect", inbound_fails_without_redirect),
        ("ringtunnel-in-host", ringtunnel_in_host),
        ("passing-run-leaves-nothing", passing_run_leaves_nothing),
        ("sigterm-leaves-nothing", sigterm_leaves_nothing),
        ("sigkill-then-swept", sigkill_then_swept),
        ("nothing-left", nothing_left),
    ], 50)

#!/usr/bin/env python3
"""TCP keepalive on the proxy's client-side and upstream sockets (--tcp-keepalive-time,
--tcp-keepalive-interval, --tcp-keepalive-probes; defaults 180 s, 180 s, 9).

The proxy's own sockets are read from outside: each of its socket descriptors is duplicated
into the test with pidfd_getfd(2) (root), identified by its addresses, and asked for
SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL and TCP_KEEPCNT; `ss -tnoe` shows the kernel's
keepalive timer on the same sockets.

defaults: a TCP relay's accepted socket and its upstream socket have keepalive on with
  180/180/9, and ss shows timer:(keepalive,...) on the accepted one.
flags: --tcp-keepalive-time 60 --tcp-keepalive-interval 7 --tcp-keepalive-probes 4 give
  60/7/4 on both, and ss's keepalive timer is under a minute.
off: --tcp-keepalive-time off: SO_KEEPALIVE is off on both and ss shows no keepalive timer.
hbone: A (--forward hbone://) and B (--hbone-listen), with --tcp-keepalive-time 33: A's
  client socket, A's connection to B, B's accepted HBONE socket and B's upstream socket to the
  target all have 33 s.
bad-values: --tcp-keepalive-probes 200, --tcp-keepalive-time -1, --tcp-keepalive-interval 5s
  exit 2 naming the flag."""

import ctypes
import os
import re
import socket
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, TargetServer, check, forward_arg, free_port, log,  # noqa: E402
                     run_tests, run_to_exit, wait_until)
from hbone_common import (ID_B, LOOPBACK_ALLOW, hbone_forward_arg, identity_args,  # noqa: E402
                          require_hbone)

DEADLINE = 90
SYS_PIDFD_GETFD = 438  # the same number on every architecture
_libc = ctypes.CDLL(None, use_errno=True)


def hold_handler(conn, peer):
    try:
        conn.recv(1)  # until the client closes
    except OSError:
        pass
    conn.close()


def proxy_sockets(pid):
    """[(local, remote, keepalive (on, idle, interval, count))] of the TCP sockets of `pid`
    that are connected."""
    pidfd = os.pidfd_open(pid)
    out = []
    try:
        for name in os.listdir("/proc/%d/fd" % pid):
            try:
                if not os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                continue
            try:
                s = socket.socket(fileno=fd)
            except OSError:
                os.close(fd)
                continue
            try:
                # TCP only: the proxy also has AF_UNIX stream sockets at times (a start-up
                # probe's socketpair), where TCP options are EOPNOTSUPP.
                if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET,
                                                                    socket.AF_INET6):
                    continue
                try:
                    remote = s.getpeername()[:2]
                except OSError:
                    continue  # a listener
                local = s.getsockname()[:2]
                ka = (s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                      s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                      s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                      s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT))
                out.append((local, remote, ka))
            finally:
                s.close()
    finally:
        os.close(pidfd)
    return out


def socket_of(sockets, local=None, remote=None):
    found = [x for x in sockets if (local is None or x[0] == local) and
             (remote is None or x[1] == remote)]
    check(len(found) == 1, "sockets with local %s remote %s: %r" % (local, remote, sockets))
    return found[0][2]


def ss_timer(side, port):
    """The timer field ss shows on the established socket whose `side` ("sport" or "dport") is
    `port`, or ''."""
    r = subprocess.run(["ss", "-tnoe", "state", "established", "( %s = :%d )" % (side, port)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=10)
    lines = [ln for ln in r.stdout.decode().splitlines()[1:] if ln.strip()]
    check(len(lines) == 1, "ss: sockets with %s %d: %r" % (side, port, lines))
    m = re.search(r"timer:\(([^)]*)\)", lines[0])
    return m.group(1) if m else ""


def relay_case(extra, want, timer_check):
    """A relay with `extra` flags: ss shows the kernel's keepalive timer on its accepted socket
    (local port: the listener's) and its upstream one (remote port: the target's), with the
    default direct descriptors; with --fixed-files off the relay's sockets are in its descriptor
    table, and their options are read."""
    target = TargetServer(hold_handler)
    listen = ("127.0.0.1", free_port())
    tport = target.addr[1]
    p = Proxy(["--forward", forward_arg(listen, ("127.0.0.1", tport))] + list(extra),
              listens=[listen])
    c = socket.create_connection(listen, timeout=10)
    wait_until(lambda: target.accepted >= 1, 5, what="the relay's upstream connection")
    timers = (ss_timer("sport", listen[1]), ss_timer("dport", tport))
    for t in timers:
        timer_check(t)
    c.close()
    p.stop_ok()

    listen = ("127.0.0.1", free_port())
    p = Proxy(["--forward", forward_arg(listen, ("127.0.0.1", tport)), "--fixed-files", "off"] +
              list(extra), listens=[listen])
    c = socket.create_connection(listen, timeout=10)
    client = c.getsockname()[:2]
    found = []

    def both():
        found[:] = proxy_sockets(p.pid)
        return len(found) >= 2
    wait_until(both, 5, what="the relay's two sockets")
    accepted = socket_of(found, remote=client)
    upstream = socket_of(found, remote=("127.0.0.1", tport))
    check(accepted == want, "accepted socket: keepalive %r, expected %r" % (accepted, want))
    check(upstream == want, "upstream socket: keepalive %r, expected %r" % (upstream, want))
    log("accepted and upstream sockets: SO_KEEPALIVE %d, idle %d s, interval %d s, %d probes; "
        "ss: timer:(%s) and timer:(%s)" % (want + timers))
    c.close()
    p.stop_ok()
    target.close()


def seconds_of(timer):
    """'keepalive,2min59sec,0' -> 179."""
    m = re.match(r"keepalive,(?:(\d+)min)?(?:(\d+)(?:\.\d+)?sec)?", timer)
    check(m, "ss shows no keepalive timer: %r" % timer)
    return int(m.group(1) or 0) * 60 + int(m.group(2) or 0)


def defaults():
    relay_case([], (1, 180, 180, 9),
               lambda t: check(170 <= seconds_of(t) <= 180, "ss timer %r" % t))


def flags():
    relay_case(["--tcp-keepalive-time", "60", "--tcp-keepalive-interval", "7",
                "--tcp-keepalive-probes", "4"], (1, 60, 7, 4),
               lambda t: check(50 <= seconds_of(t) <= 60, "ss timer %r" % t))


def off():
    def no_timer(t):
        check("keepalive" not in t, "ss shows a keepalive timer with keepalive off: %r" % t)
    # The other fields are the kernel's defaults: nothing was set.
    sysctl = []
    for name in ("tcp_keepalive_time", "tcp_keepalive_intvl", "tcp_keepalive_probes"):
        with open("/proc/sys/net/ipv4/" + name) as f:
            sysctl.append(int(f.read()))
    relay_case(["--tcp-keepalive-time", "off"], tuple([0] + sysctl), no_timer)


def hbone():
    require_hbone()
    target = TargetServer(hold_handler)
    b_addr = ("127.0.0.1", free_port())
    ka = ["--tcp-keepalive-time", "33"]
    pb = Proxy(["--hbone-listen", "%s:%d" % b_addr] + LOOPBACK_ALLOW + identity_args("node-b")
               + ka, listens=[b_addr])
    a_listen = ("127.0.0.1", free_port())
    pa = Proxy(["--forward", hbone_forward_arg(a_listen, b_addr, ("127.0.0.1", target.addr[1]), ID_B)]
               + identity_args("node-a") + ka, listens=[a_listen])
    c = socket.create_connection(a_listen, timeout=10)
    c.sendall(b"x")
    client = c.getsockname()[:2]
    wait_until(lambda: len(proxy_sockets(pb.pid)) >= 2, 5, what="B's two sockets")
    sa, sb = proxy_sockets(pa.pid), proxy_sockets(pb.pid)
    want = (1, 33, 180, 9)
    for what, got in (("A's client socket", socket_of(sa, remote=client)),
                      ("A's connection to B", socket_of(sa, remote=b_addr)),
                      ("B's HBONE socket", socket_of(sb, local=b_addr)),
                      ("B's upstream socket", socket_of(sb, remote=("127.0.0.1", target.addr[1])))):
        check(got == want, "%s: keepalive %r, expected %r" % (what, got, want))
        log("%s: keepalive %r" % (what, got))
    c.close()
    pa.stop_ok()
    pb.stop_ok()
    target.close()


def bad_values():
    for args, flag in ((["--tcp-keepalive-probes", "200"], "--tcp-keepalive-probes"),
                       (["--tcp-keepalive-time", "-1"], "--tcp-keepalive-time"),
                       (["--tcp-keepalive-interval", "5s"], "--tcp-keepalive-interval")):
        rc, out, err = run_to_exit(args)
        check(rc == 2 and flag in err, "%r: exit %s, stderr %r" % (args, rc, err))
        log("%s: %s" % (" ".join(args), err.strip().splitlines()[0]))


TESTS = [
    ("defaults", defaults),
    ("flags", flags),
    ("off", off),
    ("hbone", hbone),
    ("bad-values", bad_values),
]

if __name__ == "__main__":
    run_tests("keepalive", TESTS, DEADLINE)

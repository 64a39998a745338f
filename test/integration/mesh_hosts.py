"""Two "hosts" of a mesh on one machine: network namespaces a test makes itself
(Python 3 stdlib; needs root, `ip` and `nsenter`, and Debian's `iptables` for
the capture rules).

    with MeshHosts() as mesh:            # rtmesh-<pid>-<n>-a and -b, veth0 between them
        A, B = mesh.a, mesh.b
        A.ip, B.ip                       # 10.250.0.1, 10.250.0.2   (veth0, /24)
        A.ip6, B.ip6                     # fd00:250::1, fd00:250::2 (veth0, /64, no DAD)
        B.install_capture()              # the node's iptables rules (below)
        pb = B.proxy([...ringtunnel flags...], listens=[("0.0.0.0", 15008)])
        srv = B.server(echo_handler, B.ip, 8080)   # a harness.TargetServer in B
        s = A.connect((B.ip, 8080))      # a socket made in A's namespace
        A.run(["ss", "-tn"])             # (rc, stdout, stderr) of a bounded command in A
        p = A.spawn([...])               # a long-lived process in A (harness.spawn)

Addresses exist only inside the two namespaces; nothing is added to the
machine's own network namespace. Every name carries this process's PID, so
concurrent runs never collide.

Host (mesh.a, mesh.b):
  .name, .ip, .ip6, .dev ("veth0"), .peer (the other Host)
  inside()                   context manager: this thread's network namespace is
                             the host's within it; a socket made there stays in
                             it (use for in-process servers and clients)
  socket(family), connect(addr, timeout), listen(addr)   sockets of the host
  server(handler, ip, port)  harness.TargetServer listening in the host
  argv(argv)                 argv prefixed with `nsenter --net=/run/netns/NAME --`
  spawn(argv, **popen)       harness.spawn() in the host (registered, killed by
                             PID at the end of the sub-test, dies with the test)
  run(argv, input, timeout)  run to completion, bounded: (rc, stdout, stderr)
  check_run(argv, ...)       the same; fails the test on a non-zero exit
  proxy(args, listens, ...)  HostProxy: ringtunnel in the host (a harness.Proxy,
                             listening checked in the host's namespace)
  wait_listening(proc, listens, timeout)   bounded wait for LISTEN sockets of a
                             process of this host (after checking it is in it)
  add_address(cidr, dev)     one more address on the host (a second workload IP)
  route(cidr)                send cidr out of veth0 to the peer (a service VIP:
                             connect() needs a route before OUTPUT captures it)
  install_capture(...)       the capture rules (see CaptureRules)
  nat_rules()                iptables-save -t nat text of both families

The capture rules of a host running ringtunnel as its node proxy (ztunnel's
dedicated mode: the host is one mesh workload). In the nat table of each
family, in chains of their own so `iptables -t nat -S` shows them apart:

  -A OUTPUT -p tcp -j RT_OUTPUT
      every TCP connection this host opens passes RT_OUTPUT once (nat rules
      see only a connection's first packet; conntrack does the rest)
  -A RT_OUTPUT -m mark --mark 0x539/0xfff -j RETURN
      the proxy's own upstream sockets (SO_MARK 0x539, ringtunnel's --mark)
      are not captured: without this the proxy's connection to the original
      destination would come back to the proxy, a loop
  -A RT_OUTPUT -o lo -j RETURN
      whatever routing keeps on this host (127.0.0.0/8, ::1, the host's own
      addresses: the inbound side handing a connection to the local
      workload) is not captured
  -A RT_OUTPUT -p tcp -j REDIRECT --to-ports 15001
      everything else goes to the outbound listener; REDIRECT of a locally
      made connection rewrites the destination to 127.0.0.1 / ::1 and keeps
      the original, which the listener reads with SO_ORIGINAL_DST
  -A PREROUTING -p tcp -j RT_PREROUTING
      every TCP connection arriving from the wire passes RT_PREROUTING once
  -A RT_PREROUTING -p tcp --dport 15008 -j RETURN
      HBONE arrives as itself, on the HBONE listener
  -A RT_PREROUTING -d <workload ip> -p tcp -j REDIRECT --to-ports 15006
      (one per workload address of the family) any other TCP to the workload
      goes to the plaintext inbound listener; REDIRECT in PREROUTING rewrites
      the destination to the receiving interface's primary address, so 15006
      must listen on the wildcard (or that address); SO_ORIGINAL_DST gives the
      workload address and port the peer asked for

Which iptables: both Debian 12 variants (iptables 1.8.9) work in a fresh
network namespace on a kernel with nf_tables and the legacy xtables (both
families, nat table, REDIRECT, mark match); `iptables` of Debian 12 is
iptables-nft, so "nft" is tried first, then "legacy" (RINGTUNNEL_IT_IPTABLES=
nft|legacy forces one; newer kernels may lack the legacy xtables). The probe
runs inside a host, never in the machine's own namespace: merely listing a
legacy table creates it where it is listed. Rules are installed with one
`*-restore --noflush` per family and read back with `*-save`.

Clean-up: MeshHosts registers its close() with harness.add_cleanup before it
creates anything, so success, failure, the watchdog and SIGTERM/SIGINT all
kill the hosts' processes by PID and delete both namespaces (deleting one
destroys the veth pair). Only SIGKILL of the test itself skips that: its
children die with it (PR_SET_PDEATHSIG), its namespaces stay named, and the
next MeshHosts of any run deletes every rtmesh-<pid>-* whose PID is gone.
"""

import contextlib
import ctypes
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import harness
from harness import (Proxy, TargetServer, check, fail, family_of, fmt_addr, log, reap,
                     spawn, tcp_listen_ports)

MARK = 0x539
MARK_MASK = 0xFFF
OUTBOUND_PORT = 15001
INBOUND_PLAINTEXT_PORT = 15006
HBONE_PORT = 15008

NET4 = "10.250.0.%d"          # /24 on veth0, only inside the namespaces
NET6 = "fd00:250::%d"         # /64 on veth0, only inside the namespaces
DEV = "veth0"
PREFIX = "rtmesh"
_NAME_RE = re.compile(r"^%s-(\d+)-\d+-[ab]$" % PREFIX)

SO_ORIGINAL_DST = 80          # SOL_IP / SOL_IPV6 (IP6T_SO_ORIGINAL_DST is also 80)
SO_MARK = getattr(socket, "SO_MARK", 36)
_CLONE_NEWNET = 0x40000000
_CMD_TIMEOUT = 10.0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _setns(fd, what):
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns(%s): %s" % (what, os.strerror(e)))


def original_dst(sock):
    """(ip, port) a REDIRECTed connection was meant for (SO_ORIGINAL_DST, read
    from conntrack: a connection that was not NATed gives its own local address;
    one conntrack does not know raises OSError ENOENT)."""
    if sock.family == socket.AF_INET6:
        raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from("!H", raw, 2)[0]
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = sock.getsockopt(socket.IPPROTO_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack_from("!H", raw, 2)[0]
    return socket.inet_ntop(socket.AF_INET, raw[4:8]), port


# ---------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------


def _cmd(argv, timeout=_CMD_TIMEOUT, input=None):
    """Run a short command, bounded, dying with this process; (rc, out, err).
    Not in the harness's registry: the clean-up itself uses it after the
    registry's children are gone, from any thread. rc None: timed out (killed)."""
    try:
        r = subprocess.run(argv, input=input, stdin=None if input is not None else
                           subprocess.DEVNULL, capture_output=True, timeout=timeout,
                           preexec_fn=harness._child_setup)
    except subprocess.TimeoutExpired as e:
        return None, "", "timed out after %.0f s: %s" % (timeout, (e.stderr or b"").decode(
            errors="replace"))
    except OSError as e:
        return 127, "", str(e)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def _must(argv, timeout=_CMD_TIMEOUT, input=None):
    rc, out, err = _cmd(argv, timeout, input)
    check(rc == 0, "`%s` failed (exit %s): %s" % (" ".join(argv), rc, err.strip()))
    return out


def require_tools():
    """Fails with a clear reason when this machine cannot make the hosts."""
    check(os.geteuid() == 0, "network-namespace tests need root (ip netns, veth, iptables);"
          " this runs as uid %d" % os.geteuid())
    missing = [t for t in ("ip", "nsenter") if not shutil.which(t)]
    check(not missing, "missing %s: run scripts/deps.sh (iproute2, util-linux)"
          % ", ".join(missing))


def netns_names():
    """Names in `ip netns list` (the first word of each line)."""
    rc, out, err = _cmd(["ip", "netns", "list"])
    check(rc == 0, "`ip netns list` failed (exit %s): %s" % (rc, err.strip()))
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale():
    """Delete the namespaces of earlier runs that were SIGKILLed (their PID is
    gone); returns their names."""
    gone = []
    for name in netns_names():
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            rc, _, err = _cmd(["ip", "netns", "del", name])
            if rc == 0:
                gone.append(name)
            else:
                log("could not delete the stale namespace %s: %s" % (name, err.strip()))
    return gone


# ---------------------------------------------------------------------------
# iptables
# ---------------------------------------------------------------------------

VARIANTS = {
    "nft": {"4": "iptables-nft", "6": "ip6tables-nft"},
    "legacy": {"4": "iptables-legacy", "6": "ip6tables-legacy"},
}
_variant = None
_variant_lock = threading.Lock()


def iptables_variant(host):
    """"nft" or "legacy": the first that lists the nat table of both families
    inside `host` (RINGTUNNEL_IT_IPTABLES forces one). Fails naming what each
    said."""
    global _variant
    with _variant_lock:
        if _variant:
            return _variant
        forced = os.environ.get("RINGTUNNEL_IT_IPTABLES", "")
        check(forced in ("",) + tuple(VARIANTS),
              "RINGTUNNEL_IT_IPTABLES=%s: expected nft or legacy" % forced)
        tried = []
        for v in ([forced] if forced else ["nft", "legacy"]):
            ok = True
            for fam in ("4", "6"):
                tool = VARIANTS[v][fam]
                if not shutil.which(tool):
                    tried.append("%s: not installed" % tool)
                    ok = False
                    break
                rc, _, err = _cmd(host.argv([tool, "-w", "5", "-t", "nat", "-S"]))
                if rc != 0:
                    tried.append("%s: exit %s: %s" % (tool, rc, err.strip()[:200]))
                    ok = False
                    break
            if ok:
                _variant = v
                return v
        fail("no iptables works in a network namespace (%s); Debian's iptables package is"
             " installed by scripts/deps.sh" % "; ".join(tried))


class CaptureRules:
    """The nat rules of one host (see the module's docstring), as
    iptables-restore input per family. outbound / inbound / skip_marked=False
    leave out the REDIRECT to 15001, the REDIRECT to 15006 or the mark
    exclusion (to show that a test fails without them)."""

    def __init__(self, workload_ips, outbound=True, inbound=True, skip_marked=True, mark=MARK,
                 outbound_port=OUTBOUND_PORT, inbound_port=INBOUND_PLAINTEXT_PORT,
                 hbone_port=HBONE_PORT):
        self.workload_ips = list(workload_ips)
        self.outbound, self.inbound, self.skip_marked = outbound, inbound, skip_marked
        self.mark, self.outbound_port = mark, outbound_port
        self.inbound_port, self.hbone_port = inbound_port, hbone_port

    def restore_input(self, family):
        """iptables-restore --noflush input for family "4" or "6"."""
        ips = [ip for ip in self.workload_ips if (":" in ip) == (family == "6")]
        r = ["*nat", ":RT_OUTPUT - [0:0]", ":RT_PREROUTING - [0:0]",
             "-A OUTPUT -p tcp -j RT_OUTPUT",
             "-A PREROUTING -p tcp -j RT_PREROUTING"]
        if self.skip_marked:
            r.append("-A RT_OUTPUT -m mark --mark 0x%x/0x%x -j RETURN" % (self.mark, MARK_MASK))
        r.append("-A RT_OUTPUT -o lo -j RETURN")
        if self.outbound:
            r.append("-A RT_OUTPUT -p tcp -j REDIRECT --to-ports %d" % self.outbound_port)
        r.append("-A RT_PREROUTING -p tcp --dport %d -j RETURN" % self.hbone_port)
        if self.inbound:
            for ip in ips:
                r.append("-A RT_PREROUTING -d %s -p tcp -j REDIRECT --to-ports %d"
                         % (ip, self.inbound_port))
        r.append("COMMIT")
        return "\n".join(r) + "\n"


# ---------------------------------------------------------------------------
# A host
# ---------------------------------------------------------------------------


class Host:
    def __init__(self, mesh, name, index):
        self.mesh = mesh
        self.name = name
        self.ip = NET4 % index
        self.ip6 = NET6 % index
        self.dev = DEV
        self.path = "/run/netns/" + name
        self.peer = None
        self.workload_ips = [self.ip, self.ip6]
        self.rules = None
        self._fd = None

    def __repr__(self):
        return "Host(%s %s %s)" % (self.name, self.ip, self.ip6)

    def _open(self):
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self.ns_inode = os.fstat(self._fd).st_ino

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- in-process: sockets made in the host's namespace ----------------
    @contextlib.contextmanager
    def inside(self):
        """This thread is in the host's network namespace within the block."""
        check(self._fd is not None, "%s is closed" % self.name)
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(self._fd, self.name)
            try:
                yield self
            finally:
                try:
                    _setns(back, "back from " + self.name)
                except OSError as e:   # never go on in the wrong namespace
                    print("FATAL: %s" % e, flush=True)
                    os._exit(70)
        finally:
            os.close(back)

    def socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        with self.inside():
            return socket.socket(family, type)

    def connect(self, addr, timeout=10.0):
        """A TCP connection from this host to addr; the socket has `timeout`."""
        s = self.socket(family_of(addr[0]))
        s.settimeout(timeout)
        try:
            s.connect(addr)
        except BaseException:
            s.close()
            raise
        return s

    def listen(self, addr, backlog=128):
        s = self.socket(family_of(addr[0]))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family_of(addr[0]) == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(backlog)
        except BaseException:
            s.close()
            raise
        return s

    def server(self, handler, ip, port=0, **kw):
        """harness.TargetServer listening on (ip, port) in this host."""
        with self.inside():
            return TargetServer(handler, host=ip, port=port, **kw)

    def listen_ports(self):
        """(family, port) of every LISTEN socket in the host."""
        with self.inside():
            return tcp_listen_ports("thread-self")

    # -- processes ------------------------------------------------------------
    def argv(self, argv):
        return ["nsenter", "--net=" + self.path, "--"] + list(argv)

    def spawn(self, argv, **kw):
        """A process in the host (harness.spawn: registered, killed by PID)."""
        p = spawn(self.argv(argv), **kw)
        self.mesh._procs.append(p)
        return p

    def run(self, argv, input=None, timeout=_CMD_TIMEOUT):
        """Run argv in the host to completion: (rc, stdout, stderr). Fails the
        test if it has not exited within `timeout` (it is killed)."""
        p = self.spawn(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(input.encode() if isinstance(input, str) else input,
                                     timeout=timeout)
        except subprocess.TimeoutExpired:
            reap(p, term_timeout=1)
            fail("`%s` in %s did not exit within %.0f s" % (" ".join(argv), self.name, timeout))
        finally:
            reap(p)
        return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def check_run(self, argv, input=None, timeout=_CMD_TIMEOUT):
        rc, out, err = self.run(argv, input, timeout)
        check(rc == 0, "`%s` in %s failed (exit %s): %s"
              % (" ".join(argv), self.name, rc, err.strip()[-500:]))
        return out

    def in_host(self, pid):
        try:
            return os.stat("/proc/%d/ns/net" % pid).st_ino == self.ns_inode
        except OSError:
            return False

    def wait_listening(self, proc, listens, timeout=15.0, what="process", tail=None):
        """Wait until proc (started in this host) listens on every (ip, port)
        of `listens`, seen in the host's namespace: first that proc is in it
        (nsenter has switched), then /proc/PID/net/tcp{,6}."""
        want = {(family_of(h), p) for h, p in listens}
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                fail("%s (pid %d) in %s exited with code %s before listening%s"
                     % (what, proc.pid, self.name, proc.returncode,
                        "; stderr:\n" + tail() if tail else ""))
            if self.in_host(proc.pid) and want <= tcp_listen_ports(proc.pid):
                return
            if time.monotonic() > end:
                fail("%s (pid %d) not listening on %s in %s after %.0f s%s"
                     % (what, proc.pid, ", ".join(fmt_addr(*a) for a in listens), self.name,
                        timeout, "; stderr:\n" + tail() if tail else ""))
            time.sleep(0.02)

    def proxy(self, args, listens=(), **kw):
        """ringtunnel (the binary under test) in this host."""
        return HostProxy(self, args, listens, **kw)

    # -- addresses and routes ----------------------------------------------
    def add_address(self, cidr, dev=DEV, workload=True):
        """One more address (say a second workload IP, "10.250.0.11/32") on dev;
        with workload=True the capture rules installed later treat it as the
        workload's too."""
        _must(["ip", "-n", self.name, "addr", "add", cidr, "dev", dev] +
              (["nodad"] if ":" in cidr else []))
        if workload:
            self.workload_ips.append(cidr.split("/")[0])

    def route(self, cidr):
        """Route cidr out of veth0 (on-link): a destination no host owns, such
        as a service VIP, gets a route, so connect() reaches OUTPUT where the
        capture rules redirect it. Uncaptured, its SYN gets no answer."""
        _must(["ip", "-n", self.name, "route", "add", cidr, "dev", DEV])

    # -- capture --------------------------------------------------------------
    def install_capture(self, **kw):
        """Install CaptureRules(self.workload_ips, **kw) in both families;
        returns the rules. Checks they read back."""
        rules = CaptureRules(self.workload_ips, **kw)
        v = iptables_variant(self)
        for fam in ("4", "6"):
            tool = VARIANTS[v][fam]
            self.check_run([tool + "-restore", "-w", "5", "--noflush"],
                           input=rules.restore_input(fam))
        saved = self.nat_rules()
        for fam in ("4", "6"):
            for line in rules.restore_input(fam).splitlines():
                if line.startswith("-A "):
                    check(any(_same_rule(line, s) for s in saved[fam]),
                          "rule %r is not in %s's nat table after restore (%s); nat table:\n%s"
                          % (line, self.name, VARIANTS[v][fam], "\n".join(saved[fam])))
        self.rules = rules
        return rules

    def nat_rules(self):
        """{"4": [...], "6": [...]}: the -A lines of `*-save -t nat`."""
        v = iptables_variant(self)
        out = {}
        for fam in ("4", "6"):
            text = self.check_run([VARIANTS[v][fam] + "-save", "-t", "nat"])
            out[fam] = [line for line in text.splitlines() if line.startswith("-A ")]
        return out


def _norm_rule(line):
    """A rule as the *-save tools print it, for comparison: the /32 or /128 of
    a single address and the implicit `-m tcp` dropped, words sorted."""
    words = [re.sub(r"/(32|128)$", "", w) for w in line.split()]
    return sorted(" ".join(words).replace(" -m tcp", "").split())


def _same_rule(a, b):
    return _norm_rule(a) == _norm_rule(b)


class HostProxy(Proxy):
    """ringtunnel started in a host (a harness.Proxy: its logs, access-log
    helpers and /proc checks work as usual)."""

    def __init__(self, host, args, listens=(), wait=True, timeout=15.0, cwd=None):
        self.host = host
        super().__init__(args, listens, wait=False, cwd=cwd, prefix=host.argv([]))
        host.mesh._procs.append(self.proc)
        if wait and self.listens:
            self.wait_listening(timeout)

    def wait_listening(self, timeout=15.0):
        self.host.wait_listening(self.proc, self.listens, timeout,
                                 what="ringtunnel", tail=self.stderr_tail)


# ---------------------------------------------------------------------------
# The pair
# ---------------------------------------------------------------------------

_counter = [0]


class MeshHosts:
    """Two hosts, a and b, joined by a veth pair (see the module's docstring)."""

    def __init__(self, probe=True):
        require_tools()
        stale = sweep_stale()
        if stale:
            log("deleted namespaces of killed runs: %s" % ", ".join(stale))
        _counter[0] += 1
        tag = "%s-%d-%d" % (PREFIX, os.getpid(), _counter[0])
        self.a = Host(self, tag + "-a", 1)
        self.b = Host(self, tag + "-b", 2)
        self.a.peer, self.b.peer = self.b, self.a
        self.hosts = (self.a, self.b)
        self._procs = []
        self._made = []
        self._closed = False
        harness.add_cleanup(self.close)   # before anything exists: a partial set-up is undone
        try:
            self._setup()
            if probe:
                self._probe()
        except BaseException:
            self.close()
            raise

    def _setup(self):
        for h in self.hosts:
            _must(["ip", "netns", "add", h.name])
            self._made.append(h.name)
            h._open()
            _must(["ip", "-n", h.name, "link", "set", "lo", "up"])
        a, b = self.a, self.b
        _must(["ip", "-n", a.name, "link", "add", DEV, "type", "veth", "peer", "name", DEV,
               "netns", b.name])
        # Up first, then the addresses: an IPv6 address added while the link is down
        # answers no neighbour solicitation for about a second after it comes up (the
        # peer's first connect waits for the 1 s retransmission); added after, at once.
        for h in self.hosts:
            _must(["ip", "-n", h.name, "link", "set", DEV, "up"])
        for h in self.hosts:
            _must(["ip", "-n", h.name, "addr", "add", h.ip + "/24", "dev", DEV])
            _must(["ip", "-n", h.name, "addr", "add", h.ip6 + "/64", "dev", DEV, "nodad"])

    def _probe(self, timeout=5.0):
        """A TCP connection each way, IPv4 and IPv6: the pair works."""
        for src, dst in ((self.a, self.b), (self.b, self.a)):
            for ip in (dst.ip, dst.ip6):
                ls = dst.listen((ip, 0))
                try:
                    port = ls.getsockname()[1]
                    end = time.monotonic() + timeout
                    while True:
                        try:
                            src.connect((ip, port), timeout=1.0).close()
                            break
                        except OSError as e:
                            if time.monotonic() > end:
                                fail("%s cannot reach %s over veth0 within %.0f s: %s"
                                     % (src.name, fmt_addr(ip, port), timeout, e))
                            time.sleep(0.05)
                finally:
                    ls.close()

    def close(self):
        """Kill the hosts' processes by PID, delete both namespaces; checks they
        are gone. Idempotent; harness.add_cleanup runs it at exit too."""
        if self._closed:
            return
        self._closed = True
        for p in self._procs:
            try:
                reap(p, term_timeout=2)
            except Exception as e:
                print("    could not stop pid %d: %s" % (p.pid, e), flush=True)
        for h in self.hosts:
            h._close()
        errors = []
        for name in self._made:
            rc, _, err = _cmd(["ip", "netns", "del", name])
            if rc != 0:
                errors.append("%s: %s" % (name, err.strip()))
        left = [n for n in self._made if n in netns_names()]
        if errors or left:
            raise RuntimeError("network namespaces not deleted: %s" % "; ".join(
                errors or left))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

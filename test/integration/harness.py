"""Shared helpers for the ringtunnel integration tests (Python 3 stdlib only).

Every test file is run as

    python3 test/integration/test_X.py /path/to/ringtunnel

(or with the binary in the environment variable RINGTUNNEL) and exits 0 on
success, 1 on failure (2 when it cannot even start: no binary given).

Ground rules implemented here:
  * loopback only (127.0.0.1 / ::1), or a network namespace a test makes itself;
  * a global deadline per test file (watchdog thread): on expiry every child
    process is killed by PID and the process exits 1 -- a test never hangs;
  * every process started through this module is registered and killed by PID
    (SIGTERM, wait, SIGKILL, wait) at the end of each sub-test, on failure and
    at exit; children also get PR_SET_PDEATHSIG=SIGKILL so they cannot outlive
    the test process even if it is SIGKILLed itself;
  * every temporary file of a run lives in one directory, RUN_DIR (tempfile's
    default directory and TMPDIR of every child point there); cleanups
    registered with add_cleanup() run (last in, first out) before the process
    exits -- at the end of run_tests, on the watchdog's path, on SIGTERM or
    SIGINT (a runner's timeout) and at exit -- and then RUN_DIR is removed.
    A failed sub-test prints its proxies' logs; with RINGTUNNEL_IT_KEEP=1 a
    failing run keeps them in RUN_DIR instead of removing it, and says where.
    A passing run leaves nothing behind and fails if it would.

Environment: RINGTUNNEL_IT_ONLY=a,b runs only the named sub-tests;
RINGTUNNEL_IT_ORDER=reverse runs them last first, =random (seed from
RINGTUNNEL_IT_SEED, else printed) in a shuffled order; RINGTUNNEL_IT_KEEP=1
keeps a failing run's logs (see above).
"""

import atexit
import ctypes
import hashlib
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# ---------------------------------------------------------------------------
# Failure reporting
# ---------------------------------------------------------------------------


class TestFailure(Exception):
    """An assertion about the binary's behaviour did not hold."""


def fail(msg):
    raise TestFailure(msg)


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def log(msg):
    print("    " + msg, flush=True)


# ---------------------------------------------------------------------------
# Binary location
# ---------------------------------------------------------------------------

_BINARY = None


def binary():
    global _BINARY
    if _BINARY is None:
        path = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGTUNNEL")
        if not path:
            print("usage: %s /path/to/ringtunnel  (or set RINGTUNNEL)" % sys.argv[0],
                  file=sys.stderr)
            sys.exit(2)
        path = os.path.abspath(path)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print("FAIL: ringtunnel binary %r does not exist or is not executable" % path,
                  file=sys.stderr)
            sys.exit(1)
        _BINARY = path
    return _BINARY


# ---------------------------------------------------------------------------
# The run's directory and the cleanup registry
# ---------------------------------------------------------------------------

# Every temporary file of this run (proxy logs, certificates, access-log files,
# TemporaryFiles, what children write to $TMPDIR) goes here.
_OUTER_TMPDIR = os.environ.get("TMPDIR")
RUN_DIR = tempfile.mkdtemp(prefix="ringtunnel-it-")
tempfile.tempdir = RUN_DIR
os.environ["TMPDIR"] = RUN_DIR

_cleanup_lock = threading.Lock()
_cleanups = []          # (fn, args), run last first
_cleanups_done = False
_keep_run_dir = False   # a failed sub-test's logs are in RUN_DIR
KEEP_LOGS = os.environ.get("RINGTUNNEL_IT_KEEP") == "1"   # ... and are to be kept there


def add_cleanup(fn, *args):
    """Run fn(*args) before the process exits (however it exits, short of
    SIGKILL): cleanups run last registered first, each guarded."""
    with _cleanup_lock:
        _cleanups.append((fn, args))


def _remove_run_dir():
    """Remove RUN_DIR; returns the paths that could not be removed."""
    left = []

    def onerror(func, path, exc):
        left.append("%s (%s)" % (path, exc[1]))

    if os.path.lexists(RUN_DIR):
        shutil.rmtree(RUN_DIR, onerror=onerror)
    if os.path.lexists(RUN_DIR) and not left:
        left.append(RUN_DIR)
    return left


def _run_cleanups(lock_timeout=-1):
    """Kill every child, run the registered cleanups, then remove RUN_DIR
    (unless a failed sub-test's logs are kept in it). Runs once; returns the
    paths left behind that should not be (None if it already ran or could not
    take the lock)."""
    global _cleanups_done
    if not _cleanup_lock.acquire(timeout=lock_timeout):
        return None
    try:
        if _cleanups_done:
            return None
        _cleanups_done = True
        todo = list(reversed(_cleanups))
        del _cleanups[:]
    finally:
        _cleanup_lock.release()
    _kill_all_now()    # children first: they may write into what is removed next
    for fn, args in todo:
        try:
            fn(*args)
        except Exception as e:  # keep going: the others still run
            print("    cleanup %s%r failed: %s: %s"
                  % (getattr(fn, "__name__", fn), args, type(e).__name__, e), flush=True)
    if _keep_run_dir and KEEP_LOGS and os.path.isdir(RUN_DIR) and os.listdir(RUN_DIR):
        print("    logs kept in %s" % RUN_DIR, flush=True)
        return []
    if _keep_run_dir:
        print("    (the proxies' logs are printed above; RINGTUNNEL_IT_KEEP=1 keeps them)",
              flush=True)
    return _remove_run_dir()


def _exit(code):
    """Clean up, then os._exit (a stuck daemon thread must not block the exit).
    A passing run fails if anything of it is left behind."""
    left = _run_cleanups()
    if code == 0 and (left or os.path.lexists(RUN_DIR)):
        print("FAIL: left behind: %s" % ", ".join(left or [RUN_DIR]), flush=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exec_self(argv):
    """Replace this process with argv (say, this test again under unshare):
    exec skips every cleanup, so they run first, and the new process gets the
    TMPDIR this one was given (its own harness makes its own RUN_DIR)."""
    _run_cleanups()
    if _OUTER_TMPDIR is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = _OUTER_TMPDIR
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


OPS_LISTEN_FLAGS = ("--metrics-listen", "--readiness-listen", "--admin-listen")
_ops_listen_known = None


def ops_listen_off(args):
    """args with `--X-listen off` in front for each operating listener
    (OPS_LISTEN_FLAGS) that args do not name: their defaults (0.0.0.0:15020,
    0.0.0.0:15021, 127.0.0.1:15000) would collide when a test starts several
    ringtunnels on one host, or runs beside another test. In front, so that
    args keep their own meaning (a flag missing its value stays last). A binary
    without these flags (an older build) gets args unchanged."""
    global _ops_listen_known
    if _ops_listen_known is None:
        try:
            r = subprocess.run([binary(), "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=10)
            _ops_listen_known = b"--admin-listen" in r.stdout
        except (OSError, subprocess.TimeoutExpired):
            _ops_listen_known = False
    args = list(args)
    if not _ops_listen_known:
        return args
    named = {a.split("=", 1)[0] for a in args if isinstance(a, str)}
    front = []
    for flag in OPS_LISTEN_FLAGS:
        if flag not in named:
            front += [flag, "off"]
    return front + args


def run_to_exit(args, timeout=5.0, must_exit=True, program=None, env=None):
    """Run `program` (default: the binary under test) with args to completion,
    registered like every child; returns (rc, stdout, stderr). If it does not
    exit within timeout it is killed, and the test fails (must_exit) or rc is
    None. The binary under test gets its operating listeners off unless args
    name them (ops_listen_off)."""
    argv = ([program] + list(args)) if program else ([binary()] + ops_listen_off(args))
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    try:
        p = spawn(argv, stdout=out, stderr=err, env=env)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            reap(p, term_timeout=2)
            err.seek(0)
            if not must_exit:
                return None, "", err.read().decode(errors="replace")
            fail("`%s` did not exit within %.0f s (accepted the command line?); "
                 "stderr: %r" % (" ".join(argv), timeout,
                                 err.read().decode(errors="replace")[-500:]))
        reap(p)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"),
                err.read().decode(errors="replace"))
    finally:
        out.close()
        err.close()


# ---------------------------------------------------------------------------
# Child processes: registry, PDEATHSIG, kill by PID
# ---------------------------------------------------------------------------

_registry_lock = threading.Lock()
_children = []          # list of subprocess.Popen still to be reaped

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
    _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):  # pragma: no cover
    _prctl = None

_PR_SET_PDEATHSIG = 1


def _child_setup():
    # Runs in the child between fork and exec: die with the parent.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, **kw):
    """Popen registered for cleanup. Only call from the main thread (the
    parent-death signal fires when the *thread* that forked exits)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("close_fds", True)
    p = subprocess.Popen(argv, preexec_fn=_child_setup, **kw)
    with _registry_lock:
        _children.append(p)
    return p


def reap(p, term_timeout=5.0, sig=signal.SIGTERM):
    """Stop one child by PID: sig, wait, SIGKILL, wait. Returns its exit code."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
    with _registry_lock:
        if p in _children:
            _children.remove(p)
    return p.returncode


def kill_all_children(term_timeout=3.0):
    with _registry_lock:
        procs = list(_children)
    for p in procs:
        try:
            reap(p, term_timeout=term_timeout)
        except Exception:  # keep going, kill the rest
            try:
                os.kill(p.pid, signal.SIGKILL)
            except Exception:
                pass


def _kill_all_now():
    with _registry_lock:
        procs = list(_children)
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except Exception:
            pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except Exception:
            pass


atexit.register(_run_cleanups, 10)


# ---------------------------------------------------------------------------
# Global deadline
# ---------------------------------------------------------------------------

_deadline = None


def start_watchdog(seconds):
    """After `seconds`, kill every registered child and exit 1."""
    global _deadline
    _deadline = time.monotonic() + seconds

    def run():
        global _keep_run_dir
        while True:
            left = _deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, 0.5))
        print("FAIL: global deadline of %.0f s expired; killing children and exiting"
              % seconds, flush=True)
        _abandon_run(1)

    t = threading.Thread(target=run, name="watchdog", daemon=True)
    t.start()


def _abandon_run(code):
    """The watchdog's and the signal handler's way out: print the proxies'
    logs, kill every child, clean up, exit `code` at once."""
    global _keep_run_dir
    try:
        _dump_proxy_logs()
        _keep_run_dir = bool(_proxies)
    except Exception:
        pass
    # The main thread may be inside a cleanup already: wait for it a while.
    _run_cleanups(lock_timeout=10)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _on_signal(sig, frame):
    print("FAIL: stopped by signal %d; killing children and cleaning up" % sig, flush=True)
    _abandon_run(128 + sig)


def time_left():
    return float("inf") if _deadline is None else _deadline - time.monotonic()


def wait_until(pred, timeout, interval=0.05, what="condition"):
    """Poll pred() until it returns a truthy value; fail after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= end:
            fail("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Test runner
# ---------------------------------------------------------------------------


def _select(tests, only_alias):
    """The sub-tests RINGTUNNEL_IT_ONLY (or the file's older alias variable)
    names, in the order RINGTUNNEL_IT_ORDER asks for."""
    tests = list(tests)
    var = "RINGTUNNEL_IT_ONLY"
    if not os.environ.get(var) and only_alias and os.environ.get(only_alias):
        var = only_alias
    only = [n for n in os.environ.get(var, "").split(",") if n]
    if only:
        names = [n for n, _ in tests]
        unknown = [n for n in only if n not in names]
        if unknown:
            print("%s names no sub-test of this file: %s (there are: %s)"
                  % (var, ", ".join(unknown), ", ".join(names)), file=sys.stderr, flush=True)
            _exit(2)
        tests = [t for t in tests if t[0] in only]
    order = os.environ.get("RINGTUNNEL_IT_ORDER", "")
    if order == "reverse":
        tests.reverse()
    elif order == "random":
        seed = os.environ.get("RINGTUNNEL_IT_SEED") or str(random.randrange(1 << 32))
        random.Random(seed).shuffle(tests)
        print("   (order shuffled with RINGTUNNEL_IT_SEED=%s)" % seed, flush=True)
    elif order:
        print("RINGTUNNEL_IT_ORDER=%s: expected reverse or random" % order, file=sys.stderr,
              flush=True)
        _exit(2)
    return tests


def run_tests(title, tests, deadline, only_alias=None):
    """tests: list of (name, function). Runs all (see _select), reports each,
    cleans up and exits."""
    global _keep_run_dir
    binary()
    tests = _select(tests, only_alias)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    start_watchdog(deadline)
    print("== %s  (binary: %s, deadline %d s)" % (title, binary(), deadline), flush=True)
    failed = []
    for name, fn in tests:
        print("--- %s" % name, flush=True)
        t0 = time.monotonic()
        ok = False
        try:
            fn()
            ok = True
        except TestFailure as e:
            print("FAIL %s: %s" % (name, e), flush=True)
        except Exception:
            print("FAIL %s: unexpected exception:" % name, flush=True)
            traceback.print_exc(file=sys.stdout)
        if not ok:
            _dump_proxy_logs()
            failed.append(name)
            _keep_run_dir = True
        try:
            kill_all_children()
        finally:
            _forget_proxies(keep_logs=not ok)
        if ok:
            print("ok   %s (%.1f s)" % (name, time.monotonic() - t0), flush=True)
    if failed:
        print("== %s: %d of %d FAILED: %s" % (title, len(failed), len(tests), ", ".join(failed)),
              flush=True)
        _exit(1)
    print("== %s: all %d passed" % (title, len(tests)), flush=True)
    _exit(0)


# ---------------------------------------------------------------------------
# Addresses and ports
# ---------------------------------------------------------------------------


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def fmt_addr(host, port):
    """'127.0.0.1:80' or '[::1]:80' -- the format used on the command line and
    in the access log."""
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def sock_addr_str(sockname):
    return fmt_addr(sockname[0], sockname[1])


def free_port(host="127.0.0.1"):
    """A port that was free on host a moment ago (bind port 0, read, close)."""
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def forward_arg(listen, target):
    """listen/target: (host, port) -> 'LISTEN=tcp://TARGET'."""
    return "%s=tcp://%s" % (fmt_addr(*listen), fmt_addr(*target))


def tcp_listen_ports(pid="self"):
    """Set of (family, port) in LISTEN state in the network namespace of pid."""
    out = set()
    for name, fam in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open("/proc/%s/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":
                        out.add((fam, int(parts[1].rsplit(":", 1)[1], 16)))
        except FileNotFoundError:
            pass
    return out


def is_listening(host, port):
    return (family_of(host), port) in tcp_listen_ports()


def connect(addr, timeout=10.0):
    """Blocking TCP connect to (host, port); the socket gets `timeout`."""
    s = socket.socket(family_of(addr[0]), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def raise_nofile(want=65536):
    """Raise this process's RLIMIT_NOFILE soft limit to `want` (raising the
    hard limit too if permitted, else up to the hard limit). Returns the new
    soft limit."""
    inf = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != inf and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    elif soft != inf and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connect_bound(addr, timeout=10.0):
    """Like connect(), but binds first and returns (sock, client_name, how):
    the client's address string is known even if the connect itself fails.
    A peer that accepts and resets at once can make connect() fail with
    ECONNRESET (on loopback the RST can arrive before the connecting thread
    runs again); then how == 'reset during connect', else how is None."""
    s = socket.socket(family_of(addr[0]), socket.SOCK_STREAM)
    s.bind((addr[0], 0))
    name = sock_addr_str(s.getsockname())
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except ConnectionResetError:
        return s, name, "reset during connect"
    except BaseException:
        s.close()
        raise
    return s, name, None


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

CHUNK = 64 * 1024


def gen_chunks(seed, total, chunk=CHUNK):
    """Deterministic pseudo-random byte stream of `total` bytes, in chunks."""
    rng = random.Random(seed)
    left = total
    while left > 0:
        n = min(chunk, left)
        yield rng.randbytes(n)
        left -= n


def gen_bytes(seed, total):
    return random.Random(seed).randbytes(total)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def send_stream(sock, seed, total, prefix=b""):
    """Send prefix + gen(seed, total - len(prefix)); return (len, sha256hex)."""
    h = hashlib.sha256()
    n = 0
    if prefix:
        sock.sendall(prefix)
        h.update(prefix)
        n += len(prefix)
    for c in gen_chunks(seed, total - len(prefix)):
        sock.sendall(c)
        h.update(c)
        n += len(c)
    return n, h.hexdigest()


def recv_until_eof(sock, limit=None, prefix=b""):
    """Read until EOF; return (len, sha256hex) of prefix + what was read.
    Raises what recv raises. With limit: fail if more than limit bytes arrive."""
    h = hashlib.sha256(prefix)
    n = len(prefix)
    while True:
        b = sock.recv(CHUNK)
        if not b:
            return n, h.hexdigest()
        h.update(b)
        n += len(b)
        if limit is not None and n > limit:
            fail("received more than the %d bytes expected" % limit)


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        b = sock.recv(min(CHUNK, n - len(buf)))
        if not b:
            fail("unexpected EOF after %d of %d bytes" % (len(buf), n))
        buf += b
    return bytes(buf)


def expect_eof_or_reset(sock, timeout, who="client"):
    """Wait up to timeout for the peer to close; return 'eof' or 'reset'.
    Fails on timeout or if data arrives instead."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(CHUNK)
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        fail("%s: connection still open %.1f s later (expected it to be closed)" % (who, timeout))
    if b:
        fail("%s: expected EOF/reset, got %d bytes of data" % (who, len(b)))
    return "eof"


def expect_reset(sock, timeout, who):
    """recv must raise ConnectionResetError within timeout (not EOF, not data)."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    try:
        while True:
            b = sock.recv(CHUNK)
            if not b:
                fail("%s saw an orderly EOF (FIN), expected a reset (ConnectionResetError)" % who)
            # stray data still in flight before the reset is tolerated
            if time.monotonic() - t0 > timeout:
                fail("%s kept receiving data for %.1f s, no reset" % (who, timeout))
    except ConnectionResetError:
        return time.monotonic() - t0
    except socket.timeout:
        fail("%s saw neither reset nor EOF within %.1f s" % (who, timeout))


def set_linger0(sock):
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def reset_close(sock):
    """Close with SO_LINGER {1, 0}: sends RST."""
    set_linger0(sock)
    sock.close()


# ---------------------------------------------------------------------------
# Threads whose exceptions are not lost
# ---------------------------------------------------------------------------


class Threads:
    """Start functions in daemon threads; join() re-raises the first error and
    fails on timeout (the threads are daemons, so a stuck one never blocks exit;
    the sockets they use all have timeouts)."""

    def __init__(self):
        self.threads = []
        self.errors = []
        self.lock = threading.Lock()

    def start(self, fn, *args, name=None):
        def run():
            try:
                fn(*args)
            except BaseException as e:  # noqa
                with self.lock:
                    self.errors.append((name or getattr(fn, "__name__", "thread"), e,
                                        traceback.format_exc()))
        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        self.threads.append(t)
        return t

    def join(self, timeout, what="threads"):
        end = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, end - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        self.raise_errors()
        if alive:
            fail("%d %s still running after %.0f s" % (len(alive), what, timeout))

    def raise_errors(self):
        with self.lock:
            errs = list(self.errors)
        if errs:
            name, e, tb = errs[0]
            if not isinstance(e, TestFailure):
                print(tb, flush=True)
            fail("%s (%d thread error(s); first in %s): %s: %s"
                 % ("thread failed", len(errs), name, type(e).__name__, e))


# ---------------------------------------------------------------------------
# Target server (threaded; one thread per accepted connection)
# ---------------------------------------------------------------------------


class TargetServer:
    """Listens on (host, port) (port 0 = pick one) and runs handler(conn, peer)
    in a thread for every accepted connection. Handler exceptions are kept in
    self.threads and re-raised by check_errors()/close()."""

    def __init__(self, handler, host="127.0.0.1", port=0, backlog=512, conn_timeout=60.0):
        self.handler = handler
        self.conn_timeout = conn_timeout
        self.sock = socket.socket(family_of(host), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()[:2]
        self.accepted = 0
        self.conns = []
        self.threads = Threads()
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True, name="target-accept")
        self._t.start()

    def _loop(self):
        while not self._stop:
            try:
                c, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self._stop:
                    return
                raise
            c.settimeout(self.conn_timeout)
            self.accepted += 1
            self.conns.append(c)
            self.threads.start(self.handler, c, peer, name="target-conn")

    def check_errors(self):
        self.threads.raise_errors()

    def join(self, timeout):
        self.threads.join(timeout, "target connection handlers")

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class SinkServer:
    """A target that accepts every connection and never reads from it. `rcvbuf`
    (inherited by accepted sockets) and `mss` keep the kernel's buffering small,
    so that a sender stalls soon; `shut_wr` half-closes each at once; close()
    resets them (`reset`) or closes them."""

    def __init__(self, rcvbuf=None, mss=None, shut_wr=False, reset=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:     # a small MSS keeps the sender's buffer small: loopback's is 64 KiB
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()
        self.shut_wr, self.reset = shut_wr, reset
        self.conns = []
        self._stop = False
        self._t = threading.Thread(target=self._loop, daemon=True, name="sink-accept")
        self._t.start()

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.shut_wr:
                c.shutdown(socket.SHUT_WR)
            self.conns.append(c)

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()
        for c in self.conns:
            try:
                if self.reset:
                    set_linger0(c)
                c.close()
            except OSError:
                pass


def echo_handler(conn, peer):
    """Echo until EOF, then half-close and close."""
    while True:
        b = conn.recv(CHUNK)
        if not b:
            break
        conn.sendall(b)
    conn.shutdown(socket.SHUT_WR)
    conn.close()


def echo_roundtrip(listen, nbytes=100000, seed=7, timeout=10.0):
    """Connect to listen (which must lead to an echo target), send nbytes,
    half-close, read the echo to EOF and compare. Returns the client address
    string (as in the access log)."""
    s = connect(listen, timeout)
    try:
        me = sock_addr_str(s.getsockname())
        data = gen_bytes(seed, nbytes)
        th = Threads()
        th.start(lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)), name="echo-send")
        n, h = recv_until_eof(s, limit=nbytes)
        th.join(timeout, "echo sender")
        check(n == nbytes and h == sha256_hex(data),
              "echo through %s: got %d bytes (sha %s), sent %d (sha %s)"
              % (fmt_addr(*listen), n, h[:12], nbytes, sha256_hex(data)[:12]))
        return me
    finally:
        s.close()


# ---------------------------------------------------------------------------
# The proxy under test
# ---------------------------------------------------------------------------

_proxies = []

# The access-log line, as documented: "access" then listener, client, target,
# bytes_up, bytes_down, duration_ms and end, in that order; then (HBONE)
# src_identity and dst_identity, a quoted reason="...", and last the
# connection's start time (UTC, milliseconds). parse_access_kv_line() (below)
# is the one parser: it reads every key=value and fails on a line that lacks
# one of these keys, has them out of order, has a counter that is not an
# integer or an unknown end. test_cli's and test_logging's exact-format checks
# add STRICT_ACCESS_RE: the seven keys, then start=, nothing else.
ACCESS_KEYS = ("listener", "client", "target", "bytes_up", "bytes_down", "duration_ms", "end")
ACCESS_ENDS = ("closed", "client_reset", "target_reset", "connect_refused", "connect_timeout",
               "connect_error", "drain_timeout", "error", "refused", "denied", "bad_request",
               "peer_error", "overload")
_START_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
STRICT_ACCESS_RE = re.compile(
    r"^access listener=(?P<listener>\S+) client=(?P<client>\S+) target=(?P<target>\S+)"
    r" bytes_up=(?P<bytes_up>\d+) bytes_down=(?P<bytes_down>\d+)"
    r" duration_ms=(?P<duration_ms>\d+) end=(?P<end>%s) start=%s$"
    % ("|".join(ACCESS_ENDS), _START_RE))


class Proxy:
    """ringtunnel started with the given flags; stdout and stderr go to temp
    files (the access log defaults to stderr)."""

    def __init__(self, args, listens=(), wait=True, timeout=15.0, cwd=None, prefix=()):
        """prefix: argv before the binary's (say, nsenter into a network
        namespace: mesh_hosts.HostProxy); self.args are the binary's own, with
        the operating listeners off unless args name them (ops_listen_off)."""
        self.args = ops_listen_off(args)
        self.listens = list(listens)
        fd, self.out_path = tempfile.mkstemp(prefix="proxy-", suffix=".stdout")
        self._out = os.fdopen(fd, "wb")
        fd, self.err_path = tempfile.mkstemp(prefix="proxy-", suffix=".stderr")
        self._err = os.fdopen(fd, "wb")
        self.proc = spawn(list(prefix) + [binary()] + self.args, stdout=self._out,
                          stderr=self._err, cwd=cwd)
        self.pid = self.proc.pid
        _proxies.append(self)
        if wait and self.listens:
            self.wait_listening(timeout)

    # -- lifecycle -------------------------------------------------------
    def wait_listening(self, timeout=15.0):
        """Bounded wait until every listen address is in LISTEN state (checked in
        /proc/net/tcp{,6}, so no connection is made and nothing is logged)."""
        want = {(family_of(h), p) for h, p in self.listens}
        end = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                fail("ringtunnel exited with code %s before listening; stderr:\n%s"
                     % (self.proc.returncode, self.stderr_tail()))
            have = tcp_listen_ports()
            if want <= have:
                return
            if time.monotonic() > end:
                fail("ringtunnel not listening on %s after %.0f s; stderr:\n%s"
                     % (", ".join(fmt_addr(*a) for a in self.listens), timeout,
                        self.stderr_tail()))
            time.sleep(0.02)

    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        check(self.alive(), "ringtunnel died unexpectedly (exit code %s); stderr:\n%s"
              % (self.proc.returncode, self.stderr_tail()))
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            fail("ringtunnel (pid %d) did not exit within %.1f s" % (self.pid, timeout))

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to timeout, SIGKILL fallback. Returns exit code
        (negative = killed by that signal)."""
        return reap(self.proc, term_timeout=timeout)

    def stop_ok(self, timeout=15.0):
        """Stop and assert a clean exit (code 0) -- catches crashes and
        sanitizer reports at exit."""
        killed = self.proc.poll() is None
        rc = self.stop(timeout)
        check(rc == 0, "ringtunnel exit code %s after %s (expected 0); stderr tail:\n%s"
              % (rc, "SIGTERM" if killed else "it had already exited", self.stderr_tail()))

    # -- output ----------------------------------------------------------
    def stderr_text(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_text(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_tail(self, n=40):
        lines = self.stderr_text().splitlines()
        return "\n".join("      | " + l for l in lines[-n:])

    def access(self, path=None):
        if path is None:
            text = self.stderr_text()
        else:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        return parse_access_kv(text)

    def mark(self, path=None):
        """Number of access-log entries so far; pass as since= to wait_access
        to ignore earlier ones (a client port can be reused by a later
        connection once the earlier one is gone)."""
        return len(self.access(path))

    def wait_access(self, clients, timeout=5.0, path=None, since=0):
        """Wait until the access log has an entry for every client address
        string in `clients` (among the entries after the first `since`);
        return {client: entry}. Fails if a client has more than one entry."""
        clients = set(clients)
        end = time.monotonic() + timeout
        while True:
            by = {}
            for e in self.access(path)[since:]:
                if e["client"] in clients:
                    check(e["client"] not in by,
                          "two access-log entries for client %s: %r and %r"
                          % (e["client"], by.get(e["client"]), e))
                    by[e["client"]] = e
            if len(by) == len(clients):
                return by
            if time.monotonic() > end:
                missing = sorted(clients - set(by))
                fail("access log lacks entries for %d of %d clients after %.1f s (e.g. %s);"
                     " stderr tail:\n%s" % (len(missing), len(clients), timeout,
                                            ", ".join(missing[:5]), self.stderr_tail(15)))
            time.sleep(0.05 if len(clients) < 100 else 0.5)

    # -- /proc -----------------------------------------------------------
    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def sockets_held(self):
        """(descriptors in /proc/PID/fd, sockets in the rings' file tables or
        None when no ring has one): a socket the proxy holds shows in one of
        the two, a relayed one with --fixed-files (the default) only in the
        second."""
        return self.fd_count(), self.ring_sockets()

    def ring_sockets(self):
        """Sockets held as direct descriptors in the proxy's io_uring file tables
        (listed per slot in /proc/PID/fdinfo of each ring fd), or None when no
        ring has a file table (the proxy keeps its sockets as plain fds)."""
        total, tables = 0, 0
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            try:
                if "io_uring" not in os.readlink("/proc/%d/fd/%s" % (self.pid, fd)):
                    continue
                with open("/proc/%d/fdinfo/%s" % (self.pid, fd)) as f:
                    text = f.read()
            except OSError:
                continue
            at = text.find("UserFiles:")
            if at < 0:
                continue
            tables += 1
            for line in text[at:].splitlines()[1:]:
                if not re.match(r"^\s*\d+: ", line):
                    break
                total += "socket:" in line
        return total if tables else None

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def nofile_limit(self):
        """(soft, hard) RLIMIT_NOFILE of the running proxy."""
        with open("/proc/%d/limits" % self.pid) as f:
            for line in f:
                if line.startswith("Max open files"):
                    p = line.split()
                    return int(p[3]), int(p[4])
        return None


def _dump_proxy_logs():
    for p in list(_proxies):
        try:
            print("    ringtunnel pid %d args %s: exit code %s; stderr tail:\n%s"
                  % (p.pid, " ".join(p.args), p.proc.poll(), p.stderr_tail(60)), flush=True)
        except Exception:
            pass


def _forget_proxies(keep_logs):
    for p in list(_proxies):
        for f in (p._out, p._err):
            try:
                f.close()
            except Exception:
                pass
        if keep_logs and KEEP_LOGS:
            print("    (logs kept: %s %s)" % (p.out_path, p.err_path), flush=True)
        elif not keep_logs:
            for path in (p.out_path, p.err_path):
                try:
                    os.unlink(path)
                except OSError:
                    pass
        _proxies.remove(p)


# ---------------------------------------------------------------------------
# Access-log parsing (the one parser), and TCP connection counting
# ---------------------------------------------------------------------------

# One field: " key=value", the value either without spaces or quoted (with \"
# and \\ escaped); a quoted value is one value, quotes included: what it holds
# is not read as more fields.
_KV_RE = re.compile(r' ([a-z_]+)=("(?:[^"\\]|\\.)*"|\S*)')
_KV_INTS = ("bytes_up", "bytes_down", "duration_ms")


def parse_access_kv_line(line):
    """dict of every key=value of an 'access ...' line (the three counters as
    int; '_line' is the line itself); None for any other line. A line that
    starts with 'access ' but is malformed fails the test: a field that is
    not ` key=value`, a key twice, the documented keys (ACCESS_KEYS) missing
    or out of order, an empty listener/client/target, a counter that is not a
    number, an unknown end, or no start= time."""
    line = line.rstrip("\r\n")
    if not line.startswith("access "):
        return None
    d, keys, pos = {}, [], len("access")
    while pos < len(line):
        m = _KV_RE.match(line, pos)
        if not m:
            fail("malformed access-log line (no key=value at column %d): %r" % (pos, line))
        k, v = m.groups()
        check(k not in d, "malformed access-log line (%s twice): %r" % (k, line))
        d[k] = v
        keys.append(k)
        pos = m.end()
    check(tuple(keys[:len(ACCESS_KEYS)]) == ACCESS_KEYS,
          "malformed access-log line (expected the keys %s first, in that order): %r"
          % (", ".join(ACCESS_KEYS), line))
    for k in ("listener", "client", "target"):
        check(d[k], "malformed access-log line (empty %s): %r" % (k, line))
    for k in _KV_INTS:
        check(d[k].isdigit() and d[k].isascii(),
              "malformed access-log line (%s is not a number): %r" % (k, line))
        d[k] = int(d[k])
    check(d["end"] in ACCESS_ENDS, "malformed access-log line (unknown end=%s): %r"
          % (d["end"], line))
    check(re.fullmatch(_START_RE, d.get("start", "")),
          "malformed access-log line (no start=YYYY-MM-DDTHH:MM:SS.mmmZ): %r" % line)
    d["_line"] = line
    return d


def parse_access_kv(text):
    """The access entries of a log's text, in order. A last line without its
    newline is still being written and is left for the next read."""
    lines = text.split("\n")[:-1]
    out = []
    for line in lines:
        d = parse_access_kv_line(line)
        if d is not None:
            out.append(d)
    return out


def proxy_access_kv(proxy, since=0):
    """The proxy's access-log entries (stderr) parsed by key, from the
    `since`-th on."""
    return parse_access_kv(proxy.stderr_text())[since:]


def wait_access_kv(proxy, pred, count, timeout=5.0, since=0, what="access-log entries"):
    """Wait until at least `count` entries after the first `since` satisfy
    pred(entry); returns them (all of them, in log order). Fails on timeout
    with the proxy's stderr tail."""
    end = time.monotonic() + timeout
    while True:
        got = [e for e in proxy_access_kv(proxy, since) if pred(e)]
        if len(got) >= count:
            return got
        if time.monotonic() > end:
            fail("%s: %d of %d expected after %.1f s; stderr tail:\n%s"
                 % (what, len(got), count, timeout, proxy.stderr_tail(20)))
        time.sleep(0.05)


def check_kv(e, **want):
    """Assert fields of an access entry (a missing key fails too)."""
    for k, v in want.items():
        check(k in e and e[k] == v, "access log for client %s: %s=%r, expected %r (line: %r)"
              % (e.get("client"), k, e.get(k, "<missing>"), v, e.get("_line")))


check_entry = check_kv


TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_connections(pid="self"):
    """Every TCP socket of the network namespace of pid, from /proc/net/tcp{,6}:
    list of (local_port, remote_port, state name, inode)."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            with open("/proc/%s/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) < 10:
                        continue
                    out.append((int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16),
                                TCP_STATES.get(p[3], p[3]), int(p[9])))
        except FileNotFoundError:
            pass
    return out


def established_to(port):
    """Number of ESTABLISHED connections whose remote end is `port` (the
    connecting side's sockets only: the accepted side has it as local port)."""
    return sum(1 for lp, rp, st, _ in tcp_connections() if rp == port and st == "ESTABLISHED")

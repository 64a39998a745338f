#!/usr/bin/env python3
"""meson install --destdir into a temporary directory, then checks what landed there:

- the binary (runs --version), the man page ringtunnel(8), the systemd unit, the sysusers.d
  file and the example /etc/default/ringtunnel, each at its path under the prefix;
- the unit: ExecStart is the installed binary with $RINGTUNNEL_ARGS, it reads
  /etc/default/ringtunnel, TimeoutStopSec exceeds the default --drain-timeout, its system call
  filter lets through io_uring_setup/enter/register and the other calls ringtunnel needs,
  `systemd-analyze verify` prints nothing about it (a copy whose ExecStart points into the
  destdir, with MANPATH on the installed man page, so that its Documentation= is checked too),
  and `systemd-analyze security --offline` rates it at most 2.5 (OK);
- that those two checks can fail: a unit with a misspelt key and one pointing at a missing
  binary make verify complain, and one without the hardening goes over the threshold;
- the man page renders without groff warnings (groff -man -Tutf8 -ww) and, rendered by
  `man -l`, has every flag of the installed binary's --help as an entry of OPTIONS.

Usage: test_install.py BUILT_RINGTUNNEL --build-dir DIR --prefix P --bindir B --mandir M
       --datadir D --unitdir U
Needs meson, systemd-analyze, groff and man. Removes its directory however it ends.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

DEADLINE = time.monotonic() + 100  # meson's timeout is 120 s

# System calls ringtunnel makes (besides what @system-service obviously has): the ring, the
# open-files limit (glibc's setrlimit is prlimit64), --tcp-splice, the config watch, the stop
# signals.
NEEDED_SYSCALLS = [
    "io_uring_setup", "io_uring_enter", "io_uring_register", "prlimit64", "setrlimit",
    "splice", "pipe2", "socket", "socketpair", "setsockopt", "getsockopt", "bind", "listen", "accept4",
    "connect", "inotify_init1", "inotify_add_watch", "signalfd4", "rt_sigprocmask", "mmap",
    "madvise", "clone3", "futex", "eventfd2", "getrandom", "mkdir", "unlinkat",
]

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


def run(cmd, env=None, check_rc=True):
    left = DEADLINE - time.monotonic()
    if left <= 0:
        sys.exit("test_install.py: out of time")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=left,
                       env={**os.environ, **(env or {})})
    if check_rc and r.returncode != 0:
        sys.exit(f"test_install.py: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def under(dest, path):
    return os.path.join(dest, path.lstrip("/"))


def help_flags(help_text):
    return re.findall(r"^  (--[a-z0-9][a-z0-9-]*)", help_text, re.M)


def default_of(help_text, flag):
    """The "Default: X." of one flag's --help entry."""
    m = re.search(r"^  " + re.escape(flag) + r"\b.*?\n((?:      .*\n)+)", help_text, re.M)
    if not m:
        return None
    d = re.search(r"Default: (\S+?)\.(\s|$)", " ".join(m.group(1).split()))
    return d.group(1) if d else None


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|min)?", text)
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60, "min": n * 60}[m.group(2)]


def unit_entries(text):
    """[(section, key, value)] of a unit file."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def syscall_group(name, seen=None):
    """The system calls of a systemd-analyze group (@name), its nested groups expanded."""
    seen = seen if seen is not None else set()
    if name in seen:
        return set()
    seen.add(name)
    out = set()
    for line in run(["systemd-analyze", "syscall-filter", name]).stdout.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        out |= syscall_group(word, seen) if word.startswith("@") else {word}
    return out


def allowed_syscalls(entries):
    """What the unit's SystemCallFilter= lines allow, as systemd combines them (the first line
    is an allow list; a later allow line adds to it, a ~ line takes away)."""
    allowed = set()
    for section, key, value in entries:
        if section != "Service" or key != "SystemCallFilter":
            continue
        deny = value.startswith("~")
        names = set()
        for word in value.lstrip("~").split():
            names |= syscall_group(word) if word.startswith("@") else {word}
        allowed = allowed - names if deny else allowed | names
    return allowed


def verify(unit_path, mandir):
    """systemd-analyze verify: (exit code, its lines that are about this unit)."""
    r = run(["systemd-analyze", "verify", unit_path], env={"MANPATH": mandir}, check_rc=False)
    lines = (r.stdout + r.stderr).splitlines()
    name = os.path.basename(unit_path)
    return r.returncode, [l for l in lines if name in l or unit_path in l or "ringtunnel" in l]


def security(unit_path):
    r = run(["systemd-analyze", "security", "--offline=yes", "--threshold=25", "--no-pager",
             unit_path], check_rc=False)
    overall = [l for l in r.stdout.splitlines() if "Overall exposure" in l]
    return r.returncode, (overall[0].strip() if overall else r.stdout[-500:] + r.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("built")
    for opt in ("build-dir", "prefix", "bindir", "mandir", "datadir", "unitdir"):
        ap.add_argument("--" + opt, required=True)
    a = ap.parse_args()
    for tool in ("meson", "systemd-analyze", "groff", "man"):
        if not shutil.which(tool):
            sys.exit(f"test_install.py: {tool} not found (scripts/deps.sh installs it)")

    prefix = a.prefix
    bindir = os.path.join(prefix, a.bindir)
    mandir = os.path.join(prefix, a.mandir)
    docdir = os.path.join(prefix, a.datadir, "doc", "ringtunnel")
    unitdir = os.path.join(prefix, a.unitdir)

    dest = tempfile.mkdtemp(prefix="ringtunnel-install-")
    try:
        run(["meson", "install", "-C", a.build_dir, "--destdir", dest, "--no-rebuild", "--quiet"])

        binary = under(dest, os.path.join(bindir, "ringtunnel"))
        manpage = under(dest, os.path.join(mandir, "man8", "ringtunnel.8"))
        unit = under(dest, os.path.join(unitdir, "ringtunnel.service"))
        sysusers = under(dest, os.path.join(prefix, "lib", "sysusers.d", "ringtunnel.conf"))
        default = under(dest, os.path.join(docdir, "ringtunnel.default"))
        for path in (binary, manpage, unit, sysusers, default):
            check(os.path.isfile(path), f"installed: {os.path.relpath(path, dest)}")
        if failures:
            return 1
        check(os.access(binary, os.X_OK), "the installed binary is executable")
        check(run([binary, "--version"]).stdout.startswith("ringtunnel"),
              "the installed binary runs (--version)")
        help_text = run([binary, "--help"]).stdout
        check(help_text == run([a.built, "--help"]).stdout,
              "the installed binary is the built one (same --help)")
        flags = help_flags(help_text)
        check(len(flags) >= 10, f"--help lists {len(flags)} flags")

        # ---- the unit
        text = open(unit, encoding="utf-8").read()
        entries = unit_entries(text)
        service = {k: v for s, k, v in entries if s == "Service"}
        exec_start = os.path.join(bindir, "ringtunnel")
        check(service.get("ExecStart") == exec_start + " $RINGTUNNEL_ARGS",
              f"ExecStart={exec_start} $RINGTUNNEL_ARGS (is {service.get('ExecStart')!r})")
        check(service.get("EnvironmentFile") == "-/etc/default/ringtunnel",
              "EnvironmentFile=-/etc/default/ringtunnel")
        check(service.get("Type") == "simple", "Type=simple")
        check(service.get("Restart") == "on-failure", "Restart=on-failure")
        check(service.get("KillSignal") == "SIGTERM", "KillSignal=SIGTERM")
        drain = seconds(default_of(help_text, "--drain-timeout") or "")
        stop = seconds(service.get("TimeoutStopSec", ""))
        check(drain is not None and stop is not None and stop > drain,
              f"TimeoutStopSec ({stop} s) > the default --drain-timeout ({drain} s)")
        check(service.get("CapabilityBoundingSet") == "CAP_NET_ADMIN" and
              service.get("AmbientCapabilities") == "CAP_NET_ADMIN",
              "capabilities: CAP_NET_ADMIN only")
        check(service.get("LimitMEMLOCK") == "infinity", "LimitMEMLOCK=infinity")
        check(service.get("LimitNOFILE", "").isdigit() and int(service["LimitNOFILE"]) >= 65536,
              f"LimitNOFILE >= 65536 (is {service.get('LimitNOFILE')!r})")
        for key, want in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                          ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
            check(service.get(key) == want, f"{key}={want}")
        check(set(service.get("RestrictAddressFamilies", "").split()) ==
              {"AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"},
              "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK")
        allowed = allowed_syscalls(entries)
        missing = [s for s in NEEDED_SYSCALLS if s not in allowed]
        check(allowed and not missing,
              f"SystemCallFilter allows {len(NEEDED_SYSCALLS)} calls ringtunnel makes"
              + (f"; NOT: {' '.join(missing)}" if missing else ""))

        work = os.path.join(dest, "verify")
        os.mkdir(work)

        def unit_copy(name, body):
            path = os.path.join(work, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(body)
            return path

        # ExecStart must exist for verify: the same unit, pointing into the destdir.
        local = text.replace(f"ExecStart={exec_start} ", f"ExecStart={binary} ")
        check(local != text, "the verify copy's ExecStart points into the destdir")
        man_root = under(dest, mandir)
        rc, lines = verify(unit_copy("ringtunnel.service", local), man_root)
        check(rc == 0 and not lines,
              "systemd-analyze verify passes, with nothing to say" +
              "".join("\n       " + l for l in lines) + (f" (exit {rc})" if rc else ""))
        # The same check must notice a broken unit.
        rc, lines = verify(unit_copy("ringtunnel-typo.service",
                                     local.replace("\nType=", "\nTyep=")), man_root)
        check(rc != 0 or lines, "verify catches a misspelt key (Tyep=)")
        rc, lines = verify(unit_copy("ringtunnel-nobin.service",
                                     local.replace(f"ExecStart={binary}",
                                                   f"ExecStart={binary}-missing")), man_root)
        check(rc != 0 or lines, "verify catches a missing binary")
        rc, lines = verify(unit_copy("ringtunnel-noman.service", local), "/nonexistent")
        check(rc != 0 or lines, "verify catches a missing man page (Documentation=)")

        rc, overall = security(unit_copy("ringtunnel.service", local))
        check(rc == 0, f"systemd-analyze security --offline: at most 2.5: {overall}")
        bare = "[Service]\nExecStart=%s\n" % binary
        rc, overall = security(unit_copy("ringtunnel-bare.service", bare))
        check(rc != 0, f"security catches a unit without the hardening: {overall}")

        # ---- the man page
        r = run(["groff", "-man", "-Tutf8", "-ww", "-Wbreak", "-z", manpage])
        check(not r.stderr.strip(), "groff -man -Tutf8 -ww renders it without warnings"
              + ("\n       " + r.stderr.strip() if r.stderr.strip() else ""))
        r = run(["man", "-l", manpage], env={"MANWIDTH": "120", "MAN_KEEP_FORMATTING": "",
                                             "MANPAGER": "cat", "PAGER": "cat"})
        page = re.sub("[\u2010\u2011\u2212]", "-", r.stdout)
        page = re.sub(".\b", "", page)  # any overstrike left
        for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "RUNNING AS A SERVICE",
                    "ENVIRONMENT", "SIGNALS", "EXIT STATUS", "FILES"):
            check(re.search(r"^" + sec + r"$", page, re.M), f"man -l: section {sec}")
        options = page.split("\nOPTIONS\n", 1)[-1].split("\nRUNNING AS A SERVICE\n", 1)[0]
        absent = [f for f in flags
                  if not re.search(r"^ {7}" + re.escape(f) + r"( |$)", options, re.M)]
        check(not absent, f"man -l: all {len(flags)} flags of --help are entries of OPTIONS"
              + (f"; NOT: {' '.join(absent)}" if absent else ""))
        for word in ("LOCAL_XDS_PATH", "PROXY_WORKLOAD_INFO", "RINGTUNNEL_ARGS",
                     "/etc/default/ringtunnel"):
            check(word in page, f"man -l: mentions {word}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)

    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

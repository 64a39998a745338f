#!/usr/bin/env python3
"""The workload config (--config, --workload) at start-up and on reload.

Each case writes its own small config (the local workload default/vm-a/node-a, whose SPIFFE ID
spiffe://cluster.local/ns/default/sa/node-a is that of gen-certs.sh's node-a certificate and of
the embedded development identity) into a temporary directory, and starts ringtunnel on loopback
with --hbone-listen on a free port.

startup: the start-up line counts the workloads, services and policies and names the local
  workload and its identity (generation 1), with --cert node-a and with the embedded identity.
env-defaults: $LOCAL_XDS_PATH and $PROXY_WORKLOAD_INFO stand for --config and --workload.
bad-file: a bad field exits 2 with one line "ringtunnel: FILE:LINE:COL: FIELD: REASON"; a
  missing file and a missing local workload exit 2 naming the file (and the workload); nothing
  listens.
identity-mismatch: --cert node-b exits 1 naming both SPIFFE IDs; nothing listens.
sighup: an edit the file watch cannot see (the config is a link into another directory) is not
  taken until SIGHUP; then "reloaded FILE: ... (generation 2)"; SIGHUP again: unchanged.
file-change: a new file renamed over the config, then a write in place, are each taken without
  a signal (generations 2, 3); a bad edit, one without the local workload and one that changes
  its identity each log the error and "keeping generation 3"; a good edit then makes 4; the
  proxy stops cleanly.
configmap-swap: the config is a link through a "..data" link, as a Kubernetes ConfigMap volume
  lays it out; swapping "..data" to a new directory reloads."""

import os
import re
import shutil
import signal
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Proxy, add_cleanup, check, free_port, log, run_tests,  # noqa: E402
                     run_to_exit, wait_until)
from hbone_common import ID_A, ID_B, identity_args  # noqa: E402

DEADLINE = 150
LOCAL = "default/vm-a/node-a"


def mesh_yaml(extra=1, services=1, policies=1, local=True, trust_domain=None, bad=None):
    """The local workload (unless not `local`), `extra` other workloads, `services` services,
    `policies` policies; `bad`: a line added to the first extra workload."""
    w = ["workloads:"]
    if local:
        w += ["- uid: cluster1//v1/Pod/default/vm-a",
              "  name: vm-a",
              "  namespace: default",
              "  serviceAccount: node-a",
              "  workloadIps: [\"127.0.0.1\"]",
              "  protocol: HBONE",
              "  services:",
              "    default/web.default.svc.cluster.local: {80: 8080}"]
        if trust_domain:
            w.append("  trustDomain: %s" % trust_domain)
    for i in range(extra):
        w += ["- uid: cluster1//v1/Pod/default/app-%d" % i,
              "  name: app-%d" % i,
              "  namespace: default",
              "  workloadIps: [\"127.0.1.%d\"]" % (i + 1),
              "  services: {}"]
        if bad and i == 0:
            w.append(bad)
    if not local and not extra:
        w = ["workloads: []"]
    s = ["services:" if services else "services: []"]
    for i in range(services):
        s += ["- name: web-%d" % i,
              "  namespace: default",
              "  hostname: web.default.svc.cluster.local" if i == 0 else
              "  hostname: web-%d.default.svc.cluster.local" % i,
              "  vips: [\"/127.10.0.%d\"]" % (i + 1),
              "  ports: {80: 8080}"]
    p = ["policies:" if policies else "policies: []"]
    for i in range(policies):
        p += ["- name: allow-%d" % i,
              "  namespace: default",
              "  scope: Namespace",
              "  action: Allow",
              "  dryRun: false",
              "  rules:",
              "  - - - namespaces: [!Exact default]"]
    return "\n".join(w + s + p) + "\n"


def workdir():
    d = tempfile.mkdtemp(prefix="rt-workload-config-")
    add_cleanup(shutil.rmtree, d, True)
    return d


def write_rename(path, text):
    """As editors and deployment tools do: a new file renamed over the old one."""
    tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def write_in_place(path, text):
    with open(path, "w") as f:
        f.write(text)


def loaded_line(path, workloads, services, policies):
    return ("ringtunnel: config: loaded %s: %d workloads, %d services, %d policies "
            "(generation 1); local workload %s, identity %s"
            % (path, workloads, services, policies, LOCAL, ID_A))


def reloaded_line(path, workloads, services, policies, generation):
    return ("ringtunnel: config: reloaded %s: %d workloads, %d services, %d policies "
            "(generation %d)" % (path, workloads, services, policies, generation))


def start(path, extra=(), identity=True):
    port = free_port()
    args = ["--config", path, "--workload", LOCAL, "--hbone-listen", "127.0.0.1:%d" % port,
            "--workers", "1"] + (identity_args("node-a") if identity else []) + list(extra)
    return Proxy(args, listens=[("127.0.0.1", port)])


def wait_line(p, line, what, timeout=5.0):
    wait_until(lambda: line in p.stderr_text().splitlines(), timeout,
               what="%s: %r; stderr:\n%s" % (what, line, p.stderr_tail()))


def config_lines(p):
    return [l for l in p.stderr_text().splitlines() if l.startswith("ringtunnel: config: ")]


def startup_test():
    d = workdir()
    path = os.path.join(d, "mesh.yaml")
    write_rename(path, mesh_yaml(extra=2, services=1, policies=3))
    for identity in (True, False):
        p = start(path, identity=identity)
        wait_line(p, loaded_line(path, 3, 1, 3), "the start-up line")
        if not identity:
            check("embedded development identity" in p.stderr_text(),
                  "no line says the embedded development identity is used:\n" + p.stderr_tail())
        p.stop_ok()
        log("%s: %s" % ("--cert node-a" if identity else "embedded identity",
                        loaded_line(path, 3, 1, 3)))


def env_defaults_test():
    d = workdir()
    path = os.path.join(d, "mesh.yaml")
    write_rename(path, mesh_yaml(extra=0, services=0, policies=0))
    port = free_port()
    saved = {k: os.environ.get(k) for k in ("LOCAL_XDS_PATH", "PROXY_WORKLOAD_INFO")}
    os.environ["LOCAL_XDS_PATH"] = path
    os.environ["PROXY_WORKLOAD_INFO"] = LOCAL
    try:
        p = Proxy(["--hbone-listen", "127.0.0.1:%d" % port, "--workers", "1"]
                  + identity_args("node-a"), listens=[("127.0.0.1", port)])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    wait_line(p, loaded_line(path, 1, 0, 0), "the start-up line")
    p.stop_ok()
    log("LOCAL_XDS_PATH=%s PROXY_WORKLOAD_INFO=%s: %s" % (path, LOCAL, loaded_line(path, 1, 0, 0)))


def refused(args, rc_want, *needles, lines=None):
    rc, _, err = run_to_exit(args, timeout=10)
    check(rc == rc_want, "exit code %s, expected %d; stderr: %r" % (rc, rc_want, err))
    for n in needles:
        if hasattr(n, "search"):
            check(n.search(err), "stderr does not match %r: %r" % (n.pattern, err))
        else:
            check(n in err, "stderr does not say %r: %r" % (n, err))
    check("listening" not in err, "it started listening: %r" % err)
    if lines is not None:
        got = err.strip().splitlines()
        check(len(got) == lines, "expected %d stderr line(s), got %d: %r" % (lines, len(got), err))
    log("exit %d: %s" % (rc, err.strip().splitlines()[-1]))


def base_args(path):
    return ["--config", path, "--workload", LOCAL, "--hbone-listen",
            "127.0.0.1:%d" % free_port()] + identity_args("node-a")


def bad_file_test():
    d = workdir()
    path = os.path.join(d, "mesh.yaml")
    # Line 15, column 13: the first extra workload's "protocol: UDP".
    write_rename(path, mesh_yaml(bad="  protocol: UDP"))
    refused(base_args(path), 2,
            "ringtunnel: %s:15:13: workloads[1].protocol: " % path, "UDP", lines=1)
    write_rename(path, mesh_yaml() + "surprise: true\n")
    refused(base_args(path), 2,
            re.compile(r"^ringtunnel: %s:\d+:1: surprise: unknown field" % re.escape(path), re.M),
            lines=1)
    write_rename(path, "workloads: [\n")
    refused(base_args(path), 2, re.compile(r"^ringtunnel: %s:\d+:\d+: " % re.escape(path), re.M),
            lines=1)
    missing = os.path.join(d, "missing.yaml")
    refused(base_args(missing), 2, "ringtunnel: %s: cannot open: " % missing, lines=1)
    write_rename(path, mesh_yaml(local=False))
    refused(base_args(path), 2, "ringtunnel: %s: no workload has namespace \"default\", name "
            "\"vm-a\" and service account \"node-a\" (--workload %s)" % (path, LOCAL), lines=1)


def identity_mismatch_test():
    d = workdir()
    path = os.path.join(d, "mesh.yaml")
    write_rename(path, mesh_yaml())
    args = ["--config", path, "--workload", LOCAL, "--hbone-listen",
            "127.0.0.1:%d" % free_port()] + identity_args("node-b")
    refused(args, 1, ID_A, ID_B, "the local workload %s" % LOCAL, lines=1)
    # The local workload's own trust domain differs from the certificate's.
    write_rename(path, mesh_yaml(trust_domain="other.example"))
    refused(base_args(path), 1, "spiffe://other.example/ns/default/sa/node-a", ID_A, lines=1)


def sighup_test():
    d = workdir()
    real_dir = os.path.join(d, "real")
    os.mkdir(real_dir)
    real = os.path.join(real_dir, "mesh.yaml")
    write_rename(real, mesh_yaml(extra=1, services=1, policies=1))
    watched = os.path.join(d, "watched")
    os.mkdir(watched)
    path = os.path.join(watched, "mesh.yaml")
    os.symlink(real, path)
    p = start(path)
    wait_line(p, loaded_line(path, 2, 1, 1), "the start-up line")
    # An edit in the other directory: no event where the config's name lives.
    write_rename(real, mesh_yaml(extra=3, services=2, policies=0))
    time.sleep(1.0)
    check(not any("reloaded" in l for l in config_lines(p)),
          "reloaded without SIGHUP: %r" % config_lines(p))
    p.signal(signal.SIGHUP)
    wait_line(p, reloaded_line(path, 4, 2, 0, 2), "the reload on SIGHUP")
    p.signal(signal.SIGHUP)
    wait_line(p, "ringtunnel: config: %s is unchanged; keeping generation 2" % path,
              "SIGHUP with the file unchanged")
    check(p.alive(), "ringtunnel exited after SIGHUP")
    p.stop_ok()
    log("SIGHUP: %s" % reloaded_line(path, 4, 2, 0, 2))


def file_change_test():
    d = workdir()
    path = os.path.join(d, "mesh.yaml")
    write_rename(path, mesh_yaml(extra=1, services=1, policies=1))
    p = start(path)
    wait_line(p, loaded_line(path, 2, 1, 1), "the start-up line")
    write_rename(path, mesh_yaml(extra=2, services=1, policies=1))
    wait_line(p, reloaded_line(path, 3, 1, 1, 2), "the reload after a rename over the file")
    write_in_place(path, mesh_yaml(extra=2, services=2, policies=2))
    wait_line(p, reloaded_line(path, 3, 2, 2, 3), "the reload after a write in place")
    log("rename and write in place: generations 2 and 3")
    bad = [
        (mesh_yaml(extra=2, bad="  capacity: lots"),
         "ringtunnel: config: %s:15:13: workloads[1].capacity: " % path),
        (mesh_yaml(local=False, extra=2),
         "ringtunnel: config: %s: no workload has namespace \"default\"" % path),
        (mesh_yaml(extra=2, trust_domain="other.example"),
         "ringtunnel: config: %s: the local workload (%s) would change its identity from %s "
         "(the certificate's) to spiffe://other.example/ns/default/sa/node-a" % (path, LOCAL, ID_A)),
    ]
    for text, start_of_line in bad:
        before = len(config_lines(p))
        write_rename(path, text)

        def logged():
            new = config_lines(p)[before:]
            return [l for l in new if l.startswith(start_of_line)]
        lines = wait_until(logged, 5, what="the error line %r; stderr:\n%s"
                           % (start_of_line, p.stderr_tail()))
        check(lines[0].endswith("; keeping generation 3"),
              "the error line does not end with '; keeping generation 3': %r" % lines[0])
        log("bad edit: %s" % lines[0])
    check(not any("generation 4" in l for l in config_lines(p)),
          "a bad edit was taken: %r" % config_lines(p))
    write_rename(path, mesh_yaml(extra=0, services=0, policies=0))
    wait_line(p, reloaded_line(path, 1, 0, 0, 4), "the reload after the bad edits")
    p.stop_ok()
    log("good edit after the bad ones: generation 4; clean stop")


def configmap_swap_test():
    d = workdir()
    for version in ("v1", "v2"):
        os.mkdir(os.path.join(d, version))
    write_rename(os.path.join(d, "v1", "mesh.yaml"), mesh_yaml(extra=1))
    write_rename(os.path.join(d, "v2", "mesh.yaml"), mesh_yaml(extra=5))
    os.symlink("v1", os.path.join(d, "..data"))
    path = os.path.join(d, "mesh.yaml")
    os.symlink("..data/mesh.yaml", path)
    p = start(path)
    wait_line(p, loaded_line(path, 2, 1, 1), "the start-up line")
    os.symlink("v2", os.path.join(d, "..data_tmp"))
    os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
    wait_line(p, reloaded_line(path, 6, 1, 1, 2), "the reload after the ..data swap")
    p.stop_ok()
    log("..data swapped to v2: %s" % reloaded_line(path, 6, 1, 1, 2))


if __name__ == "__main__":
    run_tests("workload-config", [
        ("startup", startup_test),
        ("env-defaults", env_defaults_test),
        ("bad-file", bad_file_test),
        ("identity-mismatch", identity_mismatch_test),
        ("sighup", sighup_test),
        ("file-change", file_change_test),
        ("configmap-swap", configmap_swap_test),
    ], DEADLINE)

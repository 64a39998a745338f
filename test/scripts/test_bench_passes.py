#!/usr/bin/env python3
"""bench-compare.sh's --rtt and --conn-rate passes without running a benchmark.

- bl_sockperf_result (scripts/bench-lib.sh) reads a canned `sockperf ping-pong --full-rtt`
  report, ANSI colour codes included as sockperf 3.7 prints them: p50, p99, average, maximum
  and the number of observations; and refuses (exit 1, with a reason) a report that is not a
  round-trip one (without --full-rtt), one without a 99th percentile, and one of 0 observations;
- the new options' usage errors (exit 2, naming the option): --rtt-reps without --rtt,
  --conn-seconds without --conn-rate or --mesh, --no-throughput with nothing else to run, with
  --plot, --rtt with --mesh, --conn-rate with --conn-reps 0;
- without wrk on PATH, --conn-rate stops before any run, naming wrk and its package;
- --help describes --rtt, --conn-rate and --no-throughput.

Usage: test_bench_passes.py scripts/bench-compare.sh
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile

failures = []
E = "\x1b"

REPORT = f"""sockperf: {E}[2;35m== version #3.7-no.git == {E}[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT = 23456 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=2.001 sec; Warm up time=400 msec; SentMessages=40420; ReceivedMessages=40419
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=23795; ReceivedMessages=23795
sockperf: {E}[2;35m====> avg-rtt=64.914 (std-dev=41.163){E}[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Round trip is 64.914 usec
sockperf: {E}[2;35mTotal 23795 observations{E}[0m; each percentile contains 237.95 observations
sockperf: ---> <MAX> observation = 3404.420
sockperf: ---> percentile 99.999 = 3404.420
sockperf: ---> percentile 99.990 = 2267.152
sockperf: ---> percentile 99.900 =  218.931
sockperf: ---> percentile 99.000 =  108.604
sockperf: ---> percentile 90.000 =   77.825
sockperf: ---> percentile 75.000 =   71.837
sockperf: ---> percentile 50.000 =   67.226
sockperf: ---> percentile 25.000 =   61.726
sockperf: ---> <MIN> observation =    4.384
"""


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, env=None):
    """cmd in a session of its own; on timeout SIGTERM (bench-compare.sh's trap ends what it
    started), then SIGKILL to the whole group, so nothing it started outlives the test."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        err += "\n(timed out)"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def main():
    compare = os.path.abspath(sys.argv[1])
    lib = os.path.join(os.path.dirname(compare), "bench-lib.sh")
    tmp = tempfile.mkdtemp(prefix="ringtunnel-bench-passes-")
    try:
        def parse(text, name):
            path = os.path.join(tmp, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            return run(["bash", "-c", 'set -euo pipefail; . "$1"; bl_sockperf_result "$2"',
                        "-", lib, path])

        r = parse(REPORT, "full-rtt.txt")
        check(r.returncode == 0 and r.stdout.split() == ["67.226", "108.604", "64.914", "3404.420", "23795"],
              f"a --full-rtt report: p50 p99 avg max observations (exit {r.returncode}: {r.stdout.strip()!r})")
        half = REPORT.replace("Round trip is", "Latency is").replace("avg-rtt", "avg-latency")
        r = parse(half, "latency.txt")
        check(r.returncode == 1 and "Round trip" in r.stdout,
              f"a report without --full-rtt: refused (exit {r.returncode}: {r.stdout.strip()!r})")
        no99 = "".join(l for l in REPORT.splitlines(True) if "percentile 99.000" not in l)
        r = parse(no99, "no-p99.txt")
        check(r.returncode == 1 and "percentile" in r.stdout,
              f"a report without the 99th percentile: refused (exit {r.returncode}: {r.stdout.strip()!r})")
        zero = REPORT.replace("Total 23795 observations", "Total 0 observations")
        r = parse(zero, "zero.txt")
        check(r.returncode == 1 and "no observations" in r.stdout,
              f"a report of 0 observations: refused (exit {r.returncode}: {r.stdout.strip()!r})")

        # A PATH of the tools the script checks for first, but none of the benchmark's peers
        # (iperf3, haproxy, socat, sockperf, wrk): should an option check be broken, the script
        # stops at the missing tools instead of starting a benchmark.
        bin_dir = os.path.join(tmp, "bin")
        os.mkdir(bin_dir)
        for tool in ("bash", "env", "awk", "sed", "grep", "head", "mktemp", "rm", "cat", "ss",
                     "dirname", "nproc", "date", "getconf", "sort", "tr", "timeout"):
            path = shutil.which(tool)
            if path:
                os.symlink(path, os.path.join(bin_dir, tool))
        bare = {"PATH": bin_dir}

        for args, word in ((["--rtt-reps", "2"], "--rtt-reps"),
                           (["--conn-seconds", "3"], "--conn-seconds"),
                           (["--no-throughput"], "--no-throughput"),
                           (["--no-throughput", "--rtt", "--plot", os.path.join(tmp, "x.svg")], "--plot"),
                           (["--rtt", "--mesh"], "--mesh"),
                           (["--conn-rate", "--conn-reps", "0"], "--conn-reps"),
                           (["--rtt", "--rtt-seconds", "0"], "--rtt-seconds")):
            r = run([compare] + args, env=bare)
            check(r.returncode == 2 and word in r.stderr,
                  f"{' '.join(args)}: usage error naming {word} (exit {r.returncode}: {r.stderr.strip()[:200]})")

        # No wrk (nor the rest of the peers): a clear error before any run.
        r = run([compare, "--no-throughput", "--conn-rate", "--reps", "1"], env=bare)
        check(r.returncode == 1 and "missing tool(s): wrk" in r.stderr and "apt-get install" in r.stderr
              and "wrk" in r.stderr.split("apt-get install", 1)[1] and "pass" not in r.stderr + r.stdout,
              f"--conn-rate without wrk: exit 1 before any run, naming wrk (exit {r.returncode}: "
              f"{r.stderr.strip()[:300]})")

        r = run([compare, "--help"])
        check(r.returncode == 0 and all(o in r.stdout for o in ("--rtt ", "--conn-rate ", "--no-throughput",
                                                                 "--rtt-seconds", "sockperf", "wrk", "nginx")),
              "bench-compare.sh --help has --rtt, --conn-rate, --no-throughput")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

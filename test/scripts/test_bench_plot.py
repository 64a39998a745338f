#!/usr/bin/env python3
"""scripts/bench-plot.sh (what bench-compare.sh --plot runs) on canned CSVs; no benchmark runs.

- bench-runs.csv (two loads, four configurations, failed runs, a strace pass): the SVG is
  well-formed XML whose text has the three figures' titles, both loads and every
  configuration; direct, which has no CPU or syscall figure, is in the throughput legend only,
  the others in all three;
- without the syscall pass there is no syscall figure;
- bad input is a clear error (exit 1 naming the file): a missing CSV, a CSV of another shape,
  one whose runs all failed; and without gnuplot on PATH, both bench-plot.sh and
  bench-compare.sh --plot say that gnuplot is missing (bench-compare.sh before any run).

Usage: test_bench_plot.py scripts/bench-plot.sh
"""

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
SVG = "{http://www.w3.org/2000/svg}"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def run(cmd, env=None):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})})


def texts(svg_path):
    """The SVG's <text> contents (a label split into <tspan>s joined), or None if not XML."""
    try:
        root = ET.parse(svg_path).getroot()
    except ET.ParseError as e:
        print(f"     {svg_path}: {e}")
        return None
    if root.tag != SVG + "svg":
        print(f"     root element is {root.tag}")
        return None
    return ["".join(t.itertext()).strip() for t in root.iter(SVG + "text")]


def main():
    plot = os.path.abspath(sys.argv[1])
    compare = os.path.join(os.path.dirname(plot), "bench-compare.sh")
    canned = os.path.join(HERE, "bench-runs.csv")
    if not shutil.which("gnuplot"):
        sys.exit("test_bench_plot.py: gnuplot not found (scripts/deps.sh installs gnuplot-nox)")
    tmp = tempfile.mkdtemp(prefix="ringtunnel-bench-plot-")
    try:
        svg = os.path.join(tmp, "out.svg")
        r = run([plot, "--title", "canned runs", canned, svg])
        check(r.returncode == 0, f"bench-plot.sh draws bench-runs.csv (exit {r.returncode}) "
              + r.stderr.strip())
        t = texts(svg) if os.path.exists(svg) else None
        check(t is not None, "the SVG is well-formed XML with an <svg> root")
        t = t or []
        for want in ("canned runs", "Throughput (Gbit/s; median, bars min to max)",
                     "Proxy CPU (CPU-s/GB; median; a tunnel: both processes)",
                     "System calls (syscalls/GB, log scale; median; a tunnel: both processes)",
                     "P1 fwd", "P1 rev"):
            check(want in t, f"text {want!r}")
        for series, figures in (("direct", 1), ("ringtunnel", 3), ("haproxy", 3), ("hbone", 3)):
            check(t.count(series) == figures,
                  f"series {series!r} in {figures} legend(s) (is {t.count(series)})")

        # Only the throughput pass: no syscall figure.
        lines = open(canned, encoding="utf-8").read().splitlines(True)
        no_sys = os.path.join(tmp, "no-syscalls.csv")
        with open(no_sys, "w", encoding="utf-8") as f:
            f.writelines(l for l in lines if not l.startswith("strace,"))
        svg2 = os.path.join(tmp, "no-syscalls.svg")
        r = run([plot, no_sys, svg2])
        t2 = texts(svg2) if r.returncode == 0 else None
        check(t2 is not None and not any(x.startswith("System calls") for x in t2)
              and any(x.startswith("Proxy CPU") for x in t2),
              "without a syscall pass: throughput and CPU figures only")

        # Bad input.
        def bad(args, words, what, env=None):
            r = run(args, env)
            ok = r.returncode == 1 and all(w in r.stderr for w in words)
            check(ok, f"{what}: exit 1 naming {', '.join(words)} (exit {r.returncode}: "
                  f"{r.stderr.strip()[:300]})")

        bad([plot, os.path.join(tmp, "absent.csv"), svg], ["absent.csv"], "a missing CSV")
        other = os.path.join(tmp, "other.csv")
        with open(other, "w", encoding="utf-8") as f:
            f.write("a,b,c\n1,2,3\n")
        bad([plot, other, svg], ["other.csv", "--csv"], "a CSV of another shape")
        failed = os.path.join(tmp, "failed.csv")
        with open(failed, "w", encoding="utf-8") as f:
            f.writelines([lines[0]] + [l for l in lines if ",FAILED," in l])
        bad([plot, failed, svg], ["failed.csv", "no successful run"], "only failed runs")
        r = run([plot, canned])
        check(r.returncode == 2, f"one argument: usage error (exit {r.returncode})")

        # No gnuplot: a PATH of the other tools the scripts use.
        bin_dir = os.path.join(tmp, "bin")
        os.mkdir(bin_dir)
        for tool in ("bash", "env", "awk", "sed", "grep", "head", "mktemp", "rm", "cat",
                     "dirname", "nproc", "date", "getconf", "sort", "tr", "timeout"):
            path = shutil.which(tool)
            if path:
                os.symlink(path, os.path.join(bin_dir, tool))
        bad([plot, canned, svg], ["gnuplot not found", "gnuplot-nox"], "bench-plot.sh without gnuplot",
            env={"PATH": bin_dir})
        out_svg = os.path.join(tmp, "compare.svg")
        r = run([compare, "--plot", out_svg, "--reps", "1"], env={"PATH": bin_dir})
        check(r.returncode == 1 and "gnuplot" in r.stderr and "gnuplot-nox" in r.stderr
              and "throughput pass" not in r.stderr + r.stdout,
              "bench-compare.sh --plot without gnuplot: exit 1 before any run, naming gnuplot "
              f"(exit {r.returncode}: {r.stderr.strip()[:300]})")
        r = run([compare, "--plot"])
        check(r.returncode == 2 and "--plot needs a value" in r.stderr,
              f"bench-compare.sh --plot without a file: usage error (exit {r.returncode})")
        r = run([compare, "--help"])
        check(r.returncode == 0 and "--plot FILE.svg" in r.stdout, "bench-compare.sh --help has --plot")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{len(failures)} failed" if failures else "all passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

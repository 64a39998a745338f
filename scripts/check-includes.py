#!/usr/bin/env python3
"""The include graph of the project's own headers and sources has no cycle.

Reads every file under include/ and src/ (and bench/, test/ for the arrows they add), follows
each `#include "ringtunnel/..."` to include/ringtunnel/..., and fails with the cycle it finds:
a header that reaches itself through others makes the order of definitions fragile and ties
components together that should not know each other.

The operating servers (ops/) stand beside the proxy: ops/ may include config/, net/, tls/,
workload/, ops/, proxy/log.h and stats/ (the counters the workers keep) only, and proxy/ never includes ops/ (main.cc joins them).

It also holds the proxy's layering: the objects (relay, HBONE connection and stream, outbound
pool) reach their worker only through proxy/context.h, so worker.h and objects.h (the tables of
every object) are included only by the few files above them (TOP_ONLY).

Usage: scripts/check-includes.py [ROOT]   (ROOT: the repository, default: this script's parent)
Exit 0: no cycle. Exit 1: a cycle, printed as a -> b -> ... -> a. Exit 2: bad usage.
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"(ringtunnel/[^"]+)"', re.M)
EXTS = (".h", ".hh", ".hpp", ".cc", ".cpp")
# header -> the files of src/ that may include it (tests and benchmarks may include anything)
TOP_ONLY = {
    "include/ringtunnel/proxy/worker.h": {"src/main.cc", "src/proxy/worker.cc"},
    "include/ringtunnel/proxy/objects.h": {
        "src/proxy/objects.cc",
        "src/proxy/dispatch.cc",
        "src/proxy/capture.cc",  # the accept path of captured connections, beside dispatch.cc
        "src/proxy/worker.cc",
    },
}


# folder prefix -> the include prefixes its files may use (None: any but those in NEVER)
OPS_MAY_INCLUDE = ("include/ringtunnel/config/", "include/ringtunnel/net/",
                   "include/ringtunnel/tls/", "include/ringtunnel/workload/",
                   "include/ringtunnel/ops/", "include/ringtunnel/proxy/log.h",
                   "include/ringtunnel/stats/")
OPS_FILES = ("src/ops/", "include/ringtunnel/ops/")
PROXY_FILES = ("src/proxy/", "include/ringtunnel/proxy/")


def ops_layering(edges):
    """The ops/ and proxy/ arrows that break the rule above, as messages."""
    wrong = []
    for path, incs in edges.items():
        for inc in incs:
            if path.startswith(OPS_FILES) and not inc.startswith(OPS_MAY_INCLUDE):
                wrong.append(f"{path} includes {inc} (ops/ may include only "
                             "config/, net/, tls/, workload/, ops/, proxy/log.h and stats/)")
            if path.startswith(PROXY_FILES) and inc.startswith("include/ringtunnel/ops/"):
                wrong.append(f"{path} includes {inc} (proxy/ never includes ops/)")
    return wrong


def files(root):
    for top in ("include", "src", "bench", "test"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for n in names:
                if n.endswith(EXTS):
                    yield os.path.relpath(os.path.join(dirpath, n), root)


def graph(root):
    edges = {}
    for path in files(root):
        with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
            text = f.read()
        edges[path] = [os.path.join("include", inc) for inc in INCLUDE.findall(text)]
    return edges


def find_cycle(edges):
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in edges}
    for start in sorted(edges):
        if colour[start] != WHITE:
            continue
        stack = [(start, iter(edges.get(start, ())))]
        path = [start]
        colour[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                path.pop()
                continue
            if nxt not in edges:
                continue  # not a file of the tree (a typo fails the build, not this check)
            if colour[nxt] == GREY:
                return path[path.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(edges.get(nxt, ()))))
                path.append(nxt)
    return None


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root = argv[1] if len(argv) == 2 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isdir(os.path.join(root, "include")):
        print(f"check-includes: {root}: no include/ folder (not the repository?)", file=sys.stderr)
        return 2
    edges = graph(root)
    cycle = find_cycle(edges)
    if cycle:
        print("include cycle: " + " -> ".join(cycle))
        return 1
    wrong = sorted(
        [f"{path} includes {inc} (only {', '.join(sorted(TOP_ONLY[inc]))} may)"
         for path, incs in edges.items()
         if path.startswith("src/")
         for inc in incs
         if inc in TOP_ONLY and path not in TOP_ONLY[inc]] + ops_layering(edges)
    )
    if wrong:
        print("layering:\n  " + "\n  ".join(wrong))
        return 1
    print(f"include graph: {len(edges)} files, {sum(len(v) for v in edges.values())} includes, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

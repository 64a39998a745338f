#!/usr/bin/env bash
# bench-mixed-rtt.sh — does a bulk transfer slow down another connection of the same worker?
#
# Starts `ringtunnel --workers 1` with two TCP routes on 127.0.0.1: one to an iperf3 server, one
# to a sockperf server. Measures the 64-byte ping-pong round trip (sockperf ping-pong --tcp -m 64
# --full-rtt) through the second route, first alone, then while an iperf3 stream runs through the
# first. Repeats for each binary given, alternating, --reps times. Prints p50 and p99 in µs per
# run. Run it on an otherwise idle machine; compare figures only within one run.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/bench-mixed-rtt.sh [--reps N] [--seconds N] BIN[:FLAGS] [BIN[:FLAGS]...]

  BIN[:FLAGS]  a ringtunnel binary, optionally with extra flags after a colon, comma-separated
               (e.g. build/ringtunnel:--ring-min-wait,off)
  --reps N     rounds over all binaries (default: 3)
  --seconds N  length of each ping-pong measurement (default: 4)
  -h, --help   this text
Needs iperf3 and sockperf (scripts/deps.sh installs both).
USAGE
}

reps=3 seconds=4 bins=()
while (($#)); do
	case $1 in
	--reps) reps=${2:?--reps needs a number}; shift 2 ;;
	--seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	-*) echo "bench-mixed-rtt: unknown option $1 (try --help)" >&2; exit 2 ;;
	*) bins+=("$1"); shift ;;
	esac
done
((${#bins[@]})) || { usage >&2; exit 2; }
[[ $reps =~ ^[1-9][0-9]*$ && $seconds =~ ^[1-9][0-9]*$ ]] ||
	{ echo "bench-mixed-rtt: --reps and --seconds take positive integers" >&2; exit 2; }
for t in iperf3 sockperf; do
	command -v "$t" >/dev/null || { echo "bench-mixed-rtt: $t is missing (scripts/deps.sh)" >&2; exit 2; }
done

pids=()
cleanup() { ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; pids=(); }
trap cleanup EXIT

# p50 and p99 in µs from sockperf's report (its colour codes stripped).
pingpong() {
	sockperf ping-pong --tcp -i 127.0.0.1 -p "$1" -m 64 --full-rtt -t "$seconds" 2>&1 |
		sed 's/\x1b\[[0-9;]*m//g' |
		awk '/percentile 50.000 =/ { p50 = $NF } /percentile 99.000 =/ { p99 = $NF }
		     END { if (p50 == "" || p99 == "") exit 1; printf "p50 %7.1f  p99 %8.1f", p50, p99 }'
}

run_one() { # BIN[:FLAGS]
	local bin=${1%%:*} flags=() base=$((20000 + RANDOM % 20000))
	[[ $1 == *:* ]] && IFS=, read -r -a flags <<<"${1#*:}"
	iperf3 -s -p "$base" >/dev/null 2>&1 & pids+=($!)
	sockperf server --tcp -i 127.0.0.1 -p $((base + 1)) >/dev/null 2>&1 & pids+=($!)
	"$bin" --workers 1 --access-log off --metrics-listen off --readiness-listen off \
		--admin-listen off --forward "127.0.0.1:$((base + 2))=tcp://127.0.0.1:$base" \
		--forward "127.0.0.1:$((base + 3))=tcp://127.0.0.1:$((base + 1))" \
		"${flags[@]+"${flags[@]}"}" >/dev/null 2>&1 & pids+=($!)
	sleep 1
	local alone beside
	alone=$(pingpong $((base + 3))) || alone="(no report)"
	iperf3 -c 127.0.0.1 -p $((base + 2)) -t $((seconds + 3)) >/dev/null 2>&1 & pids+=($!)
	sleep 1.5
	beside=$(pingpong $((base + 3))) || beside="(no report)"
	cleanup
	printf '%-50s alone: %s   beside bulk: %s\n' "$1" "$alone" "$beside"
}

for ((r = 1; r <= reps; r++)); do
	for b in "${bins[@]}"; do run_one "$b"; done
done

#!/usr/bin/env bash
# bench-scrape.sh — what scraping ringtunnel's /metrics costs its data path: iperf3 through one
# ringtunnel (--forward, on 127.0.0.1), runs without a scraper alternating with runs during which
# a scraper fetches /metrics every --interval seconds, and the two medians side by side.
#
# The scrape is served on ringtunnel's operating thread and reads the workers' counters
# without stopping them; this shows that in figures. The scraper is one Python process (no
# process per scrape). On a small machine the scraper's own CPU competes with iperf3 and
# ringtunnel, so a third kind of run, "control", has the same scraper fetch a file of the
# same size from a static HTTP server instead: scraped vs control is what ringtunnel's side of
# a scrape costs.
set -euo pipefail

# shellcheck disable=SC2034  # BL_PROG, BL_RT_*: read by bench-lib.sh
BL_PROG=bench-scrape.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$SCRIPT_DIR/bench-lib.sh"

usage() {
	cat <<EOF
Usage: scripts/bench-scrape.sh [OPTIONS]

Throughput of iperf3 through ringtunnel (--forward on 127.0.0.1) in three kinds of run,
interleaved: quiet (no scraper), scraped (a scraper fetching /metrics from ringtunnel's
--metrics-listen) and control (the same scraper fetching a file of /metrics' size from a static
HTTP server, python3 -m http.server: the scraper's own cost, without ringtunnel's). Prints per
kind the median Gbit/s (min-max), ringtunnel's CPU-s/GB and the scrapes served per second (each
checked: status 200 and a body), and the ratios scraped/control and scraped/quiet.

Options:
  --reps N          runs of each kind (default: 5)
  --seconds N       length of each iperf3 run (default: 5)
  --streams N       iperf3 -P (default: 1)
  --interval S      seconds between scrapes, decimal (default: 0.1, 150 times Prometheus'
                    usual 15 s); 0: back to back
  --bin PATH        the ringtunnel binary (default: build/ringtunnel, or \$RINGTUNNEL)
  -h, --help        this text
Exit status: 0 all runs succeeded, 1 a run or a scrape failed or a tool is missing, 2 bad usage.
Needs: iperf3 jq python3 iproute2 (ss).
EOF
}

REPS=5
SECONDS_RUN=5
STREAMS=1
INTERVAL=0.1
BL_RT_BIN=${RINGTUNNEL:-$SCRIPT_DIR/../build/ringtunnel}
need_arg() { (($2 >= 2)) || bl_usage_err "$1 needs a value"; }
while (($#)); do
	case "$1" in
	--reps) need_arg "$1" $#; REPS=$2; shift 2 ;;
	--seconds) need_arg "$1" $#; SECONDS_RUN=$2; shift 2 ;;
	--streams) need_arg "$1" $#; STREAMS=$2; shift 2 ;;
	--interval) need_arg "$1" $#; INTERVAL=$2; shift 2 ;;
	--bin) need_arg "$1" $#; BL_RT_BIN=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) bl_usage_err "unknown option '$1'" ;;
	esac
done
bl_is_uint "$REPS" || bl_usage_err "--reps must be a positive integer (got '$REPS')"
bl_is_uint "$SECONDS_RUN" || bl_usage_err "--seconds must be a positive integer (got '$SECONDS_RUN')"
bl_is_uint "$STREAMS" || bl_usage_err "--streams must be a positive integer (got '$STREAMS')"
[[ $INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || bl_usage_err "--interval must be a number of seconds (got '$INTERVAL')"
bl_need iperf3 jq python3 ss awk timeout
[[ -x $BL_RT_BIN ]] || bl_die "ringtunnel binary not found or not executable: $BL_RT_BIN (build it, or --bin PATH)"
[[ $(timeout 10 "$BL_RT_BIN" --help 2>&1 || true) == *--metrics-listen* ]] ||
	bl_die "$BL_RT_BIN has no --metrics-listen"

bl_init
bl_iperf_server_start
LPORT=$(bl_pick_port)
MPORT=$(bl_pick_port)
while [[ $MPORT == "$LPORT" ]]; do MPORT=$(bl_pick_port); done
# shellcheck disable=SC2034  # read by bench-lib.sh's bl_proxy_cmd
BL_RT_EXTRA=(--metrics-listen "127.0.0.1:$MPORT")
bl_start_proxy ringtunnel "$LPORT" "$BL_IPERF_SRV_PORT" "$BL_TMP/ringtunnel.log" ||
	bl_die "ringtunnel did not start: $BL_PROXY_ERR"
URL="http://127.0.0.1:$MPORT/metrics"

# The scraper: fetches URL every INTERVAL s until SIGTERM; each scrape must be a 200 with a
# body. Writes "OK FAILED BYTES" to its output file at the end.
SCRAPER=$(
	cat <<'EOF'
import signal, sys, time, urllib.request
url, interval, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
ok = failed = size = 0
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
while not stop:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read()
        if r.status == 200 and body:
            ok += 1
            size = len(body)
        else:
            failed += 1
    except Exception:
        failed += 1
    if interval > 0 and not stop:
        time.sleep(interval)
with open(out, "w") as f:
    f.write("%d %d %d\n" % (ok, failed, size))
EOF
)
python3 -c "import urllib.request; urllib.request.urlopen('$URL', timeout=5).read()" 2>/dev/null ||
	bl_die "$URL does not answer 200 (a build without the metrics route?)"
# The control's static server, with a file of /metrics' size.
mkdir -p "$BL_TMP/static"
python3 -c "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen('$URL', timeout=5).read())" \
	>"$BL_TMP/static/metrics"
SPORT=$(bl_pick_port)
while [[ $SPORT == "$LPORT" || $SPORT == "$MPORT" ]]; do SPORT=$(bl_pick_port); done
python3 -m http.server "$SPORT" --bind 127.0.0.1 --directory "$BL_TMP/static" >"$BL_TMP/static.log" 2>&1 &
STATIC_PID=$!
bl_own "$STATIC_PID"
bl_wait_listen "$SPORT" "$STATIC_PID" 10 || bl_die "the control's static HTTP server did not start"
CONTROL_URL="http://127.0.0.1:$SPORT/metrics"

RESULTS="$BL_TMP/results" # kind gbps cpu_s_per_gb scrapes_ok scrapes_failed body_bytes
: >"$RESULTS"
FAILED=0
echo "iperf3 -P $STREAMS, $SECONDS_RUN s per run, $REPS runs of each kind; scraper every $INTERVAL s ($URL)" >&2
for ((rep = 1; rep <= REPS; rep++)); do
	case $((rep % 3)) in
	1) kinds=(quiet scraped control) ;;
	2) kinds=(scraped control quiet) ;;
	0) kinds=(control quiet scraped) ;;
	esac
	for kind in "${kinds[@]}"; do
		spid="" sout="$BL_TMP/scrape-$rep-$kind"
		if [[ $kind != quiet ]]; then
			python3 -c "$SCRAPER" "$([[ $kind == scraped ]] && echo "$URL" || echo "$CONTROL_URL")" \
				"$INTERVAL" "$sout" &
			spid=$!
			bl_own "$spid"
		fi
		read -r u0 s0 < <(bl_cpu_ticks "$BL_PROXY_PID")
		json="$BL_TMP/iperf-$rep-$kind.json"
		if ! bl_iperf_run "$LPORT" "$SECONDS_RUN" "$STREAMS" 0 "$json"; then
			echo "  run $rep $kind FAILED: $BL_PROXY_ERR" >&2
			FAILED=1
			[[ -n $spid ]] && bl_kill_tree "$spid" TERM 5
			continue
		fi
		read -r u1 s1 < <(bl_cpu_ticks "$BL_PROXY_PID")
		sok=0 sfail=0 sbytes=0
		if [[ -n $spid ]]; then
			kill -TERM "$spid" 2>/dev/null || true
			wait "$spid" 2>/dev/null || true
			bl_disown "$spid"
			read -r sok sfail sbytes <"$sout" || { sok=0 sfail=1; }
			((sfail == 0 && sok > 0)) || { echo "  run $rep: $sfail scrapes failed, $sok served" >&2; FAILED=1; }
		fi
		read -r bytes secs < <(bl_iperf_result "$json")
		gbps=$(bl_calc "%.3f" "$bytes * 8 / $secs / 1e9")
		cpu=$(bl_calc "%.4f" "($u1 + $s1 - $u0 - $s0) / $BL_HZ / ($bytes / 1e9)")
		echo "$kind $gbps $cpu $sok $sfail $sbytes" >>"$RESULTS"
		printf '  [%d/%d] %-8s %7s Gbit/s, %s CPU-s/GB%s\n' "$rep" "$REPS" "$kind" "$gbps" "$cpu" \
			"$([[ $kind != quiet ]] && echo ", $sok scrapes of $sbytes bytes")" >&2
	done
done

awk -v secs="$SECONDS_RUN" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ k = $1; n[k]++; g[k, n[k]] = $2; c[k, n[k]] = $3; s[k] += $4 }
END {
	printf "%-8s %4s %8s %-15s %9s %10s\n", "kind", "runs", "Gbit/s", "(min-max)", "CPU-s/GB", "scrapes/s"
	for (ki = 1; ki <= 3; ki++) {
		k = (ki == 1) ? "quiet" : (ki == 2) ? "control" : "scraped"
		if (!n[k]) { printf "%-8s %4d FAILED\n", k, 0; continue }
		for (i = 1; i <= n[k]; i++) { gg[i] = g[k, i] + 0; cc[i] = c[k, i] + 0 }
		mg[k] = median(gg, n[k]); mc[k] = median(cc, n[k])
		lo = hi = gg[1]; for (i = 2; i <= n[k]; i++) { if (gg[i] < lo) lo = gg[i]; if (gg[i] > hi) hi = gg[i] }
		printf "%-8s %4d %8.2f %-15s %9.3f %10s\n", k, n[k], mg[k], sprintf("(%.2f-%.2f)", lo, hi), mc[k], \
			(k != "quiet" ? sprintf("%.1f", s[k] / (n[k] * secs)) : "-")
	}
	if (n["control"] && n["scraped"])
		printf "scraped/control: throughput %.2fx, CPU-s/GB %.2fx (ringtunnel serving the scrapes)\n", \
			mg["scraped"] / mg["control"], mc["scraped"] / mc["control"]
	if (n["quiet"] && n["scraped"])
		printf "scraped/quiet: throughput %.2fx, CPU-s/GB %.2fx (ringtunnel and the scraper)\n", \
			mg["scraped"] / mg["quiet"], mc["scraped"] / mc["quiet"]
}' "$RESULTS"
exit "$FAILED"

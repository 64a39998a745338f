#!/usr/bin/env bash
# bench-syscalls.sh — system calls, CPU and throughput of one TCP relay under iperf3.
#
# iperf3 -c -> proxy (127.0.0.1:LPORT) -> iperf3 -s (127.0.0.1:TPORT), all on loopback, in the
# manner of ztunnel's benches/README.md (syscall profile under iperf). Two runs, each with a
# freshly started proxy:
#   run 1, no tracer: throughput (iperf3 -J, end.sum_received) and the proxy's CPU time
#          (utime+stime of all its threads and processes from /proc/PID/stat, sampled right
#          before and right after iperf3) -> Gbit/s and CPU-s/GB;
#   run 2, `strace -c -f -p PID` attached to every thread of the proxy once it listens ->
#          strace's table as is, and syscalls/GB (total calls / bytes moved in that run).
#          strace stops the proxy at every system call, so this run's throughput is not a
#          result; only the ratio calls/bytes is used.
#   run 3, only with --perf: the count again with `perf stat -e raw_syscalls:sys_enter`,
#          which costs far less than strace (a cross-check of the strace figure).
# GB = 1e9 bytes. The proxy and both iperf3 ends share this machine's cores (no pinning).
set -euo pipefail

# shellcheck disable=SC2034  # BL_PROG, BL_KEEP_TMP, BL_RT_*, BL_HAPROXY_BUFSIZE: read by bench-lib.sh
BL_PROG=bench-syscalls.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$SCRIPT_DIR/bench-lib.sh"

usage() {
	cat <<EOF
Usage: scripts/bench-syscalls.sh [OPTIONS] [-- RINGTUNNEL_FLAGS...]

Relays iperf3 through one proxy on 127.0.0.1 and prints the proxy's system calls per GB
(strace -c -f, attached to all its threads), its CPU seconds per GB and the throughput
(those two from a separate run without strace, since strace distorts both).

Options:
  --proxy KIND        which relay to measure (default: ringtunnel):
                        ringtunnel         build/ringtunnel --forward ... (copying relay)
                        ringtunnel-splice  the same with --tcp-splice
                        haproxy            HAProxy, mode tcp, nbthread 2, no splice
                        haproxy-splice     HAProxy, mode tcp, nbthread 2, option splice-request +
                                           option splice-response (splice both ways)
                        socat              socat TCP-LISTEN:...,fork,reuseaddr TCP:... (a process
                                           per connection; strace -f follows the forks)
  --bin PATH          ringtunnel binary (default: \$RINGTUNNEL, else build/ringtunnel of this
                      repository)
  --seconds N         length of each iperf3 run in seconds (default: 10)
  --streams N         parallel iperf3 streams, iperf3 -P (default: 1)
  --reverse           server sends, client receives (iperf3 -R)
  --perf              add a third run counting syscalls with perf stat (raw_syscalls:sys_enter),
                      which slows the proxy much less than strace (needs linux-perf)
  --no-strace         skip the strace run (throughput and CPU only)
  --haproxy-bufsize N HAProxy tune.bufsize in bytes (default: HAProxy's, 16384)
  --keep-tmp          keep the temp dir (logs, JSON, haproxy config, strace output)
  -h, --help          this text
  -- FLAGS...         everything after -- is appended to the ringtunnel command line
                      (ringtunnel kinds only), e.g. -- --workers 1

The ringtunnel command is:
  ringtunnel --forward 127.0.0.1:LPORT=tcp://127.0.0.1:TPORT --access-log off
             --drain-timeout 1s [--tcp-splice] [FLAGS...]
with its default worker count (one per online CPU). HAProxy gets nbthread 2, maxconn 4096,
timeouts 5 s connect / 60 s client and server.

Exit status: 0 success, 1 a run failed or a tool is missing, 2 bad usage.
Needs: iperf3 haproxy socat strace jq iproute2 (ss); linux-perf for --perf.
EOF
}

PROXY=ringtunnel
SECONDS_RUN=10
STREAMS=1
REVERSE=0
DO_PERF=0
DO_STRACE=1
BL_RT_BIN=${RINGTUNNEL:-$SCRIPT_DIR/../build/ringtunnel}
BL_RT_EXTRA=()
BL_HAPROXY_BUFSIZE=""

while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--proxy) [[ $# -ge 2 ]] || bl_usage_err "--proxy needs a value"; PROXY=$2; shift 2 ;;
	--proxy=*) PROXY=${1#*=}; shift ;;
	--bin) [[ $# -ge 2 ]] || bl_usage_err "--bin needs a path"; BL_RT_BIN=$2; shift 2 ;;
	--bin=*) BL_RT_BIN=${1#*=}; shift ;;
	--seconds) [[ $# -ge 2 ]] || bl_usage_err "--seconds needs a value"; SECONDS_RUN=$2; shift 2 ;;
	--seconds=*) SECONDS_RUN=${1#*=}; shift ;;
	--streams) [[ $# -ge 2 ]] || bl_usage_err "--streams needs a value"; STREAMS=$2; shift 2 ;;
	--streams=*) STREAMS=${1#*=}; shift ;;
	--reverse | -R) REVERSE=1; shift ;;
	--perf) DO_PERF=1; shift ;;
	--no-strace) DO_STRACE=0; shift ;;
	--haproxy-bufsize) [[ $# -ge 2 ]] || bl_usage_err "--haproxy-bufsize needs a value"; BL_HAPROXY_BUFSIZE=$2; shift 2 ;;
	--haproxy-bufsize=*) BL_HAPROXY_BUFSIZE=${1#*=}; shift ;;
	--keep-tmp) BL_KEEP_TMP=1; shift ;;
	--) shift; BL_RT_EXTRA=("$@"); break ;;
	*) bl_usage_err "unknown option '$1'" ;;
	esac
done

case " $BL_PROXIES " in *" $PROXY "*) ;; *) bl_usage_err "--proxy must be one of: $BL_PROXIES (got '$PROXY')" ;; esac
bl_is_uint "$SECONDS_RUN" || bl_usage_err "--seconds must be a positive integer (got '$SECONDS_RUN')"
{ bl_is_uint "$STREAMS" && ((STREAMS <= 128)); } || bl_usage_err "--streams must be an integer 1..128 (got '$STREAMS')"
[[ -z $BL_HAPROXY_BUFSIZE ]] || bl_is_uint "$BL_HAPROXY_BUFSIZE" || bl_usage_err "--haproxy-bufsize must be a positive integer"
if ((${#BL_RT_EXTRA[@]})) && [[ $PROXY != ringtunnel* ]]; then
	bl_usage_err "flags after -- are for ringtunnel; --proxy is $PROXY"
fi
((DO_STRACE || DO_PERF)) || bl_log "note: --no-strace without --perf: no syscall counts"

tools=(iperf3 jq ss timeout getconf awk)
case "$PROXY" in haproxy*) tools+=(haproxy) ;; socat) tools+=(socat) ;; esac
((DO_STRACE)) && tools+=(strace)
((DO_PERF)) && tools+=(perf)
bl_need "${tools[@]}"
if [[ $PROXY == ringtunnel* ]]; then
	[[ -x $BL_RT_BIN ]] || bl_die "ringtunnel binary not found or not executable: $BL_RT_BIN (build it, or pass --bin PATH or RINGTUNNEL=PATH)"
fi

bl_init
bl_iperf_server_start

DIR_TXT=$( ((REVERSE)) && echo "reverse (iperf3 -R: server sends)" || echo "forward (client sends)")
echo "bench-syscalls: proxy $PROXY$([[ $PROXY == ringtunnel* ]] && echo " ($BL_RT_BIN)")"
echo "load: $STREAMS stream(s), $DIR_TXT, ${SECONDS_RUN} s per run; iperf3 -s on 127.0.0.1:$BL_IPERF_SRV_PORT"
echo "machine: $(nproc) online CPUs shared by the proxy and both iperf3 ends (no pinning); CLK_TCK=$BL_HZ; GB = 1e9 bytes"
echo

FAILED=0
# measure MODE (plain|strace|perf) — one iperf3 run through a freshly started proxy.
# Sets R_BYTES R_SECS R_USER R_SYS (ticks) R_COUNT R_COUNTFILE; returns 1 on failure.
measure() {
	local mode=$1 lport log json
	R_BYTES=0 R_SECS=0 R_USER=0 R_SYS=0 R_COUNT="" R_COUNTFILE=""
	lport=$(bl_pick_port)
	log="$BL_TMP/proxy-$mode.log"
	json="$BL_TMP/iperf3-$mode.json"
	if ! bl_start_proxy "$PROXY" "$lport" "$BL_IPERF_SRV_PORT" "$log"; then
		echo "  FAILED: $BL_PROXY_ERR"; return 1
	fi
	case "$mode" in
	strace)
		R_COUNTFILE="$BL_TMP/strace-c.txt"
		bl_strace_start "$BL_PROXY_PID" "$R_COUNTFILE" || { echo "  FAILED: $BL_PROXY_ERR"; bl_stop_proxy; return 1; }
		echo "  strace -c -f -p $BL_PROXY_PID: attached to $BL_STRACE_THREADS thread(s) of the proxy"
		;;
	perf)
		R_COUNTFILE="$BL_TMP/perf-stat.txt"
		bl_perf_start "$BL_PROXY_PID" "$R_COUNTFILE" || { echo "  FAILED: $BL_PROXY_ERR"; bl_stop_proxy; return 1; }
		echo "  perf stat -e raw_syscalls:sys_enter -p $BL_PROXY_PID ($(find /proc/"$BL_PROXY_PID"/task -mindepth 1 -maxdepth 1 | wc -l) threads now)"
		;;
	esac
	local before after rc=0
	before=$(bl_cpu_ticks "$BL_PROXY_PID")
	bl_iperf_run "$lport" "$SECONDS_RUN" "$STREAMS" "$REVERSE" "$json" || rc=1
	bl_settle_children "$BL_PROXY_PID" 2
	after=$(bl_cpu_ticks "$BL_PROXY_PID")
	local alive=1
	bl_alive "$BL_PROXY_PID" || alive=0
	case "$mode" in strace) bl_strace_stop ;; perf) bl_perf_stop ;; esac
	bl_stop_proxy
	if ((rc)); then
		echo "  FAILED: $BL_PROXY_ERR"
		if ((!alive)); then
			echo "  the proxy died during the run; last lines of its log:"
			tail -n 5 "$log" | sed 's/^/    /'
		fi
		return 1
	fi
	read -r R_BYTES R_SECS < <(bl_iperf_result "$json")
	R_USER=$((${after% *} - ${before% *}))
	R_SYS=$((${after#* } - ${before#* }))
	case "$mode" in
	strace) R_COUNT=$(bl_strace_total "$R_COUNTFILE") || { echo "  FAILED: no total in strace output"; return 1; } ;;
	perf) R_COUNT=$(bl_perf_total "$R_COUNTFILE") || { echo "  FAILED: perf counted nothing: $(cat "$R_COUNTFILE")"; return 1; } ;;
	esac
	return 0
}

gbps() { bl_calc '%.2f' "$1 * 8 / $2 / 1e9"; }
gb()   { bl_calc '%.3f' "$1 / 1e9"; }
# thousands separators for a plain integer
grp()  { LC_ALL=C printf '%s' "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }

NRUNS=$((1 + DO_STRACE + DO_PERF))
RUN=1
S_GBPS="" S_CPU="" S_CPUGB="" S_SCALLS="" S_SPG="" S_PERF="" S_PERFGB=""

echo "== run $RUN of $NRUNS: no tracer — throughput and proxy CPU =="
if measure plain; then
	cpu_s=$(bl_calc '%.2f' "($R_USER + $R_SYS) / $BL_HZ")
	S_GBPS=$(gbps "$R_BYTES" "$R_SECS")
	S_CPU="$cpu_s s (user $(bl_calc '%.2f' "$R_USER / $BL_HZ"), sys $(bl_calc '%.2f' "$R_SYS / $BL_HZ"))"
	S_CPUGB=$(bl_calc '%.3f' "($R_USER + $R_SYS) / $BL_HZ / ($R_BYTES / 1e9)")
	echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $S_GBPS Gbit/s; proxy CPU $S_CPU"
else
	FAILED=1
fi
echo

if ((DO_STRACE)); then
	RUN=$((RUN + 1))
	echo "== run $RUN of $NRUNS: under strace -c -f — syscall counts only =="
	if measure strace; then
		echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $(gbps "$R_BYTES" "$R_SECS") Gbit/s under strace (not a throughput result)"
		echo
		cat "$R_COUNTFILE"
		S_SCALLS="$(grp "$R_COUNT") calls for $(gb "$R_BYTES") GB"
		S_SPG=$(grp "$(bl_calc '%.0f' "$R_COUNT / ($R_BYTES / 1e9)")")
	else
		FAILED=1
	fi
	echo
fi

if ((DO_PERF)); then
	RUN=$((RUN + 1))
	echo "== run $RUN of $NRUNS: perf stat raw_syscalls:sys_enter — syscall count, light tracing =="
	if measure perf; then
		echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $(gbps "$R_BYTES" "$R_SECS") Gbit/s; $(grp "$R_COUNT") syscalls"
		S_PERF="$(grp "$R_COUNT") calls for $(gb "$R_BYTES") GB ($(gbps "$R_BYTES" "$R_SECS") Gbit/s during the count)"
		S_PERFGB=$(grp "$(bl_calc '%.0f' "$R_COUNT / ($R_BYTES / 1e9)")")
	else
		FAILED=1
	fi
	echo
fi

echo "== summary: $PROXY, $STREAMS stream(s), $( ((REVERSE)) && echo reverse || echo forward) =="
printf '  %-26s %s\n' "throughput" "${S_GBPS:-FAILED}${S_GBPS:+ Gbit/s  (run 1, no tracer)}"
printf '  %-26s %s\n' "proxy CPU" "${S_CPU:-FAILED}${S_CPU:+  (run 1, /proc/PID/stat)}"
printf '  %-26s %s\n' "proxy CPU-s per GB" "${S_CPUGB:-FAILED}"
if ((DO_STRACE)); then
	printf '  %-26s %s\n' "syscalls (strace -c -f)" "${S_SCALLS:-FAILED}"
	printf '  %-26s %s\n' "syscalls per GB (strace)" "${S_SPG:-FAILED}"
fi
if ((DO_PERF)); then
	printf '  %-26s %s\n' "syscalls (perf stat)" "${S_PERF:-FAILED}"
	printf '  %-26s %s\n' "syscalls per GB (perf)" "${S_PERFGB:-FAILED}"
fi
exit "$FAILED"

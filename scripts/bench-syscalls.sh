#!/usr/bin/env bash
# bench-syscalls.sh — system calls, CPU and throughput of one TCP relay, or of one mutual-TLS
# tunnel of two proxies, under iperf3.
#
# iperf3 -c -> proxy (127.0.0.1:LPORT) -> iperf3 -s (127.0.0.1:TPORT), all on loopback, in the
# manner of ztunnel's benches/README.md (syscall profile under iperf). A tunnel (hbone,
# haproxy-tls) is two processes, iperf3 -c -> A (LPORT) -> B (BPORT) -> iperf3 -s (TPORT), and
# every figure below is taken for A and for B separately (one strace / perf per process).
# Two runs, each with a freshly started proxy:
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
(those two from a separate run without strace, since strace distorts both). A tunnel kind
(hbone, haproxy-tls) runs two proxy processes, A and B, and reports each one's figures and
the sum of their CPU.

Options:
  --proxy KIND        which relay to measure (default: ringtunnel):
                        ringtunnel         build/ringtunnel --forward ... (copying relay)
                        ringtunnel-splice  the same with --tcp-splice
                        haproxy            HAProxy, mode tcp, nbthread 2, no splice
                        haproxy-splice     HAProxy, mode tcp, nbthread 2, option splice-request +
                                           option splice-response (splice both ways)
                        socat              socat TCP-LISTEN:...,fork,reuseaddr TCP:... (a process
                                           per connection; strace -f follows the forks)
                        hbone              two ringtunnel processes: A (outbound) turns each
                                           TCP connection into an HTTP/2 CONNECT stream in a
                                           pooled mutual-TLS 1.3 connection to B (inbound),
                                           which connects to the target
                        haproxy-tls        two HAProxy processes forming a mutual-TLS 1.3
                                           tunnel (TLS_AES_128_GCM_SHA256 only), one TLS
                                           connection per TCP connection: the HAProxy peer
                                           of hbone
  --bin PATH          ringtunnel binary (default: \$RINGTUNNEL, else build/ringtunnel of this
                      repository)
  --certs DIR         certificates for a tunnel: DIR/ca, DIR/node-a (A's), DIR/node-b (B's),
                      each NAME.pem or NAME.crt, keys NAME.key, as scripts/gen-certs.sh DIR
                      makes them (default: made by gen-certs.sh in the temp dir)
  --seconds N         length of each iperf3 run in seconds (default: 10)
  --streams N         parallel iperf3 streams, iperf3 -P (default: 1)
  --reverse           server sends, client receives (iperf3 -R)
  --perf              add a third run counting syscalls with perf stat (raw_syscalls:sys_enter),
                      which slows the proxy much less than strace (needs linux-perf)
  --no-strace         skip the strace run (throughput and CPU only)
  --haproxy-bufsize N HAProxy tune.bufsize in bytes (default: HAProxy's, 16384)
  --haproxy-threads N HAProxy nbthread, per instance (default: 2, one per core of the
                      development VMs; ringtunnel's default is one worker per online CPU)
  --keep-tmp          keep the temp dir (logs, JSON, haproxy config, strace output)
  -h, --help          this text
  -- FLAGS...         everything after -- is appended to the ringtunnel command line
                      (ringtunnel kinds and hbone: both A and B), e.g. -- --workers 1

The ringtunnel commands are:
  ringtunnel --forward 127.0.0.1:LPORT=tcp://127.0.0.1:TPORT --access-log off
             --drain-timeout 1s [--tcp-splice] [FLAGS...]
  hbone B:   ringtunnel --cert node-b --key node-b.key --ca ca
             --hbone-listen 127.0.0.1:BPORT --access-log off --drain-timeout 1s [FLAGS...]
             --allow-dest 127.0.0.1:TPORT
  hbone A:   ringtunnel --cert node-a --key node-a.key --ca ca --forward
             127.0.0.1:LPORT=hbone://127.0.0.1:BPORT/127.0.0.1:TPORT?identity=<node-b's
             SPIFFE ID> --access-log off --drain-timeout 1s [FLAGS...]
with the default worker count (one per online CPU). HAProxy gets nbthread 2 (per instance),
maxconn 4096, timeouts 5 s connect / 60 s client and server, no splice for the TLS tunnel.
haproxy-tls: A binds LPORT plain and has "server s 127.0.0.1:BPORT ssl crt <node-a cert+key>
ca-file <ca> verify required ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 alpn h2
verifyhost node-b"; B has "bind 127.0.0.1:BPORT ssl crt <node-b cert+key> ca-file <ca> verify
required ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 alpn h2" and a plain server
TPORT (ALPN h2 as HBONE's; in mode tcp HAProxy relays the bytes as they are).
Before the runs of a tunnel, openssl s_client probes a throwaway B: a client without a
certificate must be refused, one with node-a's must get TLS 1.3 (and, for haproxy-tls,
TLS_AES_128_GCM_SHA256; a client offering only TLS_AES_256_GCM_SHA384 must be refused).

Direction: forward, A carries the data TCP->tunnel and B tunnel->TCP; with --reverse the data
flows the other way through both, so A does tunnel->TCP and B TCP->tunnel. The issue's target
for hbone is at most 2,000 syscalls per GB for each (TCP->HBONE and HBONE->TCP).

Exit status: 0 success, 1 a run failed or a tool is missing, 2 bad usage.
Needs: iperf3 haproxy socat strace jq iproute2 (ss); linux-perf for --perf; openssl for a
tunnel.
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
	--haproxy-threads) [[ $# -ge 2 ]] || bl_usage_err "--haproxy-threads needs a value"; BL_HAPROXY_NBTHREAD=$2; shift 2 ;;
	--haproxy-threads=*) BL_HAPROXY_NBTHREAD=${1#*=}; shift ;;
	--certs) [[ $# -ge 2 ]] || bl_usage_err "--certs needs a directory"; BL_CERT_DIR=$2; shift 2 ;;
	--certs=*) BL_CERT_DIR=${1#*=}; shift ;;
	--keep-tmp) BL_KEEP_TMP=1; shift ;;
	--) shift; BL_RT_EXTRA=("$@"); break ;;
	*) bl_usage_err "unknown option '$1'" ;;
	esac
done

case " $BL_PROXIES " in *" $PROXY "*) ;; *) bl_usage_err "--proxy must be one of: $BL_PROXIES (got '$PROXY')" ;; esac
bl_is_uint "$SECONDS_RUN" || bl_usage_err "--seconds must be a positive integer (got '$SECONDS_RUN')"
{ bl_is_uint "$STREAMS" && ((STREAMS <= 128)); } || bl_usage_err "--streams must be an integer 1..128 (got '$STREAMS')"
[[ -z $BL_HAPROXY_BUFSIZE ]] || bl_is_uint "$BL_HAPROXY_BUFSIZE" || bl_usage_err "--haproxy-bufsize must be a positive integer"
{ bl_is_uint "$BL_HAPROXY_NBTHREAD" && ((BL_HAPROXY_NBTHREAD <= 64)); } || bl_usage_err "--haproxy-threads must be an integer 1..64 (got '$BL_HAPROXY_NBTHREAD')"
RT_KIND=0
[[ $PROXY == ringtunnel* || $PROXY == hbone ]] && RT_KIND=1
if ((${#BL_RT_EXTRA[@]})) && ((!RT_KIND)); then
	bl_usage_err "flags after -- are for ringtunnel; --proxy is $PROXY"
fi
if [[ -n $BL_CERT_DIR ]] && ! bl_is_pair "$PROXY"; then
	bl_usage_err "--certs is for a tunnel (--proxy ${BL_PAIRS// / or }); --proxy is $PROXY"
fi
((DO_STRACE || DO_PERF)) || bl_log "note: --no-strace without --perf: no syscall counts"

tools=(iperf3 jq ss timeout getconf awk)
case "$PROXY" in haproxy*) tools+=(haproxy) ;; socat) tools+=(socat) ;; esac
bl_is_pair "$PROXY" && tools+=(openssl)
((DO_STRACE)) && tools+=(strace)
((DO_PERF)) && tools+=(perf)
bl_need "${tools[@]}"
if ((RT_KIND)); then
	[[ -x $BL_RT_BIN ]] || bl_die "ringtunnel binary not found or not executable: $BL_RT_BIN (build it, or pass --bin PATH or RINGTUNNEL=PATH)"
fi
# (not `--help | grep -q`: with pipefail, grep leaving early can fail the pipeline on SIGPIPE)
if [[ $PROXY == hbone && $(timeout 10 "$BL_RT_BIN" --help 2>&1 || true) != *--hbone-listen* ]]; then
	bl_die "$BL_RT_BIN has no --hbone-listen flag (not built with HBONE yet?)"
fi

bl_init
FAILED=0
ROLE_LABEL=(proxy)
ROLE=(proxy)
if bl_is_pair "$PROXY"; then
	ROLE=(A B)
	bl_certs_prepare
	bl_pair_labels "$PROXY" "$REVERSE"
	ROLE_LABEL=("$BL_LABEL_A" "$BL_LABEL_B")
fi
bl_iperf_server_start

DIR_TXT=$( ((REVERSE)) && echo "reverse (iperf3 -R: server sends)" || echo "forward (client sends)")
echo "bench-syscalls: proxy $PROXY$( ((RT_KIND)) && echo " ($BL_RT_BIN)")"
echo "load: $STREAMS stream(s), $DIR_TXT, ${SECONDS_RUN} s per run; iperf3 -s on 127.0.0.1:$BL_IPERF_SRV_PORT"
echo "machine: $(nproc) online CPUs shared by the proxy and both iperf3 ends (no pinning); CLK_TCK=$BL_HZ; GB = 1e9 bytes"
if bl_is_pair "$PROXY"; then
	echo "tunnel: iperf3 -c -> ${ROLE_LABEL[0]} -> ${ROLE_LABEL[1]} -> iperf3 -s"
	echo "certificates: A $BL_A_CRT, B $BL_B_CRT (A expects $BL_B_ID), CA $BL_CA"
	echo
	echo "== mutual-TLS check of B (openssl s_client) =="
	bl_tls_check "$PROXY" || FAILED=1
fi
echo

# measure MODE (plain|strace|perf) — one iperf3 run through a freshly started proxy (both
# processes of a tunnel). Sets R_BYTES R_SECS, and per process (index as BL_PROXY_ROLES:
# 0 the proxy or A, 1 B) R_USER R_SYS (ticks) R_COUNT R_COUNTFILE; returns 1 on failure.
measure() {
	local mode=$1 lport log json i n role
	R_BYTES=0 R_SECS=0 R_USER=() R_SYS=() R_COUNT=() R_COUNTFILE=()
	lport=$(bl_pick_port)
	log="$BL_TMP/proxy-$mode.log"
	json="$BL_TMP/iperf3-$mode.json"
	if ! bl_start_proxy "$PROXY" "$lport" "$BL_IPERF_SRV_PORT" "$log"; then
		echo "  FAILED: $BL_PROXY_ERR"; return 1
	fi
	n=${#BL_PROXY_PIDS[@]}
	for ((i = 0; i < n; i++)); do
		role=${BL_PROXY_ROLES[i]}
		case "$mode" in
		strace)
			R_COUNTFILE[i]="$BL_TMP/strace-c$( ((n > 1)) && echo ".$role").txt"
			bl_strace_start "${BL_PROXY_PIDS[i]}" "${R_COUNTFILE[i]}" || { echo "  FAILED: $BL_PROXY_ERR"; bl_strace_stop; bl_stop_proxy; return 1; }
			echo "  strace -c -f -p ${BL_PROXY_PIDS[i]}: attached to $BL_STRACE_THREADS thread(s) of the proxy$( ((n > 1)) && echo " ($role)")"
			;;
		perf)
			R_COUNTFILE[i]="$BL_TMP/perf-stat$( ((n > 1)) && echo ".$role").txt"
			bl_perf_start "${BL_PROXY_PIDS[i]}" "${R_COUNTFILE[i]}" || { echo "  FAILED: $BL_PROXY_ERR"; bl_perf_stop; bl_stop_proxy; return 1; }
			echo "  perf stat -e raw_syscalls:sys_enter -p ${BL_PROXY_PIDS[i]} ($(find /proc/"${BL_PROXY_PIDS[i]}"/task -mindepth 1 -maxdepth 1 | wc -l) threads now)$( ((n > 1)) && echo " ($role)")"
			;;
		esac
	done
	local before=() after=() rc=0 dead=()
	for ((i = 0; i < n; i++)); do before[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}"); done
	bl_iperf_run "$lport" "$SECONDS_RUN" "$STREAMS" "$REVERSE" "$json" || rc=1
	for ((i = 0; i < n; i++)); do bl_settle_children "${BL_PROXY_PIDS[i]}" 2; done
	for ((i = 0; i < n; i++)); do
		after[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}")
		bl_alive "${BL_PROXY_PIDS[i]}" || dead+=("$i")
	done
	local logs=("${BL_PROXY_LOGS[@]}") roles=("${BL_PROXY_ROLES[@]}")
	case "$mode" in strace) bl_strace_stop ;; perf) bl_perf_stop ;; esac
	bl_stop_proxy
	if ((rc)); then
		echo "  FAILED: $BL_PROXY_ERR"
		for i in "${dead[@]+"${dead[@]}"}"; do
			echo "  the proxy$( ((n > 1)) && echo " (${roles[i]})") died during the run; last lines of its log:"
			tail -n 5 "${logs[i]}" | sed 's/^/    /'
		done
		return 1
	fi
	read -r R_BYTES R_SECS < <(bl_iperf_result "$json")
	for ((i = 0; i < n; i++)); do
		R_USER[i]=$((${after[i]% *} - ${before[i]% *}))
		R_SYS[i]=$((${after[i]#* } - ${before[i]#* }))
		case "$mode" in
		strace) R_COUNT[i]=$(bl_strace_total "${R_COUNTFILE[i]}") || { echo "  FAILED: no total in strace output ${R_COUNTFILE[i]}"; return 1; } ;;
		perf) R_COUNT[i]=$(bl_perf_total "${R_COUNTFILE[i]}") || { echo "  FAILED: perf counted nothing: $(cat "${R_COUNTFILE[i]}")"; return 1; } ;;
		esac
	done
	return 0
}

gbps() { bl_calc '%.2f' "$1 * 8 / $2 / 1e9"; }
gb()   { bl_calc '%.3f' "$1 / 1e9"; }
# thousands separators for a plain integer
grp()  { LC_ALL=C printf '%s' "$1" | sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|,\)/\1,\2\3/; ta'; }

NRUNS=$((1 + DO_STRACE + DO_PERF))
NPROC=1
bl_is_pair "$PROXY" && NPROC=2
RUN=1
S_GBPS="" S_CPU=() S_CPUGB=() S_CPUSUM="" S_SCALLS=() S_SPG=() S_PERF=() S_PERFGB=()
TARGET_SPG=2000   # the issue's target for hbone, per process
spg() { bl_calc '%.0f' "$1 / ($2 / 1e9)"; }

echo "== run $RUN of $NRUNS: no tracer — throughput and proxy CPU =="
if measure plain; then
	S_GBPS=$(gbps "$R_BYTES" "$R_SECS")
	echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $S_GBPS Gbit/s"
	tot=0
	for ((i = 0; i < NPROC; i++)); do
		S_CPU[i]="$(bl_calc '%.2f' "(${R_USER[i]} + ${R_SYS[i]}) / $BL_HZ") s (user $(bl_calc '%.2f' "${R_USER[i]} / $BL_HZ"), sys $(bl_calc '%.2f' "${R_SYS[i]} / $BL_HZ"))"
		S_CPUGB[i]=$(bl_calc '%.3f' "(${R_USER[i]} + ${R_SYS[i]}) / $BL_HZ / ($R_BYTES / 1e9)")
		tot=$((tot + R_USER[i] + R_SYS[i]))
		echo "  ${ROLE_LABEL[i]} CPU ${S_CPU[i]}"
	done
	S_CPUSUM=$(bl_calc '%.3f' "$tot / $BL_HZ / ($R_BYTES / 1e9)")
else
	FAILED=1
fi
echo

if ((DO_STRACE)); then
	RUN=$((RUN + 1))
	echo "== run $RUN of $NRUNS: under strace -c -f — syscall counts only =="
	if measure strace; then
		echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $(gbps "$R_BYTES" "$R_SECS") Gbit/s under strace (not a throughput result)"
		for ((i = 0; i < NPROC; i++)); do
			echo
			((NPROC > 1)) && echo "-- strace -c of ${ROLE_LABEL[i]}:"
			cat "${R_COUNTFILE[i]}"
			S_SCALLS[i]="$(grp "${R_COUNT[i]}") calls for $(gb "$R_BYTES") GB"
			S_SPG[i]=$(spg "${R_COUNT[i]}" "$R_BYTES")
		done
	else
		FAILED=1
	fi
	echo
fi

if ((DO_PERF)); then
	RUN=$((RUN + 1))
	echo "== run $RUN of $NRUNS: perf stat raw_syscalls:sys_enter — syscall count, light tracing =="
	if measure perf; then
		for ((i = 0; i < NPROC; i++)); do
			echo "  moved $(gb "$R_BYTES") GB in $R_SECS s = $(gbps "$R_BYTES" "$R_SECS") Gbit/s; $(grp "${R_COUNT[i]}") syscalls$( ((NPROC > 1)) && echo ", ${ROLE_LABEL[i]}")"
			S_PERF[i]="$(grp "${R_COUNT[i]}") calls for $(gb "$R_BYTES") GB ($(gbps "$R_BYTES" "$R_SECS") Gbit/s during the count)"
			S_PERFGB[i]=$(spg "${R_COUNT[i]}" "$R_BYTES")
		done
	else
		FAILED=1
	fi
	echo
fi

# target TOOL_FIGURE — the verdict on one hbone process's syscalls/GB
target() {
	[[ $PROXY == hbone && -n $1 ]] || return 0
	if (($1 <= TARGET_SPG)); then printf '  (target <= %s: met)' "$(grp "$TARGET_SPG")"; else printf '  (target <= %s: MISSED)' "$(grp "$TARGET_SPG")"; fi
}

echo "== summary: $PROXY, $STREAMS stream(s), $( ((REVERSE)) && echo reverse || echo forward) =="
if ((NPROC == 1)); then
	printf '  %-26s %s\n' "throughput" "${S_GBPS:-FAILED}${S_GBPS:+ Gbit/s  (run 1, no tracer)}"
	printf '  %-26s %s\n' "proxy CPU" "${S_CPU[0]:-FAILED}${S_CPU[0]:+  (run 1, /proc/PID/stat)}"
	printf '  %-26s %s\n' "proxy CPU-s per GB" "${S_CPUGB[0]:-FAILED}"
	if ((DO_STRACE)); then
		printf '  %-26s %s\n' "syscalls (strace -c -f)" "${S_SCALLS[0]:-FAILED}"
		printf '  %-26s %s\n' "syscalls per GB (strace)" "$(grp "${S_SPG[0]:-FAILED}")"
	fi
	if ((DO_PERF)); then
		printf '  %-26s %s\n' "syscalls (perf stat)" "${S_PERF[0]:-FAILED}"
		printf '  %-26s %s\n' "syscalls per GB (perf)" "$(grp "${S_PERFGB[0]:-FAILED}")"
	fi
else
	W=30
	echo "  A ${ROLE_LABEL[0]#A }, B ${ROLE_LABEL[1]#B }"
	printf "  %-${W}s %s\n" "throughput" "${S_GBPS:-FAILED}${S_GBPS:+ Gbit/s  (run 1, no tracer)}"
	for ((i = 0; i < NPROC; i++)); do
		printf "  %-${W}s %s\n" "CPU, ${ROLE[i]}" "${S_CPU[i]:-FAILED}${S_CPU[i]:+  (run 1, /proc/PID/stat)}"
	done
	for ((i = 0; i < NPROC; i++)); do
		printf "  %-${W}s %s\n" "CPU-s per GB, ${ROLE[i]}" "${S_CPUGB[i]:-FAILED}"
	done
	printf "  %-${W}s %s\n" "CPU-s per GB, A + B" "${S_CPUSUM:-FAILED}"
	if ((DO_STRACE)); then
		for ((i = 0; i < NPROC; i++)); do
			printf "  %-${W}s %s\n" "syscalls (strace -c -f), ${ROLE[i]}" "${S_SCALLS[i]:-FAILED}"
		done
		for ((i = 0; i < NPROC; i++)); do
			printf "  %-${W}s %s%s\n" "syscalls per GB (strace), ${ROLE[i]}" "$(grp "${S_SPG[i]:-FAILED}")" "$(target "${S_SPG[i]:-}")"
		done
	fi
	if ((DO_PERF)); then
		for ((i = 0; i < NPROC; i++)); do
			printf "  %-${W}s %s\n" "syscalls (perf stat), ${ROLE[i]}" "${S_PERF[i]:-FAILED}"
		done
		for ((i = 0; i < NPROC; i++)); do
			printf "  %-${W}s %s%s\n" "syscalls per GB (perf), ${ROLE[i]}" "$(grp "${S_PERFGB[i]:-FAILED}")" "$(target "${S_PERFGB[i]:-}")"
		done
	fi
fi
exit "$FAILED"

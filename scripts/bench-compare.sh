#!/usr/bin/env bash
# bench-compare.sh — ringtunnel against HAProxy, socat and no proxy at all, under iperf3.
#
# For every load (1 and 4 streams, forward and reverse) and every configuration (direct,
# ringtunnel, ringtunnel --tcp-splice, haproxy, haproxy with splice, socat; with --hbone the
# mutual-TLS tunnels instead: ringtunnel HBONE and two HAProxy with TLS) it runs iperf3
# --reps times for --seconds each, through a freshly started proxy each time, all on
# 127.0.0.1. The repetitions are interleaved — rep 1 of every load and configuration, then
# rep 2, ... — so that noise from the machine spreads evenly over all of them.
#
# Measured per run: throughput (iperf3 -J, end.sum_received) and the proxy's CPU time
# (utime+stime+cutime+cstime of its whole process tree from /proc/PID/stat, sampled right
# before and after iperf3: all threads of ringtunnel and haproxy, io_uring workers included,
# and socat's per-connection child processes; for a tunnel, both of its processes, summed).
# GB = 1e9 bytes.
#
# No CPU pinning: the proxy and both iperf3 ends share all of the machine's cores (2 on the
# development VMs), as a node proxy shares its node with the workloads. Run it on an
# otherwise idle machine, and compare figures only within one run of this script.
#
# --syscalls adds a separate pass (--syscalls-reps runs per load and proxy) under strace -c -f
# (or perf stat) for syscalls/GB; it is separate because tracing distorts throughput and CPU.
set -euo pipefail

# shellcheck disable=SC2034  # BL_PROG, BL_KEEP_TMP, BL_RT_*, BL_HAPROXY_BUFSIZE: read by bench-lib.sh
BL_PROG=bench-compare.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$SCRIPT_DIR/bench-lib.sh"

ALL_CONFIGS="direct ringtunnel ringtunnel-splice haproxy haproxy-splice socat hbone haproxy-tls"
DEFAULT_CONFIGS="direct ringtunnel ringtunnel-splice haproxy haproxy-splice socat"

usage() {
	cat <<EOF
Usage: scripts/bench-compare.sh [OPTIONS] [-- RINGTUNNEL_FLAGS...]

Throughput and proxy CPU of ringtunnel, HAProxy 2.6 and socat relaying iperf3 on
127.0.0.1, with iperf3 direct (no proxy) as the ceiling. Prints, per load and
configuration, the median Gbit/s (min-max), the median proxy CPU-s/GB, and ratios to
direct and to HAProxy in the same mode (copy vs copy, splice vs splice, the ringtunnel
HBONE tunnel vs the HAProxy TLS tunnel).

Configurations:
  direct             iperf3 -c straight to iperf3 -s (no proxy; the ceiling)
  ringtunnel         ringtunnel --forward ... (copying relay, default workers = online CPUs)
  ringtunnel-splice  ringtunnel --forward ... --tcp-splice
  haproxy            HAProxy mode tcp, nbthread 2, no splice (tune.bufsize default 16384)
  haproxy-splice     HAProxy mode tcp, nbthread 2, option splice-request + splice-response
  socat              socat TCP-LISTEN:...,fork,reuseaddr TCP:... (a process per connection;
                     its CPU includes the exited children, through the parent's cutime/cstime)
  hbone              two ringtunnel processes, iperf3 -c -> A -> B -> iperf3 -s: A (outbound,
                     --forward L=hbone://B/T?identity=<node-b>) carries each TCP connection
                     as an HTTP/2 CONNECT stream in a pooled mutual-TLS 1.3 connection to B
                     (inbound, --hbone-listen), which connects to the target
  haproxy-tls        two HAProxy, nbthread 2 each, forming a mutual-TLS 1.3 tunnel
                     (TLS_AES_128_GCM_SHA256 only; one TLS connection per TCP connection)
For hbone and haproxy-tls the CPU is that of both processes, summed, and the syscalls/GB
column shows A's and B's figures ("A / B"); they need certificates (--certs, or made by
scripts/gen-certs.sh), and an openssl s_client probe checks B's mutual TLS before the runs.
Without --only or --hbone the first six run (not the tunnels).
Loads: iperf3 -P 1 and -P 4, each forward (client sends) and reverse (-R, server sends).

Options:
  --reps N            repetitions of every load x configuration (default: 5)
  --seconds N         length of each iperf3 run in seconds (default: 5)
  --only LIST         comma-separated configurations to run; a name without -splice also
                      selects its -splice variant (--only ringtunnel,haproxy runs ringtunnel,
                      ringtunnel-splice, haproxy, haproxy-splice); direct always runs
                      (it is the reference) unless --no-direct
  --hbone             add hbone and haproxy-tls (alone: direct, hbone, haproxy-tls), and print
                      per load the issue's targets: hbone throughput >= 2x haproxy-tls, and
                      CPU-s/GB <= 0.5x
  --no-direct         do not run iperf3 without a proxy (no x-direct ratios)
  --streams LIST      comma-separated iperf3 -P values (default: 1,4)
  --dirs LIST         comma-separated directions: fwd, rev (default: fwd,rev)
  --syscalls[=TOOL]   add a pass, after the throughput pass, with runs per load and proxy
                      counting the proxy's system calls, for a syscalls/GB column. TOOL:
                      strace (default; strace -c -f attached to all threads; stops the proxy
                      at every call, so it slows a proxy in proportion to its call rate) or
                      perf (perf stat -e raw_syscalls:sys_enter; much lighter)
  --syscalls-reps N   runs per load and proxy in that pass; the median is shown (default: 1).
                      An adaptive batching relay (ringtunnel) varies a lot from run to run
                      here, unlike HAProxy whose calls follow its buffer size
  --csv FILE          also write every run's raw values to FILE (CSV, one row per run)
  --plot FILE.svg     also draw the table as an SVG picture with gnuplot: per load, a bar
                      per configuration for the median Gbit/s (min-max as error bars), the
                      median CPU-s/GB and, with --syscalls, the syscalls/GB (a log scale).
                      scripts/bench-plot.sh RUNS.csv FILE.svg draws one from a saved --csv
  --bin PATH          ringtunnel binary (default: \$RINGTUNNEL, else build/ringtunnel of this
                      repository)
  --pause S           seconds of rest between runs (default: 1)
  --haproxy-bufsize N HAProxy tune.bufsize in bytes (default: HAProxy's, 16384)
  --haproxy-threads N HAProxy nbthread, per instance (default: 2, one per core of the
                      development VMs, as ringtunnel's default of one worker per CPU)
  --certs DIR         certificates for the tunnels: DIR/ca, DIR/node-a (A), DIR/node-b (B),
                      each NAME.pem or NAME.crt with NAME.key, as scripts/gen-certs.sh DIR
                      makes them (default: made by gen-certs.sh in the temp dir)
  --keep-tmp          keep the temp dir (logs, iperf3 JSON, haproxy configs)
  -h, --help          this text
  -- FLAGS...         appended to every ringtunnel command line (both processes of hbone),
                      e.g. -- --workers 2

Default run: 5 reps x 4 loads x 6 configurations x ~6.5 s = about 13 minutes;
--hbone: 5 x 4 x 3 x ~7 s = about 7 minutes.

A run that fails (proxy does not start or dies, iperf3 fails or times out) is reported in
its cell ("FAILED" or "k/n ok") and the script goes on with the rest; the exit status is
then 1. Exit status: 0 all runs succeeded, 1 a run failed, a tool is missing
or the --plot picture could not be drawn, 2 bad usage.
Needs: iperf3 haproxy socat jq iproute2 (ss); strace or linux-perf for --syscalls; openssl
for the tunnels; gnuplot (gnuplot-nox) for --plot.
EOF
}

REPS=5
SECONDS_RUN=5
ONLY=""
HBONE=0
NO_DIRECT=0
STREAMS_LIST="1,4"
DIRS_LIST="fwd,rev"
SYSCALLS=""
SYS_REPS=1
CSV_OUT=""
PLOT_OUT=""
PAUSE=1
BL_RT_BIN=${RINGTUNNEL:-$SCRIPT_DIR/../build/ringtunnel}
BL_RT_EXTRA=()
BL_HAPROXY_BUFSIZE=""

need_arg() { [[ $2 -ge 2 ]] || bl_usage_err "$1 needs a value"; }
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--reps) need_arg "$1" $#; REPS=$2; shift 2 ;;
	--reps=*) REPS=${1#*=}; shift ;;
	--seconds) need_arg "$1" $#; SECONDS_RUN=$2; shift 2 ;;
	--seconds=*) SECONDS_RUN=${1#*=}; shift ;;
	--only) need_arg "$1" $#; ONLY=$2; shift 2 ;;
	--only=*) ONLY=${1#*=}; shift ;;
	--no-direct) NO_DIRECT=1; shift ;;
	--hbone) HBONE=1; shift ;;
	--streams) need_arg "$1" $#; STREAMS_LIST=$2; shift 2 ;;
	--streams=*) STREAMS_LIST=${1#*=}; shift ;;
	--dirs) need_arg "$1" $#; DIRS_LIST=$2; shift 2 ;;
	--dirs=*) DIRS_LIST=${1#*=}; shift ;;
	--syscalls) SYSCALLS=strace; shift ;;
	--syscalls=*) SYSCALLS=${1#*=}; shift ;;
	--syscalls-reps) need_arg "$1" $#; SYS_REPS=$2; shift 2 ;;
	--syscalls-reps=*) SYS_REPS=${1#*=}; shift ;;
	--csv) need_arg "$1" $#; CSV_OUT=$2; shift 2 ;;
	--csv=*) CSV_OUT=${1#*=}; shift ;;
	--plot) need_arg "$1" $#; PLOT_OUT=$2; shift 2 ;;
	--plot=*) PLOT_OUT=${1#*=}; shift ;;
	--bin) need_arg "$1" $#; BL_RT_BIN=$2; shift 2 ;;
	--bin=*) BL_RT_BIN=${1#*=}; shift ;;
	--pause) need_arg "$1" $#; PAUSE=$2; shift 2 ;;
	--pause=*) PAUSE=${1#*=}; shift ;;
	--haproxy-bufsize) need_arg "$1" $#; BL_HAPROXY_BUFSIZE=$2; shift 2 ;;
	--haproxy-bufsize=*) BL_HAPROXY_BUFSIZE=${1#*=}; shift ;;
	--haproxy-threads) need_arg "$1" $#; BL_HAPROXY_NBTHREAD=$2; shift 2 ;;
	--haproxy-threads=*) BL_HAPROXY_NBTHREAD=${1#*=}; shift ;;
	--certs) need_arg "$1" $#; BL_CERT_DIR=$2; shift 2 ;;
	--certs=*) BL_CERT_DIR=${1#*=}; shift ;;
	--keep-tmp) BL_KEEP_TMP=1; shift ;;
	--) shift; BL_RT_EXTRA=("$@"); break ;;
	*) bl_usage_err "unknown option '$1'" ;;
	esac
done

bl_is_uint "$REPS" || bl_usage_err "--reps must be a positive integer (got '$REPS')"
bl_is_uint "$SYS_REPS" || bl_usage_err "--syscalls-reps must be a positive integer (got '$SYS_REPS')"
bl_is_uint "$SECONDS_RUN" || bl_usage_err "--seconds must be a positive integer (got '$SECONDS_RUN')"
[[ $PAUSE =~ ^[0-9]+(\.[0-9]+)?$ ]] || bl_usage_err "--pause must be a number of seconds (got '$PAUSE')"
[[ -z $BL_HAPROXY_BUFSIZE ]] || bl_is_uint "$BL_HAPROXY_BUFSIZE" || bl_usage_err "--haproxy-bufsize must be a positive integer"
{ bl_is_uint "$BL_HAPROXY_NBTHREAD" && ((BL_HAPROXY_NBTHREAD <= 64)); } || bl_usage_err "--haproxy-threads must be an integer 1..64 (got '$BL_HAPROXY_NBTHREAD')"
case "$SYSCALLS" in "" | strace | perf) ;; *) bl_usage_err "--syscalls takes strace or perf (got '$SYSCALLS')" ;; esac

IFS=, read -ra STREAMS_ARR <<<"$STREAMS_LIST"
((${#STREAMS_ARR[@]})) || bl_usage_err "--streams is empty"
for s in "${STREAMS_ARR[@]}"; do
	{ bl_is_uint "$s" && ((s <= 128)); } || bl_usage_err "--streams: '$s' is not an integer 1..128"
done
IFS=, read -ra DIRS_ARR <<<"$DIRS_LIST"
((${#DIRS_ARR[@]})) || bl_usage_err "--dirs is empty"
for d in "${DIRS_ARR[@]}"; do
	[[ $d == fwd || $d == rev ]] || bl_usage_err "--dirs: '$d' is not fwd or rev"
done

# configurations to run, in ALL_CONFIGS order
CONFIGS=()
((HBONE)) && ONLY="${ONLY:+$ONLY,}hbone,haproxy-tls"
if [[ -n $ONLY ]]; then
	IFS=, read -ra ONLY_ARR <<<"$ONLY"
	for o in "${ONLY_ARR[@]}"; do
		[[ " $ALL_CONFIGS " == *" $o "* ]] || bl_usage_err "--only: unknown configuration '$o' (known: $ALL_CONFIGS)"
	done
fi
for c in $ALL_CONFIGS; do
	sel=0
	if [[ $c == direct ]]; then
		((NO_DIRECT)) || sel=1
	elif [[ -z $ONLY ]]; then
		[[ " $DEFAULT_CONFIGS " == *" $c "* ]] && sel=1
	else
		for o in "${ONLY_ARR[@]}"; do [[ $c == "$o" || $c == "$o-splice" ]] && sel=1; done
	fi
	((sel)) && CONFIGS+=("$c")
done
((${#CONFIGS[@]})) || bl_usage_err "nothing to run"

tools=(iperf3 jq ss timeout getconf awk sort)
RT_USED=0
PAIRS=()
for c in "${CONFIGS[@]}"; do
	case "$c" in
	haproxy*) tools+=(haproxy) ;;
	socat) tools+=(socat) ;;
	ringtunnel* | hbone) RT_USED=1 ;;
	esac
	bl_is_pair "$c" && PAIRS+=("$c")
done
((${#PAIRS[@]})) && tools+=(openssl)
if [[ -n $BL_CERT_DIR ]] && ((!${#PAIRS[@]})); then
	bl_usage_err "--certs is for the tunnels (hbone, haproxy-tls), which are not among the configurations"
fi
[[ -n $SYSCALLS ]] && tools+=("$SYSCALLS")
[[ -n $PLOT_OUT ]] && tools+=(gnuplot)
bl_need "${tools[@]}"
if ((${#BL_RT_EXTRA[@]})) && ((!RT_USED)); then
	bl_usage_err "flags after -- are for ringtunnel, which is not among the configurations"
fi
if ((RT_USED)) && [[ ! -x $BL_RT_BIN ]]; then
	bl_die "ringtunnel binary not found or not executable: $BL_RT_BIN (build it, pass --bin PATH or RINGTUNNEL=PATH, or leave it out with --only haproxy,socat)"
fi
# (not `--help | grep -q`: with pipefail, grep leaving early can fail the pipeline on SIGPIPE)
if [[ " ${CONFIGS[*]} " == *" hbone "* && $(timeout 10 "$BL_RT_BIN" --help 2>&1 || true) != *--hbone-listen* ]]; then
	bl_die "$BL_RT_BIN has no --hbone-listen flag (not built with HBONE yet?); leave hbone out with --only haproxy-tls"
fi
if [[ -n $CSV_OUT ]]; then
	{ : >"$CSV_OUT"; } 2>/dev/null || bl_die "cannot write --csv file '$CSV_OUT'"
fi
if [[ -n $PLOT_OUT ]]; then
	[[ $PLOT_OUT != -* ]] || bl_usage_err "--plot needs a file name (got '$PLOT_OUT')"
	{ : >"$PLOT_OUT"; } 2>/dev/null || bl_die "cannot write --plot file '$PLOT_OUT'"
fi

bl_init
((${#PAIRS[@]})) && bl_certs_prepare
bl_iperf_server_start

# For a tunnel, proxy_cpu_s / cpu_s_per_gb / syscalls / syscalls_per_gb are A + B, and the *_a,
# *_b columns hold each process's own figures (empty for a single proxy).
CSV="$BL_TMP/runs.csv"
echo "pass,rep,streams,direction,config,status,gbps,bytes,seconds,proxy_cpu_s,cpu_s_per_gb,syscalls,syscalls_per_gb,cpu_s_a,cpu_s_b,syscalls_a,syscalls_b,syscalls_per_gb_a,syscalls_per_gb_b,error" >"$CSV"
NCOLS=20   # the summary finds the error text (which may hold commas) after NCOLS-1 commas

NLOADS=$((${#STREAMS_ARR[@]} * ${#DIRS_ARR[@]}))
NRUNS=$((REPS * NLOADS * ${#CONFIGS[@]}))
NSYS=0
if [[ -n $SYSCALLS ]]; then
	for c in "${CONFIGS[@]}"; do [[ $c == direct ]] || NSYS=$((NSYS + NLOADS * SYS_REPS)); done
fi
EST=$(bl_calc '%.0f' "($NRUNS + $NSYS) * ($SECONDS_RUN + 1.5 + $PAUSE)")
if ((EST >= 120)); then EST="$((EST / 60)) min"; else EST="$EST s"; fi
echo "bench-compare: ${CONFIGS[*]}"
((RT_USED)) && echo "ringtunnel: $BL_RT_BIN${BL_RT_EXTRA[*]:+ (extra flags: ${BL_RT_EXTRA[*]})}"
echo "loads: streams {$STREAMS_LIST} x {$DIRS_LIST}; $REPS rep(s) x ${SECONDS_RUN} s, interleaved; $NRUNS runs$([[ -n $SYSCALLS ]] && echo " + $NSYS $SYSCALLS runs"), about $EST"
echo "machine: $(nproc) online CPUs shared by the proxies and both iperf3 ends (no pinning); CLK_TCK=$BL_HZ; GB = 1e9 bytes"
FAILED=0
TLS_FAILED=0
if ((${#PAIRS[@]})); then
	echo "tunnels: iperf3 -c -> A (outbound) -> B (inbound) -> iperf3 -s; A has node-a's certificate and expects"
	echo "  $BL_B_ID of B; HAProxy nbthread $BL_HAPROXY_NBTHREAD per instance; certificates from $(dirname "$BL_CA")"
	for c in "${PAIRS[@]}"; do
		echo "mutual-TLS check of $c's B (openssl s_client):"
		bl_tls_check "$c" || TLS_FAILED=1
	done
fi
echo

csv_row() { # NCOLS fields (the last one, the error text, is quoted)
	local err=${!#}
	err=${err//\"/\'}
	printf '%s,"%s"\n' "$(IFS=,; echo "${*:1:$#-1}")" "$err" >>"$CSV"
}
csv_fail() { # PASS REP STREAMS DIR CONFIG ERROR — a row for a failed run
	csv_row "$1" "$2" "$3" "$4" "$5" FAILED "" "" "" "" "" "" "" "" "" "" "" "" "" "$6"
}

# run_one PASS REP STREAMS DIR CONFIG — one iperf3 run; appends a CSV row; 1 on failure.
run_one() {
	local pass=$1 rep=$2 streams=$3 dir=$4 cfg=$5 rev=0 port json log tag i n=0 countfile=() cf
	[[ $dir == rev ]] && rev=1
	tag="$pass-$rep-$streams-$dir-$cfg"
	json="$BL_TMP/iperf3-$tag.json"
	log="$BL_TMP/proxy-$tag.log"
	bl_alive "$BL_IPERF_SRV_PID" || { bl_log "iperf3 server was gone; restarting it"; bl_iperf_server_restart; }
	BL_PROXY_ERR=""
	if [[ $cfg == direct ]]; then
		port=$BL_IPERF_SRV_PORT
	else
		port=$(bl_pick_port)
		if ! bl_start_proxy "$cfg" "$port" "$BL_IPERF_SRV_PORT" "$log"; then
			csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$BL_PROXY_ERR"
			return 1
		fi
		n=${#BL_PROXY_PIDS[@]}
		for ((i = 0; i < n; i++)); do
			cf="$BL_TMP/count-$tag$( ((n > 1)) && echo ".${BL_PROXY_ROLES[i]}").txt"
			case "$pass" in
			strace) bl_strace_start "${BL_PROXY_PIDS[i]}" "$cf" || { bl_strace_stop; bl_stop_proxy; csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$BL_PROXY_ERR"; return 1; } ;;
			perf) bl_perf_start "${BL_PROXY_PIDS[i]}" "$cf" || { bl_perf_stop; bl_stop_proxy; csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$BL_PROXY_ERR"; return 1; } ;;
			esac
			countfile[i]=$cf
		done
	fi
	local before=() after=() rc=0 alive=1
	for ((i = 0; i < n; i++)); do before[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}"); done
	bl_iperf_run "$port" "$SECONDS_RUN" "$streams" "$rev" "$json" || rc=1
	if [[ $cfg != direct ]]; then
		for ((i = 0; i < n; i++)); do bl_settle_children "${BL_PROXY_PIDS[i]}" 2; done
		for ((i = 0; i < n; i++)); do
			after[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}")
			bl_alive "${BL_PROXY_PIDS[i]}" || alive=0
		done
		case "$pass" in strace) bl_strace_stop ;; perf) bl_perf_stop ;; esac
		bl_stop_proxy
	fi
	if ((rc)); then
		local err=$BL_PROXY_ERR
		((alive)) || err="proxy died during the run ($err)"
		csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$err"
		bl_iperf_server_restart # a failed test can leave iperf3 -s busy
		return 1
	fi
	local bytes secs gbps cpu="" cpugb="" calls="" cpg="" ticks=0 t c
	local cpu_r=("" "") calls_r=("" "") cpg_r=("" "")
	read -r bytes secs < <(bl_iperf_result "$json")
	gbps=$(bl_calc '%.3f' "$bytes * 8 / $secs / 1e9")
	R_PARTS=""
	if [[ $cfg != direct ]]; then
		for ((i = 0; i < n; i++)); do
			t=$((${after[i]% *} - ${before[i]% *} + ${after[i]#* } - ${before[i]#* }))
			ticks=$((ticks + t))
			case "$pass" in
			strace) c=$(bl_strace_total "${countfile[i]}") || { csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "no total in strace output"; return 1; } ;;
			perf) c=$(bl_perf_total "${countfile[i]}") || { csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "perf counted nothing"; return 1; } ;;
			*) c="" ;;
			esac
			[[ -n $c ]] && calls=$((${calls:-0} + c))
			if ((n > 1)); then
				cpu_r[i]=$(bl_calc '%.2f' "$t / $BL_HZ")
				calls_r[i]=$c
				[[ -n $c ]] && cpg_r[i]=$(bl_calc '%.0f' "$c / ($bytes / 1e9)")
			fi
		done
		cpu=$(bl_calc '%.2f' "$ticks / $BL_HZ")
		cpugb=$(bl_calc '%.4f' "$ticks / $BL_HZ / ($bytes / 1e9)")
		[[ -n $calls ]] && cpg=$(bl_calc '%.0f' "$calls / ($bytes / 1e9)")
		if ((n > 1)); then
			R_PARTS=" (CPU-s A ${cpu_r[0]} + B ${cpu_r[1]})"
			[[ -n $calls ]] && R_PARTS+=", syscalls/GB A ${cpg_r[0]}, B ${cpg_r[1]}"
		fi
	fi
	csv_row "$pass" "$rep" "$streams" "$dir" "$cfg" ok "$gbps" "$bytes" "$secs" "$cpu" "$cpugb" "$calls" "$cpg" \
		"${cpu_r[0]}" "${cpu_r[1]}" "${calls_r[0]}" "${calls_r[1]}" "${cpg_r[0]}" "${cpg_r[1]}" ""
	R_GBPS=$gbps R_CPUGB=$cpugb R_CPG=$cpg
	return 0
}

progress() { # PASS REP STREAMS DIR CFG i n
	local pass=$1 rep=$2 s=$3 d=$4 c=$5 i=$6 n=$7 txt
	if run_one "$pass" "$rep" "$s" "$d" "$c"; then
		txt="$R_GBPS Gbit/s"
		[[ -n $R_CPUGB ]] && txt+=", $R_CPUGB CPU-s/GB"
		[[ -n $R_CPG ]] && txt+=", $R_CPG syscalls/GB"
		txt+=$R_PARTS
	else
		FAILED=1
		txt="FAILED: $(tail -n 1 "$CSV" | sed 's/.*,"\(.*\)"$/\1/')"
	fi
	printf '  [%*d/%d] %-10s rep %d  P%-3s %-3s %-17s %s\n' "${#n}" "$i" "$n" "$pass" "$rep" "$s" "$d" "$c" "$txt" >&2
	sleep "$PAUSE"
}

echo "throughput pass (progress on stderr):" >&2
i=0
for ((rep = 1; rep <= REPS; rep++)); do
	for s in "${STREAMS_ARR[@]}"; do
		for d in "${DIRS_ARR[@]}"; do
			for c in "${CONFIGS[@]}"; do
				i=$((i + 1))
				progress throughput "$rep" "$s" "$d" "$c" "$i" "$NRUNS"
			done
		done
	done
done
if [[ -n $SYSCALLS ]]; then
	echo "syscall pass under $SYSCALLS (its throughput is not a result):" >&2
	i=0
	for ((rep = 1; rep <= SYS_REPS; rep++)); do
		for s in "${STREAMS_ARR[@]}"; do
			for d in "${DIRS_ARR[@]}"; do
				for c in "${CONFIGS[@]}"; do
					[[ $c == direct ]] && continue
					i=$((i + 1))
					progress "$SYSCALLS" "$rep" "$s" "$d" "$c" "$i" "$NSYS"
				done
			done
		done
	done
fi
echo >&2

[[ -n $CSV_OUT ]] && cp -- "$CSV" "$CSV_OUT"

# ---------------------------------------------------------------- summary table
awk -F, -v configs="${CONFIGS[*]}" -v streams="${STREAMS_ARR[*]}" -v dirs="${DIRS_ARR[*]}" \
	-v reps="$REPS" -v secs="$SECONDS_RUN" -v sysc="$SYSCALLS" -v sysreps="$SYS_REPS" \
	-v ncols="$NCOLS" -v pairs="${PAIRS[*]}" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y) }
function grp(x,   s) { s = sprintf("%.0f", x); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
# the reference of a configuration: HAProxy in the same mode
function refof(c) { return (c ~ /-splice$/) ? "haproxy-splice" : (c == "hbone" || c == "haproxy-tls") ? "haproxy-tls" : "haproxy" }
function medof(arr, key, cnt,   k, w) { for (k = 1; k <= cnt; k++) w[k] = arr[key, k] + 0; return median(w, cnt) }
function verdict(x, lim, ge) { return (ge ? x + 0 >= lim : x + 0 <= lim) ? "met" : "MISSED" }
NR == 1 { next }
{
	# the error text (last field) may hold commas: it is everything after the (ncols-1)th comma
	err = $0; for (k = 1; k < ncols; k++) sub(/^[^,]*,/, "", err); gsub(/^"|"$/, "", err)
	key = $3 SUBSEP $4 SUBSEP $5
	if ($1 == "throughput") {
		n[key]++
		if ($6 == "ok") { ok[key]++; g[key, ok[key]] = $7; if ($11 != "") { nc[key]++; cg[key, nc[key]] = $11 } }
		else if (!(key in ferr)) ferr[key] = err
	} else {
		sn[key]++
		if ($6 == "ok") { sok[key]++; sv[key, sok[key]] = $13; if ($18 != "") { sva[key, sok[key]] = $18; svb[key, sok[key]] = $19 } }
	}
}
END {
	nc_ = split(configs, C, " "); ns = split(streams, S, " "); nd = split(dirs, D, " ")
	np = split(pairs, P, " "); for (k = 1; k <= np; k++) ispair[P[k]] = 1
	sysw = np ? 21 : 12
	for (si = 1; si <= ns; si++) for (di = 1; di <= nd; di++) {
		s = S[si]; d = D[di]
		printf "== %s stream%s, %s  (%d rep%s x %d s; median, min-max of the reps)\n", s, (s == 1 ? "" : "s"), \
			(d == "fwd" ? "forward: client sends" : "reverse (-R): server sends"), reps, (reps == 1 ? "" : "s"), secs
		hdr = sprintf("%-18s %5s %8s %-13s %8s %9s %9s %9s", "config", "ok", "Gbit/s", "(min-max)", "xdirect", "xhaproxy", "CPU-s/GB", "CPUxhap")
		if (sysc != "") hdr = hdr sprintf(" %*s", sysw, np ? "syscalls/GB A / B" : "syscalls/GB")
		print hdr
		# medians first, for the ratios
		for (ci = 1; ci <= nc_; ci++) {
			c = C[ci]; key = s SUBSEP d SUBSEP c
			mg[c] = ""; mc[c] = ""; sa[c] = ""; sb[c] = ""
			if (ok[key] > 0) {
				m = 0; for (k = 1; k <= ok[key]; k++) { v[k] = g[key, k] + 0 }
				lo[c] = v[1]; hi[c] = v[1]; for (k = 2; k <= ok[key]; k++) { if (v[k] < lo[c]) lo[c] = v[k]; if (v[k] > hi[c]) hi[c] = v[k] }
				mg[c] = median(v, ok[key]); delete v
			}
			if (nc[key] > 0) { for (k = 1; k <= nc[key]; k++) v[k] = cg[key, k] + 0; mc[c] = median(v, nc[key]); delete v }
		}
		for (ci = 1; ci <= nc_; ci++) {
			c = C[ci]; key = s SUBSEP d SUBSEP c
			ref = refof(c)
			okt = sprintf("%d/%d", ok[key] + 0, n[key] + 0)
			if (mg[c] == "") {
				line = sprintf("%-18s %5s FAILED: %s", c, okt, ferr[key])
			} else {
				line = sprintf("%-18s %5s %8.2f %-13s %8s %9s %9s %9s", c, okt, mg[c], sprintf("(%.2f-%.2f)", lo[c], hi[c]),
					(c == "direct" ? "-" : ratio(mg[c], mg["direct"])),
					(c == ref || c == "direct" ? "-" : ratio(mg[c], mg[ref])),
					(mc[c] == "" ? "-" : sprintf("%.3f", mc[c])),
					(c == ref || c == "direct" ? "-" : ratio(mc[c], mc[ref])))
				if (sysc != "") {
					if (c == "direct" || !(key in sn)) t = "-"
					else if (sok[key] == 0) t = "FAILED"
					else {
						if (c in ispair) { sa[c] = medof(sva, key, sok[key]); sb[c] = medof(svb, key, sok[key]); t = grp(sa[c]) " / " grp(sb[c]) }
						else t = grp(medof(sv, key, sok[key]))
						if (sok[key] < sn[key]) t = t "(" sok[key] "/" sn[key] ")" }
					line = line sprintf(" %*s", sysw, t)
				}
				if (ok[key] < n[key]) line = line "   (failed: " ferr[key] ")"
			}
			print line
		}
		if (mg["hbone"] != "" && mg["haproxy-tls"] != "") {
			tr = ratio(mg["hbone"], mg["haproxy-tls"]); cr = ratio(mc["hbone"], mc["haproxy-tls"])
			t = sprintf("targets for hbone: throughput %sx haproxy-tls (>= 2: %s), CPU-s/GB %sx (<= 0.5: %s)", \
				tr, (tr == "-" ? "-" : verdict(mg["hbone"] / mg["haproxy-tls"], 2, 1)), \
				cr, (cr == "-" ? "-" : verdict(mc["hbone"] / mc["haproxy-tls"], 0.5, 0)))
			if (sa["hbone"] != "") t = t sprintf(", syscalls/GB A %s B %s (<= 2,000 each: %s)", grp(sa["hbone"]), grp(sb["hbone"]), \
				(sa["hbone"] <= 2000 && sb["hbone"] <= 2000) ? "met" : "MISSED")
			print t
		}
		print ""
	}
	print "xdirect: median Gbit/s / direct median. xhaproxy, CPUxhap: median Gbit/s and median CPU-s/GB over"
	print "HAProxy in the same mode (copy configurations vs haproxy, -splice ones vs haproxy-splice,"
	print "hbone vs haproxy-tls)."
	print "CPU-s/GB: proxy utime+stime (all threads and processes) per 1e9 bytes received by iperf3;"
	print "for a tunnel (" (np ? pairs : "hbone, haproxy-tls") ") the sum of its two processes, A (outbound) and B (inbound)."
	if (sysc != "") {
		print "syscalls/GB: median of " sysreps " separate run(s) per cell under " sysc " (only the counts are used from them);"
		print "for a tunnel A / B, each process on its own (the target for hbone: <= 2,000 each). Forward, A carries"
		print "the data TCP->tunnel and B tunnel->TCP; reverse, the other way round."
	}
}' "$CSV"

PLOT_FAILED=0
if [[ -n $PLOT_OUT ]]; then
	if "$SCRIPT_DIR/bench-plot.sh" --title "bench-compare: $REPS rep(s) x ${SECONDS_RUN} s on $(nproc) CPUs, $(date -u +%F)" \
		"$CSV" "$PLOT_OUT"; then
		echo "plot: $PLOT_OUT" >&2
	else
		echo "the plot could not be drawn (see above)" >&2
		PLOT_FAILED=1
	fi
fi

((FAILED)) && echo "some runs FAILED (see the cells above$([[ -n $CSV_OUT ]] && echo ", and $CSV_OUT"))" >&2
((TLS_FAILED)) && echo "the mutual-TLS check of a tunnel failed (see the top): its figures are not those of an mTLS tunnel" >&2
exit $((FAILED || TLS_FAILED || PLOT_FAILED))

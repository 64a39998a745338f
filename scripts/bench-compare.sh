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
# --mesh runs instead, in two network namespaces joined by a veth pair, the flag-routed HBONE
# tunnel beside the captured one (iptables REDIRECT -> 15001 -> HBONE -> 15008 -> server), and
# adds a pass of new connections per second (build/bench/conn_rate) through both.
#
# --syscalls adds a separate pass (--syscalls-reps runs per load and proxy) under strace -c -f
# (or perf stat) for syscalls/GB; it is separate because tracing distorts throughput and CPU.
#
# --rtt adds a pass of round trips: sockperf ping-pong --tcp -m 64 --full-rtt (one connection,
# one 64-byte message in flight, echoed by sockperf server) through every configuration, for
# the p50 and p99 round-trip time. --conn-rate adds a pass of new connections per second: wrk
# (one thread, --conn-concurrency connections, every request with `Connection: close`, so a
# new TCP connection each) through every configuration to an nginx that the script starts on
# 127.0.0.1 (one worker process, a 64-byte body), with the proxies' CPU per new connection
# (the same /proc sampling as CPU-s/GB, around the wrk run). Both passes are off by default:
# each adds about reps x configurations x 8-10 s, and they need sockperf, wrk and nginx
# (scripts/deps.sh installs them). --no-throughput leaves the iperf3 pass out, so that
# `--no-throughput --rtt --conn-rate --hbone` measures only these. Each pass interleaves its
# reps as the throughput pass does, and compares with HAProxy in the same mode.
set -euo pipefail

# shellcheck disable=SC2034  # BL_PROG, BL_KEEP_TMP, BL_RT_*, BL_HAPROXY_BUFSIZE: read by bench-lib.sh
BL_PROG=bench-compare.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$SCRIPT_DIR/bench-lib.sh"

ALL_CONFIGS="direct ringtunnel ringtunnel-splice haproxy haproxy-splice socat hbone haproxy-tls"
DEFAULT_CONFIGS="direct ringtunnel ringtunnel-splice haproxy haproxy-splice socat"
MESH_CONFIGS="direct hbone-flag hbone-captured"   # --mesh: the configurations, in two namespaces

usage() {
	cat <<EOF
Usage: scripts/bench-compare.sh [OPTIONS] [-- RINGTUNNEL_FLAGS...]

Throughput and proxy CPU of ringtunnel, HAProxy 2.6 and socat relaying iperf3 on
127.0.0.1, with iperf3 direct (no proxy) as the ceiling. Prints, per load and
configuration, the median Gbit/s (min-max), the median proxy CPU-s/GB, and ratios to
direct and to HAProxy in the same mode (copy vs copy, splice vs splice, the ringtunnel
HBONE tunnel vs the HAProxy TLS tunnel). With --rtt and --conn-rate, also the round-trip
time of 64-byte ping-pong and the new connections per second with the proxies' CPU per
connection, against the same baselines (see below).

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

Round trips (--rtt): sockperf server --tcp on 127.0.0.1, and through each configuration
sockperf ping-pong --tcp -m 64 --full-rtt for --rtt-seconds (one connection, one 64-byte
message in flight; sockperf leaves its first 0.4 s and the last moments out of the figures).
Printed: the medians of the reps' p50 and p99 round-trip times in microseconds, their ratios
to HAProxy in the same mode, and the p50 a proxy adds to direct's.

New connections per second (--conn-rate): nginx on 127.0.0.1, started by this script with a
temporary config (worker_processes 1; every request answered 200 with a 64-byte body, no
access log; as root its worker runs as nobody), and through each configuration
wrk -t 1 -c <--conn-concurrency> -H 'Connection: close' for --conn-seconds after a 1 s
warm-up run: nginx closes every connection after its answer and wrk opens a new one, so each
request is a new TCP connection (and, through haproxy-tls, a TLS handshake; through hbone, a
new HTTP/2 stream in A's pooled mutual-TLS connection). One worker for nginx and one thread
for wrk: the machine's 2 CPUs are shared by wrk, the proxy (2 workers / 2 threads) and nginx,
and one nginx worker with a 64-byte answer is cheaper per connection than any proxy, so the
proxy stays what limits the rate (nginx's CPU share is printed to show it). Printed: median
conn/s (min-max) and its ratios to direct and to HAProxy in the same mode, the proxies' CPU
per new connection (us of CPU of the proxy's process tree, for a tunnel A + B, over the wrk
run) and its ratio to HAProxy, wrk's p50/p99 request latency, errors, and nginx's CPU share.

Mesh mode (--mesh; needs root): two network namespaces, hosts A (10.250.0.1) and B
(10.250.0.2, and its workload address 10.250.0.3), joined by a veth pair; the addresses
exist only inside them, and both namespaces are deleted at exit whatever happens. A has the
capture rules of README's "Running one host of a mesh" (nat OUTPUT: REDIRECT to 15001,
except ringtunnel's mark 0x539, -o lo, and B's own address 10.250.0.2). Both ringtunnels
read one workload config (vm-a on A, vm-b at 10.250.0.3, both HBONE, no policy; plus
--mesh-workloads unrelated ones). The servers (iperf3 -s, conn_rate --serve) run in B.
  direct             client in A -> 10.250.0.2 (B's own address, not captured): no proxy
  hbone-flag         client in A -> 127.0.0.1:15002, A's --forward
                     L=hbone://10.250.0.3:15008/10.250.0.3:PORT?identity=<node-b> (--mark
                     0x539) -> HBONE -> B (--config, --hbone-listen) -> 10.250.0.3:PORT
  hbone-captured     client in A -> 10.250.0.3:PORT, REDIRECTed to A's --outbound-listen
                     127.0.0.1:15001 (--config: SO_ORIGINAL_DST, workload lookup) -> HBONE ->
                     B (the same) -> 10.250.0.3:PORT
B is started the same way in both tunnels (--config), so the two differ only in what the
issue asks to cost nothing: A's capture (the REDIRECT's NAT, SO_ORIGINAL_DST) and lookup.
(B's admission by the workload config runs in both; build/bench/workload_bench times it.)
After the throughput pass, a conn/s pass: build/bench/conn_rate in A, --conn-concurrency
clients each doing connect, 16 bytes, read the echo, close, for --conn-seconds (after 1 s of
warm-up) against conn_rate --serve in B (epoll, one thread per CPU; its CPU share is
printed, to show it is not the limit), through each configuration, the reps interleaved.
Printed: median conn/s (min-max), ratios to direct and captured/flag with the target
(captured >= 0.90x flag-routed), latency p50/p99, proxy CPU-ms per 1000 connections.
In the namespaces (only there) the client side may use ports 16000-65000 and reuse
TIME_WAIT ports (tcp_tw_reuse=1), and A's conntrack forgets closed connections after 1 s.

Options:
  --reps N            repetitions of every load x configuration (default: 5)
  --seconds N         length of each iperf3 run in seconds (default: 5)
  --only LIST         comma-separated configurations to run; a name without -splice also
                      selects its -splice variant (--only ringtunnel,haproxy runs ringtunnel,
                      ringtunnel-splice, haproxy, haproxy-splice); direct always runs
                      (it is the reference) unless --no-direct
  --mesh              the mesh configurations above (alone: direct, hbone-flag,
                      hbone-captured; --only picks among them), then the conn/s pass; prints
                      captured vs flag-routed for throughput and conn/s
  --rtt               add the round-trip pass (sockperf ping-pong, above)
  --rtt-reps N        round-trip runs per configuration (default: --reps)
  --rtt-seconds N     length of each round-trip run (default: 5)
  --conn-rate         add the new-connections pass on 127.0.0.1 (wrk to nginx, above)
  --no-throughput     leave the iperf3 throughput pass out (with --rtt, --conn-rate or
                      --mesh's conn/s pass)
  --conn-reps N       conn/s runs per configuration with --mesh or --conn-rate; 0: no conn/s
                      pass with --mesh (default: --reps)
  --conn-seconds N    length of each conn/s run, after 1 s of warm-up (default: 5)
  --conn-concurrency N
                      concurrent clients of each conn/s run (--mesh: conn_rate clients;
                      --conn-rate: wrk connections) (default: 32)
  --conn-rate-bin PATH
                      the conn_rate program (default: build/bench/conn_rate of this repository)
  --mesh-mtu N        the veth pair's MTU (default: 1500, a NIC's). The captured client's
                      socket is routed by its real destination, over veth0, so its MSS
                      follows this MTU, while the flag-routed client talks to 127.0.0.1 over
                      loopback (MTU 65536); 65535 gives both client legs the same segment
                      size, so the two tunnels differ only in capture and lookup
  --mesh-workloads N  N more workloads in the mesh's workload config (10.1.x.y, none of them
                      reached), for the lookup among many (default: 0)
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
--hbone: 5 x 4 x 3 x ~7 s = about 7 minutes; --mesh: 5 x 4 x 3 x ~7 s, then 5 x 3 x ~9 s
for conn/s: about 9 minutes. --rtt adds 5 x configurations x ~8 s, --conn-rate
5 x configurations x ~10 s (with --hbone --no-throughput, both: about 4.5 minutes).

A run that fails (proxy does not start or dies, iperf3 fails or times out) is reported in
its cell ("FAILED" or "k/n ok") and the script goes on with the rest; the exit status is
then 1. Exit status: 0 all runs succeeded, 1 a run failed, a tool is missing
or the --plot picture could not be drawn, 2 bad usage.
Needs: iperf3 haproxy socat jq iproute2 (ss); strace or linux-perf for --syscalls; openssl
for the tunnels; root, iproute2 (ip), util-linux (nsenter), iptables and build/bench/conn_rate
for --mesh; sockperf for --rtt; wrk and nginx for --conn-rate. With --csv FILE and --mesh or
--conn-rate, the conn/s runs go to FILE-conns.csv (FILE's .csv replaced), and with --rtt the
round-trip runs to FILE-rtt.csv (one row per run each; FILE itself keeps the iperf3 runs).
gnuplot (gnuplot-nox) for --plot.
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
MESH=0
CONN_REPS=""              # default: --reps
CONN_SECONDS=5
CONN_CONCURRENCY=32
CONN_BIN=$SCRIPT_DIR/../build/bench/conn_rate
BL_MESH_EXTRA_WORKLOADS=0
BL_MESH_MTU=1500
THROUGHPUT=1              # --no-throughput: 0
RTT=0                     # --rtt
RTT_REPS=""               # default: --reps
RTT_SECONDS=5
RTT_BYTES=64              # sockperf's message size
CONN_RATE=0               # --conn-rate

ORIG_ARGS=("$@")
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
	--mesh) MESH=1; shift ;;
	--rtt) RTT=1; shift ;;
	--rtt-reps) need_arg "$1" $#; RTT_REPS=$2; shift 2 ;;
	--rtt-reps=*) RTT_REPS=${1#*=}; shift ;;
	--rtt-seconds) need_arg "$1" $#; RTT_SECONDS=$2; shift 2 ;;
	--rtt-seconds=*) RTT_SECONDS=${1#*=}; shift ;;
	--conn-rate) CONN_RATE=1; shift ;;
	--no-throughput) THROUGHPUT=0; shift ;;
	--conn-reps) need_arg "$1" $#; CONN_REPS=$2; shift 2 ;;
	--conn-reps=*) CONN_REPS=${1#*=}; shift ;;
	--conn-seconds) need_arg "$1" $#; CONN_SECONDS=$2; shift 2 ;;
	--conn-seconds=*) CONN_SECONDS=${1#*=}; shift ;;
	--conn-concurrency) need_arg "$1" $#; CONN_CONCURRENCY=$2; shift 2 ;;
	--conn-concurrency=*) CONN_CONCURRENCY=${1#*=}; shift ;;
	--conn-rate-bin) need_arg "$1" $#; CONN_BIN=$2; shift 2 ;;
	--conn-rate-bin=*) CONN_BIN=${1#*=}; shift ;;
	--mesh-mtu) need_arg "$1" $#; BL_MESH_MTU=$2; shift 2 ;;
	--mesh-mtu=*) BL_MESH_MTU=${1#*=}; shift ;;
	--mesh-workloads) need_arg "$1" $#; BL_MESH_EXTRA_WORKLOADS=$2; shift 2 ;;
	--mesh-workloads=*) BL_MESH_EXTRA_WORKLOADS=${1#*=}; shift ;;
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
CONN_REPS=${CONN_REPS:-$REPS}
[[ $CONN_REPS =~ ^[0-9]+$ ]] || bl_usage_err "--conn-reps must be an integer >= 0 (got '$CONN_REPS')"
RTT_REPS=${RTT_REPS:-$REPS}
bl_is_uint "$RTT_REPS" || bl_usage_err "--rtt-reps must be a positive integer (got '$RTT_REPS')"
bl_is_uint "$RTT_SECONDS" || bl_usage_err "--rtt-seconds must be a positive integer (got '$RTT_SECONDS')"
bl_is_uint "$CONN_SECONDS" || bl_usage_err "--conn-seconds must be a positive integer (got '$CONN_SECONDS')"
{ bl_is_uint "$CONN_CONCURRENCY" && ((CONN_CONCURRENCY <= 10000)); } || bl_usage_err "--conn-concurrency must be an integer 1..10000 (got '$CONN_CONCURRENCY')"
{ [[ $BL_MESH_EXTRA_WORKLOADS == 0 ]] || { bl_is_uint "$BL_MESH_EXTRA_WORKLOADS" && ((BL_MESH_EXTRA_WORKLOADS <= 60000)); }; } ||
	bl_usage_err "--mesh-workloads must be an integer 0..60000 (got '$BL_MESH_EXTRA_WORKLOADS')"
{ bl_is_uint "$BL_MESH_MTU" && ((BL_MESH_MTU >= 1280 && BL_MESH_MTU <= 65535)); } ||
	bl_usage_err "--mesh-mtu must be an integer 1280..65535 (got '$BL_MESH_MTU')"
given() { # given OPTION — OPTION was on the command line (as OPTION VALUE or OPTION=VALUE)
	local a
	for a in "${ORIG_ARGS[@]+"${ORIG_ARGS[@]}"}"; do [[ $a == "$1" || $a == "$1="* ]] && return 0; done
	return 1
}
if ((MESH)); then
	((HBONE)) && bl_usage_err "--mesh and --hbone are separate runs (the mesh configurations run in network namespaces)"
	[[ -n $SYSCALLS ]] && bl_usage_err "--syscalls is not available with --mesh"
	((RTT || CONN_RATE)) && bl_usage_err "--rtt and --conn-rate run on 127.0.0.1, not with --mesh (which has its own conn/s pass)"
	ALL_CONFIGS=$MESH_CONFIGS
	DEFAULT_CONFIGS=$MESH_CONFIGS
else
	for o in --conn-rate-bin --mesh-workloads --mesh-mtu; do
		given "$o" && bl_usage_err "$o is for --mesh"
	done
	if ((!CONN_RATE)); then
		for o in --conn-reps --conn-seconds --conn-concurrency; do
			given "$o" && bl_usage_err "$o is for --mesh or --conn-rate"
		done
	fi
	((CONN_RATE && CONN_REPS == 0)) && bl_usage_err "--conn-rate needs --conn-reps of at least 1"
fi
if ((!RTT)); then
	for o in --rtt-reps --rtt-seconds; do given "$o" && bl_usage_err "$o is for --rtt"; done
fi
if ((!THROUGHPUT)); then
	[[ -n $SYSCALLS ]] && bl_usage_err "--syscalls counts the calls of iperf3 runs: not with --no-throughput"
	[[ -n $PLOT_OUT ]] && bl_usage_err "--plot draws the throughput pass: not with --no-throughput"
	((RTT || CONN_RATE || (MESH && CONN_REPS))) ||
		bl_usage_err "--no-throughput leaves nothing to run (add --rtt, --conn-rate, or --mesh with its conn/s pass)"
	given --streams && bl_usage_err "--streams is for the throughput pass: not with --no-throughput"
	given --dirs && bl_usage_err "--dirs is for the throughput pass: not with --no-throughput"
	given --seconds && bl_usage_err "--seconds is for the throughput pass: not with --no-throughput"
fi

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

tools=(ss timeout getconf awk sort)
((THROUGHPUT)) && tools+=(iperf3 jq)
((RTT)) && tools+=(sockperf)
if ((CONN_RATE)); then
	tools+=(wrk)
	# nginx is in /usr/sbin, which a user's PATH may lack
	BL_NGINX_BIN=$(command -v nginx 2>/dev/null || true)
	[[ -z $BL_NGINX_BIN && -x /usr/sbin/nginx ]] && BL_NGINX_BIN=/usr/sbin/nginx
	[[ -n $BL_NGINX_BIN ]] || tools+=(nginx)
fi
RT_USED=0
PAIRS=()
for c in "${CONFIGS[@]}"; do
	case "$c" in
	haproxy*) tools+=(haproxy) ;;
	socat) tools+=(socat) ;;
	ringtunnel* | hbone*) RT_USED=1 ;;
	esac
	{ bl_is_pair "$c" || [[ $c == hbone-* ]]; } && PAIRS+=("$c")
done
((${#PAIRS[@]})) && tools+=(openssl)
((MESH)) && tools+=(ip nsenter sysctl bash)
if [[ -n $BL_CERT_DIR ]] && ((!${#PAIRS[@]})); then
	bl_usage_err "--certs is for the tunnels (hbone, haproxy-tls, hbone-flag, hbone-captured), which are not among the configurations"
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
if ((MESH && RT_USED)) && [[ $(timeout 10 "$BL_RT_BIN" --help 2>&1 || true) != *--outbound-listen* ]]; then
	bl_die "$BL_RT_BIN has no --outbound-listen flag (not built from the mesh work yet?)"
fi
if ((MESH && CONN_REPS)) && [[ ! -x $CONN_BIN ]]; then
	bl_die "conn_rate not found or not executable: $CONN_BIN (meson compile -C build builds bench/conn_rate; or --conn-rate-bin PATH, or --conn-reps 0)"
fi
((MESH && EUID != 0)) && bl_die "--mesh needs root (ip netns, veth, iptables); this runs as uid $EUID"
if [[ -n $CSV_OUT ]]; then
	{ : >"$CSV_OUT"; } 2>/dev/null || bl_die "cannot write --csv file '$CSV_OUT'"
fi
if [[ -n $PLOT_OUT ]]; then
	[[ $PLOT_OUT != -* ]] || bl_usage_err "--plot needs a file name (got '$PLOT_OUT')"
	{ : >"$PLOT_OUT"; } 2>/dev/null || bl_die "cannot write --plot file '$PLOT_OUT'"
fi

bl_init
((${#PAIRS[@]})) && bl_certs_prepare
ECHO_PID=""
if ((MESH)); then
	bl_mesh_setup
	BL_CLIENT_NS=$BL_NS_A
	# the echo server of the conn/s pass, in B on every address, one thread per CPU
	if ((CONN_REPS)); then
		bl_in_ns "$BL_NS_B" "$CONN_BIN" --serve "0.0.0.0:$BL_MESH_ECHO_PORT" >"$BL_TMP/echo.log" 2>&1 </dev/null &
		ECHO_PID=$!
		bl_own "$ECHO_PID"
		bl_wait_listen "$BL_MESH_ECHO_PORT" "$ECHO_PID" 5 "$BL_NS_B" ||
			bl_die "conn_rate --serve did not start in $BL_NS_B: $(head -c 300 "$BL_TMP/echo.log")"
	fi
fi
((THROUGHPUT)) && bl_iperf_server_start
((RTT)) && bl_sockperf_server_start
((CONN_RATE)) && bl_nginx_start
[[ -n $ECHO_PID ]] && bl_mesh_probe "$BL_MESH_ECHO_PORT"   # (not iperf3's port: it would log a broken test)

# For a tunnel, proxy_cpu_s / cpu_s_per_gb / syscalls / syscalls_per_gb are A + B, and the *_a,
# *_b columns hold each process's own figures (empty for a single proxy).
CSV="$BL_TMP/runs.csv"
echo "pass,rep,streams,direction,config,status,gbps,bytes,seconds,proxy_cpu_s,cpu_s_per_gb,syscalls,syscalls_per_gb,cpu_s_a,cpu_s_b,syscalls_a,syscalls_b,syscalls_per_gb_a,syscalls_per_gb_b,error" >"$CSV"
NCOLS=20   # the summary finds the error text (which may hold commas) after NCOLS-1 commas

NLOADS=$((${#STREAMS_ARR[@]} * ${#DIRS_ARR[@]}))
NRUNS=0
((THROUGHPUT)) && NRUNS=$((REPS * NLOADS * ${#CONFIGS[@]}))
NRTT=0
((RTT)) && NRTT=$((RTT_REPS * ${#CONFIGS[@]}))
NSYS=0
if [[ -n $SYSCALLS ]]; then
	for c in "${CONFIGS[@]}"; do [[ $c == direct ]] || NSYS=$((NSYS + NLOADS * SYS_REPS)); done
fi
NCONN=0
((MESH || CONN_RATE)) && NCONN=$((CONN_REPS * ${#CONFIGS[@]}))
EST=$(bl_calc '%.0f' "($NRUNS + $NSYS) * ($SECONDS_RUN + 1.5 + $PAUSE) + $NCONN * ($CONN_SECONDS + 3 + $PAUSE) + $NRTT * ($RTT_SECONDS + 1.5 + $PAUSE)")
if ((EST >= 120)); then EST="$((EST / 60)) min"; else EST="$EST s"; fi
echo "bench-compare: ${CONFIGS[*]}"
((RT_USED)) && echo "ringtunnel: $BL_RT_BIN${BL_RT_EXTRA[*]:+ (extra flags: ${BL_RT_EXTRA[*]})}"
((THROUGHPUT)) && echo "loads: streams {$STREAMS_LIST} x {$DIRS_LIST}; $REPS rep(s) x ${SECONDS_RUN} s, interleaved; $NRUNS runs$([[ -n $SYSCALLS ]] && echo " + $NSYS $SYSCALLS runs"), about $EST in all"
((NRTT)) && echo "rtt: sockperf ping-pong --tcp -m $RTT_BYTES --full-rtt to sockperf server on 127.0.0.1:$BL_SOCKPERF_SRV_PORT; $RTT_REPS rep(s) x ${RTT_SECONDS} s per configuration; $NRTT runs"
if ((NCONN)); then
	if ((MESH)); then
		echo "conn/s: $CONN_REPS rep(s) x ${CONN_SECONDS} s (after 1 s of warm-up) per configuration, $CONN_CONCURRENCY concurrent clients; $NCONN runs"
	else
		echo "conn/s: wrk -t 1 -c $CONN_CONCURRENCY -H 'Connection: close' to nginx ($BL_NGINX_BIN, $BL_NGINX_WORKERS worker, $BL_BODY_BYTES-byte body) on 127.0.0.1:$BL_NGINX_PORT;"
		echo "  $CONN_REPS rep(s) x ${CONN_SECONDS} s (after 1 s of warm-up) per configuration; $NCONN runs"
		[[ $(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null) == 0 ]] &&
			echo "  warning: net.ipv4.tcp_tw_reuse is 0: wrk and the proxies may run out of local ports (TIME_WAIT)"
	fi
fi
((THROUGHPUT)) || echo "no throughput pass (--no-throughput); about $EST in all"
echo "machine: $(nproc) online CPUs shared by the proxies and the load's both ends (no pinning); CLK_TCK=$BL_HZ; GB = 1e9 bytes"
FAILED=0
TLS_FAILED=0
if ((MESH)); then
	echo "mesh: hosts $BL_NS_A ($BL_MESH_A_IP) and $BL_NS_B ($BL_MESH_B_IP, workload $BL_MESH_B_WL), veth0 (MTU $BL_MESH_MTU) between them;"
	echo "  capture rules in A ($BL_MESH_IPTABLES): REDIRECT to $BL_MESH_OUTBOUND, except mark $BL_MESH_MARK, -o lo and $BL_MESH_B_IP"
	echo "  workload config: vm-a, vm-b$( ((BL_MESH_EXTRA_WORKLOADS)) && echo " and $BL_MESH_EXTRA_WORKLOADS more workloads"), no policy; B is the same in both tunnels"
	echo "  direct:         client in A -> $BL_MESH_B_IP:PORT (B's own address, not captured) -> server in B"
	echo "  hbone-flag:     client in A -> 127.0.0.1:$BL_MESH_FORWARD (A's --forward ...=hbone://$BL_MESH_B_WL:$BL_MESH_HBONE/$BL_MESH_B_WL:PORT)"
	echo "                  -> HBONE -> B (--config, --hbone-listen :$BL_MESH_HBONE) -> $BL_MESH_B_WL:PORT"
	echo "  hbone-captured: client in A -> $BL_MESH_B_WL:PORT, REDIRECTed to A's --outbound-listen 127.0.0.1:$BL_MESH_OUTBOUND"
	echo "                  (--config: SO_ORIGINAL_DST, workload lookup) -> HBONE -> B (the same) -> $BL_MESH_B_WL:PORT"
	echo "  A has node-a's certificate and expects $BL_B_ID of B"
elif ((${#PAIRS[@]})); then
	clients=""
	((NRUNS)) && clients+=", iperf3 -c"
	((NRTT)) && clients+=", sockperf ping-pong"
	((NCONN)) && clients+=", wrk"
	echo "tunnels: client (${clients#, }) -> A (outbound) -> B (inbound) -> server; A has node-a's certificate and"
	echo "  expects $BL_B_ID of B; HAProxy nbthread $BL_HAPROXY_NBTHREAD per instance; certificates from $(dirname "$BL_CA")"
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
	if ((MESH)); then
		if ! bl_mesh_start "$cfg" "$BL_IPERF_SRV_PORT" "$log"; then
			csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$BL_PROXY_ERR"
			return 1
		fi
		port=$BL_MESH_CLIENT_PORT
		BL_IPERF_HOST=$BL_MESH_CLIENT_HOST
		n=${#BL_PROXY_PIDS[@]}
	elif ! bl_proxy_or_direct "$cfg" "$BL_IPERF_SRV_PORT" "$log"; then
		csv_fail "$pass" "$rep" "$streams" "$dir" "$cfg" "$BL_PROXY_ERR"
		return 1
	else
		port=$BL_PORT
		n=${#BL_PROXY_PIDS[@]}   # 0 for direct: no counting below
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

if ((THROUGHPUT)); then
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
fi
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

# ---------------------------------------------------------------- round-trip pass (--rtt)
RTT_CSV="$BL_TMP/rtt.csv"
echo "rep,config,status,p50_us,p99_us,avg_us,max_us,observations,error" >"$RTT_CSV"
rtt_fail() { # REP CONFIG ERROR
	local err=${3//\"/\'}
	printf '%s,%s,FAILED,,,,,,"%s"\n' "$1" "$2" "$err" >>"$RTT_CSV"
}

# rtt_one REP CONFIG — sockperf ping-pong through CONFIG (a freshly started proxy) to the
# sockperf server; a CSV row; 1 on failure.
rtt_one() {
	local rep=$1 cfg=$2 port log out rc=0 alive=1 p res
	log="$BL_TMP/proxy-rtt-$rep-$cfg.log"
	out="$BL_TMP/sockperf-$rep-$cfg.txt"
	bl_alive "$BL_SOCKPERF_SRV_PID" || { bl_log "sockperf server was gone; restarting it"; bl_sockperf_server_restart; }
	if ! bl_proxy_or_direct "$cfg" "$BL_SOCKPERF_SRV_PORT" "$log"; then
		rtt_fail "$rep" "$cfg" "$BL_PROXY_ERR"
		return 1
	fi
	port=$BL_PORT
	bl_sockperf_run "$port" "$RTT_SECONDS" "$RTT_BYTES" "$out" || rc=1
	for p in "${BL_PROXY_PIDS[@]+"${BL_PROXY_PIDS[@]}"}"; do bl_alive "$p" || alive=0; done
	bl_stop_proxy
	if ((rc)); then
		local err=$BL_PROXY_ERR
		((alive)) || err="proxy died during the run ($err)"
		rtt_fail "$rep" "$cfg" "$err"
		bl_sockperf_server_restart   # a broken ping-pong may leave the server stuck on it
		return 1
	fi
	if ! res=$(bl_sockperf_result "$out"); then
		rtt_fail "$rep" "$cfg" "sockperf report of $out: $res"
		return 1
	fi
	local p50 p99 avg mx obs
	read -r p50 p99 avg mx obs <<<"$res"
	printf '%s,%s,ok,%s,%s,%s,%s,%s,""\n' "$rep" "$cfg" "$p50" "$p99" "$avg" "$mx" "$obs" >>"$RTT_CSV"
	R_P50=$p50 R_P99=$p99 R_OBS=$obs
	return 0
}

if ((NRTT)); then
	echo "round-trip pass (progress on stderr):" >&2
	i=0
	for ((rep = 1; rep <= RTT_REPS; rep++)); do
		for c in "${CONFIGS[@]}"; do
			i=$((i + 1))
			if rtt_one "$rep" "$c"; then
				txt="p50 $R_P50 us, p99 $R_P99 us ($R_OBS round trips)"
			else
				FAILED=1
				txt="FAILED: $(tail -n 1 "$RTT_CSV" | sed 's/.*,"\(.*\)"$/\1/')"
			fi
			printf '  [%*d/%d] rtt rep %d  %-17s %s\n' "${#NRTT}" "$i" "$NRTT" "$rep" "$c" "$txt" >&2
			sleep "$PAUSE"
		done
	done
fi

# ---------------------------------------------------------------- conn/s pass (--mesh, --conn-rate)
CONN_CSV="$BL_TMP/conns.csv"
if ((MESH)); then
	echo "rep,config,status,conns,seconds,conn_per_s,errors,p50_us,p99_us,total,proxy_cpu_s,cpu_ms_per_kconn,echo_cpu_s,wall_s,error" >"$CONN_CSV"
else
	# --conn-rate: conns = requests wrk completed (each a new connection) in the measured run
	echo "rep,config,status,conns,seconds,conn_per_s,errors,p50_us,p99_us,proxy_cpu_s,cpu_us_per_conn,nginx_cpu_s,wall_s,error" >"$CONN_CSV"
fi
conn_fail() { # REP CONFIG ERROR
	local err=${3//\"/\'}
	if ((MESH)); then
		printf '%s,%s,FAILED,,,,,,,,,,,,"%s"\n' "$1" "$2" "$err" >>"$CONN_CSV"
	else
		printf '%s,%s,FAILED,,,,,,,,,,,"%s"\n' "$1" "$2" "$err" >>"$CONN_CSV"
	fi
}

# wrk_one REP CONFIG — --conn-rate: wrk through CONFIG (a freshly started proxy) to nginx, a
# 1 s warm-up run and then the measured one; a CSV row; 1 on failure. CPU: the proxy's
# process tree (a tunnel: A + B) and nginx's, sampled right before and after the measured run.
WRK_LUA="$BL_TMP/wrk-figures.lua"
((CONN_RATE)) && bl_wrk_script "$WRK_LUA"
wrk_one() {
	local rep=$1 cfg=$2 port log out i n=0 rc=0 before=() after=() nb na t0 t1 ticks=0 alive=1 p
	log="$BL_TMP/proxy-conns-$rep-$cfg.log"
	out="$BL_TMP/wrk-$rep-$cfg.txt"
	bl_alive "$BL_NGINX_PID" || { bl_log "nginx was gone; restarting it"; bl_nginx_restart; }
	if ! bl_proxy_or_direct "$cfg" "$BL_NGINX_PORT" "$log"; then
		conn_fail "$rep" "$cfg" "$BL_PROXY_ERR"
		return 1
	fi
	port=$BL_PORT
	n=${#BL_PROXY_PIDS[@]}
	# the warm-up (not measured): first accepts, HBONE's pooled connection, HAProxy's buffers
	if bl_wrk_run "$port" 1 "$CONN_CONCURRENCY" "$out.warmup"; then
		for ((i = 0; i < n; i++)); do before[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}"); done
		nb=$(bl_cpu_ticks "$BL_NGINX_PID")
		t0=$(date +%s.%N)
		bl_wrk_run "$port" "$CONN_SECONDS" "$CONN_CONCURRENCY" "$out" "$WRK_LUA" || rc=1
		t1=$(date +%s.%N)
		# socat: its per-connection processes finished and reaped (into cutime) before the sample
		for ((i = 0; i < n; i++)); do bl_settle_children "${BL_PROXY_PIDS[i]}" 2; done
		for ((i = 0; i < n; i++)); do after[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}"); done
		na=$(bl_cpu_ticks "$BL_NGINX_PID")
	else
		rc=1
		BL_PROXY_ERR="warm-up: $BL_PROXY_ERR"
	fi
	for p in "${BL_PROXY_PIDS[@]+"${BL_PROXY_PIDS[@]}"}"; do bl_alive "$p" || alive=0; done
	bl_stop_proxy
	if ((rc)); then
		local err=$BL_PROXY_ERR
		((alive)) || err="proxy died during the run ($err)"
		conn_fail "$rep" "$cfg" "$err"
		return 1
	fi
	local line
	line=$(grep '^wrk: ' "$out" 2>/dev/null) || true
	if [[ -z $line ]]; then
		conn_fail "$rep" "$cfg" "no figures from wrk's script in $out: $(tr '\n' ' ' <"$out" | head -c 200)"
		return 1
	fi
	local reqs dur errs econn eread ewrite estatus etimeout p50 p99
	# "wrk: requests=N duration_us=D errors=E connect=C read=R write=W status=S timeout=T p50_us=P p99_us=Q"
	read -r reqs dur errs econn eread ewrite estatus etimeout p50 p99 < <(awk '{ for (i = 2; i <= NF; i++) { sub(/^[a-z_0-9]*=/, "", $i); printf "%s%s", $i, (i < NF ? " " : "\n") } }' <<<"$line")
	if ! [[ $reqs =~ ^[0-9]+$ && $dur =~ ^[0-9]+$ ]] || ((reqs == 0 || dur == 0)); then
		conn_fail "$rep" "$cfg" "wrk completed no request (errors: connect $econn, read $eread, write $ewrite, status $estatus, timeout $etimeout)"
		return 1
	fi
	local cps secs cpu="" cpc="" ngx wall
	secs=$(bl_calc '%.3f' "$dur / 1e6")
	cps=$(bl_calc '%.1f' "$reqs / ($dur / 1e6)")
	if ((n)); then
		for ((i = 0; i < n; i++)); do
			ticks=$((ticks + ${after[i]% *} - ${before[i]% *} + ${after[i]#* } - ${before[i]#* }))
		done
		cpu=$(bl_calc '%.2f' "$ticks / $BL_HZ")
		cpc=$(bl_calc '%.2f' "$ticks / $BL_HZ * 1e6 / $reqs")
	fi
	ngx=$(bl_calc '%.2f' "(${na% *} - ${nb% *} + ${na#* } - ${nb#* }) / $BL_HZ")
	wall=$(bl_calc '%.2f' "$t1 - $t0")
	printf '%s,%s,ok,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,""\n' "$rep" "$cfg" "$reqs" "$secs" "$cps" "$errs" \
		"$p50" "$p99" "$cpu" "$cpc" "$ngx" "$wall" >>"$CONN_CSV"
	R_CPS=$cps R_ERRS=$errs R_CPC=$cpc R_NGX=$(bl_calc '%.0f' "$ngx / $wall * 100")
	R_ERRKINDS=""
	((errs)) && R_ERRKINDS=" (connect $econn, read $eread, write $ewrite, status $estatus, timeout $etimeout)"
	return 0
}

# conn_one REP CONFIG — conn_rate in A through CONFIG to the echo server in B; a CSV row; 1 on
# failure. CPU: the proxies' (A + B) and the echo server's over the whole conn_rate run.
conn_one() {
	local rep=$1 cfg=$2 log out i n rc=0 before=() after=() eb ea t0 t1 ticks=0 alive=1
	log="$BL_TMP/proxy-conns-$rep-$cfg.log"
	out="$BL_TMP/conns-$rep-$cfg.txt"
	bl_alive "$ECHO_PID" || { conn_fail "$rep" "$cfg" "the echo server in B is gone"; return 1; }
	if ! bl_mesh_start "$cfg" "$BL_MESH_ECHO_PORT" "$log"; then
		conn_fail "$rep" "$cfg" "$BL_PROXY_ERR"
		return 1
	fi
	n=${#BL_PROXY_PIDS[@]}
	for ((i = 0; i < n; i++)); do before[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}"); done
	eb=$(bl_cpu_ticks "$ECHO_PID")
	t0=$(date +%s.%N)
	timeout -k 5 $((CONN_SECONDS + 30)) nsenter "--net=/run/netns/$BL_NS_A" -- "$CONN_BIN" \
		--connect "$BL_MESH_CLIENT_HOST:$BL_MESH_CLIENT_PORT" --concurrency "$CONN_CONCURRENCY" \
		--seconds "$CONN_SECONDS" --warmup 1 >"$out" 2>"$out.err" &
	local pid=$!
	bl_own "$pid"
	wait "$pid" || rc=$?
	bl_disown "$pid"
	t1=$(date +%s.%N)
	for ((i = 0; i < n; i++)); do
		after[i]=$(bl_cpu_ticks "${BL_PROXY_PIDS[i]}")
		bl_alive "${BL_PROXY_PIDS[i]}" || alive=0
	done
	ea=$(bl_cpu_ticks "$ECHO_PID")
	bl_stop_proxy
	local line
	line=$(grep '^conns=' "$out" 2>/dev/null) || true
	if ((rc)) || [[ -z $line ]]; then
		local err
		err="conn_rate rc=$rc: $(tr '\n' ' ' <"$out.err" | head -c 200)"
		((rc == 124 || rc == 137)) && err="conn_rate timed out"
		((alive)) || err="proxy died during the run ($err)"
		conn_fail "$rep" "$cfg" "$err"
		return 1
	fi
	local conns secs cps errs p50 p99 total cpu="" cpk=""
	# "conns=C seconds=S conn_per_s=R errors=E p50_us=P p99_us=Q total=N": the values, in order
	read -r conns secs cps errs p50 p99 total < <(awk '{ for (i = 1; i <= NF; i++) { sub(/^[a-z_0-9]*=/, "", $i) } print }' <<<"$line")
	for ((i = 0; i < n; i++)); do
		ticks=$((ticks + ${after[i]% *} - ${before[i]% *} + ${after[i]#* } - ${before[i]#* }))
	done
	if ((n)); then
		cpu=$(bl_calc '%.2f' "$ticks / $BL_HZ")
		cpk=$(bl_calc '%.3f' "$ticks / $BL_HZ * 1000 / ($total > 0 ? $total : 1) * 1000")
	fi
	local echo_s wall
	echo_s=$(bl_calc '%.2f' "(${ea% *} - ${eb% *} + ${ea#* } - ${eb#* }) / $BL_HZ")
	wall=$(bl_calc '%.2f' "$t1 - $t0")
	printf '%s,%s,ok,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,""\n' "$rep" "$cfg" "$conns" "$secs" "$cps" "$errs" \
		"$p50" "$p99" "$total" "$cpu" "$cpk" "$echo_s" "$wall" >>"$CONN_CSV"
	R_CPS=$cps R_ERRS=$errs R_CPK=$cpk R_ECHO=$(bl_calc '%.0f' "$echo_s / $wall * 100")
	return 0
}

if ((NCONN)); then
	echo "conn/s pass (progress on stderr):" >&2
	i=0
	for ((rep = 1; rep <= CONN_REPS; rep++)); do
		for c in "${CONFIGS[@]}"; do
			i=$((i + 1))
			if ((!MESH)); then
				if wrk_one "$rep" "$c"; then
					txt="$R_CPS conn/s, $R_ERRS errors$R_ERRKINDS${R_CPC:+, $R_CPC CPU-us per conn}, nginx $R_NGX% of a CPU"
				else
					FAILED=1
					txt="FAILED: $(tail -n 1 "$CONN_CSV" | sed 's/.*,"\(.*\)"$/\1/')"
				fi
			elif conn_one "$rep" "$c"; then
				txt="$R_CPS conn/s, $R_ERRS errors${R_CPK:+, $R_CPK CPU-ms per 1000 conns}, echo server $R_ECHO% of a CPU"
			else
				FAILED=1
				txt="FAILED: $(tail -n 1 "$CONN_CSV" | sed 's/.*,"\(.*\)"$/\1/')"
			fi
			printf '  [%*d/%d] conns rep %d  %-17s %s\n' "${#NCONN}" "$i" "$NCONN" "$rep" "$c" "$txt" >&2
			sleep "$PAUSE"
		done
	done
fi
echo >&2

[[ -n $CSV_OUT ]] && cp -- "$CSV" "$CSV_OUT"
((NCONN)) && [[ -n $CSV_OUT ]] && cp -- "$CONN_CSV" "${CSV_OUT%.csv}-conns.csv"
((NRTT)) && [[ -n $CSV_OUT ]] && cp -- "$RTT_CSV" "${CSV_OUT%.csv}-rtt.csv"

# ---------------------------------------------------------------- summary table
((THROUGHPUT)) && awk -F, -v configs="${CONFIGS[*]}" -v streams="${STREAMS_ARR[*]}" -v dirs="${DIRS_ARR[*]}" \
	-v reps="$REPS" -v secs="$SECONDS_RUN" -v sysc="$SYSCALLS" -v sysreps="$SYS_REPS" \
	-v ncols="$NCOLS" -v pairs="${PAIRS[*]}" -v mesh="$MESH" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y) }
function grp(x,   s) { s = sprintf("%.0f", x); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
# the reference of a configuration: HAProxy in the same mode
function refof(c) { if (mesh) return (c == "hbone-captured") ? "hbone-flag" : c
	return (c ~ /-splice$/) ? "haproxy-splice" : (c == "hbone" || c == "haproxy-tls") ? "haproxy-tls" : "haproxy" }
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
		hdr = sprintf("%-18s %5s %8s %-13s %8s %9s %9s %9s", "config", "ok", "Gbit/s", "(min-max)", "xdirect",
			(mesh ? "xflag" : "xhaproxy"), "CPU-s/GB", (mesh ? "CPUxflag" : "CPUxhap"))
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
		if (mg["hbone-flag"] != "" && mg["hbone-captured"] != "") {
			f = "hbone-flag"; k = "hbone-captured"
			printf "captured vs flag-routed: throughput %sx, CPU-s/GB %sx; captured median %.2f %s\n", \
				ratio(mg[k], mg[f]), ratio(mc[k], mc[f]), mg[k], \
				(mg[k] >= lo[f] ? sprintf("within flag-routed'"'"'s range %.2f-%.2f or above: no measurable cost", lo[f], hi[f]) \
				: sprintf("BELOW every flag-routed run (%.2f-%.2f): a measurable cost", lo[f], hi[f]))
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
	if (mesh) {
		print "xdirect: median Gbit/s / direct median (direct: iperf3 from A to B over the veth pair, no proxy)."
		print "xflag, CPUxflag: median Gbit/s and median CPU-s/GB of hbone-captured over hbone-flag."
	} else {
		print "xdirect: median Gbit/s / direct median. xhaproxy, CPUxhap: median Gbit/s and median CPU-s/GB over"
		print "HAProxy in the same mode (copy configurations vs haproxy, -splice ones vs haproxy-splice,"
		print "hbone vs haproxy-tls)."
	}
	print "CPU-s/GB: proxy utime+stime (all threads and processes) per 1e9 bytes received by iperf3;"
	print "for a tunnel (" (np ? pairs : "hbone, haproxy-tls") ") the sum of its two processes, A (outbound) and B (inbound)."
	if (sysc != "") {
		print "syscalls/GB: median of " sysreps " separate run(s) per cell under " sysc " (only the counts are used from them);"
		print "for a tunnel A / B, each process on its own (the target for hbone: <= 2,000 each). Forward, A carries"
		print "the data TCP->tunnel and B tunnel->TCP; reverse, the other way round."
	}
}' "$CSV"

# ---------------------------------------------------------------- conn/s summary (--mesh)
((NCONN && MESH)) && echo && awk -F, -v configs="${CONFIGS[*]}" -v reps="$CONN_REPS" -v secs="$CONN_SECONDS" -v conc="$CONN_CONCURRENCY" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y) }
function med(arr, c, cnt,   k, w) { for (k = 1; k <= cnt; k++) w[k] = arr[c, k] + 0; return median(w, cnt) }
NR == 1 { next }
{
	c = $2; n[c]++
	err = $0; for (k = 1; k < 15; k++) sub(/^[^,]*,/, "", err); gsub(/^"|"$/, "", err)
	if ($3 != "ok") { if (!(c in ferr)) ferr[c] = err; next }
	m = ++ok[c]; cps[c, m] = $6; p50[c, m] = $8; p99[c, m] = $9; errs[c] += $7
	if ($12 != "") cpk[c, m] = $12
	e = ($14 > 0) ? $13 / $14 * 100 : 0; if (e > emax[c]) emax[c] = e
}
END {
	nc = split(configs, C, " ")
	printf "== new connections per second: conn_rate, %d concurrent clients, each connect, 16 bytes, echo, close\n", conc
	printf "   (%d rep%s x %d s after 1 s of warm-up; median, min-max of the reps)\n", reps, (reps == 1 ? "" : "s"), secs
	printf "%-18s %5s %9s %-17s %8s %6s %8s %8s %12s %7s %9s\n", "config", "ok", "conn/s", "(min-max)", "xdirect", "xflag", \
		"p50 ms", "p99 ms", "CPU-ms/kconn", "errors", "echo CPU"
	for (i = 1; i <= nc; i++) {
		c = C[i]; mcps[c] = ""
		if (ok[c] > 0) {
			mcps[c] = med(cps, c, ok[c]); lo[c] = hi[c] = cps[c, 1] + 0
			for (k = 2; k <= ok[c]; k++) { if (cps[c, k] + 0 < lo[c]) lo[c] = cps[c, k] + 0; if (cps[c, k] + 0 > hi[c]) hi[c] = cps[c, k] + 0 }
		}
	}
	for (i = 1; i <= nc; i++) {
		c = C[i]; okt = sprintf("%d/%d", ok[c] + 0, n[c] + 0)
		if (mcps[c] == "") { printf "%-18s %5s FAILED: %s\n", c, okt, ferr[c]; continue }
		printf "%-18s %5s %9.0f %-17s %8s %6s %8.2f %8.2f %12s %7d %8.0f%%%s\n", c, okt, mcps[c], sprintf("(%.0f-%.0f)", lo[c], hi[c]), \
			(c == "direct" ? "-" : ratio(mcps[c], mcps["direct"])), (c == "hbone-captured" ? ratio(mcps[c], mcps["hbone-flag"]) : "-"), \
			med(p50, c, ok[c]) / 1000, med(p99, c, ok[c]) / 1000, (c == "direct" ? "-" : sprintf("%.1f", med(cpk, c, ok[c]))), \
			errs[c], emax[c], (ok[c] < n[c] ? "   (failed: " ferr[c] ")" : "")
	}
	if (mcps["hbone-flag"] != "" && mcps["hbone-captured"] != "") {
		r = mcps["hbone-captured"] / mcps["hbone-flag"]
		printf "target: captured conn/s %.2fx flag-routed (within 10%%, >= 0.90: %s)\n", r, (r >= 0.9 ? "met" : "MISSED")
	}
	print "xdirect, xflag: median conn/s over direct'"'"'s and over hbone-flag'"'"'s. p50/p99: latency from connect() to the"
	print "last echoed byte (medians of the reps). CPU-ms/kconn: CPU of A + B per 1000 connections (warm-up"
	print "included). echo CPU: the echo server'"'"'s CPU over the run, highest of the reps (100% = one CPU; it has one"
	print "thread per CPU): well below that, it is not what limits conn/s."
}' "$CONN_CSV"

# ---------------------------------------------------------------- round-trip summary (--rtt)
# (sortn, median, ratio and refof as in the throughput table)
((NRTT)) && { ((THROUGHPUT)) && echo; awk -F, -v configs="${CONFIGS[*]}" -v reps="$RTT_REPS" -v secs="$RTT_SECONDS" -v size="$RTT_BYTES" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y) }
function refof(c) { return (c ~ /-splice$/) ? "haproxy-splice" : (c == "hbone" || c == "haproxy-tls") ? "haproxy-tls" : "haproxy" }
function med(arr, c, cnt,   k, w) { for (k = 1; k <= cnt; k++) w[k] = arr[c, k] + 0; return median(w, cnt) }
NR == 1 { next }
{
	c = $2; n[c]++
	err = $0; for (k = 1; k < 9; k++) sub(/^[^,]*,/, "", err); gsub(/^"|"$/, "", err)
	if ($3 != "ok") { if (!(c in ferr)) ferr[c] = err; next }
	m = ++ok[c]; p50[c, m] = $4; p99[c, m] = $5
}
END {
	nc = split(configs, C, " ")
	printf "== round trip of %d-byte messages: sockperf ping-pong --tcp --full-rtt, one connection, one message in flight\n", size
	printf "   (%d rep%s x %d s; medians of the reps'"'"' p50 and p99, min-max of the reps'"'"' p50)\n", reps, (reps == 1 ? "" : "s"), secs
	printf "%-18s %5s %8s %-15s %8s %8s %8s %10s\n", "config", "ok", "p50 us", "(min-max)", "p99 us", "p50xhap", "p99xhap", "p50-direct"
	for (i = 1; i <= nc; i++) {
		c = C[i]; m50[c] = ""; m99[c] = ""
		if (ok[c] > 0) {
			m50[c] = med(p50, c, ok[c]); m99[c] = med(p99, c, ok[c]); lo[c] = hi[c] = p50[c, 1] + 0
			for (k = 2; k <= ok[c]; k++) { if (p50[c, k] + 0 < lo[c]) lo[c] = p50[c, k] + 0; if (p50[c, k] + 0 > hi[c]) hi[c] = p50[c, k] + 0 }
		}
	}
	for (i = 1; i <= nc; i++) {
		c = C[i]; okt = sprintf("%d/%d", ok[c] + 0, n[c] + 0); ref = refof(c)
		if (m50[c] == "") { printf "%-18s %5s FAILED: %s\n", c, okt, ferr[c]; continue }
		noref = (c == ref || c == "direct")
		printf "%-18s %5s %8.1f %-15s %8.1f %8s %8s %10s%s\n", c, okt, m50[c], sprintf("(%.1f-%.1f)", lo[c], hi[c]), m99[c], \
			(noref ? "-" : ratio(m50[c], m50[ref])), (noref ? "-" : ratio(m99[c], m99[ref])), \
			(c == "direct" || m50["direct"] == "" ? "-" : sprintf("%+.1f", m50[c] - m50["direct"])), \
			(ok[c] < n[c] ? "   (failed: " ferr[c] ")" : "")
	}
	print "p50, p99: the 50th and 99th percentiles of a run'"'"'s round-trip times (sockperf'"'"'s, in microseconds), median"
	print "of the reps. p50xhap, p99xhap: over HAProxy'"'"'s in the same mode (copy configurations vs haproxy, -splice"
	print "ones vs haproxy-splice, hbone vs haproxy-tls; lower is better). p50-direct: median p50 less direct'"'"'s, the"
	print "time the proxy adds (it can come out negative: the round trip is mostly the processes'"'"' wake-ups)."
}' "$RTT_CSV"; }

# ---------------------------------------------------------------- conn/s summary (--conn-rate)
((NCONN && !MESH)) && { ((THROUGHPUT || NRTT)) && echo; awk -F, -v configs="${CONFIGS[*]}" -v reps="$CONN_REPS" -v secs="$CONN_SECONDS" \
	-v conc="$CONN_CONCURRENCY" -v workers="$BL_NGINX_WORKERS" -v size="$BL_BODY_BYTES" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function ratio(x, y) { return (x == "" || y == "" || y + 0 == 0) ? "-" : sprintf("%.2f", x / y) }
function refof(c) { return (c ~ /-splice$/) ? "haproxy-splice" : (c == "hbone" || c == "haproxy-tls") ? "haproxy-tls" : "haproxy" }
function med(arr, c, cnt,   k, w) { for (k = 1; k <= cnt; k++) w[k] = arr[c, k] + 0; return median(w, cnt) }
NR == 1 { next }
{
	c = $2; n[c]++
	err = $0; for (k = 1; k < 14; k++) sub(/^[^,]*,/, "", err); gsub(/^"|"$/, "", err)
	if ($3 != "ok") { if (!(c in ferr)) ferr[c] = err; next }
	m = ++ok[c]; cps[c, m] = $6; errs[c] += $7; p50[c, m] = $8; p99[c, m] = $9
	if ($11 != "") { nk[c]++; cpc[c, nk[c]] = $11 }
	e = ($13 > 0) ? $12 / $13 * 100 : 0; if (e > emax[c]) emax[c] = e
}
END {
	nc = split(configs, C, " ")
	printf "== new connections per second: wrk -t 1 -c %d, every request with Connection: close (a new connection),\n", conc
	printf "   to nginx (%d worker, a %d-byte body); %d rep%s x %d s after 1 s of warm-up; median, min-max of the reps\n", \
		workers, size, reps, (reps == 1 ? "" : "s"), secs
	printf "%-18s %5s %9s %-17s %8s %8s %11s %8s %7s %7s %7s %6s\n", "config", "ok", "conn/s", "(min-max)", "xdirect", "xhaproxy", \
		"CPU-us/conn", "CPUxhap", "p50 ms", "p99 ms", "errors", "nginx"
	for (i = 1; i <= nc; i++) {
		c = C[i]; mcps[c] = ""; mcpc[c] = ""
		if (ok[c] > 0) {
			mcps[c] = med(cps, c, ok[c]); lo[c] = hi[c] = cps[c, 1] + 0
			for (k = 2; k <= ok[c]; k++) { if (cps[c, k] + 0 < lo[c]) lo[c] = cps[c, k] + 0; if (cps[c, k] + 0 > hi[c]) hi[c] = cps[c, k] + 0 }
		}
		if (nk[c] > 0) mcpc[c] = med(cpc, c, nk[c])
	}
	for (i = 1; i <= nc; i++) {
		c = C[i]; okt = sprintf("%d/%d", ok[c] + 0, n[c] + 0); ref = refof(c)
		if (mcps[c] == "") { printf "%-18s %5s FAILED: %s\n", c, okt, ferr[c]; continue }
		noref = (c == ref || c == "direct")
		printf "%-18s %5s %9.0f %-17s %8s %8s %11s %8s %7.2f %7.2f %7d %5.0f%%%s\n", c, okt, mcps[c], sprintf("(%.0f-%.0f)", lo[c], hi[c]), \
			(c == "direct" ? "-" : ratio(mcps[c], mcps["direct"])), (noref ? "-" : ratio(mcps[c], mcps[ref])), \
			(mcpc[c] == "" ? "-" : sprintf("%.1f", mcpc[c])), (noref ? "-" : ratio(mcpc[c], mcpc[ref])), \
			med(p50, c, ok[c]) / 1000, med(p99, c, ok[c]) / 1000, errs[c], emax[c], (ok[c] < n[c] ? "   (failed: " ferr[c] ")" : "")
	}
	print "xdirect, xhaproxy: median conn/s over direct'"'"'s and over HAProxy'"'"'s in the same mode (as above). CPU-us/conn:"
	print "CPU of the proxy'"'"'s process tree (a tunnel: A + B) per new connection in microseconds, over the measured run;"
	print "CPUxhap: over HAProxy'"'"'s (lower is better). p50/p99: wrk'"'"'s request latency (request written to answer read;"
	print "the connect is not in it), medians of the reps. errors: wrk'"'"'s (connect, read, write, timeout, non-2xx/3xx),"
	print "all reps. nginx: its CPU over the run, highest of the reps (100% = its one worker'"'"'s CPU): well below that,"
	print "nginx is not what limits conn/s."
}' "$CONN_CSV"; }

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

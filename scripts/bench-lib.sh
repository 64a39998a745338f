# shellcheck shell=bash disable=SC2034  # globals are read by the scripts that source this
# bench-lib.sh — helpers shared by bench-syscalls.sh and bench-compare.sh.
# Source it (after `set -euo pipefail`); it is not meant to be run on its own.
#
# Everything here binds and connects to 127.0.0.1 only. Every process started through
# these helpers is recorded and ended by PID (its whole process tree, children included)
# from the EXIT trap that bl_init installs, also on Ctrl-C, SIGTERM and failures.

BL_TMP=""                 # private temp dir (bl_init)
BL_KEEP_TMP=${BENCH_KEEP_TMP:-0}
BL_OWNED=()               # PIDs this script started (top of each tree)
BL_USED_PORTS=" "         # ports handed out by bl_pick_port in this run
BL_HZ=""                  # clock ticks per second (getconf CLK_TCK)
BL_PROXY_PID=""           # set by bl_start_proxy: the (first) proxy process, A for a pair
BL_PROXY_PIDS=()          # set by bl_start_proxy: every proxy process, in BL_PROXY_ROLES order
BL_PROXY_ROLES=()         # "proxy" for a single relay; "A" (outbound) "B" (inbound) for a pair
BL_PROXY_LOGS=()          # their logs
BL_PROXY_ERR=""           # reason when bl_start_proxy / bl_iperf_run fail
BL_STRACE_PIDS=()
BL_STRACE_THREADS=""
BL_PERF_PIDS=()
BL_IPERF_SRV_PID=""
BL_IPERF_SRV_PORT=""
BL_IPERF_HOST=127.0.0.1   # where bl_iperf_run's client connects (mesh mode: set per configuration)
BL_CLIENT_NS=""           # mesh mode: the namespace bl_iperf_run's client runs in (empty: this one)
BL_SOCKPERF_SRV_PID=""    # sockperf server (bl_sockperf_server_start)
BL_SOCKPERF_SRV_PORT=""
BL_NGINX_PID=""           # nginx master process, in the foreground (bl_nginx_start)
BL_NGINX_PORT=""
BL_NGINX_BIN=""           # nginx (in PATH, else /usr/sbin/nginx: not in a user's PATH)
BL_NGINX_WORKERS=1        # worker_processes of that nginx
BL_BODY_BYTES=64          # the size of the body it serves

# The proxies the scripts know. "direct" means no proxy at all (bench-compare only).
# A pair is two processes forming a mutual-TLS tunnel: A (outbound: plain TCP in, tunnel out)
# and B (inbound: tunnel in, plain TCP out to the target):
#   iperf3 -c -> A (127.0.0.1:L) -> B (127.0.0.1:B) -> iperf3 -s (127.0.0.1:T)
BL_PROXIES="ringtunnel ringtunnel-splice haproxy haproxy-splice socat hbone haproxy-tls"
BL_PAIRS="hbone haproxy-tls"
bl_is_pair() { [[ " $BL_PAIRS " == *" $1 "* ]]; }

# Mesh mode (bench-compare.sh --mesh; bl_mesh_setup): two network namespaces, hosts A and B,
# joined by a veth pair, with private addresses that exist only inside them.
BL_NS_A="" BL_NS_B=""     # their names (rtbench-<PID>-a, -b); empty: not in mesh mode
BL_NETNS=()               # namespaces this run made: bl_mesh_teardown deletes them
BL_MESH_A_IP=10.250.0.1   # host A (workload vm-a)
BL_MESH_B_IP=10.250.0.2   # host B's own address: not a workload, not captured (the direct path)
BL_MESH_B_WL=10.250.0.3   # host B's workload address (vm-b): what A's capture routes by HBONE
BL_MESH_IPERF_PORT=5201   # iperf3 -s in B, all addresses
BL_MESH_ECHO_PORT=7000    # conn_rate --serve in B, all addresses
BL_MESH_OUTBOUND=15001    # A's --outbound-listen (captured path)
BL_MESH_FORWARD=15002     # A's --forward listener (flag-routed path)
BL_MESH_HBONE=15008       # B's --hbone-listen
BL_MESH_MARK=0x539        # ringtunnel's mark in capture mode; A's rules let it through
BL_MESH_IPTABLES=""       # iptables-nft or iptables-legacy, whichever works in A
BL_MESH_CONFIG=""         # the workload config both proxies read
BL_MESH_CLIENT_HOST="" BL_MESH_CLIENT_PORT=""   # set by bl_mesh_start: where the client connects

BL_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BL_HAPROXY_NBTHREAD=2     # nbthread of every HAProxy instance

# Certificates of a pair (bl_certs_prepare): node-a for A, node-b for B, one CA.
BL_CERT_DIR=""            # from --certs; empty: scripts/gen-certs.sh makes them in BL_TMP
BL_CA="" BL_A_CRT="" BL_A_KEY="" BL_B_CRT="" BL_B_KEY=""
BL_A_PEM="" BL_B_PEM=""   # certificate + key in one file, for HAProxy's crt
BL_B_ID=""                # node-b's SPIFFE ID (URI SAN), which A expects of B

bl_log()  { printf '%s\n' "$*" >&2; }
bl_die()  { printf '%s: error: %s\n' "${BL_PROG:-bench}" "$1" >&2; exit "${2:-1}"; }
bl_usage_err() { printf '%s: %s\n(try --help)\n' "${BL_PROG:-bench}" "$1" >&2; exit 2; }

# Debian package that provides each tool we may need.
bl_pkg_of() {
	case "$1" in
	iperf3) echo iperf3 ;; haproxy) echo haproxy ;; socat) echo socat ;;
	strace) echo strace ;; jq) echo jq ;; ss) echo iproute2 ;; perf) echo linux-perf ;;
	openssl) echo openssl ;; gnuplot) echo gnuplot-nox ;;
	sockperf) echo sockperf ;; wrk) echo wrk ;; nginx) echo nginx ;;
	timeout|mktemp|sort|od) echo coreutils ;; getconf) echo libc-bin ;; awk) echo mawk ;;
	*) echo "$1" ;;
	esac
}

# bl_need TOOL... — exit 1 naming the Debian packages to install when any tool is missing.
bl_need() {
	local t missing=() pkgs=()
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || { missing+=("$t"); pkgs+=("$(bl_pkg_of "$t")"); }
	done
	if ((${#missing[@]})); then
		printf '%s: error: missing tool(s): %s\n  install with: apt-get install %s\n' \
			"${BL_PROG:-bench}" "${missing[*]}" "$(printf '%s\n' "${pkgs[@]}" | sort -u | tr '\n' ' ')" >&2
		exit 1
	fi
}

# bl_is_uint VALUE — true for a positive decimal integer.
bl_is_uint() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }

# bl_pair_labels KIND REVERSE(0|1) — sets BL_LABEL_A and BL_LABEL_B: what each side of a pair
# does with the bulk data. Forward (client sends), A turns TCP into the tunnel and B the tunnel
# into TCP; reverse (iperf3 -R), the data flows T -> B -> A, so the roles swap.
bl_pair_labels() {
	local t=HBONE
	[[ $1 == haproxy-tls ]] && t=TLS
	if (($2)); then
		BL_LABEL_A="A (outbound; data $t->TCP)"; BL_LABEL_B="B (inbound; data TCP->$t)"
	else
		BL_LABEL_A="A (outbound; data TCP->$t)"; BL_LABEL_B="B (inbound; data $t->TCP)"
	fi
}

# ---------------------------------------------------------------- set-up and clean-up
bl_init() {
	BL_HZ=$(getconf CLK_TCK)
	BL_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringtunnel-bench.XXXXXX")
	trap bl_cleanup EXIT
	trap 'bl_log "interrupted"; exit 130' INT
	trap 'bl_log "terminated"; exit 143' TERM HUP
}

bl_cleanup() {
	local rc=$? i
	trap - EXIT
	trap '' INT TERM HUP   # a second Ctrl-C must not cut the clean-up short (it is bounded)
	for ((i = ${#BL_OWNED[@]} - 1; i >= 0; i--)); do
		bl_kill_tree "${BL_OWNED[i]}" TERM 3
	done
	bl_mesh_teardown   # after the processes in the namespaces are gone
	if [[ -n $BL_TMP && -d $BL_TMP ]]; then
		if [[ $BL_KEEP_TMP == 1 ]]; then bl_log "kept temp dir $BL_TMP"; else rm -rf -- "$BL_TMP"; fi
	fi
	exit "$rc"
}

bl_own()    { BL_OWNED+=("$1"); }
bl_disown() {
	local p keep=()
	for p in "${BL_OWNED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	BL_OWNED=("${keep[@]+"${keep[@]}"}")
}

# bl_stat_fields PID — sets the array BL_F to /proc/PID/stat fields 3.. (BL_F[0] = field 3,
# state; field n is BL_F[n-3]). The comm field (2) may hold spaces and ')', so cut after the
# last ')'. Returns 1 when the process is gone.
bl_stat_fields() {
	local line
	{ read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
	line=${line##*) }
	# shellcheck disable=SC2206  # numbers and a state letter only: no globbing
	BL_F=($line)
}

# bl_tree PID — sets the array BL_TREE to PID and all of its descendants, from /proc.
# Runs in the current shell (no subshell, no fork), so it is safe inside the EXIT trap.
bl_tree() {
	local -A kids=()
	local f line pid ppid rest p
	for f in /proc/[0-9]*/stat; do
		{ read -r line <"$f"; } 2>/dev/null || continue
		pid=${f#/proc/}; pid=${pid%/stat}
		rest=${line##*) }; rest=${rest#* }; ppid=${rest%% *}
		kids[$ppid]+=" $pid"
	done
	local queue=("$1")
	BL_TREE=()
	while ((${#queue[@]})); do
		p=${queue[0]}; queue=("${queue[@]:1}")
		[[ -e /proc/$p ]] || continue
		BL_TREE+=("$p")
		# shellcheck disable=SC2206
		[[ -n ${kids[$p]:-} ]] && queue+=(${kids[$p]})
	done
	return 0
}

bl_alive() { # running and not a zombie
	bl_stat_fields "$1" || return 1
	[[ ${BL_F[0]} != Z && ${BL_F[0]} != X ]]
}

# bl_signal_wait SIGNAL GRACE_S PID... — signal the PIDs, wait up to GRACE_S until none is
# running (zombies count as gone), then SIGKILL the rest and wait up to 1 s more.
bl_signal_wait() {
	local sig=$1 grace=$2 p left i
	shift 2
	(($#)) || return 0
	for p in "$@"; do kill "-$sig" "$p" 2>/dev/null || true; done
	for ((i = 0; i < grace * 20; i++)); do
		left=0
		for p in "$@"; do bl_alive "$p" && left=1 && break; done
		((left)) || return 0
		sleep 0.05
	done
	for p in "$@"; do bl_alive "$p" && { kill -KILL "$p" 2>/dev/null || true; }; done
	for ((i = 0; i < 20; i++)); do
		left=0
		for p in "$@"; do bl_alive "$p" && left=1 && break; done
		((left)) || return 0
		sleep 0.05
	done
	return 0
}

# bl_kill_tree PID SIGNAL GRACE_S — end PID and its descendants: the descendants first (so
# that PID, e.g. socat's listener, can still reap them), then PID; SIGNAL, then SIGKILL after
# GRACE_S. Reaps PID if it is our child, but never waits for a live process (cannot hang).
bl_kill_tree() {
	local root=$1 sig=${2:-TERM} grace=${3:-3} desc=() p i
	bl_tree "$root"
	for p in "${BL_TREE[@]+"${BL_TREE[@]}"}"; do [[ $p == "$root" ]] || desc+=("$p"); done
	if ((${#desc[@]})); then
		bl_signal_wait "$sig" "$grace" "${desc[@]}"
		# let the parent reap them (a zombie reparented to an init that does not reap stays)
		for ((i = 0; i < 10; i++)); do
			bl_tree "$root"; ((${#BL_TREE[@]} <= 1)) && break; sleep 0.05
		done
	fi
	bl_signal_wait "$sig" "$grace" "$root"
	if bl_alive "$root"; then
		bl_log "warning: PID $root survived SIGKILL"
	else
		wait "$root" 2>/dev/null || true
	fi
	bl_disown "$root"
	return 0
}

# ---------------------------------------------------------------- CPU accounting
# bl_cpu_ticks PID — CPU time of PID's whole process tree in clock ticks: for every process
# in the tree utime+stime (fields 14, 15: all threads of it, io_uring io-wq workers included)
# plus cutime+cstime (16, 17: children that have exited and been reaped, e.g. socat's
# per-connection processes). Each tick is counted once: a child is either alive (or a
# zombie) in the tree, or already folded into its parent's cutime/cstime.
# Prints "USER SYS" (ticks).
bl_cpu_ticks() {
	local user=0 sys=0 p
	bl_tree "$1"
	for p in "${BL_TREE[@]+"${BL_TREE[@]}"}"; do
		bl_stat_fields "$p" || continue
		user=$((user + BL_F[11] + BL_F[13]))
		sys=$((sys + BL_F[12] + BL_F[14]))
	done
	echo "$user $sys"
}

# bl_settle_children PID MAX_S — wait (up to MAX_S) until PID has no child processes left,
# so that per-connection children (socat) are finished and reaped before the CPU sample.
bl_settle_children() {
	local i
	for ((i = 0; i < ${2:-2} * 20; i++)); do
		bl_tree "$1"
		((${#BL_TREE[@]} <= 1)) && return 0
		sleep 0.05
	done
	return 0
}

# ---------------------------------------------------------------- ports
# bl_listening PORT [NETNS] — something listens on PORT (in network namespace NETNS if given).
bl_listening() {
	local in_ns=()
	[[ -n ${2:-} ]] && in_ns=(-N "$2")
	[[ -n $(ss "${in_ns[@]+"${in_ns[@]}"}" -Hltn "sport = :$1" 2>/dev/null) ]]
}

# bl_pick_port — a free TCP port on 127.0.0.1, below the default ephemeral range. Called as
# $(bl_pick_port) its BL_USED_PORTS bookkeeping is lost with the subshell, so a port picked but
# not yet listening can be picked again: bl_start_proxy keeps a pair's ports apart itself.
bl_pick_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
		[[ $BL_USED_PORTS == *" $p "* ]] && continue
		bl_listening "$p" && continue
		BL_USED_PORTS+="$p "
		echo "$p"; return 0
	done
	bl_die "no free port found"
}

# bl_wait_listen PORT PID TIMEOUT_S [NETNS] — until something listens on PORT (in NETNS if
# given); fails if PID dies.
bl_wait_listen() {
	local port=$1 pid=$2 i
	for ((i = 0; i < ${3:-5} * 20; i++)); do
		bl_alive "$pid" || return 1
		bl_listening "$port" "${4:-}" && return 0
		sleep 0.05
	done
	return 1
}

# ---------------------------------------------------------------- iperf3
# bl_iperf_server_start — iperf3 -s on a fresh port of 127.0.0.1 (BL_IPERF_SRV_PORT); in mesh
# mode (bl_mesh_setup done), on port BL_MESH_IPERF_PORT of every address of host B instead.
bl_iperf_server_start() {
	local port log bind=(-B 127.0.0.1) pre=()
	if [[ -n $BL_NS_B ]]; then
		port=$BL_MESH_IPERF_PORT bind=() pre=(nsenter "--net=/run/netns/$BL_NS_B" --)
	else
		port=$(bl_pick_port)
	fi
	log="$BL_TMP/iperf3-server-$port.log"
	"${pre[@]+"${pre[@]}"}" iperf3 -s "${bind[@]+"${bind[@]}"}" -p "$port" >"$log" 2>&1 &
	BL_IPERF_SRV_PID=$!
	bl_own "$BL_IPERF_SRV_PID"
	if ! bl_wait_listen "$port" "$BL_IPERF_SRV_PID" 5 "$BL_NS_B"; then
		tail -n 5 "$log" >&2 || true
		bl_die "iperf3 server did not start on port $port${BL_NS_B:+ in $BL_NS_B}"
	fi
	BL_IPERF_SRV_PORT=$port
}

bl_iperf_server_restart() {
	[[ -n $BL_IPERF_SRV_PID ]] && bl_kill_tree "$BL_IPERF_SRV_PID" TERM 2
	bl_iperf_server_start
}

# bl_iperf_run PORT SECONDS STREAMS REVERSE(0|1) JSON_OUT — iperf3 client towards
# BL_IPERF_HOST:PORT (127.0.0.1 unless mesh mode sets it; in namespace BL_CLIENT_NS if set),
# bounded by `timeout`. Returns non-zero with BL_PROXY_ERR set on failure.
# Run in the background and `wait`ed, so Ctrl-C is handled at once.
bl_iperf_run() {
	local port=$1 secs=$2 streams=$3 rev=$4 out=$5 pid rc=0 args=() pre=()
	((rev)) && args+=(-R)
	[[ -n $BL_CLIENT_NS ]] && pre=(nsenter "--net=/run/netns/$BL_CLIENT_NS" --)
	timeout -k 5 $((secs + 30)) "${pre[@]+"${pre[@]}"}" iperf3 -c "$BL_IPERF_HOST" -p "$port" -t "$secs" -P "$streams" \
		"${args[@]+"${args[@]}"}" -J --connect-timeout 5000 >"$out" 2>"$out.err" &
	pid=$!
	bl_own "$pid"
	wait "$pid" || rc=$?
	bl_disown "$pid"
	BL_PROXY_ERR=""
	if ((rc == 124 || rc == 137)); then
		BL_PROXY_ERR="iperf3 timed out"; return 1
	fi
	local err
	err=$(jq -r '.error // empty' "$out" 2>/dev/null) || { BL_PROXY_ERR="iperf3 rc=$rc, no JSON output: $(head -c 200 "$out.err")"; return 1; }
	if [[ -n $err ]]; then BL_PROXY_ERR="iperf3: $err"; return 1; fi
	if ((rc != 0)); then BL_PROXY_ERR="iperf3 rc=$rc: $(head -c 200 "$out.err")"; return 1; fi
	return 0
}

# bl_iperf_result JSON — prints "BYTES SECONDS" (receiver side: end.sum_received).
bl_iperf_result() {
	jq -r '"\(.end.sum_received.bytes) \(.end.sum_received.seconds)"' "$1"
}

# ---------------------------------------------------------------- sockperf (round-trip time)
# bl_sockperf_server_start — `sockperf server --tcp` on a fresh port of 127.0.0.1
# (BL_SOCKPERF_SRV_PORT): it echoes every message back on the connection it came in on.
bl_sockperf_server_start() {
	local port log
	port=$(bl_pick_port)
	log="$BL_TMP/sockperf-server-$port.log"
	sockperf server --tcp -i 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
	BL_SOCKPERF_SRV_PID=$!
	bl_own "$BL_SOCKPERF_SRV_PID"
	if ! bl_wait_listen "$port" "$BL_SOCKPERF_SRV_PID" 5; then
		tail -n 5 "$log" >&2 || true
		bl_die "sockperf server did not start on 127.0.0.1:$port"
	fi
	BL_SOCKPERF_SRV_PORT=$port
}

bl_sockperf_server_restart() {
	[[ -n $BL_SOCKPERF_SRV_PID ]] && bl_kill_tree "$BL_SOCKPERF_SRV_PID" TERM 2
	bl_sockperf_server_start
}

# bl_sockperf_run PORT SECONDS MSG_BYTES OUT — `sockperf ping-pong --tcp --full-rtt` towards
# 127.0.0.1:PORT: one connection, one message of MSG_BYTES in flight at a time, each
# answered before the next is sent; bounded by `timeout`. Its report goes to OUT. Returns
# non-zero with BL_PROXY_ERR set on failure. Run in the background and `wait`ed (Ctrl-C).
bl_sockperf_run() {
	local port=$1 secs=$2 size=$3 out=$4 pid rc=0
	timeout -k 5 $((secs + 30)) sockperf ping-pong --tcp -i 127.0.0.1 -p "$port" -m "$size" \
		-t "$secs" --full-rtt >"$out" 2>&1 </dev/null &
	pid=$!
	bl_own "$pid"
	wait "$pid" || rc=$?
	bl_disown "$pid"
	BL_PROXY_ERR=""
	if ((rc == 124 || rc == 137)); then BL_PROXY_ERR="sockperf timed out"; return 1; fi
	if ((rc != 0)); then
		BL_PROXY_ERR="sockperf rc=$rc: $(grep -iE 'error|fail|refused|abort' "$out" | head -n 2 | tr '\n' ' ' | head -c 200)"
		return 1
	fi
	return 0
}

# bl_sockperf_result FILE — prints "P50 P99 AVG MAX OBSERVATIONS" (µs, round trip) from a
# sockperf ping-pong --full-rtt report, whose lines (3.7) read, among others:
#   sockperf: Summary: Round trip is 19.573 usec
#   sockperf: Total 242519 observations; each percentile contains 2425.19 observations
#   (some with ANSI colour codes around them)
#   sockperf: ---> <MAX> observation = 2069.417
#   sockperf: ---> percentile 99.000 =   30.386
#   sockperf: ---> percentile 50.000 =   18.539
# The figures are found by their words, not their place; fails (1, with a reason on stdout)
# when the report is not a round-trip one, lacks a percentile, or saw no observation.
bl_sockperf_result() {
	awk '
	BEGIN { color = sprintf("%c", 27) "\\[[0-9;]*m" }   # sockperf colours some lines
	{ gsub(color, ""); sub(/^sockperf: */, "") }
	/Round trip is/ { rt = 1; for (i = 1; i <= NF; i++) if ($i == "is") avg = $(i + 1) }
	/^Total [0-9]+ observations/ { obs = $2 }
	/^---> +<MAX> +observation/ { mx = $NF }
	/^---> +percentile +/ { p = $3 + 0; if (p == 50) p50 = $NF; else if (p == 99) p99 = $NF }
	END {
		if (!rt) { print "no \"Round trip is\" line (not a --full-rtt report?)"; exit 1 }
		if (obs + 0 == 0) { print "no observations"; exit 1 }
		if (p50 == "" || p99 == "") { print "no 50th or 99th percentile line"; exit 1 }
		print p50, p99, avg, mx, obs
	}' "$1"
}

# ---------------------------------------------------------------- nginx + wrk (new connections)
# bl_nginx_start — nginx in the foreground (daemon off: the PID is the master's, and its
# workers are its children, so bl_cpu_ticks counts them and bl_kill_tree ends them), on a
# fresh port of 127.0.0.1 (BL_NGINX_PORT): BL_NGINX_WORKERS worker process(es), every request
# answered 200 with a body of BL_BODY_BYTES bytes (no file read), no access log. Its config,
# pid file, logs and temp directories are in BL_TMP/nginx; as root its worker runs as nobody.
# The config is checked with nginx -t first, so a bad one is a clear error.
bl_nginx_start() {
	local port dir=$BL_TMP/nginx user="" body
	port=$(bl_pick_port)
	mkdir -p "$dir/logs" "$dir/temp"
	((EUID == 0)) && user="user nobody $(id -gn nobody 2>/dev/null || echo nogroup);"
	body=$(printf '%*s' "$((BL_BODY_BYTES - 1))" '' | tr ' ' x)
	cat >"$dir/nginx.conf" <<-EOF
		# generated by ${BL_PROG:-bench}: the server of the new-connections pass
		worker_processes $BL_NGINX_WORKERS;
		daemon off;
		pid $dir/nginx.pid;
		error_log $dir/logs/error.log warn;
		$user
		events {
		    worker_connections 4096;
		}
		http {
		    access_log off;
		    client_body_temp_path $dir/temp/body;
		    proxy_temp_path $dir/temp/proxy;
		    fastcgi_temp_path $dir/temp/fastcgi;
		    uwsgi_temp_path $dir/temp/uwsgi;
		    scgi_temp_path $dir/temp/scgi;
		    server {
		        listen 127.0.0.1:$port backlog=4096;
		        location / {
		            default_type text/plain;
		            return 200 "$body\n";
		        }
		    }
		}
	EOF
	local nginx=("$BL_NGINX_BIN" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/logs/error.log")
	timeout 10 "${nginx[@]}" -t -q >"$dir/check.log" 2>&1 ||
		bl_die "nginx -t refused $dir/nginx.conf: $(tr '\n' ' ' <"$dir/check.log" | head -c 300)"
	"${nginx[@]}" >"$dir/stdout.log" 2>&1 </dev/null &
	BL_NGINX_PID=$!
	bl_own "$BL_NGINX_PID"
	if ! bl_wait_listen "$port" "$BL_NGINX_PID" 5; then
		tail -n 5 "$dir/logs/error.log" "$dir/stdout.log" >&2 2>/dev/null || true
		bl_die "nginx did not start on 127.0.0.1:$port"
	fi
	BL_NGINX_PORT=$port
}

bl_nginx_restart() {
	[[ -n $BL_NGINX_PID ]] && bl_kill_tree "$BL_NGINX_PID" TERM 3
	bl_nginx_start
}

# bl_wrk_script FILE — a wrk Lua script whose done() prints one line of figures:
#   wrk: requests=N duration_us=D errors=E connect=.. read=.. write=.. status=.. timeout=.. p50_us=P p99_us=Q
# (errors: the sum of the five kinds; status: responses other than 2xx/3xx), so nothing
# depends on the layout of wrk's own report.
bl_wrk_script() {
	cat >"$1" <<-'EOF'
		-- generated by bench-compare.sh: one line of figures at the end of the run
		done = function(summary, latency, requests)
		  local e = summary.errors
		  io.write(string.format("wrk: requests=%.0f duration_us=%.0f errors=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
		    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
		    e.connect, e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
		end
	EOF
}

# bl_wrk_run PORT SECONDS CONNS OUT [SCRIPT] — wrk, one thread, CONNS connections, each
# request with `Connection: close` (so every request is a new TCP connection: nginx closes
# after answering and wrk connects again), towards http://127.0.0.1:PORT/; bounded by
# `timeout`. Returns non-zero with BL_PROXY_ERR set on failure.
bl_wrk_run() {
	local port=$1 secs=$2 conns=$3 out=$4 script=${5:-} pid rc=0 args=()
	[[ -n $script ]] && args=(-s "$script")
	timeout -k 5 $((secs + 30)) wrk -t 1 -c "$conns" -d "${secs}s" --timeout 5s "${args[@]+"${args[@]}"}" \
		-H 'Connection: close' "http://127.0.0.1:$port/" >"$out" 2>&1 </dev/null &
	pid=$!
	bl_own "$pid"
	wait "$pid" || rc=$?
	bl_disown "$pid"
	BL_PROXY_ERR=""
	if ((rc == 124 || rc == 137)); then BL_PROXY_ERR="wrk timed out"; return 1; fi
	if ((rc != 0)); then BL_PROXY_ERR="wrk rc=$rc: $(tr '\n' ' ' <"$out" | head -c 200)"; return 1; fi
	return 0
}

# ---------------------------------------------------------------- certificates (pairs)
# bl_certs_prepare — find (in BL_CERT_DIR) or make (scripts/gen-certs.sh into BL_TMP) the
# certificates of a pair, write HAProxy's cert+key files, read node-b's SPIFFE ID. Call after
# bl_init. A certificate may be NAME.pem or NAME.crt (gen-certs.sh makes .crt).
bl_certs_prepare() {
	local dir=$BL_CERT_DIR f
	if [[ -z $dir ]]; then
		dir=$BL_TMP/certs
		timeout 60 "$BL_LIB_DIR/gen-certs.sh" "$dir" >"$BL_TMP/gen-certs.log" 2>&1 ||
			bl_die "scripts/gen-certs.sh $dir failed: $(tail -n 3 "$BL_TMP/gen-certs.log" | tr '\n' ' ')"
	fi
	[[ -d $dir ]] || bl_die "certificate directory not found: $dir"
	dir=$(cd "$dir" && pwd)   # absolute: the proxies read the files
	local name e var
	for name in ca node-a node-b; do
		f=""
		for e in pem crt; do [[ -f $dir/$name.$e ]] && { f=$dir/$name.$e; break; }; done
		[[ -n $f ]] || bl_die "$dir has neither $name.pem nor $name.crt (make them with scripts/gen-certs.sh DIR)"
		case $name in ca) var=BL_CA ;; node-a) var=BL_A_CRT ;; node-b) var=BL_B_CRT ;; esac
		printf -v "$var" '%s' "$f"
	done
	BL_A_KEY=$dir/node-a.key
	BL_B_KEY=$dir/node-b.key
	for f in "$BL_A_KEY" "$BL_B_KEY"; do [[ -r $f ]] || bl_die "key not found or not readable: $f"; done
	BL_A_PEM=$BL_TMP/node-a.crt+key.pem
	BL_B_PEM=$BL_TMP/node-b.crt+key.pem
	(umask 077 && cat "$BL_A_CRT" "$BL_A_KEY" >"$BL_A_PEM" && cat "$BL_B_CRT" "$BL_B_KEY" >"$BL_B_PEM")
	BL_B_ID=$(openssl x509 -in "$BL_B_CRT" -noout -ext subjectAltName 2>/dev/null |
		sed -n 's/.*URI:\(spiffe:\/\/[^, ]*\).*/\1/p' | head -n 1)
	[[ -n $BL_B_ID ]] || bl_die "no spiffe:// URI SAN in $BL_B_CRT"
}

# ---------------------------------------------------------------- proxies
# bl_haproxy_cfg FILE COMMENT SPLICE_LINES BIND SERVER — a HAProxy 2.6 mode-tcp relay: bind line
# and server line (everything after the keyword) as given.
bl_haproxy_cfg() {
	cat >"$1" <<-EOF
		# generated by ${BL_PROG:-bench}: $2, $BL_HAPROXY_NBTHREAD thread(s)
		global
		    nbthread $BL_HAPROXY_NBTHREAD
		    maxconn 4096
		${BL_HAPROXY_BUFSIZE:+    tune.bufsize $BL_HAPROXY_BUFSIZE}
		defaults
		    mode tcp
		    timeout connect 5s
		    timeout client 60s
		    timeout server 60s
		    maxconn 4096
		$3
		listen bench
		    bind $4
		    server s $5
	EOF
}

# bl_rt_ops_off — prints, one per line, the operating-listener flags (--metrics-listen,
# --readiness-listen, --admin-listen) set to off, for a ringtunnel that has them and whose
# BL_RT_EXTRA does not name them: their default ports (15020, 15021, 15000) would otherwise
# collide between the two processes of a pair, or with anything else on the machine.
bl_rt_ops_off() {
	local help f
	help=$(timeout 10 "$BL_RT_BIN" --help 2>&1 || true)
	for f in --metrics-listen --readiness-listen --admin-listen; do
		[[ $help == *"$f"* ]] || continue
		[[ " ${BL_RT_EXTRA[*]+"${BL_RT_EXTRA[*]}"} " == *" $f"[\ =]* ]] && continue
		printf '%s\n' "$f" off
	done
}


# bl_proxy_cmd KIND ROLE LPORT TPORT BPORT — fills BL_CMD with the command line and
# BL_LISTEN_PORT with the port it will listen on; haproxy configs are written into BL_TMP.
# ROLE: "proxy" for a single relay (LPORT -> TPORT), A or B for a pair (A listens on LPORT and
# tunnels to B on BPORT; B relays to TPORT). Extra ringtunnel flags come from the array
# BL_RT_EXTRA (every ringtunnel process, both sides of a pair).
bl_proxy_cmd() {
	local kind=$1 role=$2 lport=$3 tport=$4 bport=${5:-}
	BL_CMD=()
	BL_LISTEN_PORT=$lport
	[[ $role == B ]] && BL_LISTEN_PORT=$bport
	local nosplice=$'    no option splice-auto\n    no option splice-request\n    no option splice-response'
	# TLS 1.3 only, one suite, client certificates required on B and the server's checked on
	# A: HBONE's mutual-TLS handshake, ALPN h2 included (in mode tcp ALPN does not choose the
	# HTTP/2 mux: HAProxy still relays the bytes as they are).
	local tls="ca-file \"$BL_CA\" verify required ssl-min-ver TLSv1.3 ciphersuites TLS_AES_128_GCM_SHA256 alpn h2"
	local ops_off=()
	[[ $kind == ringtunnel* || $kind == hbone ]] && mapfile -t ops_off < <(bl_rt_ops_off)
	case "$kind/$role" in
	ringtunnel/proxy | ringtunnel-splice/proxy)
		BL_CMD=("$BL_RT_BIN" --forward "127.0.0.1:$lport=tcp://127.0.0.1:$tport"
			--access-log off --drain-timeout 1s)
		[[ $kind == ringtunnel-splice ]] && BL_CMD+=(--tcp-splice)
		BL_CMD+=("${ops_off[@]+"${ops_off[@]}"}" "${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		;;
	hbone/A)
		BL_CMD=("$BL_RT_BIN" --cert "$BL_A_CRT" --key "$BL_A_KEY" --ca "$BL_CA"
			--forward "127.0.0.1:$lport=hbone://127.0.0.1:$bport/127.0.0.1:$tport?identity=$BL_B_ID"
			--access-log off --drain-timeout 1s "${ops_off[@]+"${ops_off[@]}"}"
			"${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		;;
	hbone/B)
		BL_CMD=("$BL_RT_BIN" --cert "$BL_B_CRT" --key "$BL_B_KEY" --ca "$BL_CA"
			--hbone-listen "127.0.0.1:$bport" --access-log off --drain-timeout 1s
			"${ops_off[@]+"${ops_off[@]}"}" "${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		# B dials only what --allow-dest names (a build from before the flag dials anything)
		if [[ $(timeout 10 "$BL_RT_BIN" --help 2>&1 || true) == *--allow-dest* ]]; then
			BL_CMD+=(--allow-dest "127.0.0.1:$tport")
		fi
		;;
	haproxy/proxy | haproxy-splice/proxy)
		local cfg="$BL_TMP/haproxy-$kind-$lport.cfg" splice=$nosplice
		# not splice-auto: HAProxy 2.6's heuristic never spliced in iperf3 runs here
		# (strace showed only recvfrom/sendto); request+response force splice both ways.
		[[ $kind == haproxy-splice ]] && splice=$'    option splice-request\n    option splice-response'
		bl_haproxy_cfg "$cfg" "plain TCP relay" "$splice" "127.0.0.1:$lport" "127.0.0.1:$tport"
		BL_CMD=(haproxy -db -f "$cfg")
		;;
	haproxy-tls/A)
		# verifyhost: HAProxy cannot match a URI SAN; node-b's CN is the closest identity check
		local cfg="$BL_TMP/haproxy-tls-A-$lport.cfg"
		bl_haproxy_cfg "$cfg" "TLS tunnel entry (A): plain TCP in, mutual TLS 1.3 out" "$nosplice" \
			"127.0.0.1:$lport" "127.0.0.1:$bport ssl crt \"$BL_A_PEM\" $tls verifyhost node-b"
		BL_CMD=(haproxy -db -f "$cfg")
		;;
	haproxy-tls/B)
		local cfg="$BL_TMP/haproxy-tls-B-$bport.cfg"
		bl_haproxy_cfg "$cfg" "TLS tunnel exit (B): mutual TLS 1.3 in, plain TCP out" "$nosplice" \
			"127.0.0.1:$bport ssl crt \"$BL_B_PEM\" $tls" "127.0.0.1:$tport"
		BL_CMD=(haproxy -db -f "$cfg")
		;;
	socat/proxy)
		BL_CMD=(socat "TCP-LISTEN:$lport,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$tport")
		;;
	*) bl_die "unknown proxy kind '$kind' (role $role)" 2 ;;
	esac
}

# bl_start_one KIND ROLE LPORT TPORT BPORT LOG — start one process, wait until it listens.
# Appends it to BL_PROXY_PIDS/ROLES/LOGS; on failure returns 1 with BL_PROXY_ERR set and
# nothing of it left running.
bl_start_one() {
	local kind=$1 role=$2 log=$6 pid
	bl_proxy_cmd "$kind" "$role" "$3" "$4" "$5"
	local who=$kind
	[[ $role == proxy ]] || who="$kind $role"
	if [[ ${BL_CMD[0]} == haproxy ]] && ! timeout 10 haproxy -c -q -f "${BL_CMD[3]}" >"$log" 2>&1; then
		BL_PROXY_ERR="$who: haproxy config check failed: $(tr '\n' ' ' <"$log" | head -c 300)"; return 1
	fi
	printf '+ %s\n' "${BL_CMD[*]}" >"$log"
	"${BL_CMD[@]}" >>"$log" 2>&1 </dev/null &
	pid=$!
	bl_own "$pid"
	if ! bl_wait_listen "$BL_LISTEN_PORT" "$pid" 10; then
		local how="did not listen on 127.0.0.1:$BL_LISTEN_PORT within 10 s"
		bl_alive "$pid" || how="exited at start-up"
		bl_kill_tree "$pid" TERM 2
		BL_PROXY_ERR="$who $how: $(grep -v '^+ ' "$log" | tail -n 3 | tr '\n' ' ' | head -c 300)"
		return 1
	fi
	BL_PROXY_PIDS+=("$pid"); BL_PROXY_ROLES+=("$role"); BL_PROXY_LOGS+=("$log")
	return 0
}

# bl_start_proxy KIND LPORT TPORT LOG — start it (a pair: B first, on a port of its own, then A;
# their logs are LOG with .A/.B before the extension), wait until it listens. Sets BL_PROXY_PID
# (A for a pair) and BL_PROXY_PIDS/ROLES/LOGS; on failure returns 1 with BL_PROXY_ERR set (and
# nothing left running).
bl_start_proxy() {
	local kind=$1 lport=$2 tport=$3 log=$4 bport
	BL_PROXY_PID=""; BL_PROXY_ERR=""; BL_PROXY_PIDS=(); BL_PROXY_ROLES=(); BL_PROXY_LOGS=()
	if ! bl_is_pair "$kind"; then
		bl_start_one "$kind" proxy "$lport" "$tport" "" "$log" || return 1
	else
		bport=$(bl_pick_port)
		while [[ $bport == "$lport" || $bport == "$tport" ]]; do bport=$(bl_pick_port); done
		bl_start_one "$kind" B "$lport" "$tport" "$bport" "${log%.log}.B.log" || return 1
		if ! bl_start_one "$kind" A "$lport" "$tport" "$bport" "${log%.log}.A.log"; then
			local err=$BL_PROXY_ERR
			bl_stop_proxy
			BL_PROXY_ERR=$err
			return 1
		fi
		# A first from here on: the order of BL_PROXY_ROLES is A, B
		BL_PROXY_PIDS=("${BL_PROXY_PIDS[1]}" "${BL_PROXY_PIDS[0]}")
		BL_PROXY_ROLES=(A B)
		BL_PROXY_LOGS=("${BL_PROXY_LOGS[1]}" "${BL_PROXY_LOGS[0]}")
	fi
	BL_PROXY_PID=${BL_PROXY_PIDS[0]}
	return 0
}

# bl_stop_proxy — SIGTERM (ringtunnel drains for at most --drain-timeout 1s), then SIGKILL;
# every process of the proxy, in order (A before B).
# bl_proxy_or_direct CONFIG SERVER_PORT LOG — where a pass's client connects: SERVER_PORT itself
# for direct, else a new port on which CONFIG is started towards SERVER_PORT (bl_start_proxy).
# Sets BL_PORT and BL_PROXY_PIDS (empty for direct); on failure returns 1 with BL_PROXY_ERR set.
bl_proxy_or_direct() {
	BL_PROXY_PIDS=()
	if [[ $1 == direct ]]; then
		BL_PORT=$2
		return 0
	fi
	BL_PORT=$(bl_pick_port)
	bl_start_proxy "$1" "$BL_PORT" "$2" "$3"
}

bl_stop_proxy() {
	local p
	for p in "${BL_PROXY_PIDS[@]+"${BL_PROXY_PIDS[@]}"}"; do bl_kill_tree "$p" TERM 5; done
	BL_PROXY_PID=""; BL_PROXY_PIDS=()
}

# bl_tls_check KIND — the mutual-TLS contract of a pair's inbound side, probed with
# openssl s_client against a throwaway B (its target a port nothing listens on, so no probe
# reaches iperf3): (1) a client without a certificate must be refused; (2) with node-a's
# certificate the handshake must succeed, B's certificate verify against the CA (protocol and
# suite are printed; haproxy-tls must give TLS 1.3 TLS_AES_128_GCM_SHA256); for haproxy-tls,
# (3) a client offering only TLS_AES_256_GCM_SHA384 must be refused. One line per probe;
# returns 1 when the contract is broken. Bounded: 5 s per probe.
bl_tls_check() {
	local kind=$1 dead out rc=0 src log="$BL_TMP/tls-check-$1.log" proto suite verif
	dead=$(bl_pick_port)
	BL_PROXY_PIDS=(); BL_PROXY_ROLES=(); BL_PROXY_LOGS=()
	bl_start_one "$kind" B 0 "$dead" "$(bl_pick_port)" "$log" || { echo "  tls check: FAILED: $BL_PROXY_ERR"; return 1; }
	local s_client=(timeout -k 2 5 openssl s_client -connect "127.0.0.1:$BL_LISTEN_PORT" -CAfile "$BL_CA" -alpn h2)
	# -ign_eof: keep reading after the handshake, for TLS 1.3 reports a refused client
	# certificate only after the client has sent its Finished
	src=0; out=$("${s_client[@]}" -brief -ign_eof </dev/null 2>&1) || src=$?
	if grep -qi 'alert' <<<"$out"; then
		echo "  tls check: client without a certificate: refused ($(grep -oiE 'alert [a-z ]+[a-z]|alert number [0-9]+' <<<"$out" | head -n 1))"
	elif ((src == 124 || src == 137)); then
		echo "  tls check: client without a certificate: NOT refused (connection still open after 5 s)"; rc=1
	else
		echo "  tls check: client without a certificate: closed by B without a TLS alert: $(tr '\n' ' ' <<<"$out" | head -c 200)"
	fi
	out=$("${s_client[@]}" -cert "$BL_A_CRT" -key "$BL_A_KEY" -brief </dev/null 2>&1) || true
	proto=$(sed -n 's/^Protocol version: *//p' <<<"$out" | head -n 1)
	suite=$(sed -n 's/^Ciphersuite: *//p' <<<"$out" | head -n 1)
	verif=$(sed -n 's/^Verification: *//p' <<<"$out" | head -n 1)
	if [[ $proto == TLSv1.3 && $verif == OK && -n $suite ]]; then
		echo "  tls check: client with node-a's certificate: accepted, $proto $suite, B's certificate verified"
		if [[ $kind == haproxy-tls && $suite != TLS_AES_128_GCM_SHA256 ]]; then
			echo "  tls check: haproxy-tls must negotiate TLS_AES_128_GCM_SHA256"; rc=1
		fi
	else
		echo "  tls check: client with node-a's certificate: FAILED: $(tr '\n' ' ' <<<"$out" | head -c 300)"; rc=1
	fi
	if [[ $kind == haproxy-tls ]]; then
		out=$("${s_client[@]}" -cert "$BL_A_CRT" -key "$BL_A_KEY" -ciphersuites TLS_AES_256_GCM_SHA384 -brief </dev/null 2>&1) || true
		if grep -q '^Ciphersuite:' <<<"$out"; then
			echo "  tls check: client offering only TLS_AES_256_GCM_SHA384: NOT refused"; rc=1
		else
			echo "  tls check: client offering only TLS_AES_256_GCM_SHA384: refused ($(grep -oiE 'alert [a-z ]+[a-z]' <<<"$out" | head -n 1))"
		fi
	fi
	bl_stop_proxy
	return "$rc"
}

# ---------------------------------------------------------------- mesh mode (network namespaces)
bl_in_ns() { # bl_in_ns NETNS CMD... — CMD in the network namespace (exec'd: the PID is CMD's)
	local ns=$1
	shift
	nsenter "--net=/run/netns/$ns" -- "$@"
}

# bl_mesh_sweep — delete namespaces of earlier runs whose script was SIGKILLed (PID gone).
bl_mesh_sweep() {
	local name pid
	while read -r name _; do
		[[ $name =~ ^rtbench-([0-9]+)-[ab]$ ]] || continue
		pid=${BASH_REMATCH[1]}
		[[ -e /proc/$pid ]] && continue
		ip netns del "$name" 2>/dev/null && bl_log "deleted the namespace of a killed run: $name"
	done < <(ip netns list 2>/dev/null)
	return 0
}

# bl_mesh_setup — hosts A and B (namespaces rtbench-<PID>-a/-b, veth0 between them,
# A 10.250.0.1/24; B 10.250.0.2/24 and its workload address 10.250.0.3/24), per-namespace
# sysctls for many short connections, A's capture rules, and the workload config. Registered
# for deletion (bl_cleanup) before anything is made, so a half-made set-up is undone too.
bl_mesh_setup() {
	local h v
	((EUID == 0)) || bl_die "--mesh needs root (ip netns, veth, iptables); this runs as uid $EUID"
	bl_mesh_sweep
	BL_NS_A=rtbench-$$-a BL_NS_B=rtbench-$$-b
	for h in "$BL_NS_A" "$BL_NS_B"; do
		BL_NETNS+=("$h")
		ip netns add "$h" || bl_die "ip netns add $h failed"
		ip -n "$h" link set lo up
	done
	ip -n "$BL_NS_A" link add veth0 type veth peer name veth0 netns "$BL_NS_B" ||
		bl_die "cannot make the veth pair between $BL_NS_A and $BL_NS_B"
	{ ip -n "$BL_NS_A" link set veth0 up && ip -n "$BL_NS_B" link set veth0 up &&
		ip -n "$BL_NS_A" addr add "$BL_MESH_A_IP/24" dev veth0 &&
		ip -n "$BL_NS_B" addr add "$BL_MESH_B_IP/24" dev veth0 &&
		ip -n "$BL_NS_B" addr add "$BL_MESH_B_WL/24" dev veth0; } || bl_die "cannot address veth0 in $BL_NS_A / $BL_NS_B"
	{ ip -n "$BL_NS_A" link set veth0 mtu "${BL_MESH_MTU:-1500}" && ip -n "$BL_NS_B" link set veth0 mtu "${BL_MESH_MTU:-1500}"; } ||
		bl_die "cannot set veth0's MTU to ${BL_MESH_MTU:-1500}"
	# Many short connections (the conn/s pass): every port for the client side, and a port in
	# TIME_WAIT reused for a new outgoing connection (both per namespace; the machine's own
	# settings are untouched).
	for h in "$BL_NS_A" "$BL_NS_B"; do
		ip netns exec "$h" sysctl -qw net.ipv4.ip_local_port_range="16000 65000" net.ipv4.tcp_tw_reuse=1 >/dev/null ||
			bl_die "sysctl in $h failed"
	done
	bl_mesh_capture
	BL_MESH_CONFIG=$BL_TMP/mesh.yaml
	bl_mesh_config "$BL_MESH_CONFIG" "${BL_MESH_EXTRA_WORKLOADS:-0}"
}

# bl_mesh_probe PORT — a TCP connection from A to B's own address and PORT (uncaptured) works.
bl_mesh_probe() {
	local i
	for ((i = 0; i < 30; i++)); do
		bl_in_ns "$BL_NS_A" timeout 2 bash -c "exec 3<>/dev/tcp/$BL_MESH_B_IP/$1" 2>/dev/null && return 0
		sleep 0.1
	done
	bl_die "$BL_NS_A cannot connect to $BL_MESH_B_IP:$1 in $BL_NS_B over veth0"
}

# bl_mesh_capture — A's nat rules, as README's "Running one host of a mesh" (outbound only: B
# serves HBONE on 15008 and no plaintext inbound), plus one RETURN for B's own address, the
# direct baseline's destination, ahead of the REDIRECT. nft first, then legacy.
bl_mesh_capture() {
	local v rules
	rules="*nat
:RT_OUTPUT - [0:0]
-A OUTPUT -p tcp -j RT_OUTPUT
-A RT_OUTPUT -m mark --mark $BL_MESH_MARK/0xfff -j RETURN
-A RT_OUTPUT -o lo -j RETURN
-A RT_OUTPUT -d $BL_MESH_B_IP/32 -j RETURN
-A RT_OUTPUT -p tcp -j REDIRECT --to-ports $BL_MESH_OUTBOUND
COMMIT
"
	for v in iptables-nft iptables-legacy; do
		command -v "$v" >/dev/null || continue
		bl_in_ns "$BL_NS_A" "$v" -w 5 -t nat -S >/dev/null 2>&1 || continue
		if bl_in_ns "$BL_NS_A" "$v-restore" -w 5 --noflush <<<"$rules" 2>"$BL_TMP/iptables.err"; then
			BL_MESH_IPTABLES=$v
			# conntrack exists in A now (the nat table needs it): closed connections leave
			# it after 1 s instead of 120 s, so that the conn/s pass never fills the table
			bl_in_ns "$BL_NS_A" sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 >/dev/null 2>&1 ||
				bl_log "warning: could not shorten conntrack's TIME_WAIT in $BL_NS_A"
			return 0
		fi
	done
	bl_die "no iptables could install the capture rules in $BL_NS_A: $(head -c 300 "$BL_TMP/iptables.err" 2>/dev/null)"
}

# bl_mesh_config FILE EXTRA — the workload config (local-config format) of both hosts: vm-a
# (node-a) on A, vm-b (node-b) on B's workload address, both HBONE, no policy; plus EXTRA
# unrelated HBONE workloads (10.1.x.y) to look up among.
bl_mesh_config() {
	{
		cat <<-EOF
			# generated by ${BL_PROG:-bench} --mesh
			workloads:
			- uid: cluster1//v1/Pod/default/vm-a
			  name: vm-a
			  namespace: default
			  serviceAccount: node-a
			  workloadIps: ["$BL_MESH_A_IP"]
			  protocol: HBONE
			  services: {}
			- uid: cluster1//v1/Pod/default/vm-b
			  name: vm-b
			  namespace: default
			  serviceAccount: node-b
			  workloadIps: ["$BL_MESH_B_WL"]
			  protocol: HBONE
			  services: {}
		EOF
		awk -v n="$2" 'BEGIN { for (i = 0; i < n; i++) {
			printf "- uid: cluster1//v1/Pod/ns-%d/w-%d\n  name: w-%d\n  namespace: ns-%d\n", i % 100, i, i, i % 100
			printf "  serviceAccount: sa-%d\n  workloadIps: [\"10.1.%d.%d\"]\n  protocol: HBONE\n  services: {}\n", i % 7, int(i / 250), i % 250 + 1 } }'
		echo "services: []"
	} >"$1"
}

# bl_mesh_teardown — delete the namespaces this run made (their veth pair goes with them).
# Called by bl_cleanup after every process this script started is gone.
bl_mesh_teardown() {
	local h
	for h in "${BL_NETNS[@]+"${BL_NETNS[@]}"}"; do
		ip netns del "$h" 2>/dev/null || bl_log "warning: could not delete network namespace $h"
	done
	BL_NETNS=()
}

# bl_mesh_start_one NETNS ROLE PORT LOG CMD... — start CMD in NETNS, wait until something
# listens on PORT there; appends it to BL_PROXY_PIDS/ROLES/LOGS (on failure: 1, BL_PROXY_ERR).
bl_mesh_start_one() {
	local ns=$1 role=$2 port=$3 log=$4 pid
	shift 4
	printf '+ %s\n' "$*" >"$log"
	bl_in_ns "$ns" "$@" >>"$log" 2>&1 </dev/null &
	pid=$!
	bl_own "$pid"
	if ! bl_wait_listen "$port" "$pid" 10 "$ns"; then
		local how="did not listen on port $port in $ns within 10 s"
		bl_alive "$pid" || how="exited at start-up"
		bl_kill_tree "$pid" TERM 2
		BL_PROXY_ERR="$role $how: $(grep -v '^+ ' "$log" | tail -n 3 | tr '\n' ' ' | head -c 300)"
		return 1
	fi
	BL_PROXY_PIDS+=("$pid"); BL_PROXY_ROLES+=("$role"); BL_PROXY_LOGS+=("$log")
}

# bl_mesh_start KIND TPORT LOG — the proxies of a mesh configuration, for a server in B on
# TPORT; sets BL_MESH_CLIENT_HOST/PORT (where the client in A connects) and, as
# bl_start_proxy, BL_PROXY_PID(S)/ROLES/LOGS (A, B). KIND:
#   direct          no proxy: the client connects to B's own address (not captured)
#   hbone-flag      A: --forward 127.0.0.1:15002=hbone://<B's workload>:15008/<B's workload>:TPORT,
#                   --mark 0x539 (its HBONE connection is not captured either)
#   hbone-captured  A: --config --outbound-listen 127.0.0.1:15001; the client connects to B's
#                   workload address and A's rules redirect it
# B is the same in both: --config, --hbone-listen 0.0.0.0:15008 (admission and authorization
# by the workload config), so that the two differ only in A's capture and lookup.
bl_mesh_start() {
	local kind=$1 tport=$2 log=$3 tls_a tls_b
	BL_PROXY_PID=""; BL_PROXY_ERR=""; BL_PROXY_PIDS=(); BL_PROXY_ROLES=(); BL_PROXY_LOGS=()
	case $kind in
	direct) BL_MESH_CLIENT_HOST=$BL_MESH_B_IP BL_MESH_CLIENT_PORT=$tport; return 0 ;;
	hbone-flag) BL_MESH_CLIENT_HOST=127.0.0.1 BL_MESH_CLIENT_PORT=$BL_MESH_FORWARD ;;
	hbone-captured) BL_MESH_CLIENT_HOST=$BL_MESH_B_WL BL_MESH_CLIENT_PORT=$tport ;;
	*) bl_die "unknown mesh configuration '$kind'" 2 ;;
	esac
	tls_a=(--cert "$BL_A_CRT" --key "$BL_A_KEY" --ca "$BL_CA")
	tls_b=(--cert "$BL_B_CRT" --key "$BL_B_KEY" --ca "$BL_CA")
	local common=(--access-log off --drain-timeout 1s "${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
	bl_mesh_start_one "$BL_NS_B" B "$BL_MESH_HBONE" "${log%.log}.B.log" "$BL_RT_BIN" "${tls_b[@]}" \
		--config "$BL_MESH_CONFIG" --workload default/vm-b/node-b \
		--hbone-listen "0.0.0.0:$BL_MESH_HBONE" "${common[@]}" || return 1
	local a_cmd=("$BL_RT_BIN" "${tls_a[@]}") a_port
	if [[ $kind == hbone-flag ]]; then
		a_port=$BL_MESH_FORWARD
		a_cmd+=(--forward "127.0.0.1:$a_port=hbone://$BL_MESH_B_WL:$BL_MESH_HBONE/$BL_MESH_B_WL:$tport?identity=$BL_B_ID"
			--mark "$BL_MESH_MARK")
	else
		a_port=$BL_MESH_OUTBOUND
		a_cmd+=(--config "$BL_MESH_CONFIG" --workload default/vm-a/node-a
			--outbound-listen "127.0.0.1:$a_port")
	fi
	if ! bl_mesh_start_one "$BL_NS_A" A "$a_port" "${log%.log}.A.log" "${a_cmd[@]}" "${common[@]}"; then
		local err=$BL_PROXY_ERR
		bl_stop_proxy
		BL_PROXY_ERR=$err
		return 1
	fi
	BL_PROXY_PIDS=("${BL_PROXY_PIDS[1]}" "${BL_PROXY_PIDS[0]}")
	BL_PROXY_ROLES=(A B)
	BL_PROXY_LOGS=("${BL_PROXY_LOGS[1]}" "${BL_PROXY_LOGS[0]}")
	BL_PROXY_PID=${BL_PROXY_PIDS[0]}
}

# ---------------------------------------------------------------- syscall counters
# bl_strace_start PID OUT — `strace -c -f -p PID`: -p with -f attaches every existing thread
# of PID (strace reports "attached with N threads") and follows threads and processes
# created later (socat's fork per connection). Waits until strace has attached. Several may
# run at once (one per process of a pair); bl_strace_stop ends them all.
bl_strace_start() {
	local pid=$1 out=$2 i spid
	BL_STRACE_THREADS=""
	strace -c -f -p "$pid" -o "$out" 2>"$out.err" </dev/null &
	spid=$!
	bl_own "$spid"
	for ((i = 0; i < 200; i++)); do
		if grep -q 'attached' "$out.err" 2>/dev/null; then
			BL_STRACE_THREADS=$(sed -n 's/.*attached with \([0-9]*\) threads.*/\1/p' "$out.err" | head -n 1)
			[[ -n $BL_STRACE_THREADS ]] || BL_STRACE_THREADS=1
			BL_STRACE_PIDS+=("$spid")
			sleep 0.2
			return 0
		fi
		bl_alive "$spid" || break
		sleep 0.05
	done
	BL_PROXY_ERR="strace could not attach to PID $pid: $(head -c 300 "$out.err")"
	bl_kill_tree "$spid" KILL 1
	return 1
}

# bl_strace_stop — SIGINT makes each strace detach and write its -c table.
bl_strace_stop() {
	local p i left
	for p in "${BL_STRACE_PIDS[@]+"${BL_STRACE_PIDS[@]}"}"; do kill -INT "$p" 2>/dev/null || true; done
	for ((i = 0; i < 300; i++)); do
		left=0
		for p in "${BL_STRACE_PIDS[@]+"${BL_STRACE_PIDS[@]}"}"; do bl_alive "$p" && left=1 && break; done
		((left)) || break
		sleep 0.05
	done
	for p in "${BL_STRACE_PIDS[@]+"${BL_STRACE_PIDS[@]}"}"; do bl_kill_tree "$p" KILL 1; done
	BL_STRACE_PIDS=()
}

# bl_strace_total FILE — total calls from the "total" row of strace -c (calls = 4th column;
# the errors column is blank when zero, so count from the left).
bl_strace_total() { awk '$NF == "total" { print $4; found = 1 } END { if (!found) exit 1 }' "$1"; }

# bl_perf_start PID OUT — count raw_syscalls:sys_enter for PID (all its threads, and
# inherited by threads/processes it creates later) with perf stat. One perf per process, so
# that each process of a pair has its own count; bl_perf_stop ends them all.
bl_perf_start() {
	local pid=$1 out=$2 ppid
	perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$out" </dev/null >"$out.err" 2>&1 &
	ppid=$!
	bl_own "$ppid"
	sleep 0.3
	bl_alive "$ppid" || { BL_PROXY_ERR="perf stat failed: $(head -c 300 "$out.err")"; bl_kill_tree "$ppid" KILL 1; return 1; }
	BL_PERF_PIDS+=("$ppid")
}

bl_perf_stop() {
	local p i left
	for p in "${BL_PERF_PIDS[@]+"${BL_PERF_PIDS[@]}"}"; do kill -INT "$p" 2>/dev/null || true; done
	for ((i = 0; i < 100; i++)); do
		left=0
		for p in "${BL_PERF_PIDS[@]+"${BL_PERF_PIDS[@]}"}"; do bl_alive "$p" && left=1 && break; done
		((left)) || break
		sleep 0.05
	done
	for p in "${BL_PERF_PIDS[@]+"${BL_PERF_PIDS[@]}"}"; do bl_kill_tree "$p" KILL 1; done
	BL_PERF_PIDS=()
}

# bl_perf_total FILE — the count from perf stat -x, output ("<not counted>" -> fail).
bl_perf_total() { awk -F, '$3 ~ /raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1; f = 1 } END { if (!f) exit 1 }' "$1"; }

# ---------------------------------------------------------------- arithmetic
bl_calc() { awk "BEGIN { printf \"$1\", $2 }"; }   # bl_calc FORMAT EXPR

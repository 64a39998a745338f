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
BL_PROXY_PID=""           # set by bl_start_proxy
BL_PROXY_ERR=""           # reason when bl_start_proxy / bl_iperf_run fail
BL_STRACE_PID=""
BL_STRACE_THREADS=""
BL_PERF_PID=""
BL_IPERF_SRV_PID=""
BL_IPERF_SRV_PORT=""

# The proxies the scripts know. "direct" means no proxy at all (bench-compare only).
BL_PROXIES="ringtunnel ringtunnel-splice haproxy haproxy-splice socat"

bl_log()  { printf '%s\n' "$*" >&2; }
bl_die()  { printf '%s: error: %s\n' "${BL_PROG:-bench}" "$1" >&2; exit "${2:-1}"; }
bl_usage_err() { printf '%s: %s\n(try --help)\n' "${BL_PROG:-bench}" "$1" >&2; exit 2; }

# Debian package that provides each tool we may need.
bl_pkg_of() {
	case "$1" in
	iperf3) echo iperf3 ;; haproxy) echo haproxy ;; socat) echo socat ;;
	strace) echo strace ;; jq) echo jq ;; ss) echo iproute2 ;; perf) echo linux-perf ;;
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
bl_listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

# bl_pick_port — a free TCP port on 127.0.0.1, below the default ephemeral range.
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

# bl_wait_listen PORT PID TIMEOUT_S — until something listens on PORT; fails if PID dies.
bl_wait_listen() {
	local port=$1 pid=$2 i
	for ((i = 0; i < ${3:-5} * 20; i++)); do
		bl_alive "$pid" || return 1
		bl_listening "$port" && return 0
		sleep 0.05
	done
	return 1
}

# ---------------------------------------------------------------- iperf3
# bl_iperf_server_start — iperf3 -s on a fresh port of 127.0.0.1 (BL_IPERF_SRV_PORT).
bl_iperf_server_start() {
	local port log
	port=$(bl_pick_port)
	log="$BL_TMP/iperf3-server-$port.log"
	iperf3 -s -B 127.0.0.1 -p "$port" >"$log" 2>&1 &
	BL_IPERF_SRV_PID=$!
	bl_own "$BL_IPERF_SRV_PID"
	if ! bl_wait_listen "$port" "$BL_IPERF_SRV_PID" 5; then
		tail -n 5 "$log" >&2 || true
		bl_die "iperf3 server did not start on 127.0.0.1:$port"
	fi
	BL_IPERF_SRV_PORT=$port
}

bl_iperf_server_restart() {
	[[ -n $BL_IPERF_SRV_PID ]] && bl_kill_tree "$BL_IPERF_SRV_PID" TERM 2
	bl_iperf_server_start
}

# bl_iperf_run PORT SECONDS STREAMS REVERSE(0|1) JSON_OUT — iperf3 client towards
# 127.0.0.1:PORT, bounded by `timeout`. Returns non-zero with BL_PROXY_ERR set on failure.
# Run in the background and `wait`ed, so Ctrl-C is handled at once.
bl_iperf_run() {
	local port=$1 secs=$2 streams=$3 rev=$4 out=$5 pid rc=0 args=()
	((rev)) && args+=(-R)
	timeout -k 5 $((secs + 30)) iperf3 -c 127.0.0.1 -p "$port" -t "$secs" -P "$streams" \
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

# ---------------------------------------------------------------- proxies
# bl_proxy_cmd KIND LPORT TPORT — fills BL_CMD with the command line; haproxy configs are
# written into BL_TMP. Extra ringtunnel flags come from the array BL_RT_EXTRA.
bl_proxy_cmd() {
	local kind=$1 lport=$2 tport=$3
	BL_CMD=()
	case "$kind" in
	ringtunnel | ringtunnel-splice)
		BL_CMD=("$BL_RT_BIN" --forward "127.0.0.1:$lport=tcp://127.0.0.1:$tport"
			--access-log off --drain-timeout 1s)
		[[ $kind == ringtunnel-splice ]] && BL_CMD+=(--tcp-splice)
		BL_CMD+=("${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		;;
	haproxy | haproxy-splice)
		local cfg="$BL_TMP/haproxy-$kind-$lport.cfg" splice
		if [[ $kind == haproxy-splice ]]; then
			# not splice-auto: HAProxy 2.6's heuristic never spliced in iperf3 runs here
			# (strace showed only recvfrom/sendto); request+response force splice both ways.
			splice=$'    option splice-request\n    option splice-response'
		else
			splice=$'    no option splice-auto\n    no option splice-request\n    no option splice-response'
		fi
		cat >"$cfg" <<-EOF
			# generated by ${BL_PROG:-bench}: plain TCP relay, 2 threads (one per core)
			global
			    nbthread 2
			    maxconn 4096
			${BL_HAPROXY_BUFSIZE:+    tune.bufsize $BL_HAPROXY_BUFSIZE}
			defaults
			    mode tcp
			    timeout connect 5s
			    timeout client 60s
			    timeout server 60s
			    maxconn 4096
			$splice
			listen bench
			    bind 127.0.0.1:$lport
			    server target 127.0.0.1:$tport
		EOF
		BL_CMD=(haproxy -db -f "$cfg")
		;;
	socat)
		BL_CMD=(socat "TCP-LISTEN:$lport,bind=127.0.0.1,fork,reuseaddr" "TCP:127.0.0.1:$tport")
		;;
	*) bl_die "unknown proxy kind '$kind'" 2 ;;
	esac
}

# bl_start_proxy KIND LPORT TPORT LOG — start it, wait until it listens. Sets BL_PROXY_PID;
# on failure returns 1 with BL_PROXY_ERR set (and nothing left running).
bl_start_proxy() {
	local kind=$1 lport=$2 tport=$3 log=$4
	BL_PROXY_PID=""; BL_PROXY_ERR=""
	bl_proxy_cmd "$kind" "$lport" "$tport"
	if [[ ${BL_CMD[0]} == haproxy ]] && ! timeout 10 haproxy -c -q -f "${BL_CMD[3]}" >"$log" 2>&1; then
		BL_PROXY_ERR="haproxy config check failed: $(tr '\n' ' ' <"$log" | head -c 300)"; return 1
	fi
	printf '+ %s\n' "${BL_CMD[*]}" >"$log"
	"${BL_CMD[@]}" >>"$log" 2>&1 </dev/null &
	BL_PROXY_PID=$!
	bl_own "$BL_PROXY_PID"
	if ! bl_wait_listen "$lport" "$BL_PROXY_PID" 10; then
		local how="did not listen on 127.0.0.1:$lport within 10 s"
		bl_alive "$BL_PROXY_PID" || how="exited at start-up"
		bl_kill_tree "$BL_PROXY_PID" TERM 2
		BL_PROXY_ERR="$kind $how: $(grep -v '^+ ' "$log" | tail -n 3 | tr '\n' ' ' | head -c 300)"
		BL_PROXY_PID=""
		return 1
	fi
	return 0
}

# bl_stop_proxy — SIGTERM (ringtunnel drains for at most --drain-timeout 1s), then SIGKILL.
bl_stop_proxy() {
	[[ -n $BL_PROXY_PID ]] || return 0
	bl_kill_tree "$BL_PROXY_PID" TERM 5
	BL_PROXY_PID=""
}

# ---------------------------------------------------------------- syscall counters
# bl_strace_start PID OUT — `strace -c -f -p PID`: -p with -f attaches every existing thread
# of PID (strace reports "attached with N threads") and follows threads and processes
# created later (socat's fork per connection). Waits until strace has attached.
bl_strace_start() {
	local pid=$1 out=$2 i
	BL_STRACE_THREADS=""
	strace -c -f -p "$pid" -o "$out" 2>"$out.err" </dev/null &
	BL_STRACE_PID=$!
	bl_own "$BL_STRACE_PID"
	for ((i = 0; i < 200; i++)); do
		if grep -q 'attached' "$out.err" 2>/dev/null; then
			BL_STRACE_THREADS=$(sed -n 's/.*attached with \([0-9]*\) threads.*/\1/p' "$out.err" | head -n 1)
			[[ -n $BL_STRACE_THREADS ]] || BL_STRACE_THREADS=1
			sleep 0.2
			return 0
		fi
		bl_alive "$BL_STRACE_PID" || break
		sleep 0.05
	done
	BL_PROXY_ERR="strace could not attach to PID $pid: $(head -c 300 "$out.err")"
	bl_kill_tree "$BL_STRACE_PID" KILL 1
	return 1
}

# bl_strace_stop — SIGINT makes strace detach and write its -c table.
bl_strace_stop() {
	[[ -n $BL_STRACE_PID ]] || return 0
	kill -INT "$BL_STRACE_PID" 2>/dev/null || true
	local i
	for ((i = 0; i < 300; i++)); do bl_alive "$BL_STRACE_PID" || break; sleep 0.05; done
	bl_kill_tree "$BL_STRACE_PID" KILL 1
	BL_STRACE_PID=""
}

# bl_strace_total FILE — total calls from the "total" row of strace -c (calls = 4th column;
# the errors column is blank when zero, so count from the left).
bl_strace_total() { awk '$NF == "total" { print $4; found = 1 } END { if (!found) exit 1 }' "$1"; }

# bl_perf_start PID OUT — count raw_syscalls:sys_enter for PID (all its threads, and
# inherited by threads/processes it creates later) with perf stat.
bl_perf_start() {
	local pid=$1 out=$2
	perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -o "$out" </dev/null >"$out.err" 2>&1 &
	BL_PERF_PID=$!
	bl_own "$BL_PERF_PID"
	sleep 0.3
	bl_alive "$BL_PERF_PID" || { BL_PROXY_ERR="perf stat failed: $(head -c 300 "$out.err")"; return 1; }
}

bl_perf_stop() {
	[[ -n $BL_PERF_PID ]] || return 0
	kill -INT "$BL_PERF_PID" 2>/dev/null || true
	local i
	for ((i = 0; i < 100; i++)); do bl_alive "$BL_PERF_PID" || break; sleep 0.05; done
	bl_kill_tree "$BL_PERF_PID" KILL 1
	BL_PERF_PID=""
}

# bl_perf_total FILE — the count from perf stat -x, output ("<not counted>" -> fail).
bl_perf_total() { awk -F, '$3 ~ /raw_syscalls:sys_enter/ && $1 ~ /^[0-9]+$/ { print $1; f = 1 } END { if (!f) exit 1 }' "$1"; }

# ---------------------------------------------------------------- arithmetic
bl_calc() { awk "BEGIN { printf \"$1\", $2 }"; }   # bl_calc FORMAT EXPR

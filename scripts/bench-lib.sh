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

# The proxies the scripts know. "direct" means no proxy at all (bench-compare only).
# A pair is two processes forming a mutual-TLS tunnel: A (outbound: plain TCP in, tunnel out)
# and B (inbound: tunnel in, plain TCP out to the target):
#   iperf3 -c -> A (127.0.0.1:L) -> B (127.0.0.1:B) -> iperf3 -s (127.0.0.1:T)
BL_PROXIES="ringtunnel ringtunnel-splice haproxy haproxy-splice socat hbone haproxy-tls"
BL_PAIRS="hbone haproxy-tls"
bl_is_pair() { [[ " $BL_PAIRS " == *" $1 "* ]]; }

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
	case "$kind/$role" in
	ringtunnel/proxy | ringtunnel-splice/proxy)
		BL_CMD=("$BL_RT_BIN" --forward "127.0.0.1:$lport=tcp://127.0.0.1:$tport"
			--access-log off --drain-timeout 1s)
		[[ $kind == ringtunnel-splice ]] && BL_CMD+=(--tcp-splice)
		BL_CMD+=("${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		;;
	hbone/A)
		BL_CMD=("$BL_RT_BIN" --cert "$BL_A_CRT" --key "$BL_A_KEY" --ca "$BL_CA"
			--forward "127.0.0.1:$lport=hbone://127.0.0.1:$bport/127.0.0.1:$tport?identity=$BL_B_ID"
			--access-log off --drain-timeout 1s "${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
		;;
	hbone/B)
		BL_CMD=("$BL_RT_BIN" --cert "$BL_B_CRT" --key "$BL_B_KEY" --ca "$BL_CA"
			--hbone-listen "127.0.0.1:$bport" --access-log off --drain-timeout 1s
			"${BL_RT_EXTRA[@]+"${BL_RT_EXTRA[@]}"}")
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

#!/usr/bin/env bash
# bench-memory.sh — ringtunnel's resident memory: idle, per idle TCP connection and per idle
# HBONE stream.
#
# For every binary given (--bin, repeatable; the first is the reference), all on 127.0.0.1:
#  1. the TCP relay: one ringtunnel --forward L=tcp://127.0.0.1:T; its RSS idle, then with N
#     idle connections held open through it (a client and a server in one Python process:
#     every connection is counted when the server side has accepted it, i.e. the relay has
#     both legs open);
#  2. the HBONE tunnel: ringtunnel A (--forward L=hbone://B/T, outbound) and ringtunnel B
#     (--hbone-listen, inbound); both RSS idle, then with N idle streams (each client connection
#     to A becomes an HTTP/2 CONNECT stream in A's pooled mutual-TLS connections to B, which
#     connects to the server).
# RSS is VmRSS from /proc/PID/status, read after the connections have been open for --settle
# seconds. Bytes per connection (stream) = (RSS with N - RSS idle) / N, per process.
# shellcheck disable=SC2034  # BL_PROG, BL_KEEP_TMP, BL_CERT_DIR, BL_RT_*: read by bench-lib.sh
set -euo pipefail

BL_PROG=bench-memory.sh
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=bench-lib.sh
. "$SCRIPT_DIR/bench-lib.sh"

usage() {
	cat <<EOF
Usage: scripts/bench-memory.sh [OPTIONS] [-- RINGTUNNEL_FLAGS...]

Resident memory (VmRSS) of ringtunnel on 127.0.0.1: the idle process, the process holding N
idle TCP connections through --forward tcp://, and the two processes of an HBONE tunnel
(A: --forward hbone://, outbound; B: --hbone-listen, inbound) holding N idle streams. Prints,
per binary, the RSS figures in MiB and the bytes per connection or stream, (RSS with N - RSS
idle) / N, for each process. The targets of issue 10 are printed beside them: idle <= 16 MB
(default flags, 2 workers), <= 1 KiB per idle TCP connection, <= 4 KiB per idle HBONE stream.

The N connections come from a Python 3 client and server (two processes): the client opens
them against the proxy in batches (at most --window not yet accepted by the server at a
time), and they count once the server has accepted them (the proxy has connected its
upstream leg). Nothing is sent on them. Each needs N descriptors: the script raises its
open-files limit (ulimit -n) to N + 1024, which needs that hard limit or CAP_SYS_RESOURCE.
(ringtunnel keeps sockets in each worker's file table with --fixed-files, so the limit counts
per worker there; with --fixed-files off a TCP relay needs 2N.)

Options:
  --connections N     idle connections and idle streams to hold (default: 10000)
  --bin PATH          a ringtunnel binary; repeatable, each measured in turn, the first is
                      the reference (default: \$RINGTUNNEL, else build/ringtunnel of this
                      repository)
  --only LIST         comma-separated parts to run: tcp, hbone (default: both)
  --settle S          seconds to wait before reading RSS, idle and loaded (default: 2)
  --window N          connections opened but not yet accepted at the server, at most
                      (default: 256)
  --timeout S         seconds allowed for opening the N connections (default: 120)
  --certs DIR         certificates for the tunnel: DIR/ca, DIR/node-a (A), DIR/node-b (B),
                      as scripts/gen-certs.sh DIR makes them (default: made in the temp dir)
  --keep-tmp          keep the temp dir (logs)
  -h, --help          this text
  -- FLAGS...         appended to every ringtunnel command line (both processes of the tunnel),
                      e.g. -- --workers 2

Takes about 10 s per part and binary plus the time to open the connections.
Exit status: 0 every measurement done, 1 a proxy or the client failed (reported in its row)
or a tool is missing, 2 bad usage.
Needs: python3 openssl (for the tunnel's certificates) iproute2 (ss).
EOF
}

CONNS=10000
BINS=()
ONLY="tcp,hbone"
SETTLE=2
WINDOW=256
OPEN_TIMEOUT=120
BL_RT_EXTRA=()

need_arg() { [[ $2 -ge 2 ]] || bl_usage_err "$1 needs a value"; }
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--connections) need_arg "$1" $#; CONNS=$2; shift 2 ;;
	--connections=*) CONNS=${1#*=}; shift ;;
	--bin) need_arg "$1" $#; BINS+=("$2"); shift 2 ;;
	--bin=*) BINS+=("${1#*=}"); shift ;;
	--only) need_arg "$1" $#; ONLY=$2; shift 2 ;;
	--only=*) ONLY=${1#*=}; shift ;;
	--settle) need_arg "$1" $#; SETTLE=$2; shift 2 ;;
	--settle=*) SETTLE=${1#*=}; shift ;;
	--window) need_arg "$1" $#; WINDOW=$2; shift 2 ;;
	--window=*) WINDOW=${1#*=}; shift ;;
	--timeout) need_arg "$1" $#; OPEN_TIMEOUT=$2; shift 2 ;;
	--timeout=*) OPEN_TIMEOUT=${1#*=}; shift ;;
	--certs) need_arg "$1" $#; BL_CERT_DIR=$2; shift 2 ;;
	--certs=*) BL_CERT_DIR=${1#*=}; shift ;;
	--keep-tmp) BL_KEEP_TMP=1; shift ;;
	--) shift; BL_RT_EXTRA=("$@"); break ;;
	*) bl_usage_err "unknown option '$1'" ;;
	esac
done

{ bl_is_uint "$CONNS" && ((CONNS <= 100000)); } || bl_usage_err "--connections must be an integer 1..100000 (got '$CONNS')"
{ bl_is_uint "$WINDOW" && ((WINDOW <= 4096)); } || bl_usage_err "--window must be an integer 1..4096 (got '$WINDOW')"
bl_is_uint "$OPEN_TIMEOUT" || bl_usage_err "--timeout must be a positive integer (got '$OPEN_TIMEOUT')"
[[ $SETTLE =~ ^[0-9]+(\.[0-9]+)?$ ]] || bl_usage_err "--settle must be a number of seconds (got '$SETTLE')"
RUN_TCP=0 RUN_HBONE=0
IFS=, read -ra ONLY_ARR <<<"$ONLY"
for o in "${ONLY_ARR[@]}"; do
	case $o in
	tcp) RUN_TCP=1 ;;
	hbone) RUN_HBONE=1 ;;
	*) bl_usage_err "--only: unknown part '$o' (known: tcp, hbone)" ;;
	esac
done
((RUN_TCP || RUN_HBONE)) || bl_usage_err "--only is empty"
((${#BINS[@]})) || BINS=("${RINGTUNNEL:-$SCRIPT_DIR/../build/ringtunnel}")
for b in "${BINS[@]}"; do
	[[ -x $b ]] || bl_die "ringtunnel binary not found or not executable: $b (build it, or pass --bin PATH)"
done
tools=(python3 ss timeout awk)
((RUN_HBONE)) && tools+=(openssl)
bl_need "${tools[@]}"

# The client and the server (two processes) need N descriptors each; the proxies' sockets live
# in each worker's file table (--fixed-files), or need up to 2N (ringtunnel raises its own soft
# limit to the hard one).
NOFILE=$((CONNS + 1024))
if (($(ulimit -n) < NOFILE)); then
	if [[ $(ulimit -Hn) != unlimited ]] && (($(ulimit -Hn) < NOFILE)); then
		ulimit -Hn "$NOFILE" 2>/dev/null || bl_die "the open-files hard limit $(ulimit -Hn) is below the $NOFILE needed for $CONNS connections, and cannot be raised (no CAP_SYS_RESOURCE): lower --connections"
	fi
	ulimit -Sn "$NOFILE" || bl_die "cannot raise the open-files limit to $NOFILE"
fi

bl_init
((RUN_HBONE)) && bl_certs_prepare

# The client and server of the idle connections. Opens N connections to 127.0.0.1:CONNECT, counts
# those its server (a child process) on 127.0.0.1:LISTEN accepts, writes "ready N SECONDS" (or "error ...") to
# READY and holds everything open until killed (at most HOLD seconds).
HOLDER=$BL_TMP/hold.py
cat >"$HOLDER" <<'EOF'
import os, select, socket, sys, time

listen_port, connect_port, n, window, limit, hold, ready = (
    int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
    float(sys.argv[6]), sys.argv[7])

def report(line):
    with open(ready, "w") as f:
        f.write(line + "\n")

srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen_port))
srv.listen(4096)
# The server side in a child process, so that each process needs N descriptors, not 2N: it
# writes a byte per connection accepted into the pipe.
r, w = os.pipe()
parent = os.getpid()
if os.fork() == 0:
    os.close(r)
    served = []
    deadline = time.monotonic() + limit + hold
    srv.settimeout(1)
    # Ends with the client (killed, or failed): it must not outlive it holding the port.
    while time.monotonic() < deadline and os.getppid() == parent:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        served.append(conn)
        os.write(w, b"a")
    os._exit(0)
os.close(w)
srv.close()
clients, served = [], 0
start = time.monotonic()
pipe = select.poll()
pipe.register(r, select.POLLIN)
try:
    while served < n:
        if time.monotonic() - start > limit:
            report(f"error: {served} of {n} connections accepted by the server side after "
                   f"{limit:.0f} s ({len(clients)} opened to the proxy)")
            sys.exit(1)
        while len(clients) < n and len(clients) - served < window:
            clients.append(socket.create_connection(("127.0.0.1", connect_port), timeout=10))
        if pipe.poll(50):
            got = os.read(r, 65536)
            if not got:
                report("error: the server side ended")
                sys.exit(1)
            served += len(got)
    # A connection the proxy gave up on shows as EOF on the client side: none may have.
    time.sleep(0.2)
    check = select.poll()
    for c in clients:
        check.register(c, select.POLLIN)
    closed = len(check.poll(0))
    if closed:
        report(f"error: {closed} of {n} client connections closed or got data")
        sys.exit(1)
    report(f"ready {n} {time.monotonic() - start:.1f}")
except OSError as e:
    report(f"error: after {len(clients)} connections opened and {served} accepted: {e}")
    sys.exit(1)
time.sleep(hold)
EOF

# rss_kb PID — VmRSS of PID in kB; 0 when it is gone.
rss_kb() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { bl_calc "%.1f" "$1 / 1024"; }
per() { bl_calc "%.0f" "($2 - $1) * 1024 / $CONNS"; }   # per OLD_KB NEW_KB: bytes per connection

HOLD_PID=""
# hold LPORT TPORT — run the holder against the proxy on LPORT, its server on TPORT; returns 1
# with HOLD_ERR set when it failed.
hold() {
	local ready=$BL_TMP/ready.$1 i
	rm -f "$ready"
	python3 "$HOLDER" "$2" "$1" "$CONNS" "$WINDOW" "$OPEN_TIMEOUT" $((OPEN_TIMEOUT + 300)) "$ready" \
		>"$BL_TMP/hold.$1.log" 2>&1 </dev/null &
	HOLD_PID=$!
	bl_own "$HOLD_PID"
	for ((i = 0; i < (OPEN_TIMEOUT + 10) * 10; i++)); do
		[[ -s $ready ]] && break
		bl_alive "$HOLD_PID" || break
		sleep 0.1
	done
	HOLD_ERR=""
	if [[ ! -s $ready ]]; then
		HOLD_ERR="the client ended without a report: $(tail -n 3 "$BL_TMP/hold.$1.log" | tr '\n' ' ' | head -c 300)"
	elif [[ $(<"$ready") != ready* ]]; then
		HOLD_ERR=$(head -c 300 "$ready")
	else
		HOLD_SECS=$(awk '{ print $3 }' "$ready")
		return 0
	fi
	return 1
}
unhold() { [[ -n $HOLD_PID ]] && bl_kill_tree "$HOLD_PID" TERM 2; HOLD_PID=""; }

STATUS=0
ROWS=()
# proxies_alive — every process of the proxy still runs.
proxies_alive() {
	local p
	for p in "${BL_PROXY_PIDS[@]}"; do bl_alive "$p" || return 1; done
}

measure_tcp() {
	local bin=$1 lport tport idle loaded
	lport=$(bl_pick_port); tport=$(bl_pick_port)
	while [[ $tport == "$lport" ]]; do tport=$(bl_pick_port); done
	if ! bl_start_proxy ringtunnel "$lport" "$tport" "$BL_TMP/tcp.$lport.log"; then
		ROWS+=("$bin|tcp|FAILED: $BL_PROXY_ERR"); STATUS=1; return
	fi
	sleep "$SETTLE"
	idle=$(rss_kb "$BL_PROXY_PID")
	if ! hold "$lport" "$tport"; then
		ROWS+=("$bin|tcp|idle $(mib "$idle") MiB; FAILED with $CONNS connections: $HOLD_ERR"); STATUS=1
	else
		sleep "$SETTLE"
		loaded=$(rss_kb "$BL_PROXY_PID")
		if proxies_alive; then
			ROWS+=("$bin|tcp|idle $(mib "$idle") MiB, with $CONNS connections $(mib "$loaded") MiB: $(per "$idle" "$loaded") bytes per connection (opened in ${HOLD_SECS} s)")
		else
			ROWS+=("$bin|tcp|FAILED: the proxy died with $CONNS connections"); STATUS=1
		fi
	fi
	unhold
	bl_stop_proxy
}

measure_hbone() {
	local bin=$1 lport tport idle_a idle_b rss_a rss_b
	lport=$(bl_pick_port); tport=$(bl_pick_port)
	while [[ $tport == "$lport" ]]; do tport=$(bl_pick_port); done
	if ! bl_start_proxy hbone "$lport" "$tport" "$BL_TMP/hbone.$lport.log"; then
		ROWS+=("$bin|hbone|FAILED: $BL_PROXY_ERR"); STATUS=1; return
	fi
	sleep "$SETTLE"
	idle_a=$(rss_kb "${BL_PROXY_PIDS[0]}"); idle_b=$(rss_kb "${BL_PROXY_PIDS[1]}")
	if ! hold "$lport" "$tport"; then
		ROWS+=("$bin|hbone|idle A $(mib "$idle_a") MiB, B $(mib "$idle_b") MiB; FAILED with $CONNS streams: $HOLD_ERR"); STATUS=1
	else
		sleep "$SETTLE"
		rss_a=$(rss_kb "${BL_PROXY_PIDS[0]}"); rss_b=$(rss_kb "${BL_PROXY_PIDS[1]}")
		if proxies_alive; then
			ROWS+=("$bin|hbone|idle A $(mib "$idle_a") MiB, B $(mib "$idle_b") MiB; with $CONNS streams A $(mib "$rss_a") MiB, B $(mib "$rss_b") MiB: $(per "$idle_a" "$rss_a") bytes per stream in A, $(per "$idle_b" "$rss_b") in B (opened in ${HOLD_SECS} s)")
		else
			ROWS+=("$bin|hbone|FAILED: a proxy died with $CONNS streams"); STATUS=1
		fi
	fi
	unhold
	bl_stop_proxy
}

for bin in "${BINS[@]}"; do
	BL_RT_BIN=$bin
	bl_log "measuring $bin"
	((RUN_TCP)) && measure_tcp "$bin"
	((RUN_HBONE)) && measure_hbone "$bin"
done

echo "ringtunnel resident memory (VmRSS), $CONNS idle connections/streams, $(nproc) CPUs${BL_RT_EXTRA[*]:+, flags: ${BL_RT_EXTRA[*]}}"
echo "targets: idle <= 16 MB (default flags, 2 workers); <= 1024 bytes per idle TCP connection; <= 4096 bytes per idle HBONE stream"
for row in "${ROWS[@]}"; do
	IFS='|' read -r bin part text <<<"$row"
	printf '%-40s %-6s %s\n' "$bin" "$part" "$text"
done
exit "$STATUS"

#!/usr/bin/env bash
# bench-plot.sh — draws bench-compare.sh's table as an SVG picture with gnuplot.
#
# Usage: scripts/bench-plot.sh [--title TEXT] RUNS.csv OUT.svg
#
# RUNS.csv is the per-run CSV of bench-compare.sh (its --csv FILE; bench-compare.sh --plot
# calls this script on it). One panel per figure, each a bar chart with a group of bars per
# load (streams and direction) and a bar per configuration, in the CSV's order:
#   throughput   median Gbit/s of the throughput pass, error bars from the min to the max rep
#   CPU-s/GB     median proxy CPU seconds per 1e9 bytes (no bar for direct, which has no proxy)
#   syscalls/GB  median of the --syscalls pass (for a tunnel, its two processes summed), on a
#                log scale; only when the CSV has that pass
# Failed runs are left out; a cell with no successful run has no bar.
# Exit status: 0 drawn, 1 no gnuplot / unreadable CSV / nothing to draw / gnuplot failed,
# 2 bad usage.
set -euo pipefail

prog=bench-plot.sh
die() { printf '%s: error: %s\n' "$prog" "$1" >&2; exit "${2:-1}"; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

title="ringtunnel bench-compare"
while (($#)); do
	case "$1" in
	-h | --help) usage; exit 0 ;;
	--title) (($# >= 2)) || die "--title needs a value" 2; title=$2; shift 2 ;;
	--title=*) title=${1#*=}; shift ;;
	--) shift; break ;;
	-*) die "unknown option '$1' (try --help)" 2 ;;
	*) break ;;
	esac
done
(($# == 2)) || die "needs RUNS.csv and OUT.svg (try --help)" 2
csv=$1 out=$2
command -v gnuplot >/dev/null 2>&1 ||
	die "gnuplot not found: install it with apt-get install gnuplot-nox (or run scripts/deps.sh)"
[[ -r $csv ]] || die "cannot read the CSV '$csv'"
head -n1 -- "$csv" | grep -q '^pass,rep,streams,direction,config,status,gbps,' ||
	die "'$csv' is not a bench-compare.sh --csv file (its header is not pass,rep,streams,direction,config,status,gbps,...)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-plot.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Medians per load and configuration, one data file per figure; rows are loads, and per
# configuration one column (three for the throughput: median, min, max). NaN: no bar.
# Prints the configurations (one line), then per further figure the numbers of the
# configurations that have a bar in it (empty: no such figure).
meta=$(awk -F, -v dir="$work" '
function sortn(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function add(arr, cnt, key, v) { cnt[key]++; arr[key, cnt[key]] = v + 0 }
function med(arr, cnt, key,   k, w) { if (!(key in cnt)) return "NaN"; for (k = 1; k <= cnt[key]; k++) w[k] = arr[key, k]; return median(w, cnt[key]) }
NR == 1 { next }
$6 == "ok" {
	load = "P" $3 " " $4
	if (!(load in seenl)) { seenl[load] = 1; L[++nl] = load }
	if (!($5 in seenc)) { seenc[$5] = 1; C[++nc] = $5 }
	key = load SUBSEP $5
	if ($1 == "throughput") {
		add(g, ng, key, $7)
		if ($11 != "") { add(cpu, ncpu, key, $11); hascpu[$5] = 1 }
	} else if ($13 != "") { add(sys, nsys, key, $13); hassys[$5] = 1 }
}
END {
	if (nl == 0) exit 3
	for (li = 1; li <= nl; li++) {
		lg = "\"" L[li] "\""; lc = lg; ls = lg
		for (ci = 1; ci <= nc; ci++) {
			key = L[li] SUBSEP C[ci]
			if (key in ng) {
				lo = g[key, 1]; hi = lo
				for (k = 2; k <= ng[key]; k++) { if (g[key, k] < lo) lo = g[key, k]; if (g[key, k] > hi) hi = g[key, k] }
				lg = lg sprintf(" %.4f %.4f %.4f", med(g, ng, key), lo, hi)
			} else lg = lg " NaN NaN NaN"
			lc = lc " " med(cpu, ncpu, key)
			ls = ls " " med(sys, nsys, key)
		}
		print lg > (dir "/gbps.dat"); print lc > (dir "/cpu.dat"); print ls > (dir "/sys.dat")
	}
	for (ci = 1; ci <= nc; ci++) printf "%s%s", C[ci], (ci < nc ? " " : "\n")
	for (ci = 1; ci <= nc; ci++) if (C[ci] in hascpu) printf " %d", ci
	print ""
	for (ci = 1; ci <= nc; ci++) if (C[ci] in hassys) printf " %d", ci
	print ""
}' "$csv") || {
	rc=$?
	((rc == 3)) && die "'$csv' has no successful run to draw"
	die "cannot read '$csv' (awk exit $rc)"
}
configs=$(sed -n 1p <<<"$meta")
cpu_cols=$(sed -n 2p <<<"$meta")
sys_cols=$(sed -n 3p <<<"$meta")
[[ -n $configs ]] || die "'$csv' names no configuration"

npanels=1
[[ -n ${cpu_cols// /} ]] && npanels=$((npanels + 1))
[[ -n ${sys_cols// /} ]] && npanels=$((npanels + 1))

gq() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; } # a gnuplot string

{
	printf 'set terminal svg size 1000,%d dynamic noenhanced font "sans,11" background "white"\n' $((60 + 300 * npanels))
	printf 'set output %s\n' "$(gq "$out")"
	printf 'set datafile missing "NaN"\n'
	printf 'configs = %s\n' "$(gq "$configs")"
	printf 'nc = words(configs)\n'
	printf 'set multiplot layout %d,1 title %s\n' "$npanels" "$(gq "$title")"
	cat <<'EOF'
set style data histograms
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics
set yrange [0:*]
set xtics nomirror
set style histogram errorbars gap 2 lw 1
set title "Throughput (Gbit/s; median, bars min to max)"
set ylabel "Gbit/s"
EOF
	# A configuration has the same colour (line type i) in every figure, with or without a bar.
	printf 'plot for [i=1:nc] %s using (column(3*i-1)):(column(3*i)):(column(3*i+1)):xtic(1) lt i title word(configs, i)\n' "$(gq "$work/gbps.dat")"
	printf 'set style histogram clustered gap 2\n'
	if [[ -n ${cpu_cols// /} ]]; then
		printf 'set title "Proxy CPU (CPU-s/GB; median; a tunnel: both processes)"\nset ylabel "CPU-s/GB"\n'
		printf 'cols = "%s"\n' "$cpu_cols"
		printf 'plot for [j=1:words(cols)] %s using (column(int(word(cols, j))+1)):xtic(1) lt int(word(cols, j)) title word(configs, int(word(cols, j)))\n' "$(gq "$work/cpu.dat")"
	fi
	if [[ -n ${sys_cols// /} ]]; then
		# HAProxy makes ~100x ringtunnel's calls per GB: a linear axis would hide the small bars.
		printf 'set title "System calls (syscalls/GB, log scale; median; a tunnel: both processes)"\nset ylabel "syscalls/GB"\n'
		printf 'set logscale y\nset yrange [*:*]\n'
		printf 'cols = "%s"\n' "$sys_cols"
		printf 'plot for [j=1:words(cols)] %s using (column(int(word(cols, j))+1)):xtic(1) lt int(word(cols, j)) title word(configs, int(word(cols, j)))\n' "$(gq "$work/sys.dat")"
	fi
	printf 'unset multiplot\n'
} >"$work/plot.gp"

gnuplot "$work/plot.gp" 2>"$work/gnuplot.err" || {
	cat "$work/gnuplot.err" >&2
	die "gnuplot failed drawing '$out' from '$csv'"
}
[[ -s $work/gnuplot.err ]] && cat "$work/gnuplot.err" >&2
[[ -s $out ]] || die "gnuplot wrote nothing to '$out'"

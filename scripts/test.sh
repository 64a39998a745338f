#!/usr/bin/env bash
# Builds and tests ringtunnel twice: a release build (build/) and an ASan+UBSan build
# (build-san/). Works from any directory.
#
# Usage: scripts/test.sh [--quick] [meson test args...]
#   --quick   the release build only
#   anything else goes to `meson test` (e.g. a test name, --suite unit, -v)
#
# The last line of the output is always `N passed, N failed` (`, N skipped` when
# some were), summed over both builds; a build that fails counts as one failure.
# Exits non-zero if anything failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

quick=0
test_args=()
for arg in "$@"; do
    case $arg in
    --quick) quick=1 ;;
    *) test_args+=("$arg") ;;
    esac
done

user_args=${#test_args[@]}
passed=0
failed=0
skipped=0

log() { printf '[test] %s\n' "$*" >&2; }

summary() {
    local line="$passed passed, $failed failed"
    ((skipped > 0)) && line+=", $skipped skipped"
    printf '%s\n' "$line"
}

# shellcheck source=scripts/build-lib.sh
source "$root/scripts/build-lib.sh"

# Each build's test output, read back for its summary; removed however the script ends.
work=$(mktemp -d "${TMPDIR:-/tmp}/ringtunnel-test-sh.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The last value meson printed for a summary field ("Ok:", "Fail:", ...): the summary
# comes after every test's own output, so a test printing "Fail: 3" cannot fool this.
summary_field() { # <log> <field>
    sed -nE "s/^$2:[[:space:]]+([0-9]+).*/\\1/p" "$1" | tail -n1
}

# Builds <dir> and runs its tests; adds to passed/failed/skipped. Never exits.
run_build() { # <name> <dir> <setup args...> -- <env assignments...>
    local name=$1 dir=$2
    shift 2
    local setup=() envs=()
    while [[ $# -gt 0 && $1 != -- ]]; do
        setup+=("$1")
        shift
    done
    [[ $# -gt 0 ]] && shift
    envs=("$@")

    # "--only-targets T..." at the end of the setup arguments: build just those targets.
    local targets=()
    local i
    for i in "${!setup[@]}"; do
        if [[ ${setup[$i]} == --only-targets ]]; then
            targets=("${setup[@]:$((i + 1))}")
            setup=("${setup[@]:0:$i}")
            break
        fi
    done

    log "== $name build ($dir) =="
    if ! ensure_configured "$dir" "${setup[@]}" || ! meson compile -C "$dir" "${targets[@]}"; then
        log "$name build FAILED"
        failed=$((failed + 1))
        return 0
    fi

    local out="$work/$name.log" rc=0
    env "${envs[@]}" meson test -C "$dir" --print-errorlogs "${test_args[@]}" 2>&1 |
        tee "$out" || rc=$?

    local ok xfail fail upass skip tout
    ok=$(summary_field "$out" 'Ok')
    xfail=$(summary_field "$out" 'Expected Fail')
    fail=$(summary_field "$out" 'Fail')
    upass=$(summary_field "$out" 'Unexpected Pass')
    skip=$(summary_field "$out" 'Skipped')
    tout=$(summary_field "$out" 'Timeout')

    local bad=$((${fail:-0} + ${upass:-0} + ${tout:-0}))
    passed=$((passed + ${ok:-0} + ${xfail:-0}))
    failed=$((failed + bad))
    skipped=$((skipped + ${skip:-0}))
    if ((rc != 0 && bad == 0)); then
        # meson test itself failed (no summary, or a failure it did not count).
        log "$name: meson test exited $rc without reporting a failed test; counting one failure"
        failed=$((failed + 1))
    fi
    log "$name: ${ok:-0} ok, ${xfail:-0} expected fail, $bad failed, ${skip:-0} skipped (meson test exit $rc)"
    if ((user_args > 0 && ${ok:-0} + ${xfail:-0} + bad + ${skip:-0} == 0)); then
        log "$name: WARNING: no test ran; does the name given to meson test exist? (meson test --list)"
    fi
}

if ! pc_dir=$(scripts/deps.sh --print-pkg-config-path); then
    log "ERROR: scripts/deps.sh failed; nothing was built"
    failed=1
    summary
    exit 1
fi
export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# -Dpkg_config_path is stored in the build dir, so meson's own regeneration (after an
# edit of meson.build) finds wolfSSL even without PKG_CONFIG_PATH in the environment.
run_build release build --buildtype=release -Dpkg_config_path="$pc_dir" --

if ((quick == 0)); then
    # halt_on_error: the first report ends the test (exit code 1), so no UBSan finding
    # scrolls by as a mere warning; detect_leaks: LeakSanitizer on (ASan's default on
    # x86-64 Linux, said explicitly). -t 3: the sanitized binaries run 2-3x slower.
    test_args=(-t 3 "${test_args[@]}")
    run_build sanitize build-san \
        -Db_sanitize=address,undefined -Db_lundef=false --buildtype=debugoptimized -Dbench=false \
        -Dpkg_config_path="$pc_dir" -- \
        ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:print_summary=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1 \
        UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1:print_summary=1 \
        LSAN_OPTIONS=report_objects=1

    # The libFuzzer targets (clang), each with a short smoke run (suite 'fuzz'); only the
    # fuzz targets are built in this directory. Skipped when the caller named tests.
    if ((user_args == 0)); then
        test_args=(--suite fuzz --no-rebuild)
        CXX=clang++ CC=clang run_build fuzz build-fuzz \
            -Dfuzz=true -Dbench=false --buildtype=debugoptimized -Dpkg_config_path="$pc_dir" \
            --only-targets test/fuzz/h2_fuzz test/fuzz/authority_fuzz --
    fi
fi

summary
((failed == 0))

#!/usr/bin/env bash
# Builds ringtunnel (release, in build/) and runs it. Arguments go to ringtunnel; with
# none it starts on its embedded default. Works from any directory.
# Set-up and build output go to stderr, so ringtunnel's stdout is its own.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf '[run] %s\n' "$*" >&2; }

# Configures <dir> with the given options unless it already is, with exactly these.
# The options used are recorded in the build dir, so a second run changes nothing.
ensure_configured() {
    local dir=$1
    shift
    local want="$*" marker="$dir/.ringtunnel-setup-args"
    if [[ -f $dir/meson-private/coredata.dat && -f $dir/build.ninja ]]; then
        if [[ -f $marker && $(<"$marker") == "$want" ]]; then
            return 0
        fi
        log "$dir: configured with other options; reconfiguring with: $want"
        meson setup --reconfigure "$dir" "$@" >&2 || return 1
    else
        log "$dir: meson setup $want"
        meson setup "$dir" "$@" >&2 || return 1
    fi
    printf '%s\n' "$want" >"$marker"
}

pc_dir=$(scripts/deps.sh --print-pkg-config-path) || {
    log "ERROR: scripts/deps.sh failed"
    exit 1
}
export PKG_CONFIG_PATH="$pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"

# -Dpkg_config_path is stored in the build dir, so meson's own regeneration (after an
# edit of meson.build) finds wolfSSL even without PKG_CONFIG_PATH in the environment.
ensure_configured build --buildtype=release -Dpkg_config_path="$pc_dir"
meson compile -C build >&2

exec build/ringtunnel "$@"

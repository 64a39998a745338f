#!/usr/bin/env bash
# Builds ringtunnel (release, in build/) and runs it. Arguments go to ringtunnel; with
# none it starts on its embedded default. Works from any directory.
# Set-up and build output go to stderr, so ringtunnel's stdout is its own.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

log() { printf '[run] %s\n' "$*" >&2; }

# shellcheck source=scripts/build-lib.sh
source "$root/scripts/build-lib.sh"

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

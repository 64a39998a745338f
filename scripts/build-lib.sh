# Sourced by run.sh and test.sh: configuring a build dir only when needed.
# Expects a log() function from the sourcing script.

# Configures <dir> with the given options unless it already is, with exactly these.
# The options used are recorded in the build dir, so a second run changes nothing.
# meson's output goes to stderr.
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

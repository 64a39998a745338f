#!/usr/bin/env bash
# Sets up everything ringtunnel needs to build and test, idempotently:
#   1. the Debian packages (apt-get, only for what is missing);
#   2. wolfSSL, built ONCE from Debian's own source package with AES-NI and the
#      x86-64 assembly enabled (Debian's libwolfssl is built without them:
#      AES-128-GCM 98 MB/s instead of 2+ GB/s), into a cache outside the repo.
#
# Usage:
#   scripts/deps.sh                          set up, then print PKG_CONFIG_PATH=...
#   scripts/deps.sh --print-pkg-config-path  set up, then print only the path
#   source scripts/deps.sh                   set up, then export PKG_CONFIG_PATH
#                                            and RINGTUNNEL_WOLFSSL_PREFIX
# Progress goes to stderr, so `$(scripts/deps.sh --print-pkg-config-path)` is clean.
#
# Environment:
#   RINGTUNNEL_CACHE            cache root (default: $HOME/.cache/ringtunnel)
#   RINGTUNNEL_WOLFSSL_VERSION  Debian version of the wolfssl source package to build
#                               (default: the candidate in the system's apt lists)

# --- what we need -----------------------------------------------------------

rt_deps_packages=(
    # toolchain and libraries of the project
    build-essential g++ meson ninja-build pkg-config
    liburing-dev libnghttp2-dev libfmt-dev doctest-dev libbenchmark-dev
    # the workload config (ztunnel's local YAML format)
    libyaml-cpp-dev
    python3 iproute2 util-linux
    # the mesh tests' capture rules in network namespaces (iptables-nft and iptables-legacy)
    iptables
    # to build wolfSSL from Debian's source package
    dpkg-dev autoconf automake libtool
    # peers of the tests and benchmarks; clang for the fuzz targets
    iperf3 haproxy socat strace openssl nodejs clang libclang-rt-14-dev jq linux-perf
    # operating ringtunnel: promtool checks the metrics output (prometheus; its service is
    # disabled below), gnuplot draws bench-compare.sh --plot, systemd-analyze verifies the
    # installed unit, groff and man render the installed man page
    prometheus gnuplot-nox systemd groff-base man-db
    # bench-compare.sh --rtt (sockperf ping-pong) and --conn-rate (wrk against an nginx that
    # the script starts itself on 127.0.0.1; nginx's service is disabled below)
    sockperf wrk nginx
)

# Changing anything here changes the cache directory's hash, so a new build is made.
#  --enable-all --disable-earlydata --enable-reproducible-build
#                       exactly what Debian's --enable-distro sets (the installed options.h
#                       is identical), without distro's two side effects that break us:
#                       it forces a shared library (whatever --disable-shared says) and it
#                       does not install wolfssl/options.h, which every user of the headers
#                       must include first. --enable-all brings opensslextra/opensslall,
#                       alt names (URI SANs), TLS 1.3, ALPN, SNI, AES-GCM.
#  --enable-static --disable-shared --with-pic
#                       a static library needs no rpath; PIC so that shared test modules
#                       could link it too.
#  --enable-aesni --enable-intelasm --enable-sp --enable-sp-asm
#                       the reason for this build: AES-NI/AVX GCM, x86-64 SP math for
#                       P-256/RSA handshakes (runtime CPU detection, still portable).
#  --enable-tls13 --enable-alpn --enable-sni   implied by --enable-all; said for the reader.
#  CFLAGS=-O2 -g        wolfSSL's configure empties autoconf's default CFLAGS; -g for perf.
#  -DHAVE_SECRET_CALLBACK  wolfSSL hands each session its TLS 1.3 traffic secrets, from which
#                       ringtunnel's own record layer (src/tls/record_cipher.cc) derives the
#                       keys and decrypts records in place once the handshake is done.
#  --disable-sakke      SAKKE (an identity-based key exchange TLS never uses) is in --enable-all;
#                       its point cache is a 1 MiB thread_local, which glibc zeroes in every
#                       thread's static TLS: 1.4 MiB of RSS per thread before, 0.4 after.
#  -DLARGE_STATIC_BUFFERS  each session keeps its record buffers instead of allocating, zeroing
#                       and freeing two per record: HBONE A->B 7.24 -> 7.62 Gbit/s and
#                       1.207 -> 1.129 CPU-s/GB (medians of 3, alternating binaries), for about
#                       33 KiB more per TLS connection (pooled, not per stream).
rt_wolfssl_configure_flags=(
    --enable-all --disable-earlydata --enable-reproducible-build
    --enable-static --disable-shared --with-pic
    --enable-aesni --enable-intelasm --enable-sp --enable-sp-asm
    --enable-tls13 --enable-alpn --enable-sni
    --disable-examples --disable-crypttests --disable-sakke
)
rt_wolfssl_cflags="-O2 -g -DLARGE_STATIC_BUFFERS -DHAVE_SECRET_CALLBACK"

# Macros the installed wolfssl/options.h must define, or ringtunnel cannot work.
rt_wolfssl_required_macros=(
    WOLFSSL_AESNI HAVE_AESGCM WOLFSSL_TLS13 HAVE_ALPN HAVE_SNI
    OPENSSL_EXTRA WOLFSSL_ALT_NAMES WOLFSSL_SP_X86_64_ASM HAVE_SECRET_CALLBACK HAVE_HKDF
    WOLFSSL_AESGCM_STREAM
)
# Symbols the installed library must export.
rt_wolfssl_required_symbols=(
    wolfSSL_SSLSetIORecv wolfSSL_SSLSetIOSend wolfSSL_CTX_SetIORecv wolfSSL_CTX_SetIOSend
    wolfTLSv1_3_client_method wolfTLSv1_3_server_method wolfSSL_UseALPN wolfSSL_UseSNI
    wolfSSL_get_peer_certificate wolfSSL_X509_get_ext_d2i wolfSSL_X509_get_next_altname
    wc_AesGcmSetKey wc_AesGcmEncrypt wc_AesGcmDecrypt wc_AesGcmEncryptUpdate
    wolfSSL_set_tls13_secret_cb wc_Tls13_HKDF_Expand_Label
)

rt_stamp_name=".ringtunnel-complete"

# --- helpers ----------------------------------------------------------------

rt_log() { printf '[deps] %s\n' "$*" >&2; }
rt_die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

rt_as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        rt_die "need root to run: $* (no sudo available)"
    fi
}

rt_cache_root() { printf '%s\n' "${RINGTUNNEL_CACHE:-$HOME/.cache/ringtunnel}"; }

rt_flags_hash() {
    printf '%s\n' "${rt_wolfssl_configure_flags[@]}" "CFLAGS=$rt_wolfssl_cflags" |
        sha256sum | cut -c1-10
}

# --- 1. Debian packages -----------------------------------------------------

rt_missing_packages() {
    # One dpkg-query for all: it lists the installed ones; anything else is missing.
    local installed
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${rt_deps_packages[@]}" \
        2>/dev/null | awk '$2 == "installed" { print $1 }' || true)
    local p
    for p in "${rt_deps_packages[@]}"; do
        grep -qxF "$p" <<<"$installed" || printf '%s\n' "$p"
    done
}

rt_ensure_packages() {
    command -v dpkg-query >/dev/null 2>&1 || rt_die "dpkg-query not found: this script needs Debian (12)"
    local missing
    mapfile -t missing < <(rt_missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        rt_log "packages: all ${#rt_deps_packages[@]} installed"
        return 0
    fi
    rt_log "packages: installing ${missing[*]}"

    # Keep haproxy's, nginx's (and any other) service from being started by the install: the
    # benchmarks run their own haproxy and nginx. If a policy-rc.d exists already, respect it.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        rt_as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
    fi
    local rc=0
    {
        rt_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            rt_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends "${missing[@]}"
    } >&2 || rc=$?
    if [[ $added_policy -eq 1 ]]; then rt_as_root rm -f "$policy"; fi
    [[ $rc -eq 0 ]] || rt_die "apt-get failed (exit $rc) installing: ${missing[*]}"

    local svc
    for svc in haproxy nginx prometheus; do
        printf '%s\n' "${missing[@]}" | grep -qx "$svc" || continue
        # Do not start it at boot either; either init may be absent (systemd is offline
        # in containers), so failures here are fine.
        rt_as_root systemctl disable "$svc" >/dev/null 2>&1 || true
        rt_as_root update-rc.d "$svc" disable >/dev/null 2>&1 || true
        rt_log "packages: $svc service disabled (the tests start their own haproxy and nginx, and use only promtool of prometheus)"
    done
    mapfile -t missing < <(rt_missing_packages)
    [[ ${#missing[@]} -eq 0 ]] || rt_die "still missing after apt-get install: ${missing[*]}"
    rt_log "packages: done"
}

# --- 2. wolfSSL from Debian's source package ---------------------------------

# The Debian version of the wolfssl source to build: the candidate of the system's
# apt lists (no network needed), so the cache key is known before anything is fetched.
# Sets rt_version (empty if the lists know no wolfssl); asks apt-cache only once.
rt_wolfssl_resolve_version() {
    [[ -n ${rt_version_resolved:-} ]] && return 0
    rt_version_resolved=1
    if [[ -n ${RINGTUNNEL_WOLFSSL_VERSION:-} ]]; then
        rt_version=$RINGTUNNEL_WOLFSSL_VERSION
        return 0
    fi
    rt_version=$(LANG=C apt-cache policy libwolfssl-dev 2>/dev/null | awk '/Candidate:/ { print $2 }')
    [[ $rt_version == "(none)" ]] && rt_version=""
    rt_version=${rt_version%+b[0-9]*} # a binNMU (+bN) has the same source
    return 0
}

# Prints the completed prefix for this flag set, or nothing.
rt_wolfssl_find_prefix() {
    local root hash d
    root=$(rt_cache_root)
    hash=$(rt_flags_hash)
    rt_wolfssl_resolve_version
    if [[ -n $rt_version ]]; then
        d="$root/wolfssl-$rt_version-$hash"
        [[ -f $d/$rt_stamp_name ]] && printf '%s\n' "$d"
        return 0
    fi
    # apt lists empty (no version known): reuse the newest completed build, if any.
    # shellcheck disable=SC2012 # our own names, newest first
    d=$(ls -1td "$root"/wolfssl-*-"$hash"/"$rt_stamp_name" 2>/dev/null | head -n1 || true)
    [[ -n $d ]] && printf '%s\n' "${d%/"$rt_stamp_name"}"
    return 0
}

rt_wolfssl_fetch_source() { # <workdir> <version or empty>
    local work=$1 version=$2
    local apt="$work/apt"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work/src"

    # The system's sources have no deb-src entries: use a private copy with them, and
    # private lists and cache, so the system's apt state stays exactly as it is.
    local srclist
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        srclist="$apt/deb-src.sources"
        sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$srclist"
    elif grep -qE '^deb ' /etc/apt/sources.list 2>/dev/null; then
        srclist="$apt/deb-src.list"
        sed -nE 's/^deb /deb-src /p' /etc/apt/sources.list >"$srclist"
    else
        rt_die "no Debian apt sources found (/etc/apt/sources.list.d/debian.sources)"
    fi
    local opts=(
        -o "Dir::Etc::SourceList=$srclist" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o APT::Sandbox::User=root -q
    )
    rt_log "wolfssl: fetching the deb-src index (private apt lists in $apt)"
    apt-get "${opts[@]}" update >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "apt-get update of the deb-src index failed; see $RT_WOLFSSL_LOG"
    local spec=wolfssl
    [[ -n $version ]] && spec="wolfssl=$version"
    rt_log "wolfssl: apt-get source $spec (dpkg-source applies Debian's patches)"
    (cd "$work/src" && apt-get "${opts[@]}" source "$spec") >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "apt-get source $spec failed; see $RT_WOLFSSL_LOG"
}

rt_wolfssl_verify() { # <staged prefix>
    local p=$1 opt="$1/include/wolfssl/options.h" lib="$1/lib/libwolfssl.a" m s
    [[ -f $opt ]] || rt_die "wolfssl: $opt was not installed"
    [[ -f $lib ]] || rt_die "wolfssl: static library $lib was not installed"
    # A shared one beside it would win at link time and need an rpath.
    compgen -G "$p/lib/libwolfssl.so*" >/dev/null &&
        rt_die "wolfssl: a shared library was installed in $p/lib; the flags should prevent that"
    for m in "${rt_wolfssl_required_macros[@]}"; do
        grep -qE "^#define $m\b" "$opt" ||
            rt_die "wolfssl: $m is NOT defined in the installed options.h ($opt): the build lacks a required feature"
    done
    local syms
    syms=$(nm -g --defined-only "$lib" 2>/dev/null | awk '{ print $3 }')
    for s in "${rt_wolfssl_required_symbols[@]}"; do
        grep -qxF "$s" <<<"$syms" || rt_die "wolfssl: $lib does not export $s"
    done
    # It must link into a C program (no libstdc++ to pull in libm) with exactly what its
    # .pc says for a static link, as meson's dependency('wolfssl', static: true) does.
    local pc_libs
    pc_libs=$(PKG_CONFIG_SYSROOT_DIR="$RT_STAGE" PKG_CONFIG_PATH="$p/lib/pkgconfig" \
        pkg-config --cflags --libs --static wolfssl) ||
        rt_die "wolfssl: pkg-config cannot read $p/lib/pkgconfig/wolfssl.pc"
    local t="$RT_WORK/linktest"
    mkdir -p "$t"
    cat >"$t/t.c" <<'EOF'
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
int main(void) {
    wolfSSL_Init();
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
    int ok = ctx != NULL;
    wolfSSL_CTX_free(ctx);
    wolfSSL_Cleanup();
    return ok ? 0 : 1;
}
EOF
    # shellcheck disable=SC2086 # pc_libs is a list of flags
    cc -o "$t/t" "$t/t.c" $pc_libs >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "wolfssl: a test program does not link with 'pkg-config --static --libs wolfssl' ($pc_libs); see $RT_WOLFSSL_LOG"
    "$t/t" || rt_die "wolfssl: a TLS 1.3 context could not be created with the new library"
    rt_log "wolfssl: verified (AES-NI, TLS 1.3, ALPN, SNI, opensslextra + alt names, custom I/O callbacks)"
}

rt_wolfssl_build() {
    local root hash
    root=$(rt_cache_root)
    hash=$(rt_flags_hash)
    mkdir -p "$root" || rt_die "cannot create the cache directory $root"

    # Leftovers of builds that were killed; we hold the lock, so none is running.
    rm -rf "$root"/.build-wolfssl-*

    local work
    work=$(mktemp -d "$root/.build-wolfssl-XXXXXX")
    RT_WORK=$work
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    RT_WOLFSSL_LOG="$root/wolfssl-build-$hash.log"
    : >"$RT_WOLFSSL_LOG"
    rt_log "wolfssl: building once into $root (log: $RT_WOLFSSL_LOG); takes ~2-3 minutes"
    local t0=$SECONDS

    rt_wolfssl_fetch_source "$work" "$rt_version"
    local srcdir
    srcdir=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name 'wolfssl-*' | head -n1)
    [[ -n $srcdir ]] || rt_die "apt-get source produced no wolfssl-* directory in $work/src"
    # The version that was really fetched names the cache entry.
    local fetched
    fetched=$(cd "$srcdir" && dpkg-parsechangelog -S Version) ||
        rt_die "cannot read debian/changelog in $srcdir"
    local prefix="$root/wolfssl-$fetched-$hash"

    rt_log "wolfssl $fetched: ./autogen.sh"
    (cd "$srcdir" && ./autogen.sh) >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "wolfssl: autogen.sh failed; see $RT_WOLFSSL_LOG"
    rt_log "wolfssl $fetched: ./configure --prefix=$prefix ${rt_wolfssl_configure_flags[*]} CFLAGS='$rt_wolfssl_cflags'"
    (cd "$srcdir" && ./configure --prefix="$prefix" "${rt_wolfssl_configure_flags[@]}" \
        CFLAGS="$rt_wolfssl_cflags") >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "wolfssl: configure failed; see $RT_WOLFSSL_LOG"
    rt_log "wolfssl $fetched: make -j$(nproc)"
    make -C "$srcdir" -j"$(nproc)" >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "wolfssl: make failed; see $RT_WOLFSSL_LOG"
    rt_log "wolfssl $fetched: make install (staged)"
    local stage="$work/stage"
    make -C "$srcdir" install DESTDIR="$stage" >>"$RT_WOLFSSL_LOG" 2>&1 ||
        rt_die "wolfssl: make install failed; see $RT_WOLFSSL_LOG"
    # The .pc names no Libs.private, but the static library needs libm (pow/log in dh.c)
    # and pthreads: add them, so a static link from pkg-config works from C too.
    local pc="$stage$prefix/lib/pkgconfig/wolfssl.pc"
    [[ -f $pc ]] || rt_die "wolfssl: no wolfssl.pc installed in $stage$prefix/lib/pkgconfig"
    grep -q '^Libs.private:' "$pc" || printf 'Libs.private: -lm -pthread\n' >>"$pc"
    RT_STAGE=$stage
    rt_wolfssl_verify "$stage$prefix"

    # Move into place, then write the stamp LAST: a killed build never looks done.
    rm -rf "$prefix"
    mv "$stage$prefix" "$prefix"
    mv "$RT_WOLFSSL_LOG" "$prefix/build.log"
    local pcdir="$prefix/lib/pkgconfig"
    {
        printf 'version=%s\n' "$fetched"
        printf 'configure=%s\n' "${rt_wolfssl_configure_flags[*]}"
        printf 'cflags=%s\n' "$rt_wolfssl_cflags"
        printf 'pkgconfigdir=%s\n' "$pcdir"
        printf 'build_seconds=%s\n' "$((SECONDS - t0))"
        printf 'built_at=%s\n' "$(date -u +%FT%TZ)"
    } >"$prefix/$rt_stamp_name.tmp"
    mv "$prefix/$rt_stamp_name.tmp" "$prefix/$rt_stamp_name"
    rm -rf "$work"
    trap - EXIT
    rt_log "wolfssl $fetched: built in $((SECONDS - t0)) s into $prefix"
}

rt_ensure_wolfssl() {
    local prefix
    rt_wolfssl_resolve_version # here, not in a $(...) subshell, so it is asked once
    prefix=$(rt_wolfssl_find_prefix)
    if [[ -z $prefix ]]; then
        local root
        root=$(rt_cache_root)
        mkdir -p "$root" || rt_die "cannot create the cache directory $root"
        # Two set-ups at once (run.sh and test.sh) must not both build.
        exec 9>"$root/.wolfssl.lock"
        if ! flock -n 9; then
            rt_log "wolfssl: another set-up is building it; waiting"
            flock 9
        fi
        prefix=$(rt_wolfssl_find_prefix)
        [[ -n $prefix ]] || rt_wolfssl_build
        exec 9>&-
        prefix=$(rt_wolfssl_find_prefix)
        [[ -n $prefix ]] || rt_die "wolfssl: build finished but no completed cache entry is found"
    fi
    rt_log "wolfssl: using $prefix"
}

# Prints the pkg-config directory of the cached build (empty if none is complete).
rt_wolfssl_pkg_config_dir() {
    local prefix
    prefix=$(rt_wolfssl_find_prefix)
    [[ -n $prefix ]] || return 0
    sed -n 's/^pkgconfigdir=//p' "$prefix/$rt_stamp_name"
}

rt_deps_main() {
    rt_ensure_packages
    rt_ensure_wolfssl
}

# --- entry points -------------------------------------------------------------

if [[ ${BASH_SOURCE[0]} != "$0" ]]; then
    # Sourced: do the work in a subshell, so `set -e` and `exit` do not reach the
    # caller's shell; then export the result here.
    if rt_pc_dir=$(set -euo pipefail; rt_deps_main; rt_wolfssl_pkg_config_dir) &&
        [[ -n $rt_pc_dir ]]; then
        export RINGTUNNEL_WOLFSSL_PREFIX="${rt_pc_dir%/lib*/pkgconfig}"
        export PKG_CONFIG_PATH="$rt_pc_dir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
        unset rt_pc_dir
    else
        unset rt_pc_dir
        printf '[deps] ERROR: set-up failed\n' >&2
        return 1
    fi
else
    set -euo pipefail
    mode=${1:-}
    case $mode in
    "" | --print-pkg-config-path) ;;
    -h | --help)
        sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    *) rt_die "unknown argument: $mode (try --help)" ;;
    esac
    rt_deps_main
    pc_dir=$(rt_wolfssl_pkg_config_dir)
    [[ -n $pc_dir ]] || rt_die "no pkg-config directory recorded for the wolfssl build"
    if [[ $mode == --print-pkg-config-path ]]; then
        printf '%s\n' "$pc_dir"
    else
        printf 'PKG_CONFIG_PATH=%s\n' "$pc_dir"
    fi
fi

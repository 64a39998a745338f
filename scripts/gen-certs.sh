#!/usr/bin/env bash
# Generates a development PKI for ringtunnel's mutual TLS with the openssl CLI: a CA, the node
# identities node-a and node-b (SPIFFE IDs in the URI SAN), and the broken credentials the unit
# tests need. EC P-256 throughout; valid 10 years unless said otherwise.
#
# Usage: scripts/gen-certs.sh DIR [TRUST_DOMAIN]      (TRUST_DOMAIN defaults to cluster.local)
#
# Idempotent: files that exist are kept. A certificate is issued again only when it or its key is
# missing, when it expires within 30 days, or when the CA was made again. Running it with
# another trust domain than last time makes everything again.
#
# What DIR holds afterwards (each NAME.crt has its key in NAME.key):
#   ca.crt ca.key                the development CA
#   node-a.crt node-b.crt        spiffe://TD/ns/default/sa/node-a (node-b), signed by the CA;
#                                the .crt holds the leaf only
#   default/cert.pem key.pem ca.pem
#                                node-a's credentials under the names of --cert/--key/--ca: a
#                                directory an embedded default can be built from
#   for the tests:
#   other-ca.crt                 a second, unrelated CA
#   other-node.crt               spiffe://TD/ns/default/sa/other-node, signed by other-ca
#   other-td.crt                 spiffe://other-td.local/ns/default/sa/node-a, signed by the CA:
#                                valid, but from another trust domain
#   expired.crt                  valid in 2020 only
#   not-yet-valid.crt            valid from 2099 on
#   intruder.crt                 spiffe://TD/ns/default/sa/intruder: valid, but not who a client
#                                that dials node-a expects
#   no-spiffe.crt                a DNS SAN and no URI SAN
#   not-spiffe.crt               one URI SAN, https://node-a.example/, not a SPIFFE ID
#   two-ids.crt                  two SPIFFE URI SANs
#   mismatch.key                 a key that belongs to no certificate here
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
dir=$1
td=${2:-cluster.local}
if [[ ! $td =~ ^[a-z0-9._-]+$ ]]; then
    echo "gen-certs: trust domain '$td' is not one: lowercase letters, digits, '.', '-', '_'" >&2
    exit 2
fi
command -v openssl >/dev/null || {
    echo "gen-certs: the openssl command is missing (apt-get install openssl)" >&2
    exit 1
}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# Private keys: readable by the owner only, from the moment they exist.
umask 077

log() { printf '[gen-certs] %s\n' "$*" >&2; }

# Version of what this script makes: bump it when the certificates' content changes.
stamp_want="gen-certs v1 trust-domain=$td"
stamp=$dir/.gen-certs
if [[ ! -f $stamp || $(<"$stamp") != "$stamp_want" ]]; then
    # Another trust domain (or a first run): nothing here can be kept.
    rm -f "$dir"/*.crt "$dir"/*.key "$dir"/*.csr "$dir"/default/*.pem
    rm -rf "$dir/.ca"
fi

spiffe() { printf 'spiffe://%s/ns/default/sa/%s' "$td" "$1"; }

new_key() { # <file>
    [[ -f $1 ]] && return 0
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# True if <crt> exists, has its key, is not older than <issuer crt>, and is good for 30 days.
fresh() { # <name> <issuer name> [no-expiry-check]
    local crt=$dir/$1.crt
    [[ -f $crt && -f $dir/$1.key ]] || return 1
    [[ $1 == "$2" || ! $dir/$2.crt -nt $crt ]] || return 1
    [[ ${3:-} == no-expiry-check ]] && return 0
    openssl x509 -in "$crt" -noout -checkend $((30 * 86400)) >/dev/null
}

new_ca() { # <name> <common name>
    fresh "$1" "$1" && return 0
    log "CA $1"
    rm -f "$dir/$1.key"
    new_key "$dir/$1.key"
    openssl req -x509 -new -key "$dir/$1.key" -sha256 -days 3650 -subj "/O=ringtunnel/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$dir/$1.crt"
    chmod 644 "$dir/$1.crt"
}

# `openssl ca` rather than `openssl x509 -req`: only it takes explicit start and end dates
# (OpenSSL 3.0), which the expired and not-yet-valid certificates need.
ca_config() { # <issuer name>: writes the config and database of that issuer, prints its path
    local work=$dir/.ca/$1
    mkdir -p "$work/new"
    [[ -f $work/index.txt ]] || : >"$work/index.txt"
    printf 'unique_subject = no\n' >"$work/index.txt.attr"
    cat >"$work/ca.cnf" <<EOF
[ca]
default_ca = dev
[dev]
database = $work/index.txt
new_certs_dir = $work/new
rand_serial = yes
certificate = $dir/$1.crt
private_key = $dir/$1.key
default_md = sha256
policy = any
email_in_dn = no
unique_subject = no
[any]
commonName = supplied
organizationName = optional
EOF
    printf '%s\n' "$work/ca.cnf"
}

# new_leaf <name> <issuer> <subjectAltName value> [<start> <end>]  (dates as YYYYMMDDHHMMSSZ)
new_leaf() {
    local name=$1 issuer=$2 san=$3 start=${4:-} end=${5:-}
    fresh "$name" "$issuer" ${start:+no-expiry-check} && return 0
    log "certificate $name ($san)"
    new_key "$dir/$name.key"
    local ext=$dir/.ca/$name.ext csr=$dir/.ca/$name.csr cnf
    cnf=$(ca_config "$issuer")
    cat >"$ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = $san
EOF
    openssl req -new -key "$dir/$name.key" -subj "/O=ringtunnel/CN=$name" -out "$csr"
    local dates=(-days 3650)
    [[ -n $start ]] && dates=(-startdate "$start" -enddate "$end")
    openssl ca -batch -notext -config "$cnf" -extfile "$ext" "${dates[@]}" \
        -in "$csr" -out "$dir/$name.crt" 2>/dev/null ||
        { echo "gen-certs: openssl ca failed for $name" >&2; exit 1; }
    chmod 644 "$dir/$name.crt"
    rm -f "$csr" "$ext"
}

new_ca ca "ringtunnel development CA ($td)"
new_ca other-ca "ringtunnel unrelated CA"

new_leaf node-a ca "URI:$(spiffe node-a)"
new_leaf node-b ca "URI:$(spiffe node-b)"
new_leaf other-node other-ca "URI:$(spiffe other-node)"
new_leaf other-td ca "URI:spiffe://other-td.local/ns/default/sa/node-a"
new_leaf expired ca "URI:$(spiffe expired)" 20200101000000Z 20201231000000Z
new_leaf not-yet-valid ca "URI:$(spiffe not-yet-valid)" 20990101000000Z 20991231000000Z
new_leaf intruder ca "URI:$(spiffe intruder)"
new_leaf no-spiffe ca "DNS:node-a.example"
new_leaf not-spiffe ca "URI:https://node-a.example/"
new_leaf two-ids ca "URI:$(spiffe node-a),URI:$(spiffe node-b)"
new_key "$dir/mismatch.key"

mkdir -p "$dir/default"
for pair in "node-a.crt cert.pem" "node-a.key key.pem" "ca.crt ca.pem"; do
    set -- $pair
    if ! cmp -s "$dir/$1" "$dir/default/$2"; then
        cp "$dir/$1" "$dir/default/$2"
    fi
done
chmod 644 "$dir/default/cert.pem" "$dir/default/ca.pem"

printf '%s\n' "$stamp_want" >"$stamp"
log "$dir: ready (trust domain $td)"

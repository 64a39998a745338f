// Whether an inbound HBONE CONNECT may be dialled: decided before any socket exists, from the
// target, the configuration and the two identities only (no I/O, no state).
//
// Checked in this order, the first that applies deciding:
//   1. bad_target: addresses that are never a destination, whatever --allow-dest says:
//      unspecified (0.0.0.0/8, ::), link-local (169.254.0.0/16, fe80::/10), multicast
//      (224.0.0.0/4, ff00::/8), broadcast (255.255.255.255).
//   2. foreign_trust_domain: the peer's SPIFFE trust domain is not ours.
//   3. own_listener: an address:port this process listens on (--forward, --hbone-listen); a
//      listener on 0.0.0.0 or :: claims its port on every address. A tunnel into ourselves
//      would nest tunnels or reach a relay as a local client.
//   4. not_allowed: no --allow-dest entry covers the target. A loopback target (127.0.0.0/8,
//      ::1) is covered only by an entry whose network itself lies in 127.0.0.0/8 or is ::1/128:
//      0.0.0.0/0 and ::/0 never open the node's own services.
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is judged, everywhere, as the IPv4 address.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "ringtunnel/config/config.h"
#include "ringtunnel/net/address.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/tls/identity.h"

namespace ringtunnel::workload {
class State;
struct Workload;
}  // namespace ringtunnel::workload

namespace ringtunnel::proxy {

enum class Verdict : uint8_t {
  allow,
  bad_target,
  own_listener,
  not_allowed,
  foreign_trust_domain,
  not_local,  // --config: the target is not an address of the local workload (400)
  denied,     // --config: an authorization policy denies the peer (401)
};

struct Admission {
  Admission() = default;
  Admission(Verdict v, std::string why, std::string dry = {})
      : verdict(v), reason(std::move(why)), dry_run(std::move(dry)) {}

  Verdict verdict = Verdict::allow;
  std::string reason;  // short English, for the access log; empty when allowed
  // admit_mesh: what dry-run policies would have decided (workload::Verdict::describe_dry_run),
  // empty when none applied. Logged, never enforced.
  std::string dry_run;
};

Admission admit(const net::Endpoint& target, const config::Config& config,
                const tls::SpiffeId& peer, const tls::SpiffeId& own);

// With a workload config (--config), in place of --allow-dest: checked in this order, the first
// that applies deciding: bad_target and foreign_trust_domain as above; not_local: the target's
// address is not one of the local workload's; own_listener as above; denied: the authorization
// policies that apply to the local workload refuse a connection from `source` (the HBONE
// connection's peer address) with the peer's identity to the target. `peer` null: a plaintext
// connection (--inbound-plaintext-listen), judged with no identity and no trust-domain check.
Admission admit_mesh(const net::Endpoint& target, const config::Config& config,
                     const workload::State& state, const workload::Workload& local,
                     const net::Endpoint& source, const tls::SpiffeId* peer,
                     const tls::SpiffeId& own);

// The operational line for an admission whose dry-run policies applied ("" when none did):
//   worker N: authorization dry-run: deny policy ns/a matched (client C, identity I, target T;
//   enforced: allow)
// `identity` empty for a plaintext connection.
std::string dry_run_line(unsigned worker, const Admission& admission, std::string_view client,
                         std::string_view identity, std::string_view target);

// The CONNECT response for a refusal (400, 503 or 401), and how its access-log line ends
// (bad_request, refused or denied).
int http_status(Verdict verdict);
EndReason end_reason(Verdict verdict);
std::string_view to_string(Verdict verdict);

// Whether `entry` covers `target` (address and port; an IPv4-mapped target as IPv4). Loopback
// targets need an entry that is itself loopback: see above.
bool covers(const config::AllowDest& entry, const net::Endpoint& target);

}  // namespace ringtunnel::proxy

// Workload identities: SPIFFE IDs of the form spiffe://<trust-domain>/ns/<namespace>/sa/<account>,
// as Istio's ambient mesh puts them in the URI SAN of every node and workload certificate.
//
// The parser is strict on purpose: an identity is compared byte for byte (the client's expected
// peer, the server's authorization), so two spellings of one identity must not both be accepted.
#pragma once

#include <string>
#include <string_view>

struct WOLFSSL_X509;

namespace ringtunnel::tls {

struct SpiffeId {
  std::string trust_domain;
  std::string ns;
  std::string sa;

  // "spiffe://<trust_domain>/ns/<ns>/sa/<sa>"
  std::string to_string() const;

  friend bool operator==(const SpiffeId&, const SpiffeId&) = default;
};

// The SPIFFE specification's limit for a whole ID.
inline constexpr size_t kMaxSpiffeIdBytes = 2048;
// A DNS name's limit, which the specification applies to the trust domain.
inline constexpr size_t kMaxTrustDomainBytes = 255;

// Parses `text` strictly:
//   - scheme exactly "spiffe://" (lowercase);
//   - trust domain non-empty, of [a-z0-9.-_] only: so no upper case, port, userinfo or IP-literal;
//   - path exactly /ns/<namespace>/sa/<account>, each segment non-empty, of [A-Za-z0-9.-_], and
//     neither "." nor "..": so no percent-encoding, query, fragment, empty segment or trailing '/';
//   - at most kMaxSpiffeIdBytes in all.
// Returns "" and fills `out`, or the reason `text` is not one (without quoting `text`).
std::string parse_spiffe_id(std::string_view text, SpiffeId& out);

// The identity in a certificate: its subject alternative names must hold exactly one URI, and
// that URI must be a SPIFFE ID. Returns "" and fills `out`, or why the certificate has none
// ("no URI SAN", "2 URI SANs", "URI SAN is not a SPIFFE ID: ...").
std::string spiffe_id_of(const WOLFSSL_X509* cert, SpiffeId& out);

}  // namespace ringtunnel::tls

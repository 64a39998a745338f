// The `:authority` of an HBONE CONNECT request: the tunnel's target, `ipv4:port` or
// `[ipv6]:port`, and nothing else.
//
// Strict on purpose: the value comes from a peer and becomes a connect() target, so there is one
// spelling per address. Numeric only (a node proxy never resolves names on the data path), port
// 1-65535 without leading zeros, IPv4 octets without leading zeros (inet_aton would read "010" as
// octal 8), no whitespace, no IPv6 zone id: "%eth0" names an interface of the sender's host and
// means nothing on the node that connects. An IPv4-mapped IPv6 address ("[::ffff:10.0.0.1]:80")
// comes back as the IPv4 address it maps, so policy and logs see one address family per host.
#pragma once

#include <cstdint>
#include <string_view>

#include "ringtunnel/net/address.h"

namespace ringtunnel::h2 {

enum class AuthorityError : uint8_t {
  ok,
  empty,
  too_long,
  missing_port,
  bad_port,
  bad_ipv4,
  ipv6_without_brackets,
  missing_bracket,
  bad_ipv6,
  zone_id,
};

// "[" + 45 (longest IPv6 text, with an embedded IPv4) + "]:" + 5.
inline constexpr size_t kMaxAuthorityLength = 53;

// Fills `out` (a sockaddr_in or sockaddr_in6, ready for connect()) and returns ok, or says why
// `text` is not an authority. `out` is left unspecified on error.
AuthorityError parse_authority(std::string_view text, net::Endpoint& out);

// A short English reason, for the access log ("CONNECT refused: ...").
std::string_view describe(AuthorityError error);

}  // namespace ringtunnel::h2

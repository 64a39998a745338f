// IP addresses and CIDR blocks as values: parsed from text (numeric only), compared, hashed and
// tested for containment without allocating, so they can key the connection path's tables.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ringtunnel/net/address.h"

namespace ringtunnel::net {

struct IpAddress {
  // 4 or 6; 0 for a default-constructed (unset) address, which equals no parsed one.
  uint8_t version = 0;
  // IPv4 in the first 4 bytes, the rest zero.
  std::array<uint8_t, 16> bytes{};

  static IpAddress v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d);
  // "10.0.0.1" or "fd00::1"; nullopt for anything else (names, zone ids, ports, brackets).
  static std::optional<IpAddress> parse(std::string_view text);
  // From a kernel-filled sockaddr_in/sockaddr_in6; an IPv4-mapped IPv6 address (::ffff:a.b.c.d,
  // what a dual-stack socket reports) becomes the IPv4 address. nullopt for other families.
  static std::optional<IpAddress> from_sockaddr(const sockaddr* addr, socklen_t length);

  bool is_v4() const { return version == 4; }
  size_t size() const { return version == 4 ? 4 : 16; }
  std::string to_string() const;

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// `ip` and `port` as a socket address.
Endpoint endpoint_of(const IpAddress& ip, uint16_t port);

struct IpAddressHash {
  size_t operator()(const IpAddress& ip) const noexcept;
};

struct IpCidr {
  IpAddress address;  // as written: host bits may be set, as in "10.0.0.1/8"
  uint8_t prefix = 0;

  // "10.0.0.0/8" or "fd00::/8": the prefix length is required (0..32 or 0..128).
  static std::optional<IpCidr> parse(std::string_view text);
  // Same family and the first `prefix` bits equal; never true across families.
  bool contains(const IpAddress& ip) const;
  std::string to_string() const;

  friend bool operator==(const IpCidr&, const IpCidr&) = default;
};

}  // namespace ringtunnel::net

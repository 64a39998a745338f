#include "ringtunnel/net/ip.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <cstring>

namespace ringtunnel::net {

IpAddress IpAddress::v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  IpAddress ip;
  ip.version = 4;
  ip.bytes[0] = a;
  ip.bytes[1] = b;
  ip.bytes[2] = c;
  ip.bytes[3] = d;
  return ip;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  // inet_pton needs a terminated string; an address is at most 45 characters.
  char buffer[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof buffer) return std::nullopt;
  std::memcpy(buffer, text.data(), text.size());
  buffer[text.size()] = '\0';
  IpAddress ip;
  if (text.find(':') == std::string_view::npos) {
    if (inet_pton(AF_INET, buffer, ip.bytes.data()) != 1) return std::nullopt;
    ip.version = 4;
  } else {
    if (inet_pton(AF_INET6, buffer, ip.bytes.data()) != 1) return std::nullopt;
    ip.version = 6;
  }
  return ip;
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* addr, socklen_t length) {
  IpAddress ip;
  if (addr->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    ip.version = 4;
    std::memcpy(ip.bytes.data(), &in->sin_addr, 4);
    return ip;
  }
  if (addr->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      ip.version = 4;
      std::memcpy(ip.bytes.data(), in6->sin6_addr.s6_addr + 12, 4);
    } else {
      ip.version = 6;
      std::memcpy(ip.bytes.data(), in6->sin6_addr.s6_addr, 16);
    }
    return ip;
  }
  return std::nullopt;
}

std::string IpAddress::to_string() const {
  char buffer[INET6_ADDRSTRLEN];
  if (version != 4 && version != 6) return "(unset)";
  inet_ntop(version == 4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof buffer);
  return buffer;
}

size_t IpAddressHash::operator()(const IpAddress& ip) const noexcept {
  // FNV-1a over the significant bytes: cheap, and addresses differ mostly in their last bytes.
  uint64_t h = 1469598103934665603ull ^ ip.version;
  for (size_t i = 0; i < ip.size(); ++i) {
    h ^= ip.bytes[i];
    h *= 1099511628211ull;
  }
  return static_cast<size_t>(h);
}

std::optional<IpCidr> IpCidr::parse(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = IpAddress::parse(text.substr(0, slash));
  if (!ip) return std::nullopt;
  const std::string_view length = text.substr(slash + 1);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), value);
  if (length.empty() || ec != std::errc() || end != length.data() + length.size()) {
    return std::nullopt;
  }
  if (value > (ip->is_v4() ? 32u : 128u)) return std::nullopt;
  return IpCidr{*ip, static_cast<uint8_t>(value)};
}

bool IpCidr::contains(const IpAddress& ip) const {
  if (ip.version != address.version) return false;
  const size_t whole = prefix / 8;
  if (std::memcmp(ip.bytes.data(), address.bytes.data(), whole) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (ip.bytes[whole] & mask) == (address.bytes[whole] & mask);
}

std::string IpCidr::to_string() const {
  return address.to_string() + "/" + std::to_string(prefix);
}

Endpoint endpoint_of(const IpAddress& ip, uint16_t port) {
  Endpoint e;
  if (ip.is_v4()) {
    auto* in = reinterpret_cast<sockaddr_in*>(&e.storage);
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    memcpy(&in->sin_addr, ip.bytes.data(), 4);
    e.length = sizeof(sockaddr_in);
  } else {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&e.storage);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    memcpy(&in6->sin6_addr, ip.bytes.data(), 16);
    e.length = sizeof(sockaddr_in6);
  }
  return e;
}

}  // namespace ringtunnel::net

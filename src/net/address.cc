#include "ringtunnel/net/address.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace ringtunnel::net {

uint16_t Endpoint::port() const {
  if (family() == AF_INET6)
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  return 0;
}

std::string Endpoint::to_string() const {
  return format_sockaddr(addr(), length);
}

std::string parse_endpoint(std::string_view text, Endpoint& out) {
  std::string_view host, port;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    host = text.substr(1, close - 1);
    if (close + 1 >= text.size() || text[close + 1] != ':') return "missing ':port' after ']'";
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return "missing ':port'";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return "an IPv6 address must be in brackets: [addr]:port";
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || value > 65535)
    return "port must be a number from 0 to 65535";

  const std::string host_z(host);
  out = Endpoint{};
  if (text.starts_with('[')) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out.storage);
    if (inet_pton(AF_INET6, host_z.c_str(), &sa->sin6_addr) != 1) return "not an IPv6 address";
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(static_cast<uint16_t>(value));
    out.length = sizeof(sockaddr_in6);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&out.storage);
    if (inet_pton(AF_INET, host_z.c_str(), &sa->sin_addr) != 1)
      return "not an IPv4 address (names are not resolved)";
    sa->sin_family = AF_INET;
    sa->sin_port = htons(static_cast<uint16_t>(value));
    out.length = sizeof(sockaddr_in);
  }
  return {};
}

std::string format_sockaddr(const sockaddr* addr, socklen_t length) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    const auto* sa = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof ip);
    return std::string(ip) + ':' + std::to_string(ntohs(sa->sin_port));
  }
  if (addr->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    const auto* sa = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &sa->sin6_addr, ip, sizeof ip);
    return '[' + std::string(ip) + "]:" + std::to_string(ntohs(sa->sin6_port));
  }
  return "?";
}

}  // namespace ringtunnel::net

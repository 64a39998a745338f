#include "ringtunnel/h2/authority.h"

#include <arpa/inet.h>

#include <cstring>

namespace ringtunnel::h2 {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_ipv6_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.';
}

// 1-65535, digits only, no leading zero (so "0" and "080" are refused too).
bool parse_port(std::string_view text, uint16_t& port) {
  if (text.empty() || text.size() > 5 || text[0] == '0') return false;
  uint32_t value = 0;
  for (char c : text) {
    if (!is_digit(c)) return false;
    value = value * 10 + uint32_t(c - '0');
  }
  if (value > 65535) return false;
  port = uint16_t(value);
  return true;
}

// Dotted quad, each octet 0-255 in 1-3 digits without a leading zero.
bool parse_ipv4(std::string_view text, in_addr& addr) {
  uint8_t octets[4];
  size_t pos = 0;
  for (int i = 0; i < 4; ++i) {
    if (i > 0) {
      if (pos >= text.size() || text[pos] != '.') return false;
      ++pos;
    }
    const size_t start = pos;
    uint32_t value = 0;
    while (pos < text.size() && is_digit(text[pos]) && pos - start < 3) {
      value = value * 10 + uint32_t(text[pos] - '0');
      ++pos;
    }
    const size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) return false;
    octets[i] = uint8_t(value);
  }
  if (pos != text.size()) return false;
  std::memcpy(&addr.s_addr, octets, 4);  // network order is the text's order
  return true;
}

void fill_ipv4(net::Endpoint& out, const in_addr& addr, uint16_t port) {
  out = net::Endpoint{};
  auto* sa = reinterpret_cast<sockaddr_in*>(&out.storage);
  sa->sin_family = AF_INET;
  sa->sin_port = htons(port);
  sa->sin_addr = addr;
  out.length = sizeof(sockaddr_in);
}

AuthorityError parse_bracketed(std::string_view text, net::Endpoint& out) {
  const size_t close = text.find(']');
  if (close == std::string_view::npos) return AuthorityError::missing_bracket;
  const std::string_view host = text.substr(1, close - 1);
  const std::string_view rest = text.substr(close + 1);
  if (rest.empty() || rest[0] != ':') return AuthorityError::missing_port;
  uint16_t port;
  if (!parse_port(rest.substr(1), port)) return AuthorityError::bad_port;

  if (host.empty() || host.size() > INET6_ADDRSTRLEN - 1) return AuthorityError::bad_ipv6;
  for (char c : host) {
    if (c == '%') return AuthorityError::zone_id;
    if (!is_ipv6_char(c)) return AuthorityError::bad_ipv6;
  }
  char zhost[INET6_ADDRSTRLEN];
  std::memcpy(zhost, host.data(), host.size());
  zhost[host.size()] = '\0';
  in6_addr addr;
  if (inet_pton(AF_INET6, zhost, &addr) != 1) return AuthorityError::bad_ipv6;

  if (IN6_IS_ADDR_V4MAPPED(&addr)) {
    in_addr v4;
    std::memcpy(&v4.s_addr, &addr.s6_addr[12], 4);
    fill_ipv4(out, v4, port);
    return AuthorityError::ok;
  }
  out = net::Endpoint{};
  auto* sa = reinterpret_cast<sockaddr_in6*>(&out.storage);
  sa->sin6_family = AF_INET6;
  sa->sin6_port = htons(port);
  sa->sin6_addr = addr;
  out.length = sizeof(sockaddr_in6);
  return AuthorityError::ok;
}

}  // namespace

AuthorityError parse_authority(std::string_view text, net::Endpoint& out) {
  if (text.empty()) return AuthorityError::empty;
  if (text.size() > kMaxAuthorityLength) return AuthorityError::too_long;
  if (text[0] == '[') return parse_bracketed(text, out);

  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) return AuthorityError::missing_port;
  const std::string_view port_text = text.substr(colon + 1);
  if (port_text.find(':') != std::string_view::npos) return AuthorityError::ipv6_without_brackets;
  uint16_t port;
  if (!parse_port(port_text, port)) return AuthorityError::bad_port;
  in_addr addr;
  if (!parse_ipv4(text.substr(0, colon), addr)) return AuthorityError::bad_ipv4;
  fill_ipv4(out, addr, port);
  return AuthorityError::ok;
}

std::string_view describe(AuthorityError error) {
  switch (error) {
    case AuthorityError::ok:
      return "ok";
    case AuthorityError::empty:
      return "empty authority";
    case AuthorityError::too_long:
      return "authority too long for an address";
    case AuthorityError::missing_port:
      return "missing ':port'";
    case AuthorityError::bad_port:
      return "port must be 1-65535 without leading zeros";
    case AuthorityError::bad_ipv4:
      return "not a numeric IPv4 address (names are not resolved)";
    case AuthorityError::ipv6_without_brackets:
      return "an IPv6 address must be in brackets: [addr]:port";
    case AuthorityError::missing_bracket:
      return "missing ']' after the IPv6 address";
    case AuthorityError::bad_ipv6:
      return "not an IPv6 address";
    case AuthorityError::zone_id:
      return "IPv6 zone ids are not accepted";
  }
  return "unknown";
}

}  // namespace ringtunnel::h2

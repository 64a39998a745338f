// Socket addresses: `host:port` and `[v6]:port` parsing and formatting. Numeric only: a node
// proxy must not block on name resolution.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <string>
#include <string_view>

namespace ringtunnel::net {

struct Endpoint {
  sockaddr_storage storage{};
  socklen_t length = 0;

  int family() const { return storage.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&storage); }
  uint16_t port() const;  // host order; 0 for a family other than IPv4 and IPv6
  std::string to_string() const;
};

// Parses "1.2.3.4:80" or "[::1]:80". Returns "" and fills `out`, or the reason it is not one.
std::string parse_endpoint(std::string_view text, Endpoint& out);

// Formats a kernel-filled address as "ip:port" / "[ip]:port".
std::string format_sockaddr(const sockaddr* addr, socklen_t length);

}  // namespace ringtunnel::net

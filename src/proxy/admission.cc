#include "ringtunnel/proxy/admission.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <cstring>
#include <optional>

#include <fmt/format.h>

#include "ringtunnel/net/ip.h"
#include "ringtunnel/workload/authorization.h"
#include "ringtunnel/workload/state.h"

namespace ringtunnel::proxy {

namespace {

// An address as policy sees it: IPv4-mapped IPv6 folded to IPv4.
struct Addr {
  int family = AF_UNSPEC;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4
  uint16_t port = 0;

  bool v4() const { return family == AF_INET; }
  bool all_zero() const {
    for (size_t i = 0; i < (v4() ? 4u : 16u); ++i)
      if (bytes[i]) return false;
    return true;
  }
  std::string text() const {
    char buf[INET6_ADDRSTRLEN] = "?";
    inet_ntop(family, bytes.data(), buf, sizeof buf);
    return v4() ? fmt::format("{}:{}", buf, port) : fmt::format("[{}]:{}", buf, port);
  }
};

Addr normalise(const net::Endpoint& e) {
  Addr a;
  if (e.family() == AF_INET) {
    const auto* sa = reinterpret_cast<const sockaddr_in*>(&e.storage);
    a.family = AF_INET;
    std::memcpy(a.bytes.data(), &sa->sin_addr, 4);
    a.port = ntohs(sa->sin_port);
  } else if (e.family() == AF_INET6) {
    const auto* sa = reinterpret_cast<const sockaddr_in6*>(&e.storage);
    a.port = ntohs(sa->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&sa->sin6_addr)) {
      a.family = AF_INET;
      std::memcpy(a.bytes.data(), &sa->sin6_addr.s6_addr[12], 4);
    } else {
      a.family = AF_INET6;
      std::memcpy(a.bytes.data(), &sa->sin6_addr, 16);
    }
  }
  return a;
}

// Why `a` is never a destination, or nullptr.
const char* never_a_destination(const Addr& a) {
  const uint8_t* b = a.bytes.data();
  if (a.v4()) {
    if (b[0] == 0) return a.all_zero() ? "the unspecified address" : "in 0.0.0.0/8 (this host)";
    if (b[0] == 169 && b[1] == 254) return "link-local";
    if ((b[0] & 0xf0) == 224) return "multicast";
    if (b[0] == 255 && b[1] == 255 && b[2] == 255 && b[3] == 255) return "the broadcast address";
    return nullptr;
  }
  if (a.family != AF_INET6) return "not an IP address";
  if (a.all_zero()) return "the unspecified address";
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return "link-local";
  if (b[0] == 0xff) return "multicast";
  return nullptr;
}

bool is_loopback(const Addr& a) {
  if (a.v4()) return a.bytes[0] == 127;
  static constexpr std::array<uint8_t, 16> kLoopback6{0, 0, 0, 0, 0, 0, 0, 0,
                                                      0, 0, 0, 0, 0, 0, 0, 1};
  return a.family == AF_INET6 && a.bytes == kLoopback6;
}

bool in_network(const std::array<uint8_t, 16>& addr, const std::array<uint8_t, 16>& network,
                unsigned prefix) {
  const unsigned whole = prefix / 8;
  if (std::memcmp(addr.data(), network.data(), whole) != 0) return false;
  const unsigned bits = prefix % 8;
  if (!bits) return true;
  const auto mask = uint8_t(0xff << (8 - bits));
  return (addr[whole] & mask) == (network[whole] & mask);
}

// Whether the entry's network lies inside loopback: 127.0.0.0/8 (prefix 8 or longer) or ::1/128.
bool loopback_entry(const config::AllowDest& d) {
  Addr network;
  network.family = d.family;
  network.bytes = d.network;
  if (d.family == AF_INET) return d.prefix >= 8 && is_loopback(network);
  return d.prefix == 128 && is_loopback(network);
}

bool covers(const config::AllowDest& d, const Addr& a) {
  if (d.family != a.family || !in_network(a.bytes, d.network, d.prefix)) return false;
  if (is_loopback(a) && !loopback_entry(d)) return false;
  if (d.ports.empty()) return true;
  for (const auto& [lo, hi] : d.ports)
    if (a.port >= lo && a.port <= hi) return true;
  return false;
}

// The flag naming the listener `a` would reach, or nullptr.
const char* own_listener(const Addr& a, const config::Config& config) {
  auto reaches = [&](const net::Endpoint& listen) {
    const Addr l = normalise(listen);
    if (l.port != a.port) return false;
    if (l.all_zero()) return true;  // 0.0.0.0 or ::: the port on every address
    return l.family == a.family && l.bytes == a.bytes;
  };
  for (const config::Config::ListenAt& l : config.hbone_listens)
    if (reaches(l.at)) return "--hbone-listen";
  for (const config::Route& r : config.routes)
    if (reaches(r.listen)) return "--forward";
  for (const config::Config::ListenAt& l : config.outbound_listens)
    if (reaches(l.at)) return "--outbound-listen";
  for (const config::Config::ListenAt& l : config.inbound_plaintext_listens)
    if (reaches(l.at)) return "--inbound-plaintext-listen";
  // The operating listeners (a CONNECT must not reach /quitquitquit or /logging from afar).
  // Their ports are compared first, so a target on another port parses nothing.
  char buffer[8];
  const std::string_view port(buffer, fmt::format_to_n(buffer, sizeof buffer, ":{}", a.port).size);
  for (const auto& [flag, text] : {std::pair{"--metrics-listen", &config.metrics_listen},
                                   std::pair{"--readiness-listen", &config.readiness_listen},
                                   std::pair{"--admin-listen", &config.admin_listen}}) {
    if (*text == "off" || !text->ends_with(port)) continue;
    net::Endpoint at;
    if (net::parse_endpoint(*text, at).empty() && reaches(at)) return flag;
  }
  return nullptr;
}

}  // namespace

bool covers(const config::AllowDest& entry, const net::Endpoint& target) {
  return covers(entry, normalise(target));
}

Admission admit(const net::Endpoint& target, const config::Config& config,
                const tls::SpiffeId& peer, const tls::SpiffeId& own) {
  const Addr a = normalise(target);
  if (const char* why = never_a_destination(a))
    return {Verdict::bad_target, fmt::format("target {} is {}", a.text(), why)};
  if (peer.trust_domain.empty() || peer.trust_domain != own.trust_domain)
    return {
        Verdict::foreign_trust_domain,
        fmt::format("peer trust domain {} is not ours ({})",
                    peer.trust_domain.empty() ? "(none)" : peer.trust_domain, own.trust_domain)};
  if (const char* flag = own_listener(a, config))
    return {Verdict::own_listener, fmt::format("target {} is our own {} listener", a.text(), flag)};
  for (const config::AllowDest& d : config.allow_dests)
    if (covers(d, a)) return {};
  if (config.allow_dests.empty())
    return {Verdict::not_allowed, "no --allow-dest is given: every target is refused"};
  if (is_loopback(a))
    return {Verdict::not_allowed,
            fmt::format("loopback target {} is not in a loopback --allow-dest", a.text())};
  return {Verdict::not_allowed, fmt::format("target {} is in no --allow-dest", a.text())};
}

Admission admit_mesh(const net::Endpoint& target, const config::Config& config,
                     const workload::State& state, const workload::Workload& local,
                     const net::Endpoint& source, const tls::SpiffeId* peer,
                     const tls::SpiffeId& own) {
  const Addr a = normalise(target);
  if (const char* why = never_a_destination(a))
    return {Verdict::bad_target, fmt::format("target {} is {}", a.text(), why)};
  if (peer && (peer->trust_domain.empty() || peer->trust_domain != own.trust_domain))
    return {
        Verdict::foreign_trust_domain,
        fmt::format("peer trust domain {} is not ours ({})",
                    peer->trust_domain.empty() ? "(none)" : peer->trust_domain, own.trust_domain)};
  const auto dst = net::IpAddress::from_sockaddr(target.addr(), target.length);
  if (!dst || !local.has_ip(*dst))
    return {Verdict::not_local,
            fmt::format("target {} is not an address of the local workload", a.text())};
  if (const char* flag = own_listener(a, config))
    return {Verdict::own_listener, fmt::format("target {} is our own {} listener", a.text(), flag)};
  const auto src = net::IpAddress::from_sockaddr(source.addr(), source.length);
  std::optional<workload::PeerIdentity> identity;
  if (peer) identity.emplace(peer->trust_domain, peer->ns, peer->sa);
  workload::Connection c;
  c.src_ip = src.value_or(net::IpAddress{});
  c.src_port = source.port();
  c.dst_ip = *dst;
  c.dst_port = target.port();
  c.src_identity = identity ? &*identity : nullptr;
  const workload::Verdict v = workload::authorize(state, local, c);
  if (!v.allowed()) return {Verdict::denied, v.describe(), v.describe_dry_run()};
  return {Verdict::allow, {}, v.describe_dry_run()};
}

std::string dry_run_line(unsigned worker, const Admission& admission, std::string_view client,
                         std::string_view identity, std::string_view target) {
  if (admission.dry_run.empty()) return {};
  return fmt::format(
      "ringtunnel: worker {}: authorization dry-run: {} (client {}, identity {}, target {}; "
      "enforced: {})",
      worker, admission.dry_run, client, identity.empty() ? "(none)" : identity, target,
      admission.verdict == Verdict::allow ? "allow" : admission.reason);
}

int http_status(Verdict verdict) {
  switch (verdict) {
    case Verdict::allow:
      return 200;
    case Verdict::bad_target:
      return 400;
    case Verdict::own_listener:
      return 503;
    case Verdict::not_allowed:
    case Verdict::foreign_trust_domain:
    case Verdict::denied:
      return 401;
    case Verdict::not_local:
      return 400;
  }
  return 500;
}

EndReason end_reason(Verdict verdict) {
  switch (verdict) {
    case Verdict::allow:
      return EndReason::none;
    case Verdict::bad_target:
    case Verdict::not_local:
      return EndReason::bad_request;
    case Verdict::own_listener:
      return EndReason::refused;
    case Verdict::not_allowed:
    case Verdict::foreign_trust_domain:
    case Verdict::denied:
      return EndReason::denied;
  }
  return EndReason::error;
}

std::string_view to_string(Verdict verdict) {
  switch (verdict) {
    case Verdict::allow:
      return "allow";
    case Verdict::bad_target:
      return "bad_target";
    case Verdict::own_listener:
      return "own_listener";
    case Verdict::not_allowed:
      return "not_allowed";
    case Verdict::foreign_trust_domain:
      return "foreign_trust_domain";
    case Verdict::not_local:
      return "not_local";
    case Verdict::denied:
      return "denied";
  }
  return "?";
}

}  // namespace ringtunnel::proxy

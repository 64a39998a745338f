// Where an accepted client goes, decided once at its accept: from its listener's --forward route,
// or, for a captured connection, from the workload config and its original destination.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "ringtunnel/config/config.h"
#include "ringtunnel/net/address.h"

namespace ringtunnel::proxy {

// Plain TCP to `target`.
struct TcpTarget {
  net::Endpoint target;
  const std::string* listener = nullptr;     // the listener's text, for the log (in Config)
  const std::string* target_text = nullptr;  // for the log; null: `target` formatted
};

// An HBONE stream: CONNECT `authority` through a pooled connection to `peer`, which must present
// `identity`. Immutable and shared: by every stream of a route, or by one captured connection.
struct HboneTarget {
  const std::string* listener = nullptr;  // the listener's text, for the log (in Config)
  std::string authority;                  // the CONNECT's :authority, and the log's target
  net::Endpoint peer;
  std::string peer_text;
  std::string identity;   // the SPIFFE ID the peer must present
  uint32_t pool_key = 0;  // OutboundPool: targets with the same peer and identity share it
  // Captured connections (as a node proxy sends them): the `baggage` header describing the
  // source workload, and the destination service's hostname for `forwarded: for=...;host=`.
  std::string baggage;
  std::string forwarded_host;
};

// A --forward route's target.
TcpTarget tcp_target(const config::Route& route);

// The client named by an inbound CONNECT's `forwarded` header: the value of its `for=` element
// (`for="1.2.3.4:5"`, quotes removed, or a bare token), whichever of the `;`-separated elements
// it is (`for="...";host=svc` as a node proxy sends it for a service). nullopt when there is
// none or it is empty. Only ever logged: the peer is trusted no further than its certificate.
std::optional<std::string_view> forwarded_for(std::string_view header);
// The same for its `host=` element (`for="...";host=web.ns.svc.cluster.local`).
std::optional<std::string_view> forwarded_host(std::string_view header);

}  // namespace ringtunnel::proxy

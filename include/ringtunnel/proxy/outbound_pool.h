// The outbound HBONE connections of a worker, by key: targets with the same peer and the same
// expected identity share connections, up to each one's stream limit. A --forward route's key is
// computed once at start, so a routed client costs no string compares; a captured connection's
// target gets its key from one hash lookup. Only the key's own connections are looked at.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringtunnel/config/config.h"
#include "ringtunnel/proxy/destination.h"
#include "ringtunnel/proxy/ops.h"

namespace ringtunnel::proxy {

class HboneConnection;
class WorkerContext;

class OutboundPool {
 public:
  explicit OutboundPool(const config::Config& config);

  // The target of --forward route `route` (an hbone:// one).
  const std::shared_ptr<const HboneTarget>& route_target(uint16_t route) const {
    return routes_[route];
  }
  // A target decided at accept (a captured connection), with its pool key.
  std::shared_ptr<HboneTarget> target(const std::string* listener, std::string authority,
                                      const net::Endpoint& peer, std::string identity);

  // A connection for a new stream to `to`: the lowest-slot connection of its key that takes a
  // stream (HboneConnection::accepts_stream), else a new one, dialling. Null when no slot is
  // left. The caller checks closing(): a new connection can fail at once.
  HboneConnection* connection_for(WorkerContext& ctx, const std::shared_ptr<const HboneTarget>& to);
  // A connection of the pool is released.
  void forget(const HboneConnection& conn);
  size_t size() const;  // connections in the pool

 private:
  uint32_t key_of(const std::string& peer_text, const std::string& identity);

  std::vector<std::shared_ptr<const HboneTarget>> routes_;  // per route (null: not hbone)
  uint32_t route_keys_ = 0;  // keys below this belong to routes and are never given back
  std::unordered_map<std::string, uint32_t> keys_;  // peer_text + '\n' + identity
  std::vector<std::vector<Slot>> by_key_;           // the connections of each key
  std::vector<std::string> key_names_;              // by key: its entry in keys_ ("": unused)
  std::vector<uint32_t> free_keys_;
};

}  // namespace ringtunnel::proxy

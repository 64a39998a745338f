// The outbound HBONE connections of a worker, by key: routes to the same peer expecting the same
// identity (the node's own identity is one per process) share connections, up to each one's
// stream limit. Keys are dense ids computed once from the configuration, so an accepted client
// costs no string compares, and only its own key's connections are looked at.
#pragma once

#include <cstdint>
#include <vector>

#include "ringtunnel/config/config.h"
#include "ringtunnel/proxy/ops.h"

namespace ringtunnel::proxy {

class HboneConnection;
class WorkerContext;

class OutboundPool {
 public:
  explicit OutboundPool(const config::Config& config);

  // A connection for a new stream of route `route`: the lowest-slot connection of its key that
  // takes a stream (HboneConnection::accepts_stream), else a new one, dialling. Null when no
  // slot is left. The caller checks closing(): a new connection can fail at once.
  HboneConnection* connection_for(WorkerContext& ctx, uint16_t route);
  // A connection of the pool is released.
  void forget(const HboneConnection& conn);
  size_t size() const;  // connections in the pool

 private:
  std::vector<uint32_t> key_of_route_;     // per route (only hbone routes have one)
  std::vector<std::vector<Slot>> by_key_;  // the connections of each key
};

}  // namespace ringtunnel::proxy

#include "ringtunnel/proxy/outbound_pool.h"

#include <algorithm>

#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/hbone_connection.h"

namespace ringtunnel::proxy {

OutboundPool::OutboundPool(const config::Config& config) {
  key_of_route_.assign(config.routes.size(), UINT32_MAX);
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const config::Route& r = config.routes[i];
    if (r.kind != config::Route::Kind::hbone) continue;
    for (size_t j = 0; j < i && key_of_route_[i] == UINT32_MAX; ++j) {
      const config::Route& o = config.routes[j];
      if (o.kind == config::Route::Kind::hbone && o.peer_text == r.peer_text &&
          o.identity == r.identity)
        key_of_route_[i] = key_of_route_[j];
    }
    if (key_of_route_[i] == UINT32_MAX) {
      key_of_route_[i] = uint32_t(by_key_.size());
      by_key_.emplace_back();
    }
  }
}

HboneConnection* OutboundPool::connection_for(WorkerContext& ctx, uint16_t route) {
  std::vector<Slot>& conns = by_key_[key_of_route_[route]];
  HboneConnection* best = nullptr;
  for (const Slot& ref : conns) {
    HboneConnection* c = ctx.conn(ref);
    if (c && c->accepts_stream() && (!best || c->slot.index < best->slot.index)) best = c;
  }
  if (best) return best;
  HboneConnection* fresh = ctx.new_conn();
  if (!fresh) return nullptr;
  conns.push_back(fresh->slot);
  fresh->open_outbound(route);
  return fresh;
}

void OutboundPool::forget(const HboneConnection& conn) {
  std::vector<Slot>& conns = by_key_[key_of_route_[conn.info().route]];
  const auto at = std::find_if(conns.begin(), conns.end(), [&](const Slot& s) {
    return s.index == conn.slot.index && s.generation == conn.slot.generation;
  });
  if (at == conns.end()) return;
  *at = conns.back();
  conns.pop_back();
}

size_t OutboundPool::size() const {
  size_t n = 0;
  for (const auto& conns : by_key_)
    n += conns.size();
  return n;
}

}  // namespace ringtunnel::proxy

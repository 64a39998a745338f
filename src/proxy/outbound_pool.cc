#include "ringtunnel/proxy/outbound_pool.h"

#include <algorithm>

#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/hbone_connection.h"

namespace ringtunnel::proxy {

OutboundPool::OutboundPool(const config::Config& config) {
  routes_.resize(config.routes.size());
  for (size_t i = 0; i < config.routes.size(); ++i) {
    const config::Route& r = config.routes[i];
    if (r.kind != config::Route::Kind::hbone) continue;
    auto t = std::make_shared<HboneTarget>();
    t->listener = &r.listen_text;
    t->authority = r.target_text;
    t->peer = r.peer;
    t->peer_text = r.peer_text;
    t->identity = r.identity;
    t->pool_key = key_of(r.peer_text, r.identity);
    routes_[i] = std::move(t);
  }
  route_keys_ = uint32_t(by_key_.size());
}

uint32_t OutboundPool::key_of(const std::string& peer_text, const std::string& identity) {
  std::string name = peer_text + '\n' + identity;
  if (const auto at = keys_.find(name); at != keys_.end()) return at->second;
  uint32_t key;
  if (!free_keys_.empty()) {
    key = free_keys_.back();
    free_keys_.pop_back();
  } else {
    key = uint32_t(by_key_.size());
    by_key_.emplace_back();
    key_names_.emplace_back();
  }
  key_names_[key] = name;
  keys_.emplace(std::move(name), key);
  return key;
}

std::shared_ptr<HboneTarget> OutboundPool::target(const std::string* listener,
                                                  std::string authority, const net::Endpoint& peer,
                                                  std::string identity) {
  auto t = std::make_shared<HboneTarget>();
  t->listener = listener;
  t->authority = std::move(authority);
  t->peer = peer;
  t->peer_text = peer.to_string();
  t->identity = std::move(identity);
  t->pool_key = key_of(t->peer_text, t->identity);
  return t;
}

HboneConnection* OutboundPool::connection_for(WorkerContext& ctx,
                                              const std::shared_ptr<const HboneTarget>& to) {
  std::vector<Slot>& conns = by_key_[to->pool_key];
  HboneConnection* best = nullptr;
  for (const Slot& ref : conns) {
    HboneConnection* c = ctx.conn(ref);
    if (c && c->accepts_stream() && (!best || c->slot.index < best->slot.index)) best = c;
  }
  if (best) return best;
  HboneConnection* fresh = ctx.new_conn();
  if (!fresh) return nullptr;
  conns.push_back(fresh->slot);
  fresh->open_outbound(to);
  return fresh;
}

void OutboundPool::forget(const HboneConnection& conn) {
  const uint32_t key = conn.info().pool_key;
  std::vector<Slot>& conns = by_key_[key];
  const auto at = std::find_if(conns.begin(), conns.end(), [&](const Slot& s) {
    return s.index == conn.slot.index && s.generation == conn.slot.generation;
  });
  if (at == conns.end()) return;
  *at = conns.back();
  conns.pop_back();
  // A captured destination's key goes once its last connection has: keys stay bounded by the
  // destinations in use, not by every destination ever dialled.
  if (conns.empty() && key >= route_keys_) {
    keys_.erase(key_names_[key]);
    key_names_[key].clear();
    free_keys_.push_back(key);
  }
}

size_t OutboundPool::size() const {
  size_t n = 0;
  for (const auto& conns : by_key_)
    n += conns.size();
  return n;
}

}  // namespace ringtunnel::proxy

// WorkerContext's construction and its access to the objects' tables (context.h), kept here so that
// an object's source needs no other object's header to reach its own slot or a sibling's.
#include "ringtunnel/proxy/objects.h"

namespace ringtunnel::proxy {

WorkerContext::WorkerContext(unsigned worker_id, const config::Config& cfg,
                             const tls::Credentials* node_identity, ring::Submitter& ring,
                             ring::BufferPool& recv_pool, ring::BufferPool& tls_recv_pool,
                             AccessLog* log)
    : pool(recv_pool),
      tls_pool(tls_recv_pool),
      give_back([this](uint8_t cls, uint16_t bid) { pool.give_back(cls, bid); }),
      id(worker_id),
      metrics(worker_id),
      config(cfg),
      identity(node_identity),
      budgets(worker_id, cfg),
      ring_(ring),
      log_(log),
      objects_(std::make_unique<Objects>(cfg)) {
  metrics.traffic.configure(cfg.metrics_max_series,
                            uint64_t(cfg.metrics_series_expiry_ms) * 1'000'000u);
  metrics.data_pool = &recv_pool.counters();
  metrics.tls_pool = &tls_recv_pool.counters();
  connect_timeout_.tv_sec = cfg.connect_timeout_ms / 1000;
  connect_timeout_.tv_nsec = (cfg.connect_timeout_ms % 1000) * 1'000'000;
}

WorkerContext::~WorkerContext() = default;

HboneConnection* WorkerContext::new_conn() {
  return objects_->conns.acquire(*this);
}

HboneStream* WorkerContext::new_stream() {
  return objects_->streams.acquire(*this);
}

HboneConnection* WorkerContext::conn(const Slot& ref) {
  HboneConnection* c = objects_->conns.find(ref);
  return c && c->live() ? c : nullptr;
}

uint32_t WorkerContext::live_streams() const {
  return objects_->streams.live();
}

OutboundPool& WorkerContext::outbound() {
  return objects_->outbound;
}

void WorkerContext::release(Relay& r) {
  objects_->relays.release(r);
}

void WorkerContext::release(HboneConnection& c) {
  objects_->conns.release(c);
}

void WorkerContext::release(HboneStream& s) {
  objects_->streams.release(s);
}

}  // namespace ringtunnel::proxy

#include "ringtunnel/proxy/context.h"

#include <fmt/format.h>

#include "ringtunnel/proxy/log.h"
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
      config(cfg),
      identity(node_identity),
      budgets(worker_id, cfg),
      ring_(ring),
      log_(log),
      objects_(std::make_unique<Objects>(cfg)) {
  connect_timeout_.tv_sec = cfg.connect_timeout_ms / 1000;
  connect_timeout_.tv_nsec = (cfg.connect_timeout_ms % 1000) * 1'000'000;
}

WorkerContext::~WorkerContext() = default;

void WorkerContext::access(const AccessRecord& record, std::string_view reason) {
  append_access_line(log_batch, record, reason);
}

void WorkerContext::log_bug(std::string_view what) {
  log_line(fmt::format("ringtunnel: worker {}: internal error: {}", id, what));
}

std::string_view to_string(Op op) {
  switch (op) {
    case Op::none:
      return "none";
    case Op::connect:
      return "connect";
    case Op::connect_timeout:
      return "connect_timeout";
    case Op::recv:
      return "recv";
    case Op::send:
      return "send";
    case Op::shutdown:
      return "shutdown";
    case Op::cancel:
      return "cancel";
    case Op::close:
      return "close";
    case Op::poll:
      return "poll";
    case Op::splice_in:
      return "splice_in";
    case Op::splice_out:
      return "splice_out";
    case Op::accept:
      return "accept";
    case Op::wake:
      return "wake";
  }
  return "?";
}

}  // namespace ringtunnel::proxy

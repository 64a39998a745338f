#include "ringtunnel/proxy/context.h"

#include <fmt/format.h>

#include "ringtunnel/net/address.h"
#include "ringtunnel/net/ip.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/workload/state.h"

namespace ringtunnel::proxy {

namespace {

// The workload of the config that owns the address in `text` ("ip:port"), or null.
const workload::Workload* workload_at(const workload::State& state, std::string_view network,
                                      std::string_view text) {
  net::Endpoint at;
  if (text.empty() || !net::parse_endpoint(text, at).empty()) return nullptr;
  const auto ip = net::IpAddress::from_sockaddr(at.addr(), at.length);
  return ip ? state.workload_by_ip(network, *ip) : nullptr;
}

}  // namespace

void WorkerContext::access(const AccessRecord& record, std::string_view reason) {
  if (config.log_format != config::Config::LogFormat::json)
    return append_access_line(log_batch, record, reason);
  if (!state || !local) return append_access_json(log_batch, record, reason);
  // The workloads at both ends, as the config knows them (the destination by the CONNECT's
  // target when the connection was tunnelled).
  AccessRecord r = record;
  const std::string_view dst = !r.hbone_addr.empty() ? r.hbone_addr
                               : !r.dst_addr.empty() ? r.dst_addr
                                                     : r.target;
  if (const workload::Workload* w = workload_at(*state, local->network, r.client)) {
    r.src_workload = w->workload_name.empty() ? w->name : w->workload_name;
    r.src_namespace = w->namespace_;
  }
  if (const workload::Workload* w = workload_at(*state, local->network, dst)) {
    r.dst_workload = w->workload_name.empty() ? w->name : w->workload_name;
    r.dst_namespace = w->namespace_;
  }
  append_access_json(log_batch, r, reason);
}

void WorkerContext::take_identity() {
  identity_ref_ = credential_store->current(&identity_generation_);
  identity = identity_ref_.get();
}

void WorkerContext::log_bug(std::string_view what) {
  log_line(LogLevel::error, fmt::format("ringtunnel: worker {}: internal error: {}", id, what));
}

void WorkerContext::unexpected(std::string_view owner, Op op, int res) {
  log_bug(fmt::format("{}: completion of {} (res {})", owner, to_string(op), res));
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

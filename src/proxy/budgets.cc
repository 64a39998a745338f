#include "ringtunnel/proxy/budgets.h"

#include <fmt/format.h>

#include "ringtunnel/h2/session.h"
#include "ringtunnel/proxy/clock.h"
#include "ringtunnel/proxy/log.h"

namespace ringtunnel::proxy {

namespace {

constexpr uint64_t kRefusalLogNs = 1'000'000'000;

}  // namespace

bool Budgets::admit_connection(bool hbone_forward, uint32_t live_streams) {
  std::optional<Refusal> refused;
  if (accepted_live_ >= config_.max_connections)
    refused = Refusal::connections;
  else if (over_memory())
    refused = Refusal::memory;
  else if (hbone_forward && live_streams >= config_.max_streams)
    refused = Refusal::streams;
  if (refused) {
    refuse(*refused);
    return false;
  }
  ++accepted_live_;
  return true;
}

bool Budgets::over_memory() const {
  return heap_ + config_.buffer_sizes.back() > config_.memory_budget;
}

bool Budgets::admit_handshake(const std::string& source) {
  if (handshakes_ >= config_.max_handshakes) {
    refuse(Refusal::over_handshakes);
    return false;
  }
  const auto at = handshakes_by_source_.find(source);
  if (at != handshakes_by_source_.end() && at->second >= config_.max_handshakes_per_source) {
    refuse(Refusal::over_source);
    return false;
  }
  return true;
}

void Budgets::handshake_started(const std::string& source) {
  ++handshakes_;
  ++handshakes_by_source_[source];
}

void Budgets::handshake_ended(const std::string& source) {
  --handshakes_;
  const auto at = handshakes_by_source_.find(source);
  if (at != handshakes_by_source_.end() && --at->second == 0) handshakes_by_source_.erase(at);
}

std::optional<Refusal> Budgets::inbound_stream_refusal(uint32_t conn_held, uint32_t live_streams) {
  std::optional<Refusal> refused;
  if (conn_held >= h2::SessionOptions{}.server_max_streams)
    refused = Refusal::conn_streams;
  else if (over_memory())
    refused = Refusal::memory;
  else if (live_streams >= config_.max_streams)
    refused = Refusal::streams;
  if (refused) refuse(*refused);
  return refused;
}

void Budgets::refuse(Refusal what) {
  ++refused_[size_t(what)];
  if (!refusals_due_ns_) refusals_due_ns_ = monotonic_ns() + kRefusalLogNs;
}

void Budgets::write_refusals() {
  auto n = [&](Refusal r) { return refused_[size_t(r)]; };
  std::string parts;
  auto part = [&](uint64_t count, std::string_view what) {
    if (!count) return;
    if (!parts.empty()) parts += ", ";
    parts += fmt::format("{} {}", count, what);
  };
  const uint64_t before = n(Refusal::over_source) + n(Refusal::over_handshakes) +
                          n(Refusal::handshake_timeout) + n(Refusal::client_gone);
  if (before) {
    part(n(Refusal::over_source),
         fmt::format("over the per-source cap (--max-handshakes-per-source {})",
                     config_.max_handshakes_per_source));
    part(n(Refusal::over_handshakes),
         fmt::format("over the handshake cap (--max-handshakes {})", config_.max_handshakes));
    part(n(Refusal::handshake_timeout), "handshake timeouts");
    part(n(Refusal::client_gone), "closed by the client before sending a byte");
    log_line(
        LogLevel::warn,
        fmt::format(
            "ringtunnel: worker {}: hbone: {} connections closed before the handshake in the last "
            "1 s: {}",
            id_, before, parts));
  }
  parts.clear();
  part(n(Refusal::connections),
       fmt::format("connections over --max-connections {}", config_.max_connections));
  part(n(Refusal::streams),
       fmt::format("HBONE streams over --max-streams {}", config_.max_streams));
  part(n(Refusal::memory),
       fmt::format("connections and streams over --memory-budget {} ({} bytes held)",
                   config_.memory_budget, heap_));
  part(n(Refusal::conn_streams), fmt::format("CONNECTs over their connection's {} streams",
                                             h2::SessionOptions{}.server_max_streams));
  if (!parts.empty())
    log_line(LogLevel::warn,
             fmt::format("ringtunnel: worker {}: limits: refused in the last 1 s: {}", id_, parts));
  refused_ = {};
  refusals_due_ns_ = 0;
}

void Budgets::timers(uint64_t now, std::optional<int64_t>& timeout) {
  if (!refusals_due_ns_) return;
  if (now >= refusals_due_ns_) return write_refusals();
  timeout = std::min(timeout.value_or(INT64_MAX), int64_t(refusals_due_ns_ - now));
}

}  // namespace ringtunnel::proxy

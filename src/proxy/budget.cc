// Budgets: every resource a client can make a worker hold has a limit. Connections of every
// listener (--max-connections), HBONE streams both ways (--max-streams), streams per inbound
// connection (the session's advertised limit, counted until the TCP side is released too), TLS
// handshakes in progress (--max-handshakes, --max-handshakes-per-source), inbound connections
// with no stream (--hbone-idle-timeout) and outbound streams waiting for their CONNECT response
// (--connect-timeout). What is refused is counted and logged once a second, never a line each:
// a flood must not turn into a flood of log lines.
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/worker.h"

namespace ringtunnel::proxy {

namespace {

constexpr uint64_t kRefusalLogNs = 1'000'000'000;
// Accepts stopped by a lack of descriptors are tried again this often, whoever frees one (this
// worker, another worker, or another process).
constexpr uint64_t kAcceptRetryNs = 100'000'000;

}  // namespace

bool Worker::admit_connection(int fd, uint16_t route) {
  uint64_t* refused = nullptr;
  if (accepted_live_ >= config_.max_connections)
    refused = &refused_.connections;
  else if (over_memory_budget())
    refused = &refused_.memory;
  else if (route != kHboneListener && config_.routes[route].kind == config::Route::Kind::hbone &&
           streams_.live() >= config_.max_streams)
    refused = &refused_.streams;
  if (refused) {
    net::arm_reset_on_close(fd);
    close(fd);
    count_refusal(*refused);
    return false;
  }
  ++accepted_live_;
  return true;
}

// The heap the worker holds for stalled connections' bytes (moved out of the pool) has reached
// --memory-budget: new connections and streams are refused until it drains; the ones open go on.
// Tunnel bytes whose window came back early are not counted here: they are bytes on their way
// to a target that reads more slowly than its peer sends, which is healthy traffic, and they have
// a cap of their own (h2_data).
bool Worker::over_memory_budget() const {
  // Spent once not even one more largest receive buffer could move out of the pool.
  return heap_bytes_ + config_.buffer_sizes.back() > config_.memory_budget;
}

bool Worker::admit_handshake(const std::string& source) {
  if (handshakes_ >= config_.max_handshakes) {
    count_refusal(refused_.over_handshakes);
    return false;
  }
  const auto at = handshakes_by_source_.find(source);
  if (at != handshakes_by_source_.end() && at->second >= config_.max_handshakes_per_source) {
    count_refusal(refused_.over_source);
    return false;
  }
  return true;
}

void Worker::end_handshake(HboneConn& c) {
  if (!c.in_handshake) return;
  c.in_handshake = false;
  --handshakes_;
  const auto at = handshakes_by_source_.find(c.source);
  if (at != handshakes_by_source_.end() && --at->second == 0) handshakes_by_source_.erase(at);
}

void Worker::conn_released(HboneConn& c) {
  end_handshake(c);
  if (c.inbound) --accepted_live_;
}

// A CONNECT counts against its connection's limit until its stream is released, not only while
// the session has it open: a stream whose HTTP/2 side has ended may still hold a target socket
// and queued bytes.
bool Worker::admit_inbound_stream(HboneConn& c, int32_t id) {
  uint64_t* refused = nullptr;
  if (c.held_streams >= h2::SessionOptions{}.server_max_streams)
    refused = &refused_.conn_streams;
  else if (over_memory_budget())
    refused = &refused_.memory;
  else if (streams_.live() >= config_.max_streams)
    refused = &refused_.streams;
  if (refused) {
    c.h2->submit_response(id, 503);
    schedule_conn(c);
    count_refusal(*refused);
    return false;
  }
  ++c.held_streams;
  return true;
}

void Worker::stream_released(HboneStream& s) {
  if (!s.inbound) {
    --accepted_live_;  // the client connection accepted on a --forward hbone:// listener
    return;
  }
  HboneConn* c = conns_.find(s.conn_index, s.conn_generation);
  if (!c || c->state == HboneConn::State::free || !c->held_streams) return;
  if (--c->held_streams == 0) c->idle_since_ns = monotonic_ns();
}

// Closes an inbound connection whose handshake never completed, without a log line of its own.
void Worker::close_before_handshake(HboneConn& c, uint64_t& count, const char* reason) {
  if (c.state == HboneConn::State::closing || c.state == HboneConn::State::free) return;
  count_refusal(count);
  c.state = HboneConn::State::closing;
  c.failure = reason;
  abandon_conn(c);  // nothing to say to a client that never finished its handshake
}

void Worker::handshake_timed_out(HboneConn& c) {
  if (c.inbound)
    close_before_handshake(c, refused_.handshake_timeouts, "TLS handshake timed out");
  else
    fail_conn(c, "TLS handshake timed out");
}

// An inbound connection with no stream for --hbone-idle-timeout closes gracefully (GOAWAY).
bool Worker::inbound_idle(HboneConn& c, uint64_t now) {
  if (!c.inbound || c.held_streams || c.graceful || !c.idle_since_ns ||
      now - c.idle_since_ns < uint64_t(config_.hbone_idle_timeout_ms) * 1'000'000u)
    return false;
  close_conn_gracefully(c);
  return true;
}

// An outbound stream whose CONNECT is on an open connection but unanswered after
// --connect-timeout is reset both ways. (Streams still waiting for their connection's handshake
// are bounded by its deadline.)
void Worker::opening_deadlines(uint64_t now) {
  const uint64_t limit = uint64_t(config_.connect_timeout_ms) * 1'000'000u;
  streams_.for_each([&](HboneStream& s) {
    if (s.inbound || s.state != HboneStream::State::opening || !s.conn || s.id < 0) return;
    if (now - s.start_ns >= limit) end_stream(s, EndReason::connect_timeout, true);
  });
}

void Worker::count_refusal(uint64_t& count) {
  ++count;
  if (!refusals_due_ns_) refusals_due_ns_ = monotonic_ns() + kRefusalLogNs;
}

void Worker::write_refusals() {
  Refusals& r = refused_;
  std::string parts;
  auto part = [&](uint64_t n, std::string_view what) {
    if (!n) return;
    if (!parts.empty()) parts += ", ";
    parts += fmt::format("{} {}", n, what);
  };
  const uint64_t before = r.over_source + r.over_handshakes + r.handshake_timeouts + r.client_gone;
  if (before) {
    part(r.over_source, fmt::format("over the per-source cap (--max-handshakes-per-source {})",
                                    config_.max_handshakes_per_source));
    part(r.over_handshakes,
         fmt::format("over the handshake cap (--max-handshakes {})", config_.max_handshakes));
    part(r.handshake_timeouts, "handshake timeouts");
    part(r.client_gone, "closed by the client before sending a byte");
    log_line(fmt::format(
        "ringtunnel: worker {}: hbone: {} connections closed before the handshake in the last "
        "1 s: {}",
        id_, before, parts));
  }
  parts.clear();
  part(r.connections,
       fmt::format("connections over --max-connections {}", config_.max_connections));
  part(r.streams, fmt::format("HBONE streams over --max-streams {}", config_.max_streams));
  part(r.memory, fmt::format("connections and streams over --memory-budget {} ({} bytes held)",
                             config_.memory_budget, heap_bytes_));
  part(r.conn_streams, fmt::format("CONNECTs over their connection's {} streams",
                                   h2::SessionOptions{}.server_max_streams));
  if (!parts.empty())
    log_line(fmt::format("ringtunnel: worker {}: limits: refused in the last 1 s: {}", id_, parts));
  r = {};
  refusals_due_ns_ = 0;
}

// Timers of the budgets: the refusal log, and accepts stopped by a lack of descriptors. Lowers
// `timeout` (the loop's wait) to the next one due.
void Worker::budget_timers(uint64_t now, std::optional<int64_t>& timeout) {
  auto wait_until = [&](uint64_t due) {
    const auto left = int64_t(due - std::min(now, due));
    timeout = std::min(timeout.value_or(INT64_MAX), left);
  };
  if (refusals_due_ns_) {
    if (now >= refusals_due_ns_)
      write_refusals();
    else
      wait_until(refusals_due_ns_);
  }
  if (!accept_blocked_ || draining_) {
    accept_retry_ns_ = 0;
    return;
  }
  if (!accept_retry_ns_) accept_retry_ns_ = now + kAcceptRetryNs;
  if (now >= accept_retry_ns_) {
    // accept_blocked_ stays set (a release clears it), so a failing retry is not logged again.
    accept_retry_ns_ = now + kAcceptRetryNs;
    for (size_t i = 0; i < listeners_.size(); ++i)
      if (!listeners_[i].armed && !listeners_[i].closed) arm_accept(i);
  }
  wait_until(accept_retry_ns_);
}

}  // namespace ringtunnel::proxy

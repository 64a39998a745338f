#include "ringtunnel/proxy/worker.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/log.h"

namespace ringtunnel::proxy {

namespace {

// An accept names its listener in the tag's index: the 8-bit lane would wrap at 256 listeners.
// Routes are numbered in 16 bits (Listener::route) with the last value meaning --hbone-listen,
// so config::kMaxRoutes of them plus that one always fit.
static_assert(config::kMaxRoutes + 1 <= size_t{ring::OpTag::kIndexMask} + 1);
static_assert(config::kMaxRoutes <= UINT16_MAX);

uint64_t accept_tag(size_t listener) {
  return ring::encode({uint8_t(OpKind::accept), 0, uint32_t(listener), 0});
}

// The longest the loop waits for more completions than it strictly needs (see quiet_sends_).
// Long enough to cover the gap between two reads of a bulk stream, short next to the megabytes a
// loopback socket buffers.
constexpr int64_t kQuietWaitNs = 1'000'000;
// Pool pressure: fewer than this fraction (1/kPressureFraction) of the receive pool's bytes are
// with the kernel, or somebody waits for buffers. Then holders that have not moved for kStallNs
// move their bytes to the heap, checked at most every kPressureScanNs. A quarter: enough head
// room for the reads of the next few loop iterations of the connections that do move. 50 ms: a
// reader that keeps up never waits that long between two sends of a bulk stream.
constexpr size_t kPressureFraction = 4;
constexpr uint64_t kStallNs = 50'000'000;
constexpr uint64_t kPressureScanNs = 10'000'000;

}  // namespace

int64_t unix_ms() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

bool is_reset(int err) {
  return err == ECONNRESET || err == EPIPE || err == ECONNABORTED;
}

uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000u + uint64_t(ts.tv_nsec);
}

Worker::Worker(unsigned id, const config::Config& config, AccessLog& log,
               const tls::Credentials* identity)
    : id_(id), config_(config), log_(log), identity_(identity) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  connect_timeout_.tv_sec = config.connect_timeout_ms / 1000;
  connect_timeout_.tv_nsec = (config.connect_timeout_ms % 1000) * 1'000'000;
}

Worker::~Worker() {
  for (Listener& l : listeners_)
    if (l.fd >= 0) close(l.fd);
  if (wake_fd_ >= 0) close(wake_fd_);
}

void Worker::request_drain() {
  const uint64_t one = 1;
  // An eventfd write cannot fail short of a closed fd; nothing useful to do if it did.
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
}

std::string Worker::start() {
  if (wake_fd_ < 0) return fmt::format("eventfd: {}", strerror(errno));
  if (std::string err = ring_.init({config_.ring_entries, config_.sqpoll}); !err.empty())
    return err;
  // Splice relays need no receive buffers; HBONE streams do, spliced or not.
  if (!config_.tcp_splice || config_.needs_identity()) {
    ring::BufferPoolSpec spec{config_.buffer_sizes, config_.buffer_ring_entries};
    if (std::string err = pool_.init(ring_.raw(), spec); !err.empty()) return err;
    pool_.set_poison(config_.poison_buffers);
  }
  if (std::string err =
          ring::probe_features(ring_, &pool_, {config_.registered_buffers, config_.fixed_files});
      !err.empty())
    return err;
  if (config_.needs_identity()) {
    // HBONE connections give each buffer back as soon as TLS has copied it: a few suffice.
    const ring::BufferPoolSpec tls_spec{config_.buffer_sizes, {64, 64, 16}};
    if (std::string err = tls_pool_.init(ring_.raw(), tls_spec, ring::kBufferClasses); !err.empty())
      return err;
    tls_pool_.set_poison(config_.poison_buffers);
  }
  for (size_t i = 0; i < config_.routes.size(); ++i) {
    std::string err;
    const int fd = net::listen_reuseport(config_.routes[i].listen,
                                         static_cast<int>(config_.listen_backlog), err);
    if (fd < 0) return err;
    listeners_.push_back({fd, static_cast<uint16_t>(i)});
    arm_accept(i);
  }
  if (config_.hbone_listen) {
    std::string err;
    const int fd = net::listen_reuseport(config_.hbone_listen_at,
                                         static_cast<int>(config_.listen_backlog), err);
    if (fd < 0) return err;
    listeners_.push_back({fd, kHboneListener});
    arm_accept(listeners_.size() - 1);
  }
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_read(s, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(s, ring::encode({uint8_t(OpKind::wake), 0, 0, 0}));
  return {};
}

void Worker::arm_accept(size_t i) {
  Listener& l = listeners_[i];
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_multishot_accept(s, l.fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, accept_tag(i));
  l.armed = true;
}

void Worker::on_accept(size_t i, const io_uring_cqe& cqe) {
  Listener& l = listeners_[i];
  if (!(cqe.flags & IORING_CQE_F_MORE)) l.armed = false;
  if (cqe.res >= 0) {
    if (draining_)
      close(cqe.res);
    else if (!admit_connection(cqe.res, l.route))
      return;  // reset and closed: over --max-connections or --max-streams
    else if (l.route == kHboneListener)
      open_inbound_conn(cqe.res);
    else if (config_.routes[l.route].kind == config::Route::Kind::hbone)
      open_outbound_stream(cqe.res, l.route);
    else
      open_relay(cqe.res, l.route);
  } else if (!draining_ && (cqe.res == -EMFILE || cqe.res == -ENFILE || cqe.res == -ENOBUFS ||
                            cqe.res == -ENOMEM)) {
    if (!accept_blocked_)
      log_line(
          fmt::format("ringtunnel: worker {}: accept on {}: {}; accepting again when descriptors "
                      "are free (tried every 100 ms)",
                      id_,
                      l.route == kHboneListener ? config_.hbone_listen_text
                                                : config_.routes[l.route].listen_text,
                      strerror(-cqe.res)));
    accept_blocked_ = true;
  }
  if (draining_ && !l.armed && !l.closed) {
    close(l.fd);
    l.fd = -1;
    l.closed = true;
  }
}

void Worker::on_wake() {
  if (draining_) return;
  begin_drain();
  hbone_timers(monotonic_ns());  // HBONE: GOAWAY on every connection; streams in flight finish
}

void Worker::begin_drain() {
  draining_ = true;
  drain_deadline_ns_ = monotonic_ns() + uint64_t(config_.drain_timeout_ms) * 1'000'000u;
  for (size_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = listeners_[i];
    if (l.armed) {
      io_uring_sqe* s = ring_.sqe();
      io_uring_prep_cancel64(s, accept_tag(i), 0);
      io_uring_sqe_set_data64(s, ring::encode({uint8_t(OpKind::cancel), 0, 0, 0}));
    } else if (!l.closed) {
      close(l.fd);
      l.fd = -1;
      l.closed = true;
    }
  }
  if (id_ == 0)
    log_line(fmt::format(
        "ringtunnel: draining: listeners closed, waiting up to {} ms for open connections",
        config_.drain_timeout_ms));
}

void Worker::on_completion(const io_uring_cqe& cqe) {
  const ring::OpTag tag = ring::decode(cqe.user_data);
  const auto kind = OpKind(tag.kind);
  switch (kind) {
    case OpKind::accept:
      on_accept(tag.index, cqe);
      return;
    case OpKind::wake:
      on_wake();
      return;
    default:
      break;
  }
  if (tag.index == 0 && tag.generation == 0 && kind == OpKind::cancel)
    return;  // worker-level cancel
  if (kind >= OpKind::conn_connect) return on_hbone_completion(kind, tag, cqe);
  Relay* r = relays_.find(tag.index, tag.generation);
  if (!r || r->state == RelayState::free) {
    log_line(fmt::format(
        "ringtunnel: worker {}: completion for a closed connection (kind {}, res {}), ignored", id_,
        tag.kind, cqe.res));
    return;
  }
  on_relay_completion(*r, kind, tag.lane, cqe);
}

// Buffers given back since the last call go to the kernel, and whoever waited for them is
// scheduled again.
void Worker::publish_buffers() {
  const bool tls_published = tls_pool_.ready() && tls_pool_.publish();
  if (!pool_.publish() && !tls_published) return;
  for (const Service& s : starved_) {
    Relay* r = relays_.find(s.index, s.generation);
    if (!r) continue;
    r->dirs[s.dir].starved = false;
    schedule(*r, s.dir);
  }
  starved_.clear();
  for (const Starved& s : hbone_starved_) {
    if (HboneConn* c = s.conn ? conns_.find(s.index, s.generation) : nullptr) schedule_conn(*c);
    if (HboneStream* st = s.conn ? nullptr : streams_.find(s.index, s.generation))
      schedule_stream(*st);
  }
  hbone_starved_.clear();
}

void Worker::log_bug(const std::string& what) {
  log_line(fmt::format("ringtunnel: worker {}: internal error: {}", id_, what));
}

bool Worker::pool_under_pressure() const {
  if (!pool_.ready()) return false;
  if (!starved_.empty()) return true;
  for (const Starved& s : hbone_starved_)
    if (!s.conn) return true;
  size_t available = 0;
  for (uint8_t c = 0; c < ring::kBufferClasses; ++c)
    available += size_t{pool_.available(c)} * pool_.size(c);
  return available * kPressureFraction < pool_.bytes();
}

// Slow readers must not starve the others of receive buffers: when the pool runs low, every
// holder that has not moved for a while (a relay direction whose target does not read, a stream
// whose peer gives no window) copies its bytes to the heap and gives its buffers back. The heap
// is bounded by --memory-budget; the holders' reads stay paused at --max-queued as before.
void Worker::relieve_pool_pressure() {
  if (now_ns_ < next_pressure_scan_ns_ || !pool_under_pressure()) return;
  next_pressure_scan_ns_ = now_ns_ + kPressureScanNs;
  bool all_moved = true;  // false: the budget kept a stalled holder's bytes in the pool
  relays_.for_each([&](Relay& r) {
    if (r.state != RelayState::relaying) return;
    for (uint8_t d = 0; d < 2; ++d) {
      const Direction& dir = r.dirs[d];
      if (dir.queue && dir.queue->count && now_ns_ - dir.progress_ns >= kStallNs)
        all_moved &= spill(r, d);
    }
  });
  streams_.for_each([&](HboneStream& s) {
    if (s.lent.pool_bytes() && now_ns_ - s.lent_progress_ns >= kStallNs)
      all_moved &= stream_to_heap(s);
  });
  if (!all_moved) shed_stalled_holder();
}

// The pool is low and --memory-budget kept a stalled holder's bytes in it: those holders keep their
// buffers, and every other connection of the worker would starve. The one holding the most of the
// pool goes (both sides reset, end=overload): a relay, or an HBONE connection with its streams
// (closing the connection drops every reference into the pool at once; a stream's own reset may
// wait behind output its peer does not read). One per scan, so the rest are spared if that was
// enough.
void Worker::shed_stalled_holder() {
  size_t most = 0;
  Relay* relay = nullptr;
  HboneConn* conn = nullptr;
  relays_.for_each([&](Relay& r) {
    if (r.state != RelayState::relaying) return;
    size_t held = 0;
    for (const Direction& dir : r.dirs) {
      if (!dir.queue || now_ns_ - dir.progress_ns < kStallNs) continue;
      for (uint32_t i = 0; i < dir.queue->count; ++i)
        if (!dir.queue->at(i).heap) held += dir.queue->at(i).length;
    }
    if (held > most) most = held, relay = &r, conn = nullptr;
  });
  std::unordered_map<HboneConn*, size_t> by_conn;
  streams_.for_each([&](HboneStream& s) {
    if (!s.conn || !s.lent.pool_bytes() || now_ns_ - s.lent_progress_ns < kStallNs) return;
    const size_t held = by_conn[s.conn] += s.lent.pool_bytes();
    if (held > most) most = held, conn = s.conn, relay = nullptr;
  });
  if (relay) {
    log_line(fmt::format(
        "ringtunnel: worker {}: overload: receive pool low and --memory-budget {} spent; "
        "resetting the stalled connection from {} holding {} bytes of the pool",
        id_, config_.memory_budget, net::format_sockaddr(&relay->client.sa, sizeof relay->client),
        most));
    end_relay(*relay, EndReason::overload);
  } else if (conn) {
    conn->overloaded = true;
    fail_conn(*conn, fmt::format("overload: receive pool low and --memory-budget {} spent; its "
                                 "stalled streams held {} bytes of the pool",
                                 config_.memory_budget, most));
  }
}

bool Worker::stream_to_heap(HboneStream& s) {
  if (!s.conn || s.h2_closed) return true;
  if (heap_bytes_ + s.lent.pool_length() > config_.memory_budget) return false;
  h2::H2Session& session = *s.conn->h2;
  const int32_t id = s.id;
  heap_bytes_ += s.lent.to_heap(
      [&](const uint8_t* from, const uint8_t* to, size_t n) { session.relocate(id, from, to, n); },
      give_back_);
  return true;
}

void Worker::after_completions() {
  // Each round: relays, then HBONE streams (which submit to their connection's session), then
  // connections (which encrypt, and so release payloads back to streams and buffers to the
  // pool). A few rounds settle them; what is left makes the next wait return at once.
  relieve_pool_pressure();
  for (int round = 0; round < 16; ++round) {
    publish_buffers();
    if (todo_.empty() && stream_todo_.empty() && conn_todo_.empty()) break;
    // service() never schedules a relay again within the round, but index anyway: cheap.
    for (size_t i = 0; i < todo_.size(); ++i) {
      const Service s = todo_[i];
      if (Relay* r = relays_.find(s.index, s.generation)) service(*r, s.dir);
    }
    todo_.clear();
    for (size_t i = 0; i < stream_todo_.size(); ++i) {
      const auto [index, generation] = stream_todo_[i];
      if (HboneStream* s = streams_.find(index, generation)) service_stream(*s);
    }
    stream_todo_.clear();
    for (size_t i = 0; i < conn_todo_.size(); ++i) {
      const auto [index, generation] = conn_todo_[i];
      if (HboneConn* c = conns_.find(index, generation)) service_conn(*c);
    }
    conn_todo_.clear();
  }
  if (!draining_) {
    for (size_t i = 0; i < listeners_.size(); ++i)
      if (!listeners_[i].armed && !accept_blocked_) arm_accept(i);
  }
  if (!log_batch_.empty()) log_.write(log_batch_);
}

void Worker::run() {
  for (;;) {
    bool listeners_open = false;
    for (const Listener& l : listeners_)
      listeners_open |= !l.closed;
    if (draining_ && relays_.live() == 0 && !listeners_open && !has_hbone()) break;
    std::optional<int64_t> timeout;
    if (has_hbone()) {
      const uint64_t now = monotonic_ns();
      if (now >= next_tick_ns_) {
        hbone_timers(now);
        after_completions();
      }
      timeout = int64_t(next_tick_ns_ - std::min(now, next_tick_ns_));
    }
    if (draining_ && !drain_expired_) {
      const uint64_t now = monotonic_ns();
      if (now >= drain_deadline_ns_) {
        drain_expired_ = true;
        relays_.for_each([&](Relay& r) {
          if (r.state == RelayState::connecting || r.state == RelayState::relaying)
            end_relay(r, EndReason::drain_timeout);
        });
        streams_.for_each([&](HboneStream& s) {
          if (s.state == HboneStream::State::opening || s.state == HboneStream::State::open)
            end_stream(s, EndReason::drain_timeout, true);
        });
        conns_.for_each([&](HboneConn& c) {
          if (c.state == HboneConn::State::free) return;
          fail_conn(c, "drain timeout");
          abandon_conn(c);  // no waiting for a peer that does not read
        });
        after_completions();
        continue;
      }
      timeout = std::min(timeout.value_or(INT64_MAX), int64_t(drain_deadline_ns_ - now));
    }
    // Stalled holders of receive buffers are found by time: look again soon while the pool is low.
    if (pool_under_pressure())
      timeout = std::min(timeout.value_or(int64_t(kPressureScanNs)), int64_t(kPressureScanNs));
    budget_timers(monotonic_ns(), timeout);
    if (!todo_.empty() || !stream_todo_.empty() || !conn_todo_.empty()) timeout = 0;
    unsigned wait_nr = 1;
    if (quiet_sends_) {
      // Bounded: a send predicted quiet may still come back short and need a resubmission.
      wait_nr += quiet_sends_;
      timeout = std::min(timeout.value_or(kQuietWaitNs), kQuietWaitNs);
      quiet_sends_ = 0;
    }
    ring_.submit_and_wait(timeout, wait_nr);
    now_ns_ = monotonic_ns();
    ring_.drain_completions([this](const io_uring_cqe& cqe) { on_completion(cqe); });
    after_completions();
  }
}

}  // namespace ringtunnel::proxy

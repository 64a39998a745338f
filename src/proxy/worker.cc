#include "ringtunnel/proxy/worker.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/capture.h"
#include "ringtunnel/proxy/dispatch.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/objects.h"

namespace ringtunnel::proxy {

namespace {

// An accept names its listener in the tag's index: the 8-bit lane would wrap at 256 listeners.
// Routes are numbered in 16 bits (Listener::route) with the last value meaning --hbone-listen,
// so config::kMaxRoutes of them plus that one always fit.
static_assert(config::kMaxRoutes + 1 <= size_t{ring::OpTag::kIndexMask} + 1);
static_assert(config::kMaxRoutes <= UINT16_MAX - 2);  // and the worker's 3 listeners

uint64_t worker_tag(Op op, size_t index = 0) {
  return op_tag(Owner::worker, op, 0, uint32_t(index), 0);
}

// The longest the loop waits for more completions than it strictly needs (see quiet_sends).
// Long enough to cover the gap between two reads of a bulk stream, short next to the megabytes a
// loopback socket buffers.
constexpr int64_t kQuietWaitNs = 1'000'000;
// How often the loop wakes for keepalive PINGs and idle pooled connections while any exist.
constexpr uint64_t kTickNs = 1'000'000'000;
// How often a worker with a workload config looks for a reload when nothing else wakes it.
constexpr int64_t kReloadCheckNs = 500'000'000;
// Accepts stopped by a lack of descriptors are tried again this often, whoever frees one (this
// worker, another worker, or another process).
constexpr uint64_t kAcceptRetryNs = 100'000'000;
// Traffic metric series that expired are dropped this often (a quarter of
// --metrics-series-expiry, within these bounds): a series lives at most a quarter longer than
// its expiry, and a worker whose series are all idle wakes at most this often for them.
constexpr uint64_t kMinSeriesSweepNs = 100'000'000;
constexpr uint64_t kMaxSeriesSweepNs = 10'000'000'000;

}  // namespace

Worker::Worker(unsigned id, const config::Config& config, AccessLog& log,
               const tls::CredentialStore* identity)
    : id_(id),
      config_(config),
      log_(log),
      ctx_(id, config, nullptr, ring_, pool_, tls_pool_, &log) {
  if (identity) {
    ctx_.credential_store = identity;
    ctx_.take_identity();
  }
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  ctx_.store = config.store;  // null without --config
  ctx_.metrics.ring = &ring_.counters();
  refresh_state(ctx_);
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
  if (std::string err =
          ring_.init({config_.ring_entries, config_.sqpoll, config_.ring_min_wait_us});
      !err.empty())
    return err;
  // Splice relays need no receive buffers; HBONE streams do, spliced or not.
  if (!config_.tcp_splice || config_.needs_identity()) {
    // Each class starts with a step of buffers and grows when it runs low (BufferPool).
    const ring::BufferPoolSpec spec{
        config_.buffer_sizes, config_.buffer_ring_entries,
        ring::growth_steps(config_.buffer_sizes, config_.buffer_ring_entries)};
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
  publish_pool_bytes();
  for (size_t i = 0; i < config_.routes.size(); ++i) {
    std::string err;
    const int fd =
        net::listen_reuseport(config_.routes[i].listen, static_cast<int>(config_.listen_backlog),
                              err, config_.keepalive());
    if (fd < 0) return err;
    listeners_.push_back({fd, static_cast<uint16_t>(i)});
    arm_accept(i);
  }
  const std::pair<const std::vector<config::Config::ListenAt>*, uint16_t> captures[] = {
      {&config_.hbone_listens, kHboneListener},
      {&config_.outbound_listens, kOutboundListener},
      {&config_.inbound_plaintext_listens, kInboundPlaintextListener}};
  for (const auto& [listens, kind] : captures) {
    for (size_t i = 0; i < listens->size(); ++i) {
      std::string err;
      bool transparent = false;
      const bool capture = kind != kHboneListener;
      const int fd =
          net::listen_reuseport((*listens)[i].at, static_cast<int>(config_.listen_backlog), err,
                                config_.keepalive(), capture ? &transparent : nullptr);
      if (fd < 0) return err;
      if (capture && !transparent && id_ == 0)
        log_line(LogLevel::warn,
                 fmt::format("ringtunnel: {}: cannot set IP_TRANSPARENT (it needs "
                             "CAP_NET_ADMIN): TPROXY rules cannot deliver here, REDIRECT rules can",
                             (*listens)[i].text));
      listeners_.push_back({fd, kind, static_cast<uint16_t>(i)});
      arm_accept(listeners_.size() - 1);
    }
  }
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_read(s, wake_fd_, &wake_value_, sizeof wake_value_, 0);
  io_uring_sqe_set_data64(s, worker_tag(Op::wake));
  return {};
}

void Worker::arm_accept(size_t i) {
  Listener& l = listeners_[i];
  io_uring_sqe* s = ring_.sqe();
  io_uring_prep_multishot_accept(s, l.fd, nullptr, nullptr, SOCK_CLOEXEC);
  io_uring_sqe_set_data64(s, worker_tag(Op::accept, i));
  l.state = Listener::State::armed;
}

void Worker::close_listener(Listener& l) {
  close(l.fd);
  l.fd = -1;
  l.state = Listener::State::closed;
}

const std::string& Worker::listener_text(const Listener& l) const {
  switch (l.route) {
    case kHboneListener:
      return config_.hbone_listens[l.capture].text;
    case kOutboundListener:
      return config_.outbound_listens[l.capture].text;
    case kInboundPlaintextListener:
      return config_.inbound_plaintext_listens[l.capture].text;
    default:
      return config_.routes[l.route].listen_text;
  }
}

void Worker::on_accept(size_t i, const io_uring_cqe& cqe) {
  Listener& l = listeners_[i];
  if (!(cqe.flags & IORING_CQE_F_MORE) && l.state == Listener::State::armed)
    l.state = Listener::State::idle;
  const bool draining = phase_ != Phase::serving;
  if (cqe.res >= 0) {
    const int fd = cqe.res;
    const bool hbone_forward = l.route < config_.routes.size() &&
                               config_.routes[l.route].kind == config::Route::Kind::hbone;
    if (draining) {
      close(fd);
    } else if (!ctx_.budgets.admit_connection(hbone_forward, ctx_.live_streams())) {
      // Over --max-connections, --max-streams or --memory-budget: reset and closed.
      net::arm_reset_on_close(fd);
      close(fd);
      return;
    } else if (l.route == kHboneListener) {
      open_inbound_conn(ctx_, fd, listener_text(l));
    } else if (l.route == kOutboundListener) {
      open_captured_outbound(ctx_, fd, listener_text(l));
    } else if (l.route == kInboundPlaintextListener) {
      open_captured_inbound(ctx_, fd, listener_text(l));
    } else if (hbone_forward) {
      open_outbound_stream(ctx_, fd, l.route);
    } else {
      open_relay(ctx_, fd, l.route);
    }
  } else if (!draining && (cqe.res == -EMFILE || cqe.res == -ENFILE || cqe.res == -ENOBUFS ||
                           cqe.res == -ENOMEM)) {
    if (!ctx_.accept_blocked)
      log_line(
          LogLevel::warn,
          fmt::format("ringtunnel: worker {}: accept on {}: {}; accepting again when descriptors "
                      "are free (tried every 100 ms)",
                      id_, listener_text(l), strerror(-cqe.res)));
    ctx_.accept_blocked = true;
  }
  if (draining && l.state == Listener::State::idle) close_listener(l);
}

void Worker::on_wake() {
  if (phase_ != Phase::serving) return;
  begin_drain();
  tick(ctx_, monotonic_ns());  // HBONE: GOAWAY on every connection; streams in flight finish
  next_tick_ns_ = monotonic_ns() + kTickNs;
}

void Worker::begin_drain() {
  phase_ = Phase::draining;
  ctx_.draining = true;
  drain_deadline_ns_ = monotonic_ns() + uint64_t(config_.drain_timeout_ms) * 1'000'000u;
  for (size_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = listeners_[i];
    if (l.state == Listener::State::armed) {
      io_uring_sqe* s = ring_.sqe();
      io_uring_prep_cancel64(s, worker_tag(Op::accept, i), 0);
      io_uring_sqe_set_data64(s, worker_tag(Op::cancel));
    } else if (l.state == Listener::State::idle) {
      close_listener(l);
    }
  }
  if (id_ == 0)
    log_line(fmt::format(
        "ringtunnel: draining: listeners closed, waiting up to {} ms for open connections",
        config_.drain_timeout_ms));
}

void Worker::on_completion(const io_uring_cqe& cqe) {
  const ring::OpTag tag = ring::decode(cqe.user_data);
  if (Owner(tag.owner) != Owner::worker) return dispatch(ctx_, tag, cqe);
  switch (Op(tag.op)) {
    case Op::accept:
      return on_accept(tag.index, cqe);
    case Op::wake:
      return on_wake();
    case Op::cancel:
      return;  // a listener's cancel at the drain: its accept's last completion closes it
    case Op::none:
    case Op::connect:
    case Op::connect_timeout:
    case Op::recv:
    case Op::send:
    case Op::shutdown:
    case Op::close:
    case Op::poll:
    case Op::splice_in:
    case Op::splice_out:
      break;
  }
  ctx_.unexpected("worker", Op(tag.op), cqe.res);
}

void Worker::after_completions() {
  settle(ctx_);
  if (phase_ == Phase::serving && !ctx_.accept_blocked) {
    for (size_t i = 0; i < listeners_.size(); ++i)
      if (listeners_[i].state == Listener::State::idle) arm_accept(i);
  }
  // Before the log: once a connection's access line can be read, a scrape sees it counted.
  publish_metrics();
  if (!ctx_.log_batch.empty()) log_.write(ctx_.log_batch);
}

// The receive buffers provided to the ring so far (they grow with demand).
void Worker::publish_pool_bytes() {
  ctx_.metrics.registered_bytes.set((pool_.registered() ? pool_.provided_bytes() : 0) +
                                    (tls_pool_.registered() ? tls_pool_.provided_bytes() : 0));
}

// The gauges a scrape reads, once per loop iteration (they change only inside one), and the
// expired traffic series dropped at most every sweep interval.
void Worker::publish_metrics() {
  stats::WorkerMetrics& m = ctx_.metrics;
  m.streams_open.set(ctx_.live_streams());
  m.pooled_connections.set(ctx_.outbound().size());
  publish_pool_bytes();
  if (!m.traffic.idle()) return;
  const uint64_t now = ctx_.loop_now ? ctx_.loop_now : monotonic_ns();
  if (now < next_series_sweep_ns_) return;
  const uint64_t every =
      std::clamp(m.traffic.expiry_ns() / 4, kMinSeriesSweepNs, kMaxSeriesSweepNs);
  // A scrape holding the list: tried again soon rather than a whole interval later.
  next_series_sweep_ns_ = now + (m.traffic.expire(now) ? every : kMinSeriesSweepNs);
}

// Accepts stopped by a lack of descriptors: tried again every kAcceptRetryNs. Lowers `timeout`
// (the loop's wait) to the next try.
void Worker::retry_accepts(uint64_t now, std::optional<int64_t>& timeout) {
  if (!ctx_.accept_blocked || phase_ != Phase::serving) {
    accept_retry_ns_ = 0;
    return;
  }
  if (!accept_retry_ns_) accept_retry_ns_ = now + kAcceptRetryNs;
  if (now >= accept_retry_ns_) {
    // accept_blocked stays set (a release clears it), so a failing retry is not logged again.
    accept_retry_ns_ = now + kAcceptRetryNs;
    for (size_t i = 0; i < listeners_.size(); ++i)
      if (listeners_[i].state == Listener::State::idle) arm_accept(i);
  }
  const auto left = int64_t(accept_retry_ns_ - std::min(now, accept_retry_ns_));
  timeout = std::min(timeout.value_or(INT64_MAX), left);
}

// How long the next wait may last: the HBONE tick, the drain deadline, the pressure scan, the
// refusal log and the accept retry, whichever is first; none if nothing is due.
std::optional<int64_t> Worker::next_timeout() {
  std::optional<int64_t> timeout;
  if (has_hbone(ctx_)) timeout = int64_t(next_tick_ns_ - std::min(monotonic_ns(), next_tick_ns_));
  if (phase_ == Phase::draining)
    timeout = std::min(timeout.value_or(INT64_MAX),
                       int64_t(drain_deadline_ns_ - std::min(monotonic_ns(), drain_deadline_ns_)));
  // Stalled holders of receive buffers are found by time: look again soon while the pool is low.
  if (under_pressure(ctx_))
    timeout = std::min(timeout.value_or(int64_t(kPressureScanNs)), int64_t(kPressureScanNs));
  const uint64_t now = monotonic_ns();
  ctx_.budgets.timers(now, timeout);
  retry_accepts(now, timeout);
  // A reload must reach the connections it denies within a second (the file watch waits 100 ms
  // for quiet), also in an idle worker.
  if (ctx_.store) timeout = std::min(timeout.value_or(kReloadCheckNs), kReloadCheckNs);
  // Idle traffic series expire also in a worker that nothing else wakes.
  if (ctx_.metrics.traffic.idle()) {
    const auto sweep = int64_t(next_series_sweep_ns_ - std::min(now, next_series_sweep_ns_));
    timeout = std::min(timeout.value_or(sweep), sweep);
  }
  if (has_todo(ctx_)) timeout = 0;
  return timeout;
}

void Worker::run() {
  for (;;) {
    bool listeners_open = false;
    for (const Listener& l : listeners_)
      listeners_open |= l.state != Listener::State::closed;
    if (phase_ != Phase::serving && live_relays(ctx_) == 0 && !listeners_open && !has_hbone(ctx_))
      break;
    if (has_hbone(ctx_)) {
      const uint64_t now = monotonic_ns();
      if (now >= next_tick_ns_) {
        tick(ctx_, now);
        next_tick_ns_ = now + kTickNs;
        after_completions();
      }
    }
    if (phase_ == Phase::draining && monotonic_ns() >= drain_deadline_ns_) {
      phase_ = Phase::expired;
      expire_all(ctx_);
      after_completions();
      continue;
    }
    std::optional<int64_t> timeout = next_timeout();
    // A bulk stream: one wake per minimum wait, whatever completes in between (the sockets
    // buffer what arrives meanwhile), rather than one per TCP segment.
    // Not while request/response traffic is about; nor, while it shares the worker with a bulk
    // stream, the wait for quiet sends: either would hold its completions back behind the bulk.
    const bool interactive =
        ctx_.loop_now - ctx_.small_read_ns < WorkerContext::kInteractiveQuietNs;
    const bool beside_bulk =
        interactive && ctx_.loop_now - ctx_.bulk_read_ns < WorkerContext::kInteractiveQuietNs;
    const bool gather = ctx_.bulk_reads && timeout != 0 && !interactive;
    ctx_.bulk_reads = false;
    unsigned wait_nr = 1;
    if (ctx_.quiet_sends && !beside_bulk) {
      // Bounded: a send predicted quiet may still come back short and need a resubmission.
      wait_nr += ctx_.quiet_sends;
      if (!gather) timeout = std::min(timeout.value_or(kQuietWaitNs), kQuietWaitNs);
    }
    ctx_.quiet_sends = 0;
    if (gather)
      ring_.submit_and_gather(timeout);
    else
      ring_.submit_and_wait(timeout, wait_nr);
    ctx_.loop_now = monotonic_ns();
    // A reloaded workload config (one atomic load when unchanged): connections its policies now
    // deny are reset.
    if (refresh_state(ctx_)) judge_again(ctx_);
    ring_.drain_completions([this](const io_uring_cqe& cqe) { on_completion(cqe); });
    after_completions();
  }
}

}  // namespace ringtunnel::proxy

// An HBONE connection on the worker's ring. See hbone_connection.h for the states.
#include "ringtunnel/proxy/hbone_connection.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/outbound_pool.h"
#include "ringtunnel/ring/ring.h"

namespace ringtunnel::proxy {

namespace {

// How long a closing connection may take to send its last bytes (alert, GOAWAY, close_notify)
// to a peer that does not read, before its send is cancelled and the socket closed.
constexpr uint64_t kCloseGraceNs = 5'000'000'000;

uint64_t ms_to_ns(uint64_t ms) {
  return ms * 1'000'000u;
}

}  // namespace

// ---- lifecycle

// Nothing but the slot is allocated until the first byte arrives (on_received): a client that
// opens the port and says nothing costs no TLS or HTTP/2 state.
void HboneConnection::open_inbound(int fd, const net::Endpoint& peer, std::string source,
                                   const std::string& listener) {
  info_.inbound = true;
  info_.listener = &listener;
  const uint64_t now = ctx_.now();
  next_ping_ns_ = now + ms_to_ns(ctx_.config.keepalive_ms);
  handshake_deadline_ns_ = now + ms_to_ns(ctx_.config.connect_timeout_ms);
  socket_.fd = fd;
  info_.peer = peer;
  info_.peer_text = net::format_sockaddr(peer.addr(), peer.length);
  if (ctx_.config.log_format == config::Config::LogFormat::json) {
    // The JSON access record names the address, not the listener (which may be 0.0.0.0).
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0)
      info_.local_text = net::format_sockaddr(reinterpret_cast<sockaddr*>(&local), len);
  }
  source_ = std::move(source);
  in_handshake_ = true;
  ctx_.budgets.handshake_started(source_);
  net::tune_relay_socket(fd);
  state_ = State::handshaking;
  arm_recv();
}

void HboneConnection::open_outbound(std::shared_ptr<const HboneTarget> to) {
  target_ = std::move(to);
  const HboneTarget& t = *target_;
  info_.inbound = false;
  const uint64_t now = ctx_.now();
  next_ping_ns_ = now + ms_to_ns(ctx_.config.keepalive_ms);
  // The TCP connect has its linked timeout; the TLS handshake must also be done by then.
  handshake_deadline_ns_ = now + ms_to_ns(ctx_.config.connect_timeout_ms);
  info_.pool_key = t.pool_key;
  info_.peer_text = t.peer_text;
  state_ = State::connecting;
  socket_.fd = net::stream_socket_for(t.peer, ctx_.config.mark, ctx_.config.keepalive());
  if (socket_.fd < 0) {
    const int err = -socket_.fd;
    socket_.fd = -1;
    return fail(ConnFailure::socket, strerror(err));
  }
  socket_.connect(ctx_, ops_, t.peer);
}

void HboneConnection::on_completion(Op op, uint8_t, const io_uring_cqe& cqe) {
  ops_.completed(cqe);
  switch (op) {
    case Op::connect:
      on_connected(cqe.res);
      break;
    case Op::recv:
      on_received(cqe);
      break;
    case Op::send:
      on_sent(cqe.res);
      break;
    case Op::connect_timeout:
    case Op::cancel:
    case Op::close:
      break;  // only their count matters
    case Op::none:
    case Op::shutdown:
    case Op::poll:
    case Op::splice_in:
    case Op::splice_out:
    case Op::accept:
    case Op::wake:
      ctx_.unexpected("HBONE connection", op, cqe.res);
      break;
  }
  if (closing()) maybe_release();
}

void HboneConnection::on_connected(int res) {
  if (state_ != State::connecting) return;
  if (res < 0)
    return res == -ECANCELED ? fail(ConnFailure::connect_timeout)
                             : fail(ConnFailure::connect, strerror(-res));
  state_ = State::handshaking;
  session_.create(false, ctx_.handshake_identity(), ctx_.blocks, ctx_.config, target_->identity,
                  streams_);
  drive();  // the client's ClientHello
  arm_recv();
}

void HboneConnection::arm_recv() {
  if (!socket_.arm_recv(ctx_, ops_, 0, ctx_.tls_pool)) ctx_.wait_for_buffers(Owner::conn, slot);
}

void HboneConnection::on_received(const io_uring_cqe& cqe) {
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (const std::optional<uint16_t> bid = socket_.on_recv(ctx_.tls_pool, cqe)) {
    const uint8_t cls = socket_.armed_cls;
    if (cqe.res > 0 && !session_.created() && state_ == State::handshaking)
      session_.create(true, ctx_.handshake_identity(), ctx_.blocks, ctx_.config, {}, streams_);
    if (cqe.res > 0) {
      ctx_.note_read(uint32_t(cqe.res));
      socket_.kept(ctx_, ops_, 0, size_t(cqe.res), false, more);
      if (!closing()) {
        // Records are opened where the kernel put them; what drive() leaves (the beginning of
        // a record) is copied by settle(), and the buffer goes back before this returns.
        session_.feed_borrowed(ctx_.tls_pool.data(cls, *bid), size_t(cqe.res));
        drive();
        if (session_.created()) session_.settle();
      }
      ctx_.tls_pool.give_back(cls, *bid);
      schedule();
      return;
    }
    ctx_.tls_pool.give_back(cls, *bid);
  }
  if (closing()) return;
  if (cqe.res == 0 && info_.inbound && !session_.created())
    return close_before_handshake(Refusal::client_gone);
  if (cqe.res == 0) return fail(ConnFailure::peer_closed);
  if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED)
    return fail(ConnFailure::recv, strerror(-cqe.res));
  schedule();  // re-arm
}

// Runs the TLS handshake or decrypts what arrived and feeds it to HTTP/2.
void HboneConnection::drive() {
  TunnelSession::Step step = session_.step();
  if (step.kind == TunnelSession::Step::Kind::established) {
    established();
    if (state_ != State::open) return;
    step = session_.step();
  }
  switch (step.kind) {
    case TunnelSession::Step::Kind::failed:
      if (step.failure == ConnFailure::http2) schedule();
      return fail(step.failure, step.detail);
    case TunnelSession::Step::Kind::waiting:
    case TunnelSession::Step::Kind::established:
    case TunnelSession::Step::Kind::ok:
      return schedule();
  }
}

void HboneConnection::established() {
  ctx_.metrics.handshakes[info_.inbound ? 1 : 0].add();
  state_ = State::open;
  end_handshake();
  streams_.idle_from(ctx_.now());  // idle until a stream is counted
  info_.peer_identity = session_.peer_identity().to_string();
  streams_.attach_waiting();
}

void HboneConnection::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
  ctx_.schedule(Owner::conn, slot);
}

void HboneConnection::service() {
  scheduled_ = false;
  if (state_ == State::free || state_ == State::connecting) return;
  if (!session_.created() && state_ == State::handshaking) {  // inbound, before its first byte
    if (socket_.recv == RecvState::off && !socket_.starved) arm_recv();
    return;
  }
  if (!closing()) {
    session_.pump();
    if (h2().failed()) return fail(ConnFailure::http2, h2().failure().reason);
    if (state_ == State::going_away && h2().finished()) {
      session_.close_notify();
      state_ = State::flushing;
      close_deadline_ns_ = ctx_.now() + kCloseGraceNs;
    }
  }
  if (send_ == SendState::idle && session_.pending_bytes() && state_ <= State::flushing) {
    const auto iovs = session_.pending(kMaxGather);
    std::copy(iovs.begin(), iovs.end(), iov_.begin());
    socket_.send(ctx_, ops_, 0, iov_.data(), iovs.size(), msg_, false);
    send_ = SendState::in_flight;
  }
  if (closing()) {
    if (state_ == State::flushing && send_ == SendState::idle) finish_sending();
    maybe_release();
    return;
  }
  if (socket_.recv == RecvState::off && !socket_.starved) arm_recv();
}

void HboneConnection::unstarve() {
  socket_.starved = false;
  schedule();
}

void HboneConnection::on_sent(int res) {
  send_ = SendState::idle;
  if (res < 0) {
    if (!closing()) fail(ConnFailure::send, strerror(-res));
    // Nothing more will go out on this socket.
    if (state_ == State::flushing) finish_sending();
    schedule();  // to cancel the receive and close
    return;
  }
  session_.consume(size_t(res));
  schedule();
}

namespace {

stats::HandshakeFailure handshake_failure(ConnFailure failure) {
  switch (failure) {
    case ConnFailure::handshake:
      return stats::HandshakeFailure::tls;
    case ConnFailure::handshake_timeout:
      return stats::HandshakeFailure::timeout;
    case ConnFailure::peer_closed:
      return stats::HandshakeFailure::peer_closed;
    case ConnFailure::socket:
    case ConnFailure::recv:
    case ConnFailure::send:
      return stats::HandshakeFailure::socket;
    default:
      return stats::HandshakeFailure::other;
  }
}

}  // namespace

void HboneConnection::fail(ConnFailure failure, std::string_view detail) {
  if (state_ == State::free || closing()) return;
  if (state_ == State::handshaking && session_.created())
    ctx_.metrics.handshake_failures[size_t(handshake_failure(failure))].add();
  // What HTTP/2 still has for the peer (its GOAWAY saying why) goes into TLS before the streams
  // are dropped, which drops the session's output.
  if (session_.created()) session_.pump();
  state_ = State::flushing;
  close_deadline_ns_ = ctx_.now() + kCloseGraceNs;
  log_line(fmt::format("ringtunnel: hbone {} {}{}{}: closed: {}", info_.inbound ? "from" : "to",
                       info_.peer_text, info_.peer_identity.empty() ? "" : " identity=",
                       info_.peer_identity, describe(failure, detail)));
  if (session_.created()) h2().close_all_streams(h2::kConnectError);
  streams_.end_waiting();
  schedule();
}

void HboneConnection::overload(std::string_view detail) {
  info_.overloaded = true;
  fail(ConnFailure::overload, detail);
}

void HboneConnection::expire() {
  if (state_ == State::free) return;
  fail(ConnFailure::drain_timeout);
  abandon();  // no waiting for a peer that does not read
}

void HboneConnection::go_away() {
  if (state_ != State::open) return;
  state_ = State::going_away;
  h2().submit_goaway_graceful();
  schedule();
}

// Cancels everything a closing connection still has in flight, its last send included.
void HboneConnection::abandon() {
  if (state_ != State::flushing) return;
  finish_sending();
}

// flushing -> ending: nothing more will be sent; what is in flight (a receive, a send that
// abandon() gives up on) is cancelled.
void HboneConnection::finish_sending() {
  state_ = State::ending;
  if (socket_.fd >= 0 && ops_.count) socket_.cancel_all(ctx_, ops_);
  maybe_release();
}

// Closes an inbound connection whose handshake never completed, without a log line of its own:
// it is counted, and one line a second says how many (Budgets).
void HboneConnection::close_before_handshake(Refusal counted) {
  if (state_ == State::free || closing()) return;
  if (session_.created())  // it had started: its client's first bytes had arrived
    ctx_.metrics
        .handshake_failures[size_t(counted == Refusal::handshake_timeout
                                       ? stats::HandshakeFailure::timeout
                                       : stats::HandshakeFailure::other)]
        .add();
  ctx_.budgets.refuse(counted);
  state_ = State::flushing;
  abandon();  // nothing to say to a client that never finished its handshake
}

void HboneConnection::end_handshake() {
  if (!in_handshake_) return;
  in_handshake_ = false;
  ctx_.budgets.handshake_ended(source_);
}

void HboneConnection::maybe_release() {
  if (ops_.count || send_ != SendState::idle || state_ < State::ending) return;
  if (state_ == State::ending && socket_.fd >= 0) {
    state_ = State::closing;
    socket_.close(ctx_, ops_, false);
    return;
  }
  release();
}

void HboneConnection::release() {
  end_handshake();
  if (info_.inbound)
    ctx_.budgets.connection_released();
  else
    ctx_.outbound().forget(*this);
  session_.reset();
  state_ = State::free;
  ctx_.release(*this);
  ctx_.descriptor_freed();  // accepting may work again
}

void HboneConnection::tick(uint64_t now) {
  const config::Config& config = ctx_.config;
  if (closing()) {
    if (now >= close_deadline_ns_) abandon();
    return;
  }
  if (state_ == State::connecting || state_ == State::handshaking) {
    if (now < handshake_deadline_ns_) return;
    if (info_.inbound)
      close_before_handshake(Refusal::handshake_timeout);
    else
      fail(ConnFailure::handshake_timeout);
    return;
  }
  if (state_ != State::open && state_ != State::going_away) return;
  const bool going_away = state_ == State::going_away;
  if (ctx_.draining && !going_away) return go_away();
  // An inbound connection with no stream for --hbone-idle-timeout closes gracefully (GOAWAY).
  const uint64_t idle_since = streams_.idle_since();
  if (info_.inbound && !streams_.held() && !going_away && idle_since &&
      now - idle_since >= ms_to_ns(config.hbone_idle_timeout_ms))
    return go_away();
  // A pooled outbound connection with no stream for --pool-idle-timeout, likewise.
  if (!info_.inbound && !streams_.open() && !streams_.waiting() && idle_since &&
      now - idle_since >= ms_to_ns(config.pool_idle_timeout_ms))
    return go_away();
  if (now >= next_ping_ns_) {
    if (h2().ping_outstanding()) return fail(ConnFailure::keepalive);
    h2().submit_ping();
    next_ping_ns_ = now + ms_to_ns(config.keepalive_ms);
    schedule();
  }
}

// ---- streams

bool HboneConnection::accepts_stream() const {
  if (state_ == State::connecting || state_ == State::handshaking) return streams_.waiting() < 100;
  const h2::H2Session* h2 = session_.h2_if_created();
  return state_ == State::open && h2 && h2->streams_available() > 0 && !h2->goaway_received();
}

}  // namespace ringtunnel::proxy

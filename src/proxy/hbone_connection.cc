// An HBONE connection on the worker's ring. See hbone_connection.h for the states.
#include "ringtunnel/proxy/hbone_connection.h"

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/admission.h"
#include "ringtunnel/proxy/hbone_stream.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/outbound_pool.h"
#include "ringtunnel/ring/ring.h"

namespace ringtunnel::proxy {

namespace {

// Ciphertext queued for the socket beyond which no more HTTP/2 output is encrypted: the socket
// is the bottleneck, and what waits in nghttp2 holds only references.
constexpr size_t kTlsHighWater = 1u << 20;
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
void HboneConnection::open_inbound(int fd, std::string peer_text, std::string source) {
  inbound_ = true;
  const uint64_t now = ctx_.now();
  next_ping_ns_ = now + ms_to_ns(ctx_.config.keepalive_ms);
  handshake_deadline_ns_ = now + ms_to_ns(ctx_.config.connect_timeout_ms);
  socket_.fd = fd;
  peer_text_ = std::move(peer_text);
  source_ = std::move(source);
  in_handshake_ = true;
  ctx_.budgets.handshake_started(source_);
  net::tune_relay_socket(fd);
  state_ = State::handshaking;
  arm_recv();
}

void HboneConnection::open_outbound(uint16_t route) {
  const config::Route& r = ctx_.config.routes[route];
  inbound_ = false;
  const uint64_t now = ctx_.now();
  next_ping_ns_ = now + ms_to_ns(ctx_.config.keepalive_ms);
  // The TCP connect has its linked timeout; the TLS handshake must also be done by then.
  handshake_deadline_ns_ = now + ms_to_ns(ctx_.config.connect_timeout_ms);
  route_ = route;
  peer_text_ = r.peer_text;
  state_ = State::connecting;
  socket_.fd = net::stream_socket_for(r.peer);
  if (socket_.fd < 0) {
    const int err = -socket_.fd;
    socket_.fd = -1;
    return fail(ConnFailure::socket, strerror(err));
  }
  socket_.connect(ctx_, ops_, r.peer);
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
      ctx_.log_bug(
          fmt::format("HBONE connection: completion of {} (res {})", to_string(op), cqe.res));
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
  create_sessions();
  drive();  // the client's ClientHello
  arm_recv();
}

void HboneConnection::create_sessions() {
  const config::Config& config = ctx_.config;
  tls::SessionOptions options;
  options.record_size = config.tls_record_size;
  tls_ = std::make_unique<tls::TlsSession>(
      *ctx_.identity, inbound_ ? tls::Role::server : tls::Role::client, ctx_.blocks, options);
  if (!inbound_) {
    tls::SpiffeId expected;
    tls::parse_spiffe_id(config.routes[route_].identity, expected);  // checked at start-up
    tls_->expect_peer(expected);
  }
  h2::SessionOptions h2o;
  h2o.role = inbound_ ? h2::Role::server : h2::Role::client;
  h2o.max_frame_size = config.h2_frame_size;
  h2o.stream_window = config.h2_stream_window;
  h2o.connection_window = config.h2_connection_window;
  h2_ = std::make_unique<h2::H2Session>(h2o, *this);
}

void HboneConnection::arm_recv() {
  if (!socket_.arm_recv(ctx_, ops_, 0, ctx_.tls_pool)) ctx_.wait_for_buffers(Owner::conn, slot);
}

void HboneConnection::on_received(const io_uring_cqe& cqe) {
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (const std::optional<uint16_t> bid = socket_.on_recv(ctx_.tls_pool, cqe)) {
    const uint8_t cls = socket_.armed_cls;
    if (cqe.res > 0 && !tls_ && state_ == State::handshaking) create_sessions();
    // The session copies: the buffer goes back at once.
    if (cqe.res > 0 && !closing()) tls_->feed(ctx_.tls_pool.data(cls, *bid), size_t(cqe.res));
    ctx_.tls_pool.give_back(cls, *bid);
    if (cqe.res > 0) {
      socket_.kept(ctx_, ops_, 0, size_t(cqe.res), false, more);
      if (!closing()) drive();
      schedule();
      return;
    }
  }
  if (closing()) return;
  if (cqe.res == 0 && inbound_ && !tls_) return close_before_handshake(Refusal::client_gone);
  if (cqe.res == 0) return fail(ConnFailure::peer_closed);
  if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED)
    return fail(ConnFailure::recv, strerror(-cqe.res));
  schedule();  // re-arm
}

// Runs the TLS handshake or decrypts what arrived and feeds it to HTTP/2.
void HboneConnection::drive() {
  if (tls_->state() == tls::TlsState::handshaking) {
    const tls::HandshakeStatus st = tls_->handshake();
    if (st == tls::HandshakeStatus::failed) return fail(ConnFailure::handshake, tls_->failure());
    if (st == tls::HandshakeStatus::in_progress) return schedule();
    established();
    if (state_ != State::open) return;
  }
  std::vector<uint8_t>& plaintext = ctx_.plaintext;
  for (;;) {
    const tls::ReadResult r = tls_->read(plaintext.data(), plaintext.size());
    if (r.bytes && h2_->feed(plaintext.data(), r.bytes) < 0) {
      schedule();
      return fail(ConnFailure::http2, h2_->failure().reason);
    }
    if (r.status == tls::ReadStatus::failed) return fail(ConnFailure::tls, tls_->failure());
    if (r.status == tls::ReadStatus::close_notify) return fail(ConnFailure::peer_closed);
    if (r.bytes < plaintext.size()) break;
  }
  schedule();
}

void HboneConnection::established() {
  state_ = State::open;
  end_handshake();
  idle_since_ns_ = ctx_.now();  // idle until a stream is counted
  peer_identity_ = tls_->peer_identity().to_string();
  std::vector<HboneStream*> waiting;
  waiting.swap(waiting_);
  for (HboneStream* s : waiting)
    s->attach(*this);
}

void HboneConnection::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
  ctx_.schedule(Owner::conn, slot);
}

void HboneConnection::service() {
  scheduled_ = false;
  if (state_ == State::free || state_ == State::connecting) return;
  if (!tls_ && state_ == State::handshaking) {  // inbound, before its first byte
    if (socket_.recv == RecvState::off && !socket_.starved) arm_recv();
    return;
  }
  if (!closing()) {
    pump_h2();
    if (h2_->failed()) return fail(ConnFailure::http2, h2_->failure().reason);
    if (state_ == State::going_away && h2_->finished()) {
      if (tls_->state() == tls::TlsState::open) tls_->shutdown();
      state_ = State::flushing;
      close_deadline_ns_ = ctx_.now() + kCloseGraceNs;
    }
  }
  if (send_ == SendState::idle && tls_ && tls_->pending_bytes() && state_ <= State::flushing) {
    const auto iovs = tls_->pending(kMaxGather);
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

// HTTP/2 output into TLS records, while the socket keeps up. The payloads are encrypted (copied)
// here, so consume_output() gives them back to their streams at once.
void HboneConnection::pump_h2() {
  auto writable = [&] {
    return tls_->state() == tls::TlsState::open || tls_->state() == tls::TlsState::peer_closed;
  };
  while (writable() && tls_->pending_bytes() < kTlsHighWater) {
    const auto spans = h2_->pending();
    if (spans.empty()) break;
    std::array<iovec, kMaxGather> parts;
    size_t n = 0, total = 0;
    for (const auto& sp : spans) {
      if (n == parts.size()) break;
      parts[n++] = {const_cast<uint8_t*>(sp.data()), sp.size()};
      total += sp.size();
    }
    if (!tls_->write({parts.data(), n}, tls::Flush::later)) break;
    h2_->consume_output(total);
  }
  if (writable()) tls_->flush();
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
  tls_->consume(size_t(res));
  schedule();
}

void HboneConnection::fail(ConnFailure failure, std::string_view detail) {
  if (state_ == State::free || closing()) return;
  // What HTTP/2 still has for the peer (its GOAWAY saying why) goes into TLS before the streams
  // are dropped, which drops the session's output.
  if (h2_ && tls_) pump_h2();
  state_ = State::flushing;
  close_deadline_ns_ = ctx_.now() + kCloseGraceNs;
  log_line(fmt::format("ringtunnel: hbone {} {} {}{}: closed: {}", inbound_ ? "from" : "to",
                       peer_text_, peer_identity_.empty() ? "" : "identity=", peer_identity_,
                       describe(failure, detail)));
  if (h2_) h2_->close_all_streams(h2::kConnectError);
  std::vector<HboneStream*> waiting;
  waiting.swap(waiting_);
  for (HboneStream* s : waiting)
    s->end(EndReason::peer_error, true);
  schedule();
}

void HboneConnection::overload(std::string_view detail) {
  overloaded_ = true;
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
  h2_->submit_goaway_graceful();
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
  if (inbound_) ctx_.budgets.connection_released();
  if (!inbound_) ctx_.outbound().forget(*this);
  h2_.reset();
  tls_.reset();
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
    if (inbound_)
      close_before_handshake(Refusal::handshake_timeout);
    else
      fail(ConnFailure::handshake_timeout);
    return;
  }
  if (state_ != State::open && state_ != State::going_away) return;
  const bool going_away = state_ == State::going_away;
  if (ctx_.draining && !going_away) return go_away();
  // An inbound connection with no stream for --hbone-idle-timeout closes gracefully (GOAWAY).
  if (inbound_ && !held_streams_ && !going_away && idle_since_ns_ &&
      now - idle_since_ns_ >= ms_to_ns(config.hbone_idle_timeout_ms))
    return go_away();
  // A pooled outbound connection with no stream for --pool-idle-timeout, likewise.
  if (!inbound_ && !streams_ && waiting_.empty() && idle_since_ns_ &&
      now - idle_since_ns_ >= ms_to_ns(config.pool_idle_timeout_ms))
    return go_away();
  if (now >= next_ping_ns_) {
    if (h2_->ping_outstanding()) return fail(ConnFailure::keepalive);
    h2_->submit_ping();
    next_ping_ns_ = now + ms_to_ns(config.keepalive_ms);
    schedule();
  }
}

// ---- streams

bool HboneConnection::accepts_stream() const {
  if (state_ == State::connecting || state_ == State::handshaking) return waiting_.size() < 100;
  return state_ == State::open && h2_ && h2_->streams_available() > 0 && !h2_->goaway_received();
}

void HboneConnection::add_waiting(HboneStream& s) {
  waiting_.push_back(&s);
}

void HboneConnection::held_stream_released() {
  if (held_streams_ && --held_streams_ == 0) idle_since_ns_ = ctx_.now();
}

HboneStream* HboneConnection::stream_of(int32_t id) const {
  return static_cast<HboneStream*>(h2_->stream_owner(id));
}

// ---- h2::SessionEvents

void HboneConnection::on_connect_request(int32_t id, const net::Endpoint& target,
                                         std::span<const h2::Header> headers) {
  if (ctx_.budgets.inbound_stream_refusal(held_streams_, ctx_.live_streams())) {
    h2_->submit_response(id, 503);
    schedule();
    return;
  }
  // Decided before any socket exists: a refused target is never dialled.
  Admission admission =
      admit(target, ctx_.config, tls_->peer_identity(), ctx_.identity->identity());
  HboneStream* s = ctx_.new_stream();
  if (!s) {
    h2_->submit_response(id, 503);
    return;
  }
  ++held_streams_;
  s->open_inbound(*this, id, target, headers, std::move(admission));
}

void HboneConnection::on_response(int32_t id, int status) {
  if (HboneStream* s = stream_of(id)) s->on_h2_response(status);
}

void HboneConnection::on_data(int32_t id, const uint8_t* data, size_t size) {
  HboneStream* s = stream_of(id);
  if (!s || s->ending()) {
    h2_->consume(id, size);  // nobody will send it: hand the window back now
    return;
  }
  s->on_h2_data(*this, data, size);
}

void HboneConnection::on_end_stream(int32_t id) {
  if (HboneStream* s = stream_of(id)) s->on_h2_end_stream();
}

void HboneConnection::on_reset(int32_t id, uint32_t code) {
  if (HboneStream* s = stream_of(id)) s->on_h2_reset(*this, code);
}

void HboneConnection::on_stream_closed(int32_t id) {
  HboneStream* s = stream_of(id);
  if (!s) return;
  if (streams_) --streams_;
  if (!streams_ && !inbound_) idle_since_ns_ = ctx_.now();
  s->on_h2_closed();
}

void HboneConnection::on_payload_released(int32_t id, std::span<const uint8_t> piece, bool) {
  if (HboneStream* s = stream_of(id)) s->on_h2_payload_released(piece);
}

void HboneConnection::on_goaway(int32_t, uint32_t) {
  // Streams above the last id get on_reset(kRefusedStream); this connection takes no new ones,
  // which accepts_stream() sees through goaway_received().
}

}  // namespace ringtunnel::proxy

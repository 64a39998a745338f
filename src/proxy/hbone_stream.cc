// An HBONE stream on the worker's ring. See hbone_stream.h for the states.
#include "ringtunnel/proxy/hbone_stream.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <random>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/hbone_connection.h"
#include "ringtunnel/proxy/outbound_pool.h"

namespace ringtunnel::proxy {

namespace {

std::string traceparent() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("00-{:016x}{:016x}-{:016x}-01", rng(), rng(), rng() | 1);
}

}  // namespace

// ---- lifecycle

void HboneStream::open_outbound(int fd, std::shared_ptr<const HboneTarget> to,
                                const stats::TrafficLabels* labels) {
  inbound_ = false;
  state_ = State::opening;
  start_ns_ = ctx_.now();
  start_unix_ms_ = unix_ms();
  tcp_.fd = fd;
  outbound_ = std::move(to);
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
  client_text_ = net::format_sockaddr(reinterpret_cast<sockaddr*>(&peer), len);
  net::tune_relay_socket(fd);
  src_identity_ = ctx_.identity->identity().to_string();
  dst_identity_ = outbound_->identity;
  if (labels) {
    traffic_.open(ctx_, *labels);
  } else {
    net::Endpoint client, target;
    memcpy(&client.storage, &peer, sizeof peer);
    client.length = len;
    if (!net::parse_endpoint(outbound_->authority, target).empty()) target = {};
    traffic_.open(ctx_, outbound_labels(ctx_, workload_at(ctx_, client), workload_at(ctx_, target),
                                        nullptr, true, outbound_->identity));
  }
  HboneConnection* conn = ctx_.outbound().connection_for(ctx_, outbound_);
  if (!conn || conn->closing()) return end(EndReason::peer_error, true);
  if (conn->state() == HboneConnection::State::open) return attach(*conn);
  conn->streams().add_waiting(*this);
}

void HboneStream::attach(HboneConnection& conn) {
  if (state_ != State::opening) return;
  const std::string forwarded =
      outbound_->forwarded_host.empty()
          ? fmt::format("for=\"{}\"", client_text_)
          : fmt::format("for=\"{}\";host={}", client_text_, outbound_->forwarded_host);
  const std::string trace = traceparent();
  const h2::Header headers[] = {
      {"forwarded", forwarded}, {"traceparent", trace}, {"baggage", outbound_->baggage}};
  const size_t count = outbound_->baggage.empty() ? 2 : 3;
  const int32_t id =
      conn.h2().submit_connect(outbound_->authority, std::span(headers, count), this);
  if (id < 0) return end(EndReason::error, true);
  bind(conn, id);
  dst_identity_ = conn.info().peer_identity;
  conn.schedule();
}

void HboneStream::bind(HboneConnection& conn, int32_t id) {
  conn_ = &conn;
  conn_ref_ = conn.slot;
  id_ = id;
  h2_side_ = H2Side::bound;
  conn.streams().attached();
}

void HboneStream::open_inbound(HboneConnection& conn, int32_t id, const net::Endpoint& target,
                               std::span<const h2::Header> headers, Admission admission) {
  inbound_ = true;
  state_ = State::opening;
  start_ns_ = ctx_.now();
  start_unix_ms_ = unix_ms();
  target_ = target;
  source_ = conn.info().peer;
  client_text_ = conn.info().peer_text;
  inbound_listener_ = conn.info().listener;
  local_text_ = conn.info().local_text;
  std::string_view forwarded_service;
  for (const h2::Header& h : headers)
    if (h.name == "forwarded") {
      if (const auto client = forwarded_for(h.value)) client_text_ = std::string(*client);
      if (const auto host = forwarded_host(h.value)) forwarded_service = *host;
    }
  src_identity_ = conn.info().peer_identity;
  dst_identity_ = ctx_.identity->identity().to_string();
  {
    // The source workload: the one at the client address the peer proxy forwarded, else the one
    // at the peer proxy's own address.
    net::Endpoint client;
    const workload::Workload* source = nullptr;
    if (client_text_ != conn.info().peer_text && net::parse_endpoint(client_text_, client).empty())
      source = workload_at(ctx_, client);
    if (!source) source = workload_at(ctx_, source_);
    const workload::Workload* destination = workload_at(ctx_, target);
    const workload::Service* service =
        inbound_service(ctx_, destination, target.port(), forwarded_service);
    traffic_.open(ctx_, inbound_labels(ctx_, source, destination, service, true, src_identity_));
  }
  conn.h2().set_stream_owner(id, this);
  bind(conn, id);
  if (admission.verdict != Verdict::allow) {
    // The session ends the stream after the response; on_h2_closed frees it.
    conn.h2().submit_response(id, http_status(admission.verdict));
    end_ = end_reason(admission.verdict);
    refusal_ = std::move(admission.reason);
    state_ = State::ending;
    return;
  }
  tcp_.fd = net::stream_socket_for(target, ctx_.config.mark, ctx_.config.keepalive());
  if (tcp_.fd < 0) {
    tcp_.fd = -1;
    conn.h2().submit_response(id, 503);
    end_ = EndReason::connect_error;
    state_ = State::ending;
    return;
  }
  tcp_.connect(ctx_, ops_, target_);
}

void HboneStream::on_completion(Op op, uint8_t, const io_uring_cqe& cqe) {
  ops_.completed(cqe);
  switch (op) {
    case Op::connect:
      on_target_connected(cqe.res);
      break;
    case Op::recv:
      on_recv(cqe);
      break;
    case Op::send:
      on_sent(cqe.res);
      break;
    case Op::shutdown:
      to_tcp_ = Fin::passed;
      schedule();
      break;
    case Op::connect_timeout:
    case Op::cancel:
    case Op::close:
      break;  // only their count matters
    case Op::none:
    case Op::poll:
    case Op::splice_in:
    case Op::splice_out:
    case Op::accept:
    case Op::wake:
      ctx_.unexpected("HBONE stream", op, cqe.res);
      break;
  }
  if (ending()) maybe_release();
}

void HboneStream::on_target_connected(int res) {
  if (state_ != State::opening) return;
  if (!conn_) return end(EndReason::peer_error, true);
  HboneConnection& conn = *conn_;
  if (res == 0) {
    state_ = State::open;
    conn.h2().submit_response(id_, 200);
    conn.schedule();
    schedule();
    return;
  }
  conn.h2().submit_response(id_, 503);
  conn.schedule();
  // The session ends the stream; on_h2_closed frees it.
  state_ = State::ending;
  end_ = connect_end(res);
  maybe_release();
}

void HboneStream::unstarve() {
  tcp_.starved = false;
  schedule();
}

void HboneStream::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
  ctx_.schedule(Owner::stream, slot);
}

void HboneStream::on_recv(const io_uring_cqe& cqe) {
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (const std::optional<uint16_t> bid = tcp_.on_recv(ctx_.pool, cqe)) {
    const uint8_t cls = tcp_.armed_cls;
    uint8_t* data = ctx_.pool.data(cls, *bid);
    if (cqe.res <= 0 || state_ != State::open || !conn_ ||
        conn_->h2().submit_data(id_, data, size_t(cqe.res)) != 0) {
      ctx_.pool.give_back(cls, *bid);
      if (cqe.res > 0 && state_ == State::open) end(EndReason::peer_error, true);
      return;
    }
    if (lent_.empty()) lent_progress_ns_ = ctx_.loop_now;
    ctx_.note_read(uint32_t(cqe.res));
    lent_.lend(data, uint32_t(cqe.res), *bid, cls);
    count_from_tcp(uint32_t(cqe.res));
    tcp_.kept(ctx_, ops_, 0, size_t(cqe.res), lent_.live_bytes() >= ctx_.config.max_queued, more);
    conn_->schedule();
    return;
  }
  if (state_ != State::open) return;
  if (cqe.res == 0) {
    to_tunnel_ = Fin::received;
  } else if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED) {
    if (conn_) conn_->h2().submit_reset(id_, h2::kConnectError);
    return end(socket_end(cqe.res, inbound_ ? Peer::target : Peer::client), false);
  }
  schedule();
}

void HboneStream::on_sent(int res) {
  send_ = SendState::idle;
  if (state_ != State::open) return;
  if (res <= 0) {
    if (conn_) conn_->h2().submit_reset(id_, h2::kConnectError);
    return end(socket_end(res, inbound_ ? Peer::target : Peer::client), false);
  }
  out_->consume(size_t(res));
  count_to_tcp(uint32_t(res));
  give_window(size_t(res));
  schedule();
}

// Hands received bytes back to HTTP/2 flow control once they have left (or never will): also
// after the stream has closed in the session, or the connection's window would shrink for good.
void HboneStream::give_window(size_t bytes) {
  const auto early = size_t(std::min<uint64_t>(bytes, early_credit_));
  early_credit_ -= early;
  ctx_.budgets.credit_sub(early);
  HboneConnection* live = bytes && id_ >= 0 ? ctx_.conn(conn_ref_) : nullptr;
  if (!live || !live->live() || live->closing() || live->state() < HboneConnection::State::open)
    return;
  HboneConnection& c = *live;
  c.h2().consume_stream(id_, early);
  c.h2().consume(id_, bytes - early);
  c.schedule();
}

void HboneStream::service() {
  scheduled_ = false;
  if (state_ != State::open) return;
  // tunnel -> TCP
  const bool queued = out_ && out_->size();
  if (queued && send_ == SendState::idle) {
    if (!iov_) iov_ = std::make_unique<std::array<iovec, kMaxGather>>();
    const auto iovs = out_->iovecs(iov_->size());
    std::copy(iovs.begin(), iovs.end(), iov_->begin());
    tcp_.send(ctx_, ops_, 0, iov_->data(), iovs.size(), msg_, false);
    send_ = SendState::in_flight;
  }
  if (!queued && send_ == SendState::idle && to_tcp_ == Fin::received) {
    if (to_tunnel_ == Fin::passed && h2_side_ == H2Side::closed && !tcp_.fixed) {
      to_tcp_ = Fin::passed;  // the last step: the close below passes the FIN (see Relay)
    } else {
      to_tcp_ = Fin::passing;
      tcp_.shutdown(ctx_, ops_, 0);
    }
  }
  // TCP -> tunnel
  if (to_tunnel_ == Fin::received && conn_) {
    to_tunnel_ = Fin::passed;
    conn_->h2().submit_end(id_);
    conn_->schedule();
  }
  // Below half the quota, so a paused stream resumes with room for a few reads.
  if (tcp_.recv == RecvState::off && !tcp_.starved && to_tunnel_ == Fin::open && conn_ &&
      lent_.live_bytes() < ctx_.config.max_queued / 2 && !tcp_.arm_recv(ctx_, ops_, 0, ctx_.pool))
    ctx_.wait_for_buffers(Owner::stream, slot);
  // Done both ways: FIN passed on each way, and the session has let go of the stream.
  if (to_tcp_ == Fin::passed && to_tunnel_ == Fin::passed && h2_side_ == H2Side::closed &&
      send_ == SendState::idle)
    end(EndReason::closed, false);
}

void HboneStream::end(EndReason reason, bool reset_tcp) {
  if (state_ == State::free || ending()) return;
  state_ = State::ending;
  end_ = reason;
  reset_tcp_ = reset_tcp;
  if (conn_ && reason != EndReason::closed && !conn_->closing()) {
    conn_->h2().submit_reset(id_, h2::kConnectError);
    conn_->schedule();
  }
  if (ops_.count && tcp_.fd >= 0) tcp_.cancel_all(ctx_, ops_);
  maybe_release();
}

void HboneStream::maybe_release() {
  // A stream that never got an id, or whose connection is gone, has nothing to wait for in a
  // session.
  if (h2_side_ == H2Side::unbound) h2_side_ = H2Side::closed;
  if (ops_.count || h2_side_ != H2Side::closed) return;
  if (state_ == State::ending && tcp_.fd >= 0) {
    state_ = State::closing;
    tcp_.close(ctx_, ops_, reset_tcp_);
    return;
  }
  release();
}

void HboneStream::release() {
  ctx_.budgets.heap_sub(lent_.heap_bytes());
  lent_.release_all(ctx_.give_back);
  // Bytes from the tunnel that will never be sent: their connection window comes back now
  // (except what came back on arrival).
  if (out_) give_window(out_->size());
  ctx_.budgets.credit_sub(early_credit_);
  early_credit_ = 0;
  out_.reset();
  if (ctx_.access_enabled()) log_access();
  traffic_.close(ctx_, end_);
  if (!inbound_) {
    ctx_.budgets.connection_released();  // the client accepted on a --forward hbone:// listener
  } else if (HboneConnection* c = ctx_.conn(conn_ref_)) {
    c->streams().held_released();
  }
  state_ = State::free;
  ctx_.release(*this);
  ctx_.descriptor_freed();
}

void HboneStream::log_access() {
  const std::string_view listener =
      inbound_ ? std::string_view(*inbound_listener_) : std::string_view(*outbound_->listener);
  const std::string target = inbound_ ? target_.to_string() : outbound_->authority;
  AccessRecord rec;
  rec.listener = listener;
  rec.client = client_text_;
  rec.target = target;
  rec.bytes_up = inbound_ ? bytes_to_tcp_ : bytes_from_tcp_;
  rec.bytes_down = inbound_ ? bytes_from_tcp_ : bytes_to_tcp_;
  rec.duration_ms = (ctx_.now() - start_ns_) / 1'000'000;
  rec.end = end_;
  rec.start_unix_ms = start_unix_ms_;
  rec.src_identity = src_identity_;
  rec.dst_identity = dst_identity_;
  // The tunnel: dialled at the peer proxy (outbound), or arrived at this listener (inbound).
  rec.direction = inbound_ ? AccessRecord::Direction::inbound : AccessRecord::Direction::outbound;
  rec.dst_addr = inbound_ ? std::string_view(local_text_) : std::string_view(outbound_->peer_text);
  rec.hbone_addr = target;
  if (!inbound_) rec.dst_service = outbound_->forwarded_host;
  ctx_.access(rec, refusal_);
}

// ---- the session's events

void HboneStream::on_h2_response(int status) {
  if (state_ != State::opening) return;
  if (status >= 200 && status < 300) {
    state_ = State::open;
    schedule();
    return;
  }
  end(status == 503   ? EndReason::refused
      : status == 401 ? EndReason::denied
      : status == 400 ? EndReason::bad_request
                      : EndReason::error,
      true);
}

void HboneStream::on_h2_data(HboneConnection& conn, const uint8_t* data, size_t size) {
  if (!out_) out_ = std::make_unique<tls::CiphertextQueue>(ctx_.blocks);
  out_->append(data, size);
  // The bytes now sit in this stream's own queue, bounded by its stream window: the connection
  // window they took comes back at once, so a few stalled streams cannot hold the window that
  // their siblings share. Past the memory budget, it comes back only when they leave.
  if (ctx_.budgets.credit_fits(size)) {
    conn.h2().consume_connection(size);
    early_credit_ += size;
    ctx_.budgets.credit_add(size);
  }
  schedule();
}

void HboneStream::on_h2_end_stream() {
  if (to_tcp_ == Fin::open) to_tcp_ = Fin::received;
  schedule();
}

void HboneStream::on_h2_reset(const HboneConnection& conn, uint32_t code) {
  if (state_ == State::opening && !inbound_ && code == h2::kRefusedStream)
    return end(EndReason::refused, true);
  // A reset of the tunnel is a reset of the TCP side: the far end reset (or failed).
  const EndReason reason = conn.info().overloaded ? EndReason::overload
                           : conn.closing()       ? EndReason::peer_error
                           : inbound_             ? EndReason::client_reset
                                                  : EndReason::target_reset;
  end(reason, true);
}

void HboneStream::on_h2_closed() {
  h2_side_ = H2Side::closed;
  conn_ = nullptr;
  // Closed cleanly on both ends of the session: the TCP side finishes on its own.
  if (state_ == State::open || state_ == State::opening) schedule();
  if (ending()) maybe_release();
}

// A buffer goes back to the kernel only once no byte of it is referenced: released by address,
// never by count (see lent_payloads.h for what counting got wrong).
void HboneStream::on_h2_payload_released(std::span<const uint8_t> piece) {
  const size_t heap_before = lent_.heap_bytes();
  if (!lent_.release(piece, ctx_.give_back))
    ctx_.log_bug(
        fmt::format("stream {}: release of {} bytes that were not lent", id_, piece.size()));
  ctx_.budgets.heap_sub(heap_before - lent_.heap_bytes());
  lent_progress_ns_ = ctx_.loop_now;
  schedule();
}

// ---- pressure and deadlines

size_t HboneStream::stalled_pool_bytes(uint64_t now, uint64_t stall_ns) const {
  if (!conn_ || !lent_.pool_bytes() || now - lent_progress_ns_ < stall_ns) return 0;
  return lent_.pool_bytes();
}

bool HboneStream::to_heap() {
  if (!conn_ || h2_side_ == H2Side::closed) return true;
  if (!ctx_.budgets.heap_fits(lent_.pool_length())) return false;
  h2::H2Session& session = conn_->h2();
  const int32_t id = id_;
  ctx_.budgets.heap_add(lent_.to_heap(
      [&](const uint8_t* from, const uint8_t* to, size_t n) { session.relocate(id, from, to, n); },
      ctx_.give_back));
  return true;
}

bool HboneStream::admitted(net::Endpoint& target, net::Endpoint& source,
                           std::string& identity) const {
  if (!inbound_ || (state_ != State::opening && state_ != State::open)) return false;
  target = target_;
  source = source_;
  identity = src_identity_;
  return true;
}

void HboneStream::check_opening(uint64_t now) {
  if (inbound_ || state_ != State::opening || !conn_ || id_ < 0) return;
  if (now - start_ns_ >= uint64_t(ctx_.config.connect_timeout_ms) * 1'000'000u)
    end(EndReason::connect_timeout, true);
}

}  // namespace ringtunnel::proxy

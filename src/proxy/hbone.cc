// HBONE connections and streams on the worker's ring. See hbone.h for the states.
#include "ringtunnel/proxy/hbone.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <random>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/admission.h"
#include "ringtunnel/proxy/worker.h"

namespace ringtunnel::proxy {

namespace {

// Ciphertext queued for the socket beyond which no more HTTP/2 output is encrypted: the socket
// is the bottleneck, and what waits in nghttp2 holds only references.
constexpr size_t kTlsHighWater = 1u << 20;
// How often the loop wakes for keepalive PINGs and idle pooled connections while any exist.
constexpr uint64_t kTickNs = 1'000'000'000;
// How long a closing connection may take to send its last bytes (alert, GOAWAY, close_notify)
// to a peer that does not read, before its send is cancelled and the socket closed.
constexpr uint64_t kCloseGraceNs = 5'000'000'000;

std::string traceparent() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("00-{:016x}{:016x}-{:016x}-01", rng(), rng(), rng() | 1);
}

}  // namespace

// ---- SessionEvents: the connection forwards to its worker ----

void HboneConn::on_connect_request(int32_t id, const net::Endpoint& target,
                                   std::span<const h2::Header> headers) {
  worker->h2_connect_request(*this, id, target, headers);
}
void HboneConn::on_response(int32_t id, int status) {
  worker->h2_response(*this, id, status);
}
void HboneConn::on_data(int32_t id, const uint8_t* data, size_t size) {
  worker->h2_data(*this, id, data, size);
}
void HboneConn::on_end_stream(int32_t id) {
  worker->h2_end_stream(*this, id);
}
void HboneConn::on_reset(int32_t id, uint32_t code) {
  worker->h2_reset(*this, id, code);
}
void HboneConn::on_stream_closed(int32_t id) {
  worker->h2_stream_closed(*this, id);
}
void HboneConn::on_payload_released(int32_t id, std::span<const uint8_t> piece, bool) {
  worker->h2_payload_released(*this, id, piece);
}
void HboneConn::on_goaway(int32_t, uint32_t) {
  // Streams above the last id get on_reset(kRefusedStream); this connection takes no new ones,
  // which pooled_conn() sees through streams_available().
}

// ---- slots ----

HboneConn* Worker::new_conn(bool inbound) {
  HboneConn* c = conns_.acquire();
  if (!c) return nullptr;
  c->worker = this;
  c->inbound = inbound;
  const uint64_t now = monotonic_ns();
  c->next_ping_ns = now + uint64_t(config_.keepalive_ms) * 1'000'000u;
  // The TCP connect has its linked timeout; the TLS handshake must also be done by then.
  c->handshake_deadline_ns = now + uint64_t(config_.connect_timeout_ms) * 1'000'000u;
  return c;
}

HboneStream* Worker::new_stream(bool inbound) {
  HboneStream* s = streams_.acquire();
  if (!s) return nullptr;
  s->inbound = inbound;
  s->state = HboneStream::State::opening;
  s->start_ns = monotonic_ns();
  s->start_unix_ms = unix_ms();
  return s;
}

io_uring_sqe* Worker::conn_sqe(HboneConn& c, OpKind kind) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_sqe_set_data64(s, ring::encode({uint8_t(kind), 0, c.index, c.generation}));
  ++c.pending;
  return s;
}

io_uring_sqe* Worker::stream_sqe(HboneStream& st, OpKind kind) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_sqe_set_data64(s, ring::encode({uint8_t(kind), 0, st.index, st.generation}));
  ++st.pending;
  return s;
}

void Worker::schedule_conn(HboneConn& c) {
  if (c.scheduled) return;
  c.scheduled = true;
  conn_todo_.emplace_back(c.index, c.generation);
}

void Worker::schedule_stream(HboneStream& s) {
  if (s.scheduled) return;
  s.scheduled = true;
  stream_todo_.emplace_back(s.index, s.generation);
}

void Worker::on_hbone_completion(OpKind kind, const ring::OpTag& tag, const io_uring_cqe& cqe) {
  const bool final = !(cqe.flags & IORING_CQE_F_MORE);
  if (kind >= OpKind::conn_connect && kind <= OpKind::conn_close) {
    HboneConn* c = conns_.find(tag.index, tag.generation);
    if (!c || c->state == HboneConn::State::free) return;
    if (final) --c->pending;
    switch (kind) {
      case OpKind::conn_connect:
        conn_connected(*c, cqe.res);
        break;
      case OpKind::conn_recv:
        conn_received(*c, cqe);
        break;
      case OpKind::conn_send:
        conn_sent(*c, cqe.res);
        break;
      default:
        break;
    }
    if (c->state == HboneConn::State::closing) maybe_release_conn(*c);
    return;
  }
  HboneStream* s = streams_.find(tag.index, tag.generation);
  if (!s || s->state == HboneStream::State::free) return;
  if (final) --s->pending;
  switch (kind) {
    case OpKind::stream_connect:
      stream_target_connected(*s, cqe.res);
      break;
    case OpKind::stream_recv:
      stream_received(*s, cqe);
      break;
    case OpKind::stream_send:
      stream_sent(*s, cqe.res);
      break;
    case OpKind::stream_shutdown:
      s->shut_done = true;
      schedule_stream(*s);
      break;
    default:
      break;
  }
  if (s->state == HboneStream::State::closing) maybe_release_stream(*s);
}

// ---- connections ----

// Nothing but the slot is allocated until the first byte arrives (conn_received): a client that
// opens the port and says nothing costs no TLS or HTTP/2 state.
void Worker::open_inbound_conn(int fd) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
  std::string source;
  if (peer.ss_family == AF_INET)
    source.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in*>(&peer)->sin_addr),
                  sizeof(in_addr));
  else if (peer.ss_family == AF_INET6)
    source.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr),
                  sizeof(in6_addr));
  HboneConn* slot = admit_handshake(source) ? new_conn(true) : nullptr;
  if (!slot) {
    // Over a handshake cap (counted), or 2^24 connections in this worker: refuse.
    net::arm_reset_on_close(fd);
    close(fd);
    --accepted_live_;
    return;
  }
  HboneConn& c = *slot;
  c.fd = fd;
  c.peer_text = net::format_sockaddr(reinterpret_cast<sockaddr*>(&peer), len);
  c.source = std::move(source);
  c.in_handshake = true;
  ++handshakes_;
  ++handshakes_by_source_[c.source];
  net::tune_relay_socket(fd);
  c.state = HboneConn::State::handshaking;
  arm_conn_recv(c);
}

// A connection to the route's peer that expects the same identity (the node's own identity is
// one per process): routes to one peer share connections, up to the stream limit each.
HboneConn* Worker::pooled_conn(uint16_t route) {
  const config::Route& r = config_.routes[route];
  HboneConn* pooled = conns_.find_if([&](HboneConn& c) {
    if (c.inbound || c.state == HboneConn::State::free) return false;
    const config::Route& cr = config_.routes[c.route];
    if (cr.peer_text != r.peer_text || cr.identity != r.identity) return false;
    if (c.state == HboneConn::State::connecting || c.state == HboneConn::State::handshaking)
      return c.waiting.size() < 100;
    return c.state == HboneConn::State::open && c.h2 && c.h2->streams_available() > 0 &&
           !c.h2->goaway_received();
  });
  if (pooled) return pooled;
  HboneConn* fresh = new_conn(false);
  if (!fresh) return nullptr;
  HboneConn& c = *fresh;
  c.route = route;
  c.peer_text = r.peer_text;
  c.state = HboneConn::State::connecting;  // so that fail_conn below takes it to closing
  c.fd = net::stream_socket_for(r.peer);
  if (c.fd < 0) {
    fail_conn(c, fmt::format("socket: {}", strerror(-c.fd)));
    return &c;
  }
  c.state = HboneConn::State::connecting;
  ring_.reserve(2);
  io_uring_sqe* s = conn_sqe(c, OpKind::conn_connect);
  io_uring_prep_connect(s, c.fd, r.peer.addr(), r.peer.length);
  s->flags |= IOSQE_IO_LINK;
  io_uring_prep_link_timeout(conn_sqe(c, OpKind::conn_connect_timeout), &connect_timeout_, 0);
  return &c;
}

void Worker::conn_connected(HboneConn& c, int res) {
  if (c.state != HboneConn::State::connecting) return;
  if (res < 0)
    return fail_conn(c, res == -ECANCELED ? std::string("connect timed out")
                                          : fmt::format("connect: {}", strerror(-res)));
  start_tls(c);
}

void Worker::start_tls(HboneConn& c) {
  c.state = HboneConn::State::handshaking;
  create_sessions(c);
  drive_conn(c);  // the client's ClientHello
  arm_conn_recv(c);
}

void Worker::create_sessions(HboneConn& c) {
  tls::SessionOptions options;
  options.record_size = config_.tls_record_size;
  c.tls = std::make_unique<tls::TlsSession>(
      *identity_, c.inbound ? tls::Role::server : tls::Role::client, blocks_, options);
  if (!c.inbound) {
    tls::SpiffeId expected;
    tls::parse_spiffe_id(config_.routes[c.route].identity, expected);  // checked at start-up
    c.tls->expect_peer(expected);
  }
  h2::SessionOptions h2o;
  h2o.role = c.inbound ? h2::Role::server : h2::Role::client;
  h2o.max_frame_size = config_.h2_frame_size;
  h2o.stream_window = config_.h2_stream_window;
  h2o.connection_window = config_.h2_connection_window;
  c.h2 = std::make_unique<h2::H2Session>(h2o, c);
}

void Worker::arm_conn_recv(HboneConn& c) {
  const int cls = tls_pool_.class_for(c.policy.cls);
  if (cls < 0) {
    hbone_starved_.push_back({true, c.index, c.generation});
    return;
  }
  c.armed_cls = uint8_t(cls);
  c.recv = RecvMode::armed;
  ring_.prep_buffer_recv(conn_sqe(c, OpKind::conn_recv), c.fd, tls_pool_.group(c.armed_cls));
}

void Worker::conn_received(HboneConn& c, const io_uring_cqe& cqe) {
  if (!(cqe.flags & IORING_CQE_F_MORE)) c.recv = RecvMode::off;
  if (cqe.flags & IORING_CQE_F_BUFFER) {
    const auto bid = uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    tls_pool_.taken(c.armed_cls);
    if (cqe.res > 0 && !c.tls && c.state == HboneConn::State::handshaking) create_sessions(c);
    // The session copies: the buffer goes back at once.
    if (cqe.res > 0 && c.state != HboneConn::State::closing)
      c.tls->feed(tls_pool_.data(c.armed_cls, bid), size_t(cqe.res));
    tls_pool_.give_back(c.armed_cls, bid);
    if (cqe.res > 0) {
      const bool changed = c.policy.on_read(size_t(cqe.res), c.armed_cls, config_.buffer_sizes);
      if (changed && c.recv == RecvMode::armed && (cqe.flags & IORING_CQE_F_MORE)) {
        io_uring_prep_cancel64(conn_sqe(c, OpKind::conn_cancel),
                               ring::encode({uint8_t(OpKind::conn_recv), 0, c.index, c.generation}),
                               0);
        c.recv = RecvMode::cancelling;
      }
      if (c.state != HboneConn::State::closing) drive_conn(c);
      schedule_conn(c);
      return;
    }
  }
  if (c.state == HboneConn::State::closing) return;
  if (cqe.res == 0 && c.inbound && !c.tls)
    return close_before_handshake(c, refused_.client_gone, "closed by the client before a byte");
  if (cqe.res == 0) return fail_conn(c, "the peer closed the connection");
  if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED)
    return fail_conn(c, fmt::format("receive: {}", strerror(-cqe.res)));
  schedule_conn(c);  // re-arm
}

// Runs the TLS handshake or decrypts what arrived and feeds it to HTTP/2.
void Worker::drive_conn(HboneConn& c) {
  if (c.tls->state() == tls::TlsState::handshaking) {
    const tls::HandshakeStatus st = c.tls->handshake();
    if (st == tls::HandshakeStatus::failed)
      return fail_conn(c, "TLS handshake: " + c.tls->failure());
    if (st == tls::HandshakeStatus::in_progress) return schedule_conn(c);
    conn_established(c);
    if (c.state != HboneConn::State::open) return;
  }
  for (;;) {
    const tls::ReadResult r = c.tls->read(plaintext_.data(), plaintext_.size());
    if (r.bytes && c.h2->feed(plaintext_.data(), r.bytes) < 0) {
      schedule_conn(c);
      return fail_conn(c, fmt::format("HTTP/2: {}", c.h2->failure().reason));
    }
    if (r.status == tls::ReadStatus::failed) return fail_conn(c, "TLS: " + c.tls->failure());
    if (r.status == tls::ReadStatus::close_notify)
      return fail_conn(c, "the peer closed the connection");
    if (r.bytes < plaintext_.size()) break;
  }
  schedule_conn(c);
}

void Worker::conn_established(HboneConn& c) {
  c.state = HboneConn::State::open;
  end_handshake(c);
  c.idle_since_ns = monotonic_ns();  // idle until a stream is counted
  c.peer_identity = c.tls->peer_identity().to_string();
  std::vector<HboneStream*> waiting;
  waiting.swap(c.waiting);
  for (HboneStream* s : waiting)
    submit_stream_connect(*s, c);
}

void Worker::service_conn(HboneConn& c) {
  c.scheduled = false;
  if (c.state == HboneConn::State::free || c.state == HboneConn::State::connecting) return;
  if (!c.tls && c.state == HboneConn::State::handshaking) {  // inbound, before its first byte
    if (c.recv == RecvMode::off) arm_conn_recv(c);
    return;
  }
  if (c.state != HboneConn::State::closing) {
    pump_h2(c);
    if (c.h2->failed()) return fail_conn(c, "HTTP/2: " + c.h2->failure().reason);
    if (c.graceful && c.h2->finished()) {
      if (c.tls->state() == tls::TlsState::open) c.tls->shutdown();
      c.state = HboneConn::State::closing;
      c.close_deadline_ns = monotonic_ns() + kCloseGraceNs;
    }
  }
  if (!c.sending && c.tls && c.tls->pending_bytes() &&
      (c.state != HboneConn::State::closing || !c.final_send_done)) {
    const auto iovs = c.tls->pending(HboneConn::kMaxGather);
    std::copy(iovs.begin(), iovs.end(), c.iov.begin());
    ring::prep_gathered_send(conn_sqe(c, OpKind::conn_send), c.fd, c.msg, c.iov.data(),
                             iovs.size());
    c.sending = true;
  }
  if (c.state == HboneConn::State::closing) {
    if (!c.sending) {
      c.final_send_done = true;
      if (c.pending && !c.cancel_sent && c.fd >= 0) {
        c.cancel_sent = true;
        io_uring_prep_cancel_fd(conn_sqe(c, OpKind::conn_cancel), c.fd, IORING_ASYNC_CANCEL_ALL);
      }
    }
    maybe_release_conn(c);
    return;
  }
  if (c.recv == RecvMode::off && c.state != HboneConn::State::connecting) arm_conn_recv(c);
}

// HTTP/2 output into TLS records, while the socket keeps up. The payloads are encrypted (copied)
// here, so consume_output() gives them back to their streams at once.
void Worker::pump_h2(HboneConn& c) {
  auto writable = [&] {
    return c.tls->state() == tls::TlsState::open || c.tls->state() == tls::TlsState::peer_closed;
  };
  while (writable() && c.tls->pending_bytes() < kTlsHighWater) {
    const auto spans = c.h2->pending();
    if (spans.empty()) break;
    std::array<iovec, HboneConn::kMaxGather> parts;
    size_t n = 0, total = 0;
    for (const auto& sp : spans) {
      if (n == parts.size()) break;
      parts[n++] = {const_cast<uint8_t*>(sp.data()), sp.size()};
      total += sp.size();
    }
    if (!c.tls->write({parts.data(), n}, tls::Flush::later)) break;
    c.h2->consume_output(total);
  }
  if (writable()) c.tls->flush();
}

void Worker::conn_sent(HboneConn& c, int res) {
  c.sending = false;
  if (res < 0) {
    c.final_send_done = true;  // nothing more will go out on this socket
    if (c.state != HboneConn::State::closing)
      return fail_conn(c, fmt::format("send: {}", strerror(-res)));
    schedule_conn(c);  // to cancel the receive and close
    return;
  }
  c.tls->consume(size_t(res));
  schedule_conn(c);
}

void Worker::fail_conn(HboneConn& c, std::string reason) {
  if (c.state == HboneConn::State::closing || c.state == HboneConn::State::free) return;
  // What HTTP/2 still has for the peer (its GOAWAY saying why) goes into TLS before the streams
  // are dropped, which drops the session's output.
  if (c.h2 && c.tls) pump_h2(c);
  c.state = HboneConn::State::closing;
  c.close_deadline_ns = monotonic_ns() + kCloseGraceNs;
  c.failure = std::move(reason);
  log_line(fmt::format("ringtunnel: hbone {} {} {}{}: closed: {}", c.inbound ? "from" : "to",
                       c.peer_text, c.peer_identity.empty() ? "" : "identity=", c.peer_identity,
                       c.failure));
  if (c.h2) c.h2->close_all_streams(h2::kConnectError);
  std::vector<HboneStream*> waiting;
  waiting.swap(c.waiting);
  for (HboneStream* s : waiting)
    end_stream(*s, EndReason::peer_error, true);
  schedule_conn(c);
}

void Worker::close_conn_gracefully(HboneConn& c) {
  if (c.state != HboneConn::State::open || c.graceful) return;
  c.graceful = true;
  c.h2->submit_goaway_graceful();
  schedule_conn(c);
}

void Worker::maybe_release_conn(HboneConn& c) {
  if (c.pending || c.sending || !c.final_send_done) return;
  if (c.fd >= 0) {
    io_uring_prep_close(conn_sqe(c, OpKind::conn_close), c.fd);
    c.fd = -1;
    return;
  }
  conn_released(c);
  c.h2.reset();
  c.tls.reset();
  c.state = HboneConn::State::free;
  conns_.release(c);
  accept_blocked_ = false;  // a descriptor was freed: accepting may work again
}

// ---- streams ----

void Worker::open_outbound_stream(int fd, uint16_t route) {
  HboneStream* slot = new_stream(false);
  if (!slot) {
    net::arm_reset_on_close(fd);
    close(fd);
    --accepted_live_;
    return;
  }
  HboneStream& s = *slot;
  s.fd = fd;
  s.route = route;
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
  s.client_text = net::format_sockaddr(reinterpret_cast<sockaddr*>(&peer), len);
  net::tune_relay_socket(fd);
  s.src_identity = identity_->identity().to_string();
  s.dst_identity = config_.routes[route].identity;
  HboneConn* pooled = pooled_conn(route);
  if (!pooled || pooled->state == HboneConn::State::closing)
    return end_stream(s, EndReason::peer_error, true);
  HboneConn& c = *pooled;
  if (c.state == HboneConn::State::open) return submit_stream_connect(s, c);
  c.waiting.push_back(&s);
}

void Worker::submit_stream_connect(HboneStream& s, HboneConn& c) {
  if (s.state != HboneStream::State::opening) return;
  const config::Route& r = config_.routes[s.route];
  const std::string forwarded = fmt::format("for=\"{}\"", s.client_text);
  const std::string trace = traceparent();
  const h2::Header headers[] = {{"forwarded", forwarded}, {"traceparent", trace}};
  const int32_t id = c.h2->submit_connect(r.target_text, headers, &s);
  if (id < 0) return end_stream(s, EndReason::error, true);
  s.conn = &c;
  s.conn_index = c.index;
  s.conn_generation = c.generation;
  s.id = id;
  s.dst_identity = c.peer_identity;
  ++c.streams;
  schedule_conn(c);
}

void Worker::h2_response(HboneConn& c, int32_t id, int status) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s || s->state != HboneStream::State::opening) return;
  if (status >= 200 && status < 300) {
    s->state = HboneStream::State::open;
    schedule_stream(*s);
    return;
  }
  end_stream(*s,
             status == 503   ? EndReason::refused
             : status == 401 ? EndReason::denied
             : status == 400 ? EndReason::bad_request
                             : EndReason::error,
             true);
}

void Worker::h2_connect_request(HboneConn& c, int32_t id, const net::Endpoint& target,
                                std::span<const h2::Header> headers) {
  if (!admit_inbound_stream(c, id)) return;
  // Decided before any socket exists: a refused target is never dialled.
  Admission admission = admit(target, config_, c.tls->peer_identity(), identity_->identity());
  HboneStream* slot = new_stream(true);
  if (!slot) {
    c.h2->submit_response(id, 503);
    return;
  }
  HboneStream& s = *slot;
  s.conn = &c;
  s.conn_index = c.index;
  s.conn_generation = c.generation;
  s.id = id;
  s.target = target;
  s.client_text = c.peer_text;
  for (const h2::Header& h : headers)
    if (h.name == "forwarded" && h.value.starts_with("for=\"") && h.value.ends_with('"'))
      s.client_text = std::string(h.value.substr(5, h.value.size() - 6));
  s.src_identity = c.peer_identity;
  s.dst_identity = identity_->identity().to_string();
  c.h2->set_stream_owner(id, &s);
  ++c.streams;
  if (admission.verdict != Verdict::allow) {
    // The session ends the stream after the response; on_stream_closed frees it.
    c.h2->submit_response(id, http_status(admission.verdict));
    s.end = end_reason(admission.verdict);
    s.refusal = std::move(admission.reason);
    s.state = HboneStream::State::closing;
    return;
  }
  s.fd = net::stream_socket_for(target);
  if (s.fd < 0) {
    c.h2->submit_response(id, 503);
    s.end = EndReason::connect_error;
    s.state = HboneStream::State::closing;
    return;
  }
  ring_.reserve(2);
  io_uring_sqe* sq = stream_sqe(s, OpKind::stream_connect);
  io_uring_prep_connect(sq, s.fd, s.target.addr(), s.target.length);
  sq->flags |= IOSQE_IO_LINK;
  io_uring_prep_link_timeout(stream_sqe(s, OpKind::stream_connect_timeout), &connect_timeout_, 0);
}

void Worker::stream_target_connected(HboneStream& s, int res) {
  if (s.state != HboneStream::State::opening) return;
  if (!s.conn) return end_stream(s, EndReason::peer_error, true);
  if (res == 0) {
    s.state = HboneStream::State::open;
    s.conn->h2->submit_response(s.id, 200);
    schedule_conn(*s.conn);
    schedule_stream(s);
    return;
  }
  s.conn->h2->submit_response(s.id, 503);
  schedule_conn(*s.conn);
  // The session ends the stream; on_stream_closed frees it.
  s.state = HboneStream::State::closing;
  s.end = res == -ECANCELED      ? EndReason::connect_timeout
          : res == -ECONNREFUSED ? EndReason::connect_refused
                                 : EndReason::connect_error;
  maybe_release_stream(s);
}

void Worker::h2_data(HboneConn& c, int32_t id, const uint8_t* data, size_t size) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s || s->state == HboneStream::State::closing) {
    c.h2->consume(id, size);  // nobody will send it: hand the window back now
    return;
  }
  if (!s->out) s->out = std::make_unique<tls::CiphertextQueue>(blocks_);
  s->out->append(data, size);
  // The bytes now sit in this stream's own queue, bounded by its stream window: the connection
  // window they took comes back at once, so a few stalled streams cannot hold the window that
  // their siblings share. Past the memory budget, it comes back only when they leave.
  if (early_credit_bytes_ + size <= config_.memory_budget) {
    c.h2->consume_connection(size);
    s->early_credit += size;
    early_credit_bytes_ += size;
  }
  schedule_stream(*s);
}

void Worker::h2_end_stream(HboneConn& c, int32_t id) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s) return;
  s->peer_end = true;
  schedule_stream(*s);
}

void Worker::h2_reset(HboneConn& c, int32_t id, uint32_t code) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s) return;
  if (s->state == HboneStream::State::opening && !s->inbound && code == h2::kRefusedStream)
    return end_stream(*s, EndReason::refused, true);
  // A reset of the tunnel is a reset of the TCP side: the far end reset (or failed).
  const EndReason reason = c.overloaded                           ? EndReason::overload
                           : c.state == HboneConn::State::closing ? EndReason::peer_error
                           : s->inbound                           ? EndReason::client_reset
                                                                  : EndReason::target_reset;
  end_stream(*s, reason, true);
}

void Worker::h2_stream_closed(HboneConn& c, int32_t id) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s) return;
  s->h2_closed = true;
  s->conn = nullptr;
  if (c.streams) --c.streams;
  if (!c.streams && !c.inbound) c.idle_since_ns = monotonic_ns();
  if (s->state == HboneStream::State::open || s->state == HboneStream::State::opening) {
    // Closed cleanly on both ends of the session; the TCP side finishes on its own.
    schedule_stream(*s);
  }
  if (s->state == HboneStream::State::closing) maybe_release_stream(*s);
}

// A buffer goes back to the kernel only once no byte of it is referenced: released by address,
// never by count (see lent_payloads.h for what counting got wrong).
void Worker::h2_payload_released(HboneConn& c, int32_t id, std::span<const uint8_t> piece) {
  auto* s = static_cast<HboneStream*>(c.h2->stream_owner(id));
  if (!s) return;
  const size_t heap_before = s->lent.heap_bytes();
  if (!s->lent.release(piece, give_back_))
    log_bug(fmt::format("stream {}: release of {} bytes that were not lent", id, piece.size()));
  heap_bytes_ -= heap_before - s->lent.heap_bytes();
  s->lent_progress_ns = now_ns_;
  schedule_stream(*s);
}

void Worker::stream_received(HboneStream& s, const io_uring_cqe& cqe) {
  if (!(cqe.flags & IORING_CQE_F_MORE)) s.recv = RecvMode::off;
  if (cqe.flags & IORING_CQE_F_BUFFER) {
    const auto bid = uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    pool_.taken(s.armed_cls);
    if (cqe.res <= 0 || s.state != HboneStream::State::open || !s.conn ||
        s.conn->h2->submit_data(s.id, pool_.data(s.armed_cls, bid), size_t(cqe.res)) != 0) {
      pool_.give_back(s.armed_cls, bid);
      if (cqe.res > 0 && s.state == HboneStream::State::open)
        end_stream(s, EndReason::peer_error, true);
      return;
    }
    if (s.lent.empty()) s.lent_progress_ns = now_ns_;
    s.lent.lend(pool_.data(s.armed_cls, bid), uint32_t(cqe.res), bid, s.armed_cls);
    s.bytes_from_tcp += uint32_t(cqe.res);
    const bool changed = s.policy.on_read(size_t(cqe.res), s.armed_cls, config_.buffer_sizes);
    if ((cqe.flags & IORING_CQE_F_MORE) && s.recv == RecvMode::armed &&
        (changed || s.lent.live_bytes() >= config_.max_queued)) {
      io_uring_prep_cancel64(stream_sqe(s, OpKind::stream_cancel),
                             ring::encode({uint8_t(OpKind::stream_recv), 0, s.index, s.generation}),
                             0);
      s.recv = RecvMode::cancelling;
    }
    schedule_conn(*s.conn);
    return;
  }
  if (s.state != HboneStream::State::open) return;
  if (cqe.res == 0) {
    s.tcp_eof = true;
  } else if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED) {
    if (s.conn) s.conn->h2->submit_reset(s.id, h2::kConnectError);
    return end_stream(s,
                      is_reset(-cqe.res)
                          ? (s.inbound ? EndReason::target_reset : EndReason::client_reset)
                          : EndReason::error,
                      false);
  }
  schedule_stream(s);
}

void Worker::stream_sent(HboneStream& s, int res) {
  s.sending = false;
  if (s.state != HboneStream::State::open) return;
  if (res <= 0) {
    if (s.conn) s.conn->h2->submit_reset(s.id, h2::kConnectError);
    return end_stream(s,
                      res < 0 && is_reset(-res)
                          ? (s.inbound ? EndReason::target_reset : EndReason::client_reset)
                          : EndReason::error,
                      false);
  }
  s.out->consume(size_t(res));
  s.bytes_to_tcp += uint32_t(res);
  give_window(s, size_t(res));
  schedule_stream(s);
}

// Hands received bytes back to HTTP/2 flow control once they have left (or never will): also
// after the stream has closed in the session, or the connection's window would shrink for good.
void Worker::give_window(HboneStream& s, size_t bytes) {
  const auto early = size_t(std::min<uint64_t>(bytes, s.early_credit));
  s.early_credit -= early;
  early_credit_bytes_ -= early;
  HboneConn* live = bytes && s.id >= 0 ? conns_.find(s.conn_index, s.conn_generation) : nullptr;
  if (!live || live->state == HboneConn::State::free || live->state == HboneConn::State::closing ||
      !live->h2)
    return;
  HboneConn& c = *live;
  c.h2->consume_stream(s.id, early);
  c.h2->consume(s.id, bytes - early);
  schedule_conn(c);
}

void Worker::service_stream(HboneStream& s) {
  s.scheduled = false;
  if (s.state != HboneStream::State::open) return;
  // tunnel -> TCP
  const bool queued = s.out && s.out->size();
  if (queued && !s.sending) {
    const auto iovs = s.out->iovecs(HboneConn::kMaxGather);
    std::copy(iovs.begin(), iovs.end(), s.iov.begin());
    ring::prep_gathered_send(stream_sqe(s, OpKind::stream_send), s.fd, s.msg, s.iov.data(),
                             iovs.size());
    s.sending = true;
  }
  if (!queued && !s.sending && s.peer_end && !s.shut) {
    s.shut = true;
    io_uring_prep_shutdown(stream_sqe(s, OpKind::stream_shutdown), s.fd, SHUT_WR);
  }
  // TCP -> tunnel
  if (s.tcp_eof && !s.end_sent && s.conn) {
    s.end_sent = true;
    s.conn->h2->submit_end(s.id);
    schedule_conn(*s.conn);
  }
  // Below half the quota, so a paused stream resumes with room for a few reads.
  if (s.recv == RecvMode::off && !s.tcp_eof && s.conn &&
      s.lent.live_bytes() < config_.max_queued / 2) {
    const int cls = pool_.class_for(s.policy.cls);
    if (cls < 0) {
      hbone_starved_.push_back({false, s.index, s.generation});
    } else {
      s.armed_cls = uint8_t(cls);
      s.recv = RecvMode::armed;
      ring_.prep_buffer_recv(stream_sqe(s, OpKind::stream_recv), s.fd, pool_.group(s.armed_cls));
    }
  }
  // Done both ways: FIN passed on each way, and the session has let go of the stream.
  if (s.shut_done && s.end_sent && s.h2_closed && !s.sending)
    end_stream(s, EndReason::closed, false);
}

void Worker::end_stream(HboneStream& s, EndReason reason, bool reset_tcp) {
  if (s.state == HboneStream::State::closing || s.state == HboneStream::State::free) return;
  s.state = HboneStream::State::closing;
  s.end = reason;
  s.reset_tcp = reset_tcp;
  if (s.conn && !s.h2_closed && reason != EndReason::closed &&
      s.conn->state != HboneConn::State::closing) {
    if (s.id >= 0) {
      s.conn->h2->submit_reset(s.id, h2::kConnectError);
      schedule_conn(*s.conn);
    }
  }
  if (s.pending && s.fd >= 0)
    io_uring_prep_cancel_fd(stream_sqe(s, OpKind::stream_cancel), s.fd, IORING_ASYNC_CANCEL_ALL);
  maybe_release_stream(s);
}

void Worker::maybe_release_stream(HboneStream& s) {
  // An outbound stream that never got an id, or whose connection is gone, has nothing to wait
  // for in a session.
  if (!s.h2_closed && (s.id < 0 || !s.conn)) s.h2_closed = true;
  if (s.pending || !s.h2_closed) return;
  if (!s.closes_sent && s.fd >= 0) {
    s.closes_sent = true;
    if (s.reset_tcp) net::arm_reset_on_close(s.fd);
    io_uring_prep_close(stream_sqe(s, OpKind::stream_close), s.fd);
    return;
  }
  release_stream(s);
}

void Worker::release_stream(HboneStream& s) {
  heap_bytes_ -= s.lent.heap_bytes();
  s.lent.release_all(give_back_);
  // Bytes from the tunnel that will never be sent: their connection window comes back now
  // (except what came back on arrival).
  if (s.out) give_window(s, s.out->size());
  early_credit_bytes_ -= s.early_credit;
  s.early_credit = 0;
  s.out.reset();
  if (log_.enabled()) {
    const std::string listener =
        s.inbound ? config_.hbone_listen_text : config_.routes[s.route].listen_text;
    const std::string target =
        s.inbound ? s.target.to_string() : config_.routes[s.route].target_text;
    AccessRecord rec;
    rec.listener = listener;
    rec.client = s.client_text;
    rec.target = target;
    rec.bytes_up = s.inbound ? s.bytes_to_tcp : s.bytes_from_tcp;
    rec.bytes_down = s.inbound ? s.bytes_from_tcp : s.bytes_to_tcp;
    rec.duration_ms = (monotonic_ns() - s.start_ns) / 1'000'000;
    rec.end = s.end;
    rec.start_unix_ms = s.start_unix_ms;
    rec.src_identity = s.src_identity;
    rec.dst_identity = s.dst_identity;
    append_access_line(log_batch_, rec, s.refusal);
  }
  stream_released(s);
  s.state = HboneStream::State::free;
  streams_.release(s);
  accept_blocked_ = false;
}

// Keepalive PINGs, idle pooled connections, and the drain of HBONE connections.
// Cancels everything a closing connection still has in flight, its last send included.
void Worker::abandon_conn(HboneConn& c) {
  if (c.state != HboneConn::State::closing) return;
  c.final_send_done = true;
  if (c.fd >= 0 && c.pending && !c.cancel_sent) {
    c.cancel_sent = true;
    io_uring_prep_cancel_fd(conn_sqe(c, OpKind::conn_cancel), c.fd, IORING_ASYNC_CANCEL_ALL);
  }
  maybe_release_conn(c);
}

// Keepalive PINGs, idle pooled connections, handshake and close deadlines, and the drain of
// HBONE connections.
void Worker::hbone_timers(uint64_t now) {
  conns_.for_each([&](HboneConn& c) {
    if (c.state == HboneConn::State::closing) {
      if (now >= c.close_deadline_ns) abandon_conn(c);
      return;
    }
    if (c.state == HboneConn::State::connecting || c.state == HboneConn::State::handshaking) {
      if (now >= c.handshake_deadline_ns) handshake_timed_out(c);
      return;
    }
    if (c.state != HboneConn::State::open) return;
    if (draining_ && !c.graceful) {
      close_conn_gracefully(c);
      return;
    }
    if (inbound_idle(c, now)) return;
    if (!c.inbound && !c.streams && c.waiting.empty() && c.idle_since_ns &&
        now - c.idle_since_ns >= uint64_t(config_.pool_idle_timeout_ms) * 1'000'000u) {
      close_conn_gracefully(c);
      return;
    }
    if (now >= c.next_ping_ns) {
      if (c.h2->ping_outstanding()) {
        fail_conn(c, "keepalive PING unanswered");
        return;
      }
      c.h2->submit_ping();
      c.next_ping_ns = now + uint64_t(config_.keepalive_ms) * 1'000'000u;
      schedule_conn(c);
    }
  });
  opening_deadlines(now);
  next_tick_ns_ = now + kTickNs;
}

}  // namespace ringtunnel::proxy

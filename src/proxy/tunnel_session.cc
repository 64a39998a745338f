#include "ringtunnel/proxy/tunnel_session.h"

#include <array>

namespace ringtunnel::proxy {

namespace {

// Ciphertext queued for the socket beyond which no more HTTP/2 output is encrypted: the socket
// is the bottleneck, and what waits in nghttp2 holds only references.
constexpr size_t kTlsHighWater = 1u << 20;
constexpr size_t kMaxGather = 64;

}  // namespace

void TunnelSession::create(bool server, const tls::Credentials& identity, tls::BlockPool& blocks,
                           const config::Config& config, std::string_view expected_peer,
                           h2::SessionEvents& events) {
  tls::SessionOptions options;
  options.record_size = config.tls_record_size;
  tls_ = std::make_unique<tls::TlsSession>(identity, server ? tls::Role::server : tls::Role::client,
                                           blocks, options);
  if (!server) {
    tls::SpiffeId expected;
    tls::parse_spiffe_id(expected_peer, expected);  // checked at start-up
    tls_->expect_peer(expected);
  }
  h2::SessionOptions h2o;
  h2o.role = server ? h2::Role::server : h2::Role::client;
  h2o.max_frame_size = config.h2_frame_size;
  h2o.stream_window = config.h2_stream_window;
  h2o.connection_window = config.h2_connection_window;
  h2_ = std::make_unique<h2::H2Session>(h2o, events);
}

void TunnelSession::reset() {
  h2_.reset();
  tls_.reset();
}

TunnelSession::Step TunnelSession::step(std::span<uint8_t> scratch) {
  using Kind = Step::Kind;
  if (tls_->state() == tls::TlsState::handshaking) {
    switch (tls_->handshake()) {
      case tls::HandshakeStatus::failed:
        return {Kind::failed, ConnFailure::handshake, tls_->failure()};
      case tls::HandshakeStatus::in_progress:
        return {Kind::waiting, {}, {}};
      case tls::HandshakeStatus::done:
        return {Kind::established, {}, {}};
    }
  }
  for (;;) {
    const tls::ReadResult r = tls_->read(scratch.data(), scratch.size());
    if (r.bytes && h2_->feed(scratch.data(), r.bytes) < 0)
      return {Kind::failed, ConnFailure::http2, h2_->failure().reason};
    if (r.status == tls::ReadStatus::failed)
      return {Kind::failed, ConnFailure::tls, tls_->failure()};
    if (r.status == tls::ReadStatus::close_notify)
      return {Kind::failed, ConnFailure::peer_closed, {}};
    if (r.bytes < scratch.size()) return {Kind::ok, {}, {}};
  }
}

void TunnelSession::pump() {
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

void TunnelSession::close_notify() {
  if (tls_->state() == tls::TlsState::open) tls_->shutdown();
}

}  // namespace ringtunnel::proxy

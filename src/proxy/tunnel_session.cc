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

TunnelSession::Step TunnelSession::step() {
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
  // Each record's plaintext goes to HTTP/2 where TLS opened it, in the inbound queue.
  bool h2_failed = false;
  struct Feed {
    h2::H2Session& h2;
    bool& failed;
  } feed{*h2_, h2_failed};
  const tls::ReadStatus status = tls_->drain(
      [](void* arg, std::span<const uint8_t> plaintext) {
        auto& f = *static_cast<Feed*>(arg);
        f.failed = f.h2.feed(plaintext.data(), plaintext.size()) < 0;
        return !f.failed;
      },
      &feed);
  if (h2_failed) return {Kind::failed, ConnFailure::http2, h2_->failure().reason};
  if (status == tls::ReadStatus::failed) return {Kind::failed, ConnFailure::tls, tls_->failure()};
  if (status == tls::ReadStatus::close_notify) return {Kind::failed, ConnFailure::peer_closed, {}};
  return {Kind::ok, {}, {}};
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

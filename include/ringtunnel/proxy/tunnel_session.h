// The bytes of one HBONE connection: mutual TLS 1.3 (tls::TlsSession) carrying HTTP/2
// (h2::H2Session), and the pumping between the two. No ring and no socket: ciphertext goes in
// through feed() and out through pending()/consume(); HTTP/2's events fire from inside step().
//
//   (none) --create()--> handshaking --step(): handshake done--> open --step(): close_notify,
//                             |                                   |    TLS or HTTP/2 failure
//                             +--step(): failed-------------------+--> (the owner closes)
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ringtunnel/config/config.h"
#include "ringtunnel/h2/session.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/tls/ciphertext_queue.h"
#include "ringtunnel/tls/credentials.h"
#include "ringtunnel/tls/session.h"

namespace ringtunnel::proxy {

class TunnelSession {
 public:
  // What step() came to.
  struct Step {
    enum class Kind : uint8_t { waiting, established, ok, failed } kind = Kind::ok;
    ConnFailure failure = ConnFailure::tls;  // kind == failed
    std::string detail;
  };

  // Server (inbound) or client (outbound, which expects the peer's SPIFFE ID `expected_peer`);
  // HTTP/2 events go to `events`, which must outlive the session.
  void create(bool server, const tls::Credentials& identity, tls::BlockPool& blocks,
              const config::Config& config, std::string_view expected_peer,
              h2::SessionEvents& events);
  bool created() const { return tls_ != nullptr; }
  void reset();

  // Ciphertext from the peer (copied).
  void feed(const uint8_t* data, size_t size) { tls_->feed(data, size); }
  // Ciphertext from the peer, read where it is until settle() (tls::TlsSession::feed_borrowed).
  void feed_borrowed(uint8_t* data, size_t size) { tls_->feed_borrowed(data, size); }
  void settle() { tls_->settle(); }
  // Runs the handshake (established: once, when it completes; waiting: it needs more bytes),
  // or feeds the plaintext of what arrived to HTTP/2, decrypted in place (ok).
  Step step();
  // HTTP/2 output into TLS records, while the socket keeps up. The payloads are encrypted
  // (copied) here, so consume_output() gives them back to their streams at once.
  void pump();
  // Ciphertext for the socket.
  std::span<const iovec> pending(size_t max_iov) { return tls_->pending(max_iov); }
  size_t pending_bytes() const { return tls_ ? tls_->pending_bytes() : 0; }
  void consume(size_t bytes) { tls_->consume(bytes); }
  // close_notify, where TLS is open.
  void close_notify();

  h2::H2Session& h2() { return *h2_; }
  const h2::H2Session* h2_if_created() const { return h2_.get(); }
  const tls::SpiffeId& peer_identity() const { return tls_->peer_identity(); }

 private:
  std::unique_ptr<tls::TlsSession> tls_;
  std::unique_ptr<h2::H2Session> h2_;
};

}  // namespace ringtunnel::proxy

// The record layer: wolfSSL with its I/O callbacks pointed at two ciphertext queues. The state
// machine is drawn in session.h.
#include "ringtunnel/tls/session.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/error-ssl.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#include <algorithm>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

namespace ringtunnel::tls {

namespace {

// wolfSSL reports chain errors with OpenSSL's X509_V_ERR codes, but names only some of them
// (and reports an expired certificate as a bad notAfter field): say what each means here.
const char* x509_error_text(int err) {
  switch (err) {
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_ERROR_IN_CERT_NOT_BEFORE_FIELD:
      return "the certificate is not yet valid";
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_ERROR_IN_CERT_NOT_AFTER_FIELD:
      return "the certificate expired";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
      return "it is not signed by a trusted CA";
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      return "it is self-signed and not trusted";
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return "its signature does not verify";
    case X509_V_ERR_CERT_CHAIN_TOO_LONG:
      return "the chain is too long";
    case X509_V_ERR_CERT_REVOKED:
      return "the certificate is revoked";
    case X509_V_ERR_INVALID_CA:
      return "an issuer in the chain is not a CA";
    case X509_V_ERR_INVALID_PURPOSE:
      return "its key usage does not allow TLS";
  }
  return wolfSSL_X509_verify_cert_error_string(err);
}

}  // namespace

const char* to_string(TlsState state) {
  switch (state) {
    case TlsState::handshaking:
      return "handshaking";
    case TlsState::open:
      return "open";
    case TlsState::peer_closed:
      return "peer_closed";
    case TlsState::local_closed:
      return "local_closed";
    case TlsState::closed:
      return "closed";
    case TlsState::failed:
      return "failed";
  }
  return "?";
}

TlsSession::TlsSession(WOLFSSL_CTX* ctx, Role role, BlockPool& pool, const SessionOptions& options)
    : role_(role),
      pool_(pool),
      inbound_(pool),
      outbound_(pool),
      record_size_(std::clamp<size_t>(options.record_size, 1, kMaxRecordPlaintext)),
      alpn_(options.alpn) {
  static_assert(kMaxRecordPlaintext <= kSmallBlockBytes, "the staging block holds one record");
  init_library();
  if (ctx == nullptr) {
    fail("no TLS context");
    return;
  }
  ssl_ = wolfSSL_new(ctx);
  if (ssl_ == nullptr) {
    fail("wolfSSL_new failed (out of memory?)");
    return;
  }
  wolfSSL_SSLSetIORecv(ssl_, &TlsSession::on_recv);
  wolfSSL_SSLSetIOSend(ssl_, &TlsSession::on_send);
  wolfSSL_SetIOReadCtx(ssl_, this);
  wolfSSL_SetIOWriteCtx(ssl_, this);
  // Per session, whatever the context says: the server requires a client certificate, and
  // on_verify checks the peer's identity inside the handshake, so that a client refuses the
  // wrong server before it sends its own certificate and Finished.
  wolfSSL_set_verify(ssl_,
                     role == Role::server
                         ? WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT
                         : WOLFSSL_VERIFY_PEER,
                     &TlsSession::on_verify);
  // FAILED_ON_MISMATCH: a server answers a client that offers other protocols, but not this
  // one, with a no_application_protocol alert. A client that offers none is refused by
  // check_established().
  if (alpn_.empty() || alpn_.size() > 255 ||
      wolfSSL_UseALPN(ssl_, alpn_.data(), unsigned(alpn_.size()),
                      WOLFSSL_ALPN_FAILED_ON_MISMATCH) != WOLFSSL_SUCCESS)
    fail(fmt::format("cannot set ALPN '{}'", alpn_));
}

TlsSession::~TlsSession() {
  if (ssl_ != nullptr) wolfSSL_free(ssl_);
  if (staging_ != nullptr) pool_.give_back(staging_, false);
}

int TlsSession::on_recv(WOLFSSL*, char* buf, int size, void* ctx) {
  auto* s = static_cast<TlsSession*>(ctx);
  // wolfSSL asks for exactly what it needs (a record header, then the record): hand it what is
  // there, which may be less, and WANT_READ when nothing is, so it returns to the caller.
  if (s->inbound_.empty()) return WOLFSSL_CBIO_ERR_WANT_READ;
  return int(s->inbound_.read(reinterpret_cast<uint8_t*>(buf), size_t(size)));
}

int TlsSession::on_send(WOLFSSL*, char* buf, int size, void* ctx) {
  // The one copy wolfSSL forces: it encrypts into its own buffer and frees that afterwards.
  static_cast<TlsSession*>(ctx)->outbound_.append(reinterpret_cast<const uint8_t*>(buf),
                                                  size_t(size));
  return size;
}

int TlsSession::on_verify(int preverify_ok, WOLFSSL_X509_STORE_CTX* store) {
  auto* ssl = static_cast<WOLFSSL*>(
      wolfSSL_X509_STORE_CTX_get_ex_data(store, wolfSSL_get_ex_data_X509_STORE_CTX_idx()));
  if (ssl == nullptr) return 0;  // not a handshake of ours: refuse rather than guess
  return static_cast<TlsSession*>(wolfSSL_GetIOReadCtx(ssl))->verify(preverify_ok != 0, store);
}

// Called for each certificate of the peer's chain, the leaf (depth 0) last, with wolfSSL's own
// verdict on it. Returns 1 to accept.
int TlsSession::verify(bool preverify_ok, WOLFSSL_X509_STORE_CTX* store) {
  const char* peer = role_ == Role::client ? "server" : "client";
  const int depth = wolfSSL_X509_STORE_CTX_get_error_depth(store);
  if (!preverify_ok) {
    if (verify_failure_.empty()) {
      const int err = wolfSSL_X509_STORE_CTX_get_error(store);
      verify_failure_ = fmt::format("{} certificate refused: {} (X509 error {} at chain depth {})",
                                    peer, x509_error_text(err), err, depth);
    }
    return 0;
  }
  if (depth != 0) return 1;

  SpiffeId id;
  if (std::string why = spiffe_id_of(wolfSSL_X509_STORE_CTX_get_current_cert(store), id);
      !why.empty()) {
    verify_failure_ = fmt::format("{} certificate refused: {}", peer, why);
    return 0;
  }
  if (role_ == Role::client && id != *expected_peer_) {
    verify_failure_ = fmt::format("server identity is {}, expected {}", id.to_string(),
                                  expected_peer_->to_string());
    return 0;
  }
  peer_identity_ = std::move(id);
  peer_identity_checked_ = true;
  return 1;
}

HandshakeStatus TlsSession::handshake() {
  switch (state_) {
    case TlsState::handshaking:
      break;
    case TlsState::failed:
      return HandshakeStatus::failed;
    default:
      return HandshakeStatus::done;
  }
  if (role_ == Role::client && !expected_peer_) {
    fail("no expected server identity: call expect_peer() before the handshake");
    return HandshakeStatus::failed;
  }
  const int ret = role_ == Role::client ? wolfSSL_connect(ssl_) : wolfSSL_accept(ssl_);
  if (ret != WOLFSSL_SUCCESS) {
    if (wolfSSL_get_error(ssl_, ret) == WOLFSSL_ERROR_WANT_READ)
      return HandshakeStatus::in_progress;
    fail(describe_error(ret));
    return HandshakeStatus::failed;
  }
  if (std::string why = check_established(); !why.empty()) {
    fail(std::move(why));
    return HandshakeStatus::failed;
  }
  state_ = TlsState::open;
  return HandshakeStatus::done;
}

// What wolfSSL does not refuse by itself: a peer without ALPN, and (should the verify callback
// not have run) a peer whose identity was never checked.
std::string TlsSession::check_established() {
  char* protocol = nullptr;
  unsigned short size = 0;
  if (wolfSSL_ALPN_GetProtocol(ssl_, &protocol, &size) != WOLFSSL_SUCCESS || protocol == nullptr ||
      std::string_view(protocol, size) != alpn_) {
    wolfSSL_ERR_clear_error();
    return role_ == Role::server
               ? fmt::format("the client did not offer ALPN '{}' (no ALPN at all)", alpn_)
               : fmt::format("the server did not select ALPN '{}'", alpn_);
  }
  if (!peer_identity_checked_) return "the peer's certificate identity was not checked";
  return "";
}

ReadResult TlsSession::read(uint8_t* out, size_t cap) {
  switch (state_) {
    case TlsState::open:
    case TlsState::local_closed:
      break;
    case TlsState::handshaking:
      return {0, ReadStatus::open};
    case TlsState::peer_closed:
    case TlsState::closed:
      return {0, ReadStatus::close_notify};
    case TlsState::failed:
      return {0, ReadStatus::failed};
  }
  size_t n = 0;
  while (n < cap) {
    // wolfSSL returns at most one record's plaintext per call.
    const int chunk = int(std::min<size_t>(cap - n, INT_MAX));
    const int ret = wolfSSL_read(ssl_, out + n, chunk);
    if (ret > 0) {
      n += size_t(ret);
      continue;
    }
    const int err = wolfSSL_get_error(ssl_, ret);
    if (err == WOLFSSL_ERROR_WANT_READ) break;
    if (err == WOLFSSL_ERROR_ZERO_RETURN) {
      state_ = state_ == TlsState::local_closed ? TlsState::closed : TlsState::peer_closed;
      return {n, ReadStatus::close_notify};
    }
    fail(describe_error(ret));
    return {n, ReadStatus::failed};
  }
  return {n, ReadStatus::open};
}

bool TlsSession::write(const uint8_t* data, size_t len, Flush mode) {
  const iovec part{const_cast<uint8_t*>(data), len};
  return write(std::span<const iovec>(&part, 1), mode);
}

bool TlsSession::write(std::span<const iovec> parts, Flush mode) {
  if (!can_write()) return false;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto* p = static_cast<const uint8_t*>(parts[i].iov_base);
    size_t n = parts[i].iov_len;
    const bool to_the_end = i + 1 == parts.size() && mode == Flush::now;
    while (n > 0) {
      if (staged_ == 0 && (n >= record_size_ || to_the_end)) {
        // Straight from the caller's memory: the whole records, and the tail as well when
        // nothing follows it and it must go now.
        const size_t direct = to_the_end ? n : n - n % record_size_;
        if (!encrypt(p, direct)) return false;
        p += direct;
        n -= direct;
        continue;
      }
      // A piece smaller than a record, or a record already begun: gather into the staging
      // block so that pieces share records instead of making one small record each.
      if (staging_ == nullptr) staging_ = pool_.take(false);
      const size_t take = std::min(n, record_size_ - staged_);
      std::memcpy(staging_ + staged_, p, take);
      staged_ += take;
      p += take;
      n -= take;
      if (staged_ == record_size_ && !flush()) return false;
    }
  }
  return mode == Flush::later || flush();
}

bool TlsSession::flush() {
  if (staged_ == 0) return state_ != TlsState::failed;
  const bool ok = encrypt(staging_, staged_);
  staged_ = 0;
  // Given back at once: a session between bursts holds no staging memory.
  pool_.give_back(staging_, false);
  staging_ = nullptr;
  return ok;
}

bool TlsSession::encrypt(const uint8_t* data, size_t len) {
  // One wolfSSL_write per record: each call is exactly one record of at most record_size_.
  while (len > 0) {
    const size_t record = std::min(len, record_size_);
    const int ret = wolfSSL_write(ssl_, data, int(record));
    if (ret != int(record)) {
      fail(describe_error(ret));
      return false;
    }
    data += record;
    len -= record;
  }
  return true;
}

void TlsSession::shutdown() {
  if (!can_write()) return;
  if (!flush()) return;
  // Queues close_notify through on_send. Its result only says whether the peer's close_notify
  // came already, which state_ knows.
  wolfSSL_shutdown(ssl_);
  wolfSSL_ERR_clear_error();
  state_ = state_ == TlsState::peer_closed ? TlsState::closed : TlsState::local_closed;
}

const char* TlsSession::cipher() const {
  return ssl_ != nullptr ? wolfSSL_get_cipher_name(ssl_) : "";
}

void TlsSession::fail(std::string reason) {
  if (state_ == TlsState::failed) return;
  state_ = TlsState::failed;
  failure_ = std::move(reason);
}

std::string TlsSession::describe_error(int ret) {
  if (!verify_failure_.empty()) return verify_failure_;
  const int err = ssl_ != nullptr ? wolfSSL_get_error(ssl_, ret) : 0;
  wolfSSL_ERR_clear_error();
  WOLFSSL_ALERT_HISTORY alerts{};
  if (ssl_ != nullptr && wolfSSL_get_alert_history(ssl_, &alerts) == WOLFSSL_SUCCESS &&
      alerts.last_rx.level == alert_fatal)
    return fmt::format("the peer sent a fatal alert: {}",
                       wolfSSL_alert_desc_string_long(alerts.last_rx.code));
  switch (err) {
    case NO_PEER_CERT:
      return "the client presented no certificate";
    case UNKNOWN_ALPN_PROTOCOL_NAME_E:
      return fmt::format("the client offered ALPN protocols, none of them '{}'", alpn_);
    case VERSION_ERROR:
      return "the peer does not speak TLS 1.3";
    case MATCH_SUITE_ERROR:
      return "no cipher suite in common (AES-GCM required)";
    case AES_GCM_AUTH_E:
    case VERIFY_MAC_ERROR:
    case DECRYPT_ERROR:
      return "a record failed authentication: the ciphertext was corrupted or tampered with";
  }
  return fmt::format("{} (wolfSSL error {})", wolfSSL_ERR_reason_error_string(err), err);
}

}  // namespace ringtunnel::tls

// The TLS session: wolfSSL's handshake with its I/O callbacks pointed at two ciphertext queues,
// then (by default) ringtunnel's own record layer, which opens records in place in the inbound
// queue and seals them straight into the outbound one. The state machine is drawn in session.h.
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

// Alert descriptions (RFC 8446, 6).
namespace alert {
constexpr uint8_t close_notify = 0;
constexpr uint8_t unexpected_message = 10;
constexpr uint8_t bad_record_mac = 20;
constexpr uint8_t record_overflow = 22;
constexpr uint8_t illegal_parameter = 47;
constexpr uint8_t decode_error = 50;
constexpr uint8_t user_canceled = 90;
}  // namespace alert

// Post-handshake handshake message types (RFC 8446, 4).
namespace message {
constexpr uint8_t new_session_ticket = 4;
constexpr uint8_t key_update = 24;
}  // namespace message

// The longest post-handshake message accepted (a NewSessionTicket is a few hundred bytes).
constexpr size_t kMaxPostHandshakeMessage = 64 * 1024;

struct TlsSession::Records {
  RecordCipher read;
  RecordCipher write;
  // The front record of the inbound queue, opened: its plaintext not yet delivered, and the
  // record's wire size, consumed once all of it is.
  const uint8_t* plain = nullptr;
  size_t plain_left = 0;
  size_t wire = 0;
  // A post-handshake message split over records, until it is whole.
  std::string handshake;
};

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
      alpn_(options.alpn),
      own_records_wanted_(options.own_records),
      key_update_records_(std::max<uint64_t>(options.key_update_records, 1)) {
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
  // The own record layer starts both directions at sequence number 0, so wolfSSL must seal
  // nothing with the application keys: a server of ours sends no session ticket, whatever its
  // context says (a client sends nothing after its Finished).
  if (own_records_wanted_ &&
      (wolfSSL_set_tls13_secret_cb(ssl_, &TlsSession::on_secret, this) != WOLFSSL_SUCCESS ||
       (role == Role::server && wolfSSL_no_ticket_TLSv13(ssl_) != 0)))
    own_records_wanted_ = false;  // wolfSSL keeps the records
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
  explicit_bzero(secrets_, sizeof secrets_);
  if (staging_ != nullptr) pool_.give_back(staging_, false);
}

int TlsSession::on_recv(WOLFSSL*, char* buf, int size, void* ctx) {
  auto* s = static_cast<TlsSession*>(ctx);
  // Hand wolfSSL what is there, which may be less than it asks for, and WANT_READ when nothing
  // is, so it returns to the caller.
  if (s->inbound_.empty()) return WOLFSSL_CBIO_ERR_WANT_READ;
  size_t cap = size_t(size);
  if (s->state_ == TlsState::handshaking && s->own_records_wanted_) {
    // One record at a time, never past its end: the records after the handshake's last one
    // belong to the own record layer and must stay queued.
    if (s->handshake_record_left_ == 0) {
      uint8_t header[kRecordHeaderBytes];
      if (s->inbound_.peek(header, sizeof header) < sizeof header)
        return WOLFSSL_CBIO_ERR_WANT_READ;
      s->handshake_record_left_ = kRecordHeaderBytes + ((size_t(header[3]) << 8) | header[4]);
    }
    cap = std::min(cap, s->handshake_record_left_);
  }
  const size_t n = s->inbound_.read(reinterpret_cast<uint8_t*>(buf), cap);
  s->handshake_record_left_ -= std::min(n, s->handshake_record_left_);
  return int(n);
}

int TlsSession::on_secret(WOLFSSL*, int id, const unsigned char* secret, int size, void* ctx) {
  auto* s = static_cast<TlsSession*>(ctx);
  const int side = id == CLIENT_TRAFFIC_SECRET ? 0 : id == SERVER_TRAFFIC_SECRET ? 1 : -1;
  if (side < 0) return 0;
  if (size <= 0 || size_t(size) > sizeof s->secrets_[0]) {
    s->secret_bytes_[side] = 0;
    return 0;
  }
  std::memcpy(s->secrets_[side], secret, size_t(size));
  s->secret_bytes_[side] = uint8_t(size);
  return 0;
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
  if (own_records_wanted_ && !take_over()) return HandshakeStatus::failed;
  return HandshakeStatus::done;
}

// The handshake is done: the own record layer takes the traffic secrets and wolfSSL is freed.
// wolfSSL has read nothing past the handshake's last record (on_recv) and sealed nothing with
// the application keys (a client sends nothing after its Finished, a server no ticket), so
// both directions start at sequence number 0. A suite other than the two offered cannot have
// been agreed; should it be, wolfSSL keeps the records.
bool TlsSession::take_over() {
  const std::string_view name = wolfSSL_get_cipher_name(ssl_);
  Suite suite;
  if (name == "TLS13-AES128-GCM-SHA256") {
    suite = Suite::aes128_gcm_sha256;
    cipher_name_ = "TLS13-AES128-GCM-SHA256";
  } else if (name == "TLS13-AES256-GCM-SHA384") {
    suite = Suite::aes256_gcm_sha384;
    cipher_name_ = "TLS13-AES256-GCM-SHA384";
  } else {
    return true;
  }
  const int ours = role_ == Role::client ? 0 : 1;
  auto records = std::make_unique<Records>();
  const bool ok = secret_bytes_[0] && secret_bytes_[1] &&
                  records->write.init(suite, {secrets_[ours], secret_bytes_[ours]}) &&
                  records->read.init(suite, {secrets_[1 - ours], secret_bytes_[1 - ours]});
  explicit_bzero(secrets_, sizeof secrets_);
  if (!ok) {
    fail("cannot derive the record keys from the handshake's traffic secrets");
    return false;
  }
  records_ = std::move(records);
  wolfSSL_free(ssl_);
  ssl_ = nullptr;
  return true;
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
  if (records_) {
    const ReadStatus status = open_records([&](const uint8_t* p, size_t size) {
      const size_t take = std::min(size, cap - n);
      std::memcpy(out + n, p, take);
      n += take;
      return take;
    });
    return {n, status};
  }
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

ReadStatus TlsSession::drain(Sink sink, void* arg) {
  if (!records_) {  // wolfSSL's records: through a copy
    uint8_t buf[kMaxRecordPlaintext];
    for (;;) {
      const ReadResult r = read(buf, sizeof buf);
      if (r.bytes && !sink(arg, {buf, r.bytes})) return r.status;
      if (r.status != ReadStatus::open || r.bytes < sizeof buf) return r.status;
    }
  }
  switch (state_) {
    case TlsState::open:
    case TlsState::local_closed:
      break;
    case TlsState::peer_closed:
    case TlsState::closed:
      return ReadStatus::close_notify;
    default:
      return ReadStatus::failed;
  }
  bool more = true;
  return open_records([&](const uint8_t* p, size_t size) {
    if (!more) return size_t(0);
    more = sink(arg, {p, size});
    return size;
  });
}

// Opens the complete records at the front of the inbound queue, in place, and hands each
// record's application data to `deliver(data, size)`, which returns how much it took (less
// than all: it is full, and the rest waits for the next call). Alerts and post-handshake
// messages are dealt with here.
template <typename Deliver>
ReadStatus TlsSession::open_records(Deliver&& deliver) {
  Records& r = *records_;
  for (;;) {
    if (r.plain_left > 0) {
      const size_t took = deliver(r.plain, r.plain_left);
      r.plain += took;
      r.plain_left -= took;
      if (r.plain_left > 0) return ReadStatus::open;
    }
    if (r.wire > 0) {
      inbound_.consume(r.wire);
      r.wire = 0;
    }
    if (state_ == TlsState::failed) return ReadStatus::failed;
    if (state_ == TlsState::peer_closed || state_ == TlsState::closed)
      return ReadStatus::close_notify;
    uint8_t header[kRecordHeaderBytes];
    if (inbound_.peek(header, sizeof header) < sizeof header) return ReadStatus::open;
    const size_t length = (size_t(header[3]) << 8) | header[4];
    if (header[0] != uint8_t(ContentType::application_data)) {
      refuse(alert::unexpected_message,
             fmt::format("the peer sent an unprotected record (type {}) after the handshake",
                         header[0]));
      return ReadStatus::failed;
    }
    if (length > kMaxCiphertextBytes) {
      refuse(alert::record_overflow, fmt::format("the peer sent a record of {} bytes (at most {})",
                                                 length, kMaxCiphertextBytes));
      return ReadStatus::failed;
    }
    if (inbound_.size() < kRecordHeaderBytes + length) return ReadStatus::open;
    r.wire = kRecordHeaderBytes + length;
    uint8_t* record = inbound_.contiguous(r.wire);
    const long opened = r.read.open(record, r.wire);
    if (opened < 0) {
      refuse(alert::bad_record_mac,
             "a record failed authentication: the ciphertext was corrupted or tampered with");
      return ReadStatus::failed;
    }
    // The inner plaintext: content, its type, then zeros (RFC 8446, 5.4).
    const uint8_t* body = record + kRecordHeaderBytes;
    size_t end = size_t(opened);
    while (end > 0 && body[end - 1] == 0)
      --end;
    if (end == 0) {
      refuse(alert::unexpected_message, "the peer sent a record with no content type");
      return ReadStatus::failed;
    }
    const auto type = ContentType(body[end - 1]);
    const size_t size = end - 1;
    if (size > kMaxRecordPlaintext) {
      refuse(alert::record_overflow,
             fmt::format("the peer sent a record of {} bytes of plaintext", size));
      return ReadStatus::failed;
    }
    if (type != ContentType::handshake && !r.handshake.empty()) {
      refuse(alert::unexpected_message, "the peer interleaved a record with a split message");
      return ReadStatus::failed;
    }
    switch (type) {
      case ContentType::application_data:
        r.plain = body;
        r.plain_left = size;
        break;
      case ContentType::alert:
        if (size != 2) {
          refuse(alert::decode_error, fmt::format("the peer sent an alert of {} bytes", size));
          return ReadStatus::failed;
        }
        if (body[1] == alert::close_notify) {
          state_ = state_ == TlsState::local_closed ? TlsState::closed : TlsState::peer_closed;
        } else if (body[1] != alert::user_canceled) {
          fail(fmt::format("the peer sent a fatal alert: {}",
                           wolfSSL_alert_desc_string_long(body[1])));
          return ReadStatus::failed;
        }
        break;
      case ContentType::handshake:
        if (!post_handshake(r, body, size)) return ReadStatus::failed;
        break;
      default:
        refuse(alert::unexpected_message,
               fmt::format("the peer sent a record of content type {} after the handshake",
                           uint8_t(type)));
        return ReadStatus::failed;
    }
  }
}

// A handshake record after the handshake: KeyUpdate, or (to a client) NewSessionTicket, which
// ringtunnel does not use. Anything else is refused; ringtunnel never offers post-handshake
// client authentication.
bool TlsSession::post_handshake(Records& r, const uint8_t* body, size_t size) {
  if (size == 0) {
    refuse(alert::unexpected_message, "the peer sent an empty handshake record");
    return false;
  }
  r.handshake.append(reinterpret_cast<const char*>(body), size);
  while (r.handshake.size() >= 4) {
    const auto* m = reinterpret_cast<const uint8_t*>(r.handshake.data());
    const size_t length = (size_t(m[1]) << 16) | (size_t(m[2]) << 8) | m[3];
    if (length > kMaxPostHandshakeMessage) {
      refuse(alert::unexpected_message,
             fmt::format("the peer sent a post-handshake message of {} bytes", length));
      return false;
    }
    if (r.handshake.size() < 4 + length) return true;  // the rest comes in the next record
    switch (m[0]) {
      case message::key_update:
        if (length != 1 || m[4] > 1) {
          refuse(length != 1 ? alert::decode_error : alert::illegal_parameter,
                 "the peer sent a malformed KeyUpdate");
          return false;
        }
        if (r.handshake.size() != 5) {  // a key change must end its record (RFC 8446, 5.1)
          refuse(alert::unexpected_message, "the peer's KeyUpdate does not end its record");
          return false;
        }
        if (!r.read.update()) {
          fail("cannot derive the peer's next traffic key");
          return false;
        }
        if (m[4] == 1 && can_write() && !send_key_update(false)) return false;
        break;
      case message::new_session_ticket:
        if (role_ == Role::server) {
          refuse(alert::unexpected_message, "the client sent a NewSessionTicket");
          return false;
        }
        break;
      default:
        refuse(alert::unexpected_message,
               fmt::format("the peer sent handshake message type {} after the handshake", m[0]));
        return false;
    }
    r.handshake.erase(0, 4 + length);
  }
  return true;
}

// Fails the session for `reason`, and tells the peer with a fatal alert where it still can.
void TlsSession::refuse(uint8_t description, std::string reason) {
  if (state_ == TlsState::failed) return;
  if (records_ && state_ != TlsState::local_closed && state_ != TlsState::closed) {
    const uint8_t body[2] = {2 /* fatal */, description};
    seal(ContentType::alert, body, sizeof body);
  }
  fail(std::move(reason));
}

bool TlsSession::seal(ContentType type, const uint8_t* data, size_t len) {
  uint8_t* out = outbound_.reserve(kRecordHeaderBytes + len + 1 + kAeadTagBytes);
  const size_t sealed = records_->write.seal(type, {data, len}, out);
  if (sealed == 0) {
    fail("AES-GCM failed to seal a record");
    return false;
  }
  outbound_.commit(sealed);
  return true;
}

bool TlsSession::send_key_update(bool request_peer) {
  const uint8_t body[5] = {message::key_update, 0, 0, 1, uint8_t(request_peer ? 1 : 0)};
  if (!seal(ContentType::handshake, body, sizeof body)) return false;
  if (!records_->write.update()) {
    fail("cannot derive the next traffic key");
    return false;
  }
  return true;
}

bool TlsSession::update_keys(bool request_peer) {
  if (!can_write()) return false;
  if (records_) return send_key_update(request_peer);
  // wolfSSL's records: it always asks the peer to update as well.
  const int ret = wolfSSL_update_keys(ssl_);
  if (ret != WOLFSSL_SUCCESS) {
    fail(describe_error(ret));
    return false;
  }
  return true;
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
  if (records_) {
    while (len > 0) {
      const size_t record = std::min(len, record_size_);
      if (!seal(ContentType::application_data, data, record)) return false;
      if (records_->write.sequence() >= key_update_records_ && !send_key_update(false))
        return false;
      data += record;
      len -= record;
    }
    return true;
  }
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
  if (records_) {
    const uint8_t body[2] = {1 /* warning */, alert::close_notify};
    if (!seal(ContentType::alert, body, sizeof body)) return;
    state_ = state_ == TlsState::peer_closed ? TlsState::closed : TlsState::local_closed;
    return;
  }
  // Queues close_notify through on_send. Its result only says whether the peer's close_notify
  // came already, which state_ knows.
  wolfSSL_shutdown(ssl_);
  wolfSSL_ERR_clear_error();
  state_ = state_ == TlsState::peer_closed ? TlsState::closed : TlsState::local_closed;
}

const char* TlsSession::cipher() const {
  return ssl_ != nullptr ? wolfSSL_get_cipher_name(ssl_) : cipher_name_;
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

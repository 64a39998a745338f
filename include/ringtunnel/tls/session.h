// One TLS 1.3 connection as a state machine that performs no I/O: ciphertext goes in through
// feed(), comes out through pending()/consume(); plaintext goes in through write() and comes out
// through read(). Nothing here knows of sockets or rings, so it is tested with byte strings.
//
//                 handshake() done
//   handshaking ------------------> open ------- shutdown() -------> local_closed
//        |                           |                                    |
//        |                   peer close_notify                    peer close_notify
//        |                           v                                    v
//        |                      peer_closed ------- shutdown() -------> closed
//        v
//      failed     from any state but closed: an alert sent or received; the peer's chain,
//                 identity or ALPN refused; a record that does not authenticate
//
//   done:         the peer's chain verified against the CA file, its SPIFFE ID read (and, in a
//                 client, equal to expect_peer()), ALPN h2 agreed.
//   peer_closed:  no more plaintext will come; write() still works (TLS 1.3 closes each
//                 direction on its own).
//   local_closed: our close_notify is queued; read() still returns what the peer sends.
//   failed:       failure() says why; pending() may still hold the alert that tells the peer.
//
// The owner's duties (see also each function):
//   - after every call that takes bytes in (feed + handshake/read) or produces them (write,
//     flush, shutdown), look at pending(): the handshake, alerts and key updates produce
//     ciphertext too, not only write().
//   - send pending() in one gathered send, at most one send in flight; when it completes,
//     consume() the bytes the kernel took, then look at pending() again.
//   - stop reading the socket while inbound_bytes() is large (the peer is sending faster than
//     read() is called), stop producing while pending_bytes() is large (the socket is slow).
//
// The session stays where it was constructed (wolfSSL holds its address): own it through a
// unique_ptr or in a slot that does not move.
#pragma once

#include <sys/uio.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ringtunnel/tls/ciphertext_queue.h"
#include "ringtunnel/tls/credentials.h"
#include "ringtunnel/tls/identity.h"
#include "ringtunnel/tls/record_cipher.h"

struct WOLFSSL;
struct WOLFSSL_CTX;
struct WOLFSSL_X509_STORE_CTX;

namespace ringtunnel::tls {

// The most plaintext one TLS record carries (RFC 8446, 5.1).
inline constexpr size_t kMaxRecordPlaintext = 16384;
// What a full record of kMaxRecordPlaintext costs on the wire with AES-GCM in TLS 1.3: the
// 5-byte header, the inner content type byte and the 16-byte tag.
inline constexpr size_t kMaxRecordWireBytes = 5 + kMaxRecordPlaintext + 1 + 16;

struct SessionOptions {
  // The protocol offered (client) or required (server) in ALPN. HBONE is HTTP/2.
  std::string alpn = "h2";
  // Plaintext bytes per full record (--tls-record-size). The maximum, 16 KiB: a record costs one
  // AEAD call and 22 bytes on the wire whatever its size, and bulk data has no latency to save.
  size_t record_size = kMaxRecordPlaintext;
  // Once the handshake is done, seal and open records with ringtunnel's own record layer
  // (record_cipher.h): in place in the ciphertext queues, and the wolfSSL object is freed. False
  // leaves them to wolfSSL, as tests and benchmarks do that compare the two.
  bool own_records = true;
  // Records sealed under one key before the session moves to the next with a KeyUpdate (own
  // record layer only). RFC 8446, 5.5 allows AES-GCM about 2^24.5 full records per key.
  uint64_t key_update_records = uint64_t(1) << 24;
};

enum class TlsState : uint8_t { handshaking, open, peer_closed, local_closed, closed, failed };
const char* to_string(TlsState state);

enum class HandshakeStatus : uint8_t { in_progress, done, failed };

// What follows the bytes a read() returned.
enum class ReadStatus : uint8_t {
  open,          // more may come: feed more ciphertext
  close_notify,  // the peer closed its direction cleanly; nothing follows
  failed,        // the connection failed: failure() says why; nothing follows
};

struct ReadResult {
  size_t bytes = 0;
  ReadStatus status = ReadStatus::open;
};

// Whether write() may keep the tail of what it was given, less than a full record, for the next
// write(): `later` lets a caller that writes small pieces (frame headers, then payloads) have
// them go out in full records, as long as it calls flush() before it waits for the socket.
enum class Flush : uint8_t { now, later };

class TlsSession {
 public:
  // A session on `ctx`, which must be a TLS 1.3 context of `role` with the peer verification
  // set up (Credentials, or a context given apply_protocol_policy). Ciphertext blocks come from
  // `pool`, which must outlive the session. wolfSSL counts the context's use: it may be released
  // by its owner while the session lives. Failure to set up leaves the session failed.
  TlsSession(WOLFSSL_CTX* ctx, Role role, BlockPool& pool, const SessionOptions& options = {});
  TlsSession(const Credentials& credentials, Role role, BlockPool& pool,
             const SessionOptions& options = {})
      : TlsSession(credentials.context(role), role, pool, options) {}
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  ~TlsSession();

  // Client: the identity the server's certificate must carry. Required before the handshake:
  // a client session without one fails rather than talk to anyone the CA vouches for.
  void expect_peer(const SpiffeId& id) { expected_peer_ = id; }

  // Ciphertext the socket received, any amount split anywhere. Copied: the caller's buffer may
  // be reused (a ring buffer given back) as soon as this returns. Dropped once the session
  // failed: nothing will read it.
  void feed(const uint8_t* data, size_t len) {
    if (state_ != TlsState::failed) inbound_.append(data, len);
  }
  size_t inbound_bytes() const { return inbound_.size(); }
  // The same without the copy: the session reads `data` (and opens records in it, in place)
  // until settle(), which copies what is left (a record's beginning) and must be called before
  // the caller reuses the memory and before the next feed.
  void feed_borrowed(uint8_t* data, size_t len) {
    if (state_ != TlsState::failed) inbound_.append_borrowed(data, len);
  }
  void settle() { inbound_.settle(); }

  // Advances the handshake with what was fed. in_progress: feed more (and send pending()).
  // done: read() and write() work from now on; calling again returns done. failed: failure().
  HandshakeStatus handshake();

  // Client: the server's SPIFFE ID; server: the client's. Set once handshake() returned done.
  const SpiffeId& peer_identity() const { return peer_identity_; }

  // Decrypts what was fed into `out`, as much as fits. Returns the bytes written and what
  // follows them. bytes == cap means more may be ready: call again. Before the handshake is
  // done, returns nothing.
  ReadResult read(uint8_t* out, size_t cap);

  // The same as read(), without the copy: hands `sink` the plaintext of each record in turn, in
  // place, valid only during the call, until none is complete or `sink` returns false (then the
  // piece counts as taken). Returns what follows, as read() does.
  using Sink = bool (*)(void* arg, std::span<const uint8_t> plaintext);
  ReadStatus drain(Sink sink, void* arg);

  // Moves this direction to the next traffic key with a KeyUpdate message, asking the peer to do
  // the same when `request_peer`. Done by the session itself every key_update_records records;
  // public for tests. False when the session cannot write.
  bool update_keys(bool request_peer);
  // Whether ringtunnel's record layer carries the records (see SessionOptions::own_records).
  bool own_records() const { return records_ != nullptr; }

  // Encrypts `parts` in order into records queued on pending(). Full records for bulk data; a
  // small write goes out at once as a small record unless `mode` is later. Returns false, and
  // takes nothing, when the session cannot write (not open, closed by us, failed); a failure
  // of wolfSSL while encrypting fails the session.
  bool write(std::span<const iovec> parts, Flush mode = Flush::now);
  bool write(const uint8_t* data, size_t len, Flush mode = Flush::now);
  // Encrypts what write(..., Flush::later) kept back. Returns false if the session failed.
  bool flush();

  // Queues close_notify (after anything kept back by write). The connection's write side is done;
  // read() still returns what the peer sends until its close_notify.
  void shutdown();

  // Ciphertext waiting to be sent, front first, as at most `max_iov` contiguous blocks. Valid
  // until the next pending(), consume() or destruction: copy the iovecs if the send is prepared
  // later. Bytes stay where they are until consume()d, so the memory may be handed to the
  // kernel.
  std::span<const iovec> pending(size_t max_iov = IOV_MAX) { return outbound_.iovecs(max_iov); }
  size_t pending_bytes() const { return outbound_.size(); }
  // The kernel took `bytes` from the front of pending() (a short send takes less than all).
  void consume(size_t bytes) { outbound_.consume(bytes); }

  TlsState state() const { return state_; }
  Role role() const { return role_; }
  // Why the session failed, for the access log: "" unless state() is failed.
  const std::string& failure() const { return failure_; }
  // The negotiated cipher suite, e.g. "TLS13-AES128-GCM-SHA256" (once done).
  const char* cipher() const;

 private:
  static int on_recv(WOLFSSL* ssl, char* buf, int size, void* ctx);
  static int on_send(WOLFSSL* ssl, char* buf, int size, void* ctx);
  static int on_verify(int preverify_ok, WOLFSSL_X509_STORE_CTX* store);
  static int on_secret(WOLFSSL* ssl, int id, const unsigned char* secret, int size, void* ctx);

  struct Records;  // the own record layer's state, from the end of the handshake
  bool take_over();
  template <typename Deliver>
  ReadStatus open_records(Deliver&& deliver);
  bool post_handshake(Records& r, const uint8_t* body, size_t size);
  bool seal(ContentType type, const uint8_t* data, size_t len);
  bool send_key_update(bool request_peer);
  void refuse(uint8_t alert, std::string reason);

  int verify(bool preverify_ok, WOLFSSL_X509_STORE_CTX* store);
  std::string check_established();
  bool encrypt(const uint8_t* data, size_t len);
  void fail(std::string reason);
  std::string describe_error(int ret);
  bool can_write() const { return state_ == TlsState::open || state_ == TlsState::peer_closed; }

  WOLFSSL* ssl_ = nullptr;
  std::unique_ptr<Records> records_;
  // The application traffic secrets wolfSSL derives in the handshake (client's, server's), kept
  // until take_over() makes keys of them.
  uint8_t secrets_[2][48] = {};
  uint8_t secret_bytes_[2] = {};
  // Bytes left of the record wolfSSL is reading in the handshake (on_recv never hands it more,
  // so that what follows the handshake stays queued for the own record layer).
  size_t handshake_record_left_ = 0;
  Role role_;
  TlsState state_ = TlsState::handshaking;
  BlockPool& pool_;
  CiphertextQueue inbound_;
  CiphertextQueue outbound_;
  // Plaintext kept back by write(..., Flush::later): one pool block of kSmallBlockBytes.
  uint8_t* staging_ = nullptr;
  size_t staged_ = 0;
  size_t record_size_;
  std::string alpn_;
  bool own_records_wanted_;
  uint64_t key_update_records_;
  const char* cipher_name_ = "";
  std::optional<SpiffeId> expected_peer_;
  SpiffeId peer_identity_;
  bool peer_identity_checked_ = false;
  std::string verify_failure_;  // why on_verify refused the peer, which wolfSSL cannot say
  std::string failure_;
};

}  // namespace ringtunnel::tls

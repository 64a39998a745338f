// One direction of TLS 1.3 record protection with AES-GCM (RFC 8446, 5.2-5.3 and 7.1-7.3): the
// traffic secret, the key and IV derived from it, and the record sequence number. Once wolfSSL's
// handshake is done, TlsSession seals and opens application records with two of these, in the
// memory they already occupy: no record is copied into or out of a library buffer.
//
// The secrets come from the handshake (wolfSSL's secret callback); update() steps to the next
// generation for KeyUpdate. Each object is one direction and one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace ringtunnel::tls {

// TLS 1.3 record content types (RFC 8446, 5.1).
enum class ContentType : uint8_t {
  change_cipher_spec = 20,
  alert = 21,
  handshake = 22,
  application_data = 23,
};

inline constexpr size_t kRecordHeaderBytes = 5;
inline constexpr size_t kAeadTagBytes = 16;
// The largest ciphertext a record may carry: 2^14 plaintext + 256 of expansion (RFC 8446, 5.2).
inline constexpr size_t kMaxCiphertextBytes = 16384 + 256;

// The two suites ringtunnel offers (credentials.h kCipherSuites).
enum class Suite : uint8_t { aes128_gcm_sha256, aes256_gcm_sha384 };

class RecordCipher {
 public:
  RecordCipher();
  ~RecordCipher();
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  // Takes `secret` (the hash's length: 32 or 48 bytes) as this direction's traffic secret and
  // derives its key and IV; the sequence number starts at 0. False if the sizes do not match
  // the suite or wolfCrypt refuses.
  bool init(Suite suite, std::span<const uint8_t> secret);
  // KeyUpdate: the next generation's secret, key and IV; the sequence number starts again at 0.
  bool update();

  // Seals one record into `out`, which has room for kRecordHeaderBytes + body.size() + 1 +
  // kAeadTagBytes: the header, then `body` and the inner content `type` encrypted, then the tag.
  // `body` may not overlap `out`. Returns the record's size, 0 if wolfCrypt failed.
  size_t seal(ContentType type, std::span<const uint8_t> body, uint8_t* out);

  // Opens the record at `record` (header included, all of it) in place: on success the
  // plaintext (inner content, type byte and padding included) is at record + 5, and its size is
  // returned. -1 when the record does not authenticate.
  long open(uint8_t* record, size_t size);

  uint64_t sequence() const { return seq_; }

 private:
  bool derive();
  void nonce(uint8_t out[12]) const;

  struct State;
  std::unique_ptr<State> s_;
  uint64_t seq_ = 0;
};

}  // namespace ringtunnel::tls

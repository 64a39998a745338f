#include "ringtunnel/tls/record_cipher.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/kdf.h>
#include <wolfssl/wolfcrypt/sha256.h>
#include <wolfssl/wolfcrypt/sha512.h>

#include <cstring>

namespace ringtunnel::tls {

namespace {

constexpr size_t kIvBytes = 12;
constexpr size_t kMaxSecretBytes = 48;

// HKDF-Expand-Label(secret, label, "", size) of RFC 8446, 7.1.
bool expand_label(int digest, std::span<const uint8_t> secret, const char* label, uint8_t* out,
                  size_t size) {
  static constexpr uint8_t kProtocol[] = {'t', 'l', 's', '1', '3', ' '};
  static constexpr uint8_t kNoContext = 0;
  return wc_Tls13_HKDF_Expand_Label(out, word32(size), secret.data(), word32(secret.size()),
                                    kProtocol, sizeof kProtocol,
                                    reinterpret_cast<const uint8_t*>(label),
                                    word32(std::strlen(label)), &kNoContext, 0, digest) == 0;
}

}  // namespace

struct RecordCipher::State {
  Aes aes;
  bool aes_ready = false;
  int digest = WC_SHA256;
  size_t key_bytes = 16;
  size_t secret_bytes = 0;
  uint8_t secret[kMaxSecretBytes];
  uint8_t iv[kIvBytes];

  ~State() {
    if (aes_ready) wc_AesFree(&aes);
    explicit_bzero(secret, sizeof secret);
    explicit_bzero(iv, sizeof iv);
  }
};

RecordCipher::RecordCipher() : s_(std::make_unique<State>()) {}
RecordCipher::~RecordCipher() = default;

bool RecordCipher::init(Suite suite, std::span<const uint8_t> secret) {
  s_->digest = suite == Suite::aes128_gcm_sha256 ? int(WC_SHA256) : int(WC_SHA384);
  s_->key_bytes = suite == Suite::aes128_gcm_sha256 ? 16 : 32;
  const size_t hash_bytes = suite == Suite::aes128_gcm_sha256 ? 32 : 48;
  if (secret.size() != hash_bytes) return false;
  std::memcpy(s_->secret, secret.data(), hash_bytes);
  s_->secret_bytes = hash_bytes;
  return derive();
}

bool RecordCipher::update() {
  uint8_t next[kMaxSecretBytes];
  if (!expand_label(s_->digest, {s_->secret, s_->secret_bytes}, "traffic upd", next,
                    s_->secret_bytes))
    return false;
  std::memcpy(s_->secret, next, s_->secret_bytes);
  explicit_bzero(next, sizeof next);
  return derive();
}

bool RecordCipher::derive() {
  uint8_t key[32];
  const std::span<const uint8_t> secret{s_->secret, s_->secret_bytes};
  bool ok = expand_label(s_->digest, secret, "key", key, s_->key_bytes) &&
            expand_label(s_->digest, secret, "iv", s_->iv, kIvBytes);
  if (ok && !s_->aes_ready) {
    ok = wc_AesInit(&s_->aes, nullptr, INVALID_DEVID) == 0;
    s_->aes_ready = ok;
  }
  ok = ok && wc_AesGcmSetKey(&s_->aes, key, word32(s_->key_bytes)) == 0;
  explicit_bzero(key, sizeof key);
  seq_ = 0;
  return ok;
}

// The per-record nonce: the IV with the sequence number, big-endian, XORed into its last bytes.
void RecordCipher::nonce(uint8_t out[12]) const {
  std::memcpy(out, s_->iv, kIvBytes);
  for (size_t i = 0; i < 8; ++i)
    out[kIvBytes - 1 - i] ^= uint8_t(seq_ >> (8 * i));
}

size_t RecordCipher::seal(ContentType type, std::span<const uint8_t> body, uint8_t* out) {
  const size_t length = body.size() + 1 + kAeadTagBytes;
  out[0] = uint8_t(ContentType::application_data);  // the outer type of every protected record
  out[1] = 0x03;
  out[2] = 0x03;
  out[3] = uint8_t(length >> 8);
  out[4] = uint8_t(length);
  uint8_t iv[kIvBytes];
  nonce(iv);
  const auto inner = uint8_t(type);
  uint8_t* cipher = out + kRecordHeaderBytes;
  // Streamed: the body straight from the caller's memory, then the type byte, with no copy to
  // join them.
  if (wc_AesGcmEncryptInit(&s_->aes, nullptr, 0, iv, kIvBytes) != 0 ||
      wc_AesGcmEncryptUpdate(&s_->aes, cipher, body.data(), word32(body.size()), out,
                             kRecordHeaderBytes) != 0 ||
      wc_AesGcmEncryptUpdate(&s_->aes, cipher + body.size(), &inner, 1, nullptr, 0) != 0 ||
      wc_AesGcmEncryptFinal(&s_->aes, cipher + body.size() + 1, kAeadTagBytes) != 0)
    return 0;
  ++seq_;
  return kRecordHeaderBytes + length;
}

long RecordCipher::open(uint8_t* record, size_t size) {
  if (size < kRecordHeaderBytes + kAeadTagBytes) return -1;
  const size_t length = size - kRecordHeaderBytes - kAeadTagBytes;
  uint8_t iv[kIvBytes];
  nonce(iv);
  uint8_t* body = record + kRecordHeaderBytes;
  if (wc_AesGcmDecrypt(&s_->aes, body, body, word32(length), iv, kIvBytes, body + length,
                       kAeadTagBytes, record, kRecordHeaderBytes) != 0)
    return -1;
  ++seq_;
  return long(length);
}

}  // namespace ringtunnel::tls

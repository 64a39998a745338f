#include "ringtunnel/tls/credentials.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string_view>

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace ringtunnel::tls {

namespace {

// Larger than any certificate chain or key; a file beyond it is the wrong file.
constexpr size_t kMaxPemFileBytes = 1 << 20;

constexpr std::string_view kBeginCertificate = "-----BEGIN CERTIFICATE-----";

struct PemFile {
  std::string_view what;  // "cert file", "key file", "CA file"
  const std::string& path;
  std::string text;

  std::string error(std::string_view reason) const {
    return fmt::format("{} '{}': {}", what, path, reason);
  }
};

std::string read_file(PemFile& f) {
  if (f.path.empty()) return fmt::format("no {} given", f.what);
  std::FILE* file = std::fopen(f.path.c_str(), "rb");
  if (file == nullptr) return f.error(fmt::format("cannot be opened: {}", std::strerror(errno)));
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, file)) > 0 && f.text.size() <= kMaxPemFileBytes)
    f.text.append(buf, n);
  const bool failed = std::ferror(file);
  const int err = errno;
  std::fclose(file);
  if (failed) return f.error(fmt::format("cannot be read: {}", std::strerror(err)));
  if (f.text.size() > kMaxPemFileBytes)
    return f.error(fmt::format("is larger than {} bytes: not a PEM file", kMaxPemFileBytes));
  if (f.text.empty()) return f.error("is empty");
  return "";
}

bool looks_like_der(std::string_view text) {
  // A DER certificate or key starts with a SEQUENCE tag and a long-form length.
  return text.size() > 2 && uint8_t(text[0]) == 0x30 && (uint8_t(text[1]) & 0x80);
}

std::string check_pem(const PemFile& f, std::string_view want, std::string_view want_name) {
  if (f.text.find(want) != std::string::npos) return "";
  if (looks_like_der(f.text))
    return f.error(fmt::format("is DER, not PEM (no {} line); convert it with openssl", want));
  if (f.text.find("-----BEGIN ") == std::string::npos)
    return f.error(fmt::format("is not PEM (no '-----BEGIN' line)"));
  return f.error(fmt::format("is PEM but holds no {} (no '{}' line)", want_name, want));
}

std::string check_key_pem(const PemFile& f) {
  if (f.text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") != std::string::npos)
    return f.error("is an encrypted private key; ringtunnel needs it unencrypted");
  if (f.text.find("PRIVATE KEY-----") != std::string::npos) return "";
  return check_pem(f, "PRIVATE KEY-----", "private key");
}

// wolfSSL's description of why a call failed: its return code when that is an error code,
// else what it left in the error queue.
std::string wolf_error(int ret) {
  long code = ret;
  if (ret >= 0) {
    code = long(wolfSSL_ERR_get_error());
    if (code > 0) code = -code;  // the queue holds codes as positive numbers
  }
  wolfSSL_ERR_clear_error();
  if (code == 0) return "wolfSSL gave no reason";
  return fmt::format("{} (wolfSSL error {})", wolfSSL_ERR_reason_error_string(code), code);
}

std::string format_utc(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", tm);
}

bool asn1_time(const WOLFSSL_ASN1_TIME* t, std::time_t& out) {
  std::tm tm{};
  if (t == nullptr || wolfSSL_ASN1_TIME_to_tm(t, &tm) != WOLFSSL_SUCCESS) return false;
  out = timegm(&tm);
  return true;
}

// Parses the node's certificate (the first in the file) for what the load reports on: its
// validity period and its SPIFFE ID.
std::string inspect_node_cert(const PemFile& cert, SpiffeId& id, std::time_t& not_before,
                              std::time_t& not_after, std::string& serial) {
  WOLFSSL_X509* x509 =
      wolfSSL_X509_load_certificate_buffer(reinterpret_cast<const unsigned char*>(cert.text.data()),
                                           int(cert.text.size()), WOLFSSL_FILETYPE_PEM);
  if (x509 == nullptr) {
    wolfSSL_ERR_clear_error();  // wolfSSL records no reason worth showing here
    return cert.error("its first certificate cannot be parsed (broken base64 or not X.509)");
  }
  std::string error;
  unsigned char serial_bytes[64];
  int serial_size = sizeof serial_bytes;
  if (wolfSSL_X509_get_serial_number(x509, serial_bytes, &serial_size) == WOLFSSL_SUCCESS)
    for (int i = 0; i < serial_size; ++i)
      fmt::format_to(std::back_inserter(serial), "{:02x}", serial_bytes[i]);
  if (!asn1_time(wolfSSL_X509_get_notBefore(x509), not_before) ||
      !asn1_time(wolfSSL_X509_get_notAfter(x509), not_after)) {
    error = cert.error("the certificate's validity dates cannot be read");
  } else if (const std::time_t now = std::time(nullptr); now < not_before) {
    error = cert.error(
        fmt::format("the certificate is not valid before {} (now {}); is the clock right?",
                    format_utc(not_before), format_utc(now)));
  } else if (now > not_after) {
    error = cert.error(fmt::format("the certificate expired on {} (now {})", format_utc(not_after),
                                   format_utc(now)));
  } else if (std::string why = spiffe_id_of(x509, id); !why.empty()) {
    error = cert.error(fmt::format("no identity: {}", why));
  }
  wolfSSL_X509_free(x509);
  return error;
}

std::string build_context(Role role, const PemFile& cert, const PemFile& key, const PemFile& ca,
                          WOLFSSL_CTX*& out) {
  WOLFSSL_CTX* ctx = wolfSSL_CTX_new(role == Role::client ? wolfTLSv1_3_client_method()
                                                          : wolfTLSv1_3_server_method());
  if (ctx == nullptr) return "wolfSSL_CTX_new failed (out of memory?)";
  out = ctx;  // the caller frees it, also on error
  if (std::string e = apply_protocol_policy(ctx, role); !e.empty()) return e;

  const auto bytes = [](const PemFile& f) {
    return reinterpret_cast<const unsigned char*>(f.text.data());
  };
  int ret = wolfSSL_CTX_use_certificate_chain_buffer_format(
      ctx, bytes(cert), long(cert.text.size()), WOLFSSL_FILETYPE_PEM);
  if (ret != WOLFSSL_SUCCESS)
    return cert.error(fmt::format("the certificate chain was refused: {}", wolf_error(ret)));
  ret = wolfSSL_CTX_use_PrivateKey_buffer(ctx, bytes(key), long(key.text.size()),
                                          WOLFSSL_FILETYPE_PEM);
  if (ret != WOLFSSL_SUCCESS)
    return key.error(fmt::format("not a usable private key: {}", wolf_error(ret)));
  if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS) {
    wolfSSL_ERR_clear_error();
    return key.error(fmt::format("does not match the certificate in '{}'", cert.path));
  }
  ret = wolfSSL_CTX_load_verify_buffer(ctx, bytes(ca), long(ca.text.size()), WOLFSSL_FILETYPE_PEM);
  if (ret != WOLFSSL_SUCCESS)
    return ca.error(fmt::format("the CA certificates were refused: {}", wolf_error(ret)));

  // Also set per session, with the callback that checks identities; here so that a session
  // made from this context some other way still verifies its peer.
  wolfSSL_CTX_set_verify(ctx,
                         role == Role::server
                             ? WOLFSSL_VERIFY_PEER | WOLFSSL_VERIFY_FAIL_IF_NO_PEER_CERT
                             : WOLFSSL_VERIFY_PEER,
                         nullptr);
  return "";
}

std::string digest_of(std::initializer_list<const PemFile*> files) {
  wc_Sha256 sha;
  unsigned char hash[WC_SHA256_DIGEST_SIZE];
  wc_InitSha256(&sha);
  for (const PemFile* f : files) {
    // The length first, so that bytes moved from one file to the next change the digest.
    const uint64_t size = f->text.size();
    wc_Sha256Update(&sha, reinterpret_cast<const unsigned char*>(&size), sizeof size);
    wc_Sha256Update(&sha, reinterpret_cast<const unsigned char*>(f->text.data()),
                    word32(f->text.size()));
  }
  wc_Sha256Final(&sha, hash);
  wc_Sha256Free(&sha);
  return std::string(reinterpret_cast<const char*>(hash), sizeof hash);
}

}  // namespace

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (wolfSSL_Init() != WOLFSSL_SUCCESS) {
      std::fputs("ringtunnel: wolfSSL_Init failed\n", stderr);
      std::abort();
    }
  });
}

std::string apply_protocol_policy(WOLFSSL_CTX* ctx, Role role) {
  init_library();
  if (wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_3) != WOLFSSL_SUCCESS)
    return "cannot restrict the context to TLS 1.3";
  if (wolfSSL_CTX_set_cipher_list(ctx, kCipherSuites) != WOLFSSL_SUCCESS)
    return fmt::format("wolfSSL refused the cipher suites {}", kCipherSuites);
  // X25519 first: it is what rustls (ztunnel) offers first, so neither side needs a
  // HelloRetryRequest, an extra round trip, to agree on a group.
  int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};
  if (wolfSSL_CTX_set_groups(ctx, groups, int(std::size(groups))) != WOLFSSL_SUCCESS)
    return "wolfSSL refused the key-exchange groups";
  // The OpenSSL-compatible defaults of this build retry a WANT_READ ten times in a loop: useless
  // when the bytes come from memory.
  wolfSSL_CTX_clear_mode(ctx, SSL_MODE_AUTO_RETRY);
  // Nodes make long-lived pooled connections and do not resume sessions; the session cache is a
  // process-wide table behind a lock that every worker's handshakes would contend on.
  wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
  // Unlike most of wolfSSL's API, this one returns 0 on success.
  if (role == Role::server && wolfSSL_CTX_no_ticket_TLSv13(ctx) != 0)
    return "cannot turn session tickets off";
  return "";
}

std::string Credentials::load(const CredentialFiles& files, std::unique_ptr<Credentials>& out) {
  init_library();
  PemFile cert{"cert file", files.cert, {}};
  PemFile key{"key file", files.key, {}};
  PemFile ca{"CA file", files.ca, {}};
  for (PemFile* f : {&cert, &key, &ca})
    if (std::string e = read_file(*f); !e.empty()) return e;
  if (std::string e = check_pem(cert, kBeginCertificate, "certificate"); !e.empty()) return e;
  if (std::string e = check_key_pem(key); !e.empty()) return e;
  if (std::string e = check_pem(ca, kBeginCertificate, "certificate"); !e.empty()) return e;

  std::unique_ptr<Credentials> c(new Credentials);
  if (std::string e =
          inspect_node_cert(cert, c->identity_, c->not_before_, c->not_after_, c->serial_);
      !e.empty())
    return e;
  c->digest_ = digest_of({&cert, &key, &ca});
  c->certificate_pem_ = cert.text;
  c->ca_pem_ = ca.text;
  if (std::string e = build_context(Role::client, cert, key, ca, c->client_); !e.empty()) return e;
  if (std::string e = build_context(Role::server, cert, key, ca, c->server_); !e.empty()) return e;
  out = std::move(c);
  return "";
}

Credentials::~Credentials() {
  // wolfSSL counts a context's sessions: it is freed when the last of them is.
  if (client_ != nullptr) wolfSSL_CTX_free(client_);
  if (server_ != nullptr) wolfSSL_CTX_free(server_);
}

}  // namespace ringtunnel::tls

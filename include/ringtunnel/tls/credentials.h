// The node's TLS identity: its certificate, private key and trust anchors (--cert, --key, --ca),
// loaded once into one wolfSSL context per role.
//
// Both contexts speak TLS 1.3 only, with AES-128-GCM or AES-256-GCM, and verify the peer's
// chain against the CA file: the server refuses a client without a certificate, the client
// refuses a server whose chain does not verify. What a connection checks beyond that (ALPN, the
// peer's SPIFFE ID) belongs to tls/session.h.
//
// Loaded contexts are read-only: every worker thread creates its sessions from the same ones.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>

#include "ringtunnel/tls/identity.h"

struct WOLFSSL_CTX;

namespace ringtunnel::tls {

enum class Role : uint8_t { client, server };

// TLS 1.3 suites in order of preference. AES-GCM only: with AES-NI it outruns ChaCha20 by far
// on the x86-64 hosts ringtunnel runs on, and every peer (ztunnel's rustls) offers it.
inline constexpr const char* kCipherSuites = "TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384";

struct CredentialFiles {
  std::string cert;  // PEM: the node's certificate first, then any intermediates
  std::string key;   // PEM: the certificate's private key (PKCS#8 or SEC1, unencrypted)
  std::string ca;    // PEM: the certificates peers' chains must end at
};

// Calls wolfSSL_Init once per process; every function here does it first. Thread-safe.
void init_library();

class Credentials {
 public:
  // Reads the three files and builds both contexts. Returns "" and fills `out`, or an error that
  // names the file and the reason: missing or unreadable, not PEM, no certificate in the CA
  // file, certificate expired or not yet valid, certificate without a SPIFFE ID, key that does not
  // match the certificate.
  static std::string load(const CredentialFiles& files, std::unique_ptr<Credentials>& out);

  Credentials(const Credentials&) = delete;
  Credentials& operator=(const Credentials&) = delete;
  // Releases this object's reference to each context: sessions still open keep theirs.
  ~Credentials();

  WOLFSSL_CTX* context(Role role) const { return role == Role::client ? client_ : server_; }
  // The SPIFFE ID in the node's own certificate.
  const SpiffeId& identity() const { return identity_; }
  // The certificate's validity, seconds since the epoch: for expiry warnings and reloads.
  std::time_t not_before() const { return not_before_; }
  std::time_t not_after() const { return not_after_; }
  // The certificate's serial number, lowercase hex without separators (for logs).
  const std::string& serial() const { return serial_; }
  // SHA-256 of the three files' bytes: two loads of the same files have the same digest.
  const std::string& digest() const { return digest_; }
  // The PEM text of the certificate chain and of the CA file as loaded (never the key): what
  // /config_dump shows, the credentials in use rather than the files as they are now.
  const std::string& certificate_pem() const { return certificate_pem_; }
  const std::string& ca_pem() const { return ca_pem_; }

 private:
  Credentials() = default;

  WOLFSSL_CTX* client_ = nullptr;
  WOLFSSL_CTX* server_ = nullptr;
  SpiffeId identity_;
  std::time_t not_before_ = 0;
  std::time_t not_after_ = 0;
  std::string serial_;
  std::string digest_;
  std::string certificate_pem_, ca_pem_;
};

// Applies the protocol policy above to a context built elsewhere (tests, tools): TLS 1.3 only,
// kCipherSuites, no session tickets or cache, key-share groups. Returns "" or what failed.
std::string apply_protocol_policy(WOLFSSL_CTX* ctx, Role role);

}  // namespace ringtunnel::tls

// What the TLS tests share: certificates made by scripts/gen-certs.sh once per test run into a
// temporary directory, and a wire between two sessions in memory.
#pragma once

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/ssl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "ringtunnel/tls/session.h"

#ifndef RINGTUNNEL_SOURCE_ROOT
#error "test/unit/meson.build defines RINGTUNNEL_SOURCE_ROOT"
#endif

namespace tls_test {

inline constexpr const char* kTrustDomain = "td.test";

inline ringtunnel::tls::SpiffeId spiffe(const char* sa) {
  return {kTrustDomain, "default", sa};
}

// The directory gen-certs.sh filled, made on first use and removed when the process ends.
class CertDir {
 public:
  static const CertDir& get() {
    static CertDir dir;
    return dir;
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  ringtunnel::tls::CredentialFiles files(const std::string& name,
                                         const std::string& ca = "ca") const {
    return {path(name + ".crt"), path(name + ".key"), path(ca + ".crt")};
  }

 private:
  CertDir() {
    char tmpl[] = "/tmp/ringtunnel-tls-test-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    const std::string cmd = std::string("'") + RINGTUNNEL_SOURCE_ROOT + "/scripts/gen-certs.sh' '" +
                            dir_ + "' " + kTrustDomain + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
  }
  ~CertDir() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

inline std::unique_ptr<ringtunnel::tls::Credentials> load(const std::string& name,
                                                          const std::string& ca = "ca") {
  std::unique_ptr<ringtunnel::tls::Credentials> c;
  const std::string error = ringtunnel::tls::Credentials::load(CertDir::get().files(name, ca), c);
  INFO(error);
  REQUIRE(error.empty());
  return c;
}

// Takes everything `from` has queued, as a socket send would, in sends of at most `send_max`
// bytes (a short send consumes less than was offered).
inline std::string take_pending(ringtunnel::tls::TlsSession& from, size_t send_max = SIZE_MAX) {
  std::string wire;
  while (from.pending_bytes() > 0) {
    size_t budget = send_max, sent = 0;
    for (const iovec& v : from.pending()) {
      const size_t n = std::min(v.iov_len, budget - sent);
      wire.append(static_cast<const char*>(v.iov_base), n);
      sent += n;
      if (sent == budget) break;
    }
    from.consume(sent);
  }
  return wire;
}

// Feeds `wire` to `to` in pieces of `chunk` bytes.
inline void feed(ringtunnel::tls::TlsSession& to, const std::string& wire, size_t chunk) {
  for (size_t i = 0; i < wire.size(); i += chunk)
    to.feed(reinterpret_cast<const uint8_t*>(wire.data()) + i, std::min(chunk, wire.size() - i));
}

struct HandshakeOutcome {
  ringtunnel::tls::HandshakeStatus client;
  ringtunnel::tls::HandshakeStatus server;
};

// Runs both handshakes, moving ciphertext across in pieces of `chunk` bytes, until neither side
// makes progress. The client goes first (its ClientHello).
inline HandshakeOutcome handshake(ringtunnel::tls::TlsSession& client,
                                  ringtunnel::tls::TlsSession& server, size_t chunk = SIZE_MAX) {
  using ringtunnel::tls::HandshakeStatus;
  HandshakeOutcome out{HandshakeStatus::in_progress, HandshakeStatus::in_progress};
  for (int round = 0; round < 100; ++round) {
    out.client = client.handshake();
    std::string c2s = take_pending(client);
    if (chunk == 1) {
      // Byte by byte, with a handshake step after each byte: the worst split there is.
      for (char b : c2s) {
        server.feed(reinterpret_cast<const uint8_t*>(&b), 1);
        out.server = server.handshake();
      }
    } else {
      feed(server, c2s, chunk);
    }
    out.server = server.handshake();
    std::string s2c = take_pending(server);
    if (chunk == 1) {
      for (char b : s2c) {
        client.feed(reinterpret_cast<const uint8_t*>(&b), 1);
        out.client = client.handshake();
      }
    } else {
      feed(client, s2c, chunk);
    }
    if (c2s.empty() && s2c.empty()) break;
  }
  out.client = client.handshake();
  out.server = server.handshake();
  return out;
}

// Reads everything `s` can decrypt now.
inline std::string read_all(ringtunnel::tls::TlsSession& s,
                            ringtunnel::tls::ReadStatus* status = nullptr) {
  std::string out;
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    const ringtunnel::tls::ReadResult r = s.read(buf.data(), buf.size());
    out.append(reinterpret_cast<const char*>(buf.data()), r.bytes);
    if (status != nullptr) *status = r.status;
    if (r.bytes < buf.size() || r.status != ringtunnel::tls::ReadStatus::open) break;
  }
  return out;
}

struct Record {
  uint8_t type;
  size_t length;  // of the encrypted fragment
};

// Splits a TLS byte stream into its records; fails the test on a torn one.
inline std::vector<Record> records_of(const std::string& wire) {
  std::vector<Record> out;
  size_t i = 0;
  while (i < wire.size()) {
    REQUIRE(i + 5 <= wire.size());
    const auto* p = reinterpret_cast<const uint8_t*>(wire.data()) + i;
    const size_t len = size_t(p[3]) << 8 | p[4];
    REQUIRE(i + 5 + len <= wire.size());
    out.push_back({p[0], len});
    i += 5 + len;
  }
  return out;
}

// A client context like the node's, built from files without Credentials' checks: for the
// peers the tests need that Credentials refuses to make (no certificate, expired certificate).
inline WOLFSSL_CTX* raw_client_context(const std::string& cert, const std::string& key,
                                       const std::string& ca) {
  ringtunnel::tls::init_library();
  WOLFSSL_CTX* ctx = wolfSSL_CTX_new(wolfTLSv1_3_client_method());
  REQUIRE(ctx != nullptr);
  REQUIRE(ringtunnel::tls::apply_protocol_policy(ctx, ringtunnel::tls::Role::client) == "");
  if (!cert.empty()) {
    REQUIRE(wolfSSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) == WOLFSSL_SUCCESS);
    REQUIRE(wolfSSL_CTX_use_PrivateKey_file(ctx, key.c_str(), WOLFSSL_FILETYPE_PEM) ==
            WOLFSSL_SUCCESS);
  }
  REQUIRE(wolfSSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) == WOLFSSL_SUCCESS);
  return ctx;
}

}  // namespace tls_test

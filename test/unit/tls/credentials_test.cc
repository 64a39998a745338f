#include "ringtunnel/tls/credentials.h"

#include <cstdio>
#include <ctime>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "tls_test_support.h"

using ringtunnel::tls::CredentialFiles;
using ringtunnel::tls::Credentials;
using ringtunnel::tls::Role;

namespace {

std::string load_error(const CredentialFiles& files) {
  std::unique_ptr<Credentials> c;
  std::string error = Credentials::load(files, c);
  CHECK((c == nullptr) == !error.empty());
  return error;
}

// Writes `content` into a file of the test directory; returns its path.
std::string write_file(const std::string& name, const std::string& content) {
  const std::string path = tls_test::CertDir::get().path(name);
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void check_error(const std::string& error, const std::string& path, const char* reason) {
  INFO("error: ", error);
  CHECK(error.find("'" + path + "'") != std::string::npos);
  CHECK(error.find(reason) != std::string::npos);
}

}  // namespace

TEST_CASE("a node's credentials load, with its identity read from its certificate") {
  std::unique_ptr<Credentials> c = tls_test::load("node-a");
  CHECK(c->identity() == tls_test::spiffe("node-a"));
  CHECK(c->context(Role::client) != nullptr);
  CHECK(c->context(Role::server) != nullptr);
  CHECK(c->context(Role::client) != c->context(Role::server));
  const std::time_t now = std::time(nullptr);
  CHECK(c->not_before() <= now);
  CHECK(c->not_after() > now + 9 * 365 * 86400);  // gen-certs.sh: 10 years
}

TEST_CASE("a missing or unreadable file is named, with the reason") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("node-a");
  f.cert = d.path("absent.crt");
  check_error(load_error(f), f.cert, "cannot be opened: No such file or directory");
  CHECK(load_error(f).starts_with("cert file"));

  f = d.files("node-a");
  f.key = d.path("absent.key");
  check_error(load_error(f), f.key, "No such file or directory");
  CHECK(load_error(f).starts_with("key file"));

  f = d.files("node-a");
  f.ca = d.path("default");  // a directory opens, but does not read
  check_error(load_error(f), f.ca, "cannot be read: Is a directory");
  CHECK(load_error(f).starts_with("CA file"));

  f = d.files("node-a");
  f.key = "";
  CHECK(load_error(f) == "no key file given");
}

TEST_CASE("files that are not PEM, or not the PEM expected") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("node-a");
  f.cert = write_file("empty.pem", "");
  check_error(load_error(f), f.cert, "is empty");

  f.cert = write_file("text.pem", "this is not a certificate\n");
  check_error(load_error(f), f.cert, "is not PEM");

  f.cert = write_file("der.crt", std::string("\x30\x82\x01\x0a\x02\x01", 6));
  check_error(load_error(f), f.cert, "is DER, not PEM");

  f.cert = d.path("node-a.key");  // PEM, but a key
  check_error(load_error(f), f.cert, "holds no certificate");

  f = d.files("node-a");
  f.key = d.path("node-a.crt");  // PEM, but a certificate
  check_error(load_error(f), f.key, "holds no private key");

  f = d.files("node-a");
  f.cert = write_file("broken.crt",
                      "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
  check_error(load_error(f), f.cert, "its first certificate cannot be parsed");

  f = d.files("node-a");
  f.key = write_file("broken.key",
                     "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");
  check_error(load_error(f), f.key, "not a usable private key");
}

TEST_CASE("an encrypted key is refused with what to do") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  const std::string encrypted = d.path("encrypted.key");
  const std::string cmd = "openssl pkcs8 -topk8 -v2 aes-256-cbc -passout pass:secret -in '" +
                          d.path("node-a.key") + "' -out '" + encrypted + "' 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  CredentialFiles f = d.files("node-a");
  f.key = encrypted;
  check_error(load_error(f), f.key, "encrypted private key; ringtunnel needs it unencrypted");
}

TEST_CASE("a key that does not belong to the certificate") {
  CredentialFiles f = tls_test::CertDir::get().files("node-a");
  f.key = tls_test::CertDir::get().path("mismatch.key");
  const std::string error = load_error(f);
  check_error(error, f.key, "does not match the certificate in");
  CHECK(error.find(f.cert) != std::string::npos);
}

TEST_CASE("a certificate outside its validity period") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("expired");
  check_error(load_error(f), f.cert, "the certificate expired on 2020-12-31 00:00:00 UTC");
  f = d.files("not-yet-valid");
  check_error(load_error(f), f.cert, "is not valid before 2099-01-01 00:00:00 UTC");
}

TEST_CASE("a certificate without exactly one SPIFFE ID") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("no-spiffe");
  check_error(load_error(f), f.cert, "no identity: the certificate has no URI SAN");
  f = d.files("not-spiffe");
  check_error(load_error(f), f.cert, "is not a SPIFFE ID");
  f = d.files("two-ids");
  check_error(load_error(f), f.cert, "2 URI SANs");
}

TEST_CASE("a CA file without a certificate, or with a broken one") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("node-a");
  f.ca = d.path("ca.key");
  check_error(load_error(f), f.ca, "holds no certificate");

  f.ca = write_file("broken-ca.pem",
                    "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
  check_error(load_error(f), f.ca, "the CA certificates were refused");
}

TEST_CASE("a certificate file may carry the chain after the leaf") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  CredentialFiles f = d.files("node-b");
  f.cert = write_file("node-b-chain.pem", slurp(d.path("node-b.crt")) + slurp(d.path("ca.crt")));
  std::unique_ptr<Credentials> c;
  REQUIRE(Credentials::load(f, c) == "");
  CHECK(c->identity() == tls_test::spiffe("node-b"));
}

TEST_CASE("gen-certs.sh is idempotent") {
  const tls_test::CertDir& d = tls_test::CertDir::get();
  const std::string before = slurp(d.path("node-a.crt")) + slurp(d.path("ca.key"));
  const std::string cmd = std::string("'") + RINGTUNNEL_SOURCE_ROOT + "/scripts/gen-certs.sh' '" +
                          d.path("") + "' " + tls_test::kTrustDomain + " 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  CHECK(slurp(d.path("node-a.crt")) + slurp(d.path("ca.key")) == before);
  CHECK(slurp(d.path("default/cert.pem")) == slurp(d.path("node-a.crt")));
  CHECK(slurp(d.path("default/key.pem")) == slurp(d.path("node-a.key")));
  CHECK(slurp(d.path("default/ca.pem")) == slurp(d.path("ca.crt")));
}

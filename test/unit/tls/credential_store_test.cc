#include "ringtunnel/tls/credential_store.h"

#include <filesystem>
#include <fstream>
#include <string>

#include <doctest/doctest.h>

#include "tls_test_support.h"

using ringtunnel::tls::CredentialFiles;
using ringtunnel::tls::Credentials;
using ringtunnel::tls::CredentialStore;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Writes `content` to a new file beside `path` and renames it over `path`.
void replace(const std::string& path, const std::string& content) {
  std::ofstream(path + ".tmp", std::ios::binary) << content;
  std::filesystem::rename(path + ".tmp", path);
}

// Files of their own (the store reads them again), holding node-a's credentials.
CredentialFiles own_files(const char* prefix) {
  const auto& dir = tls_test::CertDir::get();
  const CredentialFiles files{dir.path(std::string(prefix) + "-cert.pem"),
                              dir.path(std::string(prefix) + "-key.pem"),
                              dir.path(std::string(prefix) + "-ca.pem")};
  replace(files.cert, slurp(dir.path("node-a.crt")));
  replace(files.key, slurp(dir.path("node-a.key")));
  replace(files.ca, slurp(dir.path("ca.crt")));
  return files;
}

}  // namespace

TEST_CASE("a credential store replaces its snapshot only with good files of the same identity") {
  const auto& dir = tls_test::CertDir::get();
  const CredentialFiles files = own_files("store");
  std::unique_ptr<Credentials> first;
  REQUIRE(Credentials::load(files, first).empty());
  const std::string first_serial = first->serial();
  CHECK(!first_serial.empty());
  CredentialStore store(std::move(first), files);
  CHECK(store.generation() == 1);
  const std::shared_ptr<const Credentials> held = store.current();

  std::string error;
  CHECK(store.reload(error) == CredentialStore::Outcome::unchanged);
  CHECK(store.generation() == 1);

  SUBCASE("a key of another certificate") {
    replace(files.key, slurp(dir.path("mismatch.key")));
    CHECK(store.reload(error) == CredentialStore::Outcome::refused);
    CHECK(error.find("'" + files.key + "'") != std::string::npos);
    CHECK(error.find("does not match") != std::string::npos);
  }
  SUBCASE("another SPIFFE ID") {
    replace(files.cert, slurp(dir.path("node-b.crt")));
    replace(files.key, slurp(dir.path("node-b.key")));
    CHECK(store.reload(error) == CredentialStore::Outcome::refused);
    CHECK(error.find("'" + files.cert + "'") != std::string::npos);
    CHECK(error.find("must keep the node's SPIFFE ID") != std::string::npos);
  }
  SUBCASE("a certificate that is not yet valid") {
    replace(files.cert, slurp(dir.path("not-yet-valid.crt")));
    replace(files.key, slurp(dir.path("not-yet-valid.key")));
    CHECK(store.reload(error) == CredentialStore::Outcome::refused);
    CHECK(error.find("is not valid before") != std::string::npos);
  }
  SUBCASE("the same identity in new bytes replaces the snapshot") {
    // The same leaf with the CA appended: another file, the same identity.
    replace(files.cert, slurp(dir.path("node-a.crt")) + slurp(dir.path("ca.crt")));
    CHECK(store.reload(error) == CredentialStore::Outcome::replaced);
    CHECK(error.empty());
    CHECK(store.generation() == 2);
    uint64_t generation = 0;
    CHECK(store.current(&generation).get() != held.get());
    CHECK(generation == 2);
    CHECK(store.reload(error) == CredentialStore::Outcome::unchanged);
    CHECK(store.generation() == 2);
  }
  if (store.generation() == 1) CHECK(store.current().get() == held.get());
  // A snapshot held by a worker stays usable after a replacement.
  CHECK(held->context(ringtunnel::tls::Role::server) != nullptr);
  CHECK(held->serial() == first_serial);
}

#include "ringtunnel/tls/credential_store.h"

#include <fmt/format.h>

namespace ringtunnel::tls {

CredentialStore::CredentialStore(std::unique_ptr<Credentials> first, CredentialFiles files)
    : files_(std::move(files)) {
  publish(std::shared_ptr<const Credentials>(std::move(first)));
}

void CredentialStore::publish(std::shared_ptr<const Credentials> next) {
  std::lock_guard lock(mutex_);
  current_ = std::move(next);
  generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

std::shared_ptr<const Credentials> CredentialStore::current(uint64_t* generation) const {
  std::lock_guard lock(mutex_);
  if (generation) *generation = generation_.load(std::memory_order_relaxed);
  return current_;
}

CredentialStore::Outcome CredentialStore::reload(std::string& error) {
  std::lock_guard reload_lock(reload_mutex_);
  std::unique_ptr<Credentials> loaded;
  error = Credentials::load(files_, loaded);
  if (!error.empty()) return Outcome::refused;
  const std::shared_ptr<const Credentials> old = current();
  if (old && old->digest() == loaded->digest()) return Outcome::unchanged;
  if (old && !(old->identity() == loaded->identity())) {
    error = fmt::format(
        "cert file '{}': the certificate's identity is {}, but the node's is {}: a new "
        "certificate must keep the node's SPIFFE ID",
        files_.cert, loaded->identity().to_string(), old->identity().to_string());
    return Outcome::refused;
  }
  publish(std::move(loaded));
  return Outcome::replaced;
}

}  // namespace ringtunnel::tls

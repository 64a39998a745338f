// The node's credentials while it runs: loaded at start, replaced as a whole when --cert, --key
// or --ca change on disk (or on SIGHUP), and handed to the workers as immutable snapshots.
//
//   reload(): a good set of files replaces the snapshot for every new handshake; a bad one
//             (unreadable, not PEM, key that does not match the certificate, certificate not
//             yet valid or expired, another SPIFFE ID than the node's) is refused with the file
//             and the reason, and the old snapshot stays. Files whose bytes are those of the
//             current snapshot replace nothing (deployment tools write files more than once).
//
// Open connections are not touched: each TLS session holds a reference to the wolfSSL context
// it was made from, so a context outlives its Credentials for as long as a session uses it.
//
// Workers never lock on their data path: each keeps its own std::shared_ptr and compares
// generation() (one acquire load) when it starts a handshake; only when it changed does it take
// the new snapshot (current(), a pointer copy under a mutex). The snapshot is replaced before
// the generation moves, so a worker that sees a new generation gets that snapshot or a newer one.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "ringtunnel/tls/credentials.h"

namespace ringtunnel::tls {

class CredentialStore {
 public:
  // What reload() did.
  enum class Outcome : uint8_t { replaced, unchanged, refused };

  // `first` is the snapshot loaded at start (generation 1); `files` are where reload() reads.
  CredentialStore(std::unique_ptr<Credentials> first, CredentialFiles files);

  // Reads the files again. The new certificate must carry the SPIFFE ID of the current one
  // (the node's identity does not change while it runs). Returns the outcome; `error` says why
  // a reload was refused (naming the file and the reason).
  Outcome reload(std::string& error);

  // 1 after construction; +1 per replacement.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // The current snapshot, and with `generation` its generation (read together).
  std::shared_ptr<const Credentials> current(uint64_t* generation = nullptr) const;
  const CredentialFiles& files() const { return files_; }

 private:
  void publish(std::shared_ptr<const Credentials> next);

  const CredentialFiles files_;
  std::mutex reload_mutex_;   // one reload at a time
  mutable std::mutex mutex_;  // current_, and generation_'s writes
  std::shared_ptr<const Credentials> current_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace ringtunnel::tls

// The workload config of a running process: loaded at start, reloaded when its file changes or
// on SIGHUP, and handed to the workers as immutable snapshots.
//
//   load() at start: a bad file is a start-up error (exit 2, file:line:column: field: reason)
//   reload(): a good file replaces the snapshot atomically for every worker; a bad one is
//             logged (the same message) and the old snapshot stays
//
// Workers never lock on their data path: each keeps its own std::shared_ptr to the snapshot and
// compares generation() (one relaxed atomic load) once per loop iteration; only when it changed
// does it take the new snapshot (snapshot(), under a mutex held for a pointer copy).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "ringtunnel/workload/state.h"

namespace ringtunnel::workload {

// The local workload, as --workload NS/NAME/SA names it.
struct LocalWorkloadInfo {
  std::string namespace_, name, service_account;
};

class Store {
 public:
  // Reads and indexes `path`; `local` must name a workload in it. Returns "" or the error
  // ("FILE:LINE:COL: FIELD: REASON", or what is missing).
  std::string load(const std::string& path, const LocalWorkloadInfo& local);
  // Reads the file again. Returns "" (replaced) or the error (the old snapshot stays).
  std::string reload();

  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::shared_ptr<const State> snapshot() const;
  const std::string& path() const { return path_; }
  const LocalWorkloadInfo& local() const { return local_; }

 private:
  std::string path_;
  LocalWorkloadInfo local_;
  mutable std::mutex mutex_;
  std::shared_ptr<const State> current_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace ringtunnel::workload

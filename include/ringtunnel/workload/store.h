// The workload config of a running process: loaded at start, reloaded when its file changes or
// on SIGHUP, and handed to the workers as immutable snapshots.
//
//   load() at start: a bad file is a start-up error (exit 2, file:line:column: field: reason)
//   reload(): a good file replaces the snapshot atomically for every worker; a bad one is
//             logged (the same message) and the old snapshot stays
//
// A file is good when it parses (local_config.h) and names the local workload exactly once; on
// reload, the local workload must also keep its SPIFFE ID (the node's certificate carries it).
// A reload whose file has the bytes of the current snapshot's replaces nothing (the generation
// stays): editors and tools often write a file more than once.
//
// Workers never lock on their data path: each keeps its own std::shared_ptr to the snapshot and
// compares generation() (one acquire load) once per loop iteration; only when it changed does it
// take the new snapshot (snapshot(), under a mutex held for a pointer copy). The snapshot is
// replaced before the generation moves, so a worker that sees a new generation gets that
// snapshot or a newer one.
//
// load() and reload() may be called from any thread (they are serialised); the other members
// from any thread at any time after load() returned.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ringtunnel/workload/state.h"

namespace ringtunnel::workload {

// The local workload, as --workload NS/NAME/SA names it.
struct LocalWorkloadInfo {
  std::string namespace_, name, service_account;

  std::string to_string() const { return namespace_ + "/" + name + "/" + service_account; }
};

// What a load or reload noticed besides an error.
struct LoadNotes {
  // What the file format tolerates but an operator wants to know ("FILE:LINE:COL: FIELD:
  // REASON", or "FILE: REASON"): worth a log line each.
  std::vector<std::string> warnings;
  // reload(): the file holds the bytes of the current snapshot; nothing was replaced.
  bool unchanged = false;
};

// Files larger than this are refused: a config is kilobytes to a few megabytes.
inline constexpr size_t kMaxConfigBytes = size_t{64} << 20;

class Store {
 public:
  // Reads and indexes `path`; `local` must name exactly one workload in it (by namespace, name
  // and service account, "default" matching one written without). Returns "" (generation 1) or
  // the error ("FILE:LINE:COL: FIELD: REASON", or "FILE: what is wrong"). Called once.
  std::string load(const std::string& path, const LocalWorkloadInfo& local,
                   LoadNotes* notes = nullptr);
  // Reads the file again. Returns "" (replaced, or unchanged: see LoadNotes) or the error (the
  // old snapshot stays). An error before load() succeeded: "no config loaded".
  std::string reload(LoadNotes* notes = nullptr);

  // 0 before load(); +1 per replacement.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  // The current snapshot (null before load()), and with `generation` its generation: the pair
  // is read together.
  std::shared_ptr<const State> snapshot(uint64_t* generation = nullptr) const;
  const std::string& path() const { return path_; }
  const LocalWorkloadInfo& local() const { return local_; }

  // The local workload in `state` (one of this Store's snapshots: never null in those).
  const Workload* local_workload(const State& state) const;

 private:
  // Parses and indexes the file's bytes and finds the local workload: "" and `out`, or the
  // error.
  std::string build(const std::string& bytes, std::shared_ptr<const State>& out,
                    LoadNotes* notes) const;

  std::string path_;
  LocalWorkloadInfo local_;
  std::mutex reload_mutex_;  // one load or reload at a time
  // The file's bytes behind current_ (reload_mutex_).
  std::string bytes_;
  mutable std::mutex mutex_;  // current_, and generation_'s writes
  std::shared_ptr<const State> current_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace ringtunnel::workload

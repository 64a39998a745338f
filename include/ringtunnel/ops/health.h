// What readiness (GET /healthz/ready on --readiness-listen) is made of: values written by main
// (and, through main, by the workers) and read by the ops server's thread. Plain atomics: no
// writer ever waits for a reader.
//
//   ready (200 "ready") = not draining, every worker has its listeners up, the workload config
//                         has loaded (when there is one), and the certificate is valid now
//                         (when an identity is in use)
//   otherwise 503 and the first reason, in that order: "draining", "workers starting (1 of 2
//   ready)", "workload config not loaded", "certificate not loaded", "certificate expired at
//   2026-01-01T00:00:00Z", "certificate not valid before ..."
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <string>

namespace ringtunnel::ops {

struct Health {
  // Set by main before the workers start.
  std::atomic<unsigned> workers_expected{0};
  std::atomic<bool> config_needed{false};
  std::atomic<bool> identity_needed{false};
  // Each worker, once its listeners are armed (main's worker thread, after Worker::start()).
  std::atomic<unsigned> workers_ready{0};
  std::atomic<bool> config_loaded{false};
  // The certificate in use, seconds since the epoch; not_after 0: none loaded. Main updates
  // them whenever it loads a new certificate.
  std::atomic<int64_t> cert_not_before{0};
  std::atomic<int64_t> cert_not_after{0};
  // From the moment drain begins (SIGTERM, SIGINT, /quitquitquit) on.
  std::atomic<bool> draining{false};

  struct Verdict {
    bool ready = false;
    std::string reason;  // "ready", or why not (one line)
  };
  Verdict readiness(std::time_t now) const;
};

// "2026-01-01T00:00:00Z".
std::string format_utc_iso(std::time_t t);

}  // namespace ringtunnel::ops

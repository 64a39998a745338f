// A worker: one thread, one ring, its own listeners, receive buffers and objects. Workers share
// only the read-only Config and the access-log sink, so the data path takes no locks.
//
//   serving --SIGTERM/SIGINT (request_drain)--> draining: listeners closed, HBONE connections
//     say GOAWAY, open connections finish --everything closed--> run() returns
//                                                   | --drain-timeout passed: expire_all()
//                                                   v
//                                                expired --everything closed--> run() returns
//
// The worker keeps what is per thread: the ring and its wait, the listeners, the buffer pools,
// the drain and the timers. The relays, HBONE connections and streams are objects of their own
// (relay.h, hbone_connection.h, hbone_stream.h) that reach the worker through its
// WorkerContext; dispatch.h drives them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ringtunnel/config/config.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/ring.h"
#include "ringtunnel/tls/credential_store.h"

namespace ringtunnel::proxy {

class Worker {
 public:
  // `identity` may be null when no route needs one (no HBONE).
  Worker(unsigned id, const config::Config& config, AccessLog& log,
         const tls::CredentialStore* identity);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // In the worker's thread: ring, buffers, listeners. Returns "" or what failed.
  std::string start();
  // In the worker's thread: serve until drained.
  void run();
  // From any thread: stop accepting, drain, then return from run().
  void request_drain();

  const ring::RingFeatures& features() const { return ring_.features(); }
  // What the worker counts; valid as long as the Worker (read from any thread).
  const stats::WorkerMetrics& metrics() const { return ctx_.metrics; }

 private:
  // Listener::route of the listeners that are not a --forward route's.
  static constexpr uint16_t kHboneListener = UINT16_MAX;         // --hbone-listen
  static constexpr uint16_t kOutboundListener = UINT16_MAX - 1;  // --outbound-listen
  static constexpr uint16_t kInboundPlaintextListener =
      UINT16_MAX - 2;  // --inbound-plaintext-listen
  enum class Phase : uint8_t { serving, draining, expired };

  struct Listener {
    enum class State : uint8_t { idle, armed, closed };
    int fd = -1;
    uint16_t route = 0;
    uint16_t capture = 0;  // kHboneListener, kOutboundListener, kInboundPlaintextListener: which
                           // of the flag's addresses
    State state = State::idle;
  };

  void on_completion(const io_uring_cqe& cqe);
  void after_completions();
  void arm_accept(size_t listener);
  void on_accept(size_t listener, const io_uring_cqe& cqe);
  void close_listener(Listener& l);
  const std::string& listener_text(const Listener& l) const;
  void on_wake();
  void begin_drain();
  void retry_accepts(uint64_t now, std::optional<int64_t>& timeout);
  std::optional<int64_t> next_timeout();
  void publish_metrics();
  void publish_pool_bytes();

  unsigned id_;
  const config::Config& config_;
  AccessLog& log_;
  ring::Ring ring_;
  ring::BufferPool pool_;
  // HBONE connections receive from their own rings: a connection must always be able to read
  // the WINDOW_UPDATEs that free its streams' buffers, however many of pool_'s buffers those
  // streams hold (one pool for both would deadlock under load).
  ring::BufferPool tls_pool_;
  WorkerContext ctx_;
  std::vector<Listener> listeners_;
  Phase phase_ = Phase::serving;
  uint64_t drain_deadline_ns_ = 0;
  uint64_t next_tick_ns_ = 0;
  uint64_t accept_retry_ns_ = 0;       // accepts blocked (out of descriptors): when to try again
  uint64_t next_series_sweep_ns_ = 0;  // metrics: when to drop expired traffic series
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
};

}  // namespace ringtunnel::proxy

// A worker's budgets: every resource a client can make it hold has a limit. Connections of every
// listener (--max-connections), HBONE streams both ways (--max-streams), streams per inbound
// connection (the session's advertised limit, counted until the TCP side is released too), TLS
// handshakes in progress (--max-handshakes, --max-handshakes-per-source), and the heap that
// stalled connections' bytes may take (--memory-budget). What is refused is counted and logged
// once a second, never a line each: a flood must not turn into a flood of log lines.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>

#include "ringtunnel/config/config.h"

namespace ringtunnel::proxy {

enum class Refusal : uint8_t {
  // HBONE connections closed before their handshake completed
  over_source,
  over_handshakes,
  handshake_timeout,
  client_gone,
  // refused over a limit
  connections,
  streams,
  conn_streams,
  memory,  // over --memory-budget
};

class Budgets {
 public:
  Budgets(unsigned worker_id, const config::Config& config) : id_(worker_id), config_(config) {}

  // An accepted client connection. False: refused (counted); the caller resets and closes it.
  bool admit_connection(bool hbone_forward, uint32_t live_streams);
  void connection_released() { --accepted_live_; }
  uint32_t accepted_live() const { return accepted_live_; }

  // Inbound HBONE handshakes in progress, in all and per source address (raw bytes).
  bool admit_handshake(const std::string& source);  // false: refused (counted)
  void handshake_started(const std::string& source);
  void handshake_ended(const std::string& source);
  uint32_t handshakes() const { return handshakes_; }

  // Whether an inbound CONNECT must be refused (counted when so), given what its connection
  // holds and the streams live in the worker.
  std::optional<Refusal> inbound_stream_refusal(uint32_t conn_held, uint32_t live_streams);
  void refuse(Refusal what);

  // The heap held for stalled connections' bytes (moved out of the pool). Spent once not even
  // one more largest receive buffer could move: new connections and streams are refused until
  // it drains.
  bool over_memory() const;
  bool heap_fits(size_t n) const { return heap_ + n <= config_.memory_budget; }
  void heap_add(size_t n) { heap_ += n; }
  void heap_sub(size_t n) { heap_ -= n; }
  size_t heap_bytes() const { return heap_; }
  // Tunnel bytes whose connection window was handed back on arrival: capped by the budget too,
  // but not counted in over_memory() (they are healthy traffic to a slower target).
  bool credit_fits(size_t n) const { return credit_ + n <= config_.memory_budget; }
  void credit_add(size_t n) { credit_ += n; }
  void credit_sub(size_t n) { credit_ -= n; }

  // The refusal log: writes what was counted once its second is over, and lowers `timeout`
  // (the loop's wait) to when it is due.
  void timers(uint64_t now, std::optional<int64_t>& timeout);

 private:
  void write_refusals();

  unsigned id_;
  const config::Config& config_;
  uint32_t accepted_live_ = 0;  // client connections accepted and not yet released
  uint32_t handshakes_ = 0;     // inbound HBONE handshakes in progress
  std::unordered_map<std::string, uint32_t> handshakes_by_source_;
  size_t heap_ = 0;
  size_t credit_ = 0;
  std::array<uint64_t, 8> refused_{};
  uint64_t refusals_due_ns_ = 0;  // when the counts go to the log (0: none counted)
};

}  // namespace ringtunnel::proxy

// Log output that never blocks a worker.
//
// A LogSink owns one output descriptor and one writer thread. Workers hand it whole lines; the
// mutex is held only to append them to a bounded queue (or swap them in), never across I/O. When
// the descriptor does not keep up (a pipe nobody reads, a slow disk) the queue fills to its limit
// and further lines are dropped and counted; once the writer has caught up, one line says how
// many were lost:
//
//   ringtunnel: log: dropped N lines (the log output did not keep up)
//
// Operational messages ("ringtunnel: ...") go through log_line(), which uses the standard-error
// sink installed by main, or writes synchronously before there is one (start-up messages).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace ringtunnel::proxy {

class LogSink {
 public:
  // 4 MiB: some 25 000 access lines, seconds of a busy node's log, and small next to its buffers.
  static constexpr size_t kDefaultLimit = 4u << 20;

  // Writes to `fd`, closed at destruction if `owned`. Nothing is written before start().
  LogSink(int fd, bool owned, size_t limit = kDefaultLimit);
  ~LogSink();  // stop(kStopTimeoutMs) if still running
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  // Starts the writer thread, with every signal blocked in it. Returns "" or why not.
  std::string start();
  // Queues `lines` (whole lines, each ending in '\n') and clears it; never waits for I/O. If the
  // queue would pass the limit, the lines are dropped and counted instead.
  void submit(std::string& lines);
  // Writes what is queued, waits up to `timeout_ms` for the descriptor to take it, and stops the
  // writer. Returns false if it did not in time: the writer is left blocked in write() (the
  // process is about to exit) and the descriptor is not closed.
  bool stop(int timeout_ms);
  // Lines dropped so far (queue full, or the descriptor failed).
  uint64_t dropped() const;

  // How long stop() at exit waits for a reader that has stopped reading.
  static constexpr int kStopTimeoutMs = 10'000;

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with the writer thread, which may outlive a stop()
  std::thread writer_;
};

// Writes one operational message as one line (control characters in it are escaped as \xNN,
// so a message never spans lines) through the installed sink, else synchronously to stderr.
void log_line(std::string_view message);
// The standard-error sink log_line() uses: set once its writer runs, cleared (nullptr) after the
// workers have stopped and before the sink is stopped.
void set_log_sink(LogSink* sink);

}  // namespace ringtunnel::proxy

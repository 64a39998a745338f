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
// sink installed by main, or writes synchronously before there is one (start-up messages). Each
// has a level; messages above the process-wide level (set_log_level, default info; the admin
// endpoint's /logging changes it at run time) are not written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

namespace ringtunnel::proxy {

// Most to least severe: a level lets through its own messages and those before it.
enum class LogLevel : uint8_t { error, warn, info, debug };

// The process-wide level: any thread, at any time (one relaxed atomic).
void set_log_level(LogLevel level);
LogLevel log_level();
// Whether a message of `level` is written now.
bool log_enabled(LogLevel level);
// "error", "warn", "info", "debug".
const char* to_string(LogLevel level);
// Parses one of those names; false (and `out` untouched) for anything else.
bool parse_log_level(std::string_view text, LogLevel& out);
// The names, for error messages: "error, warn, info or debug".
inline constexpr const char* kLogLevelNames = "error, warn, info or debug";

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
void log_line(std::string_view message);  // LogLevel::info
void log_line(LogLevel level, std::string_view message);
// --log-format json: from now on log_line() (and a sink's "dropped" line) writes each message as
// one JSON object, {"level":"warn","time":"2024-05-01T12:00:00.123456Z","scope":"ringtunnel",
// "message":"..."}: the message's level, and the message without its "ringtunnel: " prefix.
// Called once, at start-up, before any thread logs.
void set_log_json(bool json);
// Appends `value` as a JSON string, quotes included, always valid JSON: '"' and '\\' escaped by
// a backslash, \n \t \r as such, other control bytes and every byte that is not part of
// well-formed UTF-8 as \u00XX; well-formed UTF-8 is kept as it is. The one JSON string writer
// (access records, operational lines, /config_dump).
void append_json_string(std::string& out, std::string_view value);
// One message as log_line() writes it (text or JSON), ending in '\n'.
std::string format_log_line(LogLevel level, std::string_view message);
// The standard-error sink log_line() uses: set once its writer runs, cleared (nullptr) after the
// workers have stopped and before the sink is stopped.
void set_log_sink(LogSink* sink);

}  // namespace ringtunnel::proxy

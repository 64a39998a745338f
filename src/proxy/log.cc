#include "ringtunnel/proxy/log.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>

#include <fmt/format.h>

namespace ringtunnel::proxy {

namespace {

uint64_t count_lines(std::string_view s) {
  return uint64_t(std::count(s.begin(), s.end(), '\n'));
}

// Writes `data`; returns how much of it the descriptor did not take (0 unless it failed). A
// non-blocking descriptor (standard error can be inherited as one) is waited for with poll().
size_t write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n > 0) {
      data.remove_prefix(size_t(n));
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
    } else if (n < 0 && errno != EINTR) {
      break;  // a full disk or a closed pipe loses log lines, never connections
    }
  }
  return data.size();
}

std::atomic<LogSink*> g_sink{nullptr};
std::atomic<LogLevel> g_level{LogLevel::info};
std::atomic<bool> g_json{false};

// {"level":"info","time":"...","scope":"ringtunnel","message":"..."}
std::string json_line(LogLevel level, std::string_view message) {
  constexpr std::string_view kPrefix = "ringtunnel: ";
  if (message.starts_with(kPrefix)) message.remove_prefix(kPrefix.size());
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc{};
  gmtime_r(&ts.tv_sec, &utc);
  std::string line = fmt::format(
      "{{\"level\":\"{}\",\"time\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\","
      "\"scope\":\"ringtunnel\",\"message\":",
      to_string(level), utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
      utc.tm_sec, ts.tv_nsec / 1000);
  append_json_string(line, message);
  line += "}\n";
  return line;
}

}  // namespace

// How long the writer lets lines gather after each write (see run()).
constexpr std::chrono::microseconds kGather{1000};

struct LogSink::State {
  State(int fd, bool owned, size_t limit) : fd(fd), owned(owned), limit(limit) {}
  ~State() {
    if (owned && fd >= 0) close(fd);
  }
  void run();

  const int fd;
  const bool owned;
  const size_t limit;
  std::mutex mu;
  std::condition_variable wake;     // for the writer: lines queued, drops to report, or stop
  std::condition_variable stopped;  // for stop(): the writer is done
  std::string queue;
  uint64_t unreported = 0;  // dropped lines the log has not been told of yet
  uint64_t dropped = 0;
  bool stopping = false;
  bool done = false;
};

// The writer: takes the whole queue at once (a swap), writes it with the mutex released, then
// reports what was dropped meanwhile, which came after those lines and before the next ones.
void LogSink::State::run() {
  std::string out;
  std::unique_lock lock(mu);
  for (;;) {
    wake.wait(lock, [&] { return !queue.empty() || unreported || stopping; });
    if (queue.empty() && !unreported) break;  // stopping, and everything written
    out.swap(queue);
    const uint64_t lost = std::exchange(unreported, 0);
    lock.unlock();
    const uint64_t failed =
        count_lines(std::string_view(out).substr(out.size() - write_all(fd, out)));
    if (lost)
      write_all(
          fd, format_log_line(
                  LogLevel::warn,
                  fmt::format("ringtunnel: log: dropped {} lines (the log output did not keep up)",
                              lost)));
    out.clear();
    // Lines gather for a moment before the next batch: under a steady flow of lines (an access
    // line per connection at 20k conn/s) the workers' notify_one finds no waiter, so neither they
    // nor this thread make a futex call per batch, and one write carries a millisecond's lines.
    // An idle writer waits on the condition variable as before (no timer).
    std::this_thread::sleep_for(kGather);
    lock.lock();
    unreported += failed;
    dropped += failed;
  }
  done = true;
  stopped.notify_all();
}

LogSink::LogSink(int fd, bool owned, size_t limit)
    : state_(std::make_shared<State>(fd, owned, limit)) {}

LogSink::~LogSink() {
  if (writer_.joinable()) stop(kStopTimeoutMs);
}

std::string LogSink::start() {
  // Signals go to the main thread's sigwait, never to the writer: block them all while it starts.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  std::string err;
  try {
    writer_ = std::thread([st = state_] { st->run(); });
  } catch (const std::system_error& e) {
    err = fmt::format("log writer thread: {}", e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return err;
}

void LogSink::submit(std::string& lines) {
  if (lines.empty()) return;
  State& st = *state_;
  bool was_empty, fits;
  {
    std::lock_guard lock(st.mu);
    was_empty = st.queue.empty();
    fits = st.queue.size() + lines.size() <= st.limit;
    if (fits && was_empty)
      st.queue.swap(lines);  // the worker keeps the writer's last (empty) buffer
    else if (fits)
      st.queue += lines;
  }
  if (!fits) {
    const uint64_t n = count_lines(lines);
    std::lock_guard lock(st.mu);
    st.unreported += n;
    st.dropped += n;
  }
  // The writer sleeps only on an empty queue.
  if (was_empty) st.wake.notify_one();
  lines.clear();
}

bool LogSink::stop(int timeout_ms) {
  if (!writer_.joinable()) return true;
  State& st = *state_;
  std::unique_lock lock(st.mu);
  st.stopping = true;
  st.wake.notify_one();
  const bool done =
      st.stopped.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return st.done; });
  lock.unlock();
  if (done)
    writer_.join();
  else
    writer_.detach();  // it holds the state (and the descriptor) until its write returns
  return done;
}

uint64_t LogSink::dropped() const {
  std::lock_guard lock(state_->mu);
  return state_->dropped;
}

void set_log_level(LogLevel level) {
  g_level.store(level, std::memory_order_relaxed);
}

LogLevel log_level() {
  return g_level.load(std::memory_order_relaxed);
}

bool log_enabled(LogLevel level) {
  return level <= log_level();
}

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::error:
      return "error";
    case LogLevel::warn:
      return "warn";
    case LogLevel::info:
      return "info";
    case LogLevel::debug:
      return "debug";
  }
  return "info";
}

bool parse_log_level(std::string_view text, LogLevel& out) {
  for (const LogLevel l : {LogLevel::error, LogLevel::warn, LogLevel::info, LogLevel::debug})
    if (text == to_string(l)) return out = l, true;
  return false;
}

namespace {

// The length of the well-formed UTF-8 sequence `s` starts with (1-4), or 0 if it does not start
// with one (a stray continuation byte, an overlong form, a surrogate, past U+10FFFF, cut short).
size_t utf8_sequence(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  size_t n = c < 0x80             ? 1
             : (c & 0xe0) == 0xc0 ? 2
             : (c & 0xf0) == 0xe0 ? 3
             : (c & 0xf8) == 0xf0 ? 4
                                  : 0;
  if (n == 0 || n > s.size() || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4)) return 0;
  for (size_t i = 1; i < n; ++i)
    if ((b(i) & 0xc0) != 0x80) return 0;
  if (n == 3 && ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) >= 0xa0))) return 0;
  if (n == 4 && ((c == 0xf0 && b(1) < 0x90) || (c == 0xf4 && b(1) >= 0x90))) return 0;
  return n;
}

}  // namespace

void append_json_string(std::string& out, std::string_view value) {
  out += '"';
  while (!value.empty()) {
    const auto c = static_cast<unsigned char>(value.front());
    const size_t n = utf8_sequence(value);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f || n == 0) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", c);
    } else {
      out += value.substr(0, n);
      value.remove_prefix(n);
      continue;
    }
    value.remove_prefix(1);
  }
  out += '"';
}

void set_log_json(bool json) {
  g_json.store(json, std::memory_order_relaxed);
}

std::string format_log_line(LogLevel level, std::string_view message) {
  if (g_json.load(std::memory_order_relaxed)) return json_line(level, message);
  std::string line;
  line.reserve(message.size() + 1);
  for (const char c : message) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f)
      fmt::format_to(std::back_inserter(line), "\\x{:02x}", byte);
    else
      line += c;
  }
  line += '\n';
  return line;
}

void log_line(std::string_view message) {
  log_line(LogLevel::info, message);
}

void log_line(LogLevel level, std::string_view message) {
  if (!log_enabled(level)) return;
  std::string line = format_log_line(level, message);
  if (LogSink* sink = g_sink.load(std::memory_order_acquire))
    sink->submit(line);
  else
    write_all(STDERR_FILENO, line);
}

void set_log_sink(LogSink* sink) {
  g_sink.store(sink, std::memory_order_release);
}

}  // namespace ringtunnel::proxy

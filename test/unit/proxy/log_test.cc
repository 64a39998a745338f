#include "ringtunnel/proxy/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include <doctest/doctest.h>
#include <fmt/format.h>

using namespace ringtunnel::proxy;

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
  }
  // Everything written until the write end is closed (by close_write()).
  std::string read_all() const {
    std::string out;
    char buf[65536];
    for (;;) {
      const ssize_t n = read(r, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
    return out;
  }
  void close_write() {
    close(w);
    w = -1;
  }
};

}  // namespace

TEST_CASE("a sink writes the lines in order, and stop() writes everything queued") {
  Pipe p;
  LogSink sink(p.w, false);
  std::string expected;
  for (int i = 0; i < 100; ++i) {
    std::string batch = fmt::format("line {}\n", i);
    expected += batch;
    sink.submit(batch);
    CHECK(batch.empty());
    if (i == 10) REQUIRE(sink.start().empty());  // lines queued before start() are kept
  }
  CHECK(sink.stop(5000));
  p.close_write();
  CHECK(p.read_all() == expected);
  CHECK(sink.dropped() == 0);
}

TEST_CASE("an output nobody reads never blocks submit: lines past the limit are counted") {
  Pipe p;
  LogSink sink(p.w, false, 8192);
  REQUIRE(sink.start().empty());
  // 200 KB: far more than the pipe (64 KiB) and the queue (8 KiB) together hold.
  constexpr int kLines = 2000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kLines; ++i) {
    std::string batch = fmt::format("line {:05} {:>88}\n", i, "x");
    sink.submit(batch);
  }
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
  const uint64_t dropped = sink.dropped();
  CHECK(dropped > 0);
  // The reader comes back: what was queued arrives, then one line saying how many were lost.
  std::string out;
  std::thread reader([&] { out = p.read_all(); });
  CHECK(sink.stop(5000));
  p.close_write();
  reader.join();
  // "line NNNNN    ...x" (as written above), or the writer's own count of what it dropped.
  const std::string dropped_prefix = "ringtunnel: log: dropped ";
  const std::string dropped_suffix = " lines (the log output did not keep up)";
  auto digits = [](std::string_view v) {
    return !v.empty() &&
           std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  uint64_t lines = 0, reported = 0;
  int last = -1;
  size_t at = 0;
  while (at < out.size()) {
    const size_t nl = out.find('\n', at);
    REQUIRE(nl != std::string::npos);  // only whole lines
    const std::string line = out.substr(at, nl - at);
    const std::string_view v = line;
    if (v.starts_with("line ") && v.size() == 5 + 5 + 89 && digits(v.substr(5, 5)) &&
        v.ends_with(" x")) {
      const int n = std::stoi(line.substr(5, 5));
      CHECK(n > last);  // in order
      last = n;
      ++lines;
    } else {
      REQUIRE_MESSAGE((v.starts_with(dropped_prefix) && v.ends_with(dropped_suffix)), line);
      const std::string_view count =
          v.substr(dropped_prefix.size(), v.size() - dropped_prefix.size() - dropped_suffix.size());
      REQUIRE_MESSAGE(digits(count), line);
      reported += std::stoull(std::string(count));
    }
    at = nl + 1;
  }
  CHECK(reported == dropped);
  CHECK(lines + dropped == kLines);
  CHECK(sink.dropped() == dropped);
}

TEST_CASE("log_line writes one line per message through the installed sink") {
  Pipe p;
  LogSink sink(p.w, false);
  REQUIRE(sink.start().empty());
  set_log_sink(&sink);
  log_line("ringtunnel: one");
  log_line("ringtunnel: two\naccess fake=1\r\t\x7f");
  set_log_sink(nullptr);
  CHECK(sink.stop(5000));
  p.close_write();
  CHECK(p.read_all() == "ringtunnel: one\nringtunnel: two\\x0aaccess fake=1\\x0d\\x09\\x7f\n");
}

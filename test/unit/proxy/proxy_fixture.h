// What the tests of the worker's proxy objects share: a worker context around a fake ring
// (test/unit/support/fake_ring.h) whose completions go through dispatch() as the worker's loop
// would deliver them, receive pools set up without a kernel, a clock the test sets, a capture
// of the operational log lines, and loopback TCP pairs for the objects that need a real socket.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include "ringtunnel/config/config.h"
#include "ringtunnel/config/flags.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/dispatch.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/objects.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/op_tag.h"
#include "support/fake_ring.h"

namespace proxy_test {

using namespace ringtunnel;

// The worker's clock, set by the test (WorkerContext::clock is a plain function pointer).
inline uint64_t g_now_ns = 1'000'000'000;
inline uint64_t fake_clock() {
  return g_now_ns;
}
inline constexpr uint64_t kMs = 1'000'000;

// A connect SQE dials `to` (the address bytes it points at, and their length).
inline bool same_address(const io_uring_sqe& s, const net::Endpoint& to) {
  return s.off == to.length &&
         memcmp(reinterpret_cast<const void*>(s.addr), to.addr(), to.length) == 0;
}

// A configuration with these --forward routes (LISTEN=tcp://TARGET or LISTEN=hbone://...).
inline config::Config make_config(std::initializer_list<std::string_view> forwards) {
  config::Config c;
  for (std::string_view f : forwards) {
    config::Route r;
    const std::string err = config::parse_forward(f, r);
    INFO(f, ": ", err);
    REQUIRE(err.empty());
    c.routes.push_back(r);
  }
  return c;
}

inline ring::RingFeatures features(bool fixed_files, bool multishot) {
  ring::RingFeatures f;
  f.fixed_files = fixed_files;
  f.file_slots = fixed_files ? 64 : 0;
  f.multishot_recv = multishot;
  return f;
}

// Every operational log line (proxy/log.h's log_line) while it lives, through a LogSink into an
// in-memory file.
class LogCapture {
 public:
  LogCapture() : fd_(memfd_create("ringtunnel-test-log", MFD_CLOEXEC)) {
    REQUIRE(fd_ >= 0);
    start();
  }
  ~LogCapture() {
    stop();
    close(fd_);
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  // Everything logged since the capture began.
  std::string text() {
    stop();
    std::string out;
    char buf[4096];
    for (off_t at = 0;;) {
      const ssize_t n = pread(fd_, buf, sizeof buf, at);
      if (n <= 0) break;
      out.append(buf, size_t(n));
      at += n;
    }
    start();
    return out;
  }
  std::vector<std::string> lines() {
    std::vector<std::string> out;
    const std::string t = text();
    for (size_t at = 0; at < t.size();) {
      const size_t nl = t.find('\n', at);
      out.push_back(t.substr(at, nl - at));
      at = nl == std::string::npos ? t.size() : nl + 1;
    }
    return out;
  }
  size_t count(std::string_view needle) {
    size_t n = 0;
    for (const std::string& l : lines())
      n += l.find(needle) != std::string::npos;
    return n;
  }

 private:
  void start() {
    sink_ = std::make_unique<proxy::LogSink>(fd_, false);
    REQUIRE(sink_->start().empty());
    proxy::set_log_sink(sink_.get());
  }
  void stop() {
    proxy::set_log_sink(nullptr);
    if (sink_) CHECK(sink_->stop(5000));
    sink_.reset();
  }
  int fd_;
  std::unique_ptr<proxy::LogSink> sink_;
};

// One worker's objects on a fake ring.
struct Fixture {
  struct Options {
    ring::RingFeatures features{};
    std::array<uint32_t, ring::kBufferClasses> counts{8, 8, 4};
    std::array<uint32_t, ring::kBufferClasses> tls_counts{8, 8, 4};
    const tls::Credentials* identity = nullptr;
  };

  Fixture(config::Config cfg, const Options& options)
      : config(std::move(cfg)), ring(options.features) {
    REQUIRE(pool.init(nullptr, {config.buffer_sizes, options.counts}).empty());
    REQUIRE(tls_pool.init(nullptr, {config.buffer_sizes, options.tls_counts}, ring::kBufferClasses)
                .empty());
    kernel = std::make_unique<test::KernelBuffers>(ring, std::initializer_list{&pool, &tls_pool});
    REQUIRE(access_log.open("-", access_sink).empty());
    ctx = std::make_unique<proxy::WorkerContext>(0, config, options.identity, ring, pool, tls_pool,
                                                 &access_log);
    ctx->clock = &fake_clock;
    ring.set_sink([this](const io_uring_cqe& cqe) {
      proxy::dispatch(*ctx, ring::decode(cqe.user_data), cqe);
    });
  }
  ~Fixture() { ring.set_sink(nullptr); }

  proxy::Objects& objects() { return ctx->objects(); }
  // The i-th SQE submitted (0: the first).
  io_uring_sqe* sqe_at(size_t i) { return const_cast<io_uring_sqe*>(&ring.submitted().at(i)); }
  // The oldest open SQE of `owner` for `op` (lane `lane` unless negative); null when none.
  io_uring_sqe* open_op(proxy::Owner owner, proxy::Op op, int lane = -1) {
    return ring.find([=](const io_uring_sqe& s) {
      const ring::OpTag t = ring::decode(s.user_data);
      return proxy::Owner(t.owner) == owner && proxy::Op(t.op) == op &&
             (lane < 0 || t.lane == lane);
    });
  }
  size_t submitted() const { return ring.submitted().size(); }
  // The SQEs submitted from index `from` on, as prepared.
  std::vector<io_uring_sqe> since(size_t from) const {
    return {ring.submitted().begin() + long(from), ring.submitted().end()};
  }
  std::vector<std::string> access_lines() const {
    std::vector<std::string> out;
    const std::string& b = ctx->log_batch;
    for (size_t at = 0; at < b.size();) {
      const size_t nl = b.find('\n', at);
      out.push_back(b.substr(at, nl - at));
      at = nl == std::string::npos ? b.size() : nl + 1;
    }
    return out;
  }

  // Ends whatever is still open (as the drain timeout does) and plays the kernel until nothing
  // is in flight: cancels match what they name, linked operations complete with their timeout,
  // everything else completes as cancelled (a close with 0). Every object is then freed.
  void finish_all() {
    proxy::expire_all(*ctx);
    for (int round = 0; round < 1000; ++round) {
      proxy::settle(*ctx);
      io_uring_sqe* s = ring.find([](const io_uring_sqe& q) {
        return q.opcode != IORING_OP_LINK_TIMEOUT;  // completed with its operation
      });
      if (!s) break;
      if (s->opcode == IORING_OP_ASYNC_CANCEL)
        ring.complete_cancel(s);
      else if (linked_timeout(s))
        ring.complete_linked(s, -ECANCELED);
      else
        ring.complete(
            s, s->opcode == IORING_OP_CLOSE || s->opcode == IORING_OP_URING_CMD ? 0 : -ECANCELED);
    }
    CHECK(ring.open().empty());
    CHECK(objects().relays.live() == 0);
    CHECK(objects().conns.live() == 0);
    CHECK(objects().streams.live() == 0);
  }

  // The open link timeout right after `op`, if `op` is linked to one.
  io_uring_sqe* linked_timeout(const io_uring_sqe* op) {
    if (!(op->flags & IOSQE_IO_LINK)) return nullptr;
    const auto& all = ring.submitted();
    for (size_t i = 0; i + 1 < all.size(); ++i) {
      if (&all[i] != op) continue;
      auto* next = const_cast<io_uring_sqe*>(&all[i + 1]);
      return next->opcode == IORING_OP_LINK_TIMEOUT && ring.is_open(next) ? next : nullptr;
    }
    return nullptr;
  }

  config::Config config;
  test::FakeSubmitter ring;
  ring::BufferPool pool;
  ring::BufferPool tls_pool;
  std::unique_ptr<test::KernelBuffers> kernel;
  proxy::LogSink access_sink{-1, false};  // never started: access lines stay in ctx->log_batch
  proxy::AccessLog access_log;
  std::unique_ptr<proxy::WorkerContext> ctx;
};

inline ring::OpTag tag_of(const io_uring_sqe& s) {
  return ring::decode(s.user_data);
}
inline proxy::Op op_of(const io_uring_sqe& s) {
  return proxy::Op(tag_of(s).op);
}
// The provided-buffer group a receive names (a packed field: read by value).
inline uint16_t group_of(const io_uring_sqe& s) {
  return s.buf_group;
}
inline proxy::Owner owner_of(const io_uring_sqe& s) {
  return proxy::Owner(tag_of(s).owner);
}

// A TCP connection over 127.0.0.1: `accepted` is what a listener would hand the worker, `far`
// the other end, kept by the test (closed at the end; `accepted` is the object's to close).
struct LoopbackPair {
  int accepted = -1;
  int far = -1;
  LoopbackPair() {
    const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(l >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(listen(l, 1) == 0);
    REQUIRE(getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    far = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(far >= 0);
    REQUIRE(connect(far, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    accepted = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    close(l);
    REQUIRE(accepted >= 0);
  }
  ~LoopbackPair() {
    if (far >= 0) close(far);
  }
  LoopbackPair(const LoopbackPair&) = delete;
  LoopbackPair& operator=(const LoopbackPair&) = delete;
};

}  // namespace proxy_test

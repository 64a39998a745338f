// New connections per second through a proxy, and the echo server they end at.
//
//   conn_rate --serve ADDR:PORT [--threads N]
//       An echo server: N threads (default: online CPUs), each with its own SO_REUSEPORT
//       listener and epoll loop, echoing what it reads and closing when the peer has closed.
//       Runs until SIGTERM or SIGINT.
//   conn_rate --connect ADDR:PORT [--concurrency N] [--seconds T] [--warmup W] [--bytes B]
//             [--mark MARK]
//       N connections at a time, each: connect, send B bytes, read the B bytes echoed, close;
//       a finished one is replaced at once. Counts those that finish within T seconds after a
//       warm-up of W seconds (the first connection through a tunnel pays its TLS handshake),
//       and prints one line:
//         conns=C seconds=S conn_per_s=R errors=E p50_us=P p99_us=Q total=N
//       (latency: connect() to the last echoed byte; total: finished connections, warm-up
//       included). Exit 0 when at least one connection
//       finished, 1 otherwise, 2 on bad usage. --mark sets SO_MARK on every socket (needs
//       CAP_NET_ADMIN), so that capture rules that skip the mark leave the client alone.
//
// Plain epoll and non-blocking sockets, one thread on the client side: the point is a load
// generator and an echo server that cost little next to the proxies under test.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kMaxConcurrency = 10'000;
constexpr int kMaxBytes = 65'536;
// A slot whose connect failed waits this long before it tries again, so that a refused or
// exhausted destination does not turn the client into a busy loop.
constexpr auto kRetryDelay = std::chrono::milliseconds(10);

[[noreturn]] void usage_error(const std::string& msg) {
  std::fprintf(stderr,
               "conn_rate: %s\n"
               "usage: conn_rate --serve ADDR:PORT [--threads N]\n"
               "       conn_rate --connect ADDR:PORT [--concurrency N] [--seconds T] "
               "[--warmup W] [--bytes B] [--mark MARK]\n",
               msg.c_str());
  std::exit(2);
}

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t len = 0;
  int family = AF_INET;
};

// "1.2.3.4:80" or "[::1]:80".
std::optional<Endpoint> parse_endpoint(std::string_view text) {
  Endpoint e;
  std::string host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  char* end = nullptr;
  const std::string port_text(port);
  const unsigned long p = std::strtoul(port_text.c_str(), &end, 10);
  if (port_text.empty() || *end != '\0' || p == 0 || p > 65535) return std::nullopt;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&e.addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&e.addr);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(p));
    e.len = sizeof(sockaddr_in);
    e.family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(p));
    e.len = sizeof(sockaddr_in6);
    e.family = AF_INET6;
  } else {
    return std::nullopt;
  }
  return e;
}

long parse_number(const char* flag, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 0);
  if (errno != 0 || *end != '\0' || end == text || v < lo || v > hi)
    usage_error(std::string(flag) + " " + text + ": expected an integer " + std::to_string(lo) +
                ".." + std::to_string(hi));
  return v;
}

double parse_seconds(const char* flag, const char* text) {
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  if (*end != '\0' || end == text || !(v >= 0) || v > 3600)
    usage_error(std::string(flag) + " " + text + ": expected seconds, 0..3600");
  return v;
}

// ------------------------------------------------------------------------------ echo server

struct EchoConnection {
  std::string pending;  // read, not yet written back
};

void serve_thread(const Endpoint& at) {
  const int listener = socket(at.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  if (listener < 0 || setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      bind(listener, reinterpret_cast<const sockaddr*>(&at.addr), at.len) != 0 ||
      listen(listener, 4096) != 0) {
    std::fprintf(stderr, "conn_rate: cannot listen: %s\n", std::strerror(errno));
    std::exit(1);
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listener;
  epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
  std::map<int, EchoConnection> conns;
  std::vector<epoll_event> events(256);
  char buf[65536];
  auto drop = [&](int fd) {
    conns.erase(fd);
    close(fd);  // also leaves the epoll set
  };
  for (;;) {
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == listener) {
        for (;;) {
          const int c = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;  // EAGAIN, or an aborted connection: wait for the next one
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[c];
          epoll_event cev{};
          cev.events = EPOLLIN | EPOLLRDHUP;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      EchoConnection& conn = conns[fd];
      bool closed = false;
      if (!conn.pending.empty()) {  // writable again: flush first
        const ssize_t w = send(fd, conn.pending.data(), conn.pending.size(), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) closed = true;
        if (w > 0) conn.pending.erase(0, static_cast<size_t>(w));
      }
      while (!closed && conn.pending.empty()) {
        const ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) closed = true;
        if (r <= 0) break;
        const ssize_t w = send(fd, buf, static_cast<size_t>(r), MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN) closed = true;
        const size_t sent = w > 0 ? static_cast<size_t>(w) : 0;
        if (sent < static_cast<size_t>(r)) conn.pending.assign(buf + sent, buf + r);
      }
      if (closed) {
        drop(fd);
        continue;
      }
      epoll_event cev{};
      cev.events = conn.pending.empty() ? (EPOLLIN | EPOLLRDHUP) : EPOLLOUT;
      cev.data.fd = fd;
      epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
    }
  }
}

int serve(const Endpoint& at, int threads) {
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back(serve_thread, at);
  for (auto& t : pool)
    t.join();
  return 0;
}

// ------------------------------------------------------------------------------ load generator

enum class SlotState { idle, connecting, reading };

struct Slot {
  int fd = -1;
  SlotState state = SlotState::idle;
  Clock::time_point started;
  Clock::time_point retry_at;
  int received = 0;
};

struct Client {
  Endpoint to;
  int bytes = 16;
  uint32_t mark = 0;
  int ep = -1;
  std::string payload;
  std::vector<Slot> slots;
  Clock::time_point window_start, window_end;
  uint64_t finished = 0;  // within the measured window
  uint64_t total = 0;     // warm-up included
  uint64_t errors = 0;
  std::map<std::string, uint64_t> error_kinds;
  std::vector<uint32_t> latencies_us;

  void error(Slot& s, const char* what, int err) {
    if (Clock::now() >= window_start) ++errors;
    ++error_kinds[std::string(what) + ": " + std::strerror(err)];
    if (s.fd >= 0) close(s.fd);
    s.fd = -1;
    s.state = SlotState::idle;
    s.retry_at = Clock::now() + kRetryDelay;
  }

  void watch(Slot& s, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = static_cast<uint32_t>(&s - slots.data());
    epoll_ctl(ep, op, s.fd, &ev);
  }

  void send_request(Slot& s) {
    const ssize_t w = send(s.fd, payload.data(), payload.size(), MSG_NOSIGNAL);
    if (w != static_cast<ssize_t>(payload.size()))  // a few bytes into an empty socket buffer
      return error(s, "send", w < 0 ? errno : EMSGSIZE);
    s.state = SlotState::reading;
    s.received = 0;
    watch(s, EPOLLIN, EPOLL_CTL_MOD);
  }

  void start(Slot& s) {
    s.started = Clock::now();
    s.fd = socket(to.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s.fd < 0) return error(s, "socket", errno);
    const int one = 1;
    setsockopt(s.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (mark != 0 && setsockopt(s.fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0)
      return error(s, "SO_MARK", errno);
    const int rc = connect(s.fd, reinterpret_cast<const sockaddr*>(&to.addr), to.len);
    if (rc != 0 && errno != EINPROGRESS) return error(s, "connect", errno);
    s.state = SlotState::connecting;
    watch(s, EPOLLOUT, EPOLL_CTL_ADD);
  }

  void on_event(Slot& s) {
    if (s.state == SlotState::connecting) {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) return error(s, "connect", err);
      return send_request(s);
    }
    if (s.state != SlotState::reading) return;
    char buf[kMaxBytes];
    for (;;) {
      const ssize_t r = recv(s.fd, buf, sizeof buf, 0);
      if (r < 0 && errno == EAGAIN) return;
      if (r < 0) return error(s, "recv", errno);
      if (r == 0) return error(s, "recv", ECONNRESET);  // EOF before the whole echo
      s.received += static_cast<int>(r);
      if (s.received >= bytes) break;
    }
    const Clock::time_point now = Clock::now();
    ++total;
    if (now >= window_start && now < window_end) {
      ++finished;
      latencies_us.push_back(static_cast<uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(now - s.started).count()));
    }
    close(s.fd);
    s.fd = -1;
    s.state = SlotState::idle;
    s.retry_at = now;
    start(s);
  }

  int run(int concurrency, double seconds, double warmup) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    payload.assign(static_cast<size_t>(bytes), 'x');
    slots.resize(static_cast<size_t>(concurrency));
    const Clock::time_point t0 = Clock::now();
    window_start =
        t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(warmup));
    window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(seconds));
    for (Slot& s : slots)
      start(s);
    std::vector<epoll_event> events(static_cast<size_t>(concurrency));
    for (;;) {
      Clock::time_point now = Clock::now();
      if (now >= window_end) break;
      const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 5);
      for (int i = 0; i < n; ++i)
        on_event(slots[events[i].data.u32]);
      now = Clock::now();
      for (Slot& s : slots)
        if (s.state == SlotState::idle && s.retry_at <= now && now < window_end) start(s);
    }
    for (Slot& s : slots)
      if (s.fd >= 0) close(s.fd);
    return report(seconds);
  }

  int report(double seconds) {
    std::sort(latencies_us.begin(), latencies_us.end());
    auto pct = [&](double p) -> uint32_t {
      if (latencies_us.empty()) return 0;
      return latencies_us[static_cast<size_t>(p * static_cast<double>(latencies_us.size() - 1))];
    };
    std::printf(
        "conns=%llu seconds=%.3f conn_per_s=%.1f errors=%llu p50_us=%u p99_us=%u total=%llu\n",
        static_cast<unsigned long long>(finished), seconds, static_cast<double>(finished) / seconds,
        static_cast<unsigned long long>(errors), pct(0.50), pct(0.99),
        static_cast<unsigned long long>(total));
    for (const auto& [what, count] : error_kinds)
      std::fprintf(stderr, "conn_rate: %llu x %s\n", static_cast<unsigned long long>(count),
                   what.c_str());
    return finished > 0 ? 0 : 1;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::optional<Endpoint> serve_at, connect_to;
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int concurrency = 32;
  double seconds = 5, warmup = 0.5;
  Client client;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") usage_error("new connections per second");
    if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
    const char* value = argv[++i];
    if (flag == "--serve" || flag == "--connect") {
      auto e = parse_endpoint(value);
      if (!e) usage_error(std::string(flag) + " " + value + ": expected IP:PORT or [IPv6]:PORT");
      (flag == "--serve" ? serve_at : connect_to) = e;
    } else if (flag == "--threads") {
      threads = static_cast<int>(parse_number("--threads", value, 1, 256));
    } else if (flag == "--concurrency") {
      concurrency = static_cast<int>(parse_number("--concurrency", value, 1, kMaxConcurrency));
    } else if (flag == "--seconds") {
      seconds = parse_seconds("--seconds", value);
      if (seconds <= 0) usage_error("--seconds must be above 0");
    } else if (flag == "--warmup") {
      warmup = parse_seconds("--warmup", value);
    } else if (flag == "--bytes") {
      client.bytes = static_cast<int>(parse_number("--bytes", value, 1, 4096));
    } else if (flag == "--mark") {
      client.mark = static_cast<uint32_t>(parse_number("--mark", value, 0, 0x7fffffff));
    } else {
      usage_error("unknown flag " + std::string(flag));
    }
  }
  if (serve_at.has_value() == connect_to.has_value())
    usage_error("give exactly one of --serve and --connect");
  std::signal(SIGPIPE, SIG_IGN);
  if (serve_at) return serve(*serve_at, threads);
  client.to = *connect_to;
  return client.run(concurrency, seconds, warmup);
}

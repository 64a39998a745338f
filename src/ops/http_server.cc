#include "ringtunnel/ops/http_server.h"

#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "ringtunnel/proxy/log.h"

namespace ringtunnel::ops {

namespace {

int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1'000'000;
}

// RFC 9110 token characters: method names and header field names.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x | 0x20) == (y | 0x20);
         });
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes a query component ('+' is a space). False on a broken escape.
bool decode_component(std::string_view in, std::string& out) {
  out.clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out += char(hi * 16 + lo);
      i += 2;
    } else {
      out += in[i];
    }
  }
  return true;
}

ParseResult parse_error(int status, std::string reason) {
  return {ParseResult::State::error, status, std::move(reason)};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

ParseResult parse_request_line(std::string_view line, Request& out) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return parse_error(400, "malformed request line (expected METHOD TARGET HTTP/1.1)");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return parse_error(400, "malformed method in the request line");
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return parse_error(400, "unsupported protocol version (HTTP/1.0 or HTTP/1.1 only)");
  if (target.empty() || target.front() != '/')
    return parse_error(400, "the request target must be a path starting with '/'");
  for (const char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return parse_error(400, "control character in the request target");
  out.method = std::string(method);
  const size_t q = target.find('?');
  out.path = std::string(target.substr(0, q));
  out.query.clear();
  if (q != std::string_view::npos) {
    std::string_view query = target.substr(q + 1);
    while (!query.empty()) {
      const size_t amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) continue;
      const size_t eq = pair.find('=');
      std::string name, value;
      if (!decode_component(pair.substr(0, eq), name) ||
          (eq != std::string_view::npos && !decode_component(pair.substr(eq + 1), value)))
        return parse_error(400, "bad percent-encoding in the query");
      out.query[std::move(name)] = std::move(value);
    }
  }
  return {};
}

}  // namespace

ParseResult parse_request(std::string_view bytes, Request& out) {
  // Empty lines before the request line are tolerated (RFC 9112 2.2).
  size_t start = 0;
  while (bytes.substr(start, 2) == "\r\n")
    start += 2;
  const size_t end = bytes.find("\r\n\r\n", start);
  if (end == std::string_view::npos || end + 4 > kMaxHeaderBytes) {
    if (bytes.size() >= kMaxHeaderBytes || end != std::string_view::npos)
      return parse_error(431,
                         fmt::format("request line and headers exceed {} bytes", kMaxHeaderBytes));
    return {};
  }
  std::string_view head = bytes.substr(start, end - start);
  const size_t eol = head.find("\r\n");
  if (ParseResult r = parse_request_line(head.substr(0, eol), out);
      r.state == ParseResult::State::error)
    return r;
  if (out.method != "GET" && out.method != "POST" && out.method != "HEAD")
    return parse_error(405, fmt::format("method {} not allowed (GET, POST or HEAD)", out.method));
  std::string_view headers =
      eol == std::string_view::npos ? std::string_view() : head.substr(eol + 2);
  bool have_length = false;
  uint64_t length = 0;
  while (!headers.empty()) {
    const size_t next = headers.find("\r\n");
    const std::string_view line = headers.substr(0, next);
    headers = next == std::string_view::npos ? std::string_view() : headers.substr(next + 2);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
      return parse_error(400, "malformed header line");
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = trim(line.substr(colon + 1));
    for (const char c : value)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)
        return parse_error(400, "control character in a header value");
    if (iequals(name, "Transfer-Encoding"))
      return parse_error(413, "request bodies are not accepted");
    if (iequals(name, "Host")) out.host = std::string(value);
    if (iequals(name, "Origin")) out.origin = std::string(value);
    if (iequals(name, "Content-Length")) {
      uint64_t n = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc{} || ptr != value.data() + value.size())
        return parse_error(400, "malformed Content-Length");
      if (have_length && n != length) return parse_error(400, "conflicting Content-Length");
      have_length = true;
      length = n;
    }
  }
  if (length != 0) return parse_error(413, "request bodies are not accepted");
  return {ParseResult::State::complete, 0, {}};
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string format_response(const Response& response, bool head) {
  std::string out = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
      response.status, reason_phrase(response.status), response.content_type, response.body.size());
  if (!head) out += response.body;
  return out;
}

// ---------------------------------------------------------------------------------------------

struct HttpServer::Listener {
  int fd = -1;
  std::string name;  // the flag
  std::string address;
  size_t open = 0;              // connections
  int64_t paused_until_ms = 0;  // out of descriptors: accepts wait until then (0: not paused)
  std::map<std::string, std::map<std::string, Handler>> routes;  // path -> method -> handler
};

// A connection is reading its request, then writing the response, then lingering: its write
// side is shut and what the client still sends is read and dropped until it closes (a close
// with unread bytes would reset the connection and could destroy the response in flight).
struct HttpServer::Connection {
  enum class State : uint8_t { reading, writing, lingering };
  int fd = -1;
  size_t listener = 0;
  std::string peer;
  State state = State::reading;
  int64_t deadline_ms = 0;
  int64_t accepted_ms = 0;
  std::string in;   // at most kMaxHeaderBytes
  std::string out;  // the response
  size_t sent = 0;
  size_t lingered = 0;  // bytes read and dropped after the response
};

namespace {
// After the response: how long a client may take to close its side.
constexpr int64_t kLingerMs = 2000;
constexpr uint64_t kWakeTag = ~uint64_t{0};
// How long accepts pause after a failure such as EMFILE.
constexpr int64_t kAcceptPauseMs = 200;
constexpr uint64_t kListenerTag = uint64_t{1} << 32;
}  // namespace

HttpServer::HttpServer() {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

HttpServer::~HttpServer() {
  stop();
  for (const auto& [fd, c] : connections_)
    close(fd);
  for (const auto& l : listeners_)
    if (l->fd >= 0) close(l->fd);
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

int HttpServer::listen(const net::Endpoint& at, const std::string& name, std::string& error) {
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    error = fmt::format("epoll/eventfd: {}", strerror(errno));
    return -1;
  }
  const int fd = socket(at.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = strerror(errno);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (at.family() == AF_INET6) {
    // [::] serves both families (an IPv6 kubelet or Prometheus, and an IPv4 one); a specific
    // IPv6 address only itself. Set either way, whatever net.ipv6.bindv6only says.
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(at.addr());
    const int v6only = IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) ? 0 : 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (bind(fd, at.addr(), at.length) != 0 || ::listen(fd, 128) != 0) {
    error = strerror(errno);
    close(fd);
    return -1;
  }
  auto l = std::make_unique<Listener>();
  l->fd = fd;
  l->name = name;
  l->address = at.to_string();
  listeners_.push_back(std::move(l));
  const size_t id = listeners_.size() - 1;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerTag | id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  return int(id);
}

void HttpServer::route(int id, std::string method, std::string path, Handler handler) {
  listeners_.at(size_t(id))->routes[std::move(path)][std::move(method)] = std::move(handler);
}

std::string HttpServer::start() {
  if (epoll_fd_ < 0 || wake_fd_ < 0) return fmt::format("epoll/eventfd: {}", strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeTag;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
  // Signals go to the main thread's wait, never to this one.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  std::string err;
  try {
    thread_ = std::thread([this] { run(); });
  } catch (const std::system_error& e) {
    err = fmt::format("ops server thread: {}", e.what());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return err;
}

void HttpServer::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
  thread_.join();
}

void HttpServer::run() {
  epoll_event events[64];
  while (!stopping_.load(std::memory_order_acquire)) {
    const int n = epoll_wait(epoll_fd_, events, 64, next_timeout_ms(now_ms()));
    if (n < 0 && errno != EINTR) {
      proxy::log_line(proxy::LogLevel::error,
                      fmt::format("ringtunnel: ops: epoll_wait: {}", strerror(errno)));
      return;
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) continue;
      if (tag & kListenerTag) {
        accept_all(size_t(tag & 0xffffffffu));
        continue;
      }
      const auto it = connections_.find(int(tag));
      if (it == connections_.end()) continue;
      Connection& c = *it->second;
      if (c.state == Connection::State::writing)
        on_writable(c);
      else
        on_readable(c);
    }
    const int64_t now = now_ms();
    expire(now);
    report_refused(now);
  }
}

void HttpServer::accept_all(size_t index) {
  Listener& l = *listeners_[index];
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    const int fd =
        accept4(l.fd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      // Out of descriptors (or another failure that would repeat at once): stop watching the
      // listener for a while rather than spin on it.
      proxy::log_line(proxy::LogLevel::warn,
                      fmt::format("ringtunnel: ops: {} {}: accept: {}; pausing accepts for {} ms",
                                  l.name, l.address, strerror(errno), kAcceptPauseMs));
      epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, l.fd, nullptr);
      l.paused_until_ms = now_ms() + kAcceptPauseMs;
      return;
    }
    if (l.open >= kMaxConnections) {
      // Room for it: the oldest of this listener's connections still waiting for its request.
      Connection* oldest = nullptr;
      for (const auto& [other_fd, other] : connections_)
        if (other->listener == index && other->state == Connection::State::reading &&
            (!oldest || other->accepted_ms < oldest->accepted_ms))
          oldest = other.get();
      refused_.fetch_add(1, std::memory_order_relaxed);
      if (!oldest) {
        close(fd);
        continue;
      }
      close_connection(oldest->fd);
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->listener = index;
    c->peer = net::format_sockaddr(reinterpret_cast<const sockaddr*>(&peer), len);
    c->accepted_ms = now_ms();
    c->deadline_ms = c->accepted_ms + kRequestTimeoutMs;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = uint64_t(fd);
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    ++l.open;
    connections_.emplace(fd, std::move(c));
  }
}

void HttpServer::on_readable(Connection& c) {
  char buffer[4096];
  // Bounded work per event (epoll is level-triggered: what is left comes back next round).
  for (int round = 0; round < 16; ++round) {
    const ssize_t n = recv(c.fd, buffer, sizeof buffer, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      close_connection(c.fd);  // the client went away (or finished lingering)
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (c.state == Connection::State::lingering) {  // dropped, up to a limit
      c.lingered += size_t(n);
      if (c.lingered > kMaxLingerBytes) {
        close_connection(c.fd);
        return;
      }
      continue;
    }
    // Never more than the limit: what is past it cannot make the head valid.
    c.in.append(buffer, std::min(size_t(n), kMaxHeaderBytes - c.in.size()));
    Request request;
    const ParseResult r = parse_request(c.in, request);
    if (r.state == ParseResult::State::incomplete) continue;
    if (r.state == ParseResult::State::error) {
      respond(c, {r.status, "text/plain; charset=utf-8", r.reason + "\n"}, false);
      return;
    }
    const Listener& l = *listeners_[c.listener];
    request.peer = c.peer;
    const bool head = request.method == "HEAD";
    Response response{404, "text/plain; charset=utf-8",
                      fmt::format("no such path: {}\n", request.path)};
    if (const auto path = l.routes.find(request.path); path != l.routes.end()) {
      auto handler = path->second.find(head ? std::string("GET") : request.method);
      if (head && path->second.count("HEAD")) handler = path->second.find("HEAD");
      if (handler == path->second.end()) {
        std::string allowed;
        for (const auto& [method, h] : path->second)
          allowed += (allowed.empty() ? "" : ", ") + method;
        response = {405, "text/plain; charset=utf-8",
                    fmt::format("method {} not allowed on {} (allowed: {})\n", request.method,
                                request.path, allowed)};
      } else {
        try {
          response = handler->second(request);
        } catch (const std::exception& e) {
          response = {500, "text/plain; charset=utf-8", fmt::format("{}\n", e.what())};
        }
      }
    }
    proxy::log_line(proxy::LogLevel::debug,
                    fmt::format("ringtunnel: ops: {} {} {} {} -> {}", l.name, c.peer,
                                request.method, request.path, response.status));
    respond(c, response, head);
    return;
  }
}

void HttpServer::respond(Connection& c, const Response& response, bool head) {
  size_t buffered = 0;
  for (const auto& [fd, other] : connections_)
    if (other->listener == c.listener) buffered += other->out.size() - other->sent;
  if (buffered + response.body.size() > kMaxResponseBytes) {
    c.out = format_response({503, "text/plain; charset=utf-8",
                             "busy: responses to other clients are still being sent\n"},
                            head);
  } else {
    c.out = format_response(response, head);
  }
  c.in.clear();
  c.in.shrink_to_fit();
  c.sent = 0;
  c.state = Connection::State::writing;
  c.deadline_ms = now_ms() + kRequestTimeoutMs;
  epoll_event ev{};
  ev.events = EPOLLOUT;
  ev.data.u64 = uint64_t(c.fd);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
  on_writable(c);
}

void HttpServer::on_writable(Connection& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
      close_connection(c.fd);
      return;
    }
    c.sent += size_t(n);
  }
  c.out.clear();
  c.out.shrink_to_fit();
  shutdown(c.fd, SHUT_WR);
  c.state = Connection::State::lingering;
  c.deadline_ms = now_ms() + kLingerMs;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = uint64_t(c.fd);
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void HttpServer::close_connection(int fd) {
  const auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  --listeners_[it->second->listener]->open;
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  close(fd);
  connections_.erase(it);
}

void HttpServer::expire(int64_t now) {
  for (size_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = *listeners_[i];
    if (l.paused_until_ms == 0 || now < l.paused_until_ms) continue;
    l.paused_until_ms = 0;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenerTag | i;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, l.fd, &ev);
  }
  std::vector<int> due;
  for (const auto& [fd, c] : connections_)
    if (now >= c->deadline_ms) due.push_back(fd);
  for (const int fd : due) {
    Connection& c = *connections_.at(fd);
    if (c.state == Connection::State::reading)
      respond(c,
              {408, "text/plain; charset=utf-8",
               fmt::format("the request did not arrive within {} ms\n", kRequestTimeoutMs)},
              false);
    else
      close_connection(fd);  // a response not taken, or a client that does not close
  }
}

int HttpServer::next_timeout_ms(int64_t now) const {
  int64_t next = 1000;  // refusals are reported once a second
  for (const auto& [fd, c] : connections_)
    next = std::min(next, c->deadline_ms - now);
  for (const auto& l : listeners_)
    if (l->paused_until_ms) next = std::min(next, l->paused_until_ms - now);
  return int(std::max<int64_t>(0, next));
}

void HttpServer::report_refused(int64_t now) {
  if (now < next_report_ms_) return;
  const uint64_t total = refused();
  if (total != refused_reported_)
    proxy::log_line(proxy::LogLevel::warn,
                    fmt::format("ringtunnel: ops: refused {} connections in the last 1 s (at "
                                "most {} open per listener)",
                                total - refused_reported_, kMaxConnections));
  refused_reported_ = total;
  next_report_ms_ = now + 1000;
}

}  // namespace ringtunnel::ops

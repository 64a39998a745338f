// The operating HTTP/1.1 servers: metrics, readiness and admin (--metrics-listen,
// --readiness-listen, --admin-listen), each a listening socket of one HttpServer.
//
// One dedicated thread serves them all with epoll over non-blocking sockets; it never touches
// a worker's ring, so a slow or hostile scraper can never stall the data path. Handlers run on
// that thread, one request at a time: keep them short (read atomics and snapshots, format text).
//
// Bounded like the data path, per connection and per listener:
//   - the request line and headers: at most kMaxHeaderBytes (8 KiB), else 431 and close; a
//     connection never holds more than that, however slowly it sends;
//   - the whole request within kRequestTimeoutMs (5 s) of accept, else 408 and close
//     (a slowloris client is cut off); a response not taken within the same time is dropped;
//   - at most kMaxConnections (64) open connections per listener: when one more arrives, the
//     oldest connection of that listener that has not yet sent its whole request is closed to
//     make room (a flood of idle connections cannot keep a prober or scraper out, since a
//     real client sends its request at once); when every one of them is past its request, the
//     new one is closed at once. Both are counted (refused()). A flood on one port never
//     starves another;
//   - responses: at most kMaxResponseBytes (64 MiB) buffered per listener for clients that
//     have not taken them; a request beyond that is answered 503;
//   - after the response, what the client still sends is read and dropped, at most
//     kMaxLingerBytes (64 KiB) and 2 s, then the connection closes;
//   - methods GET, POST and HEAD only (else 405); no request body: Content-Length other than 0,
//     or any Transfer-Encoding, is 413; a malformed request line or header is 400; a path with
//     no route is 404, and a path routed for other methods only is 405.
// Every response carries Content-Type, Content-Length and Connection: close; the connection
// closes after it (no keep-alive). HEAD is answered by the GET route, without the body.
//
// Usage (main, before start(); route() may be called by any component that owns a listener id):
//
//   ops::HttpServer server;
//   std::string err;
//   const int admin = server.listen(endpoint, "--admin-listen", err);  // -1: err says why
//   server.route(admin, "GET", "/config_dump", [&](const ops::Request& r) {
//     return ops::Response{200, "application/json", dump()};
//   });
//   server.start();  // the thread; stop() (or the destructor) joins it
//
// Thread safety: listen() and route() before start() only; stop() from any one thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ringtunnel/net/address.h"

namespace ringtunnel::ops {

// 8 KiB: a request line and a few headers from any HTTP client or probe fit with room to spare.
inline constexpr size_t kMaxHeaderBytes = 8192;
// 5 s: a probe or scrape sends its request in one packet; a client slower than this is hostile
// or broken.
inline constexpr int kRequestTimeoutMs = 5000;
// Per listener: a Prometheus server, a kubelet and an operator need a handful.
inline constexpr size_t kMaxConnections = 64;
// Per listener: responses not yet taken by their clients (a /metrics of a busy node is a few MB).
inline constexpr size_t kMaxResponseBytes = 64u << 20;
// After the response: what a client may still send before its connection is closed.
inline constexpr size_t kMaxLingerBytes = 64u << 10;

struct Request {
  std::string method;  // "GET", "POST" or "HEAD"
  std::string path;    // the target before '?', as sent ("/config_dump")
  // The query's parameters, percent-decoded ('+' is a space); a name given twice keeps the last.
  std::map<std::string, std::string> query;
  std::string peer;  // "ip:port" of the client
  // The Host and Origin headers as sent (empty when absent): the admin endpoint refuses
  // requests a web page could make (see admin.h).
  std::string host, origin;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using Handler = std::function<Response(const Request&)>;

// What parse_request() made of the bytes received so far.
struct ParseResult {
  enum class State : uint8_t { incomplete, complete, error };
  State state = State::incomplete;
  int status = 0;      // error: the HTTP status to answer (400, 405, 413, 431)
  std::string reason;  // error: one line saying why
};

// Parses a request's head (request line and headers, up to the empty line) from `bytes`, the
// whole of what the connection sent so far. Pure: no I/O, for tests. "incomplete" while the head
// is shorter than kMaxHeaderBytes and has not ended.
ParseResult parse_request(std::string_view bytes, Request& out);

// "HTTP/1.1 200 OK\r\nContent-Type: ...\r\nContent-Length: N\r\nConnection: close\r\n\r\n" and
// the body (none for HEAD).
std::string format_response(const Response& response, bool head);
// The reason phrase of a status this server sends ("Not Found"); "Unknown" for others.
const char* reason_phrase(int status);

class HttpServer {
 public:
  HttpServer();
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens on `at` (SO_REUSEADDR, non-blocking). `name` names the listener in log
  // lines (the flag: "--admin-listen"). Returns its id, or -1 with `error` set to the reason
  // ("Address already in use").
  int listen(const net::Endpoint& at, const std::string& name, std::string& error);
  // Serves `method` `path` (exact match, no query) on listener `id` with `handler`.
  void route(int id, std::string method, std::string path, Handler handler);
  // Starts the thread (every signal blocked in it). Returns "" or why not.
  std::string start();
  // Closes every connection and listener and joins the thread. Idempotent.
  void stop();
  // Connections closed at accept because a listener had kMaxConnections open.
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  struct Listener;
  struct Connection;
  void run();
  void accept_all(size_t listener);
  void on_readable(Connection& c);
  void on_writable(Connection& c);
  void respond(Connection& c, const Response& response, bool head);
  void close_connection(int fd);
  void expire(int64_t now_ms);
  int next_timeout_ms(int64_t now_ms) const;
  void report_refused(int64_t now_ms);

  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<int, std::unique_ptr<Connection>> connections_;  // by fd
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> refused_{0};
  uint64_t refused_reported_ = 0;
  int64_t next_report_ms_ = 0;
};

}  // namespace ringtunnel::ops

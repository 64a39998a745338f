// One line per closed connection: who, where, how many bytes each way, how long, how it ended.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ringtunnel::proxy {

enum class EndReason : uint8_t {
  none,
  closed,           // both directions ended with a FIN, each forwarded
  client_reset,     // the client reset; the target was reset too
  target_reset,     // the target reset; the client was reset too
  connect_refused,  // the target refused the connection; the client was reset
  connect_timeout,  // the target did not answer within --connect-timeout; the client was reset
  connect_error,    // connecting failed otherwise (unreachable, no socket); the client was reset
  drain_timeout,    // still open when --drain-timeout ran out at shutdown; both were reset
  error,            // an unexpected socket error; both were reset
  refused,          // HBONE: the peer proxy answered 503 (target unreachable); the client was reset
  denied,           // HBONE: the peer proxy answered 401 (policy); the client was reset
  bad_request,      // HBONE: the peer proxy answered 400; the client was reset
  peer_error,       // HBONE: the tunnel connection failed under the stream (TLS, HTTP/2, socket)
};

std::string_view to_string(EndReason reason);

struct AccessRecord {
  std::string_view listener;
  std::string_view client;
  std::string_view target;
  uint64_t bytes_up = 0;    // client -> target
  uint64_t bytes_down = 0;  // target -> client
  uint64_t duration_ms = 0;
  EndReason end = EndReason::none;
  int64_t start_unix_ms = 0;
  std::string_view src_identity;  // HBONE: the SPIFFE IDs of the two proxies, else empty
  std::string_view dst_identity;
};

// Appends "access listener=... client=... target=... bytes_up=N bytes_down=N duration_ms=N
// end=REASON [src_identity=ID dst_identity=ID] [reason="TEXT"] start=ISO8601\n" to `out`.
// `reason` (why a stream was refused before it was dialled; none if empty) is quoted, with '"'
// and '\\' escaped by a backslash and other bytes outside printable ASCII as \xNN: the line stays
// one line, and the value ends where it seems to.
void append_access_line(std::string& out, const AccessRecord& record, std::string_view reason = {});

// Where the lines go. Workers batch their lines and write each batch with one write().
class AccessLog {
 public:
  // "-" for standard error, "off", or a path opened for appending. Returns "" or why not.
  std::string open(const std::string& where);
  bool enabled() const { return fd_ >= 0; }
  void write(std::string& batch);  // writes and clears
  ~AccessLog();

 private:
  int fd_ = -1;
  bool owned_ = false;
};

}  // namespace ringtunnel::proxy

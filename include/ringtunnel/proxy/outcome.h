// How things end: a relay's or stream's EndReason (its access-log `end=`), an HBONE connection's
// ConnFailure (its `closed: ...` log line), and the socket results that decide them.
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
  denied,       // HBONE: the peer proxy answered 401 (policy); the client was reset. --config: an
                // authorization policy refuses the connection (at its start, or after a reload)
  bad_request,  // HBONE: the peer proxy answered 400; the client was reset
  peer_error,   // HBONE: the tunnel connection failed under the stream (TLS, HTTP/2, socket)
  overload,     // the receive pool and --memory-budget were both spent, and this stalled connection
                // (or the HBONE connection under it) held the most of the pool; both were reset
};

std::string_view to_string(EndReason reason);

// Which end of a proxied TCP connection a socket faces.
enum class Peer : uint8_t { client, target };

// A socket error that means the peer reset the connection (or it is gone).
bool is_reset(int err);
// How a connect that completed with `res` (< 0) ends its owner: -ECANCELED is the linked
// timeout, -ECONNREFUSED a refusal, anything else an error.
EndReason connect_end(int res);
// How a receive or send error `res` (< 0) on the socket that faces `peer` ends its owner: that
// peer's reset, or an error.
EndReason socket_end(int res, Peer peer);

// Why an HBONE connection closed (with a detail where the text has one).
enum class ConnFailure : uint8_t {
  socket,             // "socket: <errno text>"
  connect_timeout,    // "connect timed out"
  connect,            // "connect: <errno text>"
  handshake,          // "TLS handshake: <TLS failure>"
  handshake_timeout,  // "TLS handshake timed out"
  tls,                // "TLS: <TLS failure>"
  http2,              // "HTTP/2: <reason>"
  peer_closed,        // "the peer closed the connection"
  recv,               // "receive: <errno text>"
  send,               // "send: <errno text>"
  keepalive,          // "keepalive PING unanswered"
  drain_timeout,      // "drain timeout"
  overload,           // "overload: <what was held>"
};

// The text of the `closed: ...` log line.
std::string describe(ConnFailure failure, std::string_view detail = {});

}  // namespace ringtunnel::proxy

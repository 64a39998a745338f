#include "ringtunnel/proxy/outcome.h"

#include <cerrno>

#include <fmt/format.h>

namespace ringtunnel::proxy {

std::string_view to_string(EndReason reason) {
  switch (reason) {
    case EndReason::none:
      return "none";
    case EndReason::closed:
      return "closed";
    case EndReason::client_reset:
      return "client_reset";
    case EndReason::target_reset:
      return "target_reset";
    case EndReason::connect_refused:
      return "connect_refused";
    case EndReason::connect_timeout:
      return "connect_timeout";
    case EndReason::connect_error:
      return "connect_error";
    case EndReason::drain_timeout:
      return "drain_timeout";
    case EndReason::error:
      return "error";
    case EndReason::refused:
      return "refused";
    case EndReason::denied:
      return "denied";
    case EndReason::bad_request:
      return "bad_request";
    case EndReason::peer_error:
      return "peer_error";
    case EndReason::overload:
      return "overload";
  }
  return "?";
}

bool is_reset(int err) {
  return err == ECONNRESET || err == EPIPE || err == ECONNABORTED;
}

EndReason connect_end(int res) {
  return res == -ECANCELED      ? EndReason::connect_timeout
         : res == -ECONNREFUSED ? EndReason::connect_refused
                                : EndReason::connect_error;
}

EndReason socket_end(int res, Peer peer) {
  if (res >= 0 || !is_reset(-res)) return EndReason::error;
  return peer == Peer::client ? EndReason::client_reset : EndReason::target_reset;
}

std::string describe(ConnFailure failure, std::string_view detail) {
  switch (failure) {
    case ConnFailure::socket:
      return fmt::format("socket: {}", detail);
    case ConnFailure::connect_timeout:
      return "connect timed out";
    case ConnFailure::connect:
      return fmt::format("connect: {}", detail);
    case ConnFailure::handshake:
      return fmt::format("TLS handshake: {}", detail);
    case ConnFailure::handshake_timeout:
      return "TLS handshake timed out";
    case ConnFailure::tls:
      return fmt::format("TLS: {}", detail);
    case ConnFailure::http2:
      return fmt::format("HTTP/2: {}", detail);
    case ConnFailure::peer_closed:
      return "the peer closed the connection";
    case ConnFailure::recv:
      return fmt::format("receive: {}", detail);
    case ConnFailure::send:
      return fmt::format("send: {}", detail);
    case ConnFailure::keepalive:
      return "keepalive PING unanswered";
    case ConnFailure::drain_timeout:
      return "drain timeout";
    case ConnFailure::overload:
      return fmt::format("overload: {}", detail);
  }
  return "?";
}

}  // namespace ringtunnel::proxy

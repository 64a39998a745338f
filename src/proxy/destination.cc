#include "ringtunnel/proxy/destination.h"

namespace ringtunnel::proxy {

TcpTarget tcp_target(const config::Route& route) {
  return {route.target, &route.listen_text, &route.target_text};
}

}  // namespace ringtunnel::proxy

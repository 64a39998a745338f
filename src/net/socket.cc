#include "ringtunnel/net/socket.h"

#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringtunnel::net {

int set_keepalive(int fd, const Keepalive& k) {
  if (!k.enabled()) return 0;
  const int one = 1, time = int(k.time_s), interval = int(k.interval_s), probes = int(k.probes);
  if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &time, sizeof time) < 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval) < 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) < 0)
    return -errno;
  return 0;
}

int listen_reuseport(const Endpoint& at, int backlog, std::string& error,
                     const Keepalive& keepalive, bool* transparent) {
  const int fd = socket(at.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = fmt::format("socket: {}", strerror(errno));
    return -errno;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (at.family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (transparent) {
    *transparent = at.family() == AF_INET6
                       ? setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) == 0
                       : setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one) == 0;
  }
  if (const int err = set_keepalive(fd, keepalive); err < 0) {
    error = fmt::format("TCP keepalive on {}: {}", at.to_string(), strerror(-err));
    close(fd);
    return err;
  }
  if (bind(fd, at.addr(), at.length) < 0 || listen(fd, backlog) < 0) {
    const int err = errno;
    error = fmt::format("listen on {}: {}", at.to_string(), strerror(err));
    close(fd);
    return -err;
  }
  return fd;
}

int stream_socket_for(const Endpoint& to, uint32_t mark, const Keepalive& keepalive) {
  const int fd = socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    const int err = errno;
    close(fd);
    return -err;
  }
  if (const int err = set_keepalive(fd, keepalive); err < 0) {
    close(fd);
    return err;
  }
  tune_relay_socket(fd);
  return fd;
}

int original_dst(int fd, Endpoint& out, Endpoint* local_out) {
  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) < 0) return -errno;
  if (local_out) {
    local_out->storage = local;
    local_out->length = local_len;
  }
  // The option's number is the same for both families (netfilter's SO_ORIGINAL_DST and
  // IP6T_SO_ORIGINAL_DST are 80), at its own level.
  constexpr int kOriginalDst = 80;
  const int level = local.ss_family == AF_INET6 ? SOL_IPV6 : SOL_IP;
  out = Endpoint{};
  socklen_t len = sizeof out.storage;
  if (getsockopt(fd, level, kOriginalDst, &out.storage, &len) == 0) {
    out.length = len;
    return 0;
  }
  if (errno != ENOENT) return -errno;
  // No NAT record: delivered by TPROXY, which keeps the original destination as the local
  // address.
  out.storage = local;
  out.length = local_len;
  return 0;
}

bool host_has_address(const Endpoint& address) {
  const int fd = socket(address.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;  // cannot tell: say yes, the cautious answer for callers
  Endpoint probe = address;
  if (probe.family() == AF_INET6)
    reinterpret_cast<sockaddr_in6*>(&probe.storage)->sin6_port = 0;
  else
    reinterpret_cast<sockaddr_in*>(&probe.storage)->sin_port = 0;
  const bool local = bind(fd, probe.addr(), probe.length) == 0 || errno != EADDRNOTAVAIL;
  close(fd);
  return local;
}

void tune_relay_socket(int fd) {
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void arm_reset_on_close(int fd) {
  const linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

}  // namespace ringtunnel::net

// Socket set-up done once per connection or listener, outside the data path.
#pragma once

#include <cstdint>
#include <string>

#include "ringtunnel/net/address.h"

namespace ringtunnel::net {

// TCP keepalive: idle seconds before the first probe, seconds between probes, probes unanswered
// before the kernel drops the connection. Off when any of them is 0.
struct Keepalive {
  uint32_t time_s = 0;
  uint32_t interval_s = 0;
  uint32_t probes = 0;
  bool enabled() const { return time_s && interval_s && probes; }
};
// The kernel's limits (TCP_KEEPIDLE and TCP_KEEPINTVL in seconds, TCP_KEEPCNT).
inline constexpr uint32_t kMaxKeepaliveSeconds = 32767;
inline constexpr uint32_t kMaxKeepaliveProbes = 127;

// Turns keepalive on with `k`'s timings (nothing when it is off). Returns 0 or -errno.
int set_keepalive(int fd, const Keepalive& k);

// A listening socket with SO_REUSEPORT, so that every worker binds its own and the kernel spreads
// accepted connections among them. Returns the fd, or -errno with `error` set. Keepalive set on
// the listener is inherited by every connection it accepts: no system call per connection. With
// `transparent`, also IP_TRANSPARENT (IPV6_TRANSPARENT), which TPROXY rules need to deliver to
// it (CAP_NET_ADMIN); *transparent says whether that took.
int listen_reuseport(const Endpoint& at, int backlog, std::string& error,
                     const Keepalive& keepalive = {}, bool* transparent = nullptr);

// A fresh TCP socket for a connection to `to` (close-on-exec, TCP_NODELAY, `keepalive`). A
// non-zero `mark` is set as its SO_MARK: the host's capture rules let the proxy's own upstream
// sockets through by that mark. Returns fd or -errno.
int stream_socket_for(const Endpoint& to, uint32_t mark = 0, const Keepalive& keepalive = {});

// Where an accepted connection was going before the host's rules sent it to us: after REDIRECT,
// SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST (IPv6); after TPROXY (no NAT record: ENOENT),
// the connection's own local address, which TPROXY leaves as the original destination. A
// connection made straight to the listener gets the listener's address either way: callers
// check for that. Returns 0 and fills `out` (and `local`, when given, with the connection's own
// local address, read on the way), or -errno.
int original_dst(int fd, Endpoint& out, Endpoint* local = nullptr);

// Whether `address` (its port ignored) is one of this host's own addresses: a socket can bind to
// it without IP_TRANSPARENT. Three system calls; for the rare connection that needs it.
bool host_has_address(const Endpoint& address);

// Options every relayed socket gets: no Nagle delay (the relay already batches its writes).
void tune_relay_socket(int fd);

// Makes the next close() send a reset instead of a FIN.
void arm_reset_on_close(int fd);

}  // namespace ringtunnel::net

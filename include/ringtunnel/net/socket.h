// Socket set-up done once per connection or listener, outside the data path.
#pragma once

#include <string>

#include "ringtunnel/net/address.h"

namespace ringtunnel::net {

// A listening socket with SO_REUSEPORT, so that every worker binds its own and the kernel spreads
// accepted connections among them. Returns the fd, or -errno with `error` set.
int listen_reuseport(const Endpoint& at, int backlog, std::string& error);

// A fresh TCP socket for a connection to `to` (close-on-exec, TCP_NODELAY). Returns fd or -errno.
int stream_socket_for(const Endpoint& to);

// Options every relayed socket gets: no Nagle delay (the relay already batches its writes).
void tune_relay_socket(int fd);

// Makes the next close() send a reset instead of a FIN.
void arm_reset_on_close(int fd);

}  // namespace ringtunnel::net

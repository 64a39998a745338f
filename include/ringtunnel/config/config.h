// Everything a running ringtunnel needs to know, decided once at start-up and then read-only.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ringtunnel/net/address.h"
#include "ringtunnel/ring/buffer_class.h"

namespace ringtunnel::config {

struct Route {
  net::Endpoint listen;
  net::Endpoint target;
  std::string listen_text;  // as the user wrote it, normalised: "127.0.0.1:15001"
  std::string target_text;
};

struct Config {
  unsigned workers = 0;  // 0: one per online CPU
  unsigned ring_entries = 1024;
  bool sqpoll = false;
  ring::BufferSizes buffer_sizes{1024, 16384, 262144};
  std::array<uint32_t, ring::kBufferClasses> buffer_ring_entries{1024, 256, 64};
  bool registered_buffers = true;
  bool fixed_files = true;
  uint32_t max_queued = 2u << 20;  // per direction
  int64_t connect_timeout_ms = 5000;
  int64_t drain_timeout_ms = 10000;
  bool tcp_splice = false;
  uint32_t splice_pipe_size = 1u << 20;
  unsigned listen_backlog = 4096;
  std::string access_log = "-";  // "-": stderr, "off", or a file appended to
  std::vector<Route> routes;

  // What ringtunnel does when started with no flags at all.
  static constexpr const char* kDefaultForward = "127.0.0.1:15001=tcp://127.0.0.1:8080";
};

}  // namespace ringtunnel::config

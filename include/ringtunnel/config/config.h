// Everything a running ringtunnel needs to know, decided once at start-up and then read-only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ringtunnel/net/address.h"
#include "ringtunnel/net/socket.h"
#include "ringtunnel/ring/buffer_class.h"

namespace ringtunnel::workload {
class Store;
}  // namespace ringtunnel::workload

namespace ringtunnel::config {

// The most --forward listeners: the workers number routes in 16 bits, keeping the last values for
// their own listeners (--hbone-listen, --outbound-listen, --inbound-plaintext-listen).
inline constexpr size_t kMaxRoutes = 65532;

struct Route {
  enum class Kind : uint8_t { tcp, hbone };
  Kind kind = Kind::tcp;
  net::Endpoint listen;
  net::Endpoint target;     // tcp: where to connect; hbone: the CONNECT :authority
  std::string listen_text;  // as the user wrote it, normalised: "127.0.0.1:15001"
  std::string target_text;
  // hbone: the peer proxy to tunnel through, and the SPIFFE ID its certificate must carry.
  net::Endpoint peer;
  std::string peer_text;
  std::string identity;
};

// An --allow-dest entry: a network, and the ports on it, that an HBONE CONNECT may dial.
// IPv4-mapped IPv6 networks (::ffff:a.b.c.d/96+n) are kept as the IPv4 network they map.
struct AllowDest {
  int family = AF_INET;               // AF_INET (first 4 bytes of `network`) or AF_INET6
  std::array<uint8_t, 16> network{};  // host bits beyond `prefix` are zero
  unsigned prefix = 0;                // in bits: 0-32 or 0-128
  std::vector<std::pair<uint16_t, uint16_t>> ports;  // inclusive ranges; empty: every port
  std::string text;                                  // normalised: "10.0.0.0/8:80,8000-8080"
};

struct Config {
  unsigned workers = 0;  // 0: one per online CPU
  unsigned ring_entries = 1024;
  bool sqpoll = false;
  ring::BufferSizes buffer_sizes{1024, 16384, 262144};
  std::array<uint32_t, ring::kBufferClasses> buffer_ring_entries{1024, 256, 64};
  bool registered_buffers = true;
  bool fixed_files = true;
  uint32_t max_queued = 2u << 20;       // per direction
  uint64_t memory_budget = 256u << 20;  // per worker, heap bytes outside the receive pool
  bool poison_buffers = false;          // --debug-poison-buffers
  int64_t connect_timeout_ms = 5000;
  int64_t drain_timeout_ms = 10000;
  bool tcp_splice = false;
  uint32_t splice_pipe_size = 1u << 20;
  // --ring-min-wait: while a relay moves bulk data, how long a worker lets completions gather
  // before it wakes (microseconds; 0: off).
  uint32_t ring_min_wait_us = 200;
  unsigned listen_backlog = 4096;
  std::string access_log = "-";  // "-": stderr, "off", or a file appended to
  // Budgets, per worker: accepted client connections of every listener, and HBONE streams
  // (both directions).
  uint32_t max_connections = 16384;
  uint32_t max_streams = 16384;
  std::vector<Route> routes;
  // SO_MARK of every upstream socket (0: none), so that a host's capture rules let the proxy's
  // own connections through. parse_flags sets kCaptureMark when a capture listener is given and
  // --mark is not.
  uint32_t mark = 0;

  // Mesh node proxy: the workload config (--config, a local-config YAML file; "" for none) and
  // the local workload it serves (--workload NS/NAME/SA; set exactly when config_path is).
  std::string config_path;
  std::string workload_namespace, workload_name, workload_service_account;
  // Captured connections (both need config_path): the local workload's outbound connections
  // (--outbound-listen), and plaintext connections to it (--inbound-plaintext-listen).
  // Each is repeatable: capture rules for IPv4 and IPv6 redirect to a listener of each family
  // (listeners are IPv6-only on ::), e.g. 0.0.0.0:15001 and [::]:15001.
  struct ListenAt {
    net::Endpoint at;
    std::string text;  // at.to_string()
  };
  std::vector<ListenAt> outbound_listens;
  std::vector<ListenAt> inbound_plaintext_listens;
  // The loaded workload config (see workload/store.h): set by main before the workers are made,
  // for as long as they run; null without config_path. The pointer never changes; the Store
  // hands out snapshots.
  const workload::Store* store = nullptr;

  // HBONE
  // --hbone-listen: repeatable, as the capture listeners (a dual-stack host: 0.0.0.0:15008 and
  // [::]:15008).
  std::vector<ListenAt> hbone_listens;
  std::string cert, key, ca;  // all three, or none: the embedded development identity
  int64_t pool_idle_timeout_ms = 30000;
  int64_t keepalive_ms = 30000;
  uint32_t h2_frame_size = 1u << 20;
  uint32_t h2_stream_window = 4u << 20;
  uint32_t h2_connection_window = 16u << 20;
  uint32_t tls_record_size = 16384;
  // Where inbound CONNECTs may go (see proxy/admission.h). Empty: nowhere.
  std::vector<AllowDest> allow_dests;
  // Inbound HBONE connections whose TLS handshake is in progress, per worker, and per worker and
  // client IP address.
  uint32_t max_handshakes = 256;
  uint32_t max_handshakes_per_source = 32;
  int64_t hbone_idle_timeout_ms = 60000;  // an inbound connection with no stream closes after it

  // The operating listeners (ops/http_server.h: one thread of their own, never a worker's):
  // metrics, readiness (/healthz/ready) and admin (/config_dump, /logging, /quitquitquit).
  // "ip:port" normalised, or "off". The admin listener is loopback unless the user says
  // otherwise (a warning at start then).
  std::string metrics_listen = "0.0.0.0:15020";
  std::string readiness_listen = "0.0.0.0:15021";
  std::string admin_listen = "127.0.0.1:15000";
  // TCP keepalive on every client (accepted) and upstream socket: idle seconds before the first
  // probe, seconds between probes, unanswered probes before the connection is dropped. A zero in
  // any of them turns keepalive off.
  uint32_t tcp_keepalive_time_s = 180;
  uint32_t tcp_keepalive_interval_s = 180;
  uint32_t tcp_keepalive_probes = 9;
  net::Keepalive keepalive() const {
    return {tcp_keepalive_time_s, tcp_keepalive_interval_s, tcp_keepalive_probes};
  }
  // --log-format: access records and operational messages as text lines, or one JSON object
  // per line.
  enum class LogFormat : uint8_t { text, json };
  LogFormat log_format = LogFormat::text;
  // Metrics (stats/metrics.h): TCP traffic series per worker, and how long a series with no open
  // connection is kept after its last use.
  uint32_t metrics_max_series = 1000;
  int64_t metrics_series_expiry_ms = 300000;

  bool needs_identity() const {
    // A mesh workload's SPIFFE ID is checked against the certificate's at start-up.
    if (!hbone_listens.empty() || !config_path.empty()) return true;
    for (const Route& r : routes)
      if (r.kind == Route::Kind::hbone) return true;
    return false;
  }

  // What ringtunnel does when started with no flags at all.
  static constexpr const char* kDefaultForward = "127.0.0.1:15001=tcp://127.0.0.1:8080";
  static constexpr const char* kDefaultHboneListen = "127.0.0.1:15008";
  // ... and where its HBONE listener may dial when no --allow-dest is given: its demo target.
  static constexpr const char* kDefaultAllowDest = "127.0.0.1/32:8080";
  // The upstream mark of capture mode (--outbound-listen, --inbound-plaintext-listen) when
  // --mark is not given: the capture rules let packets with it through.
  static constexpr uint32_t kCaptureMark = 0x539;
};

}  // namespace ringtunnel::config

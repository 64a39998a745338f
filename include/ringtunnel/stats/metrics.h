// Prometheus metrics: what the workers count, and the text a scrape returns.
//
// Counting costs the data path nothing it would notice: every number is a Counter (counter.h)
// that only its worker writes, with a relaxed load and store. A scrape (render(), on the metrics
// server's thread) reads them and sums the workers; it never makes a worker wait.
//
// The TCP traffic metrics are ztunnel's, with its names, types, HELP texts and labels, so that
// Istio's dashboards and alerts work unchanged:
//   istio_tcp_connections_opened_total   connections opened (response_flags "-")
//   istio_tcp_connections_closed_total   connections closed, response_flags saying how
//   istio_tcp_connections_failed_total   of those, the ones that failed (response_flags not "-")
//   istio_tcp_received_bytes_total       bytes client -> server (the access log's bytes_up)
//   istio_tcp_sent_bytes_total           bytes server -> client (the access log's bytes_down)
// Their labels: reporter, the source's and destination's workload, canonical service and
// revision, namespace, principal, app, version and cluster, destination_service (hostname,
// namespace, name), request_protocol ("tcp"), response_flags and connection_security_policy
// ("mutual_tls" or "unknown"); "unknown" wherever the workload config has no value.
//
// Series. A worker keeps one TrafficSeries per distinct label set (less response_flags, whose
// closed and failed counts it holds per flag). A connection finds or makes its series once, when
// it opens (one hash lookup), and then adds to its counters directly. Series are kept in a list
// that the scrape walks without the worker's help:
//   - the worker makes a series whole, then links it at the head with a release store, so a
//     scrape sees it complete or not at all; its labels never change afterwards;
//   - the worker unlinks and frees a series only while holding the table's list lock, which it
//     takes with try_lock: when a scrape holds it, the worker skips that sweep and tries again
//     at the next one. A scrape holds the lock while it walks the list. So the worker never
//     waits for a scrape, and a scrape never reads a freed series.
// Bounded: at most max_series series per worker (--metrics-max-series). A connection whose label
// set would be one more is counted in the series of its reporter and security policy with every
// workload label "unknown" (ringtunnel_metrics_series_overflow_total counts them; the worker logs
// the first). Expiry: a series with no open connection that nothing touched for series_expiry
// (--metrics-series-expiry) is dropped at the next sweep, so the label sets of connections long
// gone do not accumulate for the life of the process. Prometheus sees the series end; should the
// label set come back, it starts again from 0 (which rate() and increase() treat as a reset).
// While another worker still has a series of the same label set, the expired one's counts stay
// in the sum (TrafficHistory): a label set's counters never go down while it lives.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringtunnel/stats/counter.h"

namespace ringtunnel::workload {
struct Workload;
struct Service;
}  // namespace ringtunnel::workload

namespace ringtunnel::stats {

enum class Reporter : uint8_t { source, destination };
enum class SecurityPolicy : uint8_t { unknown, mutual_tls };
// ztunnel's response flags, as it spells them: "-", "DENY", "CONNECT", ...
enum class ResponseFlag : uint8_t {
  none,
  deny,
  connect,
  tls_failure,
  h2_handshake_failure,
  network_policy,
  identity_error,
  cert_revoked,
};
inline constexpr size_t kResponseFlags = 8;
std::string_view to_string(ResponseFlag flag);
std::string_view to_string(Reporter reporter);
std::string_view to_string(SecurityPolicy policy);

// The workload labels of a traffic series, in the order they are printed.
enum class Label : uint8_t {
  source_workload,
  source_canonical_service,
  source_canonical_revision,
  source_workload_namespace,
  source_principal,
  source_app,
  source_version,
  source_cluster,
  destination_service,
  destination_service_namespace,
  destination_service_name,
  destination_workload,
  destination_canonical_service,
  destination_canonical_revision,
  destination_workload_namespace,
  destination_principal,
  destination_app,
  destination_version,
  destination_cluster,
};
inline constexpr size_t kLabels = 19;
std::string_view label_name(Label label);

struct TrafficLabels {
  Reporter reporter = Reporter::source;
  SecurityPolicy security = SecurityPolicy::unknown;
  std::array<std::string, kLabels> values;  // "" prints as "unknown"

  std::string& operator[](Label l) { return values[size_t(l)]; }
  const std::string& operator[](Label l) const { return values[size_t(l)]; }
  // From a workload: its workload name, canonical service and revision, namespace, app and
  // version (the canonical ones), cluster. Null: nothing. The source's principal is left alone
  // (it is the identity its proxy proved in TLS, if any); the destination's is the workload's
  // SPIFFE ID.
  void set_source(const workload::Workload* w);
  void set_destination(const workload::Workload* w);
  // destination_service (the hostname), destination_service_namespace and _name.
  void set_service(const workload::Service* s);
  // The labels as one string, distinct for distinct label sets (the series' key).
  std::string key() const;
};

struct TrafficSeries {
  TrafficLabels labels;  // never changes once the series is published
  std::string key;
  uint64_t id = 0;  // distinct among the table's series, ever (a re-made series is a new one)
  Counter opened, received_bytes, sent_bytes;
  std::array<Counter, kResponseFlags> closed, failed;
  // The owning worker's alone.
  uint32_t open = 0;        // connections counted in it that have not closed
  uint64_t touched_ns = 0;  // when one last opened or closed
  std::atomic<TrafficSeries*> next{nullptr};
};

// One worker's traffic series (see the header comment).
class TrafficTable {
 public:
  TrafficTable() = default;
  ~TrafficTable();
  TrafficTable(const TrafficTable&) = delete;
  TrafficTable& operator=(const TrafficTable&) = delete;

  static constexpr size_t kDefaultMaxSeries = 1000;
  static constexpr uint64_t kDefaultExpiryNs = 300'000'000'000;  // 5 minutes
  void configure(size_t max_series, uint64_t expiry_ns);
  uint64_t expiry_ns() const { return expiry_ns_; }

  // ---- the owning worker
  // A connection with these labels opened: counted in its series (made if new), which is
  // returned. `first_overflow` is set when this is the first connection of the table that did
  // not get a series of its own (the caller logs it once).
  TrafficSeries& open(const TrafficLabels& labels, uint64_t now_ns, bool& first_overflow);
  // The connection closed, ending as `flag` says.
  void close(TrafficSeries& series, ResponseFlag flag, uint64_t now_ns);
  // Drops the series that expired. Returns false (nothing done) when a scrape held the list.
  bool expire(uint64_t now_ns);
  // Series that have no open connection (candidates for expiry).
  size_t idle() const { return idle_; }
  size_t size() const { return index_.size(); }

  // ---- any thread (the scrape); f(const TrafficSeries&) for each published series
  template <typename F>
  void for_each(F&& f) const {
    std::lock_guard lock(list_mutex_);
    for (const TrafficSeries* s = head_.load(std::memory_order_acquire); s;
         s = s->next.load(std::memory_order_acquire))
      f(*s);
  }
  Counter overflowed;  // connections counted in an overflow series
  Counter published;   // series in the list (a gauge)

 private:
  TrafficSeries& find_or_make(const TrafficLabels& labels, std::string key, uint64_t now_ns);

  std::unordered_map<std::string, TrafficSeries*> index_;  // the worker's
  std::atomic<TrafficSeries*> head_{nullptr};
  mutable std::mutex list_mutex_;
  size_t max_series_ = kDefaultMaxSeries;
  uint64_t expiry_ns_ = kDefaultExpiryNs;
  size_t idle_ = 0;
  uint64_t next_id_ = 0;
  bool overflow_seen_ = false;
};

// The counts of one series, or of several added up.
struct TrafficValues {
  uint64_t opened = 0, received = 0, sent = 0;
  std::array<uint64_t, kResponseFlags> closed{}, failed{};
  void add(const TrafficValues& other);
  static TrafficValues of(const TrafficSeries& series);
};

// What the scrapes remember so that a label set's sums never go down while it lives: a series
// one worker expires (or a worker that goes away) would otherwise take its counts out of a sum
// that other workers' series of the same label set keep alive, which Prometheus reads as a
// counter reset. The counts of a series that ended are kept for its label set, and added to it,
// for as long as a series of that label set lives in some worker; then the label set ends.
struct TrafficHistory {
  struct Seen {
    uint64_t id = 0;
    TrafficValues values;
  };
  std::map<std::pair<const void*, std::string>, Seen> last;  // (worker, key): at the last scrape
  std::map<std::string, TrafficValues> retired;              // by key
};

// Why a TLS handshake of an HBONE connection failed (the `reason` label).
enum class HandshakeFailure : uint8_t {
  tls,          // TLS refused it: certificate, identity, protocol
  timeout,      // it did not complete in time
  peer_closed,  // the peer closed the connection during it
  socket,       // a socket error
  other,        // drained or closed for overload during it
};
inline constexpr size_t kHandshakeFailures = 5;
std::string_view to_string(HandshakeFailure failure);

// Everything one worker counts. The worker owns it; the registry reads it.
struct WorkerMetrics {
  explicit WorkerMetrics(unsigned id) : worker(id) {}
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  const unsigned worker;
  TrafficTable traffic;
  // The ring's and the receive pools' own counters (null: none).
  const RingCounters* ring = nullptr;
  const PoolCounters* data_pool = nullptr;  // relays and streams receive here
  const PoolCounters* tls_pool = nullptr;   // HBONE connections receive here
  // Gauges set by the worker: bytes registered with the kernel (the pools), and after each loop
  // iteration the HBONE streams open and the pooled outbound HBONE connections.
  Counter registered_bytes, streams_open, pooled_connections;
  std::array<Counter, 2> handshakes;  // completed, by role: [0] client, [1] server
  std::array<Counter, kHandshakeFailures> handshake_failures;
};

// What a scrape renders: every worker's metrics, summed where ztunnel's have no worker label.
class MetricsRegistry {
 public:
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

  // The worker's metrics must stay valid until remove().
  void add(const WorkerMetrics& worker);
  void remove(const WorkerMetrics& worker);
  // The Prometheus text format 0.0.4.
  std::string render() const;

 private:
  mutable std::mutex mutex_;  // scrapes among themselves, and add/remove; never a worker
  std::vector<const WorkerMetrics*> workers_;
  mutable TrafficHistory history_;
};

// Appends a label value as the text format wants it: '\\', '"' and line feeds escaped.
void append_label_value(std::string& out, std::string_view value);

}  // namespace ringtunnel::stats

#include "ringtunnel/stats/metrics.h"

#include <map>

#include <fmt/format.h>

#include "ringtunnel/workload/model.h"

namespace ringtunnel::stats {

std::string_view to_string(ResponseFlag flag) {
  switch (flag) {
    case ResponseFlag::none:
      return "-";
    case ResponseFlag::deny:
      return "DENY";
    case ResponseFlag::connect:
      return "CONNECT";
    case ResponseFlag::tls_failure:
      return "TLS_FAILURE";
    case ResponseFlag::h2_handshake_failure:
      return "H2_HANDSHAKE_FAILURE";
    case ResponseFlag::network_policy:
      return "NETWORK_POLICY";
    case ResponseFlag::identity_error:
      return "IDENTITY_ERROR";
    case ResponseFlag::cert_revoked:
      return "CERT_REVOKED";
  }
  return "-";
}

std::string_view to_string(Reporter reporter) {
  return reporter == Reporter::source ? "source" : "destination";
}

std::string_view to_string(SecurityPolicy policy) {
  return policy == SecurityPolicy::mutual_tls ? "mutual_tls" : "unknown";
}

std::string_view to_string(HandshakeFailure failure) {
  switch (failure) {
    case HandshakeFailure::tls:
      return "tls";
    case HandshakeFailure::timeout:
      return "timeout";
    case HandshakeFailure::peer_closed:
      return "peer_closed";
    case HandshakeFailure::socket:
      return "socket";
    case HandshakeFailure::other:
      return "other";
  }
  return "other";
}

std::string_view label_name(Label label) {
  static constexpr std::array<std::string_view, kLabels> kNames = {
      "source_workload",
      "source_canonical_service",
      "source_canonical_revision",
      "source_workload_namespace",
      "source_principal",
      "source_app",
      "source_version",
      "source_cluster",
      "destination_service",
      "destination_service_namespace",
      "destination_service_name",
      "destination_workload",
      "destination_canonical_service",
      "destination_canonical_revision",
      "destination_workload_namespace",
      "destination_principal",
      "destination_app",
      "destination_version",
      "destination_cluster",
  };
  return kNames[size_t(label)];
}

// ---- labels

void TrafficLabels::set_source(const workload::Workload* w) {
  if (!w) return;
  (*this)[Label::source_workload] = w->workload_name;
  (*this)[Label::source_canonical_service] = w->canonical_name;
  (*this)[Label::source_canonical_revision] = w->canonical_revision;
  (*this)[Label::source_workload_namespace] = w->namespace_;
  (*this)[Label::source_app] = w->canonical_name;
  (*this)[Label::source_version] = w->canonical_revision;
  (*this)[Label::source_cluster] = w->cluster_id;
}

void TrafficLabels::set_destination(const workload::Workload* w) {
  if (!w) return;
  (*this)[Label::destination_workload] = w->workload_name;
  (*this)[Label::destination_canonical_service] = w->canonical_name;
  (*this)[Label::destination_canonical_revision] = w->canonical_revision;
  (*this)[Label::destination_workload_namespace] = w->namespace_;
  (*this)[Label::destination_principal] = w->spiffe_id();
  (*this)[Label::destination_app] = w->canonical_name;
  (*this)[Label::destination_version] = w->canonical_revision;
  (*this)[Label::destination_cluster] = w->cluster_id;
}

void TrafficLabels::set_service(const workload::Service* s) {
  if (!s) return;
  (*this)[Label::destination_service] = s->hostname;
  (*this)[Label::destination_service_namespace] = s->namespace_;
  (*this)[Label::destination_service_name] = s->name;
}

std::string TrafficLabels::key() const {
  // Each value with its length in front: no two label sets give the same key.
  std::string out;
  out += char('0' + int(reporter));
  out += char('0' + int(security));
  for (const std::string& v : values) {
    out += std::to_string(v.size());
    out += ':';
    out += v;
  }
  return out;
}

// ---- the table

TrafficTable::~TrafficTable() {
  for (TrafficSeries* s = head_.load(); s;) {
    TrafficSeries* next = s->next.load();
    delete s;
    s = next;
  }
}

void TrafficTable::configure(size_t max_series, uint64_t expiry_ns) {
  max_series_ = max_series;
  expiry_ns_ = expiry_ns;
}

TrafficSeries& TrafficTable::find_or_make(const TrafficLabels& labels, std::string key,
                                          uint64_t now_ns) {
  if (auto it = index_.find(key); it != index_.end()) return *it->second;
  auto* s = new TrafficSeries;
  s->labels = labels;
  s->key = key;
  s->id = next_id_++;
  s->touched_ns = now_ns;
  s->next.store(head_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  ++idle_;  // no connection yet; open() counts the first
  index_.emplace(std::move(key), s);
  // Complete before it is reachable: a scrape that loads the new head sees all of it.
  head_.store(s, std::memory_order_release);
  published.add();
  return *s;
}

TrafficSeries& TrafficTable::open(const TrafficLabels& labels, uint64_t now_ns,
                                  bool& first_overflow) {
  first_overflow = false;
  std::string key = labels.key();
  TrafficSeries* s = nullptr;
  if (auto it = index_.find(key); it != index_.end()) {
    s = it->second;
  } else if (index_.size() < max_series_) {
    s = &find_or_make(labels, std::move(key), now_ns);
  } else {
    // Over the cap: the label set of its reporter and security policy with nothing else
    // known. At most four such series, allowed beyond the cap.
    TrafficLabels overflow;
    overflow.reporter = labels.reporter;
    overflow.security = labels.security;
    s = &find_or_make(overflow, overflow.key(), now_ns);
    overflowed.add();
    first_overflow = !overflow_seen_;
    overflow_seen_ = true;
  }
  if (s->open++ == 0) --idle_;
  s->touched_ns = now_ns;
  s->opened.add();
  return *s;
}

void TrafficTable::close(TrafficSeries& s, ResponseFlag flag, uint64_t now_ns) {
  s.closed[size_t(flag)].add();
  if (flag != ResponseFlag::none) s.failed[size_t(flag)].add();
  if (--s.open == 0) ++idle_;
  s.touched_ns = now_ns;
}

bool TrafficTable::expire(uint64_t now_ns) {
  if (!idle_) return true;
  std::unique_lock lock(list_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return false;  // a scrape walks the list: next sweep
  std::atomic<TrafficSeries*>* link = &head_;
  while (TrafficSeries* s = link->load(std::memory_order_relaxed)) {
    // (A series touched after `now_ns` was read is as fresh as can be, not 2^64 ns old.)
    if (s->open || now_ns < s->touched_ns + expiry_ns_) {
      link = &s->next;
      continue;
    }
    link->store(s->next.load(std::memory_order_relaxed), std::memory_order_release);
    index_.erase(s->key);
    --idle_;
    published.sub();
    delete s;
  }
  return true;
}

// ---- what the scrapes remember

void TrafficValues::add(const TrafficValues& o) {
  opened += o.opened;
  received += o.received;
  sent += o.sent;
  for (size_t f = 0; f < kResponseFlags; ++f) {
    closed[f] += o.closed[f];
    failed[f] += o.failed[f];
  }
}

TrafficValues TrafficValues::of(const TrafficSeries& s) {
  TrafficValues v;
  v.opened = s.opened.value();
  v.received = s.received_bytes.value();
  v.sent = s.sent_bytes.value();
  for (size_t f = 0; f < kResponseFlags; ++f) {
    v.closed[f] = s.closed[f].value();
    v.failed[f] = s.failed[f].value();
  }
  return v;
}

// ---- the text format

void append_label_value(std::string& out, std::string_view value) {
  for (const char c : value) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
}

namespace {

void append_family(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

// The traffic series of every worker, summed per label set.
struct TrafficSum {
  std::string head;  // reporter="..",...,request_protocol="tcp",response_flags="
  std::string tail;  // ",connection_security_policy=".."
  TrafficValues values;
};

TrafficSum start_sum(const TrafficLabels& labels) {
  TrafficSum sum;
  std::string& h = sum.head;
  h += "reporter=\"";
  h += to_string(labels.reporter);
  h += '"';
  for (size_t i = 0; i < kLabels; ++i) {
    h += ',';
    h += label_name(Label(i));
    h += "=\"";
    append_label_value(h, labels.values[i].empty() ? "unknown" : labels.values[i]);
    h += '"';
  }
  h += ",request_protocol=\"tcp\",response_flags=\"";
  sum.tail = fmt::format("\",connection_security_policy=\"{}\"", to_string(labels.security));
  return sum;
}

void append_sample(std::string& out, std::string_view name, const TrafficSum& s, ResponseFlag flag,
                   uint64_t value) {
  fmt::format_to(std::back_inserter(out), "{}{{{}{}{}}} {}\n", name, s.head, to_string(flag),
                 s.tail, value);
}

void render_traffic(std::string& out, const std::vector<const WorkerMetrics*>& workers,
                    TrafficHistory& history) {
  std::map<std::string, TrafficSum> sums;  // by series key: the same label set in every worker
  decltype(history.last) seen;
  for (const WorkerMetrics* w : workers) {
    w->traffic.for_each([&](const TrafficSeries& s) {
      auto it = sums.find(s.key);
      if (it == sums.end()) it = sums.emplace(s.key, start_sum(s.labels)).first;
      const TrafficValues v = TrafficValues::of(s);
      it->second.values.add(v);
      seen[{w, s.key}] = {s.id, v};
    });
  }
  // A series seen last time and gone now (or made again since) ended: its counts go on
  // counting for its label set while that lives.
  for (const auto& [where, last] : history.last) {
    const auto now = seen.find(where);
    if (now == seen.end() || now->second.id != last.id)
      history.retired[where.second].add(last.values);
  }
  for (auto it = history.retired.begin(); it != history.retired.end();) {
    const auto sum = sums.find(it->first);
    if (sum == sums.end()) {
      it = history.retired.erase(it);  // the label set lives nowhere: it ends
      continue;
    }
    sum->second.values.add(it->second);
    ++it;
  }
  history.last = std::move(seen);
  struct Family {
    std::string_view name, help;
    uint64_t TrafficValues::*field;
  };
  const Family single[] = {
      {"istio_tcp_connections_opened_total", "The total number of TCP connections opened",
       &TrafficValues::opened},
      {"istio_tcp_received_bytes_total",
       "The size of total bytes received during request in case of a TCP connection",
       &TrafficValues::received},
      {"istio_tcp_sent_bytes_total",
       "The size of total bytes sent during response in case of a TCP connection",
       &TrafficValues::sent},
  };
  for (const Family& f : single) {
    append_family(out, f.name, "counter", f.help);
    for (const auto& [key, sum] : sums)
      append_sample(out, f.name, sum, ResponseFlag::none, sum.values.*f.field);
  }
  // Closed and failed: one sample per response flag that has a count (ztunnel makes a series
  // only when something is counted in it).
  const std::string_view closed = "istio_tcp_connections_closed_total";
  append_family(out, closed, "counter", "The total number of TCP connections closed");
  for (const auto& [key, sum] : sums)
    for (size_t f = 0; f < kResponseFlags; ++f)
      if (sum.values.closed[f])
        append_sample(out, closed, sum, ResponseFlag(f), sum.values.closed[f]);
  const std::string_view failed = "istio_tcp_connections_failed_total";
  append_family(out, failed, "counter",
                "The total number of TCP connections that failed to establish (unstable)");
  for (const auto& [key, sum] : sums)
    for (size_t f = 0; f < kResponseFlags; ++f)
      if (sum.values.failed[f])
        append_sample(out, failed, sum, ResponseFlag(f), sum.values.failed[f]);
}

constexpr std::array<std::string_view, kBufferClasses> kClassNames = {"small", "medium", "large"};

// One family of per-worker values: f(const WorkerMetrics&, out, prefix) appends the samples of
// one worker, `prefix` being `name{worker="N"`.
template <typename F>
void per_worker(std::string& out, const std::vector<const WorkerMetrics*>& workers,
                std::string_view name, std::string_view type, std::string_view help, F&& f) {
  append_family(out, name, type, help);
  for (const WorkerMetrics* w : workers) {
    const std::string prefix = fmt::format("{}{{worker=\"{}\"", name, w->worker);
    f(*w, out, prefix);
  }
}

void render_own(std::string& out, const std::vector<const WorkerMetrics*>& workers) {
  auto one = [](auto value) {
    return [value](const WorkerMetrics& w, std::string& o, const std::string& prefix) {
      fmt::format_to(std::back_inserter(o), "{}}} {}\n", prefix, value(w));
    };
  };
  auto ring_value = [](const Counter RingCounters::*field) {
    return [field](const WorkerMetrics& w) { return w.ring ? (w.ring->*field).value() : 0; };
  };
  per_worker(out, workers, "ringtunnel_io_uring_enter_total", "counter",
             "io_uring_enter system calls of the worker's ring (submitting SQEs, waiting for "
             "completions, or both).",
             one(ring_value(&RingCounters::enters)));
  per_worker(out, workers, "ringtunnel_sqes_submitted_total", "counter",
             "Submission queue entries the worker queued for the kernel.",
             one(ring_value(&RingCounters::sqes)));
  per_worker(out, workers, "ringtunnel_cqes_reaped_total", "counter",
             "Completion queue entries the worker handled.", one(ring_value(&RingCounters::cqes)));

  using PoolField = std::array<Counter, kBufferClasses> PoolCounters::*;
  auto per_class = [](PoolField field) {
    return [field](const WorkerMetrics& w, std::string& o, const std::string& prefix) {
      const std::pair<std::string_view, const PoolCounters*> pools[] = {{"data", w.data_pool},
                                                                        {"tls", w.tls_pool}};
      for (const auto& [pool, counters] : pools) {
        if (!counters) continue;
        for (size_t c = 0; c < kBufferClasses; ++c)
          fmt::format_to(std::back_inserter(o), "{},pool=\"{}\",class=\"{}\"}} {}\n", prefix, pool,
                         kClassNames[c], (counters->*field)[c].value());
      }
    };
  };
  per_worker(out, workers, "ringtunnel_receives_total", "counter",
             "Receives that filled a provided buffer, by pool (data: relays and HBONE streams; "
             "tls: HBONE connections) and size class (small, medium, large of --buffer-sizes).",
             per_class(&PoolCounters::receives));
  per_worker(out, workers, "ringtunnel_receive_no_buffers_total", "counter",
             "Receives that ended with -ENOBUFS (the class had no free buffer; re-armed once "
             "buffers come back), by pool and size class.",
             per_class(&PoolCounters::no_buffers));
  per_worker(out, workers, "ringtunnel_buffers_in_use", "gauge",
             "Provided receive buffers taken by a completion and not yet given back to the "
             "kernel, by pool and size class.",
             per_class(&PoolCounters::in_use));
  per_worker(out, workers, "ringtunnel_registered_buffer_bytes", "gauge",
             "Bytes of receive buffers provided to the worker's ring so far (the pool grows "
             "with demand, up to --buffer-sizes x --buffer-ring-entries).",
             one([](const WorkerMetrics& w) { return w.registered_bytes.value(); }));
  per_worker(out, workers, "ringtunnel_tls_handshakes_total", "counter",
             "TLS handshakes of HBONE connections that completed, by role (client: outbound, "
             "server: inbound).",
             [](const WorkerMetrics& w, std::string& o, const std::string& prefix) {
               fmt::format_to(std::back_inserter(o), "{},role=\"client\"}} {}\n", prefix,
                              w.handshakes[0].value());
               fmt::format_to(std::back_inserter(o), "{},role=\"server\"}} {}\n", prefix,
                              w.handshakes[1].value());
             });
  per_worker(out, workers, "ringtunnel_tls_handshake_failures_total", "counter",
             "TLS handshakes of HBONE connections that failed, by reason (tls: refused by TLS, "
             "e.g. a certificate or identity; timeout; peer_closed; socket: a socket error; "
             "other: drained or closed for overload).",
             [](const WorkerMetrics& w, std::string& o, const std::string& prefix) {
               for (size_t r = 0; r < kHandshakeFailures; ++r)
                 fmt::format_to(std::back_inserter(o), "{},reason=\"{}\"}} {}\n", prefix,
                                to_string(HandshakeFailure(r)), w.handshake_failures[r].value());
             });
  per_worker(out, workers, "ringtunnel_h2_streams_open", "gauge",
             "HTTP/2 CONNECT streams (HBONE) open in the worker, both directions.",
             one([](const WorkerMetrics& w) { return w.streams_open.value(); }));
  per_worker(out, workers, "ringtunnel_hbone_pooled_connections", "gauge",
             "Outbound HBONE connections in the worker's pool.",
             one([](const WorkerMetrics& w) { return w.pooled_connections.value(); }));
  per_worker(out, workers, "ringtunnel_metrics_series", "gauge",
             "TCP traffic series the worker keeps (--metrics-max-series bounds them).",
             one([](const WorkerMetrics& w) { return w.traffic.published.value(); }));
  per_worker(out, workers, "ringtunnel_metrics_series_overflow_total", "counter",
             "Connections counted with unknown workload labels because the worker already kept "
             "--metrics-max-series series.",
             one([](const WorkerMetrics& w) { return w.traffic.overflowed.value(); }));
}

}  // namespace

void MetricsRegistry::add(const WorkerMetrics& worker) {
  std::lock_guard lock(mutex_);
  workers_.push_back(&worker);
}

void MetricsRegistry::remove(const WorkerMetrics& worker) {
  std::lock_guard lock(mutex_);
  std::erase(workers_, &worker);
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  render_traffic(out, workers_, history_);
  render_own(out, workers_);
  return out;
}

}  // namespace ringtunnel::stats

// The metrics: counters, the traffic series table (cap, expiry, the scrape's lock), and the text
// a scrape renders.
#include "ringtunnel/stats/metrics.h"

#include <atomic>
#include <future>
#include <string>
#include <thread>

#include <doctest/doctest.h>

#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/ring.h"
#include "ringtunnel/workload/model.h"

using namespace ringtunnel;
using stats::Label;
using stats::ResponseFlag;

namespace {

constexpr uint64_t kSec = 1'000'000'000;

stats::TrafficLabels labels_for(std::string_view workload, stats::Reporter reporter) {
  stats::TrafficLabels l;
  l.reporter = reporter;
  l[Label::source_workload] = std::string(workload);
  return l;
}

size_t count_of(const std::string& text, std::string_view needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
    ++n;
  return n;
}

// The lines of `text` that start with `prefix`.
std::vector<std::string> lines_with(const std::string& text, std::string_view prefix) {
  std::vector<std::string> out;
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at);
    const std::string line = text.substr(at, nl - at);
    if (line.starts_with(prefix)) out.push_back(line);
    at = nl == std::string::npos ? text.size() : nl + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("metrics: a counter adds, subtracts and is set by its one writer") {
  stats::Counter c;
  CHECK(c.value() == 0);
  c.add();
  c.add(41);
  CHECK(c.value() == 42);
  c.sub(2);
  CHECK(c.value() == 40);
  c.set(7);
  CHECK(c.value() == 7);
}

TEST_CASE("metrics: label values are escaped as the text format wants") {
  std::string out;
  stats::append_label_value(out, "a\\b\"c\nd spiffe://x/ns/y");
  CHECK(out == "a\\\\b\\\"c\\nd spiffe://x/ns/y");
}

TEST_CASE("metrics: the key of a label set tells apart values that concatenate alike") {
  // (Each built from a std::string: GCC 12 warns wrongly about assigning a literal here.)
  stats::TrafficLabels a, b;
  a[Label::source_workload] = std::string("ab");
  a[Label::source_canonical_service] = std::string("c");
  b[Label::source_workload] = std::string("a");
  b[Label::source_canonical_service] = std::string("bc");
  CHECK(a.key() != b.key());
  stats::TrafficLabels c = a;
  CHECK(a.key() == c.key());
  c.security = stats::SecurityPolicy::mutual_tls;
  CHECK(a.key() != c.key());
  c = a;
  c.reporter = stats::Reporter::destination;
  CHECK(a.key() != c.key());
}

TEST_CASE("metrics: labels from workloads and services, ztunnel's way") {
  workload::Workload w;
  w.name = "pod-1";
  w.workload_name = "web";
  w.namespace_ = "shop";
  w.service_account = "web-sa";
  w.canonical_name = "web-app";
  w.canonical_revision = "v2";
  w.cluster_id = "c1";
  workload::Service s;
  s.name = "web";
  s.namespace_ = "shop";
  s.hostname = "web.shop.svc.cluster.local";
  stats::TrafficLabels l;
  l.set_source(&w);
  l.set_destination(&w);
  l.set_service(&s);
  l.set_source(nullptr);  // nothing
  CHECK(l[Label::source_workload] == "web");
  CHECK(l[Label::source_canonical_service] == "web-app");
  CHECK(l[Label::source_canonical_revision] == "v2");
  CHECK(l[Label::source_workload_namespace] == "shop");
  CHECK(l[Label::source_principal].empty());  // only what TLS proved
  CHECK(l[Label::source_app] == "web-app");
  CHECK(l[Label::source_version] == "v2");
  CHECK(l[Label::source_cluster] == "c1");
  CHECK(l[Label::destination_workload] == "web");
  CHECK(l[Label::destination_principal] == "spiffe://cluster.local/ns/shop/sa/web-sa");
  CHECK(l[Label::destination_service] == "web.shop.svc.cluster.local");
  CHECK(l[Label::destination_service_namespace] == "shop");
  CHECK(l[Label::destination_service_name] == "web");
}

TEST_CASE("metrics: a connection opens and closes in its series; flags count closed and failed") {
  stats::TrafficTable t;
  bool first = true;
  stats::TrafficSeries& a = t.open(labels_for("a", stats::Reporter::source), 1, first);
  CHECK_FALSE(first);
  stats::TrafficSeries& again = t.open(labels_for("a", stats::Reporter::source), 2, first);
  CHECK(&a == &again);
  CHECK(t.size() == 1);
  CHECK(t.idle() == 0);
  CHECK(a.opened.value() == 2);
  CHECK(a.open == 2);
  t.close(a, ResponseFlag::none, 3);
  t.close(a, ResponseFlag::deny, 4);
  CHECK(a.closed[size_t(ResponseFlag::none)].value() == 1);
  CHECK(a.closed[size_t(ResponseFlag::deny)].value() == 1);
  CHECK(a.failed[size_t(ResponseFlag::none)].value() == 0);
  CHECK(a.failed[size_t(ResponseFlag::deny)].value() == 1);
  CHECK(t.idle() == 1);
  CHECK(t.published.value() == 1);
  stats::TrafficSeries& b = t.open(labels_for("a", stats::Reporter::destination), 5, first);
  CHECK(&b != &a);
  CHECK(t.published.value() == 2);
}

TEST_CASE("metrics: beyond max_series a connection goes to its reporter's overflow series") {
  stats::TrafficTable t;
  t.configure(2, 60 * kSec);
  bool first = false;
  t.open(labels_for("a", stats::Reporter::source), 1, first);
  t.open(labels_for("b", stats::Reporter::source), 1, first);
  CHECK_FALSE(first);
  stats::TrafficSeries& o1 = t.open(labels_for("c", stats::Reporter::source), 1, first);
  CHECK(first);  // logged once by the caller
  stats::TrafficSeries& o2 = t.open(labels_for("d", stats::Reporter::source), 1, first);
  CHECK_FALSE(first);
  CHECK(&o1 == &o2);
  CHECK(o1.labels[Label::source_workload].empty());
  CHECK(o1.labels.reporter == stats::Reporter::source);
  stats::TrafficSeries& o3 = t.open(labels_for("e", stats::Reporter::destination), 1, first);
  CHECK(&o3 != &o1);
  CHECK(o3.labels.reporter == stats::Reporter::destination);
  CHECK(t.overflowed.value() == 3);
  CHECK(t.size() == 4);  // the cap, and an overflow series per reporter
  // A label set already kept still gets its own series.
  stats::TrafficSeries& a = t.open(labels_for("a", stats::Reporter::source), 1, first);
  CHECK(a.labels[Label::source_workload] == "a");
  CHECK(t.overflowed.value() == 3);
}

TEST_CASE("metrics: a series with no open connection expires once untouched for the expiry") {
  stats::TrafficTable t;
  t.configure(100, 10 * kSec);
  bool first;
  stats::TrafficSeries& gone = t.open(labels_for("gone", stats::Reporter::source), 1 * kSec, first);
  stats::TrafficSeries& open = t.open(labels_for("open", stats::Reporter::source), 1 * kSec, first);
  t.close(gone, ResponseFlag::none, 2 * kSec);
  // A sweep whose time was taken before the close (the loop's time, taken after its wait).
  CHECK(t.expire(1 * kSec));
  CHECK(t.size() == 2);
  CHECK(t.expire(11 * kSec));
  CHECK(t.size() == 2);  // 9 s untouched
  CHECK(t.expire(12 * kSec));
  CHECK(t.size() == 1);
  CHECK(t.published.value() == 1);
  CHECK(t.idle() == 0);
  CHECK(t.expire(1000 * kSec));  // an open connection keeps its series
  CHECK(t.size() == 1);
  size_t walked = 0;
  t.for_each([&](const stats::TrafficSeries& s) {
    CHECK(&s == &open);
    ++walked;
  });
  CHECK(walked == 1);
  // The label set comes back: a new series, from 0.
  stats::TrafficSeries& back =
      t.open(labels_for("gone", stats::Reporter::source), 1001 * kSec, first);
  CHECK(back.opened.value() == 1);
  CHECK(back.closed[0].value() == 0);
}

TEST_CASE("metrics: the worker never waits for a scrape: expire() gives up while one walks") {
  stats::TrafficTable t;
  t.configure(100, 1);
  bool first;
  t.close(t.open(labels_for("x", stats::Reporter::source), 1, first), ResponseFlag::none, 1);
  std::promise<void> walking, done;
  std::shared_future<void> release = done.get_future().share();
  std::thread scrape([&] {
    t.for_each([&](const stats::TrafficSeries&) {
      walking.set_value();
      release.wait();
    });
  });
  walking.get_future().wait();
  CHECK_FALSE(t.expire(100));  // returns at once
  CHECK(t.size() == 1);
  // Meanwhile the worker still opens connections in new series.
  t.open(labels_for("y", stats::Reporter::source), 100, first);
  done.set_value();
  scrape.join();
  CHECK(t.expire(100));
  CHECK(t.size() == 1);  // x went; y is open
}

TEST_CASE("metrics: a scrape sums the workers per label set, in the text format") {
  stats::WorkerMetrics w0(0), w1(1);
  bool first;
  stats::TrafficLabels l = labels_for("web", stats::Reporter::source);
  l[Label::destination_principal] = std::string("spiffe://td/ns/a\"b/sa/c");
  l.security = stats::SecurityPolicy::mutual_tls;
  stats::TrafficSeries& s0 = w0.traffic.open(l, 1, first);
  stats::TrafficSeries& s1 = w1.traffic.open(l, 1, first);
  s0.received_bytes.add(100);
  s0.sent_bytes.add(7);
  s1.received_bytes.add(23);
  w0.traffic.close(s0, ResponseFlag::none, 2);
  w1.traffic.close(s1, ResponseFlag::connect, 2);
  stats::TrafficSeries& other =
      w1.traffic.open(labels_for("db", stats::Reporter::destination), 1, first);
  (void)other;

  ring::RingCounters ring0;
  ring0.enters.add(5);
  ring0.sqes.add(9);
  ring0.cqes.add(8);
  w0.ring = &ring0;
  ring::BufferPool pool;
  pool.taken(1);
  pool.taken(1);
  pool.ran_dry(2);
  w0.data_pool = &pool.counters();
  w0.handshakes[1].add(3);
  w1.handshake_failures[size_t(stats::HandshakeFailure::timeout)].add();
  w1.streams_open.set(4);

  stats::MetricsRegistry registry;
  registry.add(w0);
  registry.add(w1);
  const std::string text = registry.render();
  INFO(text);

  const std::string head =
      "{reporter=\"source\",source_workload=\"web\",source_canonical_service=\"unknown\","
      "source_canonical_revision=\"unknown\",source_workload_namespace=\"unknown\","
      "source_principal=\"unknown\",source_app=\"unknown\",source_version=\"unknown\","
      "source_cluster=\"unknown\",destination_service=\"unknown\","
      "destination_service_namespace=\"unknown\",destination_service_name=\"unknown\","
      "destination_workload=\"unknown\",destination_canonical_service=\"unknown\","
      "destination_canonical_revision=\"unknown\",destination_workload_namespace=\"unknown\","
      "destination_principal=\"spiffe://td/ns/a\\\"b/sa/c\",destination_app=\"unknown\","
      "destination_version=\"unknown\",destination_cluster=\"unknown\",request_protocol=\"tcp\","
      "response_flags=\"";
  const std::string tail = "\",connection_security_policy=\"mutual_tls\"}";
  CHECK(count_of(text, "istio_tcp_connections_opened_total" + head + "-" + tail + " 2\n") == 1);
  CHECK(count_of(text, "istio_tcp_received_bytes_total" + head + "-" + tail + " 123\n") == 1);
  CHECK(count_of(text, "istio_tcp_sent_bytes_total" + head + "-" + tail + " 7\n") == 1);
  CHECK(count_of(text, "istio_tcp_connections_closed_total" + head + "-" + tail + " 1\n") == 1);
  CHECK(count_of(text, "istio_tcp_connections_closed_total" + head + "CONNECT" + tail + " 1\n") ==
        1);
  CHECK(count_of(text, "istio_tcp_connections_failed_total" + head + "CONNECT" + tail + " 1\n") ==
        1);
  // No failed sample for "-"; the other worker's other label set is there once per family.
  CHECK(count_of(text, "istio_tcp_connections_failed_total" + head + "-") == 0);
  CHECK(lines_with(text, "istio_tcp_connections_opened_total{").size() == 2);
  CHECK(lines_with(text, "istio_tcp_connections_closed_total{").size() == 2);
  CHECK(lines_with(text, "istio_tcp_connections_failed_total{").size() == 1);

  // One HELP and one TYPE line per family, before its samples.
  for (const char* family :
       {"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total",
        "istio_tcp_connections_failed_total", "istio_tcp_received_bytes_total",
        "istio_tcp_sent_bytes_total", "ringtunnel_io_uring_enter_total",
        "ringtunnel_sqes_submitted_total", "ringtunnel_cqes_reaped_total",
        "ringtunnel_receives_total", "ringtunnel_receive_no_buffers_total",
        "ringtunnel_tls_handshakes_total", "ringtunnel_tls_handshake_failures_total",
        "ringtunnel_metrics_series_overflow_total"}) {
    CAPTURE(family);
    CHECK(lines_with(text, std::string("# TYPE ") + family + " counter").size() == 1);
    CHECK(lines_with(text, std::string("# HELP ") + family + " ").size() == 1);
    CHECK(text.find(std::string("# TYPE ") + family) < text.find(std::string(family) + "{"));
  }
  for (const char* family : {"ringtunnel_buffers_in_use", "ringtunnel_registered_buffer_bytes",
                             "ringtunnel_h2_streams_open", "ringtunnel_hbone_pooled_connections",
                             "ringtunnel_metrics_series"}) {
    CAPTURE(family);
    CHECK(lines_with(text, std::string("# TYPE ") + family + " gauge").size() == 1);
  }
  CHECK(count_of(text,
                 "# HELP istio_tcp_connections_opened_total The total number of TCP "
                 "connections opened\n# TYPE istio_tcp_connections_opened_total counter\n") == 1);

  // ringtunnel's own, per worker.
  CHECK(count_of(text, "ringtunnel_io_uring_enter_total{worker=\"0\"} 5\n") == 1);
  CHECK(count_of(text, "ringtunnel_io_uring_enter_total{worker=\"1\"} 0\n") == 1);
  CHECK(count_of(text, "ringtunnel_sqes_submitted_total{worker=\"0\"} 9\n") == 1);
  CHECK(count_of(text, "ringtunnel_cqes_reaped_total{worker=\"0\"} 8\n") == 1);
  CHECK(count_of(text,
                 "ringtunnel_receives_total{worker=\"0\",pool=\"data\",class=\"medium\"} 2\n") ==
        1);
  CHECK(count_of(text,
                 "ringtunnel_buffers_in_use{worker=\"0\",pool=\"data\",class=\"medium\"} 2\n") ==
        1);
  CHECK(count_of(text,
                 "ringtunnel_receive_no_buffers_total{worker=\"0\",pool=\"data\",class=\"large\"} "
                 "1\n") == 1);
  CHECK(count_of(text, "ringtunnel_tls_handshakes_total{worker=\"0\",role=\"server\"} 3\n") == 1);
  CHECK(count_of(text,
                 "ringtunnel_tls_handshake_failures_total{worker=\"1\",reason=\"timeout\"} 1\n") ==
        1);
  CHECK(count_of(text, "ringtunnel_h2_streams_open{worker=\"1\"} 4\n") == 1);
  CHECK(count_of(text, "ringtunnel_metrics_series{worker=\"1\"} 2\n") == 1);

  // Every line is a comment or a sample ending in a number.
  for (size_t at = 0; at < text.size();) {
    const size_t nl = text.find('\n', at);
    REQUIRE(nl != std::string::npos);  // ends with a line feed
    const std::string line = text.substr(at, nl - at);
    CAPTURE(line);
    if (!line.starts_with("# ")) {
      const size_t space = line.rfind(' ');
      REQUIRE(space != std::string::npos);
      CHECK(line.find_first_not_of("0123456789", space + 1) == std::string::npos);
    }
    at = nl + 1;
  }

  registry.remove(w1);
  CHECK(registry.render().find("worker=\"1\"") == std::string::npos);
}

TEST_CASE("metrics: a label set's sums never go down while it lives, whichever worker expires") {
  stats::WorkerMetrics w0(0), w1(1);
  w0.traffic.configure(100, 10 * kSec);
  w1.traffic.configure(100, 10 * kSec);
  bool first;
  const stats::TrafficLabels l = labels_for("web", stats::Reporter::source);
  stats::TrafficSeries& a = w0.traffic.open(l, 1 * kSec, first);
  a.received_bytes.add(1000);
  w0.traffic.close(a, ResponseFlag::none, 2 * kSec);
  stats::TrafficSeries& b = w1.traffic.open(l, 1 * kSec, first);  // stays open
  b.received_bytes.add(5);
  stats::MetricsRegistry registry;
  registry.add(w0);
  registry.add(w1);
  const auto received = [&]() {
    const auto lines = lines_with(registry.render(), "istio_tcp_received_bytes_total{");
    REQUIRE(lines.size() == 1);
    return std::stoull(lines[0].substr(lines[0].rfind(' ') + 1));
  };
  CHECK(received() == 1005);
  // Worker 0's series expires; worker 1's keeps the label set alive: the sum stays.
  CHECK(w0.traffic.expire(100 * kSec));
  CHECK(w0.traffic.size() == 0);
  CHECK(received() == 1005);
  b.received_bytes.add(1);
  CHECK(received() == 1006);
  // The label set comes back on worker 0 (a new series, from 0): still counted on top.
  stats::TrafficSeries& again = w0.traffic.open(l, 101 * kSec, first);
  again.received_bytes.add(10);
  CHECK(received() == 1016);
  // Both end: the label set is gone, and so is what was kept for it.
  w0.traffic.close(again, ResponseFlag::none, 102 * kSec);
  w1.traffic.close(b, ResponseFlag::none, 102 * kSec);
  CHECK(w0.traffic.expire(1000 * kSec));
  CHECK(w1.traffic.expire(1000 * kSec));
  CHECK(lines_with(registry.render(), "istio_tcp_received_bytes_total{").empty());
  // Made again after that: from 0.
  w1.traffic.open(l, 1001 * kSec, first).received_bytes.add(3);
  CHECK(received() == 3);
}

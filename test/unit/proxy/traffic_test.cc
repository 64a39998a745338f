// A connection's place in the traffic metrics: its labels, and how its end shows.
#include "ringtunnel/proxy/traffic.h"

#include <cerrno>

#include <doctest/doctest.h>

#include "proxy_fixture.h"
#include "ringtunnel/workload/model.h"

using namespace ringtunnel;
using namespace proxy_test;
using proxy::EndReason;
using stats::Label;
using stats::ResponseFlag;

TEST_CASE("traffic: how each end shows in response_flags") {
  CHECK(proxy::response_flag(EndReason::closed) == ResponseFlag::none);
  CHECK(proxy::response_flag(EndReason::client_reset) == ResponseFlag::none);
  CHECK(proxy::response_flag(EndReason::target_reset) == ResponseFlag::none);
  CHECK(proxy::response_flag(EndReason::drain_timeout) == ResponseFlag::none);
  CHECK(proxy::response_flag(EndReason::denied) == ResponseFlag::deny);
  for (EndReason r : {EndReason::connect_refused, EndReason::connect_timeout,
                      EndReason::connect_error, EndReason::refused, EndReason::bad_request,
                      EndReason::peer_error, EndReason::error, EndReason::overload}) {
    CAPTURE(proxy::to_string(r));
    CHECK(proxy::response_flag(r) == ResponseFlag::connect);
  }
  CHECK(stats::to_string(ResponseFlag::none) == "-");
  CHECK(stats::to_string(ResponseFlag::deny) == "DENY");
  CHECK(stats::to_string(ResponseFlag::connect) == "CONNECT");
}

TEST_CASE("traffic: outbound and inbound labels, principals only with mutual TLS") {
  Fixture f(make_config({"127.0.0.1:15001=tcp://127.0.0.1:9"}), {});
  workload::Workload dst;
  dst.workload_name = "db";
  dst.namespace_ = "data";
  dst.service_account = "db-sa";
  stats::TrafficLabels out =
      proxy::outbound_labels(*f.ctx, nullptr, nullptr, nullptr, true, "spiffe://td/ns/x/sa/y");
  CHECK(out.reporter == stats::Reporter::source);
  CHECK(out.security == stats::SecurityPolicy::mutual_tls);
  CHECK(out[Label::destination_principal] == "spiffe://td/ns/x/sa/y");
  out = proxy::outbound_labels(*f.ctx, nullptr, &dst, nullptr, true, "spiffe://td/ns/x/sa/y");
  CHECK(out[Label::destination_principal] == "spiffe://cluster.local/ns/data/sa/db-sa");
  CHECK(out[Label::destination_workload] == "db");
  out = proxy::outbound_labels(*f.ctx, nullptr, nullptr, nullptr, false, "spiffe://td/ns/x/sa/y");
  CHECK(out.security == stats::SecurityPolicy::unknown);
  CHECK(out[Label::destination_principal].empty());
  CHECK(out[Label::source_principal].empty());

  stats::TrafficLabels in =
      proxy::inbound_labels(*f.ctx, nullptr, &dst, nullptr, true, "spiffe://td/ns/p/sa/q");
  CHECK(in.reporter == stats::Reporter::destination);
  CHECK(in[Label::source_principal] == "spiffe://td/ns/p/sa/q");
  CHECK(in[Label::destination_workload_namespace] == "data");
  in = proxy::inbound_labels(*f.ctx, nullptr, nullptr, nullptr, false, "spiffe://td/ns/p/sa/q");
  CHECK(in[Label::source_principal].empty());
}

TEST_CASE("traffic: a relay whose target refuses is closed and failed with CONNECT") {
  Fixture f(make_config({"127.0.0.1:15001=tcp://127.0.0.1:9"}), {features(false, true)});
  LoopbackPair pair;
  REQUIRE(f.ctx->budgets.admit_connection(false, 0));
  proxy::open_relay(*f.ctx, pair.accepted, 0);
  io_uring_sqe* connect = f.open_op(proxy::Owner::relay, proxy::Op::connect);
  REQUIRE(connect);
  f.ring.complete_linked(connect, -ECONNREFUSED);
  f.finish_all();
  REQUIRE(f.objects().relays.live() == 0);
  size_t series = 0;
  f.ctx->metrics.traffic.for_each([&](const stats::TrafficSeries& s) {
    ++series;
    CHECK(s.opened.value() == 1);
    CHECK(s.open == 0);
    CHECK(s.closed[size_t(ResponseFlag::none)].value() == 0);
    CHECK(s.closed[size_t(ResponseFlag::connect)].value() == 1);
    CHECK(s.failed[size_t(ResponseFlag::connect)].value() == 1);
  });
  CHECK(series == 1);
  CHECK(f.ctx->metrics.traffic.idle() == 1);
}

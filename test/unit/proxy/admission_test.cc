#include "ringtunnel/proxy/admission.h"

#include <doctest/doctest.h>

#include "ringtunnel/config/flags.h"
#include "ringtunnel/workload/local_config.h"
#include "ringtunnel/workload/state.h"

using namespace ringtunnel;
using proxy::admit;
using proxy::covers;
using proxy::Verdict;

namespace {

config::Config config_of(std::vector<std::string_view> args) {
  const config::FlagsResult r = config::parse_flags(args);
  REQUIRE_MESSAGE(r.action == config::FlagsResult::Action::run, r.error);
  return r.config;
}

net::Endpoint endpoint(std::string_view text) {
  net::Endpoint e;
  REQUIRE_MESSAGE(net::parse_endpoint(text, e) == "", text);
  return e;
}

tls::SpiffeId id(std::string td, std::string sa = "node-a") {
  return {std::move(td), "default", std::move(sa)};
}

const tls::SpiffeId kOwn = id("cluster.local", "node-b");

}  // namespace

TEST_CASE("admission: every rule, in a table") {
  const config::Config c = config_of({
      "--hbone-listen", "127.0.0.1:15008",                   //
      "--forward",      "127.0.0.1:9001=tcp://127.0.0.1:1",  // inside an allowed range
      "--forward",      "[::]:16000=tcp://127.0.0.1:1",      // wildcard, IPv6
      "--forward",      "0.0.0.0:17000=tcp://127.0.0.1:1",   // wildcard, IPv4
      "--allow-dest",   "127.0.0.0/8:8080,9000-9010",        //
      "--allow-dest",   "[::1]/128:8080",                    //
      "--allow-dest",   "10.0.0.0/8",                        //
      "--allow-dest",   "0.0.0.0/0:443",                     // wide: never loopback
      "--allow-dest",   "[::]/0:443",                        //
      "--allow-dest",   "[fd00::]/64:80",                    //
      "--allow-dest",   "126.0.0.0/7:7000",                  // covers 127/8, is not in it
      "--allow-dest",   "[::]/127:7000",                     // covers ::1, is not ::1/128
  });
  struct Case {
    const char* target;
    Verdict want;
  };
  const Case cases[] = {
      // allowed
      {"127.0.0.1:8080", Verdict::allow},
      {"127.0.0.5:9000", Verdict::allow},
      {"127.0.0.5:9010", Verdict::allow},
      {"127.255.255.254:9005", Verdict::allow},
      {"[::1]:8080", Verdict::allow},
      {"[::ffff:127.0.0.1]:8080", Verdict::allow},  // mapped: the IPv4 entry applies
      {"10.9.8.7:1", Verdict::allow},
      {"10.9.8.7:65535", Verdict::allow},
      {"11.0.0.1:443", Verdict::allow},
      {"[::ffff:11.0.0.1]:443", Verdict::allow},
      {"255.255.255.254:443", Verdict::allow},
      {"[fd00::5]:80", Verdict::allow},
      {"[2001:db8::1]:443", Verdict::allow},
      {"[fec0::1]:443", Verdict::allow},   // site-local is not link-local
      {"127.0.0.2:9001", Verdict::allow},  // the listener is on 127.0.0.1 only
      {"126.1.2.3:7000", Verdict::allow},
      // port ranges
      {"127.0.0.1:8999", Verdict::not_allowed},
      {"127.0.0.1:9011", Verdict::not_allowed},
      {"127.0.0.1:8081", Verdict::not_allowed},
      {"11.0.0.1:80", Verdict::not_allowed},
      {"[fd00::5]:81", Verdict::not_allowed},
      {"[fd00:0:0:1::5]:80", Verdict::not_allowed},
      {"[::ffff:11.0.0.1]:80", Verdict::not_allowed},
      // loopback: wide entries do not cover it
      {"127.0.0.1:443", Verdict::not_allowed},
      {"[::1]:443", Verdict::not_allowed},
      {"[::ffff:127.0.0.1]:443", Verdict::not_allowed},
      {"[::ffff:127.0.0.1]:9011", Verdict::not_allowed},
      {"127.0.0.1:7000", Verdict::not_allowed},  // 126.0.0.0/7 covers it but is not loopback
      {"[::1]:7000", Verdict::not_allowed},      // [::]/127 likewise
      {"[::1]:9005", Verdict::not_allowed},      // the IPv4 loopback entry is not [::1]
      {"127.0.0.2:15008", Verdict::not_allowed},
      // never a destination
      {"0.0.0.0:8080", Verdict::bad_target},
      {"0.1.2.3:443", Verdict::bad_target},
      {"[::]:443", Verdict::bad_target},
      {"[::ffff:0.0.0.0]:443", Verdict::bad_target},
      {"169.254.1.1:443", Verdict::bad_target},
      {"169.254.169.254:80", Verdict::bad_target},
      {"[::ffff:169.254.1.1]:443", Verdict::bad_target},
      {"[fe80::1]:443", Verdict::bad_target},
      {"[febf:ffff::1]:443", Verdict::bad_target},
      {"224.0.0.1:443", Verdict::bad_target},
      {"239.255.255.255:443", Verdict::bad_target},
      {"[::ffff:224.0.0.1]:443", Verdict::bad_target},
      {"[ff02::1]:443", Verdict::bad_target},
      {"[ff05::2]:443", Verdict::bad_target},
      {"255.255.255.255:443", Verdict::bad_target},
      {"[::ffff:255.255.255.255]:443", Verdict::bad_target},
      // our own listeners, even where an entry allows the target
      {"127.0.0.1:15008", Verdict::own_listener},
      {"[::ffff:127.0.0.1]:15008", Verdict::own_listener},
      {"127.0.0.1:9001", Verdict::own_listener},
      {"[::ffff:127.0.0.1]:9001", Verdict::own_listener},
      {"10.1.1.1:16000", Verdict::own_listener},  // [::]:16000 has the port everywhere
      {"127.0.0.1:16000", Verdict::own_listener},
      {"[fd00::1]:16000", Verdict::own_listener},
      {"[::1]:17000", Verdict::own_listener},  // 0.0.0.0:17000 too
      {"10.1.1.1:17000", Verdict::own_listener},
  };
  for (const Case& k : cases) {
    CAPTURE(k.target);
    const proxy::Admission a = admit(endpoint(k.target), c, id("cluster.local"), kOwn);
    CHECK(to_string(a.verdict) == to_string(k.want));
    CHECK(a.reason.empty() == (k.want == Verdict::allow));
  }
}

TEST_CASE("admission: the peer's trust domain must be ours") {
  const config::Config c = config_of({"--hbone-listen", "127.0.0.1:15008", "--allow-dest",
                                      "127.0.0.0/8", "--allow-dest", "10.0.0.0/8"});
  const net::Endpoint ok = endpoint("10.0.0.1:80");
  CHECK(admit(ok, c, id("cluster.local", "anyone"), kOwn).verdict == Verdict::allow);
  const proxy::Admission foreign = admit(ok, c, id("other.td"), kOwn);
  CHECK(foreign.verdict == Verdict::foreign_trust_domain);
  CHECK(foreign.reason == "peer trust domain other.td is not ours (cluster.local)");
  CHECK(admit(ok, c, id("cluster.local.evil"), kOwn).verdict == Verdict::foreign_trust_domain);
  CHECK(admit(ok, c, id("local"), kOwn).verdict == Verdict::foreign_trust_domain);
  CHECK(admit(ok, c, tls::SpiffeId{}, kOwn).verdict == Verdict::foreign_trust_domain);
  // A foreign peer learns nothing about our listeners; a target that is never one stays 400.
  CHECK(admit(endpoint("127.0.0.1:15008"), c, id("other.td"), kOwn).verdict ==
        Verdict::foreign_trust_domain);
  CHECK(admit(endpoint("0.0.0.0:80"), c, id("other.td"), kOwn).verdict == Verdict::bad_target);
}

TEST_CASE("admission: no --allow-dest refuses everything, with a reason that says so") {
  const config::Config c = config_of({"--hbone-listen", "127.0.0.1:15008"});
  for (const char* t : {"10.0.0.1:80", "127.0.0.1:8080", "[::1]:80", "[2001:db8::1]:443"}) {
    CAPTURE(t);
    const proxy::Admission a = admit(endpoint(t), c, id("cluster.local"), kOwn);
    CHECK(a.verdict == Verdict::not_allowed);
    CHECK(a.reason == "no --allow-dest is given: every target is refused");
  }
  // The embedded default: its demo target only.
  const config::Config d = config_of({});
  CHECK(admit(endpoint("127.0.0.1:8080"), d, id("cluster.local"), kOwn).verdict == Verdict::allow);
  CHECK(admit(endpoint("127.0.0.1:8081"), d, id("cluster.local"), kOwn).verdict ==
        Verdict::not_allowed);
  CHECK(admit(endpoint("127.0.0.1:15001"), d, id("cluster.local"), kOwn).verdict ==
        Verdict::own_listener);
}

TEST_CASE("admission: reasons name the target and the rule") {
  const config::Config c = config_of(
      {"--hbone-listen", "127.0.0.1:15008", "--allow-dest", "0.0.0.0/0", "--allow-dest", "[::]/0"});
  auto reason = [&](const char* t) {
    return admit(endpoint(t), c, id("cluster.local"), kOwn).reason;
  };
  CHECK(reason("0.0.0.0:80") == "target 0.0.0.0:80 is the unspecified address");
  CHECK(reason("0.0.0.1:80") == "target 0.0.0.1:80 is in 0.0.0.0/8 (this host)");
  CHECK(reason("[::ffff:169.254.1.1]:80") == "target 169.254.1.1:80 is link-local");
  CHECK(reason("[fe80::1]:80") == "target [fe80::1]:80 is link-local");
  CHECK(reason("224.0.0.1:80") == "target 224.0.0.1:80 is multicast");
  CHECK(reason("255.255.255.255:80") == "target 255.255.255.255:80 is the broadcast address");
  CHECK(reason("127.0.0.1:15008") == "target 127.0.0.1:15008 is our own --hbone-listen listener");
  CHECK(reason("[::ffff:127.0.0.1]:80") ==
        "loopback target 127.0.0.1:80 is not in a loopback --allow-dest");
  CHECK(reason("[::1]:80") == "loopback target [::1]:80 is not in a loopback --allow-dest");
  const config::Config n =
      config_of({"--hbone-listen", "127.0.0.1:15008", "--allow-dest", "10.0.0.0/8"});
  CHECK(admit(endpoint("11.0.0.1:80"), n, id("cluster.local"), kOwn).reason ==
        "target 11.0.0.1:80 is in no --allow-dest");
}

TEST_CASE("admission: statuses and access-log ends") {
  CHECK(proxy::http_status(Verdict::bad_target) == 400);
  CHECK(proxy::http_status(Verdict::own_listener) == 503);
  CHECK(proxy::http_status(Verdict::not_allowed) == 401);
  CHECK(proxy::http_status(Verdict::foreign_trust_domain) == 401);
  CHECK(proxy::end_reason(Verdict::bad_target) == proxy::EndReason::bad_request);
  CHECK(proxy::end_reason(Verdict::own_listener) == proxy::EndReason::refused);
  CHECK(proxy::end_reason(Verdict::not_allowed) == proxy::EndReason::denied);
  CHECK(proxy::end_reason(Verdict::foreign_trust_domain) == proxy::EndReason::denied);
}

TEST_CASE("admission: covers() folds mapped targets and keeps loopback to loopback entries") {
  config::AllowDest wide, lo, lo6, one;
  REQUIRE(config::parse_allow_dest("0.0.0.0/0", wide) == "");
  REQUIRE(config::parse_allow_dest("127.0.0.1:80-81", lo) == "");
  REQUIRE(config::parse_allow_dest("[::1]", lo6) == "");
  REQUIRE(config::parse_allow_dest("[::ffff:192.0.2.0]/120", one) == "");
  CHECK(covers(wide, endpoint("192.0.2.1:1")));
  CHECK_FALSE(covers(wide, endpoint("127.0.0.1:80")));
  CHECK(covers(lo, endpoint("[::ffff:127.0.0.1]:81")));
  CHECK_FALSE(covers(lo, endpoint("127.0.0.1:82")));
  CHECK_FALSE(covers(lo, endpoint("127.0.0.2:80")));
  CHECK(covers(lo6, endpoint("[::1]:1")));
  CHECK_FALSE(covers(lo6, endpoint("127.0.0.1:1")));
  CHECK(covers(one, endpoint("192.0.2.200:9")));
  CHECK(covers(one, endpoint("[::ffff:192.0.2.200]:9")));
  CHECK_FALSE(covers(one, endpoint("192.0.3.1:9")));
}

namespace {

// Node B's view: its workload vm-b (10.250.0.2, 10.250.0.3), node A's workload, and `policies`.
std::shared_ptr<const workload::State> mesh_state(const std::string& policies) {
  const std::string yaml = R"(workloads:
- uid: c//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  serviceAccount: node-a
  workloadIps: ["10.250.0.1"]
  protocol: HBONE
  services: {}
- uid: c//v1/Pod/default/vm-b
  name: vm-b
  namespace: default
  serviceAccount: node-b
  workloadIps: ["10.250.0.2", "10.250.0.3", "fd00:250::2"]
  protocol: HBONE
  services: {}
)" + policies;
  workload::LoadResult r = workload::parse_local_config(yaml, "mesh.yaml");
  REQUIRE_MESSAGE(r.ok(), (r.error ? r.error->to_string() : ""));
  return workload::State::build(std::move(r.config));
}

const char* kDenyNodeA = R"(policies:
- name: deny-a
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/node-a
)";

const char* kOnlyNodeA = R"(policies:
- name: only-a
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/node-a
)";

}  // namespace

TEST_CASE("admission with a workload config: each rule, in order") {
  config::Config c =
      config_of({"--hbone-listen", "0.0.0.0:15008", "--allow-dest", "0.0.0.0/0:1-65535"});
  // The capture listeners are ringtunnel's own too (set here: the flags need --config).
  c.outbound_listens.push_back({endpoint("0.0.0.0:15001"), "0.0.0.0:15001"});
  c.inbound_plaintext_listens.push_back({endpoint("[::]:15006"), "[::]:15006"});
  const net::Endpoint source = endpoint("10.250.0.1:40000");
  const tls::SpiffeId peer = id("cluster.local", "node-a");
  struct Case {
    const char* policies;
    const char* target;
    const tls::SpiffeId* peer;
    Verdict verdict;
    int status;
    proxy::EndReason end;
  };
  const tls::SpiffeId foreign = id("other.td", "node-a");
  const Case cases[] = {
      {"", "0.0.0.0:8080", &peer, Verdict::bad_target, 400, proxy::EndReason::bad_request},
      {"", "10.250.0.2:8080", &foreign, Verdict::foreign_trust_domain, 401,
       proxy::EndReason::denied},
      // --allow-dest covers everything, yet only the local workload's addresses are served.
      {"", "10.250.0.1:8080", &peer, Verdict::not_local, 400, proxy::EndReason::bad_request},
      {"", "127.0.0.1:8080", &peer, Verdict::not_local, 400, proxy::EndReason::bad_request},
      {"", "10.250.0.3:15008", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      {"", "10.250.0.3:15001", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      {"", "[fd00:250::2]:15006", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      {"", "10.250.0.3:15006", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      // The operating listeners' defaults: metrics and readiness on every address, admin on
      // loopback only (so a workload address with its port is not ours).
      {"", "10.250.0.3:15020", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      {"", "10.250.0.3:15021", &peer, Verdict::own_listener, 503, proxy::EndReason::refused},
      {"", "10.250.0.3:15000", &peer, Verdict::allow, 200, proxy::EndReason::none},
      {"", "10.250.0.3:8080", &peer, Verdict::allow, 200, proxy::EndReason::none},
      {kDenyNodeA, "10.250.0.2:8080", &peer, Verdict::denied, 401, proxy::EndReason::denied},
      {kOnlyNodeA, "10.250.0.2:8080", &peer, Verdict::allow, 200, proxy::EndReason::none},
      // Plaintext (no peer): no trust-domain check, and no principal to match.
      {"", "10.250.0.2:8080", nullptr, Verdict::allow, 200, proxy::EndReason::none},
      {kOnlyNodeA, "10.250.0.2:8080", nullptr, Verdict::denied, 401, proxy::EndReason::denied},
      {kDenyNodeA, "10.250.0.2:8080", nullptr, Verdict::allow, 200, proxy::EndReason::none},
  };
  for (const Case& k : cases) {
    const auto state = mesh_state(k.policies);
    const workload::Workload* local = state->workload_by_info("default", "vm-b", "node-b");
    REQUIRE(local);
    const proxy::Admission a =
        proxy::admit_mesh(endpoint(k.target), c, *state, *local, source, k.peer, kOwn);
    INFO(k.target, " ", (k.peer ? k.peer->to_string() : "(no peer)"), " ", a.reason);
    CHECK(a.verdict == k.verdict);
    CHECK(proxy::http_status(a.verdict) == k.status);
    CHECK(proxy::end_reason(a.verdict) == k.end);
    if (k.verdict == Verdict::denied && k.policies == kDenyNodeA)
      CHECK(a.reason == "deny: policy default/deny-a");
  }
}

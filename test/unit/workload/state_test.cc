#include "ringtunnel/workload/state.h"

#include <doctest/doctest.h>

#include <map>
#include <string>

#include "ringtunnel/workload/local_config.h"

using namespace ringtunnel::workload;
using ringtunnel::net::IpAddress;

namespace {

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}

std::shared_ptr<const State> state_of(const std::string& yaml,
                                      std::vector<std::string>* warnings = nullptr) {
  LoadResult r = parse_local_config(yaml, "cfg.yaml");
  INFO((r.error ? r.error->to_string() : std::string()));
  REQUIRE(r.ok());
  return State::build(std::move(r.config), warnings);
}

std::shared_ptr<const State> localhost() {
  LoadResult r =
      load_local_config(RINGTUNNEL_SOURCE_ROOT "/test/unit/workload/data/localhost.yaml");
  REQUIRE(r.ok());
  return State::build(std::move(r.config));
}

// uid -> how often `random` 0..n-1 picked it
std::map<std::string, int> spread(const State& s, const Workload& src, const char* vip,
                                  uint16_t port, int n) {
  std::map<std::string, int> count;
  for (int i = 0; i < n; ++i) {
    Destination d = s.resolve_outbound(src, ip(vip), port, static_cast<uint64_t>(i));
    REQUIRE(d.kind == Destination::Kind::service);
    ++count[d.workload->uid];
  }
  return count;
}

}  // namespace

TEST_CASE("localhost example: workloads by address, per network") {
  auto s = localhost();
  const Workload* local = s->workload_by_ip("", ip("127.0.0.1"));
  REQUIRE(local != nullptr);
  CHECK(local->name == "local");
  REQUIRE(s->workload_by_ip("", ip("127.0.0.2")) != nullptr);
  CHECK(s->workload_by_ip("", ip("127.0.0.2"))->name == "local-tcp");
  CHECK(s->workload_by_ip("", ip("127.0.0.3")) == nullptr);
  CHECK(s->workload_by_ip("other", ip("127.0.0.1")) == nullptr);
  CHECK(local->has_ip(ip("127.0.0.1")));
  CHECK_FALSE(local->has_ip(ip("127.0.0.2")));
  CHECK(s->workload_by_uid("cluster1//v1/Pod/default/local") == local);
  CHECK(s->workload_by_info("default", "local", "default") == local);
  CHECK(s->workload_by_info("default", "local", "other") == nullptr);
}

TEST_CASE("the local workload is found by its effective service account") {
  // No serviceAccount in the config: it is "default", as the store's load-time check has it; a
  // worker looking it up by the raw field would find no local workload (and fall back to
  // rules that are not the config's).
  auto s = state_of(R"(workloads:
- uid: cluster1//v1/Pod/default/vm-a
  name: vm-a
  namespace: default
  workloadIps: ["10.0.0.1"]
  protocol: HBONE
  services: {}
)");
  const Workload* w = s->workload_by_uid("cluster1//v1/Pod/default/vm-a");
  REQUIRE(w != nullptr);
  CHECK(w->service_account.empty());
  CHECK(s->workload_by_info("default", "vm-a", "default") == w);
  CHECK(s->workload_by_info("default", "vm-a", "") == nullptr);
}

TEST_CASE("the service an inbound connection came through, for metrics") {
  auto s = state_of(R"(workloads:
- uid: cluster1//v1/Pod/default/db
  name: db
  namespace: default
  workloadIps: ["10.0.0.2"]
  protocol: HBONE
  services:
    default/api.default.svc.cluster.local: {80: 8080}
    default/admin.default.svc.cluster.local: {9000: 9090}
services:
- name: api
  namespace: default
  hostname: api.default.svc.cluster.local
  vips: ["/10.1.0.1"]
  ports: {80: 8080}
- name: admin
  namespace: default
  hostname: admin.default.svc.cluster.local
  vips: ["/10.1.0.2"]
  ports: {9000: 0}
- name: other
  namespace: default
  hostname: other.default.svc.cluster.local
  vips: ["/10.1.0.3"]
  ports: {80: 8080}
)");
  const Workload& db = *s->workload_by_uid("cluster1//v1/Pod/default/db");
  const auto name = [](const Service* svc) { return svc ? svc->name : std::string("(none)"); };
  // By the service's own target port, or by the workload's port for that service.
  CHECK(name(s->guess_inbound_service(db, 8080, "")) == "api");
  CHECK(name(s->guess_inbound_service(db, 9090, "")) == "admin");
  CHECK(name(s->guess_inbound_service(db, 7000, "")) == "(none)");
  // The client's host= chooses among the workload's services only.
  CHECK(name(s->guess_inbound_service(db, 7000, "admin.default.svc.cluster.local")) == "admin");
  CHECK(name(s->guess_inbound_service(db, 8080, "other.default.svc.cluster.local")) == "api");
}

TEST_CASE("localhost example: outbound routing of captured connections") {
  auto s = localhost();
  const Workload& src = *s->workload_by_uid("cluster1//v1/Pod/default/local");

  // A service VIP: one of its endpoints, on the mapped port, spread across both.
  auto count = spread(*s, src, "127.10.0.1", 80, 100);
  CHECK(count.size() == 2);
  CHECK(count["cluster1//v1/Pod/default/local"] == 50);
  CHECK(count["cluster1//v1/Pod/default/local-tcp"] == 50);
  Destination d = s->resolve_outbound(src, ip("127.10.0.1"), 80, 1);
  CHECK(d.service->name == "local");
  CHECK(d.port == 8080);
  CHECK(d.ip == d.workload->workload_ips[0]);

  // A port the service does not have: refuse, do not pass through.
  CHECK(s->resolve_outbound(src, ip("127.10.0.1"), 81, 0).kind == Destination::Kind::no_endpoint);
  // The other service's VIP is in network "remote": not seen from the default network.
  CHECK(s->resolve_outbound(src, ip("127.10.0.2"), 80, 0).kind == Destination::Kind::passthrough);
  CHECK(s->service_by_vip("remote", ip("127.10.0.2"), "default")->name == "remote");

  // A workload IP: that workload, the original port.
  d = s->resolve_outbound(src, ip("127.0.0.2"), 9000, 0);
  CHECK(d.kind == Destination::Kind::workload);
  CHECK(d.workload->name == "local-tcp");
  CHECK(d.port == 9000);
  CHECK(d.ip == ip("127.0.0.2"));

  // Anything else: passthrough to the original destination.
  d = s->resolve_outbound(src, ip("10.1.1.1"), 443, 0);
  CHECK(d.kind == Destination::Kind::passthrough);
  CHECK(d.ip == ip("10.1.1.1"));
  CHECK(d.port == 443);
  CHECK(d.workload == nullptr);
}

TEST_CASE("a later workload with the same uid replaces the earlier one") {
  std::vector<std::string> warnings;
  auto s = state_of(R"(
workloads:
- {uid: a, name: first, namespace: ns, workloadIps: [10.0.0.1], services: {}}
- {uid: a, name: second, namespace: ns, workloadIps: [10.0.0.2], services: {}}
)",
                    &warnings);
  CHECK(warnings == std::vector<std::string>{
                        "workload uid \"a\" is defined again: the later one replaces the earlier"});
  CHECK(s->workloads().size() == 1);
  CHECK(s->workload_by_ip("", ip("10.0.0.1")) == nullptr);
  CHECK(s->workload_by_ip("", ip("10.0.0.2"))->name == "second");
}

TEST_CASE("a shared address goes to a Pod, then to HBONE, then to the later workload") {
  auto s = state_of(R"(
workloads:
- {uid: c1//Pod/ns/tcp-pod, namespace: ns, workloadIps: [10.0.0.1], services: {}}
- {uid: vm-hbone, protocol: HBONE, namespace: ns, workloadIps: [10.0.0.1, 10.0.0.2], services: {}}
- {uid: vm-tcp, namespace: ns, workloadIps: [10.0.0.2, 10.0.0.3], services: {}}
- {uid: vm-tcp-2, namespace: ns, workloadIps: [10.0.0.3], services: {}}
- {uid: host, namespace: ns, networkMode: HostNetwork, workloadIps: [10.0.0.9], services: {}}
)");
  CHECK(s->workload_by_ip("", ip("10.0.0.1"))->uid == "c1//Pod/ns/tcp-pod");
  CHECK(s->workload_by_ip("", ip("10.0.0.2"))->uid == "vm-hbone");
  CHECK(s->workload_by_ip("", ip("10.0.0.3"))->uid == "vm-tcp-2");
  CHECK(s->workload_by_ip("", ip("10.0.0.9")) == nullptr);  // HostNetwork: not by address
  CHECK(s->workload_by_uid("host") != nullptr);
}

TEST_CASE("service endpoints: port mappings, health, capacity") {
  std::vector<std::string> warnings;
  auto s = state_of(R"(
workloads:
- {uid: own-map, namespace: ns, workloadIps: [10.0.0.1], services: {"ns/svc": {80: 9001}}}
- {uid: svc-map, namespace: ns, workloadIps: [10.0.0.2], capacity: 3, services: {"ns/svc": {}}}
- {uid: sick, namespace: ns, status: Unhealthy, workloadIps: [10.0.0.3], services: {"ns/svc": {80: 1}}}
- {uid: empty, namespace: ns, capacity: 0, workloadIps: [10.0.0.4], services: {"ns/svc": {}}}
- {uid: no-ip, namespace: ns, workloadIps: [], services: {"ns/svc": {80: 1}}}
- {uid: lost, namespace: ns, workloadIps: [10.0.0.5], services: {"ns/missing": {80: 1}}}
- {uid: zero-mapped, namespace: ns, workloadIps: [10.0.0.6], services: {"ns/zero": {90: 9090}}}
- {uid: zero-unmapped, namespace: ns, workloadIps: [10.0.0.7], services: {"ns/zero": {}}}
services:
- {name: svc, namespace: ns, hostname: svc, vips: [/10.96.0.1], ports: {80: 8080}}
- {name: zero, namespace: ns, hostname: zero, vips: [/10.96.0.2], ports: {90: 0}}
- name: all
  namespace: ns
  hostname: all
  vips: [/10.96.0.3]
  ports: {80: 8080}
  loadBalancer: {routingPreferences: [], mode: Standard, healthPolicy: AllowAll}
  endpoints: {sick: {workloadUid: sick, port: {}, status: Unhealthy}, ghost: {workloadUid: ghost, port: {}, status: Healthy}}
)",
                    &warnings);
  CHECK(warnings == std::vector<std::string>{
                        "workloads declare endpoints of service ns/missing, which is not defined"});
  const Service* svc = s->service_by_host("ns", "svc");
  REQUIRE(svc != nullptr);
  auto eps = s->endpoints(*svc, 80);
  REQUIRE(eps.size() == 3);  // not the unhealthy one, nor the one without an address
  std::map<std::string, uint16_t> port_of;
  for (const ServiceEndpoint& ep : eps)
    port_of[ep.workload->uid] = ep.target_port;
  CHECK(port_of ==
        std::map<std::string, uint16_t>{{"own-map", 9001}, {"svc-map", 8080}, {"empty", 8080}});
  CHECK(s->endpoints(*svc, 81).empty());

  // Weighted by capacity: 1 and 3, never the capacity-0 one.
  const Workload& src = *s->workload_by_uid("own-map");
  auto count = spread(*s, src, "10.96.0.1", 80, 400);
  CHECK(count["own-map"] == 100);
  CHECK(count["svc-map"] == 300);
  CHECK(count.count("empty") == 0);

  // A service port mapped to 0 is served only by endpoints that map it themselves.
  auto zero = s->endpoints(*s->service_by_host("ns", "zero"), 90);
  REQUIRE(zero.size() == 1);
  CHECK(zero[0].workload->uid == "zero-mapped");
  CHECK(zero[0].target_port == 9090);

  // AllowAll keeps the unhealthy; endpoints written under the service count, unknown uids not.
  auto all = s->endpoints(*s->service_by_host("ns", "all"), 80);
  REQUIRE(all.size() == 1);
  CHECK(all[0].workload->uid == "sick");
}

TEST_CASE("a service without usable endpoints refuses instead of passing through") {
  auto s = state_of(R"(
workloads:
- {uid: src, namespace: ns, workloadIps: [10.0.0.1], services: {}}
- {uid: idle, namespace: ns, capacity: 0, workloadIps: [10.0.0.2], services: {"ns/svc": {}}}
services:
- {name: svc, namespace: ns, hostname: svc, vips: [/10.96.0.1], ports: {80: 8080}}
- {name: pt, namespace: ns, hostname: pt, vips: [/10.96.0.2], ports: {80: 8080}, loadBalancer: {routingPreferences: [], mode: Passthrough, healthPolicy: OnlyHealthy}}
)");
  const Workload& src = *s->workload_by_uid("src");
  CHECK(s->resolve_outbound(src, ip("10.96.0.1"), 80, 7).kind == Destination::Kind::no_endpoint);
  Destination d = s->resolve_outbound(src, ip("10.96.0.2"), 80, 7);
  CHECK(d.kind == Destination::Kind::passthrough);  // load balancer mode Passthrough
  CHECK(d.service->name == "pt");
  CHECK(d.ip == ip("10.96.0.2"));
}

TEST_CASE("a VIP shared across namespaces: own namespace, then canonical, then first; visibility") {
  auto s = state_of(R"(
services:
- {name: a, namespace: ns-a, hostname: h-a, vips: [/10.96.0.1], ports: {}}
- {name: b, namespace: ns-b, hostname: h-b, vips: [/10.96.0.1], ports: {}, canonical: true}
- {name: c, namespace: ns-c, hostname: h-c, vips: [/10.96.0.1], ports: {}}
- {name: p, namespace: ns-p, hostname: h-p, vips: [/10.96.0.2], ports: {}, visibility: Namespace}
- {name: q, namespace: ns-q, hostname: h-q, vips: [/10.96.0.2], ports: {}}
- {name: wide, namespace: ns-a, hostname: wide, vips: [], cidrVips: [{network: "", cidr: 10.97.0.0/16}], ports: {}}
- {name: narrow, namespace: ns-b, hostname: narrow, vips: [], cidrVips: [{network: "", cidr: 10.97.1.0/24}], ports: {}}
)");
  CHECK(s->service_by_vip("", ip("10.96.0.1"), "ns-c")->name == "c");
  CHECK(s->service_by_vip("", ip("10.96.0.1"), "elsewhere")->name == "b");
  CHECK(s->service_by_vip("", ip("10.96.0.2"), "ns-p")->name == "p");
  CHECK(s->service_by_vip("", ip("10.96.0.2"), "elsewhere")->name == "q");
  // CIDR VIPs: the client's namespace first, then the longest prefix.
  CHECK(s->service_by_vip("", ip("10.97.1.5"), "elsewhere")->name == "narrow");
  CHECK(s->service_by_vip("", ip("10.97.1.5"), "ns-a")->name == "wide");
  CHECK(s->service_by_vip("", ip("10.97.2.5"), "elsewhere")->name == "wide");
  CHECK(s->service_by_vip("", ip("10.98.0.1"), "ns-a") == nullptr);
  CHECK(s->service_by_vip("net", ip("10.96.0.1"), "ns-a") == nullptr);
}

TEST_CASE("a service defined twice: the later replaces it; a VIP holds one service per namespace") {
  std::vector<std::string> warnings;
  auto s = state_of(R"(
workloads:
- {uid: w, namespace: ns, workloadIps: [10.0.0.1], services: {"ns/svc": {}}}
services:
- {name: first, namespace: ns, hostname: svc, vips: [/10.96.0.1], ports: {80: 8080}}
- {name: other, namespace: ns, hostname: other, vips: [/10.96.0.1], ports: {80: 8080}}
- {name: second, namespace: ns, hostname: svc, vips: [/10.96.0.2], ports: {80: 8080}}
)",
                    &warnings);
  CHECK(warnings == std::vector<std::string>{
                        "service ns/svc is defined again: the later one replaces the earlier"});
  CHECK(s->service_by_host("ns", "svc")->name == "second");
  // Replacing a service takes its namespace off its old VIPs, even another service of that
  // namespace that shared one.
  CHECK(s->service_by_vip("", ip("10.96.0.1"), "ns") == nullptr);
  CHECK(s->service_by_host("ns", "other") != nullptr);
  CHECK(s->service_by_vip("", ip("10.96.0.2"), "ns")->name == "second");
  // Only the first definition received the workload's endpoint.
  CHECK(s->endpoints(*s->service_by_host("ns", "svc"), 80).empty());
}

TEST_CASE("Strict and Failover load balancing by the source's locality") {
  auto s = state_of(R"(
workloads:
- {uid: src, namespace: ns, workloadIps: [10.0.0.1], locality: {region: r1, zone: z1, subzone: ""}, services: {}}
- {uid: same-zone, namespace: ns, workloadIps: [10.0.0.2], locality: {region: r1, zone: z1, subzone: ""}, services: {"ns/strict": {}, "ns/failover": {}}}
- {uid: same-region, namespace: ns, workloadIps: [10.0.0.3], locality: {region: r1, zone: z2, subzone: ""}, services: {"ns/strict": {}, "ns/failover": {}}}
- {uid: far, namespace: ns, workloadIps: [10.0.0.4], locality: {region: r2, zone: z9, subzone: ""}, services: {"ns/far": {}, "ns/far-ok": {}}}
services:
- {name: strict, namespace: ns, hostname: strict, vips: [/10.96.0.1], ports: {80: 80}, loadBalancer: {routingPreferences: [Region, Zone], mode: Strict, healthPolicy: OnlyHealthy}}
- {name: failover, namespace: ns, hostname: failover, vips: [/10.96.0.2], ports: {80: 80}, loadBalancer: {routingPreferences: [Region, Zone], mode: Failover, healthPolicy: OnlyHealthy}}
- {name: far, namespace: ns, hostname: far, vips: [/10.96.0.3], ports: {80: 80}, loadBalancer: {routingPreferences: [Region], mode: Strict, healthPolicy: OnlyHealthy}}
- {name: far-ok, namespace: ns, hostname: far-ok, vips: [/10.96.0.4], ports: {80: 80}, loadBalancer: {routingPreferences: [Region], mode: Failover, healthPolicy: OnlyHealthy}}
)");
  const Workload& src = *s->workload_by_uid("src");
  CHECK(spread(*s, src, "10.96.0.1", 80, 20) == std::map<std::string, int>{{"same-zone", 20}});
  CHECK(spread(*s, src, "10.96.0.2", 80, 20) == std::map<std::string, int>{{"same-zone", 20}});
  CHECK(s->resolve_outbound(src, ip("10.96.0.3"), 80, 0).kind == Destination::Kind::no_endpoint);
  // Failover: the best there is, however far.
  CHECK(spread(*s, src, "10.96.0.4", 80, 5) == std::map<std::string, int>{{"far", 5}});
}

TEST_CASE("policies are indexed by scope: global, the workload's namespace, the ones it names") {
  std::vector<std::string> warnings;
  auto s = state_of(R"(
workloads:
- {uid: w, namespace: app, workloadIps: [10.0.0.1], services: {}, authorizationPolicies: [app/sel, other/ns-named, app/nope, app/ns]}
- {uid: v, namespace: other, workloadIps: [10.0.0.2], services: {}}
policies:
- {name: g, namespace: istio-system, scope: Global, action: Allow, dryRun: false, rules: []}
- {name: ns, namespace: app, scope: Namespace, action: Deny, dryRun: false, rules: []}
- {name: ns-dry, namespace: app, scope: Namespace, action: Allow, dryRun: true, rules: []}
- {name: ns-named, namespace: other, scope: Namespace, action: Deny, dryRun: true, rules: []}
- {name: sel, namespace: app, scope: WorkloadSelector, action: Allow, dryRun: false, rules: []}
- {name: unselected, namespace: app, scope: WorkloadSelector, action: Deny, dryRun: false, rules: []}
- {name: sel, namespace: app, scope: WorkloadSelector, action: Deny, dryRun: false, rules: []}
)",
                    &warnings);
  CHECK(warnings == std::vector<std::string>{
                        "policy app/sel is defined again: the later one replaces the earlier",
                        "workload w selects policy app/nope, which is not defined"});
  CHECK(s->policies().size() == 6);  // app/sel defined twice: the later one
  CHECK(s->policy("app/sel")->action == Action::deny);

  WorkloadPolicies p = s->policies_for(*s->workload_by_uid("w"));
  REQUIRE(p.global != nullptr);
  CHECK(p.global->allow.size() == 1);
  CHECK(p.global->allow[0]->key() == "istio-system/g");
  REQUIRE(p.namespace_ != nullptr);
  CHECK(p.namespace_->deny.size() == 1);
  CHECK(p.namespace_->allow_dry_run.size() == 1);
  REQUIRE(p.selected != nullptr);
  CHECK(p.selected->deny.size() == 1);  // app/sel (app/ns already applies by its scope)
  CHECK(p.selected->deny[0]->key() == "app/sel");
  CHECK(p.selected->deny_dry_run.size() == 1);
  CHECK(p.selected->deny_dry_run[0]->key() == "other/ns-named");
  CHECK(p.selected->allow.empty());

  WorkloadPolicies q = s->policies_for(*s->workload_by_uid("v"));
  CHECK(q.namespace_ != nullptr);  // other/ns-named is a Namespace policy of "other"
  CHECK(q.namespace_->deny_dry_run.size() == 1);
  CHECK(q.selected->empty());

  // A workload of another snapshot is found by uid.
  auto again = state_of("workloads:\n- {uid: w, namespace: app, workloadIps: [], services: {}}\n");
  WorkloadPolicies r = s->policies_for(*again->workload_by_uid("w"));
  CHECK(r.selected == p.selected);
}

#include "ringtunnel/workload/local_config.h"

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using namespace ringtunnel::workload;
using ringtunnel::net::IpAddress;
using ringtunnel::net::IpCidr;

namespace {

IpAddress ip(const char* text) {
  return *IpAddress::parse(text);
}
IpCidr cidr(const char* text) {
  return *IpCidr::parse(text);
}

LocalConfig parse_ok(const std::string& yaml) {
  LoadResult r = parse_local_config(yaml, "cfg.yaml");
  INFO((r.error ? r.error->to_string() : std::string()));
  REQUIRE(r.ok());
  return r.config;
}

std::string parse_error(const std::string& yaml) {
  LoadResult r = parse_local_config(yaml, "cfg.yaml");
  if (r.ok()) return "(no error)";
  CHECK(r.config.workloads.empty());
  return r.error->to_string();
}

}  // namespace

TEST_CASE("the reference localhost example loads unchanged") {
  LoadResult r =
      load_local_config(RINGTUNNEL_SOURCE_ROOT "/test/unit/workload/data/localhost.yaml");
  INFO((r.error ? r.error->to_string() : std::string()));
  REQUIRE(r.ok());
  CHECK(r.warnings.empty());
  const LocalConfig& c = r.config;
  REQUIRE(c.workloads.size() == 2);
  const Workload& local = c.workloads[0];
  CHECK(local.uid == "cluster1//v1/Pod/default/local");
  CHECK(local.name == "local");
  CHECK(local.namespace_ == "default");
  CHECK(local.service_account == "default");
  CHECK(local.workload_ips == std::vector<IpAddress>{ip("127.0.0.1")});
  CHECK(local.protocol == Protocol::hbone);
  CHECK(local.node == "local");
  CHECK(local.network == "");
  CHECK(local.services.at("default/example.com") == PortMap{{80, 8080}});
  CHECK(local.services.at("default/example2.com") == PortMap{{80, 8080}});
  CHECK(local.trust_domain == "");
  CHECK(local.spiffe_id() == "spiffe://cluster.local/ns/default/sa/default");
  CHECK(c.workloads[1].protocol == Protocol::tcp);
  CHECK(c.workloads[1].workload_ips == std::vector<IpAddress>{ip("127.0.0.2")});

  REQUIRE(c.policies.size() == 1);
  const Authorization& p = c.policies[0];
  CHECK(p.key() == "default/deny-9999");
  CHECK(p.scope == Scope::namespace_);
  CHECK(p.action == Action::allow);
  CHECK_FALSE(p.dry_run);
  REQUIRE(p.rules.size() == 1);
  REQUIRE(p.rules[0].size() == 1);
  REQUIRE(p.rules[0][0].size() == 1);
  CHECK(p.rules[0][0][0].not_destination_ports == std::vector<uint16_t>{9999});

  REQUIRE(c.services.size() == 2);
  const Service& s = c.services[0];
  CHECK(s.name == "local");
  CHECK(s.hostname == "example.com");
  CHECK(s.vips == std::vector<NetworkAddress>{{"", ip("127.10.0.1")}});
  CHECK(s.ports == PortMap{{80, 8080}});
  CHECK(s.subject_alt_names ==
        std::vector<std::string>{"spiffe://cluster.local/ns/default/sa/local"});
  CHECK(s.canonical);
  CHECK(c.services[1].vips == std::vector<NetworkAddress>{{"remote", ip("127.10.0.2")}});
  CHECK(c.services[1].subject_alt_names.empty());
}

TEST_CASE("every workload field") {
  LocalConfig c = parse_ok(R"(
workloads:
- workloadIps: [10.0.0.1, "fd00::1"]
  waypoint: {destination: "net1/10.9.0.1", hboneMtlsPort: 15008}
  networkGateway: {destination: "istio-system/gw.example", hboneMtlsPort: 15009}
  protocol: HBONE
  networkMode: HostNetwork
  uid: u1
  name: n1
  namespace: ns1
  trustDomain: td.example
  serviceAccount: sa1
  network: net1
  workloadName: wn
  workloadType: deployment
  canonicalName: cn
  canonicalRevision: v2
  hostname: host1.example
  node: node1
  nativeTunnel: true
  applicationTunnel: {protocol: PROXY, port: 15088}
  authorizationPolicies: [ns1/p1, ns1/p2]
  status: Unhealthy
  clusterId: c1
  locality: {region: r1, zone: z1, subzone: s1}
  capacity: 7
  services: {"ns1/svc.example": {80: 8080, 443: 8443}}
)");
  REQUIRE(c.workloads.size() == 1);
  const Workload& w = c.workloads[0];
  CHECK(w.workload_ips == std::vector<IpAddress>{ip("10.0.0.1"), ip("fd00::1")});
  REQUIRE(w.waypoint);
  CHECK(w.waypoint->address == NetworkAddress{"net1", ip("10.9.0.1")});
  CHECK_FALSE(w.waypoint->hostname);
  CHECK(w.waypoint->hbone_mtls_port == 15008);
  REQUIRE(w.network_gateway);
  CHECK(w.network_gateway->hostname == NamespacedHostname{"istio-system", "gw.example"});
  CHECK(w.network_gateway->hbone_mtls_port == 15009);
  CHECK(w.protocol == Protocol::hbone);
  CHECK(w.network_mode == NetworkMode::host_network);
  CHECK(w.uid == "u1");
  CHECK(w.name == "n1");
  CHECK(w.namespace_ == "ns1");
  CHECK(w.trust_domain == "td.example");
  CHECK(w.service_account == "sa1");
  CHECK(w.network == "net1");
  CHECK(w.workload_name == "wn");
  CHECK(w.workload_type == "deployment");
  CHECK(w.canonical_name == "cn");
  CHECK(w.canonical_revision == "v2");
  CHECK(w.hostname == "host1.example");
  CHECK(w.node == "node1");
  CHECK(w.native_tunnel);
  REQUIRE(w.application_tunnel);
  CHECK(w.application_tunnel->protocol == ApplicationTunnel::Protocol::proxy);
  CHECK(w.application_tunnel->port == 15088);
  CHECK(w.authorization_policies == std::vector<std::string>{"ns1/p1", "ns1/p2"});
  CHECK(w.status == HealthStatus::unhealthy);
  CHECK(w.cluster_id == "c1");
  CHECK(w.locality.region == "r1");
  CHECK(w.locality.zone == "z1");
  CHECK(w.locality.subzone == "s1");
  CHECK(w.capacity == 7);
  CHECK(w.services.at("ns1/svc.example") == PortMap{{80, 8080}, {443, 8443}});
  CHECK(w.spiffe_id() == "spiffe://td.example/ns/ns1/sa/sa1");
}

TEST_CASE("workload defaults") {
  LocalConfig c = parse_ok("workloads:\n- {workloadIps: [], namespace: ns, services: {}}\n");
  const Workload& w = c.workloads[0];
  CHECK(w.protocol == Protocol::tcp);
  CHECK(w.network_mode == NetworkMode::standard);
  CHECK(w.status == HealthStatus::healthy);
  CHECK(w.capacity == 1);
  CHECK(w.uid == "");
  CHECK_FALSE(w.native_tunnel);
  CHECK_FALSE(w.waypoint);
  CHECK_FALSE(w.application_tunnel);
  CHECK(w.effective_trust_domain() == "cluster.local");
  CHECK(w.effective_service_account() == "default");
  CHECK(w.spiffe_id() == "spiffe://cluster.local/ns/ns/sa/default");
  // An application tunnel's port is optional.
  c = parse_ok(
      "workloads:\n- {workloadIps: [], namespace: ns, services: {}, applicationTunnel: "
      "{protocol: NONE}}\n");
  CHECK(c.workloads[0].application_tunnel->protocol == ApplicationTunnel::Protocol::none);
  CHECK_FALSE(c.workloads[0].application_tunnel->port);
}

TEST_CASE("every service field") {
  LocalConfig c = parse_ok(R"(
services:
- name: svc
  namespace: ns1
  hostname: svc.example
  vips: ["/10.96.0.1", "net2/fd00::10"]
  cidrVips: [{network: "", cidr: 10.97.0.0/16}]
  ports: {80: 8080, 0x1bb: 0}
  endpoints:
    u9: {workloadUid: u9, port: {80: 9090}, status: Unhealthy}
  subjectAltNames: [spiffe://td/ns/ns1/sa/svc]
  waypoint: {destination: "ns1/waypoint.example", hboneMtlsPort: 15008}
  weightedWaypoints:
  - {destination: {destination: "/10.9.0.2", hboneMtlsPort: 15008}, weight: 90}
  loadBalancer: {routingPreferences: [Network, Region, Zone, Subzone, Node, Cluster], mode: Failover, healthPolicy: AllowAll}
  ipFamilies: IPv6
  canonical: true
  visibility: Namespace
)");
  REQUIRE(c.services.size() == 1);
  const Service& s = c.services[0];
  CHECK(s.name == "svc");
  CHECK(s.namespace_ == "ns1");
  CHECK(s.hostname == "svc.example");
  CHECK(s.vips == std::vector<NetworkAddress>{{"", ip("10.96.0.1")}, {"net2", ip("fd00::10")}});
  CHECK(s.cidr_vips == std::vector<NetworkCidr>{{"", cidr("10.97.0.0/16")}});
  CHECK(s.ports == PortMap{{80, 8080}, {443, 0}});
  REQUIRE(s.endpoints.count("u9") == 1);
  CHECK(s.endpoints.at("u9").workload_uid == "u9");
  CHECK(s.endpoints.at("u9").port == PortMap{{80, 9090}});
  CHECK(s.endpoints.at("u9").status == HealthStatus::unhealthy);
  CHECK(s.subject_alt_names == std::vector<std::string>{"spiffe://td/ns/ns1/sa/svc"});
  CHECK(s.waypoint->hostname == NamespacedHostname{"ns1", "waypoint.example"});
  REQUIRE(s.weighted_waypoints.size() == 1);
  CHECK(s.weighted_waypoints[0].destination.address == NetworkAddress{"", ip("10.9.0.2")});
  CHECK(s.weighted_waypoints[0].weight == 90);
  REQUIRE(s.load_balancer);
  CHECK(s.load_balancer->routing_preferences ==
        std::vector<LoadBalancerScope>{LoadBalancerScope::network, LoadBalancerScope::region,
                                       LoadBalancerScope::zone, LoadBalancerScope::subzone,
                                       LoadBalancerScope::node, LoadBalancerScope::cluster});
  CHECK(s.load_balancer->mode == LoadBalancerMode::failover);
  CHECK(s.load_balancer->health_policy == LoadBalancerHealthPolicy::allow_all);
  CHECK(s.ip_families == IpFamily::ipv6);
  CHECK(s.canonical);
  CHECK(s.visibility == Visibility::namespace_);

  c = parse_ok("services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}}\n");
  CHECK_FALSE(c.services[0].canonical);
  CHECK(c.services[0].visibility == Visibility::public_);
  CHECK_FALSE(c.services[0].load_balancer);
  CHECK_FALSE(c.services[0].ip_families);
}

TEST_CASE("every policy and match field, string matches as YAML tags") {
  LocalConfig c = parse_ok(R"(
policies:
- name: p
  namespace: ns1
  scope: WorkloadSelector
  action: Deny
  dryRun: true
  rules:
  - - - namespaces: [!Exact a, !Prefix b, !Suffix c, !Presence []]
        notNamespaces: [!Exact d]
        serviceAccounts: [{namespace: ns2, serviceAccount: sa2}]
        notServiceAccounts: [{namespace: ns3, serviceAccount: sa3}]
        principals: [!Exact td/ns/a/sa/b, !Presence]
        notPrincipals: [!Prefix td/]
        sourceIps: [10.0.0.0/8]
        notSourceIps: ["fd00::/8"]
        destinationIps: [192.168.1.0/24]
        notDestinationIps: [192.168.1.7/32]
        destinationPorts: [80, 443]
        notDestinationPorts: [8080]
      - {}
    - []
  - []
- {name: g, namespace: "", scope: Global, action: Allow, dryRun: false, rules: []}
- {name: n, namespace: x, scope: Namespace, action: Allow, dryRun: false, rules: }
)");
  REQUIRE(c.policies.size() == 3);
  const Authorization& p = c.policies[0];
  CHECK(p.scope == Scope::workload_selector);
  CHECK(p.action == Action::deny);
  CHECK(p.dry_run);
  REQUIRE(p.rules.size() == 2);
  REQUIRE(p.rules[0].size() == 2);
  REQUIRE(p.rules[0][0].size() == 2);
  CHECK(p.rules[0][1].empty());
  CHECK(p.rules[1].empty());
  const Match& m = p.rules[0][0][0];
  using K = StringMatch::Kind;
  CHECK(m.namespaces ==
        std::vector<StringMatch>{
            {K::exact, "a"}, {K::prefix, "b"}, {K::suffix, "c"}, {K::presence, ""}});
  CHECK(m.not_namespaces == std::vector<StringMatch>{{K::exact, "d"}});
  CHECK(m.service_accounts == std::vector<ServiceAccountMatch>{{"ns2", "sa2"}});
  CHECK(m.not_service_accounts == std::vector<ServiceAccountMatch>{{"ns3", "sa3"}});
  CHECK(m.principals == std::vector<StringMatch>{{K::exact, "td/ns/a/sa/b"}, {K::presence, ""}});
  CHECK(m.not_principals == std::vector<StringMatch>{{K::prefix, "td/"}});
  CHECK(m.source_ips == std::vector<IpCidr>{cidr("10.0.0.0/8")});
  CHECK(m.not_source_ips == std::vector<IpCidr>{cidr("fd00::/8")});
  CHECK(m.destination_ips == std::vector<IpCidr>{cidr("192.168.1.0/24")});
  CHECK(m.not_destination_ips == std::vector<IpCidr>{cidr("192.168.1.7/32")});
  CHECK(m.destination_ports == std::vector<uint16_t>{80, 443});
  CHECK(m.not_destination_ports == std::vector<uint16_t>{8080});
  CHECK(p.rules[0][0][1].empty());
  CHECK(c.policies[1].scope == Scope::global);
  CHECK(c.policies[1].rules.empty());
  CHECK(c.policies[2].scope == Scope::namespace_);
  CHECK(c.policies[2].rules.empty());  // nothing after `rules:` is an empty list
}

TEST_CASE("integers are plain YAML integers") {
  auto port_of = [](const char* text) {
    return parse_ok(std::string("services:\n- {name: a, namespace: b, hostname: c, vips: [], "
                                "ports: {") +
                    text + ": 1}}\n")
        .services[0]
        .ports.begin()
        ->first;
  };
  CHECK(port_of("80") == 80);
  CHECK(port_of("+80") == 80);
  CHECK(port_of("0x50") == 80);
  CHECK(port_of("0o120") == 80);
  CHECK(port_of("0b1010000") == 80);
  CHECK(port_of("0") == 0);
  CHECK(port_of("65535") == 65535);
}

TEST_CASE("an empty file is an empty config; unknown fields in matches are warnings") {
  CHECK(parse_ok("").workloads.empty());
  CHECK(parse_ok("# nothing\n").policies.empty());
  CHECK(parse_ok("workloads: []\nservices:\npolicies: []\n").services.empty());

  LoadResult r = parse_local_config(R"(policies:
- name: p
  namespace: ns
  scope: Global
  action: Deny
  dryRun: false
  rules: [[[{notDestinationPort: [22], serviceAccounts: [{namespace: a, serviceAccount: b, x: 1}]}]]]
workloads:
- {workloadIps: [], namespace: ns, services: {}, locality: {region: r, zone: z, subzone: s, zonee: q}}
services:
- {name: a, namespace: b, hostname: c, vips: [], ports: {}, cidrVips: [{network: n, cidr: 10.0.0.0/8, y: 2}]}
)",
                                    "cfg.yaml");
  REQUIRE(r.ok());
  REQUIRE(r.warnings.size() == 4);
  CHECK(r.warnings[0].path == "policies[0].rules[0][0][0].notDestinationPort");
  CHECK(r.warnings[0].line == 7);
  CHECK(r.warnings[0].column == 14);
  CHECK(r.warnings[0].reason == "unknown field \"notDestinationPort\" ignored");
  CHECK(r.warnings[1].path == "policies[0].rules[0][0][0].serviceAccounts[0].x");
  CHECK(r.warnings[2].path == "workloads[0].locality.zonee");
  CHECK(r.warnings[3].path == "services[0].cidrVips[0].y");
  // The match became empty: it is kept, and evaluation skips it.
  CHECK(r.config.policies[0].rules[0][0][0].not_destination_ports.empty());
}

TEST_CASE("errors name the file, line, column, field and reason") {
  const std::string w = "workloads:\n- ";  // a workload starts at line 2, column 3
  const std::string ok_workload = "workloadIps: [10.0.0.1]\n  namespace: ns\n  services: {}\n  ";
  struct Case {
    std::string yaml;
    std::string error;
  };
  const Case cases[] = {
      // document
      {"- 1\n", "cfg.yaml:1:1: expected a mapping, got a sequence"},
      {"workloads: []\nfoo: 1\n", "cfg.yaml:2:1: foo: unknown field \"foo\""},
      {"workloads: []\nworkloads: []\n", "cfg.yaml:2:1: workloads: duplicate field \"workloads\""},
      {"workloads: {}\n", "cfg.yaml:1:12: workloads: expected a sequence, got a mapping"},
      {"a: b\n---\nc: d\n", "cfg.yaml:3:1: more than one YAML document (one config per file)"},
      {"workloads: [\n", "cfg.yaml:2:1: invalid YAML: end of sequence flow not found"},
      {"workloads:\n- a: [1\n  b: 2\n",
       "cfg.yaml:3:4: invalid YAML: end of sequence flow not found"},
      // workloads
      {w + "namespace: ns\n  services: {}\n",
       "cfg.yaml:2:3: workloads[0]: missing field \"workloadIps\""},
      {w + "workloadIps: []\n  services: {}\n",
       "cfg.yaml:2:3: workloads[0]: missing field \"namespace\""},
      {w + "workloadIps: []\n  namespace: ns\n",
       "cfg.yaml:2:3: workloads[0]: missing field \"services\""},
      {w + ok_workload + "protocol: UDP\n",
       "cfg.yaml:5:13: workloads[0].protocol: expected HBONE or TCP, got \"UDP\""},
      {w + ok_workload + "protocol: hbone\n",
       "cfg.yaml:5:13: workloads[0].protocol: expected HBONE or TCP, got \"hbone\""},
      {w + ok_workload + "protocol:\n",
       "cfg.yaml:5:3: workloads[0].protocol: expected HBONE or TCP, got nothing (null)"},
      {w + ok_workload + "networkMode: Host\n",
       "cfg.yaml:5:16: workloads[0].networkMode: expected Standard or HostNetwork, got \"Host\""},
      {w + ok_workload + "status: Ready\n",
       "cfg.yaml:5:11: workloads[0].status: expected Healthy or Unhealthy, got \"Ready\""},
      {w + ok_workload + "serviceAccounts: sa\n",
       "cfg.yaml:5:3: workloads[0].serviceAccounts: unknown field \"serviceAccounts\""},
      {w + ok_workload + "name: [a]\n",
       "cfg.yaml:5:9: workloads[0].name: expected a string, got a sequence"},
      {w + ok_workload + "name: a\n  name: b\n",
       "cfg.yaml:6:3: workloads[0].name: duplicate field \"name\""},
      {w + "workloadIps: [10.0.0.1, 10.0.0.300]\n  namespace: ns\n  services: {}\n",
       "cfg.yaml:2:27: workloads[0].workloadIps[1]: expected an IP address, got \"10.0.0.300\""},
      {w + ok_workload + "nativeTunnel: yes\n",
       "cfg.yaml:5:17: workloads[0].nativeTunnel: expected true or false, got \"yes\""},
      {w + ok_workload + "nativeTunnel: \"true\"\n",
       "cfg.yaml:5:17: workloads[0].nativeTunnel: expected true or false, got \"true\""},
      {w + ok_workload + "capacity: -1\n",
       "cfg.yaml:5:13: workloads[0].capacity: expected an integer from 0 to 4294967295, got "
       "\"-1\""},
      {w + ok_workload + "capacity: 4294967296\n",
       "cfg.yaml:5:13: workloads[0].capacity: expected an integer from 0 to 4294967295, got "
       "\"4294967296\""},
      {w + ok_workload + "applicationTunnel: {port: 1}\n",
       "cfg.yaml:5:22: workloads[0].applicationTunnel: missing field \"protocol\""},
      {w + ok_workload + "applicationTunnel: {protocol: HTTP}\n",
       "cfg.yaml:5:33: workloads[0].applicationTunnel.protocol: expected NONE or PROXY, got "
       "\"HTTP\""},
      {w + ok_workload + "waypoint: {destination: nowhere, hboneMtlsPort: 15008}\n",
       "cfg.yaml:5:27: workloads[0].waypoint.destination: expected network/IP or "
       "namespace/hostname, got \"nowhere\""},
      {w + ok_workload + "waypoint: {destination: /10.0.0.1}\n",
       "cfg.yaml:5:13: workloads[0].waypoint: missing field \"hboneMtlsPort\""},
      {w + ok_workload + "locality: {region: r}\n",
       "cfg.yaml:5:13: workloads[0].locality: missing field \"zone\""},
      {w + "workloadIps: []\n  namespace: ns\n  services: {\"example.com\": {80: 8080}}\n",
       "cfg.yaml:4:14: workloads[0].services[\"example.com\"]: expected namespace/hostname, got "
       "\"example.com\""},
      {w + "workloadIps: []\n  namespace: ns\n  services: {\"ns/a\": {80: 65536}}\n",
       "cfg.yaml:4:27: workloads[0].services[\"ns/a\"][80]: expected an integer from 0 to 65535, "
       "got \"65536\""},
      {w + "workloadIps: []\n  namespace: ns\n  services: {\"ns/a\": {\"80\": 8080}}\n",
       "cfg.yaml:4:23: workloads[0].services[\"ns/a\"][80]: expected an integer from 0 to 65535, "
       "got \"80\""},
      {w + "workloadIps: []\n  namespace: ns\n  services: {\"ns/a\": {080: 8080}}\n",
       "cfg.yaml:4:23: workloads[0].services[\"ns/a\"][080]: expected an integer from 0 to 65535, "
       "got \"080\""},
      // services
      {"services:\n- {name: a, namespace: b, hostname: c, ports: {}}\n",
       "cfg.yaml:2:3: services[0]: missing field \"vips\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}, vip: x}\n",
       "cfg.yaml:2:61: services[0].vip: unknown field \"vip\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [10.0.0.1], ports: {}}\n",
       "cfg.yaml:2:47: services[0].vips[0]: expected network/IP (\"/10.0.0.1\" in the default "
       "network), got \"10.0.0.1\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}, cidrVips: "
       "[{network: "
       "\"\", cidr: 10.0.0.1}]}\n",
       "cfg.yaml:2:92: services[0].cidrVips[0].cidr: expected a CIDR such as 10.0.0.0/8 or "
       "fd00::/8, got \"10.0.0.1\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}, loadBalancer: "
       "{routingPreferences: [], mode: Random, healthPolicy: OnlyHealthy}}\n",
       "cfg.yaml:2:106: services[0].loadBalancer.mode: expected Standard, Strict, Failover or "
       "Passthrough, got \"Random\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}, endpoints: {u: "
       "{workloadUid: u, port: {}}}}\n",
       "cfg.yaml:2:76: services[0].endpoints[\"u\"]: missing field \"status\""},
      {"services:\n- {name: a, namespace: b, hostname: c, vips: [], ports: {}, visibility: "
       "Private}\n",
       "cfg.yaml:2:73: services[0].visibility: expected Public or Namespace, got \"Private\""},
      // policies
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, rules: []}\n",
       "cfg.yaml:2:3: policies[0]: missing field \"dryRun\""},
      {"policies:\n- {name: p, namespace: n, scope: Cluster, action: Allow, rules: [], dryRun: "
       "false}\n",
       "cfg.yaml:2:34: policies[0].scope: expected Global, Namespace or WorkloadSelector, got "
       "\"Cluster\""},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: ALLOW, rules: [], dryRun: "
       "false}\n",
       "cfg.yaml:2:50: policies[0].action: expected Allow or Deny, got \"ALLOW\""},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, rules: [[{}]], dryRun: "
       "false}\n",
       "cfg.yaml:2:66: policies[0].rules[0][0]: expected a sequence, got a mapping"},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{namespaces: [a]}]]]}\n",
       "cfg.yaml:2:96: policies[0].rules[0][0][0].namespaces[0]: expected a tagged string match: "
       "!Exact, !Prefix or !Suffix with a string, or !Presence [], got \"a\""},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{principals: [{Exact: a}]}]]]}\n",
       "cfg.yaml:2:96: policies[0].rules[0][0][0].principals[0]: expected a tagged string match: "
       "!Exact, !Prefix or !Suffix with a string, or !Presence [], got a mapping"},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{principals: [!Regex a]}]]]}\n",
       "cfg.yaml:2:96: policies[0].rules[0][0][0].principals[0]: expected a tagged string match: "
       "!Exact, !Prefix or !Suffix with a string, or !Presence [], got !Regex with a scalar"},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{principals: [!Absence []]}]]]}\n",
       "cfg.yaml:2:96: policies[0].rules[0][0][0].principals[0]: expected a tagged string match: "
       "!Exact, !Prefix or !Suffix with a string, or !Presence [], got !Absence with a sequence"},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{principals: [!Presence [a]]}]]]}\n",
       "cfg.yaml:2:96: policies[0].rules[0][0][0].principals[0]: expected a tagged string match: "
       "!Exact, !Prefix or !Suffix with a string, or !Presence [], got !Presence with a sequence"},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{sourceIps: [10.0.0.0/33]}]]]}\n",
       "cfg.yaml:2:95: policies[0].rules[0][0][0].sourceIps[0]: expected a CIDR such as 10.0.0.0/8 "
       "or fd00::/8, got \"10.0.0.0/33\""},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{destinationPorts: [http]}]]]}\n",
       "cfg.yaml:2:102: policies[0].rules[0][0][0].destinationPorts[0]: expected an integer from 0 "
       "to 65535, got \"http\""},
      {"policies:\n- {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, rules: "
       "[[[{serviceAccounts: [{namespace: a}]}]]]}\n",
       "cfg.yaml:2:101: policies[0].rules[0][0][0].serviceAccounts[0]: missing field "
       "\"serviceAccount\""},
  };
  for (const Case& c : cases) {
    CAPTURE(c.yaml);
    CHECK(parse_error(c.yaml) == c.error);
  }
}

TEST_CASE("a file that cannot be read says so") {
  LoadResult r = load_local_config("/nonexistent/ringtunnel.yaml");
  REQUIRE_FALSE(r.ok());
  CHECK(r.error->to_string() ==
        "/nonexistent/ringtunnel.yaml: cannot read: No such file or directory");
}

TEST_CASE("hostile input gives an error, never a crash") {
  std::string deep(5000, '[');
  CHECK(parse_error("workloads: " + deep) != "(no error)");
  CHECK(parse_error(std::string("workloads:\n- \0\n", 15)) != "(no error)");
  CHECK(parse_error("*a\n") != "(no error)");
  CHECK(parse_error("a: &x [*x]\n") != "(no error)");
  // Aliases of aliases: 40^5 matches from under 2 KB of text. Refused, and quickly.
  auto repeat = [](const std::string& text, int n) {
    std::string out;
    for (int i = 0; i < n; ++i)
      out += text;
    return out;
  };
  const std::string ports = "[1" + repeat(", 1", 39) + "]";
  const std::string clause = "[&m {destinationPorts: " + ports + "}" + repeat(", *m", 39) + "]";
  const std::string rule = "[&c " + clause + repeat(", *c", 39) + "]";
  const std::string rules = "[&r " + rule + repeat(", *r", 39) + "]";
  const std::string yaml =
      "policies: [&p {name: p, namespace: n, scope: Global, action: Allow, dryRun: false, "
      "rules: " +
      rules + "}" + repeat(", *p", 39) + "]\n";
  const auto start = std::chrono::steady_clock::now();
  const std::string error = parse_error(yaml);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
  CHECK(error.find("too many nodes (an alias repeated too often)") != std::string::npos);
}

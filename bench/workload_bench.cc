// What the workload model costs a new connection: routing a captured connection by its original
// destination (service VIP -> endpoint, or workload IP) and authorizing it at the destination,
// with 10,000 workloads loaded and either 0 or 1,000 policies. Of the 1,000, a handful apply to
// the inbound's local workload (one Global, two of its namespace, one it selects); the rest
// belong to other namespaces or select other workloads. Evaluation looks only at the
// destination's scopes, so the 1,000 case should cost what its few relevant policies cost.
#include <cstdint>
#include <string>

#include <benchmark/benchmark.h>

#include "ringtunnel/workload/authorization.h"
#include "ringtunnel/workload/state.h"

using namespace ringtunnel::workload;
using ringtunnel::net::IpAddress;

namespace {

constexpr int kWorkloads = 10'000;
constexpr int kNamespaces = 100;
constexpr int kServices = 1'000;  // each with 10 endpoints

IpAddress workload_ip(int i) {
  return IpAddress::v4(10, 1, static_cast<uint8_t>(i / 250), static_cast<uint8_t>(i % 250 + 1));
}
IpAddress service_ip(int i) {
  return IpAddress::v4(10, 96, static_cast<uint8_t>(i / 250), static_cast<uint8_t>(i % 250 + 1));
}
std::string ns_of(int i) {
  return "ns-" + std::to_string(i % kNamespaces);
}

Authorization make_policy(std::string name, std::string ns, Scope scope, Action action) {
  Authorization a;
  a.name = std::move(name);
  a.namespace_ = std::move(ns);
  a.scope = scope;
  a.action = action;
  // One rule: peer namespace and port 8080; deny rules name a namespace no peer has.
  Match m;
  m.namespaces.push_back({StringMatch::Kind::exact, action == Action::allow ? "client" : "nobody"});
  m.destination_ports.push_back(8080);
  a.rules.push_back(Rule{Clause{m}});
  return a;
}

std::shared_ptr<const State> build(int policies) {
  LocalConfig c;
  for (int i = 0; i < kWorkloads; ++i) {
    Workload w;
    w.uid = "cluster1//v1/Pod/" + ns_of(i) + "/w-" + std::to_string(i);
    w.name = "w-" + std::to_string(i);
    w.namespace_ = ns_of(i);
    w.service_account = "sa-" + std::to_string(i % 7);
    w.workload_ips.push_back(workload_ip(i));
    w.protocol = Protocol::hbone;
    const int svc = i % kServices;
    w.services["ns-" + std::to_string(svc % kNamespaces) + "/svc-" + std::to_string(svc)] = {
        {80, 8080}};
    if (policies > 0) {
      // Workload 0 is the destination: it selects one policy; others select unrelated ones.
      w.authorization_policies.push_back(ns_of(i) + "/selected-" + std::to_string(i % 300));
    }
    c.workloads.push_back(std::move(w));
  }
  for (int s = 0; s < kServices; ++s) {
    Service svc;
    svc.name = "svc-" + std::to_string(s);
    svc.namespace_ = "ns-" + std::to_string(s % kNamespaces);
    svc.hostname = svc.name;
    svc.vips.push_back({"", service_ip(s)});
    svc.ports = {{80, 8080}};
    c.services.push_back(std::move(svc));
  }
  if (policies > 0) {
    // Relevant to workload 0 (namespace ns-0): a Global allow, a deny and an allow of ns-0, and
    // the policy it selects.
    c.policies.push_back(make_policy("global", "istio-system", Scope::global, Action::allow));
    c.policies.push_back(make_policy("ns-deny", "ns-0", Scope::namespace_, Action::deny));
    c.policies.push_back(make_policy("ns-allow", "ns-0", Scope::namespace_, Action::allow));
    c.policies.push_back(
        make_policy("selected-0", "ns-0", Scope::workload_selector, Action::allow));
    for (int p = static_cast<int>(c.policies.size()); p < policies; ++p) {
      const std::string ns = "ns-" + std::to_string(1 + p % (kNamespaces - 1));  // never ns-0
      if (p % 2 == 0) {
        c.policies.push_back(make_policy("p-" + std::to_string(p), ns, Scope::namespace_,
                                         p % 4 == 0 ? Action::deny : Action::allow));
      } else {
        c.policies.push_back(make_policy("selected-" + std::to_string(p % 300), ns,
                                         Scope::workload_selector, Action::allow));
      }
    }
  }
  return State::build(std::move(c));
}

// Routes a captured connection to a service VIP and authorizes it at the chosen endpoint.
void BM_RouteAndAuthorize(benchmark::State& bs) {
  auto state = build(static_cast<int>(bs.range(0)));
  const Workload& local = *state->workload_by_ip("", workload_ip(0));
  const PeerIdentity peer("cluster.local", "client", "sa-1");
  if (state->resolve_outbound(local, service_ip(0), 80, 0).workload == nullptr) {
    bs.SkipWithError("no endpoint");
    return;
  }
  uint64_t n = 0;
  for (auto _ : bs) {
    const int s = static_cast<int>(n % kServices);
    Destination d = state->resolve_outbound(local, service_ip(s), 80, n);
    Connection c{workload_ip(1), 40000, d.ip, d.port, &peer};
    Verdict v = authorize(*state, *d.workload, c);
    benchmark::DoNotOptimize(v);
    ++n;
  }
  bs.counters["policies"] = static_cast<double>(state->policies().size());
}
BENCHMARK(BM_RouteAndAuthorize)->Arg(0)->Arg(1000);

// The inbound's part: is the CONNECT's address the local workload's, and may this peer have it.
void BM_InboundAdmitAndAuthorize(benchmark::State& bs) {
  auto state = build(static_cast<int>(bs.range(0)));
  const Workload& local = *state->workload_by_ip("", workload_ip(0));
  const PeerIdentity peer("cluster.local", "client", "sa-1");
  const IpAddress target = workload_ip(0);
  for (auto _ : bs) {
    const Workload* w = state->workload_by_ip("", target);
    bool ok = w == &local;
    Connection c{workload_ip(1), 40000, target, 8080, &peer};
    Verdict v = authorize(*state, local, c);
    ok = ok && v.allowed();
    benchmark::DoNotOptimize(ok);
  }
  bs.counters["policies"] = static_cast<double>(state->policies().size());
}
BENCHMARK(BM_InboundAdmitAndAuthorize)->Arg(0)->Arg(1000);

}  // namespace

BENCHMARK_MAIN();

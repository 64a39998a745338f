#include "ringtunnel/workload/state.h"

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <tuple>

namespace ringtunnel::workload {

namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

using IpMap = std::unordered_map<net::IpAddress, const Workload*, net::IpAddressHash>;
using VipMap = std::unordered_map<net::IpAddress, std::vector<const Service*>, net::IpAddressHash>;

struct PortEndpoints {
  uint16_t service_port = 0;
  std::vector<ServiceEndpoint> endpoints;
};

bool visible_to(const Service& s, std::string_view client_namespace) {
  return s.visibility != Visibility::namespace_ || s.namespace_ == client_namespace;
}

bool includes_endpoint(const Service& s, HealthStatus status) {
  return status == HealthStatus::healthy ||
         (s.load_balancer && s.load_balancer->health_policy == LoadBalancerHealthPolicy::allow_all);
}

// The workload that keeps an address several workloads claim: a Pod over anything else, then
// HBONE over TCP, then the later one.
int address_rank(const Workload& w) {
  const bool pod = w.uid.find("//Pod/") != std::string::npos;
  const bool hbone = w.protocol == Protocol::hbone;
  return (pod ? 2 : 0) + (hbone ? 1 : 0);
}

net::IpAddress endpoint_ip(const Workload& w, const net::IpAddress& like) {
  for (const net::IpAddress& ip : w.workload_ips) {
    if (ip.version == like.version) return ip;
  }
  return w.workload_ips.front();
}

}  // namespace

void PolicyGroup::add(const Authorization* policy) {
  if (policy->action == Action::deny) {
    (policy->dry_run ? deny_dry_run : deny).push_back(policy);
  } else {
    (policy->dry_run ? allow_dry_run : allow).push_back(policy);
  }
}

struct State::Index {
  std::vector<std::pair<std::string, IpMap>> workloads_by_network;
  StringMap<const Workload*> by_uid;
  std::vector<std::pair<std::string, VipMap>> services_by_network;
  std::vector<std::pair<const NetworkCidr*, const Service*>> by_cidr;
  StringMap<std::vector<const Service*>> by_host;
  std::vector<std::vector<PortEndpoints>> service_ports;  // parallel to services_
  StringMap<const Authorization*> policy_by_key;
  PolicyGroup global;
  StringMap<PolicyGroup> by_namespace;
  std::vector<PolicyGroup> selected;                // parallel to workloads_
  std::vector<const PolicyGroup*> namespace_group;  // parallel to workloads_; null: none

  template <typename M>
  static M& network_table(std::vector<std::pair<std::string, M>>& tables, std::string_view name) {
    for (auto& [n, table] : tables) {
      if (n == name) return table;
    }
    return tables.emplace_back(std::string(name), M{}).second;
  }
  template <typename M>
  static const M* find_network(const std::vector<std::pair<std::string, M>>& tables,
                               std::string_view name) {
    for (const auto& [n, table] : tables) {
      if (n == name) return &table;
    }
    return nullptr;
  }
};

namespace {

// Workloads keyed by uid, a later one replacing an earlier one (and taking the later place).
std::vector<Workload> unique_workloads(std::vector<Workload>& all,
                                       const std::function<void(std::string)>& warn) {
  std::vector<std::optional<Workload>> slots;
  StringMap<size_t> slot_of;
  for (Workload& w : all) {
    if (auto it = slot_of.find(w.uid); it != slot_of.end()) {
      warn("workload uid \"" + w.uid + "\" is defined again: the later one replaces the earlier");
      slots[it->second].reset();
    }
    slot_of[w.uid] = slots.size();
    slots.emplace_back(std::move(w));
  }
  std::vector<Workload> out;
  for (auto& s : slots) {
    if (s) out.push_back(std::move(*s));
  }
  return out;
}

// Services keyed by namespace/hostname, replaced the way an update replaces a service: a VIP
// keeps one service per namespace, and only the first definition of a service receives the
// endpoints that workloads declare for it.
struct ServiceBuild {
  std::vector<std::optional<Service>> slots;
  std::map<std::string, std::vector<size_t>> by_host;  // hostname -> slots
  struct VipLess {
    bool operator()(const std::pair<std::string, net::IpAddress>& a,
                    const std::pair<std::string, net::IpAddress>& b) const {
      return std::tie(a.first, a.second.version, a.second.bytes) <
             std::tie(b.first, b.second.version, b.second.bytes);
    }
  };
  std::map<std::pair<std::string, net::IpAddress>, std::vector<size_t>, VipLess> by_vip;
  std::vector<std::pair<NetworkCidr, size_t>> by_cidr;

  void remove(const std::string& ns, const std::string& hostname) {
    auto host = by_host.find(hostname);
    if (host == by_host.end()) return;
    auto& list = host->second;
    auto it = std::find_if(list.begin(), list.end(),
                           [&](size_t slot) { return slots[slot]->namespace_ == ns; });
    if (it == list.end()) return;
    const size_t prev = *it;
    list.erase(it);
    if (list.empty()) by_host.erase(host);
    for (const NetworkAddress& vip : slots[prev]->vips) {
      auto v = by_vip.find({vip.network, vip.address});
      if (v == by_vip.end()) continue;
      std::erase_if(v->second, [&](size_t slot) { return slots[slot]->namespace_ == ns; });
      if (v->second.empty()) by_vip.erase(v);
    }
    std::erase_if(by_cidr, [&](const auto& entry) {
      const Service& s = *slots[entry.second];
      return s.namespace_ == ns && s.hostname == hostname;
    });
    slots[prev].reset();
  }

  void insert(Service s) {
    remove(s.namespace_, s.hostname);
    const size_t slot = slots.size();
    slots.emplace_back(std::move(s));
    const Service& svc = *slots.back();
    auto place = [&](std::vector<size_t>& list) {
      for (size_t& existing : list) {
        if (slots[existing]->namespace_ == svc.namespace_) {
          existing = slot;
          return;
        }
      }
      list.push_back(slot);
    };
    for (const NetworkAddress& vip : svc.vips)
      place(by_vip[{vip.network, vip.address}]);
    for (const NetworkCidr& c : svc.cidr_vips)
      by_cidr.emplace_back(c, slot);
    place(by_host[svc.hostname]);
  }
};

}  // namespace

State::State(LocalConfig config, std::vector<std::string>* warnings)
    : index_(std::make_unique<Index>()) {
  Index& ix = *index_;
  const std::function<void(std::string)> warn = [&](std::string text) {
    if (warnings != nullptr) warnings->push_back(std::move(text));
  };

  // The endpoints each workload declares, per service ("ns/hostname" -> uid -> endpoint): a later
  // declaration for the same uid replaces an earlier one, even one of a replaced workload.
  std::map<std::string, std::map<std::string, Endpoint>> staged;
  for (const Workload& w : config.workloads) {
    for (const auto& [service, ports] : w.services) {
      staged[service][w.uid] = Endpoint{w.uid, ports, w.status};
    }
  }
  workloads_ = unique_workloads(config.workloads, warn);
  for (const Workload& w : workloads_)
    ix.by_uid[w.uid] = &w;

  for (const Workload& w : workloads_) {
    if (w.network_mode == NetworkMode::host_network) continue;
    IpMap& by_ip = Index::network_table(ix.workloads_by_network, w.network);
    for (const net::IpAddress& ip : w.workload_ips) {
      const Workload*& holder = by_ip[ip];
      if (holder == nullptr || address_rank(w) >= address_rank(*holder)) holder = &w;
    }
  }

  ServiceBuild sb;
  for (Service& s : config.services) {
    if (auto it = staged.find(s.namespaced_hostname().to_string()); it != staged.end()) {
      for (auto& [uid, ep] : it->second) {
        if (includes_endpoint(s, ep.status)) s.endpoints[uid] = ep;
      }
      staged.erase(it);
    }
    if (sb.by_host.contains(s.hostname)) {
      for (size_t slot : sb.by_host[s.hostname]) {
        if (sb.slots[slot]->namespace_ == s.namespace_) {
          warn("service " + s.namespaced_hostname().to_string() +
               " is defined again: the later one replaces the earlier");
        }
      }
    }
    sb.insert(std::move(s));
  }
  for (const auto& [service, endpoints] : staged) {
    warn("workloads declare endpoints of service " + service + ", which is not defined");
  }
  std::vector<size_t> index_of(sb.slots.size());
  for (size_t slot = 0; slot < sb.slots.size(); ++slot) {
    if (!sb.slots[slot]) continue;
    index_of[slot] = services_.size();
    services_.push_back(std::move(*sb.slots[slot]));
  }
  for (const auto& [vip, slots] : sb.by_vip) {
    auto& list = Index::network_table(ix.services_by_network, vip.first)[vip.second];
    for (size_t slot : slots)
      list.push_back(&services_[index_of[slot]]);
  }
  for (const auto& [hostname, slots] : sb.by_host) {
    auto& list = ix.by_host[hostname];
    for (size_t slot : slots)
      list.push_back(&services_[index_of[slot]]);
  }
  for (const auto& [cidr, slot] : sb.by_cidr) {
    const Service* s = &services_[index_of[slot]];
    for (const NetworkCidr& c : s->cidr_vips) {
      if (c == cidr) {
        ix.by_cidr.emplace_back(&c, s);
        break;
      }
    }
  }

  ix.service_ports.resize(services_.size());
  for (size_t i = 0; i < services_.size(); ++i) {
    const Service& s = services_[i];
    for (const auto& [service_port, target] : s.ports) {
      PortEndpoints pe{service_port, {}};
      uint64_t total = 0;
      for (const auto& [uid, ep] : s.endpoints) {
        auto w = ix.by_uid.find(ep.workload_uid);
        // Only workloads with an address can be reached (not through a network gateway).
        if (w == ix.by_uid.end() || w->second->workload_ips.empty()) continue;
        auto mapped = ep.port.find(service_port);
        // A service port that maps to 0 is served only by endpoints that map it themselves.
        if (target == 0 && mapped == ep.port.end()) continue;
        total += w->second->capacity;
        pe.endpoints.push_back(
            {w->second, mapped != ep.port.end() ? mapped->second : target, total});
      }
      ix.service_ports[i].push_back(std::move(pe));
    }
  }

  // Policies keyed by namespace/name; a later one replaces an earlier one in its place.
  StringMap<size_t> policy_slot;
  for (Authorization& a : config.policies) {
    std::string key = a.key();
    if (auto it = policy_slot.find(key); it != policy_slot.end()) {
      warn("policy " + key + " is defined again: the later one replaces the earlier");
      policies_[it->second] = std::move(a);
    } else {
      policy_slot[std::move(key)] = policies_.size();
      policies_.push_back(std::move(a));
    }
  }
  for (const Authorization& a : policies_) {
    ix.policy_by_key[a.key()] = &a;
    if (a.scope == Scope::global) ix.global.add(&a);
    if (a.scope == Scope::namespace_) ix.by_namespace[a.namespace_].add(&a);
  }
  ix.selected.resize(workloads_.size());
  ix.namespace_group.resize(workloads_.size());
  for (size_t i = 0; i < workloads_.size(); ++i) {
    const Workload& w = workloads_[i];
    if (auto it = ix.by_namespace.find(w.namespace_); it != ix.by_namespace.end()) {
      ix.namespace_group[i] = &it->second;
    }
    for (const std::string& key : w.authorization_policies) {
      auto it = ix.policy_by_key.find(key);
      if (it == ix.policy_by_key.end()) {
        warn("workload " + w.uid + " selects policy " + key + ", which is not defined");
        continue;
      }
      const Authorization* a = it->second;
      // Already applied through its scope: once is enough (the verdict would be the same).
      if (a->scope == Scope::global ||
          (a->scope == Scope::namespace_ && a->namespace_ == w.namespace_)) {
        continue;
      }
      bool seen = false;
      for (const auto* list : {&ix.selected[i].allow, &ix.selected[i].deny,
                               &ix.selected[i].allow_dry_run, &ix.selected[i].deny_dry_run}) {
        seen = seen || std::find(list->begin(), list->end(), a) != list->end();
      }
      if (!seen) ix.selected[i].add(a);
    }
  }
}

State::~State() = default;

std::shared_ptr<const State> State::build(LocalConfig config, std::vector<std::string>* warnings) {
  return std::shared_ptr<const State>(new State(std::move(config), warnings));
}

const Workload* State::workload_by_ip(std::string_view network, const net::IpAddress& ip) const {
  const IpMap* by_ip = Index::find_network(index_->workloads_by_network, network);
  if (by_ip == nullptr) return nullptr;
  auto it = by_ip->find(ip);
  return it == by_ip->end() ? nullptr : it->second;
}

const Workload* State::workload_by_uid(std::string_view uid) const {
  auto it = index_->by_uid.find(uid);
  return it == index_->by_uid.end() ? nullptr : it->second;
}

const Workload* State::workload_by_info(std::string_view namespace_, std::string_view name,
                                        std::string_view service_account) const {
  // Once per load, not per connection: a scan is enough.
  for (const Workload& w : workloads_) {
    if (w.namespace_ == namespace_ && w.name == name &&
        w.effective_service_account() == service_account) {
      return &w;
    }
  }
  return nullptr;
}

const Service* State::service_by_vip(std::string_view network, const net::IpAddress& ip,
                                     std::string_view client_namespace) const {
  if (const VipMap* vips = Index::find_network(index_->services_by_network, network)) {
    if (auto it = vips->find(ip); it != vips->end()) {
      // The client's namespace at once; else the last canonical one; else the first.
      const Service* best = nullptr;
      for (const Service* s : it->second) {
        if (!visible_to(*s, client_namespace)) continue;
        if (s->namespace_ == client_namespace) return s;
        if (s->canonical || best == nullptr) best = s;
      }
      if (best != nullptr) return best;
    }
  }
  // CIDR VIPs: rarely used, so a scan; the client's namespace, then the longest prefix, then
  // canonical; the first of equals.
  const Service* best = nullptr;
  std::tuple<bool, int, bool> best_rank{};
  for (const auto& [cidr, s] : index_->by_cidr) {
    if (cidr->network != network || !cidr->cidr.contains(ip)) continue;
    if (!visible_to(*s, client_namespace)) continue;
    std::tuple<bool, int, bool> rank{s->namespace_ == client_namespace, cidr->cidr.prefix,
                                     s->canonical};
    if (best == nullptr || rank > best_rank) {
      best = s;
      best_rank = rank;
    }
  }
  return best;
}

const Service* State::guess_inbound_service(const Workload& destination, uint16_t port,
                                            std::string_view forwarded_host) const {
  const Service* by_port = nullptr;
  for (const auto& [key, endpoint_ports] : destination.services) {
    const size_t slash = key.find('/');
    if (slash == std::string::npos) continue;
    const Service* s = service_by_host(std::string_view(key).substr(0, slash),
                                       std::string_view(key).substr(slash + 1));
    if (!s) continue;
    if (!forwarded_host.empty() && s->hostname == forwarded_host) return s;
    if (by_port) continue;
    for (const auto& [service_port, target] : s->ports)
      if (target == port) by_port = s;
    for (const auto& [service_port, target] : endpoint_ports)
      if (target == port) by_port = s;
  }
  return by_port;
}

const Service* State::service_by_host(std::string_view namespace_,
                                      std::string_view hostname) const {
  auto it = index_->by_host.find(hostname);
  if (it == index_->by_host.end()) return nullptr;
  for (const Service* s : it->second) {
    if (s->namespace_ == namespace_) return s;
  }
  return nullptr;
}

std::span<const ServiceEndpoint> State::endpoints(const Service& service,
                                                  uint16_t service_port) const {
  const size_t i = static_cast<size_t>(&service - services_.data());
  if (i >= services_.size()) return {};
  for (const PortEndpoints& pe : index_->service_ports[i]) {
    if (pe.service_port == service_port) return pe.endpoints;
  }
  return {};
}

namespace {

// Strict and Failover: only the endpoints that share the most of the routing preferences with
// the source (in order; a leading Network preference counts for all when it matches).
const ServiceEndpoint* pick_by_locality(const LoadBalancer& lb, const Workload& src,
                                        std::span<const ServiceEndpoint> eps, uint64_t random) {
  const auto& prefs = lb.routing_preferences;
  const bool network_first = !prefs.empty() && prefs[0] == LoadBalancerScope::network;
  std::vector<std::pair<size_t, const ServiceEndpoint*>> ranked;
  for (const ServiceEndpoint& ep : eps) {
    const Workload& w = *ep.workload;
    size_t rank = 0, adjust = 0;
    for (LoadBalancerScope scope : prefs) {
      bool same = false;
      switch (scope) {
        case LoadBalancerScope::region:
          same = src.locality.region == w.locality.region;
          break;
        case LoadBalancerScope::zone:
          same = src.locality.zone == w.locality.zone;
          break;
        case LoadBalancerScope::subzone:
          same = src.locality.subzone == w.locality.subzone;
          break;
        case LoadBalancerScope::node:
          same = src.node == w.node;
          break;
        case LoadBalancerScope::cluster:
          same = src.cluster_id == w.cluster_id;
          break;
        case LoadBalancerScope::network:
          same = src.network == w.network;
          if (network_first) {
            if (!same) continue;
            adjust = prefs.size() - 1;
          }
          break;
      }
      if (!same) break;
      ++rank;
    }
    if (lb.mode == LoadBalancerMode::strict && rank != prefs.size()) continue;
    ranked.emplace_back(rank + adjust, &ep);
  }
  size_t best = 0;
  for (const auto& [rank, ep] : ranked)
    best = std::max(best, rank);
  uint64_t total = 0;
  for (const auto& [rank, ep] : ranked) {
    if (rank == best) total += ep->workload->capacity;
  }
  if (total == 0) return nullptr;
  uint64_t r = random % total;
  for (const auto& [rank, ep] : ranked) {
    if (rank != best) continue;
    if (r < ep->workload->capacity) return ep;
    r -= ep->workload->capacity;
  }
  return nullptr;
}

}  // namespace

Destination State::resolve_outbound(const Workload& source, const net::IpAddress& ip, uint16_t port,
                                    uint64_t random) const {
  Destination d;
  d.ip = ip;
  d.port = port;
  if (const Service* s = service_by_vip(source.network, ip, source.namespace_)) {
    d.service = s;
    const auto& lb = s->load_balancer;
    if (lb && lb->mode == LoadBalancerMode::passthrough) return d;  // kind passthrough
    const std::span<const ServiceEndpoint> eps = endpoints(*s, port);
    const ServiceEndpoint* chosen = nullptr;
    if (lb && lb->mode != LoadBalancerMode::standard) {
      chosen = pick_by_locality(*lb, source, eps, random);
    } else if (!eps.empty() && eps.back().cumulative_capacity > 0) {
      const uint64_t r = random % eps.back().cumulative_capacity;
      chosen = &*std::upper_bound(
          eps.begin(), eps.end(), r,
          [](uint64_t value, const ServiceEndpoint& ep) { return value < ep.cumulative_capacity; });
    }
    if (chosen == nullptr) {
      d.kind = Destination::Kind::no_endpoint;
      return d;
    }
    d.kind = Destination::Kind::service;
    d.workload = chosen->workload;
    d.ip = endpoint_ip(*chosen->workload, ip);
    d.port = chosen->target_port;
    return d;
  }
  if (const Workload* w = workload_by_ip(source.network, ip)) {
    d.kind = Destination::Kind::workload;
    d.workload = w;
  }
  return d;
}

WorkloadPolicies State::policies_for(const Workload& workload) const {
  WorkloadPolicies p;
  p.global = &index_->global;
  size_t i = static_cast<size_t>(&workload - workloads_.data());
  if (i >= workloads_.size() || &workloads_[i] != &workload) {
    // Not one of ours (e.g. from an older snapshot): this snapshot's workload of that uid.
    const Workload* same = workload_by_uid(workload.uid);
    if (same == nullptr) {
      if (auto it = index_->by_namespace.find(workload.namespace_);
          it != index_->by_namespace.end()) {
        p.namespace_ = &it->second;
      }
      return p;
    }
    i = static_cast<size_t>(same - workloads_.data());
  }
  p.namespace_ = index_->namespace_group[i];
  p.selected = &index_->selected[i];
  return p;
}

const Authorization* State::policy(std::string_view key) const {
  auto it = index_->policy_by_key.find(key);
  return it == index_->policy_by_key.end() ? nullptr : it->second;
}

}  // namespace ringtunnel::workload

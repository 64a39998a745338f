// An immutable, indexed snapshot of a local config: what the connection path asks of the mesh.
//
// Built once per config load (State::build), then shared read-only by every worker thread as a
// std::shared_ptr<const State>; a reload builds a new one and swaps the pointer (atomically, by
// the owner), so lookups take no lock. Every pointer a lookup returns points into the State and
// stays valid as long as the caller holds the shared_ptr it looked up in.
//
// Lookups on the connection path cost one hash lookup each (per network: networks are few):
//   workload_by_ip      the workload that owns an address (what an HBONE inbound checks)
//   resolve_outbound    a captured connection's original destination -> the workload and port to
//                       reach (service VIP -> one endpoint and its target port; workload IP ->
//                       that workload; else the original destination, passthrough)
//   policies_for        the policies that apply to a workload, grouped for authorization.h
// Build cost and memory are linear in the config.
//
// Semantics follow the local-config format's meaning:
// - Workloads are keyed by uid: a later entry with the same uid replaces the earlier one.
//   HostNetwork workloads are not found by address. When several workloads share an address,
//   the one whose uid names a Pod wins, then an HBONE one, then the later one.
// - A workload is an endpoint of each service its `services` map names, with that map's port
//   mapping (preferred over the service's own `ports`). Unhealthy workloads are not endpoints
//   unless the service's load balancer's healthPolicy is AllowAll. Endpoints written under a
//   service are taken as written. A service defined twice (same namespace/hostname): the later
//   replaces the earlier, and only the first one receives the workloads' endpoints.
// - A VIP shared by services of several namespaces resolves, for a client namespace, to the one
//   in that namespace, else the last canonical one, else the first; services with visibility
//   Namespace are seen only from their own namespace. cidrVips are the fallback (client's
//   namespace first, then the longest prefix, then canonical).
// - Policies are keyed by "namespace/name" (a later one replaces the earlier). Global policies
//   apply to every workload, Namespace policies to the workloads of their namespace, and any
//   policy to the workloads whose authorizationPolicies name it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringtunnel/net/ip.h"
#include "ringtunnel/workload/model.h"

namespace ringtunnel::workload {

// One usable endpoint of a service port: the workload and the port it listens on.
struct ServiceEndpoint {
  const Workload* workload = nullptr;
  uint16_t target_port = 0;
  // Running sum of the endpoints' capacities up to and including this one (weighted choice).
  uint64_t cumulative_capacity = 0;
};

// Where a captured connection goes.
struct Destination {
  enum class Kind {
    passthrough,  // connect to the original destination as it is: no workload or service is
                  // there (or `service` is set: its load balancer's mode is Passthrough)
    workload,     // a workload's own IP: `workload`, `ip`, `port` (the original port)
    service,      // a service VIP: one endpoint `workload` of `service`, its `ip` and mapped `port`
    no_endpoint,  // a service VIP with no usable endpoint for that port: refuse the connection
  };
  Kind kind = Kind::passthrough;
  const Workload* workload = nullptr;
  const Service* service = nullptr;
  net::IpAddress ip;  // the address to reach the workload at (the original one for passthrough)
  uint16_t port = 0;
};

// The policies of one scope, split the way authorization evaluates them.
struct PolicyGroup {
  std::vector<const Authorization*> deny, allow, deny_dry_run, allow_dry_run;

  void add(const Authorization* policy);
  bool empty() const {
    return deny.empty() && allow.empty() && deny_dry_run.empty() && allow_dry_run.empty();
  }
};

// The policies that apply to one workload: at most three groups, found without a search.
struct WorkloadPolicies {
  const PolicyGroup* global = nullptr;
  const PolicyGroup* namespace_ = nullptr;  // null when its namespace has none
  const PolicyGroup* selected = nullptr;    // those its authorizationPolicies name; may be null
};

class State {
 public:
  // Never fails: the parser has already checked everything a lookup relies on. `warnings`
  // (optional) receives what the format tolerates but an operator wants to know: a policy a
  // workload selects or a service a workload joins that is not defined, and a workload uid,
  // service or policy defined twice (the later one wins).
  static std::shared_ptr<const State> build(LocalConfig config,
                                            std::vector<std::string>* warnings = nullptr);

  const Workload* workload_by_ip(std::string_view network, const net::IpAddress& ip) const;
  const Workload* workload_by_uid(std::string_view uid) const;
  // The workload a proxy serves, named by namespace, name and service account (its effective
  // one: "default" when the config leaves it empty, as the store's check at load).
  const Workload* workload_by_info(std::string_view namespace_, std::string_view name,
                                   std::string_view service_account) const;

  // The service a client in `client_namespace` reaches at this VIP (see the header comment).
  const Service* service_by_vip(std::string_view network, const net::IpAddress& ip,
                                std::string_view client_namespace) const;
  const Service* service_by_host(std::string_view namespace_, std::string_view hostname) const;
  // The service an inbound connection to `destination` (a workload of this state) on `port`
  // most likely came through, for metrics: among the services `destination` is an endpoint of,
  // the one whose hostname the client named (`forwarded: ...;host=`), else the first whose port
  // mapping (the service's, or the workload's own for that service) targets `port`; nullptr
  // when none does. The client's word is taken only among those services.
  const Service* guess_inbound_service(const Workload& destination, uint16_t port,
                                       std::string_view forwarded_host) const;
  // The usable endpoints of a service port; empty when the service has no such port.
  std::span<const ServiceEndpoint> endpoints(const Service& service, uint16_t service_port) const;

  // Routes a captured connection of `source` (the local workload) to `ip:port`. `random` picks
  // among a service's endpoints, weighted by capacity (pass a fresh random number per call).
  Destination resolve_outbound(const Workload& source, const net::IpAddress& ip, uint16_t port,
                               uint64_t random) const;

  // The policies that apply to `workload`: one of this State's (found at once), else this
  // State's workload of the same uid (a hash lookup), else those of its namespace and Global.
  WorkloadPolicies policies_for(const Workload& workload) const;
  // A policy by "namespace/name".
  const Authorization* policy(std::string_view key) const;

  std::span<const Workload> workloads() const { return workloads_; }
  std::span<const Service> services() const { return services_; }
  std::span<const Authorization> policies() const { return policies_; }

  ~State();
  State(const State&) = delete;
  State& operator=(const State&) = delete;

 private:
  struct Index;  // the tables; defined in state.cc

  State(LocalConfig config, std::vector<std::string>* warnings);

  std::vector<Workload> workloads_;
  std::vector<Service> services_;
  std::vector<Authorization> policies_;
  std::unique_ptr<Index> index_;
};

}  // namespace ringtunnel::workload

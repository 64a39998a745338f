// The mesh's workload model, as written in a local config file (the YAML that a mesh node proxy
// reads instead of a control plane): workloads, services and authorization policies. Plain values:
// local_config.h fills them from a file, state.h indexes them for the connection path,
// authorization.h evaluates the policies. Defaults are those of the file format (a field left
// out takes the value given here).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/net/ip.h"

namespace ringtunnel::workload {

// How a workload accepts connections: HBONE (mutual TLS tunnel to its node proxy's port 15008)
// or plain TCP to the workload's own port.
enum class Protocol { tcp, hbone };
enum class NetworkMode { standard, host_network };
enum class HealthStatus { healthy, unhealthy };

// "network/ip": an address qualified by the network it lives in ("" is the default network).
struct NetworkAddress {
  std::string network;
  net::IpAddress address;
  friend bool operator==(const NetworkAddress&, const NetworkAddress&) = default;
};

struct NetworkCidr {
  std::string network;
  net::IpCidr cidr;
  friend bool operator==(const NetworkCidr&, const NetworkCidr&) = default;
};

// "namespace/hostname": how a workload names the services it belongs to.
struct NamespacedHostname {
  std::string namespace_;
  std::string hostname;
  std::string to_string() const { return namespace_ + "/" + hostname; }
  friend bool operator==(const NamespacedHostname&, const NamespacedHostname&) = default;
};

// A waypoint or network gateway: an address ("network/ip") or a service ("ns/hostname").
struct GatewayAddress {
  std::optional<NetworkAddress> address;  // exactly one of address and hostname is set
  std::optional<NamespacedHostname> hostname;
  uint16_t hbone_mtls_port = 0;
};

struct ApplicationTunnel {
  enum class Protocol { none, proxy };
  Protocol protocol = Protocol::none;
  std::optional<uint16_t> port;
};

struct Locality {
  std::string region;
  std::string zone;
  std::string subzone;
};

// Service port -> target port.
using PortMap = std::map<uint16_t, uint16_t>;

struct Workload {
  std::vector<net::IpAddress> workload_ips;
  std::optional<GatewayAddress> waypoint;
  std::optional<GatewayAddress> network_gateway;
  Protocol protocol = Protocol::tcp;
  NetworkMode network_mode = NetworkMode::standard;
  std::string uid;
  std::string name;
  std::string namespace_;
  // As written; identity() applies the defaults.
  std::string trust_domain;
  std::string service_account;
  std::string network;
  std::string workload_name;
  std::string workload_type;
  std::string canonical_name;
  std::string canonical_revision;
  std::string hostname;
  std::string node;
  bool native_tunnel = false;
  std::optional<ApplicationTunnel> application_tunnel;
  // Keys ("namespace/name") of the policies that select this workload.
  std::vector<std::string> authorization_policies;
  HealthStatus status = HealthStatus::healthy;
  std::string cluster_id;
  Locality locality;
  uint32_t capacity = 1;
  // The services this workload is an endpoint of, each with its own port mapping.
  std::map<std::string, PortMap> services;  // key: "namespace/hostname"

  bool has_ip(const net::IpAddress& ip) const;
  // The trust domain, "cluster.local" when none is written.
  const std::string& effective_trust_domain() const;
  // The service account, "default" when none is written.
  const std::string& effective_service_account() const;
  // "spiffe://<trust domain>/ns/<namespace>/sa/<service account>", with the defaults above.
  std::string spiffe_id() const;
};

enum class LoadBalancerMode { standard, strict, failover, passthrough };
enum class LoadBalancerHealthPolicy { only_healthy, allow_all };
enum class LoadBalancerScope { region, zone, subzone, node, cluster, network };

struct LoadBalancer {
  std::vector<LoadBalancerScope> routing_preferences;
  LoadBalancerMode mode = LoadBalancerMode::standard;
  LoadBalancerHealthPolicy health_policy = LoadBalancerHealthPolicy::only_healthy;
};

enum class IpFamily { dual, ipv4, ipv6 };
enum class Visibility { public_, namespace_ };

// An endpoint written directly under a service (besides those the workloads declare).
struct Endpoint {
  std::string workload_uid;
  PortMap port;
  HealthStatus status = HealthStatus::healthy;
};

struct WeightedWaypoint {
  GatewayAddress destination;
  uint32_t weight = 0;
};

struct Service {
  std::string name;
  std::string namespace_;
  std::string hostname;
  std::vector<NetworkAddress> vips;
  std::vector<NetworkCidr> cidr_vips;
  PortMap ports;
  std::map<std::string, Endpoint> endpoints;  // key: workload uid
  std::vector<std::string> subject_alt_names;
  std::optional<GatewayAddress> waypoint;
  std::vector<WeightedWaypoint> weighted_waypoints;
  std::optional<LoadBalancer> load_balancer;
  std::optional<IpFamily> ip_families;
  bool canonical = false;
  Visibility visibility = Visibility::public_;

  NamespacedHostname namespaced_hostname() const { return {namespace_, hostname}; }
};

// A string condition on a peer's namespace or principal.
struct StringMatch {
  enum class Kind { exact, prefix, suffix, presence };
  Kind kind = Kind::exact;
  std::string value;  // unused for presence

  // presence: any non-empty string.
  bool matches(std::string_view text) const;
  friend bool operator==(const StringMatch&, const StringMatch&) = default;
};

struct ServiceAccountMatch {
  std::string namespace_;
  std::string service_account;
  friend bool operator==(const ServiceAccountMatch&, const ServiceAccountMatch&) = default;
};

// One match of a clause: every non-empty field must hold (any of its values), and no value of a
// non-empty not-field may hold. A match with every field empty is skipped.
struct Match {
  std::vector<StringMatch> namespaces, not_namespaces;
  std::vector<ServiceAccountMatch> service_accounts, not_service_accounts;
  std::vector<StringMatch> principals, not_principals;  // without "spiffe://"
  std::vector<net::IpCidr> source_ips, not_source_ips;
  std::vector<net::IpCidr> destination_ips, not_destination_ips;
  std::vector<uint16_t> destination_ports, not_destination_ports;

  bool empty() const;
};

enum class Scope { global, namespace_, workload_selector };
enum class Action { allow, deny };

// A rule holds clauses (all must match); a clause holds matches (one must match).
using Clause = std::vector<Match>;
using Rule = std::vector<Clause>;

struct Authorization {
  std::string name;
  std::string namespace_;
  Scope scope = Scope::global;
  Action action = Action::allow;
  std::vector<Rule> rules;  // one must match; none at all: the policy never matches
  bool dry_run = false;

  // "namespace/name": how workloads name it in authorizationPolicies.
  std::string key() const { return namespace_ + "/" + name; }
};

struct LocalConfig {
  std::vector<Workload> workloads;
  std::vector<Service> services;
  std::vector<Authorization> policies;
};

const char* to_string(Protocol p);
const char* to_string(Scope s);
const char* to_string(Action a);

}  // namespace ringtunnel::workload

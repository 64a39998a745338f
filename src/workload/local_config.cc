#include "ringtunnel/workload/local_config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <set>
#include <sstream>

namespace ringtunnel::workload {

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!path.empty()) out += path + ": ";
  out += reason;
  return out;
}

namespace {

// Thrown inside the reader only; parse_local_config turns it into a ConfigError.
struct Failure {
  YAML::Mark mark;
  std::string path;
  std::string reason;
};

std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string child(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "." + std::string(name);
}

std::string index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// yaml-cpp's tag for a node written without one: "?" when plain, "!" when quoted or a block
// scalar. Anything else was written explicitly (e.g. "!Exact").
bool untagged(const YAML::Node& n) {
  return n.Tag() == "?" || n.Tag() == "!" || n.Tag().empty();
}
bool plain(const YAML::Node& n) {
  return n.Tag() == "?" || n.Tag().empty();
}

const char* kind_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Null:
      return "nothing (null)";
    default:
      return "a scalar";
  }
}

std::string got(const YAML::Node& n) {
  if (n.IsScalar()) return quoted(n.Scalar());
  return kind_name(n);
}

class Reader {
 public:
  // `budget`: how many nodes may be visited. Aliases let a small document name the same node
  // many times over (each level of aliases multiplying the last), so the walk is bounded by the
  // document's size rather than by what it expands to.
  Reader(std::vector<ConfigWarning>& warnings, size_t budget)
      : warnings_(warnings), budget_(budget) {}

  void spend(const YAML::Node& at, const std::string& path) const {
    if (budget_ == 0) {
      fail(at, path, "the document expands to too many nodes (an alias repeated too often)");
    }
    --budget_;
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& path, std::string reason) const {
    throw Failure{mark_of(at), path, std::move(reason)};
  }

  // Where a node without a position of its own (a missing value) is reported: its field's key.
  mutable YAML::Mark key_mark_ = YAML::Mark::null_mark();

  void warn(const YAML::Node& at, const std::string& path, std::string reason) const {
    const YAML::Mark m = mark_of(at);
    warnings_.push_back({m.line + 1, m.column + 1, path, std::move(reason)});
  }

  // --- scalars ---------------------------------------------------------------------------------

  // Any scalar is a string (numbers and booleans included, as written); null is "".
  std::string string(const YAML::Node& n, const std::string& path) const {
    if (n.IsNull()) return "";
    if (!n.IsScalar()) fail(n, path, "expected a string, got " + got(n));
    return n.Scalar();
  }

  bool boolean(const YAML::Node& n, const std::string& path) const {
    if (n.IsScalar() && plain(n)) {
      const std::string& s = n.Scalar();
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
    }
    fail(n, path, "expected true or false, got " + got(n));
  }

  // A plain (unquoted) YAML integer: decimal without leading zeros, or 0x, 0o, 0b; an optional '+'.
  uint64_t unsigned_int(const YAML::Node& n, const std::string& path, uint64_t max) const {
    const std::string what = "expected an integer from 0 to " + std::to_string(max) + ", got ";
    if (!n.IsScalar() || !plain(n)) fail(n, path, what + got(n));
    std::string_view s = n.Scalar();
    if (s.starts_with('+')) s.remove_prefix(1);
    int base = 10;
    if (s.starts_with("0x")) {
      base = 16;
    } else if (s.starts_with("0o")) {
      base = 8;
    } else if (s.starts_with("0b")) {
      base = 2;
    }
    if (base != 10) s.remove_prefix(2);
    const bool leading_zero = base == 10 && s.size() > 1 && s[0] == '0';
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
    if (s.empty() || leading_zero || s[0] == '-' || s[0] == '+' || ec != std::errc() ||
        end != s.data() + s.size() || value > max) {
      fail(n, path, what + got(n));
    }
    return value;
  }

  uint16_t port(const YAML::Node& n, const std::string& path) const {
    return static_cast<uint16_t>(unsigned_int(n, path, 65535));
  }

  uint32_t u32(const YAML::Node& n, const std::string& path) const {
    return static_cast<uint32_t>(unsigned_int(n, path, 4294967295u));
  }

  // A unit variant: its name as a scalar (a tag with nothing after it, `!HBONE`, also names it).
  template <typename E>
  E variant(const YAML::Node& n, const std::string& path,
            std::initializer_list<std::pair<const char*, E>> names) const {
    std::string name;
    if (n.IsScalar() && untagged(n)) {
      name = n.Scalar();
    } else if ((n.IsScalar() && n.Scalar().empty()) || n.IsNull()) {
      name = n.Tag().starts_with('!') ? n.Tag().substr(1) : "";
    }
    for (const auto& [text, value] : names) {
      if (name == text) return value;
    }
    std::string expected;
    size_t i = 0;
    for (const auto& entry : names) {
      if (i > 0) expected += (i + 1 == names.size()) ? " or " : ", ";
      expected += entry.first;
      ++i;
    }
    fail(n, path, "expected " + expected + ", got " + got(n));
  }

  net::IpAddress ip(const YAML::Node& n, const std::string& path) const {
    const std::string s = string(n, path);
    auto ip = net::IpAddress::parse(s);
    if (!ip) fail(n, path, "expected an IP address, got " + quoted(s));
    return *ip;
  }

  net::IpCidr cidr(const YAML::Node& n, const std::string& path) const {
    const std::string s = string(n, path);
    auto c = net::IpCidr::parse(s);
    if (!c) fail(n, path, "expected a CIDR such as 10.0.0.0/8 or fd00::/8, got " + quoted(s));
    return *c;
  }

  NetworkAddress network_address(const YAML::Node& n, const std::string& path) const {
    const std::string s = string(n, path);
    const size_t slash = s.find('/');
    std::optional<net::IpAddress> ip;
    if (slash != std::string::npos)
      ip = net::IpAddress::parse(std::string_view(s).substr(slash + 1));
    if (!ip)
      fail(n, path, "expected network/IP (\"/10.0.0.1\" in the default network), got " + quoted(s));
    return {s.substr(0, slash), *ip};
  }

  std::optional<NamespacedHostname> try_namespaced_hostname(std::string_view s) const {
    const size_t slash = s.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    return NamespacedHostname{std::string(s.substr(0, slash)), std::string(s.substr(slash + 1))};
  }

  NamespacedHostname namespaced_hostname(const YAML::Node& at, const std::string& path,
                                         std::string_view s) const {
    auto nh = try_namespaced_hostname(s);
    if (!nh) fail(at, path, "expected namespace/hostname, got " + quoted(s));
    return *nh;
  }

  StringMatch string_match(const YAML::Node& n, const std::string& path) const {
    const std::string& tag = n.Tag();
    StringMatch m;
    if (tag == "!Exact" || tag == "!Prefix" || tag == "!Suffix") {
      m.kind = tag == "!Exact"    ? StringMatch::Kind::exact
               : tag == "!Prefix" ? StringMatch::Kind::prefix
                                  : StringMatch::Kind::suffix;
      m.value = string(n, path);
      return m;
    }
    if (tag == "!Presence" &&
        ((n.IsSequence() && n.size() == 0) || (n.IsScalar() && n.Scalar().empty()) || n.IsNull())) {
      m.kind = StringMatch::Kind::presence;
      return m;
    }
    fail(n, path,
         "expected a tagged string match: !Exact, !Prefix or !Suffix with a string, or "
         "!Presence [], got " +
             (untagged(n) ? got(n) : n.Tag() + " with " + kind_name(n)));
  }

  // --- containers ------------------------------------------------------------------------------

  // A sequence; nothing (null) is an empty one.
  template <typename F>
  void sequence(const YAML::Node& n, const std::string& path, F&& each) const {
    if (n.IsNull()) return;
    if (!n.IsSequence()) fail(n, path, std::string("expected a sequence, got ") + kind_name(n));
    size_t i = 0;
    for (const YAML::Node& item : n) {
      const std::string item_path = index(path, i);
      spend(item, item_path);
      each(item, item_path);
      ++i;
    }
  }

  template <typename T, typename F>
  std::vector<T> list(const YAML::Node& n, const std::string& path, F&& one) const {
    std::vector<T> out;
    sequence(n, path,
             [&](const YAML::Node& item, const std::string& p) { out.push_back(one(item, p)); });
    return out;
  }

  // A mapping's entries; nothing (null) is an empty one. A later duplicate key replaces the
  // earlier one, as in the format's maps.
  template <typename F>
  void mapping(const YAML::Node& n, const std::string& path, F&& each) const {
    if (n.IsNull()) return;
    if (!n.IsMap()) fail(n, path, std::string("expected a mapping, got ") + kind_name(n));
    for (auto it = n.begin(); it != n.end(); ++it) {
      // Copies: the iterator hands out a temporary pair.
      const YAML::Node key = it->first, value = it->second;
      spend(key, path);
      each(key, value);
    }
  }

  PortMap ports(const YAML::Node& n, const std::string& path) const {
    PortMap out;
    mapping(n, path, [&](const YAML::Node& k, const YAML::Node& v) {
      const std::string key_path = path + "[" + (k.IsScalar() ? k.Scalar() : "?") + "]";
      const uint16_t service_port = port(k, key_path);
      out[service_port] = port(v, key_path);
    });
    return out;
  }

  struct Field {
    const char* name;
    bool required;
    std::function<void(const YAML::Node&, const std::string&)> read;
  };
  enum class Unknown { reject, ignore };

  // A struct: each key must be one of `fields` (or is ignored with a warning), at most once;
  // required fields must be present.
  void fields(const YAML::Node& n, const std::string& path, const std::vector<Field>& known,
              Unknown unknown = Unknown::reject) const {
    if (!n.IsNull() && !n.IsMap())
      fail(n, path, std::string("expected a mapping, got ") + kind_name(n));
    std::set<std::string> seen;
    if (n.IsMap()) {
      for (auto it = n.begin(); it != n.end(); ++it) {
        // Copies: the iterator hands out a temporary pair.
        const YAML::Node key = it->first, value = it->second;
        if (!key.IsScalar())
          fail(key, path, std::string("expected a field name, got ") + kind_name(key));
        const std::string& name = key.Scalar();
        const std::string field_path = child(path, name);
        spend(key, field_path);
        const Field* field = nullptr;
        for (const Field& f : known) {
          if (name == f.name) field = &f;
        }
        if (field == nullptr) {
          if (unknown == Unknown::reject) fail(key, field_path, "unknown field " + quoted(name));
          warn(key, field_path, "unknown field " + quoted(name) + " ignored");
          continue;
        }
        if (!seen.insert(name).second) fail(key, field_path, "duplicate field " + quoted(name));
        key_mark_ = key.Mark();
        field->read(value.IsDefined() ? value : YAML::Node(), field_path);
      }
    }
    for (const Field& f : known) {
      if (f.required && !seen.contains(f.name)) {
        fail(n, path, "missing field " + quoted(f.name));
      }
    }
  }

  // --- the format ------------------------------------------------------------------------------

  GatewayAddress gateway(const YAML::Node& n, const std::string& path) const {
    GatewayAddress g;
    fields(n, path,
           {{"destination", true,
             [&](const YAML::Node& v, const std::string& p) {
               // An address when what follows the '/' is an IP, else a namespace/hostname.
               const std::string s = string(v, p);
               const size_t slash = s.find('/');
               if (slash != std::string::npos) {
                 if (auto ip = net::IpAddress::parse(std::string_view(s).substr(slash + 1))) {
                   g.address = NetworkAddress{s.substr(0, slash), *ip};
                   return;
                 }
               }
               if (auto nh = try_namespaced_hostname(s)) {
                 g.hostname = *nh;
                 return;
               }
               fail(v, p, "expected network/IP or namespace/hostname, got " + quoted(s));
             }},
            {"hboneMtlsPort", true,
             [&](const YAML::Node& v, const std::string& p) { g.hbone_mtls_port = port(v, p); }}});
    return g;
  }

  std::optional<GatewayAddress> optional_gateway(const YAML::Node& n, const std::string& p) const {
    if (n.IsNull()) return std::nullopt;
    return gateway(n, p);
  }

  HealthStatus health(const YAML::Node& n, const std::string& p) const {
    return variant<HealthStatus>(
        n, p, {{"Healthy", HealthStatus::healthy}, {"Unhealthy", HealthStatus::unhealthy}});
  }

  Workload workload(const YAML::Node& n, const std::string& path) const {
    Workload w;
    auto str = [this](std::string& out) {
      return [this, &out](const YAML::Node& v, const std::string& p) { out = string(v, p); };
    };
    fields(
        n, path,
        {{"workloadIps", true,
          [&](const YAML::Node& v, const std::string& p) {
            w.workload_ips = list<net::IpAddress>(
                v, p,
                [&](const YAML::Node& i, const std::string& ip_path) { return ip(i, ip_path); });
          }},
         {"waypoint", false,
          [&](const YAML::Node& v, const std::string& p) { w.waypoint = optional_gateway(v, p); }},
         {"networkGateway", false,
          [&](const YAML::Node& v, const std::string& p) {
            w.network_gateway = optional_gateway(v, p);
          }},
         {"protocol", false,
          [&](const YAML::Node& v, const std::string& p) {
            w.protocol =
                variant<Protocol>(v, p, {{"HBONE", Protocol::hbone}, {"TCP", Protocol::tcp}});
          }},
         {"networkMode", false,
          [&](const YAML::Node& v, const std::string& p) {
            w.network_mode = variant<NetworkMode>(
                v, p,
                {{"Standard", NetworkMode::standard}, {"HostNetwork", NetworkMode::host_network}});
          }},
         {"uid", false, str(w.uid)},
         {"name", false, str(w.name)},
         {"namespace", true, str(w.namespace_)},
         {"trustDomain", false, str(w.trust_domain)},
         {"serviceAccount", false, str(w.service_account)},
         {"network", false, str(w.network)},
         {"workloadName", false, str(w.workload_name)},
         {"workloadType", false, str(w.workload_type)},
         {"canonicalName", false, str(w.canonical_name)},
         {"canonicalRevision", false, str(w.canonical_revision)},
         {"hostname", false, str(w.hostname)},
         {"node", false, str(w.node)},
         {"nativeTunnel", false,
          [&](const YAML::Node& v, const std::string& p) { w.native_tunnel = boolean(v, p); }},
         {"applicationTunnel", false,
          [&](const YAML::Node& v, const std::string& p) {
            if (v.IsNull()) return;
            ApplicationTunnel t;
            fields(v, p,
                   {{"protocol", true,
                     [&](const YAML::Node& pv, const std::string& pp) {
                       t.protocol = variant<ApplicationTunnel::Protocol>(
                           pv, pp,
                           {{"NONE", ApplicationTunnel::Protocol::none},
                            {"PROXY", ApplicationTunnel::Protocol::proxy}});
                     }},
                    {"port", false, [&](const YAML::Node& pv, const std::string& pp) {
                       if (!pv.IsNull()) t.port = port(pv, pp);
                     }}});
            w.application_tunnel = t;
          }},
         {"authorizationPolicies", false,
          [&](const YAML::Node& v, const std::string& p) {
            w.authorization_policies =
                list<std::string>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                  return string(i, item_path);
                });
          }},
         {"status", false,
          [&](const YAML::Node& v, const std::string& p) { w.status = health(v, p); }},
         {"clusterId", false, str(w.cluster_id)},
         {"locality", false,
          [&](const YAML::Node& v, const std::string& p) {
            auto s = [this](std::string& out) {
              return [this, &out](const YAML::Node& lv, const std::string& lp) {
                out = string(lv, lp);
              };
            };
            fields(v, p,
                   {{"region", true, s(w.locality.region)},
                    {"zone", true, s(w.locality.zone)},
                    {"subzone", true, s(w.locality.subzone)}},
                   Unknown::ignore);
          }},
         {"capacity", false,
          [&](const YAML::Node& v, const std::string& p) { w.capacity = u32(v, p); }},
         {"services", true, [&](const YAML::Node& v, const std::string& p) {
            mapping(v, p, [&](const YAML::Node& k, const YAML::Node& ports_node) {
              const std::string key = string(k, p);
              const std::string key_path = p + "[" + quoted(key) + "]";
              namespaced_hostname(k, key_path, key);
              w.services[key] = ports(ports_node, key_path);
            });
          }}});
    return w;
  }

  LoadBalancer load_balancer(const YAML::Node& n, const std::string& path) const {
    LoadBalancer lb;
    fields(n, path,
           {{"routingPreferences", true,
             [&](const YAML::Node& v, const std::string& p) {
               lb.routing_preferences = list<LoadBalancerScope>(
                   v, p, [&](const YAML::Node& i, const std::string& item_path) {
                     return variant<LoadBalancerScope>(i, item_path,
                                                       {{"Region", LoadBalancerScope::region},
                                                        {"Zone", LoadBalancerScope::zone},
                                                        {"Subzone", LoadBalancerScope::subzone},
                                                        {"Node", LoadBalancerScope::node},
                                                        {"Cluster", LoadBalancerScope::cluster},
                                                        {"Network", LoadBalancerScope::network}});
                   });
             }},
            {"mode", true,
             [&](const YAML::Node& v, const std::string& p) {
               lb.mode =
                   variant<LoadBalancerMode>(v, p,
                                             {{"Standard", LoadBalancerMode::standard},
                                              {"Strict", LoadBalancerMode::strict},
                                              {"Failover", LoadBalancerMode::failover},
                                              {"Passthrough", LoadBalancerMode::passthrough}});
             }},
            {"healthPolicy", true, [&](const YAML::Node& v, const std::string& p) {
               lb.health_policy = variant<LoadBalancerHealthPolicy>(
                   v, p,
                   {{"OnlyHealthy", LoadBalancerHealthPolicy::only_healthy},
                    {"AllowAll", LoadBalancerHealthPolicy::allow_all}});
             }}});
    return lb;
  }

  Service service(const YAML::Node& n, const std::string& path) const {
    Service s;
    auto str = [this](std::string& out) {
      return [this, &out](const YAML::Node& v, const std::string& p) { out = string(v, p); };
    };
    fields(
        n, path,
        {{"name", true, str(s.name)},
         {"namespace", true, str(s.namespace_)},
         {"hostname", true, str(s.hostname)},
         {"vips", true,
          [&](const YAML::Node& v, const std::string& p) {
            s.vips =
                list<NetworkAddress>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                  return network_address(i, item_path);
                });
          }},
         {"cidrVips", false,
          [&](const YAML::Node& v, const std::string& p) {
            s.cidr_vips =
                list<NetworkCidr>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                  NetworkCidr c;
                  fields(i, item_path,
                         {{"network", true,
                           [&](const YAML::Node& cv, const std::string& cp) {
                             c.network = string(cv, cp);
                           }},
                          {"cidr", true,
                           [&](const YAML::Node& cv, const std::string& cp) {
                             c.cidr = cidr(cv, cp);
                           }}},
                         Unknown::ignore);
                  return c;
                });
          }},
         {"ports", true, [&](const YAML::Node& v, const std::string& p) { s.ports = ports(v, p); }},
         {"endpoints", false,
          [&](const YAML::Node& v, const std::string& p) {
            mapping(v, p, [&](const YAML::Node& k, const YAML::Node& ev) {
              const std::string uid = string(k, p);
              const std::string ep_path = p + "[" + quoted(uid) + "]";
              Endpoint e;
              fields(
                  ev, ep_path,
                  {{"workloadUid", true,
                    [&](const YAML::Node& fv, const std::string& fp) {
                      e.workload_uid = string(fv, fp);
                    }},
                   {"port", true,
                    [&](const YAML::Node& fv, const std::string& fp) { e.port = ports(fv, fp); }},
                   {"status", true, [&](const YAML::Node& fv, const std::string& fp) {
                      e.status = health(fv, fp);
                    }}});
              s.endpoints[uid] = e;
            });
          }},
         {"subjectAltNames", false,
          [&](const YAML::Node& v, const std::string& p) {
            s.subject_alt_names =
                list<std::string>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                  return string(i, item_path);
                });
          }},
         {"waypoint", false,
          [&](const YAML::Node& v, const std::string& p) { s.waypoint = optional_gateway(v, p); }},
         {"weightedWaypoints", false,
          [&](const YAML::Node& v, const std::string& p) {
            s.weighted_waypoints = list<WeightedWaypoint>(
                v, p, [&](const YAML::Node& i, const std::string& item_path) {
                  WeightedWaypoint ww;
                  fields(i, item_path,
                         {{"destination", true,
                           [&](const YAML::Node& fv, const std::string& fp) {
                             ww.destination = gateway(fv, fp);
                           }},
                          {"weight", true, [&](const YAML::Node& fv, const std::string& fp) {
                             ww.weight = u32(fv, fp);
                           }}});
                  return ww;
                });
          }},
         {"loadBalancer", false,
          [&](const YAML::Node& v, const std::string& p) {
            if (!v.IsNull()) s.load_balancer = load_balancer(v, p);
          }},
         {"ipFamilies", false,
          [&](const YAML::Node& v, const std::string& p) {
            if (v.IsNull()) return;
            s.ip_families = variant<IpFamily>(
                v, p,
                {{"Dual", IpFamily::dual}, {"IPv4", IpFamily::ipv4}, {"IPv6", IpFamily::ipv6}});
          }},
         {"canonical", false,
          [&](const YAML::Node& v, const std::string& p) { s.canonical = boolean(v, p); }},
         {"visibility", false, [&](const YAML::Node& v, const std::string& p) {
            s.visibility = variant<Visibility>(
                v, p, {{"Public", Visibility::public_}, {"Namespace", Visibility::namespace_}});
          }}});
    return s;
  }

  Match match(const YAML::Node& n, const std::string& path) const {
    Match m;
    auto strings = [&](std::vector<StringMatch>& out) {
      return [&](const YAML::Node& v, const std::string& p) {
        out = list<StringMatch>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
          return string_match(i, item_path);
        });
      };
    };
    auto accounts = [&](std::vector<ServiceAccountMatch>& out) {
      return [&](const YAML::Node& v, const std::string& p) {
        out =
            list<ServiceAccountMatch>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
              ServiceAccountMatch sa;
              fields(i, item_path,
                     {{"namespace", true,
                       [&](const YAML::Node& fv, const std::string& fp) {
                         sa.namespace_ = string(fv, fp);
                       }},
                      {"serviceAccount", true,
                       [&](const YAML::Node& fv, const std::string& fp) {
                         sa.service_account = string(fv, fp);
                       }}},
                     Unknown::ignore);
              return sa;
            });
      };
    };
    auto cidrs = [&](std::vector<net::IpCidr>& out) {
      return [&](const YAML::Node& v, const std::string& p) {
        out = list<net::IpCidr>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
          return cidr(i, item_path);
        });
      };
    };
    auto port_list = [&](std::vector<uint16_t>& out) {
      return [&](const YAML::Node& v, const std::string& p) {
        out = list<uint16_t>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
          return port(i, item_path);
        });
      };
    };
    fields(n, path,
           {{"namespaces", false, strings(m.namespaces)},
            {"notNamespaces", false, strings(m.not_namespaces)},
            {"serviceAccounts", false, accounts(m.service_accounts)},
            {"notServiceAccounts", false, accounts(m.not_service_accounts)},
            {"principals", false, strings(m.principals)},
            {"notPrincipals", false, strings(m.not_principals)},
            {"sourceIps", false, cidrs(m.source_ips)},
            {"notSourceIps", false, cidrs(m.not_source_ips)},
            {"destinationIps", false, cidrs(m.destination_ips)},
            {"notDestinationIps", false, cidrs(m.not_destination_ips)},
            {"destinationPorts", false, port_list(m.destination_ports)},
            {"notDestinationPorts", false, port_list(m.not_destination_ports)}},
           Unknown::ignore);
    return m;
  }

  Authorization authorization(const YAML::Node& n, const std::string& path) const {
    Authorization a;
    fields(
        n, path,
        {{"name", true, [&](const YAML::Node& v, const std::string& p) { a.name = string(v, p); }},
         {"namespace", true,
          [&](const YAML::Node& v, const std::string& p) { a.namespace_ = string(v, p); }},
         {"scope", true,
          [&](const YAML::Node& v, const std::string& p) {
            a.scope = variant<Scope>(v, p,
                                     {{"Global", Scope::global},
                                      {"Namespace", Scope::namespace_},
                                      {"WorkloadSelector", Scope::workload_selector}});
          }},
         {"action", true,
          [&](const YAML::Node& v, const std::string& p) {
            a.action = variant<Action>(v, p, {{"Allow", Action::allow}, {"Deny", Action::deny}});
          }},
         {"rules", true,
          [&](const YAML::Node& v, const std::string& p) {
            a.rules = list<Rule>(v, p, [&](const YAML::Node& rule, const std::string& rp) {
              return list<Clause>(rule, rp, [&](const YAML::Node& clause, const std::string& cp) {
                return list<Match>(clause, cp, [&](const YAML::Node& m, const std::string& mp) {
                  return match(m, mp);
                });
              });
            });
          }},
         {"dryRun", true,
          [&](const YAML::Node& v, const std::string& p) { a.dry_run = boolean(v, p); }}});
    return a;
  }

  LocalConfig config(const YAML::Node& root) const {
    LocalConfig c;
    fields(root, "",
           {{"workloads", false,
             [&](const YAML::Node& v, const std::string& p) {
               c.workloads =
                   list<Workload>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                     return workload(i, item_path);
                   });
             }},
            {"services", false,
             [&](const YAML::Node& v, const std::string& p) {
               c.services =
                   list<Service>(v, p, [&](const YAML::Node& i, const std::string& item_path) {
                     return service(i, item_path);
                   });
             }},
            {"policies", false, [&](const YAML::Node& v, const std::string& p) {
               c.policies = list<Authorization>(
                   v, p, [&](const YAML::Node& i, const std::string& item_path) {
                     return authorization(i, item_path);
                   });
             }}});
    return c;
  }

 private:
  // A missing value (`protocol:` and nothing) is placed where the next token starts, often the
  // next line: its key says better where it is.
  YAML::Mark mark_of(const YAML::Node& n) const {
    if (n.IsDefined() && !n.IsNull() && !n.Mark().is_null()) return n.Mark();
    if (!key_mark_.is_null() || !n.IsDefined()) return key_mark_;
    return n.Mark();
  }

  std::vector<ConfigWarning>& warnings_;
  mutable size_t budget_;
};

ConfigError error_at(std::string_view file, const YAML::Mark& mark, std::string path,
                     std::string reason) {
  ConfigError e;
  e.file = std::string(file);
  if (!mark.is_null()) {
    e.line = mark.line + 1;
    e.column = mark.column + 1;
  }
  e.path = std::move(path);
  e.reason = std::move(reason);
  return e;
}

}  // namespace

LoadResult parse_local_config(std::string_view yaml, std::string_view file) {
  LoadResult result;
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    if (documents.size() > 1) {
      result.error = error_at(file, documents[1].Mark(), "",
                              "more than one YAML document (one config per file)");
      return result;
    }
    if (documents.empty()) return result;  // an empty file: no workloads, services or policies
    // A node takes at least two bytes of text ("a,"): twice the size, plus room for aliases that
    // a config uses sensibly (a shared match list, a repeated port map).
    Reader reader(result.warnings, 2 * yaml.size() + 100'000);
    result.config = reader.config(documents[0]);
  } catch (const Failure& f) {
    result.config = {};
    result.error = error_at(file, f.mark, f.path, f.reason);
  } catch (const YAML::Exception& e) {
    result.config = {};
    result.error = error_at(file, e.mark, "", "invalid YAML: " + e.msg);
  } catch (const std::exception& e) {
    result.config = {};
    result.error = error_at(file, YAML::Mark::null_mark(), "", e.what());
  }
  return result;
}

LoadResult load_local_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult result;
    result.error = ConfigError{path, 0, 0, "", std::string("cannot read: ") + std::strerror(errno)};
    return result;
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    LoadResult result;
    result.error = ConfigError{path, 0, 0, "", "read failed"};
    return result;
  }
  return parse_local_config(text.str(), path);
}

}  // namespace ringtunnel::workload

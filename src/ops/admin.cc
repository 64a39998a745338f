#include "ringtunnel/ops/admin.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <ctime>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "ringtunnel/config/flags.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/tls/identity.h"
#include "ringtunnel/workload/model.h"

namespace ringtunnel::ops {

namespace {

// A small writer for the shapes /config_dump needs.
class Json {
 public:
  Json& raw(std::string_view s) { return out_ += s, *this; }
  Json& str(std::string_view s) { return out_ += json_string(s), *this; }
  Json& key(std::string_view k) {
    comma();
    str(k);
    out_ += ':';
    fresh_ = true;
    return *this;
  }
  Json& begin(char c) {
    comma();
    out_ += c;
    fresh_ = true;
    return *this;
  }
  Json& end(char c) {
    out_ += c;
    fresh_ = false;
    return *this;
  }
  Json& value(std::string_view s) {
    comma();
    str(s);
    fresh_ = false;
    return *this;
  }
  Json& number(uint64_t n) {
    comma();
    out_ += fmt::format("{}", n);
    fresh_ = false;
    return *this;
  }
  Json& boolean(bool b) {
    comma();
    out_ += b ? "true" : "false";
    fresh_ = false;
    return *this;
  }
  Json& null() {
    comma();
    out_ += "null";
    fresh_ = false;
    return *this;
  }
  Json& field(std::string_view k, std::string_view v) { return key(k).value(v); }
  Json& strings(std::string_view k, const std::vector<std::string>& values) {
    key(k).begin('[');
    for (const std::string& v : values)
      value(v);
    return end(']');
  }
  Json& port_map(std::string_view k, const workload::PortMap& ports) {
    key(k).begin('{');
    for (const auto& [from, to] : ports)
      key(fmt::format("{}", from)).number(to);
    return end('}');
  }
  std::string take() { return std::move(out_); }

 private:
  void comma() {
    if (!fresh_ && !out_.empty()) out_ += ',';
    fresh_ = false;
  }
  std::string out_;
  bool fresh_ = true;
};

std::string ips(const std::vector<net::IpAddress>& list, std::vector<std::string>& out) {
  out.clear();
  for (const net::IpAddress& ip : list)
    out.push_back(ip.to_string());
  return {};
}

std::string network_address(const workload::NetworkAddress& a) {
  return a.network + "/" + a.address.to_string();
}

void write_workload(Json& j, const workload::Workload& w) {
  std::vector<std::string> list;
  ips(w.workload_ips, list);
  j.begin('{')
      .field("uid", w.uid)
      .field("name", w.name)
      .field("namespace", w.namespace_)
      .field("serviceAccount", w.effective_service_account())
      .field("trustDomain", w.effective_trust_domain())
      .field("identity", w.spiffe_id())
      .strings("workloadIps", list)
      .field("protocol", workload::to_string(w.protocol))
      .field("node", w.node)
      .field("network", w.network)
      .field("canonicalName", w.canonical_name)
      .field("canonicalRevision", w.canonical_revision)
      .field("workloadName", w.workload_name)
      .field("workloadType", w.workload_type)
      .field("status", w.status == workload::HealthStatus::healthy ? "Healthy" : "Unhealthy")
      .strings("authorizationPolicies", w.authorization_policies);
  j.key("services").begin('{');
  for (const auto& [name, ports] : w.services)
    j.port_map(name, ports);
  j.end('}').end('}');
}

void write_service(Json& j, const workload::Service& s) {
  std::vector<std::string> vips;
  for (const workload::NetworkAddress& a : s.vips)
    vips.push_back(network_address(a));
  for (const workload::NetworkCidr& c : s.cidr_vips)
    vips.push_back(c.network + "/" + c.cidr.to_string());
  j.begin('{')
      .field("name", s.name)
      .field("namespace", s.namespace_)
      .field("hostname", s.hostname)
      .strings("vips", vips)
      .port_map("ports", s.ports)
      .strings("subjectAltNames", s.subject_alt_names);
  j.key("endpoints").begin('{');
  for (const auto& [uid, e] : s.endpoints)
    j.port_map(uid, e.port);
  j.end('}').end('}');
}

std::string string_match(const workload::StringMatch& m) {
  switch (m.kind) {
    case workload::StringMatch::Kind::exact:
      return m.value;
    case workload::StringMatch::Kind::prefix:
      return m.value + "*";
    case workload::StringMatch::Kind::suffix:
      return "*" + m.value;
    case workload::StringMatch::Kind::presence:
      return "*";
  }
  return m.value;
}

void write_match(Json& j, const workload::Match& m) {
  const auto strings = [&](const char* name, const std::vector<workload::StringMatch>& v) {
    if (v.empty()) return;
    std::vector<std::string> list;
    for (const auto& s : v)
      list.push_back(string_match(s));
    j.strings(name, list);
  };
  const auto accounts = [&](const char* name, const std::vector<workload::ServiceAccountMatch>& v) {
    if (v.empty()) return;
    std::vector<std::string> list;
    for (const auto& a : v)
      list.push_back(a.namespace_ + "/" + a.service_account);
    j.strings(name, list);
  };
  const auto cidrs = [&](const char* name, const std::vector<net::IpCidr>& v) {
    if (v.empty()) return;
    std::vector<std::string> list;
    for (const auto& c : v)
      list.push_back(c.to_string());
    j.strings(name, list);
  };
  const auto ports = [&](const char* name, const std::vector<uint16_t>& v) {
    if (v.empty()) return;
    j.key(name).begin('[');
    for (const uint16_t p : v)
      j.number(p);
    j.end(']');
  };
  j.begin('{');
  strings("namespaces", m.namespaces);
  strings("notNamespaces", m.not_namespaces);
  accounts("serviceAccounts", m.service_accounts);
  accounts("notServiceAccounts", m.not_service_accounts);
  strings("principals", m.principals);
  strings("notPrincipals", m.not_principals);
  cidrs("sourceIps", m.source_ips);
  cidrs("notSourceIps", m.not_source_ips);
  cidrs("destinationIps", m.destination_ips);
  cidrs("notDestinationIps", m.not_destination_ips);
  ports("destinationPorts", m.destination_ports);
  ports("notDestinationPorts", m.not_destination_ports);
  j.end('}');
}

void write_policy(Json& j, const workload::Authorization& p) {
  j.begin('{')
      .field("name", p.name)
      .field("namespace", p.namespace_)
      .field("scope", workload::to_string(p.scope))
      .field("action", workload::to_string(p.action))
      .key("dryRun")
      .boolean(p.dry_run);
  j.key("rules").begin('[');
  for (const workload::Rule& rule : p.rules) {
    j.begin('[');
    for (const workload::Clause& clause : rule) {
      j.begin('[');
      for (const workload::Match& m : clause)
        write_match(j, m);
      j.end(']');
    }
    j.end(']');
  }
  j.end(']').end('}');
}

bool asn1_time(const WOLFSSL_ASN1_TIME* t, std::time_t& out) {
  std::tm tm{};
  if (t == nullptr || wolfSSL_ASN1_TIME_to_tm(t, &tm) != WOLFSSL_SUCCESS) return false;
  out = timegm(&tm);
  return true;
}

void write_certificate(Json& j, std::string_view block) {
  j.begin('{');
  WOLFSSL_X509* x509 =
      wolfSSL_X509_load_certificate_buffer(reinterpret_cast<const unsigned char*>(block.data()),
                                           int(block.size()), WOLFSSL_FILETYPE_PEM);
  if (x509 == nullptr) {
    wolfSSL_ERR_clear_error();
    j.field("error", "not an X.509 certificate (broken base64 or DER)").end('}');
    return;
  }
  char name[512];
  if (wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_subject_name(x509), name, sizeof name))
    j.field("subject", name);
  if (wolfSSL_X509_NAME_oneline(wolfSSL_X509_get_issuer_name(x509), name, sizeof name))
    j.field("issuer", name);
  tls::SpiffeId id;
  if (tls::spiffe_id_of(x509, id).empty())
    j.field("identity", id.to_string());
  else
    j.key("identity").null();
  wolfSSL_ERR_clear_error();  // a CA without a SPIFFE ID leaves an error behind
  unsigned char serial[64];
  int serial_len = sizeof serial;
  if (wolfSSL_X509_get_serial_number(x509, serial, &serial_len) == WOLFSSL_SUCCESS) {
    std::string hex;
    for (int i = 0; i < serial_len; ++i)
      hex += fmt::format("{:02X}", serial[i]);
    j.field("serial", hex);
  }
  std::time_t t = 0;
  if (asn1_time(wolfSSL_X509_get_notBefore(x509), t)) j.field("notBefore", format_utc_iso(t));
  if (asn1_time(wolfSSL_X509_get_notAfter(x509), t)) {
    j.field("notAfter", format_utc_iso(t));
    j.key("expired").boolean(std::time(nullptr) > t);
  }
  wolfSSL_X509_free(x509);
  j.end('}');
}

void write_certificates(Json& j, std::string_view pem) {
  static constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  static constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  j.begin('[');
  for (size_t at = pem.find(kBegin); at != std::string_view::npos; at = pem.find(kBegin, at)) {
    const size_t end = pem.find(kEnd, at);
    if (end == std::string_view::npos) {
      j.begin('{').field("error", "a certificate block without its END line").end('}');
      break;
    }
    write_certificate(j, pem.substr(at, end + kEnd.size() - at));
    at = end + kEnd.size();
  }
  j.end(']');
}

std::string route_text(const config::Route& r) {
  if (r.kind == config::Route::Kind::hbone)
    return fmt::format("{}=hbone://{}/{}?identity={}", r.listen_text, r.peer_text, r.target_text,
                       r.identity);
  return fmt::format("{}=tcp://{}", r.listen_text, r.target_text);
}

std::vector<std::string> listen_texts(const std::vector<config::Config::ListenAt>& list) {
  std::vector<std::string> out;
  for (const config::Config::ListenAt& l : list)
    out.push_back(l.text);
  return out;
}

void write_flags(Json& j, const config::Config& c) {
  j.begin('{');
  for (const config::FlagInfo& f : config::flag_table()) {
    const std::string_view name = f.name;
    if (f.shown) {
      j.field(name, f.shown(c));
    } else if (name == "--forward") {
      std::vector<std::string> list;
      for (const config::Route& r : c.routes)
        list.push_back(route_text(r));
      j.strings(name, list);
    } else if (name == "--hbone-listen") {
      j.strings(name, listen_texts(c.hbone_listens));
    } else if (name == "--outbound-listen") {
      j.strings(name, listen_texts(c.outbound_listens));
    } else if (name == "--inbound-plaintext-listen") {
      j.strings(name, listen_texts(c.inbound_plaintext_listens));
    } else if (name == "--allow-dest") {
      std::vector<std::string> list;
      for (const config::AllowDest& d : c.allow_dests)
        list.push_back(d.text);
      j.strings(name, list);
    } else if (name == "--cert" || name == "--key" || name == "--ca") {
      const std::string& v = name == "--cert" ? c.cert : name == "--key" ? c.key : c.ca;
      if (v.empty())
        j.key(name).null();
      else
        j.field(name, v);
    } else if (name != "--help" && name != "--version") {
      j.key(name).null();  // a flag this dump does not know how to show
    }
  }
  j.end('}');
}

Response text(int status, std::string body) {
  return {status, "text/plain; charset=utf-8", std::move(body)};
}

}  // namespace

std::string json_string(std::string_view s) {
  std::string out;
  proxy::append_json_string(out, s);
  return out;
}

std::string certificates_json(std::string_view pem) {
  Json j;
  write_certificates(j, pem);
  return j.take();
}

std::string flags_json(const config::Config& config) {
  Json j;
  write_flags(j, config);
  return j.take();
}

std::string config_dump(const AdminSources& sources) {
  Json j;
  j.begin('{');
  std::shared_ptr<const workload::State> state;
  uint64_t generation = 0;
  if (sources.store) state = sources.store->snapshot(&generation);
  if (sources.store) j.field("configFile", sources.store->path());
  j.key("configGeneration").number(generation);
  j.key("workloads").begin('[');
  if (state)
    for (const workload::Workload& w : state->workloads())
      write_workload(j, w);
  j.end(']');
  j.key("services").begin('[');
  if (state)
    for (const workload::Service& s : state->services())
      write_service(j, s);
  j.end(']');
  j.key("policies").begin('[');
  if (state)
    for (const workload::Authorization& p : state->policies())
      write_policy(j, p);
  j.end(']');
  j.key("certificates").begin('{');
  j.key("chain");
  write_certificates(j, sources.certificate_pem ? sources.certificate_pem() : std::string());
  j.key("ca");
  write_certificates(j, sources.ca_pem ? sources.ca_pem() : std::string());
  j.end('}');
  j.key("logLevel").value(proxy::to_string(proxy::log_level()));
  if (sources.config) {
    j.key("flags");
    write_flags(j, *sources.config);
  }
  j.end('}');
  return j.take() + "\n";
}

void add_readiness_routes(HttpServer& server, int listener, const Health& health) {
  server.route(listener, "GET", "/healthz/ready", [&health](const Request&) {
    const Health::Verdict v = health.readiness(std::time(nullptr));
    return text(v.ready ? 200 : 503, v.reason + "\n");
  });
}

std::optional<Response> refused_from_browser(const Request& r) {
  if (!r.origin.empty())
    return text(403, "refused: a request with an Origin header (made by a web page)\n");
  std::string_view host = r.host;
  if (host.starts_with('[')) {
    const size_t close = host.find(']');
    host = close == std::string_view::npos ? host : host.substr(1, close - 1);
  } else if (const size_t colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (host.empty() || host == "localhost") return std::nullopt;
  const bool v6 = host.find(':') != std::string_view::npos;
  std::string as_endpoint;
  as_endpoint.reserve(host.size() + 4);
  if (v6) as_endpoint.push_back('[');
  as_endpoint.append(host);
  as_endpoint.append(v6 ? "]:1" : ":1");
  net::Endpoint literal;
  if (net::parse_endpoint(as_endpoint, literal).empty())
    return std::nullopt;  // an address, as a person or a script on the host types it
  return text(403, fmt::format("refused: Host {} is a name (only an address or localhost)\n",
                               json_string(r.host)));
}

void add_admin_routes(HttpServer& server, int listener, AdminSources sources) {
  auto shared = std::make_shared<AdminSources>(std::move(sources));
  // Every admin route refuses what a web page could send it (see refused_from_browser).
  const auto guarded = [&](const char* method, const char* path, Handler handler) {
    server.route(listener, method, path, [handler = std::move(handler)](const Request& r) {
      if (auto refused = refused_from_browser(r)) return *refused;
      return handler(r);
    });
  };
  guarded("GET", "/config_dump", [shared](const Request&) {
    return Response{200, "application/json", config_dump(*shared)};
  });
  guarded("GET", "/logging", [](const Request& r) {
    if (r.query.count("level"))
      return text(405, "POST /logging?level=LEVEL changes the log level; GET shows it\n");
    return text(200, fmt::format("log level: {}\n", proxy::to_string(proxy::log_level())));
  });
  guarded("POST", "/logging", [](const Request& r) {
    const auto it = r.query.find("level");
    if (it == r.query.end())
      return text(400,
                  fmt::format("missing ?level=: the level is one of {}\n", proxy::kLogLevelNames));
    proxy::LogLevel level;
    if (!proxy::parse_log_level(it->second, level))
      return text(400, fmt::format("unknown log level {}: the level is one of {}\n",
                                   json_string(it->second), proxy::kLogLevelNames));
    const proxy::LogLevel was = proxy::log_level();
    proxy::set_log_level(level);
    proxy::log_line(proxy::LogLevel::warn,
                    fmt::format("ringtunnel: admin: log level set to {} (was {}) by {}",
                                proxy::to_string(level), proxy::to_string(was), r.peer));
    return text(200, fmt::format("log level: {} (was {})\n", proxy::to_string(level),
                                 proxy::to_string(was)));
  });
  guarded("POST", "/quitquitquit", [shared](const Request& r) {
    proxy::log_line(proxy::LogLevel::warn,
                    fmt::format("ringtunnel: admin: /quitquitquit from {}", r.peer));
    if (shared->quit) shared->quit();
    return text(200, "draining\n");
  });
}

}  // namespace ringtunnel::ops

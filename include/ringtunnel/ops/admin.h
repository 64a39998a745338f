// The routes of the readiness and admin listeners (see http_server.h for the server).
//
// Readiness (--readiness-listen):
//   GET  /healthz/ready           200 "ready", or 503 and the reason (health.h)
// Admin (--admin-listen, loopback by default: it can stop the process):
//   GET  /config_dump             JSON: {"workloads": [...], "services": [...], "policies": [...],
//                                 "certificates": {"chain": [...], "ca": [...]}, "flags": {...}}
//                                 from the current workload snapshot (empty arrays without
//                                 --config), the certificate files in use (subject, SPIFFE ID,
//                                 serial, notBefore, notAfter of each) and every flag's value
//   GET  /logging                 the log level
//   POST /logging?level=LEVEL     sets it (error, warn, info or debug); else 400
//   POST /quitquitquit            200, then the process drains and exits 0 as on SIGTERM
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "ringtunnel/config/config.h"
#include "ringtunnel/ops/health.h"
#include "ringtunnel/ops/http_server.h"
#include "ringtunnel/workload/store.h"

namespace ringtunnel::ops {

struct AdminSources {
  const config::Config* config = nullptr;
  const workload::Store* store = nullptr;  // null without --config
  // The PEM text of the node's certificate chain and of the CA file as in use now; empty when
  // the process has no identity. Called on the ops server's thread at each /config_dump.
  std::function<std::string()> certificate_pem;
  std::function<std::string()> ca_pem;
  // Starts the drain (wakes the main thread); called once per POST /quitquitquit.
  std::function<void()> quit;
};

void add_readiness_routes(HttpServer& server, int listener, const Health& health);
// The admin routes refuse (403) a request that a web page in a browser on the host could make:
// one with an Origin header (a cross-site POST to /quitquitquit), or whose Host is a name other
// than localhost (DNS rebinding reading /config_dump). Tools (curl, scripts, kubectl
// port-forward) send neither.
void add_admin_routes(HttpServer& server, int listener, AdminSources sources);
// The 403 above, or nullopt when the request may be served.
std::optional<Response> refused_from_browser(const Request& request);

// Exposed for tests.
// `text` as a JSON string, quotes included; bytes that are not UTF-8 text are escaped as
// \u00XX (one per byte), so the result is always valid JSON.
std::string json_string(std::string_view text);
// The certificates in `pem` (every CERTIFICATE block) as a JSON array; a block that does not
// parse is an object with an "error".
std::string certificates_json(std::string_view pem);
// The effective flags: {"--flag": "value" | ["value", ...] | null, ...} in --help's order.
std::string flags_json(const config::Config& config);
std::string config_dump(const AdminSources& sources);

}  // namespace ringtunnel::ops

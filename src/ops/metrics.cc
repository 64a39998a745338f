#include "ringtunnel/ops/metrics.h"

namespace ringtunnel::ops {

void add_metrics_routes(HttpServer& server, int listener, const stats::MetricsRegistry& registry) {
  for (const char* path : {"/metrics", "/stats/prometheus"})
    server.route(listener, "GET", path, [&registry](const Request&) {
      return Response{200, std::string(stats::MetricsRegistry::kContentType), registry.render()};
    });
}

}  // namespace ringtunnel::ops

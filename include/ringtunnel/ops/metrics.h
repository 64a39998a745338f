// The metrics listener's routes: what stats::MetricsRegistry renders, over HTTP.
#pragma once

#include "ringtunnel/ops/http_server.h"
#include "ringtunnel/stats/metrics.h"

namespace ringtunnel::ops {

// Serves GET /metrics and GET /stats/prometheus (ztunnel's two paths) on `listener`:
// registry.render() as the text format 0.0.4. `registry` must outlive the server.
void add_metrics_routes(HttpServer& server, int listener, const stats::MetricsRegistry& registry);

}  // namespace ringtunnel::ops

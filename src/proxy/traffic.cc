#include "ringtunnel/proxy/traffic.h"

#include <fmt/format.h>

#include "ringtunnel/net/ip.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/tls/credentials.h"
#include "ringtunnel/workload/model.h"
#include "ringtunnel/workload/state.h"

namespace ringtunnel::proxy {

stats::ResponseFlag response_flag(EndReason reason) {
  switch (reason) {
    case EndReason::none:
    case EndReason::closed:
    case EndReason::client_reset:
    case EndReason::target_reset:
    case EndReason::drain_timeout:
      return stats::ResponseFlag::none;
    case EndReason::denied:
      return stats::ResponseFlag::deny;
    case EndReason::connect_refused:
    case EndReason::connect_timeout:
    case EndReason::connect_error:
    case EndReason::refused:
    case EndReason::bad_request:
    case EndReason::peer_error:
    case EndReason::error:
    case EndReason::overload:
      return stats::ResponseFlag::connect;
  }
  return stats::ResponseFlag::connect;
}

const workload::Workload* workload_at(const WorkerContext& ctx, const net::Endpoint& at) {
  if (!ctx.state || !at.length) return nullptr;
  const auto ip = net::IpAddress::from_sockaddr(at.addr(), at.length);
  if (!ip) return nullptr;
  return ctx.state->workload_by_ip(ctx.local ? ctx.local->network : std::string_view(), *ip);
}

const workload::Service* inbound_service(const WorkerContext& ctx,
                                         const workload::Workload* destination, uint16_t port,
                                         std::string_view forwarded_host) {
  if (!ctx.state || !destination) return nullptr;
  return ctx.state->guess_inbound_service(*destination, port, forwarded_host);
}

namespace {

std::string own_identity(const WorkerContext& ctx) {
  return ctx.identity ? ctx.identity->identity().to_string() : std::string();
}

}  // namespace

stats::TrafficLabels outbound_labels(const WorkerContext& ctx, const workload::Workload* source,
                                     const workload::Workload* destination,
                                     const workload::Service* service, bool mtls,
                                     std::string_view peer_identity) {
  stats::TrafficLabels l;
  l.reporter = stats::Reporter::source;
  l.security = mtls ? stats::SecurityPolicy::mutual_tls : stats::SecurityPolicy::unknown;
  l.set_source(source);
  l.set_destination(destination);
  l.set_service(service);
  if (mtls) {
    l[stats::Label::source_principal] = own_identity(ctx);
    if (!destination) l[stats::Label::destination_principal] = std::string(peer_identity);
  }
  return l;
}

stats::TrafficLabels inbound_labels(const WorkerContext& ctx, const workload::Workload* source,
                                    const workload::Workload* destination,
                                    const workload::Service* service, bool mtls,
                                    std::string_view peer_identity) {
  stats::TrafficLabels l;
  l.reporter = stats::Reporter::destination;
  l.security = mtls ? stats::SecurityPolicy::mutual_tls : stats::SecurityPolicy::unknown;
  l.set_source(source);
  l.set_destination(destination);
  l.set_service(service);
  if (mtls) {
    l[stats::Label::source_principal] = std::string(peer_identity);
    if (!destination) l[stats::Label::destination_principal] = own_identity(ctx);
  }
  return l;
}

void TrafficCount::open(WorkerContext& ctx, const stats::TrafficLabels& labels) {
  bool first_overflow = false;
  series_ = &ctx.metrics.traffic.open(labels, ctx.now(), first_overflow);
  if (first_overflow)
    log_line(fmt::format(
        "ringtunnel: worker {}: metrics: {} TCP traffic series kept (--metrics-max-series); "
        "connections with new labels are counted with unknown workload labels "
        "(ringtunnel_metrics_series_overflow_total); logged once",
        ctx.id, ctx.config.metrics_max_series));
}

void TrafficCount::close(WorkerContext& ctx, EndReason reason) {
  if (!series_) return;
  ctx.metrics.traffic.close(*series_, response_flag(reason), ctx.now());
  series_ = nullptr;
}

void count_refused(WorkerContext& ctx, const stats::TrafficLabels& labels, EndReason reason) {
  TrafficCount count;
  count.open(ctx, labels);
  count.close(ctx, reason);
}

}  // namespace ringtunnel::proxy

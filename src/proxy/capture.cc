#include "ringtunnel/proxy/capture.h"

#include <sys/socket.h>
#include <unistd.h>

#include <random>

#include <fmt/format.h>

#include "ringtunnel/net/ip.h"
#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/admission.h"
#include "ringtunnel/proxy/clock.h"
#include "ringtunnel/proxy/dispatch.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/objects.h"
#include "ringtunnel/proxy/traffic.h"
#include "ringtunnel/workload/model.h"
#include "ringtunnel/workload/state.h"
#include "ringtunnel/workload/store.h"

namespace ringtunnel::proxy {

namespace {

// The HBONE port of every workload (ztunnel's).
constexpr uint16_t kHbonePort = 15008;

// Whether an accepted connection reached our listener directly: its original destination is
// its own `local` address (no NAT rewrote it), and that address is one of this host's (TPROXY,
// the other way to keep the destination as the local address, delivers foreign ones). Such a
// connection was made to the listener itself: dialling it would come straight back.
bool not_redirected(const net::Endpoint& local, const net::IpAddress& original_ip,
                    uint16_t original_port) {
  const auto local_ip = net::IpAddress::from_sockaddr(local.addr(), local.length);
  return local_ip && *local_ip == original_ip && local.port() == original_port &&
         net::host_has_address(local);
}

// A captured connection refused before it is relayed: its access line (when the log is on)
// says why, then it is reset and closed.
void refuse_logged(WorkerContext& ctx, int fd, const std::string& listener,
                   const net::Endpoint& source, const net::Endpoint& target, EndReason end,
                   std::string_view reason,
                   AccessRecord::Direction direction = AccessRecord::Direction::outbound) {
  if (ctx.access_enabled()) {
    const std::string client = net::format_sockaddr(source.addr(), source.length);
    const std::string target_text = target.to_string();
    AccessRecord rec;
    rec.listener = listener;
    rec.client = client;
    rec.target = target_text;
    rec.end = end;
    rec.start_unix_ms = unix_ms();
    rec.direction = direction;
    ctx.access(rec, reason);
  }
  refuse_accepted(ctx, fd);
}

// The `baggage` header a node proxy sends for its source workload: the attributes it has, in
// this order, comma-separated.
std::string baggage(const workload::Workload& w) {
  std::string out;
  auto add = [&](std::string_view key, const std::string& value) {
    if (value.empty()) return;
    if (!out.empty()) out += ',';
    out += key;
    out += '=';
    out += value;
  };
  add("k8s.cluster.name", w.cluster_id);
  add("k8s.namespace.name", w.namespace_);
  add("k8s." + w.workload_type + ".name", w.workload_name);
  add("service.name", w.canonical_name);
  add("service.version", w.canonical_revision);
  add("cloud.region", w.locality.region);
  add("cloud.availability_zone", w.locality.zone);
  return out;
}

}  // namespace

bool refresh_state(WorkerContext& ctx) {
  if (!ctx.store || ctx.store->generation() == ctx.state_generation) return false;
  ctx.state_generation = ctx.store->generation();
  ctx.state = ctx.store->snapshot();
  const workload::LocalWorkloadInfo& local = ctx.store->local();
  ctx.local = ctx.state
                  ? ctx.state->workload_by_info(local.namespace_, local.name, local.service_account)
                  : nullptr;
  ctx.local_baggage = ctx.local ? baggage(*ctx.local) : std::string();
  return true;
}

void open_captured_inbound(WorkerContext& ctx, int fd, const std::string& listener_text) {
  net::Endpoint original, source;
  socklen_t len = sizeof source.storage;
  getpeername(fd, reinterpret_cast<sockaddr*>(&source.storage), &len);
  source.length = len;
  const std::string* listener = &listener_text;
  if (const int err = net::original_dst(fd, original); err < 0) {
    log_line(fmt::format("ringtunnel: worker {}: {}: no original destination ({}), refused", ctx.id,
                         *listener, strerror(-err)));
    return refuse_accepted(ctx, fd);
  }
  if (!ctx.state || !ctx.local) return refuse_accepted(ctx, fd);
  const Admission a = admit_mesh(original, ctx.config, *ctx.state, *ctx.local, source, nullptr,
                                 ctx.identity->identity());
  if (!a.dry_run.empty())
    log_line(dry_run_line(ctx.id, a, net::format_sockaddr(source.addr(), source.length), {},
                          original.to_string()));
  const workload::Workload* destination = workload_at(ctx, original);
  const stats::TrafficLabels labels =
      inbound_labels(ctx, workload_at(ctx, source), destination,
                     inbound_service(ctx, destination, original.port()), false);
  if (a.verdict != Verdict::allow) {
    count_refused(ctx, labels, end_reason(a.verdict));
    return refuse_logged(ctx, fd, *listener, source, original, end_reason(a.verdict), a.reason,
                         AccessRecord::Direction::inbound);
  }
  if (Relay* r = open_relay(ctx, fd, TcpTarget{original, listener, nullptr}, &labels))
    r->set_authorized();
}

void judge_again(WorkerContext& ctx) {
  if (!ctx.state || !ctx.local) return;
  const tls::SpiffeId& own = ctx.identity->identity();
  net::Endpoint target, source;
  ctx.objects().relays.for_each([&](Relay& r) {
    if (!r.authorized_addresses(source, target)) return;
    if (admit_mesh(target, ctx.config, *ctx.state, *ctx.local, source, nullptr, own).verdict !=
        Verdict::allow)
      r.end(EndReason::denied);
  });
  std::string identity;
  ctx.objects().streams.for_each([&](HboneStream& s) {
    if (!s.admitted(target, source, identity)) return;
    tls::SpiffeId peer;
    tls::parse_spiffe_id(identity, peer);
    if (admit_mesh(target, ctx.config, *ctx.state, *ctx.local, source, &peer, own).verdict !=
        Verdict::allow)
      s.end(EndReason::denied, true);
  });
}

void open_captured_outbound(WorkerContext& ctx, int fd, const std::string& listener_text) {
  net::Endpoint original, local;
  if (const int err = net::original_dst(fd, original, &local); err < 0) {
    log_line(fmt::format("ringtunnel: worker {}: {}: no original destination ({}), refused", ctx.id,
                         listener_text, strerror(-err)));
    return refuse_accepted(ctx, fd);
  }
  const auto ip = net::IpAddress::from_sockaddr(original.addr(), original.length);
  if (!ip || !ctx.state || !ctx.local) return refuse_accepted(ctx, fd);
  // A connection made straight to the listener was not redirected: its original destination is
  // the listener itself, and dialling it would come back here, again and again.
  if (not_redirected(local, *ip, original.port())) {
    net::Endpoint source;
    socklen_t len = sizeof source.storage;
    getpeername(fd, reinterpret_cast<sockaddr*>(&source.storage), &len);
    source.length = len;
    return refuse_logged(ctx, fd, listener_text, source, original, EndReason::refused,
                         "not redirected: a connection straight to ringtunnel's own listener");
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const workload::Destination d =
      ctx.state->resolve_outbound(*ctx.local, *ip, original.port(), rng());
  const std::string* listener = &listener_text;
  switch (d.kind) {
    case workload::Destination::Kind::no_endpoint:
      return refuse_accepted(ctx, fd);
    case workload::Destination::Kind::passthrough: {
      const stats::TrafficLabels labels =
          outbound_labels(ctx, ctx.local, nullptr, d.service, false);
      open_relay(ctx, fd, TcpTarget{original, listener, nullptr}, &labels);
      return;
    }
    case workload::Destination::Kind::workload:
    case workload::Destination::Kind::service:
      break;
  }
  const net::Endpoint target = net::endpoint_of(d.ip, d.port);
  const bool hbone = d.workload->protocol == workload::Protocol::hbone;
  const stats::TrafficLabels labels = outbound_labels(ctx, ctx.local, d.workload, d.service, hbone);
  if (!hbone) return (void)open_relay(ctx, fd, TcpTarget{target, listener, nullptr}, &labels);
  std::shared_ptr<HboneTarget> to = ctx.outbound().target(
      listener, target.to_string(), net::endpoint_of(d.ip, kHbonePort), d.workload->spiffe_id());
  to->baggage = ctx.local_baggage;
  if (d.service) to->forwarded_host = d.service->hostname;
  open_outbound_stream(ctx, fd, std::move(to), &labels);
}

}  // namespace ringtunnel::proxy

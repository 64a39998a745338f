// A proxied connection's place in the TCP traffic metrics (stats/metrics.h): its labels, taken from
// the workload config when it opens, and its counts, added where the access log's come from.
//
// Reporter: "source" for the connections ringtunnel opens as the client's proxy (--forward
// routes, captured outbound connections), "destination" for those it delivers as the server's
// proxy (inbound HBONE streams, captured inbound plaintext). Security policy: "mutual_tls" for
// HBONE, else "unknown". Workloads: those the routing decided (the local workload, the
// destination workload and service), else the workloads the config gives the client's and the
// target's addresses; "unknown" without --config. Principals: the SPIFFE IDs proved in TLS (the
// proxy's own, the peer's) where the config names no destination workload.
#pragma once

#include <cstdint>
#include <string_view>

#include "ringtunnel/net/address.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/stats/metrics.h"

namespace ringtunnel::proxy {

// How a connection's end shows in response_flags: "-" when it ran and ended (closed or reset by
// either end, or cut at the drain timeout), "DENY" when a policy refused it, "CONNECT" when it
// never reached its target or failed on the way (refused, timed out, unreachable, 400/503 from
// the peer proxy, the tunnel under it failed, a socket error, overload).
stats::ResponseFlag response_flag(EndReason reason);

// The workload the worker's config snapshot puts at `at`'s address; null without one.
const workload::Workload* workload_at(const WorkerContext& ctx, const net::Endpoint& at);

// Labels of a connection ringtunnel opens as the client's proxy (reporter "source").
// `peer_identity`: with `mtls`, the identity the peer proxy must present.
stats::TrafficLabels outbound_labels(const WorkerContext& ctx, const workload::Workload* source,
                                     const workload::Workload* destination,
                                     const workload::Service* service, bool mtls,
                                     std::string_view peer_identity = {});
// Labels of a connection ringtunnel delivers as the server's proxy (reporter "destination").
// `peer_identity`: with `mtls`, the identity the peer proxy proved.
// The service an inbound connection to `destination` on `port` came through (State::
// guess_inbound_service in this worker's snapshot), or nullptr.
const workload::Service* inbound_service(const WorkerContext& ctx,
                                         const workload::Workload* destination, uint16_t port,
                                         std::string_view forwarded_host = {});
// `service`: inbound_service's (destination_service*), or nullptr.
stats::TrafficLabels inbound_labels(const WorkerContext& ctx, const workload::Workload* source,
                                    const workload::Workload* destination,
                                    const workload::Service* service, bool mtls,
                                    std::string_view peer_identity = {});

// One connection's counts in its series. Costs one hash lookup at open, then a relaxed load and
// store per count.
class TrafficCount {
 public:
  void open(WorkerContext& ctx, const stats::TrafficLabels& labels);
  // Bytes client -> server (istio_tcp_received_bytes_total, the access log's bytes_up), and
  // server -> client (istio_tcp_sent_bytes_total, bytes_down).
  void up(uint64_t n) {
    if (series_) series_->received_bytes.add(n);
  }
  void down(uint64_t n) {
    if (series_) series_->sent_bytes.add(n);
  }
  // Once; nothing if it was not opened.
  void close(WorkerContext& ctx, EndReason reason);

 private:
  stats::TrafficSeries* series_ = nullptr;
};

// A connection refused before any object took it (captured inbound plaintext): opened and
// closed at once.
void count_refused(WorkerContext& ctx, const stats::TrafficLabels& labels, EndReason reason);

}  // namespace ringtunnel::proxy

// The worker's objects driven as one: accepted sockets become objects, completions go to their
// owners, scheduled objects are serviced, timers run, and a low receive pool is relieved. Free
// functions over a WorkerContext, so the Worker and the unit tests (with a fake ring) run the
// same code.
#pragma once

#include <liburing.h>

#include <cstdint>

#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/destination.h"
#include "ringtunnel/ring/op_tag.h"

namespace ringtunnel::proxy {

class Relay;

// ---- accepted sockets (already admitted by the budgets; each is released once)
// An accepted socket no object takes: reset, closed, and released from the budgets.
void refuse_accepted(WorkerContext& ctx, int fd);
void open_relay(WorkerContext& ctx, int fd, uint16_t route);
// The relay (null: refused for lack of a slot). `labels`: its traffic metrics' (null: from the
// client's and target's addresses, as for a --forward route).
Relay* open_relay(WorkerContext& ctx, int fd, const TcpTarget& to,
                  const stats::TrafficLabels* labels = nullptr);
void open_outbound_stream(WorkerContext& ctx, int fd, uint16_t route);
void open_outbound_stream(WorkerContext& ctx, int fd, std::shared_ptr<const HboneTarget> to,
                          const stats::TrafficLabels* labels = nullptr);
void open_inbound_conn(WorkerContext& ctx, int fd, const std::string& listener);

// ---- completions
// A completion of a relay, HBONE connection or stream. The one rule for late completions: an
// owner whose slot is free or has another generation gets none; the completion is logged as a
// bug (every object waits for all its operations before it lets its slot go) and dropped.
void dispatch(WorkerContext& ctx, const ring::OpTag& tag, const io_uring_cqe& cqe);

// ---- scheduling
// Buffers given back since the last call go to the kernel, and whoever waited for them is
// scheduled again.
void publish_buffers(WorkerContext& ctx);
// Services what was scheduled, a few rounds: relays, then HBONE streams (which submit to their
// connection's session), then connections (which encrypt, and so release payloads back to
// streams and buffers to the pool). What is left makes the next wait return at once.
void settle(WorkerContext& ctx);
bool has_todo(const WorkerContext& ctx);

// ---- timers
// Keepalive PINGs, idle and handshake deadlines of HBONE connections, the drain's GOAWAYs, and
// outbound CONNECTs unanswered.
void tick(WorkerContext& ctx, uint64_t now);
// The receive pool is low: fewer than a quarter of its bytes are with the kernel, or somebody
// waits for buffers.
bool under_pressure(WorkerContext& ctx);
// Slow readers must not starve the others of receive buffers: when the pool runs low, every
// holder that has not moved for a while copies its bytes to the heap (bounded by
// --memory-budget) and gives its buffers back; if the budget kept some in the pool, the holder
// of the most goes (end=overload). At most every kPressureScanNs.
void relieve_pressure(WorkerContext& ctx);
inline constexpr uint64_t kPressureScanNs = 10'000'000;
// The drain timeout passed: everything still open is reset.
void expire_all(WorkerContext& ctx);

bool has_hbone(WorkerContext& ctx);
uint32_t live_relays(WorkerContext& ctx);

}  // namespace ringtunnel::proxy

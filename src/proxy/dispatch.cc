#include "ringtunnel/proxy/dispatch.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <unordered_map>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/objects.h"

namespace ringtunnel::proxy {

namespace {

// Pool pressure: fewer than this fraction (1/kPressureFraction) of the receive pool's bytes are
// with the kernel, or somebody waits for buffers. Then holders that have not moved for kStallNs
// move their bytes to the heap. A quarter: enough head room for the reads of the next few loop
// iterations of the connections that do move. 50 ms: a reader that keeps up never waits that
// long between two sends of a bulk stream.
constexpr size_t kPressureFraction = 4;
constexpr uint64_t kStallNs = 50'000'000;

}  // namespace

void refuse_accepted(WorkerContext& ctx, int fd) {
  net::arm_reset_on_close(fd);
  close(fd);
  ctx.budgets.connection_released();
}

namespace {

// The one late-completion rule (dispatch.h).
template <typename T>
T* owner_of(WorkerContext& ctx, SlotTable<T>& table, const ring::OpTag& tag,
            const io_uring_cqe& cqe, std::string_view what) {
  T* t = table.find(tag.index, tag.generation);
  if (t && t->live()) return t;
  log_line(fmt::format("ringtunnel: worker {}: completion for a closed {} (op {}, res {}), ignored",
                       ctx.id, what, to_string(Op(tag.op)), cqe.res));
  return nullptr;
}

}  // namespace

void open_relay(WorkerContext& ctx, int fd, uint16_t route) {
  open_relay(ctx, fd, tcp_target(ctx.config.routes[route]));
}

Relay* open_relay(WorkerContext& ctx, int fd, const TcpTarget& to,
                  const stats::TrafficLabels* labels) {
  Relay* r = ctx.objects().relays.acquire(ctx);
  if (!r) {
    log_line(LogLevel::warn,
             fmt::format("ringtunnel: worker {}: {} connections open, refusing another", ctx.id,
                         ctx.objects().relays.live()));
    refuse_accepted(ctx, fd);
    return nullptr;
  }
  r->open(fd, to, labels);
  return r->live() ? r : nullptr;
}

void open_outbound_stream(WorkerContext& ctx, int fd, uint16_t route) {
  open_outbound_stream(ctx, fd, ctx.outbound().route_target(route));
}

void open_outbound_stream(WorkerContext& ctx, int fd, std::shared_ptr<const HboneTarget> to,
                          const stats::TrafficLabels* labels) {
  HboneStream* s = ctx.objects().streams.acquire(ctx);
  if (!s) return refuse_accepted(ctx, fd);
  s->open_outbound(fd, std::move(to), labels);
}

void open_inbound_conn(WorkerContext& ctx, int fd, const std::string& listener) {
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len);
  std::string source;
  if (peer.ss_family == AF_INET)
    source.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in*>(&peer)->sin_addr),
                  sizeof(in_addr));
  else if (peer.ss_family == AF_INET6)
    source.assign(reinterpret_cast<const char*>(&reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr),
                  sizeof(in6_addr));
  // Over a handshake cap (counted), or 2^24 connections in this worker: refused.
  HboneConnection* c =
      ctx.budgets.admit_handshake(source) ? ctx.objects().conns.acquire(ctx) : nullptr;
  if (!c) return refuse_accepted(ctx, fd);
  net::Endpoint from;
  from.storage = peer;
  from.length = len;
  c->open_inbound(fd, from, std::move(source), listener);
}

void dispatch(WorkerContext& ctx, const ring::OpTag& tag, const io_uring_cqe& cqe) {
  Objects& objects = ctx.objects();
  const auto op = Op(tag.op);
  switch (Owner(tag.owner)) {
    case Owner::relay:
      if (Relay* r = owner_of(ctx, objects.relays, tag, cqe, "relay"))
        r->on_completion(op, tag.lane, cqe);
      return;
    case Owner::conn:
      if (HboneConnection* c = owner_of(ctx, objects.conns, tag, cqe, "HBONE connection"))
        c->on_completion(op, tag.lane, cqe);
      return;
    case Owner::stream:
      if (HboneStream* s = owner_of(ctx, objects.streams, tag, cqe, "HBONE stream"))
        s->on_completion(op, tag.lane, cqe);
      return;
    case Owner::none:
    case Owner::worker:
      break;
  }
  ctx.log_bug(fmt::format("completion for owner {} (op {}, res {})", tag.owner, tag.op, cqe.res));
}

void publish_buffers(WorkerContext& ctx) {
  const bool tls_published = ctx.tls_pool.ready() && ctx.tls_pool.publish();
  if (!ctx.pool.publish() && !tls_published) return;
  Objects& objects = ctx.objects();
  auto& starved = ctx.starved;
  for (const Service& s : starved[WorkerContext::list(Owner::relay)])
    if (Relay* r = objects.relays.find(s.index, s.generation); r && r->live()) r->unstarve(s.lane);
  for (const Service& s : starved[WorkerContext::list(Owner::conn)])
    if (HboneConnection* c = objects.conns.find(s.index, s.generation); c && c->live())
      c->unstarve();
  for (const Service& s : starved[WorkerContext::list(Owner::stream)])
    if (HboneStream* st = objects.streams.find(s.index, s.generation); st && st->live())
      st->unstarve();
  for (auto& list : starved)
    list.clear();
}

bool has_todo(const WorkerContext& ctx) {
  for (const auto& list : ctx.todo)
    if (!list.empty()) return true;
  return false;
}

void settle(WorkerContext& ctx) {
  relieve_pressure(ctx);
  Objects& objects = ctx.objects();
  auto& relays = ctx.todo[WorkerContext::list(Owner::relay)];
  auto& streams = ctx.todo[WorkerContext::list(Owner::stream)];
  auto& conns = ctx.todo[WorkerContext::list(Owner::conn)];
  for (int round = 0; round < 16; ++round) {
    publish_buffers(ctx);
    if (!has_todo(ctx)) break;
    // service() never schedules a relay again within the round, but index anyway: cheap.
    for (size_t i = 0; i < relays.size(); ++i) {
      const Service s = relays[i];
      if (Relay* r = objects.relays.find(s.index, s.generation)) r->service(s.lane);
    }
    relays.clear();
    for (size_t i = 0; i < streams.size(); ++i) {
      const Service s = streams[i];
      if (HboneStream* st = objects.streams.find(s.index, s.generation)) st->service();
    }
    streams.clear();
    for (size_t i = 0; i < conns.size(); ++i) {
      const Service s = conns[i];
      if (HboneConnection* c = objects.conns.find(s.index, s.generation)) c->service();
    }
    conns.clear();
  }
}

void tick(WorkerContext& ctx, uint64_t now) {
  ctx.objects().conns.for_each([&](HboneConnection& c) {
    if (c.live()) c.tick(now);
  });
  ctx.objects().streams.for_each([&](HboneStream& s) {
    if (s.live()) s.check_opening(now);
  });
}

bool under_pressure(WorkerContext& ctx) {
  const ring::BufferPool& pool = ctx.pool;
  if (!pool.ready()) return false;
  if (!ctx.starved[WorkerContext::list(Owner::relay)].empty() ||
      !ctx.starved[WorkerContext::list(Owner::stream)].empty())
    return true;
  // Against the configured pool: buffers not yet added count as free (the pool grows into them).
  size_t available = 0;
  for (uint8_t c = 0; c < ring::kBufferClasses; ++c)
    available += size_t{pool.headroom(c)} * pool.size(c);
  return available * kPressureFraction < pool.bytes();
}

namespace {

// The pool is low and --memory-budget kept a stalled holder's bytes in it: those holders keep
// their buffers, and every other connection of the worker would starve. The one holding the most
// of the pool goes (both sides reset, end=overload): a relay, or an HBONE connection with its
// streams (closing the connection drops every reference into the pool at once; a stream's own
// reset may wait behind output its peer does not read). One per scan, so the rest are spared if
// that was enough.
void shed_stalled_holder(WorkerContext& ctx, uint64_t now) {
  Objects& objects = ctx.objects();
  size_t most = 0;
  Relay* relay = nullptr;
  HboneConnection* conn = nullptr;
  objects.relays.for_each([&](Relay& r) {
    const size_t held = r.stalled_pool_bytes(now, kStallNs);
    if (held > most) most = held, relay = &r, conn = nullptr;
  });
  std::unordered_map<HboneConnection*, size_t> by_conn;
  objects.streams.for_each([&](HboneStream& s) {
    const size_t bytes = s.live() ? s.stalled_pool_bytes(now, kStallNs) : 0;
    if (!bytes) return;
    const size_t held = by_conn[s.connection()] += bytes;
    if (held > most) most = held, conn = s.connection(), relay = nullptr;
  });
  if (relay) {
    log_line(LogLevel::warn,
             fmt::format(
                 "ringtunnel: worker {}: overload: receive pool low and --memory-budget {} spent; "
                 "resetting the stalled connection from {} holding {} bytes of the pool",
                 ctx.id, ctx.config.memory_budget, relay->client_text(), most));
    relay->end(EndReason::overload);
  } else if (conn) {
    conn->overload(
        fmt::format("receive pool low and --memory-budget {} spent; its stalled "
                    "streams held {} bytes of the pool",
                    ctx.config.memory_budget, most));
  }
}

}  // namespace

void relieve_pressure(WorkerContext& ctx) {
  const uint64_t now = ctx.loop_now;
  if (now < ctx.next_pressure_scan_ns || !under_pressure(ctx)) return;
  ctx.next_pressure_scan_ns = now + kPressureScanNs;
  bool all_moved = true;  // false: the budget kept a stalled holder's bytes in the pool
  Objects& objects = ctx.objects();
  objects.relays.for_each([&](Relay& r) { all_moved &= r.spill_stalled(now, kStallNs); });
  objects.streams.for_each([&](HboneStream& s) {
    if (s.live() && s.stalled_pool_bytes(now, kStallNs)) all_moved &= s.to_heap();
  });
  if (!all_moved) shed_stalled_holder(ctx, now);
}

void expire_all(WorkerContext& ctx) {
  Objects& objects = ctx.objects();
  objects.relays.for_each([&](Relay& r) {
    if (r.state() == Relay::State::connecting || r.state() == Relay::State::relaying)
      r.end(EndReason::drain_timeout);
  });
  objects.streams.for_each([&](HboneStream& s) {
    if (s.state() == HboneStream::State::opening || s.state() == HboneStream::State::open)
      s.end(EndReason::drain_timeout, true);
  });
  objects.conns.for_each([&](HboneConnection& c) { c.expire(); });
}

bool has_hbone(WorkerContext& ctx) {
  return ctx.objects().conns.live() || ctx.objects().streams.live();
}

uint32_t live_relays(WorkerContext& ctx) {
  return ctx.objects().relays.live();
}

}  // namespace ringtunnel::proxy

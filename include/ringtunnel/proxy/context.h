// What a proxy object (relay, HBONE connection, HBONE stream) may reach of its worker: the ring
// (through the Submitter seam), the receive pools, the worker's tables of objects, the to-do and
// starved lists, the budgets, the clock and the log batch. The Worker owns one and hands it to
// every object; a unit test builds one around a fake ring and unregistered pools, and drives the
// same objects with made-up completions (dispatch.h).
#pragma once

#include <liburing.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/config/config.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/proxy/budgets.h"
#include "ringtunnel/proxy/clock.h"
#include "ringtunnel/proxy/lent_payloads.h"
#include "ringtunnel/proxy/ops.h"
#include "ringtunnel/proxy/send_queue.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/submitter.h"
#include "ringtunnel/stats/metrics.h"
#include "ringtunnel/tls/ciphertext_queue.h"
#include "ringtunnel/tls/credential_store.h"
#include "ringtunnel/tls/credentials.h"

namespace ringtunnel::workload {
class State;
class Store;
struct Workload;
}  // namespace ringtunnel::workload

namespace ringtunnel::proxy {

struct Objects;  // objects.h: the tables of relays, connections and streams
class Relay;
class HboneConnection;
class HboneStream;
class OutboundPool;

// An object to service (or that waits for buffers): its slot, and for a relay the direction.
struct Service {
  uint32_t index;
  uint32_t generation;
  uint8_t lane;
};

class WorkerContext {
 public:
  // `identity` may be null when no route needs one. `log` may be null: no access log.
  WorkerContext(unsigned id, const config::Config& config, const tls::Credentials* identity,
                ring::Submitter& ring, ring::BufferPool& pool, ring::BufferPool& tls_pool,
                AccessLog* log);
  ~WorkerContext();
  WorkerContext(const WorkerContext&) = delete;
  WorkerContext& operator=(const WorkerContext&) = delete;

  // ---- the ring
  // A free SQE whose completion will carry `tag` (proxy/ops.h). liburing's prep calls clear
  // sqe->flags: set IOSQE_FIXED_FILE and links after them.
  io_uring_sqe* sqe(uint64_t tag) {
    io_uring_sqe* s = ring_.sqe();
    io_uring_sqe_set_data64(s, tag);
    return s;
  }
  void reserve(unsigned n) { ring_.reserve(n); }
  const ring::RingFeatures& features() const { return ring_.features(); }
  bool update_files(unsigned slot, std::span<const int> fds) {
    return ring_.update_files(slot, fds);
  }
  // --connect-timeout, for a linked timeout (liburing takes it by non-const pointer).
  __kernel_timespec* connect_timeout() { return &connect_timeout_; }

  // ---- objects (objects.cc): what an object may do with its siblings and its own slot
  HboneConnection* new_conn();  // null when the table is full
  HboneStream* new_stream();
  HboneConnection* conn(const Slot& ref);  // the live connection in that slot, else null
  uint32_t live_streams() const;
  OutboundPool& outbound();
  // The object is done: its slot goes back to the table.
  void release(Relay& r);
  void release(HboneConnection& c);
  void release(HboneStream& s);
  // The tables themselves, for the worker and dispatch.h.
  Objects& objects() { return *objects_; }
  const Objects& objects() const { return *objects_; }

  // ---- scheduling
  // Puts the object on this iteration's service list (the caller checks it is not there yet).
  void schedule(Owner owner, const Slot& slot, uint8_t lane = 0) {
    todo[list(owner)].push_back({slot.index, slot.generation, lane});
  }
  // No receive class has buffers: serviced again once some come back (publish_buffers).
  void wait_for_buffers(Owner owner, const Slot& slot, uint8_t lane = 0) {
    starved[list(owner)].push_back({slot.index, slot.generation, lane});
  }
  static size_t list(Owner owner) { return size_t(owner) - size_t(Owner::relay); }
  // Per owner (relay, conn, stream), so that the service order and the relay-only tests stay
  // exact.
  std::array<std::vector<Service>, 3> todo;
  std::array<std::vector<Service>, 3> starved;
  // Sends submitted this iteration whose completion will need no action (Relay::submit_send).
  unsigned quiet_sends = 0;
  // A relay read kBulkReadBytes or more at once this iteration: the next wait lets completions
  // gather for the ring's minimum wait (Ring::submit_and_gather, --ring-min-wait).
  static constexpr uint32_t kBulkReadBytes = 32u << 10;
  bool bulk_reads = false;
  // When a connection last read less than that (loop_now): request/response traffic. The worker
  // gathers, or waits for quiet sends, only after kInteractiveQuietNs without any, so one
  // tenant's bulk transfer never makes another's round trips wait for its batching.
  static constexpr uint64_t kInteractiveQuietNs = 2'000'000;
  uint64_t small_read_ns = 0;
  uint64_t bulk_read_ns = 0;  // and a relay, kBulkReadBytes or more
  // A connection's read of `bytes` at once, for the two above: a small one marks
  // request/response traffic; only a relay's bulk read (note_relay_read) makes the wait gather.
  void note_read(uint32_t bytes) {
    if (bytes < kBulkReadBytes) small_read_ns = loop_now;
  }
  void note_relay_read(uint32_t bytes) {
    note_read(bytes);
    if (bytes < kBulkReadBytes) return;
    bulk_reads = true;
    bulk_read_ns = loop_now;
  }

  // ---- buffers
  ring::BufferPool& pool;      // relays and streams receive here
  ring::BufferPool& tls_pool;  // HBONE connections receive here (see Worker)
  const LentPayloads::GiveBack give_back;
  SendQueuePool queues;
  tls::BlockPool blocks;

  // ---- time: `loop_now` is taken once per loop iteration, after the wait; now() is fresh.
  uint64_t now() const { return clock(); }
  uint64_t (*clock)() = &monotonic_ns;
  uint64_t loop_now = 0;
  uint64_t next_pressure_scan_ns = 0;  // relieve_pressure (dispatch.h)

  // ---- log
  bool access_enabled() const { return log_ && log_->enabled(); }
  void access(const AccessRecord& record, std::string_view reason = {});
  std::string log_batch;  // the Worker hands it to the log after each iteration
  void log_bug(std::string_view what);
  // A completion of an op that `owner` never submits: a bug, logged and ignored.
  void unexpected(std::string_view owner, Op op, int res);

  // ---- the workload config (--config; all null without it)
  const workload::Store* store = nullptr;
  std::shared_ptr<const workload::State> state;  // this worker's snapshot
  const workload::Workload* local = nullptr;     // the local workload, in `state`
  std::string local_baggage;  // the `baggage` header for `local`, made once per snapshot
  uint64_t state_generation = 0;

  // ---- configuration, budgets, drain
  const unsigned id;
  // What the worker counts (stats/metrics.h); the metrics scrape reads it from another thread.
  stats::WorkerMetrics metrics;
  const config::Config& config;
  // The node's credentials: those of the store's snapshot this worker holds (or, in unit tests,
  // those given to the constructor). Their SPIFFE ID never changes while the process runs.
  const tls::Credentials* identity;
  // A new TLS session's credentials: the store's current snapshot, taken when its generation
  // moved (certificate rotation: tls/credential_store.h). Sessions already open keep theirs.
  const tls::Credentials& handshake_identity() {
    if (credential_store && credential_store->generation() != identity_generation_) take_identity();
    return *identity;
  }
  const tls::CredentialStore* credential_store = nullptr;  // null: `identity` stays
  void take_identity();
  Budgets budgets;
  bool draining = false;
  // Out of descriptors: accepts wait (re-armed on release or by timer).
  bool accept_blocked = false;
  void descriptor_freed() { accept_blocked = false; }

 private:
  ring::Submitter& ring_;
  AccessLog* log_;
  std::shared_ptr<const tls::Credentials> identity_ref_;  // keeps `identity` alive
  uint64_t identity_generation_ = 0;
  __kernel_timespec connect_timeout_{};
  std::unique_ptr<Objects> objects_;
};

// The operations of one object in flight, tagged with its owner kind and slot: the object may
// be freed only once `count` is back to 0 (every final completion has arrived).
struct PendingOps {
  Owner owner;
  const Slot* slot;
  uint32_t count = 0;

  uint64_t tag(Op op, uint8_t lane = 0) const {
    return op_tag(owner, op, lane, slot->index, slot->generation);
  }
  io_uring_sqe* sqe(WorkerContext& ctx, Op op, uint8_t lane = 0) {
    ++count;
    return ctx.sqe(tag(op, lane));
  }
  void completed(const io_uring_cqe& cqe) {
    if (!(cqe.flags & IORING_CQE_F_MORE)) --count;
  }
};

}  // namespace ringtunnel::proxy

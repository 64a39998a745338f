// A worker: one thread, one ring, its own listeners, buffers and connections. Workers share only
// the read-only Config and the access-log sink, so the data path takes no locks.
#pragma once

#include <sys/uio.h>

#include <netinet/in.h>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "ringtunnel/config/config.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/proxy/hbone.h"
#include "ringtunnel/proxy/lent_payloads.h"
#include "ringtunnel/proxy/slot_table.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/op_tag.h"
#include "ringtunnel/ring/ring.h"
#include "ringtunnel/tls/credentials.h"

namespace ringtunnel::proxy {

// What a completion was for. An accept's index says which listener; for the rest the lane says
// which direction.
enum class OpKind : uint8_t {
  accept = 1,
  wake,
  connect,
  connect_timeout,
  recv,
  send,
  shutdown,
  cancel,
  close,
  poll,
  splice_in,
  splice_out,
  // HBONE connections (index: the connection's slot)
  conn_connect,
  conn_connect_timeout,
  conn_recv,
  conn_send,
  conn_cancel,
  conn_close,
  // HBONE streams (index: the stream's slot)
  stream_connect,
  stream_connect_timeout,
  stream_recv,
  stream_send,
  stream_shutdown,
  stream_cancel,
  stream_close,
};

// One received buffer (or what is left of it) waiting to be sent on: a pool buffer, or, once a
// stalled direction has been moved out of the pool, a heap copy of the bytes left.
struct Chunk {
  uint32_t offset;
  uint32_t length;
  uint16_t bid;
  uint8_t cls;
  uint8_t* heap = nullptr;  // owned; set: the bytes are at heap + offset, not in the pool
};

// A direction's queue while it has bytes to send. Pooled per worker, so an idle connection holds
// none: the 1.6 KiB of gather space would otherwise dominate its memory.
struct SendQueue {
  // Enough iovecs for 16 MiB of largest-class buffers in one send; more waits for the next.
  static constexpr unsigned kMaxGather = 64;

  std::vector<Chunk> chunks = std::vector<Chunk>(kMaxGather);  // ring; grows when full
  uint32_t head = 0;
  uint32_t count = 0;
  std::array<iovec, kMaxGather> iov{};
  msghdr msg{};

  Chunk& at(uint32_t i) { return chunks[(head + i) % chunks.size()]; }
  void push(const Chunk& c);
  void pop() {
    head = static_cast<uint32_t>((head + 1) % chunks.size());
    --count;
  }
};

enum class RecvState : uint8_t {
  off,         // none in flight: not started, paused (queue full), starved of buffers, or at EOF
  armed,       // a (multishot) receive is in flight
  cancelling,  // its cancel is on the way: to change buffer class, or to pause
};

// One direction of a relay: bytes read from one socket, written to the other.
struct Direction {
  SendQueue* queue = nullptr;
  uint64_t bytes = 0;   // read from the source so far
  uint32_t queued = 0;  // read but not yet sent
  ring::BufferClassPolicy policy;
  uint8_t armed_cls = 0;
  RecvState recv = RecvState::off;
  bool sending = false;
  bool eof = false;        // the source sent its FIN
  bool shut = false;       // the FIN has been passed on (shutdown submitted)
  bool shut_done = false;  // ... and completed
  bool scheduled = false;  // on the worker's service list for this iteration
  bool starved = false;    // waiting for receive buffers to come back
  // Moving out of the pool (spill): the send in flight was cancelled so that its chunks can move.
  bool send_cancelled = false;
  uint32_t in_flight = 0;    // chunks at the front of the queue that the send in flight covers
  uint64_t progress_ns = 0;  // the last time the queue moved (or became non-empty)
  // --tcp-splice
  bool splice_in_busy = false;
  bool splice_out_busy = false;
  bool pipe_full = false;  // the last inbound splice found no room: wait for the outbound one
  int pipe_r = -1;
  int pipe_w = -1;
  uint32_t in_pipe = 0;
  uint32_t pipe_size = 0;
};

enum class RelayState : uint8_t { free, connecting, relaying, closing };

// A client connection and its target connection.
struct Relay {
  static constexpr int kClient = 0, kTarget = 1;
  static constexpr int kUp = 0, kDown = 1;  // directions: client->target, target->client

  uint32_t generation = 0;
  RelayState state = RelayState::free;
  EndReason end = EndReason::none;
  bool closes_sent = false;
  bool fixed = false;         // fds are slots in the ring's file table (direct descriptors)
  bool reset_client = false;  // close with a reset rather than a FIN
  bool reset_target = false;
  uint16_t route = 0;
  std::array<int, 2> fds{-1, -1};  // as operations name them: fds, or file-table slots if fixed
  std::array<Direction, 2> dirs;
  uint32_t pending = 0;  // operations whose final completion has not arrived
  uint32_t index = 0;    // its slot in the worker's table
  uint32_t next_free = 0;
  union {
    sockaddr sa;
    sockaddr_in in4;
    sockaddr_in6 in6;
  } client{};
  uint64_t start_ns = 0;
  int64_t start_unix_ms = 0;
};

class Worker {
 public:
  // `identity` may be null when no route needs one (no HBONE).
  Worker(unsigned id, const config::Config& config, AccessLog& log,
         const tls::Credentials* identity);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // In the worker's thread: ring, buffers, listeners. Returns "" or what failed.
  std::string start();
  // In the worker's thread: serve until drained.
  void run();
  // From any thread: stop accepting, drain, then return from run().
  void request_drain();

  const ring::RingFeatures& features() { return ring_.features(); }

 private:
  friend struct HboneConn;
  static constexpr uint16_t kHboneListener = UINT16_MAX;  // Listener::route of --hbone-listen

  struct Listener {
    int fd = -1;
    uint16_t route = 0;
    bool armed = false;
    bool closed = false;
  };
  struct Service {
    uint32_t index;
    uint32_t generation;
    uint8_t dir;
  };

  // worker.cc: the loop, listeners, drain.
  void on_completion(const io_uring_cqe& cqe);
  void after_completions();
  void publish_buffers();
  void arm_accept(size_t listener);
  void on_accept(size_t listener, const io_uring_cqe& cqe);
  void on_wake();
  void begin_drain();

  // tcp_relay.cc: the relay state machine.
  void open_relay(int client_fd, uint16_t route);
  void on_relay_completion(Relay& r, OpKind kind, uint8_t dir, const io_uring_cqe& cqe);
  void on_connect(Relay& r, int res);
  void on_recv(Relay& r, uint8_t d, const io_uring_cqe& cqe);
  void on_send(Relay& r, uint8_t d, int res);
  void on_shutdown(Relay& r, uint8_t d);
  void on_splice_in(Relay& r, uint8_t d, int res);
  void on_splice_out(Relay& r, uint8_t d, int res);
  void schedule(Relay& r, uint8_t d);
  void service(Relay& r, uint8_t d);
  void service_splice(Relay& r, uint8_t d);
  void arm_recv(Relay& r, uint8_t d);
  void submit_send(Relay& r, uint8_t d);
  void submit_shutdown(Relay& r, uint8_t d);
  void end_relay(Relay& r, EndReason reason);
  // These three return false when --memory-budget left bytes in the pool that should have moved.
  bool spill(Relay& r, uint8_t d);
  bool spill_chunks(Direction& dir, uint32_t from);
  void free_chunk(const Chunk& c);
  void maybe_release(Relay& r);
  void release(Relay& r);
  // An SQE tagged for the relay and counted in its pending operations. (liburing's prep calls
  // clear sqe->flags: set IOSQE_FIXED_FILE after them.)
  io_uring_sqe* relay_sqe(Relay& r, OpKind kind, uint8_t dir);

  // hbone.cc: HBONE connections and streams.
  void on_hbone_completion(OpKind kind, const ring::OpTag& tag, const io_uring_cqe& cqe);
  void open_inbound_conn(int fd);
  void open_outbound_stream(int fd, uint16_t route);
  HboneConn* pooled_conn(uint16_t route);
  HboneConn* new_conn(bool inbound);
  HboneStream* new_stream(bool inbound);
  void start_tls(HboneConn& c);
  void conn_connected(HboneConn& c, int res);
  void conn_received(HboneConn& c, const io_uring_cqe& cqe);
  void conn_sent(HboneConn& c, int res);
  void drive_conn(HboneConn& c);
  void conn_established(HboneConn& c);
  void service_conn(HboneConn& c);
  void schedule_conn(HboneConn& c);
  void fail_conn(HboneConn& c, std::string reason);
  void pump_h2(HboneConn& c);
  void give_window(HboneStream& s, size_t bytes);
  void close_conn_gracefully(HboneConn& c);
  void abandon_conn(HboneConn& c);
  void maybe_release_conn(HboneConn& c);
  void arm_conn_recv(HboneConn& c);
  io_uring_sqe* conn_sqe(HboneConn& c, OpKind kind);
  void submit_stream_connect(HboneStream& s, HboneConn& c);
  void stream_target_connected(HboneStream& s, int res);
  void stream_received(HboneStream& s, const io_uring_cqe& cqe);
  void stream_sent(HboneStream& s, int res);
  void service_stream(HboneStream& s);
  void schedule_stream(HboneStream& s);
  void end_stream(HboneStream& s, EndReason reason, bool reset_tcp);
  void maybe_release_stream(HboneStream& s);
  void release_stream(HboneStream& s);
  io_uring_sqe* stream_sqe(HboneStream& s, OpKind kind);
  void hbone_timers(uint64_t now);
  bool has_hbone() const { return conns_.live() || streams_.live(); }
  // SessionEvents, by way of HboneConn.
  void h2_connect_request(HboneConn& c, int32_t id, const net::Endpoint& target,
                          std::span<const h2::Header> headers);
  void h2_response(HboneConn& c, int32_t id, int status);
  void h2_data(HboneConn& c, int32_t id, const uint8_t* data, size_t size);
  void h2_end_stream(HboneConn& c, int32_t id);
  void h2_reset(HboneConn& c, int32_t id, uint32_t code);
  void h2_stream_closed(HboneConn& c, int32_t id);
  void h2_payload_released(HboneConn& c, int32_t id, std::span<const uint8_t> piece);
  // Pool pressure: stalled holders of receive buffers move their bytes to the heap (worker.cc).
  bool pool_under_pressure() const;
  void log_bug(const std::string& what);
  void relieve_pool_pressure();
  bool stream_to_heap(HboneStream& s);
  void shed_stalled_holder();
  // The sessions of an HBONE connection (inbound: when its first byte arrives).
  void create_sessions(HboneConn& c);

  // budget.cc: admission against the budgets (connections, streams, handshakes in progress),
  // the idle and opening deadlines they need, and one log line per second for what was refused.
  bool admit_connection(int fd, uint16_t route);  // false: refused, and fd reset and closed
  bool admit_handshake(const std::string& source);
  bool over_memory_budget() const;
  bool admit_inbound_stream(HboneConn& c, int32_t id);  // false: answered 503
  void end_handshake(HboneConn& c);
  void conn_released(HboneConn& c);
  void stream_released(HboneStream& s);
  void close_before_handshake(HboneConn& c, uint64_t& count, const char* reason);
  void handshake_timed_out(HboneConn& c);
  bool inbound_idle(HboneConn& c, uint64_t now);
  void opening_deadlines(uint64_t now);
  void budget_timers(uint64_t now, std::optional<int64_t>& timeout);
  void count_refusal(uint64_t& count);
  void write_refusals();
  bool adopt_fixed(Relay& r);
  SendQueue* take_queue();
  void return_queue(SendQueue* q);

  unsigned id_;
  const config::Config& config_;
  AccessLog& log_;
  ring::Ring ring_;
  ring::BufferPool pool_;
  // HBONE connections receive from their own rings: a connection must always be able to read
  // the WINDOW_UPDATEs that free its streams' buffers, however many of pool_'s buffers those
  // streams hold (one pool for both would deadlock under load).
  ring::BufferPool tls_pool_;
  std::vector<Listener> listeners_;
  SlotTable<Relay> relays_;
  std::vector<Service> todo_;
  std::vector<Service> starved_;
  std::vector<std::unique_ptr<SendQueue>> spare_queues_;
  // HBONE
  const tls::Credentials* identity_ = nullptr;
  tls::BlockPool blocks_;
  SlotTable<HboneConn> conns_;
  SlotTable<HboneStream> streams_;
  std::vector<std::pair<uint32_t, uint32_t>> conn_todo_;    // index, generation
  std::vector<std::pair<uint32_t, uint32_t>> stream_todo_;  // index, generation
  // Decrypted bytes, handed to nghttp2 256 KiB at a time (sized once, never resized).
  std::vector<uint8_t> plaintext_ = std::vector<uint8_t>(256u << 10);
  struct Starved {
    bool conn;
    uint32_t index, generation;
  };
  std::vector<Starved> hbone_starved_;  // waiting for receive buffers to come back
  uint64_t next_tick_ns_ = 0;
  uint64_t now_ns_ = 0;  // taken once per loop iteration, after the wait
  uint64_t next_pressure_scan_ns_ = 0;
  // Heap bytes held for data moved out of the pool (relay chunks, stream payloads) and for
  // tunnel bytes whose connection window was handed back early; bounded by --memory-budget.
  size_t heap_bytes_ = 0;
  size_t early_credit_bytes_ = 0;
  LentPayloads::GiveBack give_back_ = [this](uint8_t cls, uint16_t bid) {
    pool_.give_back(cls, bid);
  };
  std::string log_batch_;
  __kernel_timespec connect_timeout_{};
  int wake_fd_ = -1;
  uint64_t wake_value_ = 0;
  bool draining_ = false;
  bool drain_expired_ = false;
  bool accept_blocked_ = false;  // out of descriptors: accepts wait (re-armed on release or timer)
  // Sends submitted this iteration whose completion will need no action (see submit_send).
  unsigned quiet_sends_ = 0;
  uint64_t drain_deadline_ns_ = 0;
  // Budgets (budget.cc).
  uint32_t accepted_live_ = 0;  // client connections accepted and not yet released
  uint32_t handshakes_ = 0;     // inbound HBONE handshakes in progress
  std::unordered_map<std::string, uint32_t> handshakes_by_source_;
  uint64_t accept_retry_ns_ = 0;  // accepts blocked (out of descriptors): when to try again
  struct Refusals {
    // HBONE connections closed before their handshake completed
    uint64_t over_source = 0, over_handshakes = 0, handshake_timeouts = 0, client_gone = 0;
    // refused over a limit
    uint64_t connections = 0, streams = 0, conn_streams = 0;
    uint64_t memory = 0;  // over --memory-budget
  } refused_;
  uint64_t refusals_due_ns_ = 0;  // when the counts above go to the log (0: none counted)
};

uint64_t monotonic_ns();
int64_t unix_ms();
// A socket error that means the peer reset the connection (or it is gone).
bool is_reset(int err);

}  // namespace ringtunnel::proxy

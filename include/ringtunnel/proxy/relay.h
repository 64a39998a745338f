// The TCP<->TCP relay: one client connection and its target connection.
//
//   connecting --connect ok--> relaying --both FINs passed on (the last by the close, on
//                                          ordinary descriptors)--> ending
//       |                          |                                |
//       +--refused/timeout---------+--reset/error/drain timeout-----+
//                                                                   v
//   ending:  end() cancelled every operation in flight on both sockets and pipes (none: skipped)
//     --every final completion in--> closing: the closes are submitted (a socket to be reset
//     gets SO_LINGER 0 first) --they completed--> free (the access-log line is written)
//
// Each direction reads into provided buffers, queues what it read (SendQueue), and sends all of
// it in one gathered send when no send is in flight. service() looks at a direction's state once
// per loop iteration and submits whatever it needs next, so every completion handler only
// updates state. Direction d receives on legs_[d] and sends to legs_[1 - d].
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <string>

#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/destination.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/proxy/send_queue.h"
#include "ringtunnel/proxy/tcp_leg.h"
#include "ringtunnel/proxy/traffic.h"

namespace ringtunnel::proxy {

class Relay {
 public:
  enum class State : uint8_t { free, connecting, relaying, ending, closing };
  static constexpr uint8_t kClient = 0, kTarget = 1;  // legs
  static constexpr uint8_t kUp = 0, kDown = 1;        // directions: client->target, and back

  explicit Relay(WorkerContext& ctx) : ctx_(ctx) {}
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  Slot slot;
  bool live() const { return state_ != State::free; }
  State state() const { return state_; }

  // A client accepted (counted in the budgets): dials `to`. Counted in the traffic metrics with
  // `labels`, or (null: a --forward route) with those of the client's and target's addresses.
  void open(int client_fd, const TcpTarget& to, const stats::TrafficLabels* labels = nullptr);
  void on_completion(Op op, uint8_t lane, const io_uring_cqe& cqe);
  void service(uint8_t d);
  // Receive buffers came back after direction d found none.
  void unstarve(uint8_t d);
  void end(EndReason reason);

  // Pool pressure (dispatch.cc): a direction that has not moved for `stall_ns` moves its bytes
  // out of the receive pool. False when --memory-budget kept some of them in it.
  bool spill_stalled(uint64_t now, uint64_t stall_ns);
  // The pool bytes held by directions that have not moved for `stall_ns`.
  size_t stalled_pool_bytes(uint64_t now, uint64_t stall_ns) const;
  std::string client_text() const;
  // --inbound-plaintext-listen: the relay was admitted by the local workload's policies, and is
  // judged again when they change (capture.cc). The client's and the target's addresses.
  void set_authorized() { authorized_ = true; }
  // An authorized relay that is relaying: true, with its client's and target's addresses.
  bool authorized_addresses(net::Endpoint& client, net::Endpoint& target) const;

 private:
  struct Direction {
    SendQueue* queue = nullptr;
    uint64_t bytes = 0;   // read from the source so far
    uint32_t queued = 0;  // read but not yet sent
    Fin fin = Fin::open;
    SendState send = SendState::idle;
    bool scheduled = false;    // on the worker's service list for this iteration
    uint32_t in_flight = 0;    // chunks at the front of the queue that the send in flight covers
    uint64_t progress_ns = 0;  // the last time the queue moved (or became non-empty)
    // --tcp-splice: source -> pipe -> destination.
    enum class SpliceIn : uint8_t { idle, busy, pipe_full } splice_in = SpliceIn::idle;
    bool splice_out_busy = false;
    int pipe_r = -1;
    int pipe_w = -1;
    uint32_t in_pipe = 0;
    uint32_t pipe_size = 0;
  };

  void on_connect(int res);
  void on_recv(uint8_t d, const io_uring_cqe& cqe);
  void on_send(uint8_t d, int res);
  void on_shutdown(uint8_t d);
  void on_splice_in(uint8_t d, int res);
  void on_splice_out(uint8_t d, int res);
  void schedule(uint8_t d);
  void service_splice(uint8_t d);
  void submit_send(uint8_t d);
  void submit_shutdown(uint8_t d);
  bool idle(uint8_t d) const;
  bool open_pipes();
  bool adopt_fixed();
  bool spill(uint8_t d);
  bool spill_chunks(Direction& dir, uint32_t from);
  // `n` bytes read from direction d's source: the access log's count and the metrics' alike.
  void count(uint8_t d, uint32_t n) {
    dirs_[d].bytes += n;
    if (d == kUp)
      traffic_.up(n);
    else
      traffic_.down(n);
  }
  void free_chunk(const Chunk& c);
  void maybe_release();
  void release();
  // The socket facing the far end of direction d's sends: d == up sends to the target.
  static Peer receiver(uint8_t d) { return d == kUp ? Peer::target : Peer::client; }
  static Peer sender(uint8_t d) { return d == kUp ? Peer::client : Peer::target; }

  WorkerContext& ctx_;
  PendingOps ops_{Owner::relay, &slot};
  State state_ = State::free;
  EndReason end_ = EndReason::none;
  std::array<bool, 2> reset_{};  // per leg: close with a reset rather than a FIN
  bool authorized_ = false;
  const std::string* listener_ = nullptr;
  const std::string* target_text_ = nullptr;  // null: target_ formatted
  net::Endpoint target_;                      // the connect reads it at submission
  std::array<TcpLeg, 2> legs_;
  std::array<Direction, 2> dirs_;
  TrafficCount traffic_;
  union {
    sockaddr sa;
    sockaddr_in in4;
    sockaddr_in6 in6;
  } client_{};
  uint64_t start_ns_ = 0;
  int64_t start_unix_ms_ = 0;
};

}  // namespace ringtunnel::proxy

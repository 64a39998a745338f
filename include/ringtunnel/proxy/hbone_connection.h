// One HBONE connection on the worker's ring: a mutual-TLS 1.3 connection carrying HTTP/2
// (TunnelSession: TlsSession + H2Session, pure byte transformers), client side (outbound: to a
// --forward hbone:// route's peer, pooled by OutboundPool) or server side (inbound: accepted on
// --hbone-listen). Its CONNECT streams are HboneStreams; ConnectionStreams receives the
// session's events and passes each stream's to it.
//
//   connecting --TCP connect ok--> handshaking --TLS done--> open --GOAWAY sent (idle, drain)-->
//       |  (inbound starts at handshaking, with no TLS    |          going_away
//       |   or HTTP/2 state until its first byte)         |              | the session finished
//       +---------- fail(): refused, timeout, TLS, HTTP/2, socket, PING -+--------------+
//                                        v                                            v
//                  flushing: the last bytes (alert, GOAWAY, close_notify) go out, <= 5 s
//                                        | sent, or abandon() (close deadline, drain, no peer)
//                                        v
//        free <-- closing (the close submitted) <-- ending (every operation cancelled, or none)
//
// Bytes arrive in the worker's TLS pool (never the streams' pool: a connection must always be
// able to read the WINDOW_UPDATEs that free its streams' buffers) and are copied by TLS at once.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringtunnel/h2/session.h"
#include "ringtunnel/proxy/connection_streams.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/destination.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/proxy/tcp_leg.h"
#include "ringtunnel/proxy/tunnel_session.h"

namespace ringtunnel::proxy {

class HboneStream;

class HboneConnection {
 public:
  enum class State : uint8_t {
    free,
    connecting,
    handshaking,
    open,
    going_away,
    flushing,
    ending,
    closing,
  };
  static constexpr unsigned kMaxGather = 64;
  struct Info {
    bool inbound = false;
    bool overloaded = false;  // failed to free the receive pool: its streams end with overload
    uint32_t pool_key = 0;    // outbound: its key in the OutboundPool (its peer and identity)
    std::string peer_text;    // ip:port of the other end
    net::Endpoint peer;       // inbound: the other end (authorization's source)
    const std::string* listener = nullptr;  // inbound: the --hbone-listen address it came to
    std::string local_text;                 // inbound, --log-format json: the ip:port it arrived at
    std::string peer_identity;              // its SPIFFE ID, once the handshake is done
  };

  explicit HboneConnection(WorkerContext& ctx) : ctx_(ctx), streams_(ctx, *this) {}
  HboneConnection(const HboneConnection&) = delete;
  HboneConnection& operator=(const HboneConnection&) = delete;

  Slot slot;
  bool live() const { return state_ != State::free; }
  State state() const { return state_; }
  // Failed or finished: takes no stream and gives no window any more.
  bool closing() const { return state_ >= State::flushing; }
  const Info& info() const { return info_; }

  // ---- lifecycle
  // Accepted on --hbone-listen; `source` is the client's IP address (raw bytes), counted as a
  // handshake in progress until the handshake ends.
  void open_inbound(int fd, const net::Endpoint& peer, std::string source,
                    const std::string& listener);
  // Dials `to`'s peer, which must present `to`'s identity.
  void open_outbound(std::shared_ptr<const HboneTarget> to);
  void on_completion(Op op, uint8_t lane, const io_uring_cqe& cqe);
  void service();
  void schedule();
  void unstarve();  // receive buffers came back after it found none
  // Keepalive, idle, handshake and close deadlines, and the drain (the worker's tick).
  void tick(uint64_t now);
  void fail(ConnFailure failure, std::string_view detail = {});
  // Fails with overload: the receive pool is low and its stalled streams hold the most of it.
  void overload(std::string_view detail);
  // Past the drain timeout: fails, and does not wait for a peer that does not read.
  void expire();

  // ---- streams
  // Outbound: the pool may put a new stream here (opening with room in the waiting list, or
  // open with a stream id left and no GOAWAY received).
  bool accepts_stream() const;
  ConnectionStreams& streams() { return streams_; }
  TunnelSession& session() { return session_; }
  h2::H2Session& h2() { return session_.h2(); }

 private:
  void on_connected(int res);
  void on_received(const io_uring_cqe& cqe);
  void on_sent(int res);
  void drive();
  void established();
  void arm_recv();
  void go_away();
  void abandon();
  void close_before_handshake(Refusal counted);
  void end_handshake();
  void finish_sending();
  void maybe_release();
  void release();

  WorkerContext& ctx_;
  PendingOps ops_{Owner::conn, &slot};
  State state_ = State::free;
  Info info_;
  bool scheduled_ = false;
  bool in_handshake_ = false;  // inbound: counted in the budgets' handshakes in progress
  SendState send_ = SendState::idle;
  TcpLeg socket_;
  std::shared_ptr<const HboneTarget> target_;  // outbound: the connect reads its peer address
  TunnelSession session_;
  ConnectionStreams streams_;
  std::array<iovec, kMaxGather> iov_{};
  msghdr msg_{};
  std::string source_;  // inbound: the client's IP address (raw bytes)
  uint64_t next_ping_ns_ = 0;
  uint64_t handshake_deadline_ns_ = 0;
  uint64_t close_deadline_ns_ = 0;
};

}  // namespace ringtunnel::proxy

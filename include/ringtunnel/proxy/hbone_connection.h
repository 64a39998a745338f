// One HBONE connection on the worker's ring: a mutual-TLS 1.3 connection carrying HTTP/2
// (TlsSession + H2Session, both pure byte transformers), client side (outbound: to a --forward
// hbone:// route's peer, pooled by OutboundPool) or server side (inbound: accepted on
// --hbone-listen). Its CONNECT streams are HboneStreams; the session's events for a stream are
// passed to it.
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
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/proxy/tcp_leg.h"
#include "ringtunnel/tls/session.h"

namespace ringtunnel::proxy {

class HboneStream;

class HboneConnection final : public h2::SessionEvents {
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

  explicit HboneConnection(WorkerContext& ctx) : ctx_(ctx) {}
  HboneConnection(const HboneConnection&) = delete;
  HboneConnection& operator=(const HboneConnection&) = delete;

  Slot slot;
  bool live() const { return state_ != State::free; }
  State state() const { return state_; }
  // Failed or finished: takes no stream and gives no window any more.
  bool closing() const { return state_ >= State::flushing; }
  bool inbound() const { return inbound_; }

  // ---- lifecycle
  // Accepted on --hbone-listen; `source` is the client's IP address (raw bytes), counted as a
  // handshake in progress until the handshake ends.
  void open_inbound(int fd, std::string peer_text, std::string source);
  // Dials route `route`'s peer.
  void open_outbound(uint16_t route);
  void on_completion(Op op, uint8_t lane, const io_uring_cqe& cqe);
  void service();
  void schedule();
  void unstarve();  // receive buffers came back after it found none
  // Keepalive, idle, handshake and close deadlines, and the drain (the worker's tick).
  void tick(uint64_t now);
  void fail(ConnFailure failure, std::string_view detail = {});
  // Past the drain timeout: fails, and does not wait for a peer that does not read.
  void expire();

  // ---- streams
  uint16_t route() const { return route_; }
  bool accepts_stream() const;            // outbound: the pool may put a new stream here
  void add_waiting(HboneStream& s);       // an outbound stream waiting for the handshake
  void stream_attached() { ++streams_; }  // a stream now has an id here
  void held_stream_released();            // an inbound stream was released
  h2::H2Session& h2() { return *h2_; }
  const std::string& peer_text() const { return peer_text_; }
  const std::string& peer_identity() const { return peer_identity_; }
  // Failed to free the receive pool: its streams end with overload.
  bool overloaded() const { return overloaded_; }
  void overload(std::string_view detail);

  // ---- h2::SessionEvents: passed to the stream (HboneStream::on_h2_*)
  void on_connect_request(int32_t id, const net::Endpoint& target,
                          std::span<const h2::Header> headers) override;
  void on_response(int32_t id, int status) override;
  void on_data(int32_t id, const uint8_t* data, size_t size) override;
  void on_end_stream(int32_t id) override;
  void on_reset(int32_t id, uint32_t code) override;
  void on_stream_closed(int32_t id) override;
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool sent) override;
  void on_goaway(int32_t last_stream_id, uint32_t code) override;

 private:
  void on_connected(int res);
  void on_received(const io_uring_cqe& cqe);
  void on_sent(int res);
  void create_sessions();
  void drive();
  void established();
  void pump_h2();
  void arm_recv();
  void go_away();
  void abandon();
  void close_before_handshake(Refusal counted);
  void end_handshake();
  void finish_sending();
  void maybe_release();
  void release();
  HboneStream* stream_of(int32_t id) const;

  WorkerContext& ctx_;
  PendingOps ops_{Owner::conn, &slot};
  State state_ = State::free;
  bool inbound_ = false;
  bool scheduled_ = false;
  bool overloaded_ = false;
  bool in_handshake_ = false;  // inbound: counted in the budgets' handshakes in progress
  SendState send_ = SendState::idle;
  uint16_t route_ = 0;  // outbound: the route whose peer and identity this connection serves
  TcpLeg socket_;
  std::unique_ptr<tls::TlsSession> tls_;
  std::unique_ptr<h2::H2Session> h2_;
  std::array<iovec, kMaxGather> iov_{};
  msghdr msg_{};
  std::vector<HboneStream*> waiting_;  // outbound streams waiting for the handshake
  uint32_t streams_ = 0;               // streams with an id here
  // Inbound: streams accepted here and not yet released (their TCP side may still be draining
  // after the session closed them), counted against the session's stream limit.
  uint32_t held_streams_ = 0;
  std::string source_;  // inbound: the client's IP address (raw bytes)
  uint64_t idle_since_ns_ = 0;
  uint64_t next_ping_ns_ = 0;
  uint64_t handshake_deadline_ns_ = 0;
  uint64_t close_deadline_ns_ = 0;
  std::string peer_text_;      // ip:port of the other end
  std::string peer_identity_;  // its SPIFFE ID, once the handshake is done
};

}  // namespace ringtunnel::proxy

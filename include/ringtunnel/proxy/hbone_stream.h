// One HBONE stream: an HTTP/2 CONNECT stream of an HboneConnection joined with one plain TCP
// socket. Outbound (TCP -> HBONE): a client accepted on a --forward hbone:// listener; its stream
// goes on a pooled connection to the route's peer. Inbound (HBONE -> TCP): a CONNECT arriving on
// --hbone-listen, dialled as plain TCP to its :authority once admission allows it.
//
//   opening --(outbound: a 2xx answer | inbound: the target connected, 200 sent)--> open
//      |  outbound: waits in its connection's list until the handshake, then sends CONNECT
//      |                                      FIN passed both ways, the session let go of it
//      +--refused/reset/timeout/peer error--+----------------------+
//      |                                    v                      v
//      |          ending: cancels what it has in flight; waits for every operation AND for
//      |                  the session to let go of the stream (on_closed)
//   inbound, refused by admission: answered, no socket --^
//   ending --nothing in flight, session done--> closing (the close submitted) --> free
//
// Bytes TCP -> tunnel are received into provided buffers and lent to the session (no copy); they
// come back by address once encrypted (LentPayloads). Bytes tunnel -> TCP are copied out of the
// decrypted plaintext into the stream's queue and given back to flow control once sent: a slow
// reader stops its sender, end to end.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "ringtunnel/h2/session.h"
#include "ringtunnel/net/address.h"
#include "ringtunnel/proxy/admission.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/destination.h"
#include "ringtunnel/proxy/lent_payloads.h"
#include "ringtunnel/proxy/outcome.h"
#include "ringtunnel/proxy/tcp_leg.h"
#include "ringtunnel/proxy/traffic.h"
#include "ringtunnel/tls/ciphertext_queue.h"

namespace ringtunnel::proxy {

class HboneConnection;

class HboneStream {
 public:
  enum class State : uint8_t { free, opening, open, ending, closing };
  // The stream's side in the session: no id yet (outbound, waiting for its connection), an id
  // on a live connection, or let go by the session (it holds nothing of ours any more).
  enum class H2Side : uint8_t { unbound, bound, closed };
  static constexpr unsigned kMaxGather = 64;  // iovecs per send to the TCP side

  explicit HboneStream(WorkerContext& ctx) : ctx_(ctx) {}
  HboneStream(const HboneStream&) = delete;
  HboneStream& operator=(const HboneStream&) = delete;

  Slot slot;
  bool live() const { return state_ != State::free; }
  State state() const { return state_; }
  bool ending() const { return state_ >= State::ending; }

  // ---- lifecycle
  // A client accepted for `to` (a --forward hbone:// route's, or a captured connection's).
  // Counted in the traffic metrics with `labels`, or (null: a --forward route) with those of the
  // client's and the target's addresses.
  void open_outbound(int fd, std::shared_ptr<const HboneTarget> to,
                     const stats::TrafficLabels* labels = nullptr);
  // A CONNECT for `target` with id `id` on `conn`, judged by admission (refused: answered now).
  void open_inbound(HboneConnection& conn, int32_t id, const net::Endpoint& target,
                    std::span<const h2::Header> headers, Admission admission);
  // The connection is open: sends the CONNECT.
  void attach(HboneConnection& conn);
  void on_completion(Op op, uint8_t lane, const io_uring_cqe& cqe);
  void service();
  void unstarve();  // receive buffers came back after it found none
  void end(EndReason reason, bool reset_tcp);

  // ---- the session's events for this stream (through its connection)
  void on_h2_response(int status);
  void on_h2_data(HboneConnection& conn, const uint8_t* data, size_t size);
  void on_h2_end_stream();
  void on_h2_reset(const HboneConnection& conn, uint32_t code);
  void on_h2_closed();
  void on_h2_payload_released(std::span<const uint8_t> piece);

  // ---- pressure and deadlines
  HboneConnection* connection() const { return conn_; }
  // Pool bytes still lent, if they have not moved for `stall_ns`; else 0.
  size_t stalled_pool_bytes(uint64_t now, uint64_t stall_ns) const;
  // Moves what it has lent out of the pool. False when --memory-budget would be exceeded.
  bool to_heap();
  // An outbound CONNECT unanswered for --connect-timeout on an open connection: reset both ways.
  void check_opening(uint64_t now);
  // An inbound stream not yet ending: true, with what its admission judged (its target, the
  // HBONE connection's peer address, the peer's SPIFFE ID), to judge it again after a reload.
  bool admitted(net::Endpoint& target, net::Endpoint& source, std::string& identity) const;

 private:
  void on_target_connected(int res);
  void on_recv(const io_uring_cqe& cqe);
  void on_sent(int res);
  void give_window(size_t bytes);
  void schedule();
  void bind(HboneConnection& conn, int32_t id);
  void maybe_release();
  void release();
  void log_access();
  // Bytes that moved, as the access log counts them: from the TCP side, and to it.
  void count_from_tcp(uint32_t n) {
    bytes_from_tcp_ += n;
    if (inbound_)
      traffic_.down(n);
    else
      traffic_.up(n);
  }
  void count_to_tcp(uint32_t n) {
    bytes_to_tcp_ += n;
    if (inbound_)
      traffic_.up(n);
    else
      traffic_.down(n);
  }

  WorkerContext& ctx_;
  PendingOps ops_{Owner::stream, &slot};
  State state_ = State::free;
  H2Side h2_side_ = H2Side::unbound;
  bool inbound_ = false;
  bool scheduled_ = false;
  bool reset_tcp_ = false;  // close the TCP socket with a reset
  EndReason end_ = EndReason::none;
  std::shared_ptr<const HboneTarget> outbound_;  // outbound: where the CONNECT goes
  HboneConnection* conn_ = nullptr;              // set while bound
  Slot conn_ref_;  // the connection, for flow control after the stream closed
  int32_t id_ = -1;
  TcpLeg tcp_;  // the client (outbound) or the target (inbound)
  // TCP -> tunnel
  Fin to_tunnel_ = Fin::open;
  LentPayloads lent_;              // receive buffers lent to the session, released by address
  uint64_t lent_progress_ns_ = 0;  // the last release (or the first lend after none)
  // tunnel -> TCP
  Fin to_tcp_ = Fin::open;
  SendState send_ = SendState::idle;
  std::unique_ptr<tls::CiphertextQueue> out_;  // bytes from the tunnel, not yet sent
  // Of those, bytes whose connection window was handed back on arrival (their stream window
  // comes back when they leave): a stalled stream then holds only its own window.
  uint64_t early_credit_ = 0;
  // The send's iovecs, made by the first send to the TCP side (an idle stream has none).
  std::unique_ptr<std::array<iovec, kMaxGather>> iov_;
  msghdr msg_{};
  net::Endpoint target_;  // inbound: where to dial
  net::Endpoint source_;  // inbound: the HBONE connection's peer
  uint64_t bytes_from_tcp_ = 0;
  uint64_t bytes_to_tcp_ = 0;
  TrafficCount traffic_;
  uint64_t start_ns_ = 0;
  int64_t start_unix_ms_ = 0;
  std::string client_text_;
  const std::string* inbound_listener_ = nullptr;  // inbound: its connection's listener
  std::string local_text_;  // inbound, --log-format json: the address its connection came to
  std::string src_identity_, dst_identity_;
  std::string refusal_;  // inbound: why admission refused the CONNECT (logged as reason=...)
};

}  // namespace ringtunnel::proxy

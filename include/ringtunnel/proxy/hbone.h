// HBONE on the ring: an HboneConn is one mutual-TLS 1.3 connection carrying HTTP/2 (TlsSession +
// H2Session, both pure byte transformers); an HboneStream joins one of its CONNECT streams with
// one plain TCP socket. Outbound (TCP -> HBONE): a client accepted on a --forward hbone://
// listener becomes a stream on a pooled connection to the peer. Inbound (HBONE -> TCP): a stream
// arriving on --hbone-listen is dialled as plain TCP to its :authority.
//
//   HboneConn:   connecting (outbound) -> handshaking -> open -> closing -> free
//   HboneStream: opening (outbound: waiting for the 200; inbound: dialling the target)
//                -> open -> closing -> free
//
// Bytes TCP -> tunnel are received into provided buffers and lent to the H2Session (no copy);
// they come back once encrypted. Bytes tunnel -> TCP are copied out of the decrypted plaintext
// into the stream's queue and given back to flow control (consume) once sent: a slow reader
// stops its sender, end to end.
#pragma once

#include <sys/uio.h>

#include <netinet/in.h>
#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "ringtunnel/h2/session.h"
#include "ringtunnel/proxy/access_log.h"
#include "ringtunnel/proxy/lent_payloads.h"
#include "ringtunnel/ring/buffer_class.h"
#include "ringtunnel/tls/ciphertext_queue.h"
#include "ringtunnel/tls/session.h"

namespace ringtunnel::proxy {

class Worker;
struct HboneStream;

enum class RecvMode : uint8_t { off, armed, cancelling };

struct HboneConn final : h2::SessionEvents {
  enum class State : uint8_t { free, connecting, handshaking, open, closing };
  static constexpr unsigned kMaxGather = 64;

  Worker* worker = nullptr;
  uint32_t index = 0;
  uint32_t generation = 0;
  uint32_t next_free = 0;
  State state = State::free;
  bool inbound = false;
  bool sending = false;
  bool scheduled = false;
  bool final_send_done = false;  // closing: what was pending (alert, GOAWAY) has been sent
  bool graceful = false;         // closing without failure (idle, drain)
  bool cancel_sent = false;
  bool overloaded = false;  // failed to free the receive pool (its streams end with overload)
  int fd = -1;
  uint32_t pending = 0;
  uint16_t route = 0;  // outbound: the route whose peer and identity this connection serves
  RecvMode recv = RecvMode::off;
  uint8_t armed_cls = 0;
  ring::BufferClassPolicy policy;
  std::unique_ptr<tls::TlsSession> tls;
  std::unique_ptr<h2::H2Session> h2;
  std::array<iovec, kMaxGather> iov{};
  msghdr msg{};
  std::vector<HboneStream*> waiting;  // outbound streams waiting for the handshake
  uint32_t streams = 0;               // streams with an owner here
  // Inbound: streams accepted here and not yet released (their TCP side may still be draining
  // after the session closed them), counted against the session's stream limit.
  uint32_t held_streams = 0;
  bool in_handshake = false;  // inbound: counted in the worker's handshakes in progress
  std::string source;         // inbound: the client's IP address (raw bytes), for that count
  uint64_t idle_since_ns = 0;
  uint64_t next_ping_ns = 0;
  uint64_t handshake_deadline_ns = 0;
  uint64_t close_deadline_ns = 0;
  std::string peer_text;      // ip:port of the other end
  std::string peer_identity;  // its SPIFFE ID, once the handshake is done
  std::string failure;        // why it closed, for the log

  // h2::SessionEvents: forwarded to the worker.
  void on_connect_request(int32_t id, const net::Endpoint& target,
                          std::span<const h2::Header> headers) override;
  void on_response(int32_t id, int status) override;
  void on_data(int32_t id, const uint8_t* data, size_t size) override;
  void on_end_stream(int32_t id) override;
  void on_reset(int32_t id, uint32_t code) override;
  void on_stream_closed(int32_t id) override;
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool sent) override;
  void on_goaway(int32_t last_stream_id, uint32_t code) override;
};

struct HboneStream {
  enum class State : uint8_t { free, opening, open, closing };
  uint32_t index = 0;
  uint32_t generation = 0;
  uint32_t next_free = 0;
  State state = State::free;
  bool inbound = false;
  HboneConn* conn = nullptr;  // null once the session has closed the stream
  uint32_t conn_index = 0;    // the connection, for flow control after the stream closed
  uint32_t conn_generation = 0;
  int32_t id = -1;
  int fd = -1;  // the plain TCP socket: the client (outbound) or the target (inbound)
  uint32_t pending = 0;
  uint16_t route = 0;
  EndReason end = EndReason::none;
  bool scheduled = false;
  bool h2_closed = false;  // on_stream_closed: the session holds nothing of ours any more
  bool reset_tcp = false;  // close the TCP socket with a reset
  bool closes_sent = false;
  // TCP -> tunnel
  RecvMode recv = RecvMode::off;
  uint8_t armed_cls = 0;
  ring::BufferClassPolicy policy;
  LentPayloads lent;              // receive buffers lent to the session, released by address
  uint64_t lent_progress_ns = 0;  // the last release (or the first lend after none)
  bool tcp_eof = false;
  bool end_sent = false;
  // tunnel -> TCP
  std::unique_ptr<tls::CiphertextQueue> out;  // bytes from the tunnel, not yet sent
  // Of those, bytes whose connection window was handed back on arrival (their stream window
  // comes back when they leave): a stalled stream then holds only its own window.
  uint64_t early_credit = 0;
  bool sending = false;
  bool peer_end = false;
  bool shut = false;
  bool shut_done = false;
  std::array<iovec, HboneConn::kMaxGather> iov{};
  msghdr msg{};
  net::Endpoint target;  // inbound: where to dial
  uint64_t bytes_from_tcp = 0;
  uint64_t bytes_to_tcp = 0;
  uint64_t start_ns = 0;
  int64_t start_unix_ms = 0;
  std::string client_text;
  std::string src_identity, dst_identity;
  std::string refusal;  // inbound: why admission refused the CONNECT (logged as reason=...)
};

}  // namespace ringtunnel::proxy

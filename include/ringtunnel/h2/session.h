// One HTTP/2 connection carrying HBONE CONNECT streams: a thin owner of one nghttp2_session.
//
// Bytes in, bytes out, no sockets (the way nghttp2 itself works): decrypted plaintext goes in
// through feed(), events come out through SessionEvents, and the bytes to encrypt come out of
// pending() as a list of spans. Frame headers and control frames are copied into a buffer the
// session owns; DATA payloads are references into the owner's buffers (NGHTTP2_DATA_FLAG_NO_COPY),
// never copied. The session keeps both in an OutputQueue (h2/output_queue.h).
//
// Ownership of payload references. submit_data(stream, p, n) lends [p, p+n) to the session. The
// session gives the memory back through SessionEvents::on_payload_released(stream, piece, sent),
// naming each piece by its address: `piece` always lies inside one span given to submit_data(),
// every lent byte is released exactly once, and the owner must return exactly the memory named,
// never "the first n bytes" of the stream:
//   - sent = true:  consume_output() has passed the piece (the TLS writer has taken a copy);
//   - sent = false: the stream ended (reset, or the connection failed) before the piece was sent.
//     This can happen to a stream's unframed tail while earlier bytes of the same stream are still
//     framed in pending() and referenced; those come back later, as sent or at close_all_streams().
// A stream's on_stream_closed() comes only after every byte submitted on it has been released,
// and it is the last event for that stream: after it the session holds no pointer into the
// owner's buffers for that stream. close_all_streams() releases everything at once.
//
// Moving lent memory: relocate(stream, from, to, n) tells the session that the owner copied
// [from, from+n) to [to, to+n); every reference into the old range (queued or framed) then points
// into the new one, and later releases name the new addresses.
//
// Flow control is manual (end-to-end backpressure): every byte passed to on_data() must be handed
// back with consume(stream, n) exactly once, when it has left on the other socket, even after the
// stream has closed. The window updates follow from consume() alone.
//
// Threading and re-entrancy: one thread. Event handlers may call submit_*(), consume(),
// set_stream_owner(); they must not call feed(), pending(), consume_output(),
// close_all_streams(), nor destroy the session.
#pragma once

#include <nghttp2/nghttp2.h>  // the nghttp2_error codes the commands return
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ringtunnel/h2/output_queue.h"
#include "ringtunnel/net/address.h"

namespace ringtunnel::h2 {

enum class Role : uint8_t { client, server };

// HTTP/2 error codes (RFC 9113 section 7) the owner may send or see.
enum ErrorCode : uint32_t {
  kNoError = 0x0,
  kProtocolError = 0x1,
  kInternalError = 0x2,
  kFlowControlError = 0x3,
  kStreamClosed = 0x5,
  kFrameSizeError = 0x6,
  kRefusedStream = 0x7,
  kCancel = 0x8,
  kCompressionError = 0x9,
  kConnectError = 0xa,
  kEnhanceYourCalm = 0xb,
};

inline constexpr size_t kFrameHeaderLength = 9;

struct SessionOptions {
  Role role = Role::client;
  // SETTINGS_MAX_FRAME_SIZE we accept, and the largest DATA frame we send (also bounded by the
  // peer's setting). 1 MiB: a bulk stream moves in 16x fewer frames than at 64 KiB, and the frame
  // header costs nothing next to the payload (ztunnel's default).
  uint32_t max_frame_size = 1u << 20;
  // Receive windows (ztunnel's defaults). The stream window bounds what one slow reader can make
  // us hold; the connection window bounds the sum over all streams of one connection.
  uint32_t stream_window = 4u << 20;
  uint32_t connection_window = 16u << 20;
  // Streams a client opens on one connection at most (a pool takes a new connection beyond).
  uint32_t client_max_streams = 100;
  // SETTINGS_MAX_CONCURRENT_STREAMS a server advertises.
  uint32_t server_max_streams = 200;
  // SETTINGS_MAX_HEADER_LIST_SIZE, enforced on every header block we decode: a CONNECT carries a
  // handful of short headers, and the limit stops an HPACK bomb (one big table entry referenced
  // a million times) from ever reaching the owner (ztunnel: 64 KiB).
  uint32_t max_header_list_size = 64u << 10;
  // Output queued for the owner (frame headers, control frames, referenced payloads) beyond which
  // no more frames are taken from nghttp2. It is what keeps a peer that floods PINGs or SETTINGS
  // while never reading its ACKs bounded: nghttp2 then holds the ACKs, counts them
  // (max_outbound_ack) and fails the connection. 2 MiB: one full 1 MiB DATA frame and room.
  size_t max_output_bytes = 2u << 20;
  // nghttp2's flood limits, at its own defaults unless a test says otherwise.
  size_t max_outbound_ack = 1000;         // queued SETTINGS/PING ACKs
  size_t max_settings = 32;               // entries in one SETTINGS frame
  size_t max_continuations = 8;           // CONTINUATION frames after one HEADERS
  uint64_t stream_reset_burst = 1000;     // peer RST_STREAMs (rapid reset, CVE-2023-44487):
  uint64_t stream_reset_per_second = 33;  // token bucket, server only
};

struct Header {
  std::string_view name;
  std::string_view value;
};

// What the owner hears. A virtual interface rather than a struct of std::function: one object
// (the connection) handles every event of its session, so one vtable pointer replaces eight
// type-erased callables per session, and the compiler checks that an owner handles every event
// it must (the pure virtual ones). The role-specific events default to nothing.
class SessionEvents {
 public:
  virtual ~SessionEvents() = default;

  // Server: a valid CONNECT (method CONNECT, numeric :authority, no :scheme/:path). Answer with
  // submit_response(), now or later. Requests that are not get a 400 (bad or missing authority,
  // another method) or a RST_STREAM PROTOCOL_ERROR (malformed: :path/:scheme on CONNECT, no
  // :authority) from the session itself and never reach the owner. `headers` are the regular
  // (non-pseudo) headers, valid only during the call.
  virtual void on_connect_request(int32_t stream_id, const net::Endpoint& target,
                                  std::span<const Header> headers) {
    (void)stream_id, (void)target, (void)headers;
  }
  // Client: the final response to submit_connect(). 2xx: the tunnel is up; anything else: it
  // is refused, and the stream ends.
  virtual void on_response(int32_t stream_id, int status) { (void)stream_id, (void)status; }

  // Tunnel bytes from the peer; give them back with consume() once they have left.
  virtual void on_data(int32_t stream_id, const uint8_t* data, size_t size) = 0;
  // The peer's END_STREAM: the peer will send no more (TCP FIN). Our direction is unaffected.
  virtual void on_end_stream(int32_t stream_id) = 0;
  // The stream was reset by the peer (RST_STREAM: TCP reset), refused by its GOAWAY
  // (kRefusedStream: safe to retry elsewhere), or failed in the session. Not called for resets
  // the owner asked for with submit_reset().
  virtual void on_reset(int32_t stream_id, uint32_t error_code) = 0;
  // The last event of a stream the owner knows (a CONNECT it accepted or submitted).
  virtual void on_stream_closed(int32_t stream_id) = 0;
  // `piece` (inside one span given to submit_data) is no longer referenced (see the top of this
  // file).
  virtual void on_payload_released(int32_t stream_id, std::span<const uint8_t> piece,
                                   bool sent) = 0;
  // The peer sends GOAWAY: open no new streams on this connection. Streams above
  // `last_stream_id` are reset with kRefusedStream; the others go on.
  virtual void on_goaway(int32_t last_stream_id, uint32_t error_code) {
    (void)last_stream_id, (void)error_code;
  }
  // Server: a request the session answered itself (`status` 400), or reset (`status` 0: its
  // header list was too large), for the access log. The stream never reaches the owner.
  virtual void on_request_rejected(int32_t stream_id, int status, std::string_view reason) {
    (void)stream_id, (void)status, (void)reason;
  }
};

class H2Session {
 public:
  // Queues the connection preface (client) and our SETTINGS; pending() has them at once.
  // `events` must outlive the session.
  H2Session(const SessionOptions& options, SessionEvents& events);
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;
  // No events; every reference is dropped without release events (the owner is tearing down).
  ~H2Session();

  // ---- input ----

  // Processes plaintext from the peer; events are delivered from inside (on_data in pieces of
  // at most 16 KiB). Returns `size`, or a negative nghttp2_error once the peer has broken the
  // protocol or flooded us: then failed() is true, the rest of the input is dropped, and
  // pending() ends with our GOAWAY carrying the error code.
  ssize_t feed(const uint8_t* data, size_t size);

  // ---- commands (0 or a negative nghttp2_error unless said otherwise) ----

  // Client: opens a CONNECT stream to `authority` ("ip:port" / "[ip6]:port", checked with
  // parse_authority) with extra regular headers (forwarded, traceparent, baggage...). Returns
  // the stream id, or a negative nghttp2_error (NGHTTP2_ERR_INVALID_ARGUMENT: bad authority or
  // header; NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE: no stream left here, see streams_available()).
  int32_t submit_connect(std::string_view authority, std::span<const Header> headers = {},
                         void* owner = nullptr);
  // Server: answers a request given to on_connect_request(). 200 opens the tunnel; any other
  // status (400, 401, 503...) ends the stream: the session sends the HEADERS with END_STREAM
  // and a RST_STREAM(NO_ERROR) so that the client need not send its end, swallows what the
  // client still sends, and the owner gets on_stream_closed().
  int submit_response(int32_t stream_id, int status);
  // Lends [data, data+size) to the session (see the top of the file). Client: any time before
  // submit_end(); server: after submit_response(200).
  int submit_data(int32_t stream_id, const uint8_t* data, size_t size);
  // END_STREAM after everything submitted so far (TCP FIN, this direction only).
  int submit_end(int32_t stream_id);
  // RST_STREAM (TCP reset). Later input for the stream is swallowed; on_stream_closed follows.
  int submit_reset(int32_t stream_id, uint32_t error_code = kCancel);
  // Hands back `bytes` received through on_data() (see the top of the file).
  int consume(int32_t stream_id, size_t bytes);
  // The two halves of consume(), for an owner that buffers a stream's bytes outside the shared
  // connection window: consume_connection() as soon as the bytes are copied out of the session,
  // consume_stream() once they have left. Each byte is handed back exactly once per window: by
  // consume(), or by one call of each of these.
  int consume_connection(size_t bytes);
  int consume_stream(int32_t stream_id, size_t bytes);
  // The owner copied [from, from+size) to [to, to+size): references into the old range (queued or
  // framed in pending()) now point into the new one. `from` must cover whole spans given to
  // submit_data(). Not from inside an event handler while pending() spans are held.
  void relocate(int32_t stream_id, const uint8_t* from, const uint8_t* to, size_t size);
  // Keepalive: a PING. ping_outstanding() is true until its ACK arrives.
  int submit_ping();
  // Drain. Server: GOAWAY(2^31-1) and a PING, then, once the PING's ACK shows that the client
  // has seen the first GOAWAY, GOAWAY(last stream id) (RFC 9113 section 6.8: requests already
  // on the wire are not lost); a second call sends the final GOAWAY at once. Client: GOAWAY at
  // once. Open streams carry on; finished() turns true when the last one closes.
  int submit_goaway_graceful();

  void set_stream_owner(int32_t stream_id, void* owner);
  void* stream_owner(int32_t stream_id) const;

  // ---- output ----

  // The bytes to encrypt, in order: takes whatever nghttp2 has ready (up to max_output_bytes
  // queued) and returns everything not yet consumed. The spans are valid until the next call of
  // any non-const member, pending() included.
  std::span<const std::span<const uint8_t>> pending();
  // The first `bytes` of pending() have been handed to the TLS writer (any amount, even the
  // middle of a span). Releases the payloads passed (on_payload_released, sent = true). Call
  // pending() again afterwards: more may be ready once the queue has room.
  void consume_output(size_t bytes);
  size_t pending_bytes() const { return output_.bytes(); }

  // ---- end of the connection ----

  // The transport is gone (socket error, TLS failure, or the connection is being closed after a
  // failure): every open stream the owner knows gets on_reset(error_code) (unless the owner reset
  // it) and on_stream_closed(); every payload reference is released (sent = false); pending
  // output is dropped. The session is finished afterwards.
  void close_all_streams(uint32_t error_code = kConnectError);

  // ---- state ----

  struct Failure {
    uint32_t error_code = kNoError;  // what our GOAWAY tells the peer
    std::string reason;              // its debug data, or what nghttp2 reported
  };
  // We sent (or are sending) GOAWAY with an error: the peer broke the protocol or flooded us.
  // Flush pending() (it ends with the GOAWAY), then close_all_streams() and close the
  // connection. Set when the GOAWAY is serialized: within the feed() that caused it, unless the
  // output queue is full, then once the owner drains it.
  bool failed() const { return failure_.error_code != kNoError; }
  const Failure& failure() const { return failure_; }
  // Nothing more will happen: no output left and nghttp2 wants neither to read nor to write
  // (a GOAWAY was sent or received and the last stream closed, or the session failed and its
  // GOAWAY is out). Close the connection (after close_all_streams(), which then does nothing
  // unless the session failed).
  bool finished() const;
  // Client: how many more streams submit_connect() may open now (0 after a GOAWAY either way).
  uint32_t streams_available() const;
  // Streams the owner knows that have not yet closed.
  size_t open_streams() const { return open_streams_; }
  bool ping_outstanding() const { return pings_outstanding_ > 0; }
  bool goaway_received() const { return goaway_received_; }
  Role role() const { return options_.role; }

 private:
  friend struct Callbacks;
  struct Stream;  // defined in session.cc

  Stream* find(int32_t stream_id) const;
  void maybe_finish(Stream& stream);
  void collect();
  void fail_hard(int lib_error);

  SessionOptions options_;
  SessionEvents& events_;
  nghttp2_session* session_ = nullptr;

  std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
  size_t open_streams_ = 0;

  // Every stream is an OutputQueue::Source: what it has lent, unframed and framed, is tracked
  // there. A GOAWAY of our own may only be appended, and collecting may only stop, where the
  // output is at a frame boundary.
  OutputQueue output_;

  // The header block being decoded (a request, on a server). Blocks never interleave on the
  // wire, so one set serves every stream.
  std::string request_method_;
  std::string request_authority_;
  bool request_other_pseudo_ = false;  // :scheme, :path or :protocol
  std::string header_bytes_;
  struct HeaderRef {
    uint32_t name_at, name_len, value_at, value_len;
  };
  std::vector<HeaderRef> header_refs_;
  std::vector<Header> header_views_;

  Failure failure_;
  int busy_ = 0;       // inside feed/collect/consume_output/close_all_streams
  bool dead_ = false;  // nghttp2 must not be called again (fatal error, or close_all_streams)
  bool goaway_received_ = false;
  bool goaway_submitted_ = false;  // our final GOAWAY (not the shutdown notice)
  bool drain_notice_sent_ = false;
  uint32_t pings_outstanding_ = 0;
};

}  // namespace ringtunnel::h2

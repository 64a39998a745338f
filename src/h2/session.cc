// H2Session: nghttp2 wired for HBONE. Input goes straight to nghttp2_session_mem_recv; output is
// pulled with nghttp2_session_mem_send into an OutputQueue (copied control frames and frame
// headers, referenced DATA payloads). See session.h for the contract with the owner.
#include "ringtunnel/h2/session.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>

#include "ringtunnel/h2/authority.h"

namespace ringtunnel::h2 {

// One stream, from its HEADERS (server) or submit_connect() (client) until the owner has heard
// on_stream_closed(). Outlives nghttp2's own stream while output still references its payloads.
// As an OutputQueue::Source it holds what the owner submitted: unframed, then framed.
struct H2Session::Stream : OutputQueue::Source {
  int32_t id = 0;
  void* owner = nullptr;
  size_t header_list_size = 0;        // of the header block being decoded
  int status = 0;                     // client: the response's :status
  bool known = false;                 // the owner knows it: an accepted or submitted CONNECT
  bool data_open = false;             // a data provider is attached: submit_data() may be used
  bool deferred = false;              // nghttp2 waits for submit_data()/submit_end() to resume it
  bool end_requested = false;         // submit_end() called
  bool responded = false;             // server: submit_response() called
  bool swallow = false;               // input is consumed here, not given to the owner
  bool owner_reset = false;           // the owner asked for the RST_STREAM
  bool peer_ended = false;            // END_STREAM received
  bool peer_reset = false;            // RST_STREAM received
  bool response_seen = false;         // client: on_response() delivered
  bool reset_after_response = false;  // a refusal: RST_STREAM(NO_ERROR) once it is sent
  uint32_t peer_reset_code = 0;
  bool closed = false;  // nghttp2 has closed it

  // Server: submits the response (HEADERS with :status) to the request.
  int respond(nghttp2_session* session, int status);
};

namespace {

// The opaque data of the PING that follows a shutdown notice: its ACK says the client has seen
// the notice, so the final GOAWAY loses no request.
constexpr uint8_t kDrainPing[8] = {'r', 't', '-', 'd', 'r', 'a', 'i', 'n'};
constexpr int32_t kMaxStreamId = 0x7fffffff;
// feed() hands nghttp2 at most this much at a time and collects the output in between, so that
// once nghttp2 has queued a GOAWAY against a flood (rapid reset: its GOAWAY does not stop it
// from reading), at most one more slice is processed. 16 KiB: one TLS record of plaintext, the
// most a feed from the record layer carries anyway.
constexpr size_t kFeedSlice = 16u << 10;

uint32_t goaway_code_for(int lib_error) {
  switch (lib_error) {
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
      return kProtocolError;
    case NGHTTP2_ERR_FLOODED:
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
      return kEnhanceYourCalm;
    default:
      return kInternalError;
  }
}

// The nghttp2_error feed() returns for a GOAWAY nghttp2 sent on its own.
int lib_error_for(uint32_t goaway_code) {
  switch (goaway_code) {
    case kFrameSizeError:
      return NGHTTP2_ERR_FRAME_SIZE_ERROR;
    case kCompressionError:
      return NGHTTP2_ERR_HEADER_COMP;
    case kFlowControlError:
      return NGHTTP2_ERR_FLOW_CONTROL;
    case kEnhanceYourCalm:
      return NGHTTP2_ERR_FLOODED;
    default:
      return NGHTTP2_ERR_PROTO;
  }
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

// The nghttp2 callbacks, and what they do to a stream, as static members of a friend so that
// they reach the session's state.
struct Callbacks {
  static H2Session& self(void* user_data) { return *static_cast<H2Session*>(user_data); }
  static H2Session::Stream* stream(nghttp2_session* session, int32_t stream_id) {
    return static_cast<H2Session::Stream*>(
        nghttp2_session_get_stream_user_data(session, stream_id));
  }

  static int on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame,
                              void* user_data) {
    H2Session& h = self(user_data);
    const int32_t id = frame->hd.stream_id;
    h.header_bytes_.clear();
    h.header_refs_.clear();
    h.request_method_.clear();
    h.request_authority_.clear();
    h.request_other_pseudo_ = false;
    if (h.options_.role == Role::server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      auto s = std::make_unique<H2Session::Stream>();
      s->id = id;
      nghttp2_session_set_stream_user_data(session, id, s.get());
      h.streams_[id] = std::move(s);
    }
    if (H2Session::Stream* s = stream(session, id)) s->header_list_size = 0;
    return 0;
  }

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t,
                       void* user_data) {
    H2Session& h = self(user_data);
    H2Session::Stream* s = stream(session, frame->hd.stream_id);
    if (!s) return 0;
    // RFC 9113 section 6.5.2: name + value + 32 per field.
    s->header_list_size += namelen + valuelen + 32;
    if (s->header_list_size > h.options_.max_header_list_size) {
      // nghttp2 resets the stream and keeps decoding the block, so HPACK state stays in step.
      if (h.options_.role == Role::server && !s->known) {
        h.events_.on_request_rejected(s->id, 0, "header list too large");
      }
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (h.options_.role == Role::client) {
      if (n == ":status" && valuelen == 3) {
        s->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
      }
      return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: nothing to keep
    if (!n.empty() && n[0] == ':') {
      if (n == ":method") {
        h.request_method_.assign(v);
      } else if (n == ":authority") {
        h.request_authority_.assign(v);
      } else {
        h.request_other_pseudo_ = true;  // :scheme, :path, :protocol
      }
      return 0;
    }
    const auto at = uint32_t(h.header_bytes_.size());
    h.header_bytes_.append(n);
    h.header_bytes_.append(v);
    h.header_refs_.push_back({at, uint32_t(namelen), at + uint32_t(namelen), uint32_t(valuelen)});
    return 0;
  }

  static int on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    H2Session& h = self(user_data);
    const int32_t id = frame->hd.stream_id;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (H2Session::Stream* s = stream(session, id)) {
          const bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
          if (end) s->peer_ended = true;  // before request(), which decides on a RST_STREAM
          if (h.options_.role == Role::server && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            request(h, *s);
          } else if (h.options_.role == Role::client && s->known && !s->response_seen &&
                     s->status >= 200) {
            s->response_seen = true;
            h.events_.on_response(id, s->status);
          }
          if (end) peer_end(h, *s);
        }
        break;
      case NGHTTP2_DATA:
        if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
          if (H2Session::Stream* s = stream(session, id)) peer_end(h, *s);
        }
        break;
      case NGHTTP2_RST_STREAM:
        if (H2Session::Stream* s = stream(session, id)) {
          s->peer_reset = true;
          s->peer_reset_code = frame->rst_stream.error_code;
        }
        break;
      case NGHTTP2_GOAWAY:
        h.goaway_received_ = true;
        h.events_.on_goaway(frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
      case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
          if (std::memcmp(frame->ping.opaque_data, kDrainPing, 8) == 0) {
            // The second step of the drain: the final GOAWAY.
            if (h.drain_notice_sent_ && !h.goaway_submitted_) h.submit_goaway_graceful();
          } else if (h.pings_outstanding_ > 0) {
            --h.pings_outstanding_;
          }
        }
        break;
      default:
        break;
    }
    return 0;
  }

  static int on_data_chunk_recv(nghttp2_session* session, uint8_t, int32_t stream_id,
                                const uint8_t* data, size_t len, void* user_data) {
    H2Session& h = self(user_data);
    H2Session::Stream* s = stream(session, stream_id);
    if (s && s->known && !s->swallow) {
      h.events_.on_data(stream_id, data, len);
    } else {
      // Nobody will consume these: give the window back now, or the connection would stall.
      nghttp2_session_consume(session, stream_id, len);
    }
    return 0;
  }

  static int on_stream_close(nghttp2_session* session, int32_t stream_id, uint32_t error_code,
                             void* user_data) {
    if (H2Session::Stream* s = stream(session, stream_id)) {
      closed(self(user_data), *s, error_code);
    }
    return 0;
  }

  static int on_frame_send(nghttp2_session* session, const nghttp2_frame* frame, void* user_data) {
    H2Session& h = self(user_data);
    if (frame->hd.type == NGHTTP2_HEADERS) {
      // Submitted only now: a RST_STREAM queued with the HEADERS would cancel them in nghttp2.
      H2Session::Stream* s = stream(session, frame->hd.stream_id);
      if (s && s->reset_after_response && !s->peer_ended) {
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, kNoError);
      }
      return 0;
    }
    if (frame->hd.type != NGHTTP2_GOAWAY || frame->goaway.last_stream_id == kMaxStreamId) return 0;
    h.goaway_submitted_ = true;
    if (frame->goaway.error_code != kNoError && !h.failed()) {
      h.failure_.error_code = frame->goaway.error_code;
      h.failure_.reason.assign(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                               frame->goaway.opaque_data_len);
      if (h.failure_.reason.empty()) h.failure_.reason = "GOAWAY sent by nghttp2";
    }
    return 0;
  }

  // Decides the DATA frame's length; the bytes are taken in send_data(), when it is framed.
  static ssize_t read_data(nghttp2_session*, int32_t, uint8_t*, size_t length, uint32_t* flags,
                           nghttp2_data_source* source, void*) {
    auto* s = static_cast<H2Session::Stream*>(source->ptr);
    if (s->unframed() == 0 && !s->end_requested) {
      s->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
    const size_t n = std::min(length, s->unframed());
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == s->unframed() && s->end_requested) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return ssize_t(n);
  }

  // Payloads up to the frame size both sides allow, not nghttp2's 16 KiB default.
  static ssize_t data_length(nghttp2_session*, uint8_t, int32_t, int32_t, int32_t,
                             uint32_t remote_max_frame_size, void* user_data) {
    return ssize_t(std::min(self(user_data).options_.max_frame_size, remote_max_frame_size));
  }

  // Emits one DATA frame: its 9-byte header copied, its payload referenced.
  static int send_data(nghttp2_session*, nghttp2_frame*, const uint8_t* framehd, size_t length,
                       nghttp2_data_source* source, void* user_data) {
    H2Session& h = self(user_data);
    if (h.output_.bytes() >= h.options_.max_output_bytes) return NGHTTP2_ERR_WOULDBLOCK;
    auto* s = static_cast<H2Session::Stream*>(source->ptr);
    // No padding is ever asked for, so the header is exactly 9 bytes.
    h.output_.append_owned(framehd, kFrameHeaderLength);
    h.output_.append_payload(*s, length);
    return 0;
  }

  // ---- what the events do to a stream ----

  // A request's header block is complete: answer it ourselves (400) or hand it to the owner.
  static void request(H2Session& h, H2Session::Stream& s) {
    int status = 0;
    std::string_view reason;
    net::Endpoint target;
    if (h.request_method_ != "CONNECT") {
      status = 400, reason = "method is not CONNECT";  // as ztunnel: 400, not 405
    } else if (h.request_other_pseudo_) {
      status = 400, reason = ":scheme, :path or :protocol on CONNECT";
    } else if (const AuthorityError e = parse_authority(h.request_authority_, target);
               e != AuthorityError::ok) {
      status = 400, reason = describe(e);
    }
    if (status != 0) {
      h.events_.on_request_rejected(s.id, status, reason);
      s.respond(h.session_, status);
      return;
    }
    s.known = true;
    ++h.open_streams_;
    h.header_views_.clear();
    for (const H2Session::HeaderRef& r : h.header_refs_) {
      h.header_views_.push_back(
          {std::string_view(h.header_bytes_).substr(r.name_at, r.name_len),
           std::string_view(h.header_bytes_).substr(r.value_at, r.value_len)});
    }
    h.events_.on_connect_request(s.id, target, h.header_views_);
    // One large request must not pin its header memory for the life of the connection.
    if (h.header_bytes_.capacity() > 4096) std::string().swap(h.header_bytes_);
  }

  // The peer's END_STREAM.
  static void peer_end(H2Session& h, H2Session::Stream& s) {
    s.peer_ended = true;
    if (s.known && !s.swallow) h.events_.on_end_stream(s.id);
  }

  // nghttp2 has closed the stream; ours lives on while the output references its payloads.
  static void closed(H2Session& h, H2Session::Stream& s, uint32_t error_code) {
    s.closed = true;
    if (s.known) {
      --h.open_streams_;
      if (!s.owner_reset) {
        if (s.peer_reset) {
          h.events_.on_reset(s.id, s.peer_reset_code);
        } else if (error_code != kNoError) {
          h.events_.on_reset(s.id, error_code);
        }
      }
    }
    // Only the unframed tail goes back here: what is framed in the output stays referenced until
    // consume_output() passes it (or close_all_streams() drops it).
    s.drop_unframed([&](std::span<const uint8_t> piece) {
      if (s.known) h.events_.on_payload_released(s.id, piece, false);
    });
    h.maybe_finish(s);
  }
};

H2Session::H2Session(const SessionOptions& options, SessionEvents& events)
    : options_(options), events_(events) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_option* opt = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    fail_hard(NGHTTP2_ERR_NOMEM);
    return;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, Callbacks::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, Callbacks::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, Callbacks::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, Callbacks::on_data_chunk_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, Callbacks::on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, Callbacks::on_frame_send);
  nghttp2_session_callbacks_set_send_data_callback(cbs, Callbacks::send_data);
  nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, Callbacks::data_length);

  nghttp2_option_set_no_auto_window_update(opt, 1);
  // The peer's SETTINGS_MAX_CONCURRENT_STREAMS is unknown until its SETTINGS arrives.
  nghttp2_option_set_peer_max_concurrent_streams(opt, options_.client_max_streams);
  nghttp2_option_set_max_reserved_remote_streams(opt, 0);  // no server push
  // Closed streams are kept only to preserve RFC 7540 dependencies; here every stream hangs off
  // the root with the default weight, so there is nothing to preserve.
  nghttp2_option_set_no_closed_streams(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, options_.max_outbound_ack);
  nghttp2_option_set_max_settings(opt, options_.max_settings);
  nghttp2_option_set_max_continuations(opt, options_.max_continuations);
  nghttp2_option_set_stream_reset_rate_limit(opt, options_.stream_reset_burst,
                                             options_.stream_reset_per_second);

  const int rv = options_.role == Role::client
                     ? nghttp2_session_client_new2(&session_, cbs, this, opt)
                     : nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_option_del(opt);
  if (rv != 0) {
    session_ = nullptr;
    fail_hard(rv);
    return;
  }

  // RFC 7540 priorities stay on (no SETTINGS_NO_RFC7540_PRIORITIES): its default tree shares
  // the connection fairly between streams, where RFC 9218's default (non-incremental) would
  // send one stream's data to the end before the next.
  nghttp2_settings_entry iv[5];
  size_t n = 0;
  iv[n++] = {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, options_.max_frame_size};
  iv[n++] = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, options_.stream_window};
  iv[n++] = {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, options_.max_header_list_size};
  if (options_.role == Role::server) {
    iv[n++] = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, options_.server_max_streams};
  } else {
    iv[n++] = {NGHTTP2_SETTINGS_ENABLE_PUSH, 0};
  }
  int err = nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, n);
  if (err == 0) {
    err = nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                                int32_t(options_.connection_window));
  }
  if (err != 0) {
    fail_hard(err);
    return;
  }
  // Our preface (SETTINGS, WINDOW_UPDATE) goes first in the output, whatever follows: even a
  // GOAWAY for a peer that sends garbage must come after our SETTINGS.
  collect();
}

H2Session::~H2Session() {
  nghttp2_session_del(session_);
}

H2Session::Stream* H2Session::find(int32_t stream_id) const {
  const auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

// ---- input ----

ssize_t H2Session::feed(const uint8_t* data, size_t size) {
  if (busy_) return NGHTTP2_ERR_INVALID_STATE;
  if (failed()) return lib_error_for(failure_.error_code);
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  for (size_t done = 0; done < size;) {
    const size_t slice = std::min(size - done, kFeedSlice);
    ++busy_;
    const ssize_t rv = nghttp2_session_mem_recv(session_, data + done, slice);
    --busy_;
    if (rv < 0) {
      fail_hard(int(rv));
      return rv;
    }
    done += slice;
    // Pull the output now: a GOAWAY nghttp2 queued for a broken or abusive peer goes out, and
    // shows here as failed(), before the rest of the input is read.
    collect();
    if (failed()) return lib_error_for(failure_.error_code);
  }
  return ssize_t(size);
}

void H2Session::maybe_finish(Stream& s) {
  if (!s.closed || s.framed() > 0) return;
  const int32_t id = s.id;
  const bool known = s.known;
  // The event first: its handler may still look up stream_owner(id). Erased by key afterwards,
  // since the handler may add streams (and move `s`).
  if (known) events_.on_stream_closed(id);
  streams_.erase(id);
}

// ---- commands ----

int H2Session::Stream::respond(nghttp2_session* session, int status) {
  char code[4];
  code[0] = char('0' + status / 100);
  code[1] = char('0' + status / 10 % 10);
  code[2] = char('0' + status % 10);
  code[3] = '\0';
  const nghttp2_nv nv = make_nv(":status", std::string_view(code, 3));
  responded = true;
  if (status / 100 == 2) {
    nghttp2_data_provider provider{};
    provider.source.ptr = this;
    provider.read_callback = Callbacks::read_data;
    const int rv = nghttp2_submit_response(session, id, &nv, 1, &provider);
    if (rv == 0) data_open = true;
    return rv;
  }
  // A refusal: HEADERS with END_STREAM, then RST_STREAM(NO_ERROR) so the client need not finish
  // its side (RFC 9113 section 8.1); whatever it still sends is swallowed.
  swallow = true;
  reset_after_response = true;
  return nghttp2_submit_response(session, id, &nv, 1, nullptr);
}

int32_t H2Session::submit_connect(std::string_view authority, std::span<const Header> headers,
                                  void* owner) {
  if (options_.role != Role::client || dead_ || failed()) return NGHTTP2_ERR_INVALID_STATE;
  if (goaway_received_ || goaway_submitted_) return NGHTTP2_ERR_START_STREAM_NOT_ALLOWED;
  if (streams_available() == 0) return NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE;
  net::Endpoint target;
  if (parse_authority(authority, target) != AuthorityError::ok) {
    return NGHTTP2_ERR_INVALID_ARGUMENT;
  }
  std::vector<nghttp2_nv> nva;
  nva.reserve(2 + headers.size());
  nva.push_back(make_nv(":method", "CONNECT"));
  nva.push_back(make_nv(":authority", authority));
  for (const Header& h : headers) {
    const auto* name = reinterpret_cast<const uint8_t*>(h.name.data());
    const auto* value = reinterpret_cast<const uint8_t*>(h.value.data());
    if (h.name.empty() || h.name[0] == ':' || !nghttp2_check_header_name(name, h.name.size()) ||
        !nghttp2_check_header_value(value, h.value.size())) {
      return NGHTTP2_ERR_INVALID_ARGUMENT;
    }
    nva.push_back(make_nv(h.name, h.value));
  }
  auto s = std::make_unique<Stream>();
  s->known = true;
  s->data_open = true;
  s->owner = owner;
  nghttp2_data_provider provider{};
  provider.source.ptr = s.get();
  provider.read_callback = Callbacks::read_data;
  const int32_t id =
      nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(), &provider, s.get());
  if (id < 0) return id;
  s->id = id;
  streams_[id] = std::move(s);
  ++open_streams_;
  return id;
}

int H2Session::submit_response(int32_t stream_id, int status) {
  if (options_.role != Role::server || dead_) return NGHTTP2_ERR_INVALID_STATE;
  if (status < 200 || status > 599) return NGHTTP2_ERR_INVALID_ARGUMENT;
  Stream* s = find(stream_id);
  if (!s || !s->known || s->responded || s->closed || s->owner_reset) {
    return NGHTTP2_ERR_INVALID_STATE;
  }
  return s->respond(session_, status);
}

int H2Session::submit_data(int32_t stream_id, const uint8_t* data, size_t size) {
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  Stream* s = find(stream_id);
  if (!s || !s->known || !s->data_open || s->closed || s->owner_reset || s->end_requested) {
    return NGHTTP2_ERR_INVALID_STATE;
  }
  if (size == 0) return 0;
  s->lend({data, size});
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return 0;
}

int H2Session::submit_end(int32_t stream_id) {
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  Stream* s = find(stream_id);
  if (!s || !s->known || !s->data_open || s->closed || s->owner_reset) {
    return NGHTTP2_ERR_INVALID_STATE;
  }
  if (s->end_requested) return 0;
  s->end_requested = true;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(session_, stream_id);
  }
  return 0;
}

int H2Session::submit_reset(int32_t stream_id, uint32_t error_code) {
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  Stream* s = find(stream_id);
  if (!s || !s->known || s->closed) return NGHTTP2_ERR_INVALID_STATE;
  if (s->owner_reset) return 0;
  s->owner_reset = true;
  s->swallow = true;
  return nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, error_code);
}

int H2Session::consume(int32_t stream_id, size_t bytes) {
  if (dead_ || bytes == 0) return 0;
  // nghttp2 credits the connection window even when the stream has closed meanwhile.
  return nghttp2_session_consume(session_, stream_id, bytes);
}

int H2Session::consume_connection(size_t bytes) {
  if (dead_ || bytes == 0) return 0;
  return nghttp2_session_consume_connection(session_, bytes);
}

int H2Session::consume_stream(int32_t stream_id, size_t bytes) {
  if (dead_ || bytes == 0) return 0;
  return nghttp2_session_consume_stream(session_, stream_id, bytes);  // 0 once it has closed
}

void H2Session::relocate(int32_t stream_id, const uint8_t* from, const uint8_t* to, size_t size) {
  if (Stream* s = find(stream_id)) output_.relocate(*s, from, to, size);
}

int H2Session::submit_ping() {
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  const int rv = nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, nullptr);
  if (rv == 0) ++pings_outstanding_;
  return rv;
}

int H2Session::submit_goaway_graceful() {
  if (dead_) return NGHTTP2_ERR_INVALID_STATE;
  if (goaway_submitted_) return 0;
  if (options_.role == Role::server && !drain_notice_sent_) {
    int rv = nghttp2_submit_shutdown_notice(session_);
    if (rv == 0) rv = nghttp2_submit_ping(session_, NGHTTP2_FLAG_NONE, kDrainPing);
    if (rv == 0) drain_notice_sent_ = true;
    return rv;
  }
  const int rv = nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                                       nghttp2_session_get_last_proc_stream_id(session_), kNoError,
                                       nullptr, 0);
  if (rv == 0) goaway_submitted_ = true;
  return rv;
}

void H2Session::set_stream_owner(int32_t stream_id, void* owner) {
  if (Stream* s = find(stream_id)) s->owner = owner;
}

void* H2Session::stream_owner(int32_t stream_id) const {
  const Stream* s = find(stream_id);
  return s ? s->owner : nullptr;
}

// ---- output ----

void H2Session::collect() {
  if (dead_ || busy_) return;
  ++busy_;
  for (;;) {
    // Stop only between frames, so a GOAWAY of our own can always follow.
    if (output_.bytes() >= options_.max_output_bytes && output_.at_frame_boundary()) break;
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      --busy_;
      fail_hard(int(n));
      return;
    }
    if (n == 0) break;
    output_.append_owned(data, size_t(n));
  }
  --busy_;
}

std::span<const std::span<const uint8_t>> H2Session::pending() {
  collect();
  return output_.segments();
}

void H2Session::consume_output(size_t bytes) {
  if (busy_) return;
  ++busy_;
  // Each payload piece is released by its own address: the owner returns exactly the memory
  // that is no longer referenced, never "the first n bytes" of a stream.
  output_.consume(bytes, [this](OutputQueue::Source& source, std::span<const uint8_t> piece) {
    auto& s = static_cast<Stream&>(source);
    if (s.known) events_.on_payload_released(s.id, piece, true);
    maybe_finish(s);  // may destroy s
  });
  --busy_;
}

// ---- failure and the end ----

void H2Session::fail_hard(int lib_error) {
  if (dead_) return;
  dead_ = true;
  if (failed()) return;  // nghttp2's own GOAWAY is already in the output
  failure_.error_code = goaway_code_for(lib_error);
  failure_.reason = nghttp2_strerror(lib_error);
  // nghttp2 must not be called after a fatal error, so the GOAWAY is written here. The output
  // holds whole frames only unless nghttp2 failed in the middle of one; then no GOAWAY can be
  // sent and the owner just closes.
  if (!output_.at_frame_boundary()) return;
  const int32_t last = session_ ? nghttp2_session_get_last_proc_stream_id(session_) : 0;
  uint8_t goaway[kFrameHeaderLength + 8] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
  for (int i = 0; i < 4; ++i) {
    goaway[9 + i] = uint8_t(uint32_t(last) >> (24 - 8 * i));
    goaway[13 + i] = uint8_t(failure_.error_code >> (24 - 8 * i));
  }
  output_.append_owned(goaway, sizeof goaway);
}

void H2Session::close_all_streams(uint32_t error_code) {
  if (busy_) return;
  ++busy_;
  dead_ = true;
  // The output is dropped: whatever it references is released unsent, piece by piece.
  output_.clear([this](OutputQueue::Source& source, std::span<const uint8_t> piece) {
    auto& s = static_cast<Stream&>(source);
    if (s.known) events_.on_payload_released(s.id, piece, false);
  });

  std::vector<int32_t> ids;
  ids.reserve(streams_.size());
  for (const auto& [id, s] : streams_)
    ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (const int32_t id : ids) {
    Stream* s = find(id);
    if (!s) continue;
    if (s->known && !s->closed && !s->owner_reset) events_.on_reset(id, error_code);
    s->drop_unframed([&](std::span<const uint8_t> piece) {
      if (s->known) events_.on_payload_released(id, piece, false);
    });
    s->closed = true;
    maybe_finish(*s);
  }
  open_streams_ = 0;
  --busy_;
}

bool H2Session::finished() const {
  if (!output_.empty()) return false;
  if (dead_) return true;
  return !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_);
}

uint32_t H2Session::streams_available() const {
  if (options_.role != Role::client || dead_ || failed() || goaway_received_ || goaway_submitted_) {
    return 0;
  }
  const uint32_t peer =
      nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  const uint32_t limit = std::min(options_.client_max_streams, peer);
  return limit > open_streams_ ? uint32_t(limit - open_streams_) : 0;
}

}  // namespace ringtunnel::h2

// libFuzzer target: an H2Session fed arbitrary bytes, with an owner that accepts or refuses
// streams, echoes what it receives (as payload references it owns), ends and resets streams.
//
// Checked beyond "no crash, no sanitizer report": the output is a well-formed frame stream; every
// payload is released by address, once, from a buffer lent on its stream (the proxy's own
// LentPayloads tracks them); released buffers are poisoned, and every DATA byte on the wire must
// equal the byte lent there; lent buffers are moved to the heap mid-stream (as under pool
// pressure); and after close_all_streams() every buffer is back and every stream the owner heard
// of is closed exactly once.
//
// The first byte picks the set-up: role, whether a valid preface (and a CONNECT on stream 1) is
// put before the fuzz bytes so that they reach deep states, and how the input is cut into feeds.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "h2/h2_test_util.h"
#include "ringtunnel/h2/session.h"
#include "ringtunnel/proxy/lent_payloads.h"

using namespace ringtunnel::h2;
using namespace ringtunnel::h2::test;

namespace {

#define FUZZ_CHECK(cond)  \
  do {                    \
    if (!(cond)) abort(); \
  } while (0)

struct Owner : SessionEvents {
  H2Session* session = nullptr;
  struct StreamBytes {
    ringtunnel::proxy::LentPayloads lent;  // the proxy's own tracking of lent buffers
    std::vector<uint8_t> submitted;        // every byte lent, in order: what the wire must carry
    size_t unconsumed = 0;
    bool closed = false;
  };
  std::map<int32_t, StreamBytes> streams;
  std::set<int32_t> known;
  // Every buffer ever lent, kept until the end so that a reference kept past its release reads
  // poison (as the proxy's pool does in --debug-poison-buffers) rather than freed memory.
  struct Buffer {
    std::unique_ptr<uint8_t[]> bytes;
    size_t size;
    bool given_back;
  };
  std::vector<Buffer> buffers;
  ringtunnel::proxy::LentPayloads::GiveBack give_back = [this](uint8_t cls, uint16_t bid) {
    Buffer& b = buffers[size_t{cls} << 16 | bid];
    FUZZ_CHECK(!b.given_back);
    b.given_back = true;
    memset(b.bytes.get(), 0xA5, b.size);
  };

  void on_connect_request(int32_t id, const ringtunnel::net::Endpoint&,
                          std::span<const Header>) override {
    FUZZ_CHECK(known.insert(id).second);
    streams[id];
    // Accept most, refuse some with each status the proxy uses.
    static constexpr int kStatuses[] = {200, 200, 200, 400, 401, 503};
    session->submit_response(id, kStatuses[uint32_t(id) / 2 % 6]);
  }
  void on_response(int32_t id, int) override { FUZZ_CHECK(known.count(id)); }
  void on_data(int32_t id, const uint8_t* p, size_t n) override {
    FUZZ_CHECK(known.count(id) && !streams[id].closed);
    StreamBytes& s = streams[id];
    s.unconsumed += n;
    // Echo a copy (the owner's buffer, lent to the session), every other chunk at once.
    if (n > 0 && buffers.size() < (size_t{1} << 24)) {
      const size_t index = buffers.size();
      buffers.push_back({std::make_unique<uint8_t[]>(n), n, false});
      uint8_t* copy = buffers.back().bytes.get();
      memcpy(copy, p, n);
      if (session->submit_data(id, copy, n) == 0) {
        s.lent.lend(copy, uint32_t(n), uint16_t(index), uint8_t(index >> 16));
        s.submitted.insert(s.submitted.end(), p, p + n);
      }
    }
    if (s.unconsumed & 1) {
      session->consume(id, s.unconsumed);
      s.unconsumed = 0;
    }
    // The rest of the owner's commands, driven by the data sizes the input chose.
    if (n % 13 == 5) session->submit_reset(id, kCancel);
    if (n % 17 == 3) session->submit_ping();
    if (n % 19 == 7) session->submit_goaway_graceful();
    if (n % 23 == 11) session->set_stream_owner(id, &s);
    if (session->stream_owner(id) != nullptr && session->stream_owner(id) != &s) abort();
  }
  void on_end_stream(int32_t id) override {
    FUZZ_CHECK(known.count(id));
    session->submit_end(id);
  }
  void on_reset(int32_t id, uint32_t) override { FUZZ_CHECK(known.count(id)); }
  void on_goaway(int32_t, uint32_t) override {}
  void on_request_rejected(int32_t id, int, std::string_view) override {
    FUZZ_CHECK(!known.count(id));
  }
  void on_stream_closed(int32_t id) override {
    FUZZ_CHECK(known.count(id));
    StreamBytes& s = streams[id];
    FUZZ_CHECK(!s.closed);
    FUZZ_CHECK(s.lent.live_bytes() == 0);  // every payload released before the stream closes
    s.closed = true;
    session->consume(id, s.unconsumed);  // the contract: even after close
    s.unconsumed = 0;
  }
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool) override {
    FUZZ_CHECK(known.count(id));
    FUZZ_CHECK(!piece.empty());
    // By address: the piece must lie in a buffer lent on this stream and not yet released.
    FUZZ_CHECK(streams[id].lent.release(piece, give_back));
  }
  // Moves every stream's lent buffers to the heap, as the proxy does under pool pressure.
  void move_to_heap() {
    for (auto& [id, s] : streams) {
      if (s.closed) continue;
      const int32_t sid = id;
      s.lent.to_heap([&](const uint8_t* from, const uint8_t* to,
                         size_t n) { session->relocate(sid, from, to, n); },
                     give_back);
    }
  }
};

// Gives the first 1/`part` of the pending output to the "TLS writer" (the frame parser).
size_t hand_over(H2Session& session, FrameParser& wire, size_t part) {
  const auto spans = session.pending();
  size_t total = 0;
  for (const auto& s : spans)
    total += s.size();
  size_t give = total == 1 ? 1 : total / part;
  const size_t given = give;
  for (const auto& s : spans) {
    if (give == 0) break;
    const size_t n = std::min(give, s.size());
    wire.add(s.data(), n);
    give -= n;
  }
  session.consume_output(given);
  return given;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  ++data;
  --size;

  SessionOptions options;
  options.role = (mode & 1) ? Role::client : Role::server;
  options.max_output_bytes = (mode & 0x10) ? 4096 : options.max_output_bytes;
  Owner owner;
  H2Session session(options, owner);
  owner.session = &session;
  FrameParser wire(options.role == Role::client);
  wire.keep_data = true;

  std::vector<uint8_t> start;
  if (options.role == Role::server && (mode & 2)) {
    start = client_start();
    put_frame(start, kSettings, kAck, 0, {});
    if (mode & 4) put_frame(start, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
    if (mode & 8) put_frame(start, kHeaders, kEndHeaders, 3, connect_block("example.com:80"));
  } else if (options.role == Role::client) {
    const int32_t id = session.submit_connect("10.0.0.1:80");
    FUZZ_CHECK(id == 1);
    owner.known.insert(id);
    owner.streams[id];
    if (mode & 2) {
      // What a server sends first: SETTINGS, and the ACK of ours; then maybe the 200.
      put_frame(start, kSettings, 0, 0, {});
      put_frame(start, kSettings, kAck, 0, {});
      if (mode & 4) put_frame(start, kHeaders, kEndHeaders, 1, {0x88});  // :status 200
    }
  }
  hand_over(session, wire, 1);  // the preface (and a client's request) go out first
  if (!start.empty()) session.feed(start.data(), start.size());

  // Feeds of 1, 2, 4 ... 64 bytes (mode bits 5-7), or all at once (0).
  const unsigned shift = mode >> 5;
  const size_t chunk = shift ? size_t(1) << (shift - 1) : size;
  for (size_t off = 0; off < size;) {
    const size_t n = std::min(chunk, size - off);
    const ssize_t rv = session.feed(data + off, n);
    off += n;
    hand_over(session, wire, 2);  // half the output: partial consumption
    if ((mode & 0x10) && off % 3 == 0) owner.move_to_heap();
    if (rv < 0) break;
  }
  while (hand_over(session, wire, 1) > 0) {
  }
  FUZZ_CHECK(wire.at_boundary());
  (void)session.finished();
  (void)session.streams_available();
  for (const Frame& f : wire.frames)
    FUZZ_CHECK(f.length <= options.max_frame_size);

  // Every payload byte on the wire is the one lent there: a buffer released (and poisoned) while
  // still framed, or relocated wrongly, would show here.
  for (const auto& [id, bytes] : wire.data_of) {
    const auto it = owner.streams.find(int32_t(id));
    FUZZ_CHECK(it != owner.streams.end());
    const std::vector<uint8_t>& lent = it->second.submitted;
    FUZZ_CHECK(bytes.size() <= lent.size() && std::equal(bytes.begin(), bytes.end(), lent.begin()));
  }

  session.close_all_streams(kCancel);
  FUZZ_CHECK(session.open_streams() == 0);
  FUZZ_CHECK(session.pending().empty());
  for (const int32_t id : owner.known) {
    const Owner::StreamBytes& s = owner.streams[id];
    FUZZ_CHECK(s.lent.live_bytes() == 0 && s.lent.empty());
    FUZZ_CHECK(s.closed);
  }
  for (const Owner::Buffer& b : owner.buffers)
    FUZZ_CHECK(b.given_back);  // and every buffer came back exactly once
  return 0;
}

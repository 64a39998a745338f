// H2Session: a client and a server wired back to back in memory.
#include "ringtunnel/h2/session.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "h2_test_util.h"

using namespace ringtunnel::h2;
using namespace ringtunnel::h2::test;

namespace {

constexpr size_t kMiB = 1u << 20;

std::vector<uint8_t> pattern(size_t size, uint32_t seed) {
  std::vector<uint8_t> out(size);
  std::mt19937 rng(seed);
  for (size_t i = 0; i < size; i += 4) {
    const uint32_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<size_t>(4, size - i));
  }
  return out;
}

SessionOptions client_options() {
  SessionOptions o;
  o.role = Role::client;
  return o;
}

SessionOptions server_options() {
  SessionOptions o;
  o.role = Role::server;
  return o;
}

// A client and a server session with recorders, already past the SETTINGS exchange.
struct Pair {
  Recorder client_events;
  Recorder server_events;
  H2Session client;
  H2Session server;
  FrameParser c2s{true};
  FrameParser s2c{false};

  explicit Pair(SessionOptions c = client_options(), SessionOptions s = server_options())
      : client(c, client_events), server(s, server_events) {
    client_events.session = &client;
    server_events.session = &server;
    server_events.auto_accept = true;
    run();
  }
  void run() { pump(client, server, &c2s, &s2c); }

  // Opens a tunnel and returns its stream id.
  int32_t open(std::string_view authority = "10.1.2.3:8080") {
    const int32_t id = client.submit_connect(authority);
    REQUIRE(id > 0);
    run();
    REQUIRE(client_events.responses[id] == 200);
    return id;
  }
};

size_t max_data_frame(const FrameParser& p) {
  size_t max = 0;
  for (const Frame& f : p.frames) {
    if (f.type == kData) max = std::max<size_t>(max, f.length);
  }
  return max;
}

}  // namespace

TEST_CASE("session: CONNECT, 200, and the extra headers reach the server's owner") {
  Pair p;
  const Header extra[] = {
      {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
      {"forwarded", "for=10.0.0.9"}};
  const int32_t id = p.client.submit_connect("[2001:db8::7]:443", extra);
  CHECK(id == 1);
  p.run();
  REQUIRE(p.server_events.targets.count(1) == 1);
  CHECK(p.server_events.targets[1] == "[2001:db8::7]:443");
  REQUIRE(p.server_events.headers[1].size() == 2);
  CHECK(p.server_events.headers[1][0].first == "traceparent");
  CHECK(p.server_events.headers[1][1].second == "for=10.0.0.9");
  CHECK(p.client_events.responses[1] == 200);
  CHECK(p.client.open_streams() == 1);
  CHECK(p.server.open_streams() == 1);

  // The request on the wire: :method CONNECT and :authority, no :scheme or :path (the server
  // session would have reset it otherwise); our SETTINGS went first.
  REQUIRE(!p.c2s.frames.empty());
  CHECK(p.c2s.frames[0].type == kSettings);
  CHECK(p.s2c.frames[0].type == kSettings);
}

TEST_CASE("session: client refuses bad authorities and pseudo headers before sending anything") {
  Pair p;
  CHECK(p.client.submit_connect("example.com:443") == NGHTTP2_ERR_INVALID_ARGUMENT);
  CHECK(p.client.submit_connect("10.0.0.1") == NGHTTP2_ERR_INVALID_ARGUMENT);
  const Header pseudo[] = {{":path", "/"}};
  CHECK(p.client.submit_connect("10.0.0.1:80", pseudo) == NGHTTP2_ERR_INVALID_ARGUMENT);
  const Header upper[] = {{"Forwarded", "x"}};
  CHECK(p.client.submit_connect("10.0.0.1:80", upper) == NGHTTP2_ERR_INVALID_ARGUMENT);
  const Header crlf[] = {{"forwarded", "x\r\ninjected: 1"}};
  CHECK(p.client.submit_connect("10.0.0.1:80", crlf) == NGHTTP2_ERR_INVALID_ARGUMENT);
  CHECK(p.client.open_streams() == 0);
}

TEST_CASE("session: 16 MiB each way, byte-exact, in DATA frames of up to 1 MiB, not copied") {
  Pair p;
  const int32_t id = p.open();
  const std::vector<uint8_t> up = pattern(16 * kMiB, 1);
  const std::vector<uint8_t> down = pattern(16 * kMiB, 2);
  REQUIRE(p.client.submit_data(id, up.data(), up.size()) == 0);
  REQUIRE(p.server.submit_data(id, down.data(), down.size()) == 0);

  // The payload spans point into our buffer: referenced, not copied.
  bool referenced = false;
  for (const auto& s : p.client.pending()) {
    if (s.data() >= up.data() && s.data() + s.size() <= up.data() + up.size()) referenced = true;
  }
  CHECK(referenced);
  CHECK(p.client.pending_bytes() <= SessionOptions{}.max_output_bytes + kMiB + 64);

  p.run();
  CHECK(p.server_events.data[id] == up);
  CHECK(p.client_events.data[id] == down);
  CHECK(p.client_events.released_sent[id] == up.size());
  CHECK(p.server_events.released_sent[id] == down.size());
  CHECK(max_data_frame(p.c2s) == kMiB);
  CHECK(max_data_frame(p.s2c) == kMiB);
  CHECK(p.c2s.at_boundary());
  CHECK(p.s2c.at_boundary());
}

TEST_CASE("session: many small submissions are framed together") {
  Pair p;
  const int32_t id = p.open();
  const std::vector<uint8_t> up = pattern(64 * 1024, 3);
  for (size_t off = 0; off < up.size(); off += 1024) {
    REQUIRE(p.client.submit_data(id, up.data() + off, 1024) == 0);
  }
  p.run();
  CHECK(p.server_events.data[id] == up);
  CHECK(p.client_events.released_sent[id] == up.size());
  size_t frames = 0;
  for (const Frame& f : p.c2s.frames)
    frames += f.type == kData;
  CHECK(frames == 1);  // 64 chunks, one DATA frame
}

TEST_CASE("session: END_STREAM each way on its own (half-close)") {
  Pair p;
  const int32_t id = p.open();
  const std::vector<uint8_t> a = pattern(1000, 4), b = pattern(3000, 5);

  SUBCASE("client ends first") {
    p.client.submit_data(id, a.data(), a.size());
    p.client.submit_end(id);
    p.run();
    CHECK(p.server_events.ended == std::vector<int32_t>{id});
    CHECK(p.server_events.data[id] == a);
    CHECK(p.client.submit_data(id, a.data(), 1) == NGHTTP2_ERR_INVALID_STATE);
    // The other direction still flows.
    p.server.submit_data(id, b.data(), b.size());
    p.run();
    CHECK(p.client_events.data[id] == b);
    CHECK(p.client_events.ended.empty());
    CHECK(p.client_events.closed.empty());
    p.server.submit_end(id);
    p.run();
  }
  SUBCASE("server ends first") {
    p.server.submit_data(id, b.data(), b.size());
    p.server.submit_end(id);
    p.run();
    CHECK(p.client_events.ended == std::vector<int32_t>{id});
    p.client.submit_data(id, a.data(), a.size());
    p.run();
    CHECK(p.server_events.data[id] == a);
    CHECK(p.server_events.closed.empty());
    p.client.submit_end(id);
    p.run();
  }
  CHECK(p.client_events.ended == std::vector<int32_t>{id});
  CHECK(p.server_events.ended == std::vector<int32_t>{id});
  CHECK(p.client_events.closed == std::vector<int32_t>{id});
  CHECK(p.server_events.closed == std::vector<int32_t>{id});
  CHECK(p.client_events.resets.empty());
  CHECK(p.server_events.resets.empty());
  CHECK(p.client.open_streams() == 0);
  CHECK(p.server.open_streams() == 0);
}

TEST_CASE("session: END_STREAM on an empty DATA frame when nothing is left to send") {
  Pair p;
  const int32_t id = p.open();
  p.client.submit_end(id);
  p.run();
  CHECK(p.server_events.ended == std::vector<int32_t>{id});
  const Frame& last = p.c2s.frames.back();
  CHECK(last.type == kData);
  CHECK(last.length == 0);
  CHECK((last.flags & kEndStream) != 0);
}

TEST_CASE("session: RST_STREAM each way") {
  Pair p;
  const int32_t id = p.open();
  SUBCASE("client resets") {
    CHECK(p.client.submit_reset(id, kCancel) == 0);
    p.run();
    CHECK(p.server_events.resets[id] == kCancel);
    CHECK(p.client_events.resets.empty());  // the owner asked for it
  }
  SUBCASE("server resets") {
    CHECK(p.server.submit_reset(id, kConnectError) == 0);
    p.run();
    CHECK(p.client_events.resets[id] == kConnectError);
    CHECK(p.server_events.resets.empty());
  }
  CHECK(p.client_events.closed == std::vector<int32_t>{id});
  CHECK(p.server_events.closed == std::vector<int32_t>{id});
  CHECK(p.client.submit_data(id, nullptr, 1) == NGHTTP2_ERR_INVALID_STATE);
}

TEST_CASE("session: payloads of a reset stream are released before the stream closes") {
  Pair p;
  const int32_t id = p.open();
  const std::vector<uint8_t> up = pattern(8 * kMiB, 6);
  p.client.submit_data(id, up.data(), up.size());
  // Frames are in the output (not yet handed to TLS) when the owner resets.
  REQUIRE(!p.client.pending().empty());
  p.client.submit_reset(id, kCancel);
  p.run();
  const size_t released = p.client_events.released_sent[id] + p.client_events.released_unsent[id];
  CHECK(released == up.size());
  CHECK(p.client_events.released_unsent[id] > 0);  // the stream window stopped the rest
  const long closed = p.client_events.index_of("closed 1");
  REQUIRE(closed >= 0);
  for (long i = closed + 1; i < long(p.client_events.log.size()); ++i) {
    CHECK(p.client_events.log[size_t(i)].rfind("released", 0) != 0);
  }
}

TEST_CASE("session: the server answers non-CONNECT and bad authorities itself") {
  Recorder events;
  H2Session server(server_options(), events);
  events.session = &server;
  drain(server);
  std::vector<uint8_t> in = client_start();

  SUBCASE("bad authority: 400") {
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("example.com:443"));
    server.feed(in.data(), in.size());
    CHECK(events.rejected == std::vector<std::pair<int32_t, int>>{{1, 400}});
  }
  SUBCASE("IPv6 zone id: 400") {
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("[fe80::1%eth0]:80"));
    server.feed(in.data(), in.size());
    CHECK(events.rejected == std::vector<std::pair<int32_t, int>>{{1, 400}});
  }
  SUBCASE("GET: 400, as ztunnel answers a method that is not CONNECT") {
    std::vector<uint8_t> block;
    hpack_literal(block, ":method", "GET");
    hpack_literal(block, ":scheme", "https");
    hpack_literal(block, ":path", "/");
    hpack_literal(block, ":authority", "10.0.0.1:80");
    put_frame(in, kHeaders, kEndHeaders | kEndStream, 1, block);
    server.feed(in.data(), in.size());
    CHECK(events.rejected == std::vector<std::pair<int32_t, int>>{{1, 400}});
  }
  const std::vector<Frame> out = frames_of(drain(server));
  bool saw_400 = false;
  for (const Frame& f : out) {
    // HPACK static table index 12 is ":status: 400": one byte, 0x8c.
    if (f.type == kHeaders && f.stream == 1 && f.payload == std::vector<uint8_t>{0x8c}) {
      saw_400 = true;
      CHECK((f.flags & kEndStream) != 0);
    }
  }
  CHECK(saw_400);
  CHECK(events.targets.empty());  // the owner never saw it
  CHECK(events.closed.empty());
  CHECK(server.open_streams() == 0);
  CHECK_FALSE(server.failed());
}

TEST_CASE(
    "session: malformed CONNECTs are reset by nghttp2 (PROTOCOL_ERROR), unseen by the owner") {
  Recorder events;
  H2Session server(server_options(), events);
  events.session = &server;
  drain(server);
  std::vector<uint8_t> in = client_start();
  std::vector<uint8_t> block;
  SUBCASE("missing :authority") {
    hpack_literal(block, ":method", "CONNECT");
  }
  SUBCASE(":path on CONNECT") {
    block = connect_block("10.0.0.1:80");
    hpack_literal(block, ":path", "/");
  }
  SUBCASE(":scheme on CONNECT") {
    block = connect_block("10.0.0.1:80");
    hpack_literal(block, ":scheme", "https");
  }
  put_frame(in, kHeaders, kEndHeaders, 1, block);
  CHECK(server.feed(in.data(), in.size()) == ssize_t(in.size()));
  const std::vector<Frame> out = frames_of(drain(server));
  CHECK(rst_code(out, 1) == kProtocolError);
  CHECK(events.targets.empty());
  CHECK(events.log.empty());
  CHECK_FALSE(server.failed());
}

TEST_CASE("session: the owner's 503 ends the stream on both sides") {
  Pair p;
  p.server_events.auto_accept = false;
  const int32_t id = p.client.submit_connect("10.0.0.1:80");
  p.run();
  REQUIRE(p.server_events.targets.count(id) == 1);
  CHECK(p.server.submit_response(id, 503) == 0);
  CHECK(p.server.submit_data(id, nullptr, 1) == NGHTTP2_ERR_INVALID_STATE);
  p.run();
  CHECK(p.client_events.responses[id] == 503);
  CHECK(p.client_events.closed == std::vector<int32_t>{id});
  CHECK(p.server_events.closed == std::vector<int32_t>{id});
  CHECK(p.client.open_streams() == 0);
  CHECK(p.server.open_streams() == 0);
  CHECK(p.server.submit_response(id, 200) == NGHTTP2_ERR_INVALID_STATE);
}

TEST_CASE("session: without consume() the sender stops at the stream window, and resumes") {
  Pair p;
  p.server_events.auto_consume = false;
  const int32_t id = p.open();
  const std::vector<uint8_t> up = pattern(10 * kMiB, 7);
  p.client.submit_data(id, up.data(), up.size());
  p.run();
  CHECK(p.server_events.data[id].size() == 4 * kMiB);
  CHECK(p.client_events.released_sent[id] == 4 * kMiB);
  CHECK(p.client.pending().empty());  // stopped, nothing framed
  // Consuming half the window is what sends the WINDOW_UPDATE.
  p.server.consume(id, 2 * kMiB - 1);
  p.server_events.unconsumed[id] -= 2 * kMiB - 1;
  p.run();
  CHECK(p.server_events.data[id].size() == 4 * kMiB);
  while (p.server_events.data[id].size() < up.size()) {
    const size_t before = p.server_events.data[id].size();
    p.server_events.consume_all();
    p.run();
    REQUIRE(p.server_events.data[id].size() > before);
  }
  CHECK(p.server_events.data[id] == up);
}

TEST_CASE("session: the connection window bounds the sum over streams") {
  Pair p;
  p.server_events.auto_consume = false;
  const std::vector<uint8_t> up = pattern(8 * kMiB, 8);
  std::vector<int32_t> ids;
  for (int i = 0; i < 5; ++i)
    ids.push_back(p.open());
  for (int32_t id : ids)
    p.client.submit_data(id, up.data(), up.size());
  p.run();
  size_t total = 0;
  for (int32_t id : ids) {
    CHECK(p.server_events.data[id].size() <= 4 * kMiB);
    total += p.server_events.data[id].size();
  }
  CHECK(total == 16 * kMiB);
  p.server_events.consume_all();
  p.run();
  total = 0;
  for (int32_t id : ids)
    total += p.server_events.data[id].size();
  CHECK(total > 16 * kMiB);
}

TEST_CASE("session: PING keepalive") {
  Pair p;
  CHECK_FALSE(p.client.ping_outstanding());
  p.client.submit_ping();
  CHECK(p.client.ping_outstanding());
  p.run();
  CHECK_FALSE(p.client.ping_outstanding());
}

TEST_CASE("session: graceful GOAWAY lets open streams finish and refuses new ones") {
  Pair p;
  const int32_t id = p.open();
  CHECK(p.client.streams_available() == 99);
  CHECK(p.server.submit_goaway_graceful() == 0);
  p.run();
  // The notice (2^31-1), then, after the PING round trip, the last stream id.
  REQUIRE(p.client_events.goaways.size() == 2);
  CHECK(p.client_events.goaways[0].first == 0x7fffffff);
  CHECK(p.client_events.goaways[1] == std::pair<int32_t, uint32_t>{id, kNoError});
  CHECK(p.client.streams_available() == 0);
  CHECK(p.client.submit_connect("10.0.0.1:80") == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED);
  CHECK_FALSE(p.client.finished());
  CHECK_FALSE(p.server.finished());

  const std::vector<uint8_t> a = pattern(100000, 9);
  p.client.submit_data(id, a.data(), a.size());
  p.client.submit_end(id);
  p.server.submit_data(id, a.data(), a.size());
  p.server.submit_end(id);
  p.run();
  CHECK(p.server_events.data[id] == a);
  CHECK(p.client_events.data[id] == a);
  CHECK(p.client.finished());
  CHECK(p.server.finished());
  CHECK_FALSE(p.server.failed());
}

TEST_CASE("session: client GOAWAY") {
  Pair p;
  const int32_t id = p.open();
  CHECK(p.client.submit_goaway_graceful() == 0);
  p.run();
  CHECK(p.server_events.goaways.size() == 1);
  p.client.submit_end(id);
  p.server.submit_end(id);
  p.run();
  CHECK(p.client.finished());
  CHECK(p.server.finished());
}

TEST_CASE("session: close_all_streams releases everything and closes every stream") {
  Pair p;
  const int32_t a = p.open();
  const int32_t b = p.open();
  const std::vector<uint8_t> up = pattern(6 * kMiB, 10);
  p.client.submit_data(a, up.data(), up.size());
  p.client.submit_data(b, up.data(), up.size());
  REQUIRE(!p.client.pending().empty());
  p.client.close_all_streams(kConnectError);
  CHECK(p.client_events.released_unsent[a] == up.size());
  CHECK(p.client_events.released_unsent[b] == up.size());
  CHECK(p.client_events.resets[a] == kConnectError);
  CHECK(p.client_events.resets[b] == kConnectError);
  CHECK(p.client_events.closed == std::vector<int32_t>{a, b});
  CHECK(p.client.pending().empty());
  CHECK(p.client.finished());
  CHECK(p.client.open_streams() == 0);
  CHECK(p.client.submit_data(a, up.data(), 1) == NGHTTP2_ERR_INVALID_STATE);
}

TEST_CASE("session: GOAWAY from the server refuses streams it never saw") {
  Pair p;
  p.server_events.auto_accept = false;
  const int32_t first = p.client.submit_connect("10.0.0.1:80");
  p.run();
  p.server.submit_goaway_graceful();
  p.server.submit_goaway_graceful();  // second call: the final GOAWAY at once
  const std::vector<uint8_t> goaway = drain(p.server);
  // A request crossing the GOAWAY on the wire: the server has already sent it, so it ignores
  // the request; the client, on reading the GOAWAY, learns that it was never processed.
  const int32_t second = p.client.submit_connect("10.0.0.1:81");
  REQUIRE(second > 0);
  transfer(p.client, p.server);
  p.client.feed(goaway.data(), goaway.size());
  p.run();
  CHECK(p.client_events.goaways.back() == std::pair<int32_t, uint32_t>{first, kNoError});
  CHECK(p.client_events.resets[second] == kRefusedStream);
  CHECK(p.client_events.saw("closed " + std::to_string(second)));
  CHECK(p.server_events.targets.count(second) == 0);
  CHECK(p.client_events.resets.count(first) == 0);
}

TEST_CASE("session: stream owner pointers") {
  Pair p;
  int tag = 0;
  const int32_t id = p.client.submit_connect("10.0.0.1:80", {}, &tag);
  CHECK(p.client.stream_owner(id) == &tag);
  p.run();
  p.server.set_stream_owner(id, &tag);
  CHECK(p.server.stream_owner(id) == &tag);
  CHECK(p.server.stream_owner(99) == nullptr);
}

TEST_CASE("session: output handed over in odd amounts stays byte-exact") {
  Pair p;
  const int32_t id = p.open();
  const std::vector<uint8_t> up = pattern(3 * kMiB + 12345, 11);
  p.client.submit_data(id, up.data(), up.size());
  p.client.submit_end(id);
  // The "TLS writer" takes 1000 bytes at a time, cutting through headers and payloads.
  std::vector<uint8_t> piece;
  for (int guard = 0; guard < 100000; ++guard) {
    const auto spans = p.client.pending();
    if (spans.empty()) {
      if (transfer(p.server, p.client) == 0) break;
      continue;
    }
    piece.clear();
    for (const auto& s : spans) {
      const size_t take = std::min(s.size(), 1000 - piece.size());
      piece.insert(piece.end(), s.begin(), s.begin() + ptrdiff_t(take));
      if (piece.size() == 1000) break;
    }
    p.client.consume_output(piece.size());
    p.c2s.add(piece.data(), piece.size());
    REQUIRE(p.server.feed(piece.data(), piece.size()) == ssize_t(piece.size()));
    transfer(p.server, p.client);
  }
  CHECK(p.server_events.data[id] == up);
  CHECK(p.server_events.ended == std::vector<int32_t>{id});
  CHECK(p.client_events.released_sent[id] == up.size());
  CHECK(p.c2s.at_boundary());
}

TEST_CASE("session: many control frames, half drained each time, come out whole and in order") {
  Recorder events;
  SessionOptions o = server_options();
  H2Session server(o, events);
  events.session = &server;
  std::vector<uint8_t> in = client_start();
  put_frame(in, kSettings, kAck, 0, {});
  server.feed(in.data(), in.size());
  FrameParser wire;
  uint64_t next = 0;
  for (int round = 0; round < 40; ++round) {
    std::vector<uint8_t> pings;
    for (int i = 0; i < 3000; ++i, ++next) {
      std::vector<uint8_t> opaque(8);
      std::memcpy(opaque.data(), &next, 8);
      put_frame(pings, kPing, 0, 0, opaque);
    }
    REQUIRE(server.feed(pings.data(), pings.size()) == ssize_t(pings.size()));
    // Take half of what is pending.
    const auto spans = server.pending();
    size_t total = 0;
    for (const auto& s : spans)
      total += s.size();
    size_t give = total / 2;
    const size_t given = give;
    for (const auto& s : spans) {
      const size_t n = std::min(give, s.size());
      wire.add(s.data(), n);
      give -= n;
      if (give == 0) break;
    }
    server.consume_output(given);
    CHECK(server.pending_bytes() <= 3000 * 17 * 2);  // compaction keeps it near one round
  }
  for (const auto& s : server.pending())
    wire.add(s.data(), s.size());
  server.consume_output(server.pending_bytes());
  uint64_t expect = 0;
  for (const Frame& f : wire.frames) {
    if (f.type != kPing) continue;
    REQUIRE(f.flags == kAck);
    uint64_t got;
    std::memcpy(&got, f.payload.data(), 8);
    REQUIRE(got == expect);
    ++expect;
  }
  CHECK(expect == next);
  CHECK_FALSE(server.failed());
}

// Hand-crafted hostile byte strings fed to a server session. Each must end in a GOAWAY with the
// right error code, or in a bounded outcome (a stream reset), never in unbounded memory or a
// crash. The GOAWAYs are read back from the session's output.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "h2_test_util.h"
#include "ringtunnel/h2/session.h"

using namespace ringtunnel::h2;
using namespace ringtunnel::h2::test;

namespace {

struct Server {
  Recorder events;
  H2Session session;
  std::vector<uint8_t> out;  // everything the server wrote

  explicit Server(SessionOptions o = make_options()) : session(o, events) {
    events.session = &session;
    take();
  }
  static SessionOptions make_options() {
    SessionOptions o;
    o.role = Role::server;
    return o;
  }
  ssize_t feed(const std::vector<uint8_t>& in) { return session.feed(in.data(), in.size()); }
  void take() {
    const std::vector<uint8_t> b = drain(session);
    out.insert(out.end(), b.begin(), b.end());
  }
  std::vector<Frame> frames() {
    take();
    return frames_of(out);
  }
  // The server's GOAWAY is the last frame it wrote.
  void expect_goaway(uint32_t code) {
    const std::vector<Frame> f = frames();
    REQUIRE(!f.empty());
    CHECK(f.back().type == kGoaway);
    CHECK(goaway_code(f) == code);
    CHECK(session.failed());
    CHECK(session.failure().error_code == code);
    CHECK(session.finished());
    CHECK(session.pending().empty());
  }
};

// The client side of the handshake, including the ACK of the server's SETTINGS (which is when
// the server's own limits, such as the 1 MiB frame size, take effect).
std::vector<uint8_t> handshake() {
  std::vector<uint8_t> in = client_start();
  put_frame(in, kSettings, kAck, 0, {});
  return in;
}

}  // namespace

TEST_CASE("hostile: not HTTP/2 at all") {
  Server s;
  const std::string http1 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(s.feed(std::vector<uint8_t>(http1.begin(), http1.end())) == NGHTTP2_ERR_BAD_CLIENT_MAGIC);
  s.expect_goaway(kProtocolError);
  // Our SETTINGS went out before the GOAWAY.
  CHECK(s.frames().front().type == kSettings);
  CHECK(s.session.feed(nullptr, 0) < 0);  // stays failed
}

TEST_CASE("hostile: preface without SETTINGS") {
  Server s;
  std::vector<uint8_t> in(kClientPreface.begin(), kClientPreface.end());
  put_frame(in, kPing, 0, 0, std::vector<uint8_t>(8, 0));
  CHECK(s.feed(in) < 0);
  s.expect_goaway(kProtocolError);
}

TEST_CASE("hostile: a frame larger than the advertised 1 MiB") {
  Server s;
  std::vector<uint8_t> in = handshake();
  put_frame(in, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
  put_frame(in, kData, 0, 1, {}, (1u << 20) + 1);  // the header alone is enough
  CHECK(s.feed(in) == NGHTTP2_ERR_FRAME_SIZE_ERROR);
  s.expect_goaway(kFrameSizeError);
}

TEST_CASE("hostile: a 16 MiB length field") {
  Server s;
  std::vector<uint8_t> in = handshake();
  put_frame(in, kPing, 0, 0, {}, 0xffffff);
  CHECK(s.feed(in) < 0);
  s.expect_goaway(kFrameSizeError);
}

TEST_CASE("hostile: frames over 16 KiB before our SETTINGS are acknowledged") {
  Server s;
  std::vector<uint8_t> in = client_start();
  put_frame(in, kData, 0, 1, {}, 16385);
  CHECK(s.feed(in) < 0);
  s.expect_goaway(kFrameSizeError);
}

TEST_CASE("hostile: invalid HPACK") {
  Server s;
  std::vector<uint8_t> in = handshake();
  SUBCASE("index 0") {
    put_frame(in, kHeaders, kEndHeaders, 1, {0x80});
  }
  SUBCASE("index past the tables") {
    put_frame(in, kHeaders, kEndHeaders, 1, {0xff, 0x80, 0x01});
  }
  SUBCASE("integer overflow") {
    put_frame(in, kHeaders, kEndHeaders, 1, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f});
  }
  SUBCASE("string longer than the block") {
    put_frame(in, kHeaders, kEndHeaders, 1, {0x00, 0x05, 'a', 'b'});
  }
  CHECK(s.feed(in) == NGHTTP2_ERR_HEADER_COMP);
  s.expect_goaway(kCompressionError);
  CHECK(s.events.log.empty());
}

TEST_CASE("hostile: bad stream ids") {
  Server s;
  std::vector<uint8_t> in = handshake();
  uint32_t expected = kProtocolError;
  SUBCASE("even") {
    put_frame(in, kHeaders, kEndHeaders, 2, connect_block("10.0.0.1:80"));
  }
  SUBCASE("zero") {
    put_frame(in, kHeaders, kEndHeaders, 0, connect_block("10.0.0.1:80"));
  }
  SUBCASE("DATA on an idle stream") {
    put_frame(in, kData, 0, 7, {1, 2, 3});
  }
  SUBCASE("RST_STREAM on an idle stream") {
    put_frame(in, kRstStream, 0, 9, u32(kCancel));
  }
  SUBCASE("HEADERS again on a half-closed stream") {
    put_frame(in, kHeaders, kEndHeaders | kEndStream, 1, connect_block("10.0.0.1:80"));
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
    expected = kStreamClosed;
  }
  CHECK(s.feed(in) < 0);
  s.expect_goaway(expected);
}

TEST_CASE("hostile: a decreasing stream id is ignored, not a connection error") {
  // nghttp2 cannot tell a lower id that was never opened from one it has closed and forgotten
  // (HEADERS racing our RST_STREAM are legitimate), so it drops such HEADERS, decoding their
  // block to keep HPACK in step: bounded, and nothing reaches the owner.
  Server s;
  std::vector<uint8_t> in = handshake();
  put_frame(in, kHeaders, kEndHeaders, 5, connect_block("10.0.0.1:80"));
  put_frame(in, kHeaders, kEndHeaders, 3, connect_block("10.0.0.1:81"));
  put_frame(in, kData, 0, 3, std::vector<uint8_t>(100, 'x'));
  put_frame(in, kHeaders, kEndHeaders, 7, connect_block("10.0.0.1:82"));
  CHECK(s.feed(in) == ssize_t(in.size()));
  CHECK(s.events.targets.size() == 2);
  CHECK(s.events.targets.count(3) == 0);
  CHECK(s.session.open_streams() == 2);
  CHECK_FALSE(goaway_code(s.frames()).has_value());
  CHECK_FALSE(s.session.failed());
}

TEST_CASE("hostile: WINDOW_UPDATE past 2^31-1") {
  Server s;
  std::vector<uint8_t> in = handshake();
  SUBCASE("connection") {
    put_frame(in, kWindowUpdate, 0, 0, u32(0x7fffffff));
    CHECK(s.feed(in) == NGHTTP2_ERR_FLOW_CONTROL);
    s.expect_goaway(kFlowControlError);
  }
  SUBCASE("stream: that stream is reset, the connection lives") {
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
    put_frame(in, kWindowUpdate, 0, 1, u32(0x7fffffff));
    CHECK(s.feed(in) == ssize_t(in.size()));
    CHECK(rst_code(s.frames(), 1) == kFlowControlError);
    CHECK(s.events.resets[1] == kFlowControlError);
    CHECK(s.events.closed == std::vector<int32_t>{1});
    CHECK_FALSE(s.session.failed());
  }
}

TEST_CASE("hostile: SETTINGS and PING floods") {
  SUBCASE("in one read") {
    Server s;
    std::vector<uint8_t> in = handshake();
    for (int i = 0; i < 5000; ++i)
      put_frame(in, kSettings, 0, 0, {});
    CHECK(s.feed(in) == NGHTTP2_ERR_FLOODED);
    s.expect_goaway(kEnhanceYourCalm);
  }
  SUBCASE("PINGs, never reading the ACKs") {
    SessionOptions o = Server::make_options();
    o.max_output_bytes = 64u << 10;
    Server s(o);
    CHECK(s.feed(handshake()) > 0);
    std::vector<uint8_t> pings;
    for (int i = 0; i < 1000; ++i)
      put_frame(pings, kPing, 0, 0, std::vector<uint8_t>(8, 'p'));
    ssize_t rv = 0;
    int rounds = 0;
    for (; rounds < 1000 && rv >= 0; ++rounds) {
      rv = s.session.feed(pings.data(), pings.size());
      // Nobody drains the output, yet it stays bounded.
      CHECK(s.session.pending_bytes() <= o.max_output_bytes + 17 + 17);
    }
    CHECK(rv == NGHTTP2_ERR_FLOODED);
    CHECK(rounds < 10);
    s.expect_goaway(kEnhanceYourCalm);
  }
  SUBCASE("SETTINGS with too many entries") {
    Server s;
    std::vector<uint8_t> in = handshake();
    std::vector<uint8_t> entries;
    for (int i = 0; i < 40; ++i) {
      entries.insert(entries.end(), {0x00, 0x03});  // MAX_CONCURRENT_STREAMS
      const std::vector<uint8_t> v = u32(100);
      entries.insert(entries.end(), v.begin(), v.end());
    }
    put_frame(in, kSettings, 0, 0, entries);
    CHECK(s.feed(in) < 0);
    s.expect_goaway(kEnhanceYourCalm);
  }
}

TEST_CASE("hostile: rapid reset (HEADERS + RST_STREAM, over and over)") {
  Server s;
  std::vector<uint8_t> in = handshake();
  for (uint32_t id = 1; id < 2 * 5000; id += 2) {
    put_frame(in, kHeaders, kEndHeaders, id, connect_block("10.0.0.1:80"));
    put_frame(in, kRstStream, 0, id, u32(kCancel));
  }
  CHECK(s.feed(in) == NGHTTP2_ERR_PROTO);
  const std::vector<Frame> f = s.frames();
  CHECK(goaway_code(f) == kInternalError);
  CHECK(s.session.failed());
  // nghttp2's bucket (1000) runs out, its GOAWAY goes out, and feed() stops reading: at most
  // one more 16 KiB slice of ~50-byte pairs reached the owner, not the 5000 sent.
  CHECK(s.events.targets.size() >= 1000);
  CHECK(s.events.targets.size() <= 1000 + 16384 / 50);
  CHECK(s.session.open_streams() == 0);
}

TEST_CASE("hostile: CONTINUATION flood") {
  Server s;
  std::vector<uint8_t> in = handshake();
  std::vector<uint8_t> block = connect_block("10.0.0.1:80");
  put_frame(in, kHeaders, 0, 1, std::vector<uint8_t>(block.begin(), block.begin() + 4));
  for (int i = 0; i < 100; ++i)
    put_frame(in, kContinuation, 0, 1, {});
  CHECK(s.feed(in) == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS);
  s.expect_goaway(kEnhanceYourCalm);
}

TEST_CASE("hostile: CONTINUATION on another stream") {
  Server s;
  std::vector<uint8_t> in = handshake();
  std::vector<uint8_t> block = connect_block("10.0.0.1:80");
  put_frame(in, kHeaders, 0, 1, std::vector<uint8_t>(block.begin(), block.begin() + 4));
  put_frame(in, kContinuation, kEndHeaders, 3,
            std::vector<uint8_t>(block.begin() + 4, block.end()));
  CHECK(s.feed(in) < 0);
  s.expect_goaway(kProtocolError);
}

TEST_CASE("hostile: HPACK bomb (one table entry referenced many times)") {
  Server s;
  std::vector<uint8_t> in = handshake();
  std::vector<uint8_t> block = connect_block("10.0.0.1:80");
  hpack_literal(block, "x", std::string(4000, 'b'), /*index=*/true);
  for (int i = 0; i < 5000; ++i)
    block.push_back(0xbe);  // dynamic table entry 1 (index 62)
  put_frame(in, kHeaders, kEndHeaders, 1, block);
  // The connection survives: the next request works.
  put_frame(in, kHeaders, kEndHeaders, 3, connect_block("10.0.0.1:81"));
  CHECK(s.feed(in) == ssize_t(in.size()));
  const std::vector<Frame> f = s.frames();
  CHECK(rst_code(f, 1).has_value());
  CHECK_FALSE(goaway_code(f).has_value());
  CHECK(s.events.rejected == std::vector<std::pair<int32_t, int>>{{1, 0}});
  CHECK(s.events.targets.count(1) == 0);
  CHECK(s.events.targets.count(3) == 1);
}

TEST_CASE("hostile: more streams than SETTINGS_MAX_CONCURRENT_STREAMS") {
  SessionOptions o = Server::make_options();
  o.server_max_streams = 4;
  Server s(o);
  std::vector<uint8_t> in = handshake();
  for (uint32_t id = 1; id <= 11; id += 2) {
    put_frame(in, kHeaders, kEndHeaders, id, connect_block("10.0.0.1:80"));
  }
  CHECK(s.feed(in) < 0);
  CHECK(s.events.targets.size() == 4);
  s.expect_goaway(kProtocolError);  // nghttp2: a connection error once the limit is acknowledged
}

TEST_CASE("hostile: DATA beyond the flow-control windows") {
  SessionOptions o = Server::make_options();
  SUBCASE("stream window: that stream is reset") {
    o.stream_window = 1000;
    Server s(o);
    s.events.auto_accept = true;
    s.events.auto_consume = false;
    std::vector<uint8_t> in = handshake();
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
    put_frame(in, kData, 0, 1, std::vector<uint8_t>(1001, 'x'));
    CHECK(s.feed(in) == ssize_t(in.size()));
    const std::vector<Frame> f = s.frames();
    CHECK(rst_code(f, 1) == kFlowControlError);
    CHECK(s.events.resets[1] == kFlowControlError);
    CHECK(s.events.closed == std::vector<int32_t>{1});
    // nghttp2 still hands over the offending frame: at most one frame past the window.
    CHECK(s.events.data[1].size() <= 1001);
    CHECK_FALSE(goaway_code(f).has_value());
  }
  SUBCASE("connection window: GOAWAY") {
    o.connection_window = 65535;  // the protocol's initial value: no WINDOW_UPDATE
    Server s(o);
    s.events.auto_accept = true;
    s.events.auto_consume = false;
    std::vector<uint8_t> in = handshake();
    put_frame(in, kHeaders, kEndHeaders, 1, connect_block("10.0.0.1:80"));
    put_frame(in, kData, 0, 1, std::vector<uint8_t>(65535, 'x'));
    put_frame(in, kData, 0, 1, std::vector<uint8_t>(1, 'x'));
    CHECK(s.feed(in) == NGHTTP2_ERR_FLOW_CONTROL);
    s.expect_goaway(kFlowControlError);
  }
}

TEST_CASE("hostile: input byte by byte ends the same way") {
  Server s;
  std::vector<uint8_t> in = handshake();
  put_frame(in, kWindowUpdate, 0, 0, u32(0x7fffffff));
  ssize_t rv = 0;
  for (size_t i = 0; i < in.size() && rv >= 0; ++i)
    rv = s.session.feed(&in[i], 1);
  CHECK(rv == NGHTTP2_ERR_FLOW_CONTROL);
  s.expect_goaway(kFlowControlError);
}

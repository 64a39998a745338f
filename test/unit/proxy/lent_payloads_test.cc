// A stream's lent receive buffers and its H2Session together, with the pool poisoning every
// buffer it gets back: what the HBONE TCP -> tunnel path relies on. A buffer given back while
// the session's output still points into it would change bytes already framed for the peer.
#include "ringtunnel/proxy/lent_payloads.h"

#include <cstring>
#include <vector>

#include <doctest/doctest.h>

#include "h2/h2_test_util.h"
#include "ringtunnel/h2/session.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/ring.h"

using namespace ringtunnel;
using ringtunnel::proxy::LentPayloads;

namespace {

constexpr uint8_t kBig = 2;          // the class the test lends from
constexpr uint32_t kBuffer = 65536;  // its size
constexpr uint32_t kBuffers = 8;

// The proxy's side of a client stream: receive buffers lent to the session, tracked by address.
struct Lender : h2::test::Recorder {
  ring::BufferPool* pool = nullptr;
  LentPayloads lent;
  int bad_releases = 0;
  LentPayloads::GiveBack give_back = [this](uint8_t cls, uint16_t bid) {
    pool->give_back(cls, bid);
  };
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool sent) override {
    Recorder::on_payload_released(id, piece, sent);
    if (!lent.release(piece, give_back)) ++bad_releases;
  }
};

struct Fixture {
  ring::Ring ring;
  ring::BufferPool pool;
  Lender owner;
  std::unique_ptr<h2::H2Session> session;
  int32_t id = -1;

  Fixture() {
    REQUIRE(ring.init({64, false}) == "");
    REQUIRE(pool.init(ring.raw(), {{1024, 16384, kBuffer}, {2, 2, kBuffers}}) == "");
    pool.set_poison(true);
    owner.pool = &pool;
    h2::SessionOptions options;
    options.role = h2::Role::client;
    session = std::make_unique<h2::H2Session>(options, owner);
    owner.session = session.get();
    id = session->submit_connect("10.0.0.1:80");
    REQUIRE(id == 1);
  }

  // Lends pool buffer `bid`, filled with `fill`, to the stream: as a receive completion does.
  void lend(uint16_t bid, uint8_t fill) {
    pool.taken(kBig);
    uint8_t* p = pool.data(kBig, bid);
    memset(p, fill, kBuffer);
    REQUIRE(session->submit_data(id, p, kBuffer) == 0);
    owner.lent.lend(p, kBuffer, bid, kBig);
  }

  std::vector<uint8_t> pending_bytes() {
    std::vector<uint8_t> out;
    for (const auto& span : session->pending())
      out.insert(out.end(), span.begin(), span.end());
    return out;
  }
};

}  // namespace

TEST_CASE("a stream reset while its DATA is framed and waiting: no output byte changes") {
  Fixture f;
  for (uint16_t bid = 0; bid < 4; ++bid)
    f.lend(bid, uint8_t('a' + bid));
  // The peer's initial window (65,535 bytes) lets all but the last byte of buffer 0 be framed;
  // the rest waits, unframed, in the session.
  const std::vector<uint8_t> framed = f.pending_bytes();
  CHECK(f.owner.lent.live_bytes() == 4 * kBuffer);

  REQUIRE(f.session->submit_reset(f.id, h2::kCancel) == 0);
  const std::vector<uint8_t> after = f.pending_bytes();  // the RST_STREAM is framed: the tail goes
  CHECK(f.owner.released_unsent[f.id] == 4 * kBuffer - 65535);
  CHECK(f.owner.bad_releases == 0);
  // Buffers 1-3 are back with the kernel (and poisoned); buffer 0 is still referenced.
  CHECK(f.pool.available(kBig) == kBuffers - 1);
  REQUIRE(after.size() > framed.size());
  CHECK(std::equal(framed.begin(), framed.end(), after.begin()));

  // What reaches the peer is buffer 0's bytes, every one of them.
  h2::test::FrameParser wire(true);
  wire.keep_data = true;
  wire.add(after.data(), after.size());
  f.session->consume_output(after.size());
  CHECK(wire.data_of[1] == std::vector<uint8_t>(65535, 'a'));
  CHECK(f.owner.lent.empty());
  CHECK(f.owner.lent.live_bytes() == 0);
  CHECK(f.pool.available(kBig) == kBuffers);
}

TEST_CASE("lent buffers moved to the heap: the output reads the copies, the pool has them back") {
  Fixture f;
  f.lend(0, 'x');
  f.lend(1, 'y');
  const std::vector<uint8_t> framed = f.pending_bytes();
  const int32_t id = f.id;
  const size_t moved = f.owner.lent.to_heap([&](const uint8_t* from, const uint8_t* to,
                                                size_t n) { f.session->relocate(id, from, to, n); },
                                            f.owner.give_back);
  CHECK(moved == 2 * kBuffer);
  CHECK(f.owner.lent.heap_bytes() == 2 * kBuffer);
  CHECK(f.owner.lent.pool_bytes() == 0);
  CHECK(f.pool.available(kBig) == kBuffers);  // both back (and poisoned) at once
  CHECK(f.pending_bytes() == framed);         // the framed bytes now come from the copies

  REQUIRE(f.session->submit_reset(f.id, h2::kCancel) == 0);
  const std::vector<uint8_t> after = f.pending_bytes();
  CHECK(std::equal(framed.begin(), framed.end(), after.begin()));
  h2::test::FrameParser wire(true);
  wire.keep_data = true;
  wire.add(after.data(), after.size());
  f.session->consume_output(after.size());
  CHECK(wire.data_of[1] == std::vector<uint8_t>(65535, 'x'));
  CHECK(f.owner.bad_releases == 0);
  CHECK(f.owner.lent.empty());
  CHECK(f.owner.lent.heap_bytes() == 0);
}

TEST_CASE("a release names memory: pieces never lent, or released twice, are refused") {
  std::vector<uint8_t> a(100), b(100);
  std::vector<std::pair<uint8_t, uint16_t>> back;
  LentPayloads::GiveBack give_back = [&](uint8_t cls, uint16_t bid) {
    back.emplace_back(cls, bid);
  };
  LentPayloads lent;
  lent.lend(a.data(), 100, 7, 1);
  lent.lend(b.data(), 100, 8, 1);
  CHECK_FALSE(lent.release({a.data() + 90, 20}, give_back));  // runs past the buffer
  std::vector<uint8_t> other(10);
  CHECK_FALSE(lent.release({other.data(), 10}, give_back));
  // The tail first (an ended stream), then the front (sent): each buffer back once, when empty.
  CHECK(lent.release({b.data(), 100}, give_back));
  CHECK(back == std::vector<std::pair<uint8_t, uint16_t>>{{1, 8}});
  CHECK(lent.release({a.data(), 60}, give_back));
  CHECK_FALSE(lent.release({a.data() + 50, 50}, give_back));  // only 40 bytes still live
  CHECK(lent.release({a.data() + 60, 40}, give_back));
  CHECK(back == std::vector<std::pair<uint8_t, uint16_t>>{{1, 8}, {1, 7}});
  CHECK(lent.empty());
  CHECK(lent.live_bytes() == 0);
}

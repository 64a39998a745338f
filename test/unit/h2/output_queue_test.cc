// OutputQueue on its own: owned and referenced segments, consumption, relocation, compaction and
// frame tracking, without nghttp2.
#include "ringtunnel/h2/output_queue.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

using namespace ringtunnel::h2;

namespace {

using Bytes = std::vector<uint8_t>;
using Span = std::span<const uint8_t>;

Bytes pattern(size_t size, uint8_t seed) {
  Bytes out(size);
  for (size_t i = 0; i < size; ++i)
    out[i] = uint8_t(i * 131 + seed);
  return out;
}

// A 9-byte frame header announcing `length` payload bytes.
Bytes header(uint32_t length, uint8_t type = 0) {
  return {uint8_t(length >> 16), uint8_t(length >> 8), uint8_t(length), type, 0, 0, 0, 0, 1};
}

// A whole control frame (owned bytes) with a `length`-byte payload.
Bytes control(uint32_t length, uint8_t seed) {
  Bytes out = header(length, 6);
  const Bytes payload = pattern(length, seed);
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

void append(OutputQueue& q, const Bytes& b) {
  q.append_owned(b.data(), b.size());
}

Bytes concat(std::initializer_list<const Bytes*> parts) {
  Bytes out;
  for (const Bytes* p : parts)
    out.insert(out.end(), p->begin(), p->end());
  return out;
}

Bytes gather(const OutputQueue& q) {
  Bytes out;
  for (const Span& s : q.segments())
    out.insert(out.end(), s.begin(), s.end());
  return out;
}

struct Report {
  const OutputQueue::Source* source;
  Span piece;
  size_t framed_then;  // source.framed() when reported
};

// Records what consume()/clear() report.
struct Reports {
  std::vector<Report> list;
  auto recorder() {
    return [this](OutputQueue::Source& s, Span piece) { list.push_back({&s, piece, s.framed()}); };
  }
};

bool same(Span a, const uint8_t* data, size_t size) {
  return a.data() == data && a.size() == size;
}

}  // namespace

TEST_CASE("output queue: owned and payload segments come out in order, payloads not copied") {
  OutputQueue q;
  OutputQueue::Source src;
  const Bytes a = pattern(100, 1), b = pattern(50, 2);
  src.lend(a);
  src.lend(b);
  CHECK(src.unframed() == 150);

  const Bytes settings = control(6, 3), hd = header(120), ping = control(8, 4);
  append(q, settings);
  append(q, hd);  // adjacent owned bytes: one segment
  q.append_payload(src, 120);
  append(q, ping);

  const auto segs = q.segments();
  REQUIRE(segs.size() == 4);
  CHECK(segs[0].size() == settings.size() + hd.size());
  CHECK(same(segs[1], a.data(), 100));  // a reference into the lent memory
  CHECK(same(segs[2], b.data(), 20));
  CHECK(segs[3].size() == ping.size());
  const Bytes b20(b.begin(), b.begin() + 20);
  CHECK(gather(q) == concat({&settings, &hd, &a, &b20, &ping}));
  CHECK(q.bytes() == settings.size() + hd.size() + 120 + ping.size());
  CHECK(src.framed() == 120);
  CHECK(src.unframed() == 30);
  CHECK(q.at_frame_boundary());

  // The rest of b, in a second frame after the PING.
  const Bytes hd2 = header(30);
  append(q, hd2);
  q.append_payload(src, 30);
  CHECK(src.unframed() == 0);
  CHECK(src.framed() == 150);
  REQUIRE(q.segments().size() == 5);  // the PING and the header after it: one owned segment
  CHECK(q.segments()[3].size() == ping.size() + hd2.size());
  CHECK(same(q.segments()[4], b.data() + 20, 30));
}

TEST_CASE("output queue: consume in the middle of a segment reports exactly the pieces passed") {
  OutputQueue q;
  OutputQueue::Source src;
  const Bytes a = pattern(100, 1), b = pattern(60, 2);
  src.lend(a);
  src.lend(b);
  const Bytes hd = header(160), tail = control(4, 9);
  append(q, hd);
  q.append_payload(src, 160);
  append(q, tail);
  const Bytes all = gather(q);

  Reports r;
  q.consume(5, r.recorder());  // inside the frame header: nothing to report
  CHECK(r.list.empty());
  CHECK(q.bytes() == all.size() - 5);
  CHECK(gather(q) == Bytes(all.begin() + 5, all.end()));

  q.consume(4 + 30, r.recorder());  // the rest of the header and 30 payload bytes
  REQUIRE(r.list.size() == 1);
  CHECK(r.list[0].source == &src);
  CHECK(same(r.list[0].piece, a.data(), 30));
  CHECK(r.list[0].framed_then == 130);
  CHECK(same(q.segments()[0], a.data() + 30, 70));

  q.consume(70 + 10, r.recorder());  // across a segment boundary
  REQUIRE(r.list.size() == 3);
  CHECK(same(r.list[1].piece, a.data() + 30, 70));
  CHECK(same(r.list[2].piece, b.data(), 10));
  CHECK(src.framed() == 50);

  // A partly consumed owned segment survives the owned buffer growing (and moving).
  q.consume(50 + 3, r.recorder());
  REQUIRE(r.list.size() == 4);
  CHECK(same(r.list[3].piece, b.data() + 10, 50));
  CHECK(r.list[3].framed_then == 0);  // the last framed byte: the report sees nothing left
  const Bytes big = control(200000, 5);
  append(q, big);
  const Bytes rest(tail.begin() + 3, tail.end());
  CHECK(gather(q) == concat({&rest, &big}));

  q.consume(q.bytes(), r.recorder());
  CHECK(r.list.size() == 4);
  CHECK(q.empty());
  CHECK(q.bytes() == 0);
  CHECK(q.segments().empty());
}

TEST_CASE("output queue: every lent byte is reported once, in order, whatever the consume sizes") {
  OutputQueue q;
  OutputQueue::Source s1, s2;
  std::vector<Bytes> lent;
  for (int i = 0; i < 12; ++i)
    lent.push_back(pattern(size_t(37 * (i + 1)), uint8_t(i)));
  for (int i = 0; i < 12; ++i)
    (i % 2 ? s2 : s1).lend(lent[size_t(i)]);
  // Frames of uneven sizes, the two sources interleaved, control frames in between.
  Bytes expected;
  for (int round = 0; s1.unframed() + s2.unframed() > 0; ++round) {
    OutputQueue::Source& s = round % 2 ? s2 : s1;
    const size_t n = std::min<size_t>(s.unframed(), size_t(90 + 41 * round));
    if (n == 0) continue;
    const Bytes hd = header(uint32_t(n));
    append(q, hd);
    expected.insert(expected.end(), hd.begin(), hd.end());
    const size_t first = q.segments().size();
    q.append_payload(s, n);
    for (size_t i = first; i < q.segments().size(); ++i)
      expected.insert(expected.end(), q.segments()[i].begin(), q.segments()[i].end());
    const Bytes c = control(uint32_t(round % 3), uint8_t(round));
    append(q, c);
    expected.insert(expected.end(), c.begin(), c.end());
  }
  CHECK(gather(q) == expected);

  Reports r;
  Bytes out;
  for (size_t step = 1; !q.empty(); step = step * 3 % 97 + 1) {
    const Bytes front = gather(q);
    const size_t n = std::min(step, q.bytes());
    out.insert(out.end(), front.begin(), front.begin() + ptrdiff_t(n));
    q.consume(n, r.recorder());
  }
  CHECK(out == expected);
  CHECK(s1.framed() == 0);
  CHECK(s2.framed() == 0);

  // Per source, the reports tile the lent spans exactly, front to back.
  for (const OutputQueue::Source* s : {&s1, &s2}) {
    size_t next = s == &s1 ? 0 : 1, at = 0;
    for (const Report& rep : r.list) {
      if (rep.source != s) continue;
      REQUIRE(next < lent.size());
      CHECK(rep.piece.data() == lent[next].data() + at);
      at += rep.piece.size();
      REQUIRE(at <= lent[next].size());
      if (at == lent[next].size()) next += 2, at = 0;
    }
    CHECK(next >= lent.size());
  }
}

TEST_CASE("output queue: relocate re-points framed and unframed references of one source") {
  OutputQueue q;
  OutputQueue::Source src, other;
  Bytes a = pattern(100, 1);
  const Bytes o = pattern(40, 2);
  src.lend(a);
  other.lend(o);
  const Bytes hd1 = header(60), hd2 = header(40);
  append(q, hd1);
  q.append_payload(src, 60);  // 40 bytes of a stay unframed
  append(q, hd2);
  q.append_payload(other, 40);

  Reports r;
  q.consume(9 + 25, r.recorder());  // a[0, 25) passed, a[25, 60) framed, a[60, 100) unframed
  REQUIRE(r.list.size() == 1);
  CHECK(same(r.list[0].piece, a.data(), 25));

  Bytes copy = a;  // the owner moves a, then scribbles over the old memory
  q.relocate(src, a.data(), copy.data(), a.size());
  std::memset(a.data(), 0xee, a.size());
  CHECK(same(q.segments()[0], copy.data() + 25, 35));
  CHECK(same(q.segments()[2], o.data(), 40));  // another source's references stay

  // A range that does not cover the references moves nothing.
  Bytes elsewhere(100);
  q.relocate(src, copy.data() + 60, elsewhere.data(), 40);  // only the unframed tail
  q.relocate(other, copy.data(), elsewhere.data(), 100);    // not other's memory
  CHECK(same(q.segments()[0], copy.data() + 25, 35));
  CHECK(same(q.segments()[2], o.data(), 40));

  q.consume(35, r.recorder());
  REQUIRE(r.list.size() == 2);
  CHECK(same(r.list[1].piece, copy.data() + 25, 35));

  std::vector<Span> dropped;
  src.drop_unframed([&](Span piece) { dropped.push_back(piece); });
  REQUIRE(dropped.size() == 1);
  CHECK(same(dropped[0], elsewhere.data(), 40));  // moved by the second relocate
  CHECK(src.unframed() == 0);
}

TEST_CASE("output queue: a report may relocate the segments still queued") {
  OutputQueue q;
  OutputQueue::Source src;
  const Bytes a = pattern(64, 1), b = pattern(64, 2);
  src.lend(a);
  src.lend(b);
  const Bytes hd = header(128);
  append(q, hd);
  q.append_payload(src, 128);
  Bytes copy = b;
  std::vector<Span> passed;
  q.consume(q.bytes(), [&](OutputQueue::Source& s, Span piece) {
    passed.push_back(piece);
    if (passed.size() == 1) q.relocate(s, b.data(), copy.data(), b.size());
  });
  REQUIRE(passed.size() == 2);
  CHECK(same(passed[0], a.data(), 64));
  CHECK(same(passed[1], copy.data(), 64));
}

TEST_CASE("output queue: clear and drop_unframed report everything left, in order") {
  OutputQueue q;
  OutputQueue::Source s1, s2;
  const Bytes a = pattern(30, 1), b = pattern(30, 2), c = pattern(30, 3);
  s1.lend(a);
  s1.lend(b);
  s2.lend(c);
  const Bytes hd1 = header(45), hd2 = header(30);
  append(q, hd1);
  q.append_payload(s1, 45);
  append(q, hd2);
  q.append_payload(s2, 30);
  const Bytes partial = header(100);
  q.append_owned(partial.data(), 4);  // mid-header: not at a frame boundary
  CHECK_FALSE(q.at_frame_boundary());

  Reports r;
  q.consume(9 + 10, r.recorder());
  q.clear(r.recorder());
  REQUIRE(r.list.size() == 4);
  CHECK(same(r.list[0].piece, a.data(), 10));
  CHECK(same(r.list[1].piece, a.data() + 10, 20));
  CHECK(r.list[1].framed_then == 15);
  CHECK(same(r.list[2].piece, b.data(), 15));
  CHECK(r.list[2].framed_then == 0);
  CHECK(r.list[3].source == &s2);
  CHECK(same(r.list[3].piece, c.data(), 30));
  CHECK(q.empty());
  CHECK(q.bytes() == 0);
  CHECK(q.at_frame_boundary());  // clear forgets the frame in progress

  std::vector<Span> dropped;
  s1.drop_unframed([&](Span piece) { dropped.push_back(piece); });
  REQUIRE(dropped.size() == 1);
  CHECK(same(dropped[0], b.data() + 15, 15));
  CHECK(s1.unframed() == 0);
  CHECK(s1.framed() == 0);
}

TEST_CASE("output queue: frame boundaries across split headers, payloads and consumption") {
  OutputQueue q;
  CHECK(q.at_frame_boundary());
  const Bytes hd = header(5);
  q.append_owned(hd.data(), 4);
  CHECK_FALSE(q.at_frame_boundary());
  q.append_owned(hd.data() + 4, 5);  // the header completes: 5 payload bytes expected
  CHECK_FALSE(q.at_frame_boundary());
  const Bytes payload = pattern(5, 1);
  q.append_owned(payload.data(), 2);
  CHECK_FALSE(q.at_frame_boundary());
  q.consume(q.bytes(), [](OutputQueue::Source&, Span) {});  // emptied mid-frame
  CHECK(q.empty());
  CHECK_FALSE(q.at_frame_boundary());  // consumption does not change where the frames stand
  q.append_owned(payload.data() + 2, 3);
  CHECK(q.at_frame_boundary());

  // An empty frame ends with its header; one append may hold several frames and a part.
  const Bytes empty = header(0);
  append(q, empty);
  CHECK(q.at_frame_boundary());
  const Bytes two = concat({&empty, &hd, &payload});
  q.append_owned(two.data(), two.size() - 1);
  CHECK_FALSE(q.at_frame_boundary());
  q.append_owned(two.data() + two.size() - 1, 1);
  CHECK(q.at_frame_boundary());

  // The length is 24 bits.
  for (const uint32_t length : {300u, 70000u}) {
    const Bytes big = control(length, 3);
    q.append_owned(big.data(), big.size() - 1);
    CHECK_FALSE(q.at_frame_boundary());
    q.append_owned(big.data() + big.size() - 1, 1);
    CHECK(q.at_frame_boundary());
  }

  // A payload from a source completes a frame just as owned bytes do.
  OutputQueue::Source src;
  const Bytes a = pattern(20, 2);
  src.lend(a);
  const Bytes hd20 = header(20);
  append(q, hd20);
  q.append_payload(src, 12);
  CHECK_FALSE(q.at_frame_boundary());
  q.append_payload(src, 8);
  CHECK(q.at_frame_boundary());
}

TEST_CASE("output queue: long runs are compacted and stay byte-exact") {
  OutputQueue q;
  OutputQueue::Source src;
  Reports r;
  std::vector<Bytes> lent;
  Bytes expected;
  // 600 small frames, owned and referenced in turn: many dead segment slots once consumed.
  for (int i = 0; i < 600; ++i) {
    lent.push_back(pattern(16, uint8_t(i)));
    src.lend(lent.back());
    const Bytes hd = header(16), c = control(3, uint8_t(i));
    append(q, hd);
    q.append_payload(src, 16);
    append(q, c);
    expected.insert(expected.end(), hd.begin(), hd.end());
    expected.insert(expected.end(), lent.back().begin(), lent.back().end());
    expected.insert(expected.end(), c.begin(), c.end());
  }
  // Then 200 KiB of owned control frames: dead owned bytes to move down once consumed.
  for (int i = 0; i < 50; ++i) {
    const Bytes c = control(4096, uint8_t(i));
    append(q, c);
    expected.insert(expected.end(), c.begin(), c.end());
  }
  CHECK(gather(q) == expected);

  size_t done = 0;
  bool moved = false;
  for (int step = 0; !q.empty(); ++step) {
    const size_t n = std::min<size_t>(q.bytes(), 7919);  // a prime: cuts everywhere
    const uint8_t* last_owned = q.segments().back().data();
    q.consume(n, r.recorder());
    done += n;
    // Only compaction moves owned bytes during consume() (nothing is appended).
    if (!q.empty() && q.segments().back().data() != last_owned) moved = true;
    if (step < 40) {  // appends land where compaction freed room
      const Bytes c = control(1000, uint8_t(step));
      append(q, c);
      expected.insert(expected.end(), c.begin(), c.end());
    }
    CHECK(gather(q) == Bytes(expected.begin() + ptrdiff_t(done), expected.end()));
    CHECK(q.bytes() == expected.size() - done);
  }
  CHECK(moved);  // the live owned bytes were moved down at least once
  CHECK(r.list.size() >= 600);
  size_t i = 0, at = 0;
  for (const Report& rep : r.list) {
    REQUIRE(i < lent.size());
    CHECK(rep.piece.data() == lent[i].data() + at);
    at += rep.piece.size();
    if (at == lent[i].size()) ++i, at = 0;
  }
  CHECK(i == lent.size());
}

// The ring and the buffer pool together, on a socketpair: what the relay relies on.
#include "ringtunnel/ring/buffer_pool.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include "ringtunnel/ring/ring.h"

using namespace ringtunnel::ring;

namespace {

struct Pair {
  int fd[2];
  Pair() { REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) == 0); }
  ~Pair() {
    close(fd[0]);
    close(fd[1]);
  }
};

std::vector<io_uring_cqe> wait_some(Ring& ring) {
  ring.submit_and_wait(std::nullopt);
  std::vector<io_uring_cqe> out;
  ring.drain_completions([&](const io_uring_cqe& c) { out.push_back(c); });
  return out;
}

}  // namespace

TEST_CASE("a receive takes a buffer of its class, and the buffer comes back after publish") {
  Ring ring;
  REQUIRE(ring.init({64, false}) == "");
  BufferPool pool;
  REQUIRE(pool.init(ring.raw(), {{64, 256, 1024}, {2, 2, 2}}) == "");
  CHECK(pool.available(0) == 2);

  Pair p;
  const std::string msg(100, 'x');  // more than class 0 holds: it takes two reads
  REQUIRE(write(p.fd[0], msg.data(), msg.size()) == ssize_t(msg.size()));

  std::string got;
  for (int round = 0; round < 2; ++round) {
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_recv(s, p.fd[1], nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = pool.group(0);
    const auto cqes = wait_some(ring);
    REQUIRE(cqes.size() == 1);
    REQUIRE(cqes[0].res > 0);
    REQUIRE((cqes[0].flags & IORING_CQE_F_BUFFER));
    const auto bid = uint16_t(cqes[0].flags >> IORING_CQE_BUFFER_SHIFT);
    pool.taken(0);
    got.append(reinterpret_cast<char*>(pool.data(0, bid)), size_t(cqes[0].res));
    if (round == 0) CHECK(cqes[0].res == 64);
  }
  CHECK(got == msg);
  CHECK(pool.available(0) == 0);

  SUBCASE("with the class empty the kernel says ENOBUFS") {
    REQUIRE(write(p.fd[0], "y", 1) == 1);
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_recv(s, p.fd[1], nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = pool.group(0);
    const auto cqes = wait_some(ring);
    REQUIRE(cqes.size() == 1);
    CHECK(cqes[0].res == -ENOBUFS);
  }
  SUBCASE("buffers given back serve the next receive") {
    pool.give_back(0, 0);
    pool.give_back(0, 1);
    CHECK(pool.publish());
    CHECK_FALSE(pool.publish());
    CHECK(pool.available(0) == 2);
    REQUIRE(write(p.fd[0], "z", 1) == 1);
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_recv(s, p.fd[1], nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = pool.group(0);
    const auto cqes = wait_some(ring);
    REQUIRE(cqes.size() == 1);
    CHECK(cqes[0].res == 1);
  }
}

TEST_CASE("classes are disjoint regions of one mapping") {
  Ring ring;
  REQUIRE(ring.init({8, false}) == "");
  BufferPool pool;
  REQUIRE(pool.init(ring.raw(), {{64, 256, 1024}, {4, 2, 1}}) == "");
  CHECK(pool.bytes() == 64 * 4 + 256 * 2 + 1024);
  CHECK(pool.data(0, 0) == pool.base());
  CHECK(pool.data(1, 0) == pool.base() + 256);
  CHECK(pool.data(2, 0) == pool.base() + 256 + 512);
  CHECK(pool.data(2, 0) + 1024 == pool.base() + pool.bytes());
}

TEST_CASE("a receive takes its class, else the nearest smaller, else the nearest larger") {
  Ring ring;
  REQUIRE(ring.init({8, false}) == "");
  BufferPool pool;
  REQUIRE(pool.init(ring.raw(), {{64, 256, 1024}, {1, 1, 1}}) == "");
  CHECK(pool.class_for(1) == 1);
  pool.taken(1);
  CHECK(pool.class_for(1) == 0);
  pool.taken(0);
  CHECK(pool.class_for(1) == 2);
  pool.taken(2);
  CHECK(pool.class_for(1) == -1);
  pool.give_back(2, 0);
  CHECK(pool.class_for(0) == 2);
}

TEST_CASE("a pool set up without a ring has the same buffer rings, registered with no kernel") {
  BufferPool pool;
  REQUIRE(pool.init(nullptr, {{64, 256, 1024}, {2, 8, 4}}, 5) == "");
  CHECK(pool.ready());
  CHECK_FALSE(pool.registered());
  for (uint8_t c = 0; c < kBufferClasses; ++c) {
    const io_uring_buf_ring* br = pool.buf_ring(c);
    REQUIRE(br != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(br) % 4096 == 0);  // liburing's alignment for a buf ring
    CHECK(br->tail == pool.count(c));                    // all published
    for (uint16_t b = 0; b < pool.count(c); ++b) {
      CHECK(br->bufs[b].bid == b);
      CHECK(br->bufs[b].addr == reinterpret_cast<uint64_t>(pool.data(c, b)));
      CHECK(br->bufs[b].len == pool.size(c));
    }
    CHECK(pool.class_of_group(pool.group(c)) == c);
  }
  CHECK(pool.class_of_group(4) == -1);
  CHECK(pool.class_of_group(8) == -1);
  pool.taken(1);
  pool.give_back(1, 3);
  CHECK(pool.publish());
  CHECK(pool.buf_ring(1)->tail == 9);
  CHECK(pool.buf_ring(1)->bufs[0].bid == 3);  // slot 8 & 7
}

namespace {

// The kernel's side of one pool's buffer rings, set up without a ring: a receive takes the buffer
// at bufs[head & mask] while head != the published tail.
struct FakeKernel {
  const BufferPool& pool;
  std::array<uint16_t, kBufferClasses> head{};
  // The bid a receive on class `cls` gets; -1 for -ENOBUFS.
  int take(uint8_t cls) {
    const io_uring_buf_ring* br = pool.buf_ring(cls);
    if (__atomic_load_n(&br->tail, __ATOMIC_ACQUIRE) == head[cls]) return -1;
    const io_uring_buf& b = br->bufs[head[cls]++ & (pool.count(cls) - 1)];
    CHECK(b.addr == reinterpret_cast<uint64_t>(pool.data(cls, b.bid)));
    CHECK(b.len == pool.size(cls));
    return b.bid;
  }
};

}  // namespace

TEST_CASE("a pool with growth steps starts small and grows when a class runs low") {
  BufferPool pool;
  const BufferPoolSpec spec{{64, 256, 1024}, {16, 8, 4}, {4, 2, 1}};
  REQUIRE(pool.init(nullptr, spec) == "");
  for (uint8_t c = 0; c < kBufferClasses; ++c) {
    CHECK(pool.provided(c) == spec.steps[c]);
    CHECK(pool.available(c) == spec.steps[c]);
    CHECK(pool.headroom(c) == spec.counts[c]);
    CHECK(pool.buf_ring(c)->tail == spec.steps[c]);  // the first step only is published
  }
  CHECK(pool.bytes() == 64 * 16 + 256 * 8 + 1024 * 4);
  CHECK(pool.provided_bytes() == 64 * 4 + 256 * 2 + 1024);

  FakeKernel kernel{pool};
  std::array<std::set<int>, kBufferClasses> taken;
  // The worker's loop: every completion takes a buffer, then the loop publishes. The pool must
  // stay ahead of the receives until the class is fully grown, and never pass its count.
  for (uint8_t c = 0; c < kBufferClasses; ++c) {
    for (uint32_t i = 0; i < spec.counts[c]; ++i) {
      const int bid = kernel.take(c);
      REQUIRE_MESSAGE(bid >= 0, "class ", int(c), " ran dry after ", i, " buffers");
      CHECK(bid < int(spec.counts[c]));
      CHECK(taken[c].insert(bid).second);  // distinct
      pool.taken(c);
      pool.publish();
      CHECK(pool.provided(c) <= spec.counts[c]);
      CHECK(pool.buf_ring(c)->tail == pool.provided(c));
    }
    CHECK(pool.provided(c) == spec.counts[c]);
    CHECK(pool.available(c) == 0);
    CHECK(kernel.take(c) == -1);  // -ENOBUFS: the class is at its count and stays there
    pool.ran_dry(c);
    CHECK(pool.grow(c) == 0);
    CHECK(pool.provided(c) == spec.counts[c]);
    CHECK_FALSE(pool.publish());
    CHECK(pool.counters().no_buffers[c].value() == 1);
  }
  CHECK(pool.provided_bytes() == pool.bytes());

  // Every buffer of every class is its own region of the mapping.
  std::vector<std::pair<const uint8_t*, size_t>> regions;
  for (uint8_t c = 0; c < kBufferClasses; ++c)
    for (int bid : taken[c])
      regions.emplace_back(pool.data(c, uint16_t(bid)), pool.size(c));
  std::sort(regions.begin(), regions.end());
  CHECK(regions.front().first == pool.base());
  for (size_t i = 0; i + 1 < regions.size(); ++i)
    CHECK(regions[i].first + regions[i].second == regions[i + 1].first);
  CHECK(regions.back().first + regions.back().second == pool.base() + pool.bytes());

  // Given back, the buffers serve receives again without growing.
  pool.give_back(2, 3);
  CHECK(pool.publish());
  CHECK(kernel.take(2) == 3);
}

TEST_CASE("growth fills the mapping from the front: the provided buffers are one prefix") {
  BufferPool pool;
  REQUIRE(pool.init(nullptr, {{64, 256, 1024}, {8, 8, 8}, {2, 2, 2}}) == "");
  // Grown out of class order, every provided buffer still lies below provided_bytes().
  for (uint8_t c : {uint8_t(2), uint8_t(0), uint8_t(2), uint8_t(1), uint8_t(0)}) {
    CHECK(pool.grow(c) > 0);
    for (uint8_t k = 0; k < kBufferClasses; ++k)
      for (uint16_t b = 0; b < pool.provided(k); ++b)
        CHECK(pool.data(k, b) + pool.size(k) <= pool.base() + pool.provided_bytes());
  }
  CHECK(pool.provided(2) == 6);  // grown twice from 2, a step at a time (none of it taken)
  CHECK(pool.grow(2) == 2);
  CHECK(pool.grow(2) == 0);  // at its count
  CHECK(pool.provided(2) == 8);
  CHECK(pool.provided_bytes() == pool.provided(0) * 64 + pool.provided(1) * 256 + 8 * 1024);
}

TEST_CASE("the workers' growth steps: about 256 KiB each, at most 64 steps, at most the count") {
  CHECK(growth_steps({1024, 16384, 262144}, {1024, 256, 64}) ==
        std::array<uint32_t, kBufferClasses>{256, 16, 1});
  CHECK(growth_steps({64, 1024, 16u << 20}, {32768, 4, 32768}) ==
        std::array<uint32_t, kBufferClasses>{4096, 4, 512});
  BufferPool pool;
  const BufferSizes sizes{1024, 16384, 262144};
  const std::array<uint32_t, kBufferClasses> counts{1024, 256, 64};
  REQUIRE(pool.init(nullptr, {sizes, counts, growth_steps(sizes, counts)}) == "");
  CHECK(pool.provided_bytes() == 3 * 256 * 1024);
}

TEST_CASE("bad growth steps are refused with the class and the reason") {
  BufferPool a, b, c;
  CHECK(a.init(nullptr, {{64, 256, 1024}, {8, 8, 8}, {3, 2, 2}}) ==
        "buffer class 0: a step of 3 of 8 buffers is not a power of two from 1/64 of them to all");
  CHECK(b.init(nullptr, {{64, 256, 1024}, {8, 8, 8}, {2, 16, 2}}).find("buffer class 1") == 0);
  CHECK(c.init(nullptr, {{64, 256, 1024}, {8, 8, 256}, {2, 2, 2}}).find("buffer class 2") == 0);
}

TEST_CASE("the fixed buffer grows with the pool: a gathered fixed send from a new buffer works") {
  Ring ring;
  REQUIRE(ring.init({8, false}) == "");
  if (!ring.opcode_supported(kOpWritevFixed)) return;  // before Linux 6.15
  BufferPool pool;
  // Whole pages, so the new buffers lie in pages the first registration did not cover.
  REQUIRE(pool.init(ring.raw(), {{4096, 8192, 16384}, {8, 2, 1}, {2, 1, 1}}) == "");
  REQUIRE(pool.register_fixed() == 0);
  CHECK(pool.fixed_bytes() == pool.provided_bytes());
  CHECK(pool.fixed_bytes() == 2 * 4096 + 8192 + 16384);
  CHECK(pool.grow(0) == 2);
  CHECK(pool.grow(1) == 1);
  CHECK(pool.fixed_bytes() == pool.provided_bytes());
  CHECK(pool.fixed_bytes() == 4 * 4096 + 2 * 8192 + 16384);

  Pair p;
  // The last buffers added, from two classes: one WRITEV_FIXED gathers both.
  memcpy(pool.data(0, 3), "grown", 5);
  memcpy(pool.data(1, 1), "+pool", 5);
  CHECK(pool.in_fixed(pool.data(0, 3), 4096));
  CHECK(pool.in_fixed(pool.data(1, 1), 8192));
  iovec iov[2] = {{pool.data(0, 3), 5}, {pool.data(1, 1), 5}};
  io_uring_sqe* s = ring.sqe();
  io_uring_prep_rw(kOpWritevFixed, s, p.fd[0], iov, 2, 0);
  s->buf_index = 0;
  const auto cqes = wait_some(ring);
  REQUIRE(cqes.size() == 1);
  CHECK(cqes[0].res == 10);
  char got[16] = {};
  CHECK(read(p.fd[1], got, sizeof got) == 10);
  CHECK(std::string(got) == "grown+pool");
  pool.unregister_fixed();
  CHECK(pool.fixed_bytes() == 0);
  CHECK_FALSE(pool.in_fixed(pool.data(0, 0), 1));
}

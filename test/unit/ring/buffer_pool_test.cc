// The ring and the buffer pool together, on a socketpair: what the relay relies on.
#include "ringtunnel/ring/buffer_pool.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
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

// The fake ring of test/unit/support/: what tests of proxy objects will rely on it to do as the
// kernel does.
#include "support/fake_ring.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <doctest/doctest.h>

using ringtunnel::ring::BufferPool;
using ringtunnel::test::FakeSubmitter;
using ringtunnel::test::KernelBuffers;

namespace {

struct Cqe {
  uint64_t tag;
  int res;
  unsigned flags;
  bool operator==(const Cqe&) const = default;
};

// The completions the sink received, in order.
struct Sink {
  std::vector<Cqe> got;
  explicit Sink(FakeSubmitter& ring) {
    ring.set_sink([this](const io_uring_cqe& c) { got.push_back({c.user_data, c.res, c.flags}); });
  }
};

io_uring_sqe* recv_on(FakeSubmitter& ring, int fd, uint64_t tag, bool fixed = false) {
  io_uring_sqe* s = ring.sqe();
  io_uring_prep_recv(s, fd, nullptr, 0, 0);
  if (fixed) s->flags |= IOSQE_FIXED_FILE;
  io_uring_sqe_set_data64(s, tag);
  return s;
}

io_uring_sqe* cancel_fd(FakeSubmitter& ring, int fd, unsigned flags, uint64_t tag) {
  io_uring_sqe* s = ring.sqe();
  io_uring_prep_cancel_fd(s, fd, flags);
  io_uring_sqe_set_data64(s, tag);
  return s;
}

// A connect on `fd` linked to a link timeout (tags `tag` and `tag + 1`), as the relays submit it.
io_uring_sqe* linked_connect(FakeSubmitter& ring, int fd, uint64_t tag) {
  static __kernel_timespec timeout{1, 0};
  ring.reserve(2);
  io_uring_sqe* s = ring.sqe();
  io_uring_prep_connect(s, fd, nullptr, 0);
  s->flags |= IOSQE_IO_LINK;
  io_uring_sqe_set_data64(s, tag);
  io_uring_sqe* t = ring.sqe();
  io_uring_prep_link_timeout(t, &timeout, 0);
  io_uring_sqe_set_data64(t, tag + 1);
  return s;
}

bool fd_open(int fd) {
  return fcntl(fd, F_GETFD) >= 0;
}

}  // namespace

TEST_CASE("the fake hands out zeroed SQEs in order, finds the open ones and records everything") {
  FakeSubmitter ring;
  Sink sink(ring);
  io_uring_sqe* a = recv_on(ring, 5, 10);
  io_uring_sqe* b = ring.sqe();
  CHECK(b->opcode == 0);
  CHECK(b->user_data == 0);
  io_uring_prep_send(b, 6, "x", 1, 0);
  io_uring_sqe_set_data64(b, 11);
  io_uring_sqe* c = recv_on(ring, 7, 12);

  REQUIRE(ring.submitted().size() == 3);
  CHECK(&ring.submitted()[0] == a);
  CHECK(ring.submitted()[1].opcode == IORING_OP_SEND);
  CHECK(ring.open() == std::vector<io_uring_sqe*>{a, b, c});
  CHECK(ring.find_op(IORING_OP_RECV) == a);  // the oldest of two
  CHECK(ring.find_tag(11) == b);
  CHECK(ring.find([](const io_uring_sqe& s) { return s.fd == 7; }) == c);
  CHECK(ring.find_tag(99) == nullptr);

  ring.complete(a, 3);
  CHECK(sink.got == std::vector<Cqe>{{10, 3, 0}});
  CHECK(ring.find_op(IORING_OP_RECV) == c);  // a is done
  CHECK_FALSE(ring.is_open(a));
  CHECK(ring.open() == std::vector<io_uring_sqe*>{b, c});
  CHECK_THROWS_AS(ring.complete(a, 0), std::logic_error);  // no second completion
  REQUIRE(ring.completions().size() == 1);
  CHECK(ring.completions()[0].user_data == 10);
}

TEST_CASE("a completion with F_MORE keeps a multishot operation open") {
  FakeSubmitter ring;
  Sink sink(ring);
  io_uring_sqe* s = recv_on(ring, 5, 1);
  ring.complete(s, 100, IORING_CQE_F_MORE);
  ring.complete(s, 50, IORING_CQE_F_MORE);
  CHECK(ring.is_open(s));
  ring.complete(s, 0);
  CHECK_FALSE(ring.is_open(s));
  CHECK(sink.got ==
        std::vector<Cqe>{{1, 100, IORING_CQE_F_MORE}, {1, 50, IORING_CQE_F_MORE}, {1, 0, 0}});
}

TEST_CASE("the sink may submit and complete more while it handles a completion") {
  FakeSubmitter ring;
  std::vector<uint64_t> got;
  io_uring_sqe* first = recv_on(ring, 5, 1);
  ring.set_sink([&](const io_uring_cqe& c) {
    got.push_back(c.user_data);
    if (c.user_data == 1) {
      for (uint64_t t = 2; t < 40; ++t)
        recv_on(ring, 5, t);  // the deque grows
      ring.complete(ring.find_tag(2), 0);
    }
  });
  ring.complete(first, 0);
  CHECK(got == std::vector<uint64_t>{1, 2});
  CHECK(first->user_data == 1);  // still a valid address
  CHECK(ring.open().size() == 37);
}

TEST_CASE("a cancel on an fd: the cancel's count first, then the fd's operations -ECANCELED") {
  FakeSubmitter ring;
  Sink sink(ring);
  io_uring_sqe* plain = recv_on(ring, 5, 1);
  io_uring_sqe* fixed = recv_on(ring, 5, 2, /*fixed=*/true);  // slot 5, another socket
  io_uring_sqe* other = recv_on(ring, 6, 3);
  linked_connect(ring, 5, 4);  // tags 4 and 5 (its link timeout)

  SUBCASE("plain fd, all") {
    io_uring_sqe* c = cancel_fd(ring, 5, IORING_ASYNC_CANCEL_ALL, 9);
    CHECK(ring.complete_cancel_fd(c) == 2);
    CHECK(sink.got == std::vector<Cqe>{{9, 2, 0},
                                       {1, -ECANCELED, 0},
                                       {4, -ECANCELED, 0},
                                       {5, -ECANCELED, 0}});  // the link timeout goes with it
    CHECK(ring.open() == std::vector<io_uring_sqe*>{fixed, other});
  }
  SUBCASE("direct descriptor, all") {
    io_uring_sqe* c = cancel_fd(ring, 5, IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED, 9);
    CHECK(ring.complete_cancel_fd(c) == 1);
    CHECK(sink.got == std::vector<Cqe>{{9, 1, 0}, {2, -ECANCELED, 0}});
    CHECK(ring.is_open(plain));
  }
  SUBCASE("the other order") {
    io_uring_sqe* c = cancel_fd(ring, 6, IORING_ASYNC_CANCEL_ALL, 9);
    ring.complete_cancel_fd(c, FakeSubmitter::CancelOrder::cancelled_first);
    CHECK(sink.got == std::vector<Cqe>{{3, -ECANCELED, 0}, {9, 1, 0}});
  }
  SUBCASE("without ALL: one operation and 0, or -ENOENT") {
    io_uring_sqe* c = cancel_fd(ring, 5, 0, 9);
    CHECK(ring.complete_cancel_fd(c) == 1);
    CHECK(sink.got == std::vector<Cqe>{{9, 0, 0}, {1, -ECANCELED, 0}});
    c = cancel_fd(ring, 7, 0, 10);
    CHECK(ring.complete_cancel_fd(c) == 0);
    CHECK(sink.got.back() == Cqe{10, -ENOENT, 0});
  }
  SUBCASE("ALL with nothing to cancel says 0") {
    io_uring_sqe* c = cancel_fd(ring, 8, IORING_ASYNC_CANCEL_ALL, 9);
    CHECK(ring.complete_cancel_fd(c) == 0);
    CHECK(sink.got == std::vector<Cqe>{{9, 0, 0}});
  }
  SUBCASE("by user_data") {
    io_uring_sqe* c = ring.sqe();
    io_uring_prep_cancel64(c, 3, 0);
    io_uring_sqe_set_data64(c, 9);
    CHECK_THROWS_AS(ring.complete_cancel_fd(c), std::logic_error);  // not keyed on an fd
    CHECK(ring.complete_cancel(c) == 1);
    CHECK(sink.got == std::vector<Cqe>{{9, 0, 0}, {3, -ECANCELED, 0}});
  }
}

TEST_CASE("a linked connect completes with its link timeout, in the kernel's order") {
  FakeSubmitter ring;
  Sink sink(ring);
  io_uring_sqe* connect = linked_connect(ring, 5, 1);
  CHECK(ring.reservations() == std::vector<unsigned>{2});
  SUBCASE("connected: the timeout is disarmed") {
    ring.complete_linked(connect, 0);
    CHECK(sink.got == std::vector<Cqe>{{1, 0, 0}, {2, -ECANCELED, 0}});
  }
  SUBCASE("refused: the same, with the connect's error") {
    ring.complete_linked(connect, -ECONNREFUSED);
    CHECK(sink.got == std::vector<Cqe>{{1, -ECONNREFUSED, 0}, {2, -ECANCELED, 0}});
  }
  SUBCASE("the timeout fires and cancels the connect") {
    ring.complete_linked(connect, -ETIME);
    CHECK(sink.got == std::vector<Cqe>{{2, -ETIME, 0}, {1, -ECANCELED, 0}});
  }
  CHECK(ring.open().empty());
  CHECK_THROWS_AS(ring.complete_linked(recv_on(ring, 5, 3), 0), std::logic_error);  // no link
}

TEST_CASE("completing a plain close closes the fd; a direct close leaves fds alone") {
  FakeSubmitter ring;
  const int fd = eventfd(0, EFD_CLOEXEC);
  REQUIRE(fd >= 0);
  io_uring_sqe* direct = ring.sqe();
  io_uring_prep_close_direct(direct, unsigned(fd));  // a slot number that is also our fd
  ring.complete(direct, 0);
  CHECK(fd_open(fd));
  io_uring_sqe* plain = ring.sqe();
  io_uring_prep_close(plain, fd);
  CHECK(fd_open(fd));  // not before the completion
  ring.complete(plain, 0);
  CHECK_FALSE(fd_open(fd));
}

TEST_CASE("the fake's file table updates are recorded; their result is the test's") {
  ringtunnel::ring::RingFeatures f;
  f.fixed_files = true;
  f.file_slots = 64;
  FakeSubmitter ring(f);
  const ringtunnel::ring::Submitter& seam = ring;
  CHECK(seam.features().file_slots == 64);
  const int fds[2] = {10, 11};
  CHECK(ring.update_files(4, fds));
  ring.set_update_files_result(false);
  CHECK_FALSE(ring.update_files(6, fds));
  REQUIRE(ring.file_updates().size() == 2);
  CHECK(ring.file_updates()[0].slot == 4);
  CHECK(ring.file_updates()[0].fds == std::vector<int>{10, 11});
}

namespace {

io_uring_sqe* buffer_recv(FakeSubmitter& ring, const BufferPool& pool, uint8_t cls, uint64_t tag) {
  io_uring_sqe* s = ring.sqe();
  ringtunnel::ring::prep_buffer_recv(s, 5, pool.group(cls), ring.features());
  io_uring_sqe_set_data64(s, tag);
  return s;
}

uint16_t bid_of(const Cqe& c) {
  return uint16_t(c.flags >> IORING_CQE_BUFFER_SHIFT);
}

}  // namespace

TEST_CASE("KernelBuffers takes an unregistered pool's buffers in the kernel's order") {
  FakeSubmitter ring;
  Sink sink(ring);
  BufferPool pool;
  REQUIRE(pool.init(nullptr, {{64, 256, 1024}, {4, 2, 2}}, 3) == "");
  KernelBuffers kernel(ring, {&pool});
  CHECK(kernel.ready(pool, 0) == 4);

  for (uint16_t bid = 0; bid < 4; ++bid) {
    const std::string data = "message " + std::to_string(bid);
    CHECK(kernel.recv(buffer_recv(ring, pool, 0, bid), data) == int(data.size()));
    REQUIRE(sink.got.size() == size_t(bid) + 1);
    const Cqe& c = sink.got.back();
    CHECK(c.res == int(data.size()));
    CHECK((c.flags & IORING_CQE_F_BUFFER));
    CHECK_FALSE((c.flags & IORING_CQE_F_MORE));
    CHECK(bid_of(c) == bid);  // as the pool added them
    CHECK(std::memcmp(pool.data(0, bid), data.data(), data.size()) == 0);
    pool.taken(0);
  }
  CHECK(kernel.ready(pool, 0) == 0);
  CHECK(kernel.ready(pool, 1) == 2);  // other classes untouched

  SUBCASE("an empty class: -ENOBUFS without a buffer, and a multishot receive ends") {
    io_uring_sqe* s = buffer_recv(ring, pool, 0, 9);
    CHECK(kernel.recv(s, "more", /*more=*/true) == -ENOBUFS);
    CHECK(sink.got.back() == Cqe{9, -ENOBUFS, 0});
    CHECK_FALSE(ring.is_open(s));
  }
  SUBCASE("buffers given back come back after publish, in the order given back") {
    pool.give_back(0, 2);
    pool.give_back(0, 0);
    CHECK(kernel.ready(pool, 0) == 0);  // not yet published
    CHECK(kernel.recv(buffer_recv(ring, pool, 0, 9), "x") == -ENOBUFS);
    CHECK(pool.publish());
    CHECK(kernel.ready(pool, 0) == 2);
    CHECK(kernel.recv(buffer_recv(ring, pool, 0, 10), "again") == 5);
    CHECK(bid_of(sink.got.back()) == 2);  // the ring wrapped: bufs[4 & 3]
    CHECK(kernel.recv(buffer_recv(ring, pool, 0, 11), "again") == 5);
    CHECK(bid_of(sink.got.back()) == 0);
    CHECK(kernel.ready(pool, 0) == 0);
  }
}

TEST_CASE("KernelBuffers: multishot receives, partial fills, and two pools") {
  ringtunnel::ring::RingFeatures f;
  f.multishot_recv = true;
  FakeSubmitter ring(f);
  Sink sink(ring);
  BufferPool recv_pool, tls_pool;
  REQUIRE(recv_pool.init(nullptr, {{64, 256, 1024}, {2, 2, 2}}) == "");
  REQUIRE(tls_pool.init(nullptr, {{64, 256, 1024}, {2, 2, 2}}, 3) == "");
  KernelBuffers kernel(ring, {&recv_pool, &tls_pool});

  io_uring_sqe* s = buffer_recv(ring, tls_pool, 1, 7);
  CHECK((s->ioprio & IORING_RECV_MULTISHOT));
  const std::string big(300, 'b');
  CHECK(kernel.recv(s, big, /*more=*/true) == 256);  // the rest stays in the socket
  CHECK(sink.got.back().flags == (IORING_CQE_F_BUFFER | IORING_CQE_F_MORE));
  CHECK(ring.is_open(s));
  CHECK(kernel.ready(tls_pool, 1) == 1);
  CHECK(kernel.ready(recv_pool, 1) == 2);  // group 1 is recv_pool's class 1, not this one
  CHECK(kernel.recv(s, "end") == 3);
  CHECK(bid_of(sink.got.back()) == 1);
  CHECK_FALSE(ring.is_open(s));

  io_uring_sqe* plain = ring.sqe();
  io_uring_prep_recv(plain, 5, nullptr, 0, 0);  // no IOSQE_BUFFER_SELECT
  CHECK_THROWS_AS(kernel.recv(plain, "x"), std::logic_error);
  BufferPool stranger;
  CHECK_THROWS_AS(kernel.ready(stranger, 0), std::logic_error);
}

// The start-up feature probe and the features line it logs.
#include "ringtunnel/ring/features.h"

#include <sys/socket.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/ring.h"

using namespace ringtunnel::ring;

TEST_CASE("the features line reads as before the probe moved into ring/") {
  RingFeatures f;
  CHECK(f.describe() ==
        "SINGLE_ISSUER (no DEFER_TASKRUN), registered ring fd off, sockets as direct descriptors "
        "off, min-wait off (the kernel has no IORING_FEAT_MIN_TIMEOUT, Linux < 6.12), multishot "
        "recv off, gathered fixed-buffer sends off");
  f.defer_taskrun = true;
  f.registered_ring_fd = true;
  f.fixed_files = true;
  f.file_slots = 1024;
  f.multishot_recv = true;
  f.writev_fixed = true;
  f.min_wait_kernel = true;
  f.min_wait_us = 200;
  CHECK(f.describe_ring() ==
        "SINGLE_ISSUER|DEFER_TASKRUN, registered ring fd on, sockets as direct descriptors on "
        "(1024 slots), min-wait on (200 us while a relay moves bulk data)");
  CHECK(f.describe() == f.describe_ring() + ", multishot recv on, gathered fixed-buffer sends on");
  f.min_wait_us = 0;
  CHECK(f.describe_ring().ends_with(", min-wait off (--ring-min-wait off)"));
  RingFeatures sq;
  sq.sqpoll = true;
  sq.min_wait_kernel = true;
  CHECK(sq.describe_ring() ==
        "SQPOLL, registered ring fd off, sockets as direct descriptors off, min-wait off (SQPOLL)");
}

TEST_CASE("submit_and_gather submits and returns with the completions, with or without min-wait") {
  for (const uint32_t min_wait_us : {0u, 200u}) {
    INFO(min_wait_us);
    Ring ring;
    REQUIRE(ring.init({64, false, min_wait_us}) == "");
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    char byte = 'x', got = 0;
    // A read that completes only once the write below has run: the wait must end with it.
    io_uring_sqe* s = ring.sqe();
    io_uring_prep_read(s, sv[1], &got, 1, 0);
    io_uring_sqe_set_data64(s, 1);
    s = ring.sqe();
    io_uring_prep_write(s, sv[0], &byte, 1, 0);
    io_uring_sqe_set_data64(s, 2);
    ring.submit_and_gather(int64_t{5'000'000'000});
    unsigned seen = 0;
    for (int tries = 0; seen < 2 && tries < 100; ++tries) {
      seen += ring.drain_completions([](const io_uring_cqe& c) { CHECK(c.res == 1); });
      if (seen < 2) ring.submit_and_gather(int64_t{100'000'000});
    }
    CHECK(seen == 2);
    CHECK(got == 'x');
    close(sv[0]);
    close(sv[1]);
  }
}

TEST_CASE("prep_buffer_recv follows the features: multishot where the kernel has it") {
  RingFeatures f;
  io_uring_sqe s{};
  prep_buffer_recv(&s, 7, 4, f);
  CHECK(s.opcode == IORING_OP_RECV);
  CHECK(s.fd == 7);
  CHECK(uint16_t(s.buf_group) == 4);
  CHECK((s.flags & IOSQE_BUFFER_SELECT));
  CHECK_FALSE((s.ioprio & IORING_RECV_MULTISHOT));
  f.multishot_recv = true;
  s = {};
  prep_buffer_recv(&s, 7, 4, f);
  CHECK((s.ioprio & IORING_RECV_MULTISHOT));
  CHECK((s.flags & IOSQE_BUFFER_SELECT));
}

TEST_CASE("the probe leaves the pool's buffers with the kernel and the ring empty") {
  Ring ring;
  REQUIRE(ring.init({64, false}) == "");
  BufferPool pool;
  REQUIRE(pool.init(ring.raw(), {{64, 256, 1024}, {4, 4, 4}}) == "");
  REQUIRE(probe_features(ring, &pool, {false, false}) == "");
  CHECK(pool.available(0) == 4);
  CHECK_FALSE(ring.features().writev_fixed);  // not asked for
  CHECK_FALSE(ring.features().fixed_files);   // not asked for
  // The buffer the probe's receive took is back: four receives get four buffers.
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  int buffers = 0;
  for (int i = 0; i < 4; ++i) {
    REQUIRE(write(sv[0], "z", 1) == 1);
    io_uring_sqe* s = ring.sqe();
    prep_buffer_recv(s, sv[1], pool.group(0), RingFeatures{});  // single-shot
    ring.submit_and_wait(std::nullopt);
    ring.drain_completions([&](const io_uring_cqe& c) {
      CHECK(c.user_data == 0);  // nothing of the probe's left over
      if (c.res == 1 && (c.flags & IORING_CQE_F_BUFFER)) ++buffers;
    });
  }
  CHECK(buffers == 4);
  close(sv[0]);
  close(sv[1]);
}

TEST_CASE("the probe without a pool, and direct descriptors when asked") {
  Ring ring;
  REQUIRE(ring.init({64, false}) == "");
  BufferPool not_ready;
  REQUIRE(probe_features(ring, &not_ready, {true, true}) == "");
  REQUIRE(probe_features(ring, nullptr, {true, false}) == "");
  CHECK_FALSE(ring.features().multishot_recv);
  CHECK_FALSE(ring.features().writev_fixed);
  if (!ring.features().fixed_files) {
    MESSAGE("this kernel has no setsockopt through the ring: direct descriptors stay off");
    return;
  }
  CHECK(ring.features().file_slots >= 2);
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK(ring.update_files(0, sv));
  CHECK_FALSE(ring.update_files(ring.features().file_slots - 1, sv));  // one slot too few
  close(sv[0]);
  close(sv[1]);
}

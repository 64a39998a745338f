#include "ringtunnel/ring/features.h"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/ring.h"

namespace ringtunnel::ring {

std::string RingFeatures::describe_ring() const {
  std::string min_wait;
  if (min_wait_us)
    min_wait = fmt::format("on ({} us while a relay moves bulk data)", min_wait_us);
  else if (!min_wait_kernel)
    min_wait = "off (the kernel has no IORING_FEAT_MIN_TIMEOUT, Linux < 6.12)";
  else
    min_wait = sqpoll ? "off (SQPOLL)" : "off (--ring-min-wait off)";
  return fmt::format("{}{}, registered ring fd {}, sockets as direct descriptors {}, min-wait {}",
                     sqpoll ? "SQPOLL" : "SINGLE_ISSUER",
                     defer_taskrun ? "|DEFER_TASKRUN" : (sqpoll ? "" : " (no DEFER_TASKRUN)"),
                     registered_ring_fd ? "on" : "off",
                     fixed_files ? fmt::format("on ({} slots)", file_slots) : std::string("off"),
                     min_wait);
}

std::string RingFeatures::describe() const {
  return fmt::format("{}, multishot recv {}, gathered fixed-buffer sends {}", describe_ring(),
                     multishot_recv ? "on" : "off", writev_fixed ? "on" : "off");
}

namespace {

// Submits one SQE prepared by `prep` and returns its completion.
template <typename Prep>
io_uring_cqe submit_one(Ring& ring, Prep prep) {
  io_uring_sqe* s = ring.sqe();
  prep(s);
  io_uring_sqe_set_data64(s, 0);
  ring.submit_and_wait(std::nullopt);
  // Copies the fields: clang refuses to capture a struct with a flexible array member.
  io_uring_cqe cqe{};
  ring.drain_completions([out = &cqe](const io_uring_cqe& c) {
    out->user_data = c.user_data;
    out->res = c.res;
    out->flags = c.flags;
  });
  return cqe;
}

// More file-table slots cost kernel memory per ring whether used or not.
constexpr unsigned kMaxFileSlots = 1u << 18;

// Direct descriptors need a file table, and setsockopt through the ring (Linux 6.7) to arm a
// reset on a socket that has no fd.
void probe_fixed_files(Ring& ring) {
  RingFeatures& f = ring.mutable_features();
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  const auto slots = unsigned(std::min<rlim_t>(rl.rlim_cur, kMaxFileSlots));
  if (slots < 2 || io_uring_register_files_sparse(ring.raw(), slots) != 0) return;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one_fd[1] = {fd};
  bool ok = fd >= 0 && ring.update_files(0, one_fd);
  if (ok) {
    static const linger kReset{1, 0};
    const io_uring_cqe c = submit_one(ring, [&](io_uring_sqe* s) {
      prep_setsockopt(s, 0, SOL_SOCKET, SO_LINGER, &kReset, sizeof kReset);
      s->flags |= IOSQE_FIXED_FILE;
    });
    linger seen{};
    socklen_t len = sizeof seen;
    ok = c.res == 0 && getsockopt(fd, SOL_SOCKET, SO_LINGER, &seen, &len) == 0 && seen.l_onoff == 1;
    submit_one(ring, [](io_uring_sqe* s) { io_uring_prep_close_direct(s, 0); });
  }
  if (fd >= 0) close(fd);
  if (!ok) {
    io_uring_unregister_files(ring.raw());
    return;
  }
  f.fixed_files = true;
  f.file_slots = slots;
}

void probe_buffer_features(Ring& ring, BufferPool& pool, const ProbeOptions& options, int sv[2]) {
  RingFeatures& f = ring.mutable_features();
  auto one = [&](auto prep) { return submit_one(ring, prep); };
  // Multishot receive from a provided-buffer ring (Linux 6.0).
  const char probe[] = "probe";
  [[maybe_unused]] ssize_t w = write(sv[0], probe, sizeof probe);
  io_uring_cqe c = one([&](io_uring_sqe* s) {
    io_uring_prep_recv_multishot(s, sv[1], nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = pool.group(0);
  });
  f.multishot_recv = c.res == int(sizeof probe) && (c.flags & IORING_CQE_F_MORE);
  if (c.res > 0 && (c.flags & IORING_CQE_F_BUFFER)) {
    pool.taken(0, false);
    pool.give_back(0, uint16_t(c.flags >> IORING_CQE_BUFFER_SHIFT));
    pool.publish();
  }
  if (f.multishot_recv) {
    one([&](io_uring_sqe* s) { io_uring_prep_cancel64(s, 0, IORING_ASYNC_CANCEL_ALL); });
    ring.drain_completions([](const io_uring_cqe&) {});  // the receive's final -ECANCELED
  }
  // Gathered send from registered buffers (Linux 6.15); the pool's provided buffers are one
  // registered buffer, which grows with the pool.
  if (options.registered_buffers && ring.opcode_supported(kOpWritevFixed)) {
    if (pool.register_fixed() == 0) {
      memcpy(pool.data(0, 0), probe, sizeof probe);
      iovec part{pool.data(0, 0), sizeof probe};
      c = one([&](io_uring_sqe* s) {
        io_uring_prep_rw(kOpWritevFixed, s, sv[0], &part, 1, 0);
        s->buf_index = 0;
      });
      f.writev_fixed = c.res == int(sizeof probe);
      if (!f.writev_fixed) pool.unregister_fixed();
    }
  }
}

}  // namespace

// Tries, on a socketpair, the ring features whose support no opcode probe shows.
std::string probe_features(Ring& ring, BufferPool* recv_pool, const ProbeOptions& options) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return fmt::format("socketpair for the feature probe: {}", strerror(errno));
  if (recv_pool && recv_pool->ready()) probe_buffer_features(ring, *recv_pool, options, sv);
  close(sv[0]);
  close(sv[1]);
  if (options.fixed_files) probe_fixed_files(ring);
  return {};
}

}  // namespace ringtunnel::ring

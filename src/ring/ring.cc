#include "ringtunnel/ring/ring.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>

#include <fmt/format.h>

namespace ringtunnel::ring {

namespace {

// The CQ holds this many times the SQ: multishot receives and accepts post many completions per
// submission, and an overflowing CQ costs the kernel a slow path.
constexpr unsigned kCqPerSq = 8;

// An SQPOLL thread sleeps after this long without work (it is a kernel thread per ring).
constexpr unsigned kSqThreadIdleMs = 50;

// Newer than liburing 2.3's header: the kernel's min-wait (Linux 6.12) is advertised by this
// feature bit, and asked for in the io_uring_getevents_arg word that older headers call padding.
constexpr unsigned kFeatMinTimeout = 1u << 15;
struct GeteventsArg {
  uint64_t sigmask;
  uint32_t sigmask_sz;
  uint32_t min_wait_usec;
  uint64_t ts;
};
static_assert(sizeof(GeteventsArg) == sizeof(io_uring_getevents_arg));

// submit_and_gather without a deadline still passes one: without it the kernel would end the
// wait at the minimum even with no completion.
constexpr int64_t kGatherCeilingNs = 1'000'000'000;

}  // namespace

Ring::~Ring() {
  if (probe_) io_uring_free_probe(probe_);
  if (ready_) io_uring_queue_exit(&ring_);
}

std::string Ring::init(const RingOptions& options) {
  const unsigned base = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
  // Each try drops what an older kernel may refuse; the first that works wins.
  const unsigned tries[] = {
      options.sqpoll ? base | IORING_SETUP_SQPOLL | IORING_SETUP_SINGLE_ISSUER
                     : base | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
      options.sqpoll ? base | IORING_SETUP_SQPOLL : base | IORING_SETUP_SINGLE_ISSUER,
      IORING_SETUP_CQSIZE,
  };
  int err = -EINVAL;
  for (unsigned flags : tries) {
    io_uring_params params{};
    params.flags = flags;
    params.cq_entries = options.entries * kCqPerSq;
    params.sq_thread_idle = kSqThreadIdleMs;
    err = io_uring_queue_init_params(options.entries, &ring_, &params);
    if (err == 0) {
      features_.setup_flags = flags;
      features_.defer_taskrun = flags & IORING_SETUP_DEFER_TASKRUN;
      features_.sqpoll = flags & IORING_SETUP_SQPOLL;
      features_.min_wait_kernel = params.features & kFeatMinTimeout;
      // submit_and_gather publishes the SQ tail itself, which an SQPOLL thread would also need
      // waking for: not worth it there.
      if (features_.min_wait_kernel && !features_.sqpoll)
        features_.min_wait_us = options.min_wait_us;
      break;
    }
    if (err != -EINVAL) break;
  }
  if (err)
    return fmt::format("io_uring_setup with {} entries: {}", options.entries, strerror(-err));
  ready_ = true;
  probe_ = io_uring_get_probe_ring(&ring_);
  features_.registered_ring_fd = io_uring_register_ring_fd(&ring_) == 1;
  return {};
}

bool Ring::opcode_supported(uint8_t op) const {
  return probe_ && io_uring_opcode_supported(probe_, op);
}

void Ring::submit() {
  counters_.enters.add();
  io_uring_submit(&ring_);
}

io_uring_sqe* Ring::sqe() {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  while (!sqe) {
    submit();
    sqe = io_uring_get_sqe(&ring_);
  }
  counters_.sqes.add();
  return sqe;
}

void prep_setsockopt(io_uring_sqe* sqe, int fd, int level, int name, const void* value,
                     unsigned len) {
  constexpr uint32_t kSocketUringOpSetsockopt = 3;
  io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, nullptr, 0, 0);
  sqe->cmd_op = kSocketUringOpSetsockopt;
  // The 6.7 SQE layout overlays level/optname on addr, optlen on file_index, optval on addr3.
  sqe->addr = uint64_t(uint32_t(level)) | uint64_t(uint32_t(name)) << 32;
  sqe->splice_fd_in = int32_t(len);
  sqe->addr3 = reinterpret_cast<uint64_t>(value);
}

void prep_gathered_send(io_uring_sqe* sqe, int fd, msghdr& msg, iovec* iov, size_t count) {
  msg = msghdr{};
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  io_uring_prep_sendmsg(sqe, fd, &msg, MSG_NOSIGNAL | MSG_WAITALL);
}

void prep_buffer_recv(io_uring_sqe* sqe, int fd, uint16_t group, const RingFeatures& features) {
  if (features.multishot_recv)
    io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
  else
    io_uring_prep_recv(sqe, fd, nullptr, 0, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = group;
}

void Ring::reserve(unsigned n) {
  if (io_uring_sq_space_left(&ring_) < n) submit();
}

bool Ring::update_files(unsigned slot, std::span<const int> fds) {
  return io_uring_register_files_update(&ring_, slot, fds.data(), unsigned(fds.size())) ==
         int(fds.size());
}

void Ring::submit_and_wait(std::optional<int64_t> timeout_ns, unsigned wait_nr) {
  io_uring_cqe* cqe = nullptr;
  counters_.enters.add();
  if (!timeout_ns) {
    io_uring_submit_and_wait(&ring_, wait_nr);
    return;
  }
  __kernel_timespec ts{};
  ts.tv_sec = *timeout_ns / 1'000'000'000;
  ts.tv_nsec = *timeout_ns % 1'000'000'000;
  // liburing 2.3 may report the submit count rather than -ETIME: callers count completions.
  io_uring_submit_and_wait_timeout(&ring_, &cqe, wait_nr, &ts, nullptr);
}

void Ring::submit_and_gather(std::optional<int64_t> timeout_ns) {
  if (!features_.min_wait_us) return submit_and_wait(timeout_ns);
  counters_.enters.add();
  // Hands the queued SQEs to the kernel (liburing 2.3 has no enter with a min-wait to do it).
  io_uring_sq& sq = ring_.sq;
  const unsigned tail = sq.sqe_tail;
  sq.sqe_head = tail;
  std::atomic_ref<unsigned>(*sq.ktail).store(tail, std::memory_order_release);
  const unsigned to_submit = tail - std::atomic_ref<unsigned>(*sq.khead).load();
  const int64_t t = timeout_ns.value_or(kGatherCeilingNs);
  __kernel_timespec ts{};
  ts.tv_sec = t / 1'000'000'000;
  ts.tv_nsec = t % 1'000'000'000;
  GeteventsArg arg{0, _NSIG / 8, features_.min_wait_us, reinterpret_cast<uint64_t>(&ts)};
  unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
  int fd = ring_.ring_fd;
  if (features_.registered_ring_fd) {
    flags |= IORING_ENTER_REGISTERED_RING;
    fd = ring_.enter_ring_fd;
  }
  // Waits for a full CQ: the minimum wait, not a count, ends the wait.
  const long r =
      syscall(__NR_io_uring_enter, fd, to_submit, ring_.cq.ring_entries, flags, &arg, sizeof arg);
  // A kernel that refuses the argument after all: the plain wait from now on (SQEs it did not
  // take stay queued for the next enter).
  if (r < 0 && errno == EINVAL) features_.min_wait_us = 0;
}

}  // namespace ringtunnel::ring

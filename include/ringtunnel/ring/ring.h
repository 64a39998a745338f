// One io_uring owned by one worker thread: set-up with fallbacks, SQE supply and the wait (what
// the kernel offers: features.h). The rest of the program speaks of operations; this file speaks
// of the kernel.
#pragma once

#include <liburing.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "ringtunnel/ring/features.h"
#include "ringtunnel/ring/submitter.h"
#include "ringtunnel/stats/counter.h"

namespace ringtunnel::ring {

// Opcodes newer than liburing 2.3's header (Linux 6.15).
inline constexpr uint8_t kOpWritevFixed = 61;

// setsockopt through the ring (IORING_OP_URING_CMD, SOCKET_URING_OP_SETSOCKOPT, Linux 6.7): the
// only way to set an option on a socket that exists only as a direct descriptor. `value` must
// stay valid until the SQE is submitted.
void prep_setsockopt(io_uring_sqe* sqe, int fd, int level, int name, const void* value,
                     unsigned len);

// One sendmsg of `count` iovecs; `msg` and `iov` must stay valid until the SQE is submitted.
// MSG_WAITALL: the ring retries a partial send itself, so a completion means all was sent (or
// an error). MSG_NOSIGNAL: a reset peer gives EPIPE, not a signal.
void prep_gathered_send(io_uring_sqe* sqe, int fd, msghdr& msg, iovec* iov, size_t count);

// What the ring did, for the metrics (stats/counter.h).
using RingCounters = stats::RingCounters;

struct RingOptions {
  unsigned entries = 1024;
  bool sqpoll = false;
  // The minimum wait of submit_and_gather, in microseconds; 0: never used.
  uint32_t min_wait_us = 0;
};

class Ring final : public Submitter {
 public:
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring();

  // Creates the ring in the calling thread (which becomes its only submitter). Returns "" or why
  // not.
  std::string init(const RingOptions& options);

  io_uring* raw() { return &ring_; }
  const RingFeatures& features() const override { return features_; }
  // For the start-up probe (probe_features), which finds out what the kernel offers.
  RingFeatures& mutable_features() { return features_; }

  // A free SQE; submits what is queued when the SQ is full, so it never fails.
  io_uring_sqe* sqe() override;
  // Makes room for `n` SQEs in a row, so a linked chain is never split across two submissions
  // (the kernel would end the chain at the split).
  void reserve(unsigned n) override;
  // io_uring_register_files_update: true when the kernel installed all of `fds`.
  bool update_files(unsigned slot, std::span<const int> fds) override;

  // Submits everything queued and waits for at least `wait_nr` completions, or until
  // `timeout_ns` (when set) has passed. One io_uring_enter.
  void submit_and_wait(std::optional<int64_t> timeout_ns, unsigned wait_nr = 1);
  // Submits everything queued and lets completions gather: sleeps the minimum wait
  // (RingFeatures::min_wait_us) unless the CQ fills first, returns after it when any completion
  // is there, else with the first one to come, or at `timeout_ns`. One io_uring_enter with the
  // kernel's min-wait (Linux 6.12); where the ring has none (min_wait_us 0), submit_and_wait.
  void submit_and_gather(std::optional<int64_t> timeout_ns);

  // Calls f(const io_uring_cqe&) for every completion ready now; returns how many.
  template <typename F>
  unsigned drain_completions(F&& f) {
    unsigned head, count = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      f(*cqe);
      ++count;
    }
    io_uring_cq_advance(&ring_, count);
    counters_.cqes.add(count);
    return count;
  }

  bool opcode_supported(uint8_t op) const;
  const RingCounters& counters() const { return counters_; }

 private:
  void submit();  // io_uring_submit, counted

  io_uring ring_{};
  bool ready_ = false;
  io_uring_probe* probe_ = nullptr;
  RingFeatures features_;
  RingCounters counters_;
};

}  // namespace ringtunnel::ring

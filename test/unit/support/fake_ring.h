// A ring without a kernel, for unit tests of objects that run operations through a
// ring::Submitter: the test takes the SQEs they prepared and completes them by hand, in the order
// and with the results it chooses, and the completions go to the object's handler like the
// worker's loop would deliver them. No sockets, no waiting, one thread.
//
// What of the kernel is mirrored (each helper says more):
//  - an SQE is open from sqe() until a completion without IORING_CQE_F_MORE; a multishot
//    operation stays open while its completions carry MORE;
//  - a cancel completes itself, then the matched operations with -ECANCELED;
//  - a linked connect and its IORING_OP_LINK_TIMEOUT complete together, in the kernel's order;
//  - provided-buffer receives take buffers from a BufferPool's rings in the kernel's order
//    (KernelBuffers).
// What is not: submission batches and SQ size (reserve() is only recorded), -EALREADY for an
// operation the kernel is already running, short or reordered chains, real socket effects (except
// that a plain close really closes its fd).
#pragma once

#include <liburing.h>

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

#include "ringtunnel/ring/buffer_class.h"
#include "ringtunnel/ring/buffer_pool.h"
#include "ringtunnel/ring/submitter.h"

namespace ringtunnel::test {

class FakeSubmitter final : public ring::Submitter {
 public:
  explicit FakeSubmitter(const ring::RingFeatures& features = {}) : features_(features) {}
  FakeSubmitter(const FakeSubmitter&) = delete;
  FakeSubmitter& operator=(const FakeSubmitter&) = delete;
  ~FakeSubmitter() = default;

  // ring::Submitter. sqe(): a zeroed SQE whose address stays valid for the FakeSubmitter's life.
  io_uring_sqe* sqe() override;
  void reserve(unsigned n) override { reserved_.push_back(n); }
  const ring::RingFeatures& features() const override { return features_; }
  // Records the update; returns what set_update_files_result() said (true by default).
  bool update_files(unsigned slot, std::span<const int> fds) override;

  ring::RingFeatures& mutable_features() { return features_; }
  void set_update_files_result(bool ok) { update_files_ok_ = ok; }
  struct FileUpdate {
    unsigned slot;
    std::vector<int> fds;
  };
  const std::vector<FileUpdate>& file_updates() const { return file_updates_; }
  const std::vector<unsigned>& reservations() const { return reserved_; }

  // Where completions go (the object under test's handler). Unset: they are only recorded.
  // The sink may call sqe() and complete() again (re-entrant, like a handler submitting more).
  void set_sink(std::function<void(const io_uring_cqe&)> sink) { sink_ = std::move(sink); }

  // Every SQE handed out, oldest first, as prepared (also the completed ones).
  const std::deque<io_uring_sqe>& submitted() const { return sqes_; }
  // Every completion delivered, oldest first.
  const std::vector<io_uring_cqe>& completions() const { return cqes_; }
  // The SQEs not yet completed, oldest first.
  std::vector<io_uring_sqe*> open();
  bool is_open(const io_uring_sqe* sqe) const;

  // The oldest open SQE for which pred(const io_uring_sqe&) is true; null when none.
  io_uring_sqe* find(const std::function<bool(const io_uring_sqe&)>& pred);
  io_uring_sqe* find_op(uint8_t opcode);
  io_uring_sqe* find_tag(uint64_t user_data);

  // Completes `sqe` with `res` and `flags` (user_data from the SQE) and hands the CQE to the sink.
  // IORING_CQE_F_MORE in `flags` keeps the SQE open (a multishot operation goes on). An
  // IORING_OP_CLOSE of a plain fd (not a direct descriptor) closes that fd for real, whatever
  // `res` says, as close(2) releases the fd even when it reports an error. Completing an SQE that
  // is not open throws std::logic_error.
  void complete(io_uring_sqe* sqe, int res, unsigned flags = 0);

  // Completes an IORING_OP_ASYNC_CANCEL as the kernel would: the cancel itself with the number
  // cancelled (with IORING_ASYNC_CANCEL_ALL or _ANY), else 0, or -ENOENT when nothing matched;
  // then every open operation its key matches (all of them with ALL/ANY, else one) with
  // -ECANCELED, each followed by the -ECANCELED of a link timeout linked to it.
  // Order: Linux 6.18 posts the cancel's own completion first, then those of the operations it
  // cancelled (which wait for the ring's task work); `cancelled_first` gives the other order, for
  // handlers that must not depend on it. The kernel promises no order among the cancelled
  // operations (6.18 gave newest first) nor which one a cancel without ALL takes; the fake
  // completes them oldest first and takes the oldest.
  // Keys: IORING_ASYNC_CANCEL_FD matches operations on sqe->fd, a direct descriptor with
  // IORING_ASYNC_CANCEL_FD_FIXED (IOSQE_FIXED_FILE on the operation), a plain fd without (the
  // kernel compares files, so the fake assumes a socket is never in both forms); _ANY matches
  // every operation; no key flag matches user_data == sqe->addr.
  // Returns the number cancelled.
  enum class CancelOrder { cancel_first, cancelled_first };
  unsigned complete_cancel(io_uring_sqe* cancel, CancelOrder order = CancelOrder::cancel_first);
  // complete_cancel() for a cancel keyed on an fd (io_uring_prep_cancel_fd); throws
  // std::logic_error for any other.
  unsigned complete_cancel_fd(io_uring_sqe* cancel, CancelOrder order = CancelOrder::cancel_first);

  // Completes a connect (or any operation) with IOSQE_IO_LINK and the IORING_OP_LINK_TIMEOUT
  // prepared right after it:
  //  - res != -ETIME: the operation finished first with `res` (a success or its own error); the
  //    kernel then disarms the timeout: the operation's CQE, then the timeout's -ECANCELED.
  //  - res == -ETIME: the timeout fired first; it cancels the operation: the timeout's -ETIME,
  //    then the operation's -ECANCELED.
  // (The orders Linux 6.18 gives, for a loopback connect and for a receive that timed out.)
  // Throws std::logic_error when `op` is not open and linked to an open link timeout.
  void complete_linked(io_uring_sqe* op, int res);

 private:
  size_t index_of(const io_uring_sqe* sqe) const;  // throws for an SQE not from here
  bool cancel_matches(const io_uring_sqe& cancel, const io_uring_sqe& op) const;

  ring::RingFeatures features_;
  std::deque<io_uring_sqe> sqes_;
  std::vector<bool> done_;
  std::vector<io_uring_cqe> cqes_;
  std::vector<FileUpdate> file_updates_;
  std::vector<unsigned> reserved_;
  std::function<void(const io_uring_cqe&)> sink_;
  bool update_files_ok_ = true;
};

// The kernel's side of provided-buffer receives for BufferPools set up without a ring
// (BufferPool::init(nullptr, ...)). It keeps, per class, the head the kernel would keep: a receive
// takes the buffer at bufs[head & mask] while head != the tail the pool published, so buffers
// come in the order the pool added them. Create it right after the pools' init (the kernel's head
// starts at 0 when the ring is registered).
class KernelBuffers {
 public:
  KernelBuffers(FakeSubmitter& ring, std::initializer_list<ring::BufferPool*> pools);

  // Data arrives for the receive `sqe` (IOSQE_BUFFER_SELECT, buf_group one of the pools'
  // groups): takes the next published buffer of that group, copies as much of `bytes` as it
  // holds (the rest would stay in the socket), and completes the SQE with the count and
  // IORING_CQE_F_BUFFER | bid << IORING_CQE_BUFFER_SHIFT, plus IORING_CQE_F_MORE when `more`
  // (a multishot receive that goes on). With no buffer published the receive completes with
  // -ENOBUFS, no buffer and no MORE (the kernel ends a multishot receive then).
  // Returns the bytes copied, or -ENOBUFS.
  int recv(io_uring_sqe* sqe, std::string_view bytes, bool more = false);

  // Buffers of the class published and not yet taken by a receive (what the kernel could use).
  uint32_t ready(const ring::BufferPool& pool, uint8_t cls) const;

 private:
  struct Pool {
    ring::BufferPool* pool;
    std::array<uint16_t, ring::kBufferClasses> head{};
  };
  const Pool& find_pool(const ring::BufferPool& pool) const;

  FakeSubmitter& ring_;
  std::vector<Pool> pools_;
};

}  // namespace ringtunnel::test

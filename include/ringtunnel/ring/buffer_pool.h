// Receive buffers handed to the kernel through provided-buffer rings, one ring per size class.
//
// All classes live in one anonymous mapping, so the buffers can be registered with the ring as a
// single fixed buffer: a gathered send of chunks from any classes is then one WRITEV_FIXED.
// The kernel picks a buffer when data arrives, so an idle socket holds none.
//
// The pool grows on demand. Each class starts with one step of buffers (BufferPoolSpec::steps)
// and gets another whenever fewer than a quarter of those it has are left with the kernel, up to
// counts[cls]. Steps are carved from the front of the mapping in the order they are added, so
// the buffers provided so far are always one prefix of it: the fixed buffer registers that
// prefix only (registered memory is pinned, so resident) and is registered again, longer, when
// the pool grows. Memory beyond the prefix is mapped but never touched, so it costs no RSS.
#pragma once

#include <liburing.h>

#include <array>
#include <cstdint>
#include <string>

#include "ringtunnel/ring/buffer_class.h"
#include "ringtunnel/stats/counter.h"

namespace ringtunnel::ring {

struct BufferPoolSpec {
  BufferSizes sizes;
  std::array<uint32_t, kBufferClasses> counts;  // the most of each class; powers of two, <= 32768
  // Buffers of each class provided at init and added at a time when the class runs low: a power
  // of two dividing counts[cls], at least counts[cls] / kMaxSteps. 0: all counts[cls] at init.
  std::array<uint32_t, kBufferClasses> steps{};
};

// The most steps one class grows in (so the table of where each step lies stays small).
inline constexpr uint32_t kMaxSteps = 64;
// The step the workers use for each class: about kGrowthBytes of buffers (at least one buffer,
// at least counts[cls] / kMaxSteps), so the pool starts with a few hundred KiB per class.
inline constexpr size_t kGrowthBytes = 256 * 1024;
std::array<uint32_t, kBufferClasses> growth_steps(
    const BufferSizes& sizes, const std::array<uint32_t, kBufferClasses>& counts);

// What the pool's receives did, per size class, for the metrics (stats/counter.h).
using PoolCounters = stats::PoolCounters;
static_assert(stats::kBufferClasses == kBufferClasses);

class BufferPool {
 public:
  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();

  // Maps the memory (for counts[] buffers of each class), registers one buffer ring per class
  // (group ids first_group + 0..2, counts[cls] entries) with `ring`, and publishes the first step
  // of each class. Returns an empty string on success, else what failed.
  //
  // With `ring` null (tests): the same memory and buffer rings, and the same growth, but
  // registered with no kernel. A test then plays the kernel's part by reading buf_ring(cls)
  // (test/unit/support/fake_ring.h).
  std::string init(io_uring* ring, const BufferPoolSpec& spec, uint16_t first_group = 0);
  bool ready() const { return base_ != nullptr; }
  bool registered() const { return ring_ != nullptr; }

  uint32_t size(uint8_t cls) const { return spec_.sizes[cls]; }
  // The most buffers the class may have (its buffer ring's size).
  uint32_t count(uint8_t cls) const { return spec_.counts[cls]; }
  // The buffers of the class provided so far (bids 0 .. provided - 1): count() once fully grown.
  uint32_t provided(uint8_t cls) const { return provided_[cls]; }
  uint16_t group(uint8_t cls) const { return uint16_t(first_group_ + cls); }
  // The class whose buffers provided-buffer group `group` names; -1 when not this pool's.
  int class_of_group(uint16_t group) const {
    const int cls = int(group) - int(first_group_);
    return cls >= 0 && cls < int(kBufferClasses) ? cls : -1;
  }
  uint8_t* data(uint8_t cls, uint16_t bid) const {
    return base_ + steps_at_[cls][bid >> step_shift_[cls]] +
           size_t{bid & step_mask_[cls]} * spec_.sizes[cls];
  }
  // The class a receive should use: `wanted` if it has buffers, else the nearest smaller one
  // that has, else the nearest larger one (a larger buffer for a small read costs memory for a
  // moment; waiting costs the connection its progress). -1 when every class is empty: wait for
  // buffers to come back rather than spin on -ENOBUFS.
  int class_for(uint8_t wanted) const;
  // Buffers of the class now in the kernel's hands (not yet taken by a completion).
  uint32_t available(uint8_t cls) const {
    return provided_[cls] - uint32_t(counters_.in_use[cls].value());
  }
  // Buffers of the class a receive can still get: in the kernel's hands, or still to be added.
  uint32_t headroom(uint8_t cls) const {
    return spec_.counts[cls] - uint32_t(counters_.in_use[cls].value());
  }

  // Test and debug mode: every buffer given back is overwritten with kPoison first, so a byte
  // still read from it after its release (a reference kept too long) shows up as poison in the
  // output instead of silently as another connection's data. Costs a memset per buffer.
  static constexpr uint8_t kPoison = 0xA5;
  void set_poison(bool on) { poison_ = on; }
  bool poison() const { return poison_; }

  // A completion took buffer `bid` of class `cls` (a receive, unless the start-up probe's). When
  // fewer than a quarter of the class's buffers are left with the kernel, the class grows (the
  // new buffers go to the kernel at the next publish()).
  void taken(uint8_t cls, bool receive = true) {
    counters_.in_use[cls].add();
    if (receive) counters_.receives[cls].add();
    if (low(cls)) grow(cls);
  }
  // A receive armed on class `cls` ended with -ENOBUFS: the class grows if it still may.
  void ran_dry(uint8_t cls) {
    counters_.no_buffers[cls].add();
    grow(cls);
  }
  // Adds steps to class `cls` until a quarter of its buffers are with the kernel again (at least
  // one step), up to count(cls); the fixed buffer, if any, is registered again to cover them.
  // Returns the buffers added (0 when the class is fully grown). Called by taken() and ran_dry();
  // public for tests.
  uint32_t grow(uint8_t cls);
  const PoolCounters& counters() const { return counters_; }
  // The buffer's bytes have left: it goes back to the kernel at the next publish().
  void give_back(uint8_t cls, uint16_t bid);
  // Makes every buffer given back since the last call visible to the kernel (one store per class).
  // Returns true if any class got buffers back.
  bool publish();

  uint8_t* base() const { return base_; }
  // The whole mapping: every class fully grown.
  size_t bytes() const { return bytes_; }
  // The buffers provided so far: the first provided_bytes() of the mapping.
  size_t provided_bytes() const { return frontier_; }

  // Registers the provided buffers (base() .. base() + provided_bytes()) as the ring's fixed
  // buffer 0, for WRITEV_FIXED; grow() registers it again, longer. Returns 0 or -errno (the pool
  // works as before, without a fixed buffer). Needs a ring.
  int register_fixed();
  void unregister_fixed();
  // Bytes from base() that fixed buffer 0 covers: provided_bytes(), unless registering it again
  // after a growth failed (RLIMIT_MEMLOCK), when it stays at what it covered before. 0: none.
  size_t fixed_bytes() const { return fixed_bytes_; }
  // The `len` bytes at `p` (inside the pool) lie in fixed buffer 0.
  bool in_fixed(const uint8_t* p, size_t len) const {
    return size_t(p - base_) + len <= fixed_bytes_;
  }

  // The buffer ring of class `cls` as the kernel reads it: count(cls) entries (mask count - 1),
  // the tail (advanced by publish()) in the header that overlays bufs[0]. The kernel keeps its
  // head to itself; it starts at 0 and a buffer is taken from bufs[head & mask].
  const io_uring_buf_ring* buf_ring(uint8_t cls) const { return rings_[cls]; }

 private:
  bool low(uint8_t cls) const {
    return provided_[cls] < spec_.counts[cls] && available(cls) * 4 <= provided_[cls];
  }
  // Carves the next step of class `cls` from the front of the free mapping and adds its buffers
  // to the class's ring (published at the next publish()).
  void add_step(uint8_t cls);

  BufferPoolSpec spec_{};
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  size_t frontier_ = 0;  // the mapping's bytes carved into steps so far
  size_t fixed_bytes_ = 0;
  // Where each step of each class starts (offset from base_); bid >> step_shift_ picks the step.
  std::array<std::array<size_t, kMaxSteps>, kBufferClasses> steps_at_{};
  std::array<uint8_t, kBufferClasses> step_shift_{};
  std::array<uint32_t, kBufferClasses> step_mask_{};
  std::array<uint32_t, kBufferClasses> provided_{};
  std::array<io_uring_buf_ring*, kBufferClasses> rings_{};
  std::array<size_t, kBufferClasses> ring_bytes_{};
  PoolCounters counters_;  // in_use: the buffers the kernel does not have
  std::array<uint32_t, kBufferClasses> pending_{};
  io_uring* ring_ = nullptr;
  uint16_t first_group_ = 0;
  bool poison_ = false;
};

}  // namespace ringtunnel::ring

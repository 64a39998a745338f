// Receive buffers handed to the kernel through provided-buffer rings, one ring per size class.
//
// All classes live in one anonymous mapping, so the whole pool can be registered with the ring as
// a single fixed buffer: a gathered send of chunks from any classes is then one WRITEV_FIXED.
// The kernel picks a buffer when data arrives, so an idle socket holds none.
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
  std::array<uint32_t, kBufferClasses> counts;  // each a power of two, <= 32768
};

// What the pool's receives did, per size class, for the metrics (stats/counter.h).
using PoolCounters = stats::PoolCounters;
static_assert(stats::kBufferClasses == kBufferClasses);

class BufferPool {
 public:
  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();

  // Maps the memory and registers one buffer ring per class (group ids first_group + 0..2) with
  // `ring`. Returns an empty string on success, else what failed.
  //
  // With `ring` null (tests): the same memory and buffer rings, all buffers published, but
  // registered with no kernel. A test then plays the kernel's part by reading buf_ring(cls)
  // (test/unit/support/fake_ring.h).
  std::string init(io_uring* ring, const BufferPoolSpec& spec, uint16_t first_group = 0);
  bool ready() const { return base_ != nullptr; }
  bool registered() const { return ring_ != nullptr; }

  uint32_t size(uint8_t cls) const { return spec_.sizes[cls]; }
  uint32_t count(uint8_t cls) const { return spec_.counts[cls]; }
  uint16_t group(uint8_t cls) const { return uint16_t(first_group_ + cls); }
  // The class whose buffers provided-buffer group `group` names; -1 when not this pool's.
  int class_of_group(uint16_t group) const {
    const int cls = int(group) - int(first_group_);
    return cls >= 0 && cls < int(kBufferClasses) ? cls : -1;
  }
  uint8_t* data(uint8_t cls, uint16_t bid) const {
    return base_ + offset_[cls] + size_t{bid} * spec_.sizes[cls];
  }
  // The class a receive should use: `wanted` if it has buffers, else the nearest smaller one
  // that has, else the nearest larger one (a larger buffer for a small read costs memory for a
  // moment; waiting costs the connection its progress). -1 when every class is empty: wait for
  // buffers to come back rather than spin on -ENOBUFS.
  int class_for(uint8_t wanted) const;
  // Buffers of the class now in the kernel's hands (not yet taken by a completion).
  uint32_t available(uint8_t cls) const {
    return spec_.counts[cls] - uint32_t(counters_.in_use[cls].value());
  }

  // Test and debug mode: every buffer given back is overwritten with kPoison first, so a byte
  // still read from it after its release (a reference kept too long) shows up as poison in the
  // output instead of silently as another connection's data. Costs a memset per buffer.
  static constexpr uint8_t kPoison = 0xA5;
  void set_poison(bool on) { poison_ = on; }
  bool poison() const { return poison_; }

  // A completion took buffer `bid` of class `cls` (a receive, unless the start-up probe's).
  void taken(uint8_t cls, bool receive = true) {
    counters_.in_use[cls].add();
    if (receive) counters_.receives[cls].add();
  }
  // A receive armed on class `cls` ended with -ENOBUFS.
  void ran_dry(uint8_t cls) { counters_.no_buffers[cls].add(); }
  const PoolCounters& counters() const { return counters_; }
  // The buffer's bytes have left: it goes back to the kernel at the next publish().
  void give_back(uint8_t cls, uint16_t bid);
  // Makes every buffer given back since the last call visible to the kernel (one store per class).
  // Returns true if any class got buffers back.
  bool publish();

  uint8_t* base() const { return base_; }
  size_t bytes() const { return bytes_; }

  // The buffer ring of class `cls` as the kernel reads it: count(cls) entries (mask count - 1),
  // the tail (advanced by publish()) in the header that overlays bufs[0]. The kernel keeps its
  // head to itself; it starts at 0 and a buffer is taken from bufs[head & mask].
  const io_uring_buf_ring* buf_ring(uint8_t cls) const { return rings_[cls]; }

 private:
  BufferPoolSpec spec_{};
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  std::array<size_t, kBufferClasses> offset_{};
  std::array<io_uring_buf_ring*, kBufferClasses> rings_{};
  std::array<size_t, kBufferClasses> ring_bytes_{};
  PoolCounters counters_;  // in_use: the buffers the kernel does not have
  std::array<uint32_t, kBufferClasses> pending_{};
  io_uring* ring_ = nullptr;
  uint16_t first_group_ = 0;
  bool poison_ = false;
};

}  // namespace ringtunnel::ring

// A number that one thread writes and any thread reads: the counters and gauges behind the
// metrics. The owner (a worker) updates it with a relaxed load and a relaxed store: no
// read-modify-write, no fence, no lock; on x86 the same instructions as a plain integer. A reader
// (the metrics scrape) loads it relaxed and sees the last value stored, or one a moment older.
// Two threads must never write the same Counter.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ringtunnel::stats {

class Counter {
 public:
  void add(uint64_t n = 1) { set(value() + n); }
  void sub(uint64_t n = 1) { set(value() - n); }
  void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// What a ring did (ring/ring.h owns one per ring): written by the ring's thread only.
struct RingCounters {
  Counter enters;  // io_uring_enter calls (every submit and every wait)
  Counter sqes;    // SQEs handed out (each is submitted by the next enter)
  Counter cqes;    // completions handled
};

// What a receive-buffer pool's receives did, per size class (ring/buffer_pool.h owns one per
// pool): written by the pool's thread only.
inline constexpr size_t kBufferClasses = 3;  // ring::kBufferClasses (checked there)
struct PoolCounters {
  std::array<Counter, kBufferClasses> receives;    // completions that filled a buffer
  std::array<Counter, kBufferClasses> no_buffers;  // receives that ended with -ENOBUFS
  std::array<Counter, kBufferClasses> in_use;      // taken and not yet given back
};

}  // namespace ringtunnel::stats

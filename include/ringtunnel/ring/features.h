// What the running kernel's io_uring offers, and the start-up probe that finds out. Each feature
// has a fallback, so a missing one costs speed, never the start.
#pragma once

#include <string>

namespace ringtunnel::ring {

class BufferPool;
class Ring;

// What the running kernel gave us; each false entry has a fallback.
struct RingFeatures {
  unsigned setup_flags = 0;
  bool defer_taskrun = false;
  bool sqpoll = false;
  bool multishot_recv = false;  // else single-shot recv with buffer select, re-armed each time
  bool writev_fixed = false;    // gathered sends from registered buffers; else sendmsg
  bool registered_ring_fd = false;
  // Sockets live in the ring's file table (direct descriptors), not the process's fd table:
  // no fd lookup per operation, and the RLIMIT_NOFILE ceiling applies per ring, not per process.
  bool fixed_files = false;
  unsigned file_slots = 0;
  // The kernel can wait a minimum time before returning fewer completions than asked for
  // (IORING_FEAT_MIN_TIMEOUT, Linux 6.12), and the minimum Ring::submit_and_gather waits, in
  // microseconds: 0 where the kernel lacks it, with SQPOLL, or when it is turned off
  // (--ring-min-wait off); then submit_and_gather waits as submit_and_wait does.
  bool min_wait_kernel = false;
  uint32_t min_wait_us = 0;

  std::string describe_ring() const;  // set-up only
  std::string describe() const;       // set-up and the receive/send features
};

// The features the configuration asks for; the probe tries only those.
struct ProbeOptions {
  // Register `recv_pool`'s provided buffers as one fixed buffer for WRITEV_FIXED (it grows with
  // the pool: BufferPool::register_fixed()).
  bool registered_buffers = false;
  bool fixed_files = false;  // a file table for direct descriptors
};

// Tries on `ring`, through a socketpair, the features whose support no opcode probe shows, and
// records them in ring.mutable_features(). The receive features need `recv_pool` registered with
// `ring` (they are left off when it is null or not ready); its buffers are all back with the
// kernel afterwards, and with writev_fixed on it stays registered as the ring's fixed buffer 0.
// Returns "" or why the probe could not run.
std::string probe_features(Ring& ring, BufferPool* recv_pool, const ProbeOptions& options);

}  // namespace ringtunnel::ring

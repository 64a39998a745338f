// What the running kernel gave a ring; each false entry has a fallback.
#pragma once

#include <string>

namespace ringtunnel::ring {

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

  std::string describe_ring() const;  // set-up only
  std::string describe() const;       // set-up and the receive/send features
};

}  // namespace ringtunnel::ring

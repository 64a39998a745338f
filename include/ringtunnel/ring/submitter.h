// The seam under the ring: all that an object running operations needs of it. A Ring is the
// kernel's; a test passes its own and plays the kernel's part by hand (test/unit/support/).
#pragma once

#include <liburing.h>

#include <cstdint>
#include <span>

#include "ringtunnel/ring/features.h"

namespace ringtunnel::ring {

class Submitter {
 public:
  // A free SQE for a liburing prep; never null.
  virtual io_uring_sqe* sqe() = 0;
  // Makes room for `n` SQEs in a row, so a linked chain is never split across two submissions
  // (the kernel would end the chain at the split).
  virtual void reserve(unsigned n) = 0;
  virtual const RingFeatures& features() const = 0;
  // Installs `fds` in the ring's file table from `slot` on (direct descriptors; the fds stay open
  // and are the caller's to close). True when all were installed.
  virtual bool update_files(unsigned slot, std::span<const int> fds) = 0;

 protected:
  ~Submitter() = default;
};

// A receive on `fd` into a buffer the kernel picks from provided-buffer group `group`:
// multishot where `features` has it, else single-shot (re-armed by the caller after each
// completion). Add IOSQE_FIXED_FILE afterwards for a direct descriptor.
void prep_buffer_recv(io_uring_sqe* sqe, int fd, uint16_t group, const RingFeatures& features);

}  // namespace ringtunnel::ring

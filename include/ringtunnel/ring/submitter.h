// The seam under the ring: what the proxy's objects need of it to submit operations. The Ring
// implements it against the kernel; unit tests implement it with a recorder that plays the
// kernel's completions back by hand.
#pragma once

#include <liburing.h>

#include <span>

#include "ringtunnel/ring/features.h"

namespace ringtunnel::ring {

class Submitter {
 public:
  virtual io_uring_sqe* sqe() = 0;       // a free SQE for a liburing prep
  virtual void reserve(unsigned n) = 0;  // n SQEs in a row (a linked chain is never split)
  virtual const RingFeatures& features() const = 0;
  // Installs `fds` in the file table from `slot` on; true when all were installed.
  virtual bool update_files(unsigned slot, std::span<const int> fds) = 0;

 protected:
  ~Submitter() = default;
};

}  // namespace ringtunnel::ring

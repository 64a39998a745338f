#include "ringtunnel/ring/buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringtunnel::ring {

BufferPool::~BufferPool() {
  for (size_t c = 0; c < kBufferClasses; ++c) {
    if (!rings_[c]) continue;
    if (ring_) io_uring_unregister_buf_ring(ring_, group(static_cast<uint8_t>(c)));
    munmap(rings_[c], ring_bytes_[c]);
  }
  if (base_) munmap(base_, bytes_);
}

std::string BufferPool::init(io_uring* ring, const BufferPoolSpec& spec, uint16_t first_group) {
  spec_ = spec;
  first_group_ = first_group;
  for (size_t c = 0; c < kBufferClasses; ++c) {
    offset_[c] = bytes_;
    bytes_ += size_t{spec.sizes[c]} * spec.counts[c];
  }
  // MAP_NORESERVE: pages are touched only when the kernel first fills a buffer, so the resident
  // size follows the traffic, not the configured pool.
  void* mem = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED)
    return fmt::format("mmap of {} bytes of buffers: {}", bytes_, strerror(errno));
  base_ = static_cast<uint8_t*>(mem);

  for (uint8_t c = 0; c < kBufferClasses; ++c) {
    ring_bytes_[c] = sizeof(io_uring_buf) * spec.counts[c];
    void* r =
        mmap(nullptr, ring_bytes_[c], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return fmt::format("mmap of buffer ring {}: {}", c, strerror(errno));
    rings_[c] = static_cast<io_uring_buf_ring*>(r);
    io_uring_buf_ring_init(rings_[c]);
    if (ring) {
      io_uring_buf_reg reg{};
      reg.ring_addr = reinterpret_cast<uint64_t>(r);
      reg.ring_entries = spec.counts[c];
      reg.bgid = group(c);
      if (int err = io_uring_register_buf_ring(ring, &reg, 0); err < 0) {
        munmap(r, ring_bytes_[c]);
        rings_[c] = nullptr;
        return fmt::format("registering buffer ring {} ({} x {} bytes): {}", c, spec.counts[c],
                           spec.sizes[c], strerror(-err));
      }
      ring_ = ring;
    }
    const int mask = io_uring_buf_ring_mask(spec.counts[c]);
    for (uint32_t b = 0; b < spec.counts[c]; ++b)
      io_uring_buf_ring_add(rings_[c], data(c, static_cast<uint16_t>(b)), spec.sizes[c],
                            static_cast<uint16_t>(b), mask, static_cast<int>(b));
    io_uring_buf_ring_advance(rings_[c], static_cast<int>(spec.counts[c]));
  }
  return {};
}

int BufferPool::class_for(uint8_t wanted) const {
  for (int cls = wanted; cls >= 0; --cls)
    if (available(uint8_t(cls))) return cls;
  for (int cls = wanted + 1; cls < int(kBufferClasses); ++cls)
    if (available(uint8_t(cls))) return cls;
  return -1;
}

void BufferPool::give_back(uint8_t cls, uint16_t bid) {
  if (poison_) memset(data(cls, bid), kPoison, spec_.sizes[cls]);
  io_uring_buf_ring_add(rings_[cls], data(cls, bid), spec_.sizes[cls], bid,
                        io_uring_buf_ring_mask(spec_.counts[cls]), static_cast<int>(pending_[cls]));
  ++pending_[cls];
  counters_.in_use[cls].sub();
}

bool BufferPool::publish() {
  bool any = false;
  for (size_t c = 0; c < kBufferClasses; ++c) {
    if (!pending_[c]) continue;
    io_uring_buf_ring_advance(rings_[c], static_cast<int>(pending_[c]));
    pending_[c] = 0;
    any = true;
  }
  return any;
}

}  // namespace ringtunnel::ring

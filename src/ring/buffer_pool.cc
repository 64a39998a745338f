#include "ringtunnel/ring/buffer_pool.h"

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace ringtunnel::ring {

std::array<uint32_t, kBufferClasses> growth_steps(
    const BufferSizes& sizes, const std::array<uint32_t, kBufferClasses>& counts) {
  std::array<uint32_t, kBufferClasses> steps{};
  for (size_t c = 0; c < kBufferClasses; ++c) {
    const uint32_t by_bytes =
        std::bit_floor(uint32_t(std::max<size_t>(1, kGrowthBytes / sizes[c])));
    steps[c] = std::min(counts[c], std::max(by_bytes, std::max(1u, counts[c] / kMaxSteps)));
  }
  return steps;
}

BufferPool::~BufferPool() {
  if (fixed_bytes_) unregister_fixed();
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
    const uint32_t count = spec.counts[c];
    if (!std::has_single_bit(count) || count > 32768)
      return fmt::format("buffer class {}: {} buffers is not a power of two up to 32768", c, count);
    uint32_t& step = spec_.steps[c];
    if (!step) step = count;
    if (!std::has_single_bit(step) || step > count || count / step > kMaxSteps)
      return fmt::format(
          "buffer class {}: a step of {} of {} buffers is not a power of two from "
          "1/{} of them to all",
          c, step, count, kMaxSteps);
    step_shift_[c] = uint8_t(std::countr_zero(step));
    step_mask_[c] = step - 1;
    bytes_ += size_t{spec.sizes[c]} * count;
  }
  // MAP_NORESERVE: pages are touched only when the kernel first fills a buffer (or the fixed
  // buffer pins them), so the resident size follows the traffic, not the configured pool.
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
    add_step(c);
  }
  publish();
  return {};
}

void BufferPool::add_step(uint8_t cls) {
  const uint32_t step = step_mask_[cls] + 1;
  steps_at_[cls][provided_[cls] >> step_shift_[cls]] = frontier_;
  frontier_ += size_t{step} * spec_.sizes[cls];
  const int mask = io_uring_buf_ring_mask(spec_.counts[cls]);
  for (uint32_t i = 0; i < step; ++i) {
    const auto bid = static_cast<uint16_t>(provided_[cls] + i);
    io_uring_buf_ring_add(rings_[cls], data(cls, bid), spec_.sizes[cls], bid, mask,
                          static_cast<int>(pending_[cls]++));
  }
  provided_[cls] += step;
}

uint32_t BufferPool::grow(uint8_t cls) {
  const uint32_t before = provided_[cls];
  if (!base_ || before >= spec_.counts[cls]) return 0;
  do {
    add_step(cls);
  } while (low(cls));
  // The new steps lie right after the old prefix: the fixed buffer covers them once registered
  // again. In-flight sends keep the registration they were issued with. If this fails (the
  // pinned-memory limit), the fixed buffer keeps its old extent and sends from the new buffers
  // go without it (in_fixed()).
  if (fixed_bytes_) {
    iovec prefix{base_, frontier_};
    if (io_uring_register_buffers_update_tag(ring_, 0, &prefix, nullptr, 1) == 1)
      fixed_bytes_ = frontier_;
  }
  return provided_[cls] - before;
}

int BufferPool::register_fixed() {
  if (!ring_ || !base_) return -EINVAL;
  iovec prefix{base_, frontier_};
  if (int err = io_uring_register_buffers(ring_, &prefix, 1); err < 0) return err;
  fixed_bytes_ = frontier_;
  return 0;
}

void BufferPool::unregister_fixed() {
  if (!fixed_bytes_) return;
  io_uring_unregister_buffers(ring_);
  fixed_bytes_ = 0;
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

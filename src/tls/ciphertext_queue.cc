#include "ringtunnel/tls/ciphertext_queue.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ringtunnel::tls {

namespace {

// Cache-line aligned: AES-GCM and memcpy run a little faster on aligned buffers, and a block
// never shares a line with the allocator's bookkeeping.
constexpr size_t kBlockAlign = 64;

// Blocks are taken inside wolfSSL's callbacks, which an exception must not cross: out of memory
// ends the process, as it would at the next allocation anyway.
uint8_t* allocate_block(size_t bytes) {
  void* p = std::aligned_alloc(kBlockAlign, bytes);
  if (p == nullptr) {
    std::fputs("ringtunnel: out of memory for a TLS buffer block\n", stderr);
    std::abort();
  }
  return static_cast<uint8_t*>(p);
}

}  // namespace

BlockPool::~BlockPool() {
  for (uint8_t* b : small_)
    std::free(b);
  for (uint8_t* b : large_)
    std::free(b);
}

uint8_t* BlockPool::take(bool large) {
  ++out_;
  std::vector<uint8_t*>& spares = large ? large_ : small_;
  if (spares.empty()) return allocate_block(large ? kLargeBlockBytes : kSmallBlockBytes);
  // Last in, first out: the most recently used block is the one most likely still in cache.
  uint8_t* b = spares.back();
  spares.pop_back();
  return b;
}

void BlockPool::give_back(uint8_t* block, bool large) {
  --out_;
  std::vector<uint8_t*>& spares = large ? large_ : small_;
  if (spares.size() >= (large ? limits_.large_spares : limits_.small_spares)) {
    std::free(block);
    return;
  }
  spares.push_back(block);
}

void CiphertextQueue::append(const uint8_t* data, size_t len) {
  size_ += len;
  while (len > 0) {
    if (blocks_.empty() || blocks_.back().end == blocks_.back().capacity()) {
      // A small block while what is queued is small; bulk data goes into large ones.
      const bool large = size_ > kSmallBlockBytes;
      blocks_.push_back({pool_->take(large), 0, 0, large});
    }
    Block& b = blocks_.back();
    const size_t n = std::min<size_t>(len, b.capacity() - b.end);
    std::memcpy(b.data + b.end, data, n);
    b.end += uint32_t(n);
    data += n;
    len -= n;
  }
}

void CiphertextQueue::append_borrowed(uint8_t* data, size_t len) {
  if (len == 0) return;
  blocks_.push_back({data, 0, uint32_t(len), false, true});
  size_ += len;
}

void CiphertextQueue::settle() {
  // Borrowed blocks are the last ones (nothing is appended after them before this).
  size_t first = blocks_.size();
  while (first > 0 && blocks_[first - 1].borrowed)
    --first;
  if (first == blocks_.size()) return;
  // Moved aside first (into a vector kept for this, so settling allocates nothing once warm):
  // what is copied goes after the own blocks, in order.
  settling_.assign(blocks_.begin() + long(first), blocks_.end());
  blocks_.resize(first);
  for (const Block& b : settling_) {
    size_ -= b.end - b.begin;
    append(b.data + b.begin, b.end - b.begin);
  }
}

size_t CiphertextQueue::read(uint8_t* out, size_t cap) {
  size_t done = 0;
  while (done < cap && !blocks_.empty()) {
    Block& b = blocks_.front();
    const size_t n = std::min<size_t>(cap - done, b.end - b.begin);
    std::memcpy(out + done, b.data + b.begin, n);
    done += n;
    b.begin += uint32_t(n);
    if (b.begin == b.end) pop_front();
  }
  size_ -= done;
  return done;
}

size_t CiphertextQueue::peek(uint8_t* out, size_t cap) const {
  size_t done = 0;
  for (const Block& b : blocks_) {
    if (done == cap) break;
    const size_t n = std::min<size_t>(cap - done, b.end - b.begin);
    std::memcpy(out + done, b.data + b.begin, n);
    done += n;
  }
  return done;
}

uint8_t* CiphertextQueue::contiguous(size_t bytes) {
  Block& front = blocks_.front();
  if (front.end - front.begin >= bytes) return front.data + front.begin;
  const size_t missing = bytes - (front.end - front.begin);
  if (front.capacity() - front.end >= missing) {
    // A record begun in one of our blocks with room for the rest: only the rest moves.
    size_t moved = 0;
    while (moved < missing) {
      Block& next = blocks_[1];
      const size_t n = std::min<size_t>(missing - moved, next.end - next.begin);
      std::memcpy(blocks_.front().data + blocks_.front().end + moved, next.data + next.begin, n);
      next.begin += uint32_t(n);
      moved += n;
      if (next.begin == next.end) {
        release(next);
        blocks_.erase(blocks_.begin() + 1);
      }
    }
    blocks_.front().end += uint32_t(missing);
    return blocks_.front().data + blocks_.front().begin;
  }
  // Spans blocks (once per block boundary): gather it into a block of its own at the front.
  const bool large = bytes > kSmallBlockBytes;
  Block joined{pool_->take(large), 0, uint32_t(bytes), large};
  const size_t n = read(joined.data, bytes);
  size_ += n;
  blocks_.insert(blocks_.begin(), joined);
  return joined.data;
}

uint8_t* CiphertextQueue::reserve(size_t bytes) {
  if (blocks_.empty() || blocks_.back().capacity() - blocks_.back().end < bytes) {
    const bool large = bytes > kSmallBlockBytes || size_ + bytes > kSmallBlockBytes;
    blocks_.push_back({pool_->take(large), 0, 0, large});
  }
  return blocks_.back().data + blocks_.back().end;
}

std::span<const iovec> CiphertextQueue::iovecs(size_t max_iov) {
  iov_.clear();
  for (const Block& b : blocks_) {
    if (iov_.size() == max_iov) break;
    if (b.end > b.begin) iov_.push_back({b.data + b.begin, size_t(b.end - b.begin)});
  }
  return iov_;
}

void CiphertextQueue::consume(size_t bytes) {
  size_ -= bytes;
  while (bytes > 0) {
    Block& b = blocks_.front();
    const size_t n = std::min<size_t>(bytes, b.end - b.begin);
    b.begin += uint32_t(n);
    bytes -= n;
    if (b.begin == b.end) pop_front();
  }
}

void CiphertextQueue::clear() {
  for (const Block& b : blocks_)
    release(b);
  blocks_.clear();
  iov_.clear();
  size_ = 0;
}

void CiphertextQueue::pop_front() {
  release(blocks_.front());
  blocks_.erase(blocks_.begin());
}

}  // namespace ringtunnel::tls

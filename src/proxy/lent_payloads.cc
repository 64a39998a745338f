#include "ringtunnel/proxy/lent_payloads.h"

#include <cstring>

namespace ringtunnel::proxy {

void LentPayloads::lend(const uint8_t* data, uint32_t length, uint16_t bid, uint8_t cls) {
  if (!buffers_) buffers_ = std::make_unique<std::deque<Buffer>>();
  buffers_->push_back({data, length, length, bid, cls, nullptr});
  live_ += length;
}

bool LentPayloads::release(std::span<const uint8_t> piece, const GiveBack& give_back) {
  const auto at = reinterpret_cast<uintptr_t>(piece.data());
  auto contains = [&](const Buffer& b) {
    if (!b.data) return false;
    const uintptr_t off = at - reinterpret_cast<uintptr_t>(b.data);  // wraps when below
    return off < b.length && piece.size() <= b.length - off && piece.size() <= b.live;
  };
  // Sent pieces come from the front, an ended stream's unframed tail from the back: look at both
  // ends first, so the common cases cost one comparison.
  Buffer* hit = nullptr;
  if (empty()) return false;
  std::deque<Buffer>& q = *buffers_;
  if (contains(q.front())) {
    hit = &q.front();
  } else if (contains(q.back())) {
    hit = &q.back();
  } else {
    for (Buffer& b : q)
      if (contains(b)) {
        hit = &b;
        break;
      }
  }
  if (!hit) return false;
  hit->live -= uint32_t(piece.size());
  live_ -= uint32_t(piece.size());
  if (hit->heap) heap_live_ -= piece.size();
  if (hit->live == 0) {
    drop(*hit, give_back);
    trim();
  }
  return true;
}

void LentPayloads::drop(Buffer& b, const GiveBack& give_back) {
  if (b.heap) {
    heap_ -= b.length;
    b.heap.reset();
  } else if (b.data) {
    give_back(b.cls, b.bid);
  }
  b.data = nullptr;  // dropped; trim() removes it once it reaches an end
}

// Dropped buffers leave from both ends; one in the middle (never seen: releases come from the
// ends) waits until its neighbours go.
void LentPayloads::trim() {
  std::deque<Buffer>& q = *buffers_;
  while (!q.empty() && !q.front().data)
    q.pop_front();
  while (!q.empty() && !q.back().data)
    q.pop_back();
}

size_t LentPayloads::pool_length() const {
  size_t n = 0;
  if (!buffers_) return n;
  for (const Buffer& b : *buffers_)
    if (b.data && !b.heap) n += b.length;
  return n;
}

void LentPayloads::release_all(const GiveBack& give_back) {
  if (buffers_)
    for (Buffer& b : *buffers_)
      if (b.data) drop(b, give_back);
  buffers_.reset();  // the stream has ended: its slot keeps no memory
  live_ = 0;
  heap_live_ = 0;
}

size_t LentPayloads::to_heap(
    const std::function<void(const uint8_t*, const uint8_t*, size_t)>& moved,
    const GiveBack& give_back) {
  size_t added = 0;
  if (!buffers_) return added;
  for (Buffer& b : *buffers_) {
    if (!b.data || b.heap) continue;
    b.heap = std::make_unique_for_overwrite<uint8_t[]>(b.length);
    memcpy(b.heap.get(), b.data, b.length);
    moved(b.data, b.heap.get(), b.length);
    give_back(b.cls, b.bid);
    b.data = b.heap.get();
    heap_ += b.length;
    heap_live_ += b.live;
    added += b.length;
  }
  return added;
}

}  // namespace ringtunnel::proxy

// The receive buffers one HBONE stream has lent to its H2Session (TCP -> tunnel), tracked by
// address, so that a buffer goes back to the kernel only when no byte of it is referenced any
// more: not queued in the session, not framed in its output.
//
// The session releases pieces by address (h2/session.h): the bytes it has passed to TLS (in
// order, from the front), and, when a stream ends, its unframed tail (from the back) while the
// framed bytes before it are still referenced. Returning buffers by byte count "from the front"
// would hand the kernel a buffer that the output still points into; the kernel refills it with
// another connection's bytes, which are then encrypted and sent to this stream's peer.
//
// A lent buffer can also be moved out of the kernel-facing pool (to_heap()): its bytes are copied
// to memory owned here, the session is told to point at the copy, and the pool buffer goes back at
// once. That is how a stalled stream stops pinning receive buffers that other connections need.
//
//   lend() --> [pool buffer, live bytes] --release() until live == 0--> give back to the pool
//                      |
//                   to_heap() --> [heap copy, live bytes] --release() until 0--> freed
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>

namespace ringtunnel::proxy {

class LentPayloads {
 public:
  struct Buffer {
    const uint8_t* data;  // what was lent: the pool buffer, or the heap copy after to_heap()
    uint32_t length;      // bytes lent
    uint32_t live;        // of those, still referenced by the session
    uint16_t bid;         // the pool buffer (meaningless once on the heap)
    uint8_t cls;
    std::unique_ptr<uint8_t[]> heap;  // set after to_heap()
  };
  // Called once for each pool buffer that nothing references any more.
  using GiveBack = std::function<void(uint8_t cls, uint16_t bid)>;

  // [data, data+length) of pool buffer (cls, bid) was given to the session.
  void lend(const uint8_t* data, uint32_t length, uint16_t bid, uint8_t cls);
  // The session no longer references `piece` (inside one lent span). Returns false, and changes
  // nothing, if no lent buffer contains it: the caller has a bug, not the peer.
  bool release(std::span<const uint8_t> piece, const GiveBack& give_back);
  // Everything still lent goes back (the session has dropped every reference: it closed the
  // stream or was destroyed).
  void release_all(const GiveBack& give_back);
  // Copies every pool buffer still referenced to the heap; `moved(from, to, length)` must
  // re-point the session's references before the pool buffer is given back. Returns the heap
  // bytes added.
  size_t to_heap(const std::function<void(const uint8_t*, const uint8_t*, size_t)>& moved,
                 const GiveBack& give_back);

  uint32_t live_bytes() const { return live_; }
  // Heap bytes held for copies (for the worker's memory budget).
  size_t heap_bytes() const { return heap_; }
  // Pool bytes still referenced.
  uint32_t pool_bytes() const { return live_ - uint32_t(heap_live_); }
  // The heap to_heap() would take: the whole length of every pool buffer still lent.
  size_t pool_length() const;
  bool empty() const { return !buffers_ || buffers_->empty(); }

 private:
  void drop(Buffer& b, const GiveBack& give_back);
  void trim();

  // Made by the first lend(), dropped by release_all(): a stream that carries nothing from its
  // TCP side (an idle one) holds no deque (libstdc++'s allocates about 600 bytes when made).
  std::unique_ptr<std::deque<Buffer>> buffers_;
  uint32_t live_ = 0;
  size_t heap_ = 0;
  size_t heap_live_ = 0;
};

}  // namespace ringtunnel::proxy

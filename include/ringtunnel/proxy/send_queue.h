// What a relay direction has read and not yet sent: a ring of chunks, each a receive buffer (or
// what is left of it) or, once a stalled direction has been moved out of the pool, a heap copy.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace ringtunnel::proxy {

struct Chunk {
  uint32_t offset;
  uint32_t length;
  uint16_t bid;
  uint8_t cls;
  uint8_t* heap = nullptr;  // owned; set: the bytes are at heap + offset, not in the pool
};

// A direction's queue while it has bytes to send. Pooled per worker (SendQueuePool), so an idle
// connection holds none: the 1.6 KiB of gather space would otherwise dominate its memory.
struct SendQueue {
  // Enough iovecs for 16 MiB of largest-class buffers in one send; more waits for the next.
  static constexpr unsigned kMaxGather = 64;

  std::vector<Chunk> chunks = std::vector<Chunk>(kMaxGather);  // ring; grows when full
  uint32_t head = 0;
  uint32_t count = 0;
  std::array<iovec, kMaxGather> iov{};
  msghdr msg{};

  Chunk& at(uint32_t i) { return chunks[(head + i) % chunks.size()]; }
  const Chunk& at(uint32_t i) const { return chunks[(head + i) % chunks.size()]; }
  // Never drops: completions already in flight when a pause was asked for can overfill the
  // ring, which then doubles, keeping the order.
  void push(const Chunk& c);
  void pop() {
    head = static_cast<uint32_t>((head + 1) % chunks.size());
    --count;
  }
};

// The worker's spare queues.
class SendQueuePool {
 public:
  SendQueue* take();
  // An empty queue (its chunks already freed) goes back for reuse.
  void give(SendQueue* q);
  size_t spare() const { return spare_.size(); }

 private:
  std::vector<std::unique_ptr<SendQueue>> spare_;
};

}  // namespace ringtunnel::proxy

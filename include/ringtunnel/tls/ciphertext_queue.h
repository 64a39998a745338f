// Ciphertext on its way between a socket and wolfSSL, kept in large blocks that are recycled.
//
// Outbound, wolfSSL's send callback appends each finished record (the one copy it forces), and the
// connection hands the kernel every queued block in one gathered send. Inbound, each ring read
// is appended and wolfSSL's receive callback copies records out. A queue holds blocks only while
// it holds bytes, so an idle connection holds no ciphertext memory at all.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace ringtunnel::tls {

// Block sizes. Small: one full TLS record's plaintext (the write staging buffer is one) and
// enough for a handshake flight or a burst of small frames, so a quiet connection that
// queues a few hundred bytes does not pin 256 KiB. Large: what bulk transfers append into, ~16
// records of 16 KiB, so a gathered send of several MiB needs only tens of iovecs.
// A small block also holds the longest record a peer may send (5 + 2^14 + 256 bytes), so that
// a record begun in one can be completed in place.
inline constexpr size_t kSmallBlockBytes = 17 * 1024;
inline constexpr size_t kLargeBlockBytes = 256 * 1024;

// Recycles blocks among the queues of one worker. Not thread-safe: one per worker thread.
class BlockPool {
 public:
  struct Limits {
    // Spare blocks kept for reuse; blocks given back beyond this are freed. 4 MiB of large
    // spares covers a few connections in bulk transfer without keeping much memory when idle.
    size_t small_spares = 256;
    size_t large_spares = 16;
  };

  BlockPool() = default;
  explicit BlockPool(Limits limits) : limits_(limits) {}
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;
  ~BlockPool();

  // A block of kSmallBlockBytes (large == false) or kLargeBlockBytes. Never fails (aborts on
  // out-of-memory, as operator new does).
  uint8_t* take(bool large);
  void give_back(uint8_t* block, bool large);

  size_t blocks_out() const { return out_; }
  size_t spare_bytes() const {
    return small_.size() * kSmallBlockBytes + large_.size() * kLargeBlockBytes;
  }

 private:
  Limits limits_;
  std::vector<uint8_t*> small_;
  std::vector<uint8_t*> large_;
  size_t out_ = 0;
};

// A FIFO of bytes in pool blocks. Appending never moves bytes already queued, so iovecs taken
// from iovecs() stay valid across append() until consume() passes them.
class CiphertextQueue {
 public:
  explicit CiphertextQueue(BlockPool& pool) : pool_(&pool) {}
  CiphertextQueue(const CiphertextQueue&) = delete;
  CiphertextQueue& operator=(const CiphertextQueue&) = delete;
  ~CiphertextQueue() { clear(); }

  void append(const uint8_t* data, size_t len);
  // Queues `len` bytes at `data` without copying them: the memory stays the caller's, and is
  // read (and may be written: records are opened in place) until settle(), which the caller
  // must call before the memory is reused and before the next append.
  void append_borrowed(uint8_t* data, size_t len);
  // Copies what is still queued of borrowed memory into the queue's own blocks.
  void settle();
  // Copies up to `cap` bytes from the front into `out` and drops them; returns how many.
  size_t read(uint8_t* out, size_t cap);
  // Copies up to `cap` bytes from the front into `out` and keeps them queued; returns how many.
  size_t peek(uint8_t* out, size_t cap) const;
  // The first `bytes` (<= size(), <= kLargeBlockBytes) in one piece of memory: where they lie
  // in one block already, there; else they are moved into a block of their own first. The
  // memory stays put until consume() passes it, and may be written (decrypted in place).
  uint8_t* contiguous(size_t bytes);
  // Room for `bytes` (<= kLargeBlockBytes) at the back, in one piece: fill it, then commit()
  // what was written. Nothing is queued until commit().
  uint8_t* reserve(size_t bytes);
  void commit(size_t bytes) {
    blocks_.back().end += uint32_t(bytes);
    size_ += bytes;
  }
  // The queued bytes as at most `max_iov` iovecs, front first. Valid until the next call of
  // iovecs(), consume() or clear() (append() leaves them valid).
  std::span<const iovec> iovecs(size_t max_iov);
  // Drops `bytes` (<= size()) from the front; emptied blocks go back to the pool.
  void consume(size_t bytes);
  void clear();

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t blocks() const { return blocks_.size(); }

 private:
  struct Block {
    uint8_t* data;
    uint32_t begin;
    uint32_t end;
    bool large;
    bool borrowed = false;  // the caller's memory (append_borrowed): never given to the pool
    uint32_t capacity() const {
      return borrowed ? end : uint32_t(large ? kLargeBlockBytes : kSmallBlockBytes);
    }
  };
  void pop_front();
  void release(const Block& b) {
    if (!b.borrowed) pool_->give_back(b.data, b.large);
  }

  BlockPool* pool_;
  std::vector<Block> blocks_;
  std::vector<iovec> iov_;
  std::vector<Block> settling_;  // settle()'s, reused
  size_t size_ = 0;
};

}  // namespace ringtunnel::tls

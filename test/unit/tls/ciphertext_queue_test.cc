#include "ringtunnel/tls/ciphertext_queue.h"

#include <string>

#include <doctest/doctest.h>

using namespace ringtunnel::tls;

namespace {

std::string pattern(size_t n, size_t seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i)
    s[i] = char((i * 131 + seed) % 251);
  return s;
}

void append(CiphertextQueue& q, const std::string& s) {
  q.append(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string gather(CiphertextQueue& q) {
  std::string out;
  for (const iovec& v : q.iovecs(1024))
    out.append(static_cast<const char*>(v.iov_base), v.iov_len);
  return out;
}

}  // namespace

TEST_CASE("a small amount takes one small block; bulk goes into large blocks") {
  BlockPool pool;
  CiphertextQueue q(pool);
  CHECK(q.empty());
  append(q, pattern(100, 1));
  CHECK(q.blocks() == 1);
  CHECK(pool.blocks_out() == 1);
  const std::string bulk = pattern(kLargeBlockBytes * 2, 2);
  append(q, bulk);
  // The small block fills first, then large ones: 100 + 2 * 256 KiB fits in 1 + 2 blocks.
  CHECK(q.blocks() == 3);
  CHECK(q.size() == 100 + bulk.size());
  CHECK(gather(q) == pattern(100, 1) + bulk);
  q.clear();
  CHECK(pool.blocks_out() == 0);
}

TEST_CASE("consume() and read() take from the front across block boundaries") {
  BlockPool pool;
  CiphertextQueue q(pool);
  const std::string data = pattern(3 * kLargeBlockBytes + 77, 3);
  append(q, data);
  q.consume(kSmallBlockBytes - 1);
  q.consume(2);
  CHECK(gather(q) == data.substr(kSmallBlockBytes + 1));
  std::string out(kLargeBlockBytes, '\0');
  const size_t n = q.read(reinterpret_cast<uint8_t*>(out.data()), out.size());
  CHECK(n == out.size());
  CHECK(out == data.substr(kSmallBlockBytes + 1, kLargeBlockBytes));
  const size_t rest = q.size();
  CHECK(rest == data.size() - kSmallBlockBytes - 1 - kLargeBlockBytes);
  q.consume(rest);
  CHECK(q.empty());
  CHECK(q.blocks() == 0);
  CHECK(pool.blocks_out() == 0);
}

TEST_CASE("iovecs stay valid across append, and max_iov bounds them") {
  BlockPool pool;
  CiphertextQueue q(pool);
  append(q, pattern(kSmallBlockBytes + 10, 4));
  const std::span<const iovec> before = q.iovecs(1);
  REQUIRE(before.size() == 1);
  const void* base = before[0].iov_base;
  append(q, pattern(kLargeBlockBytes, 5));
  CHECK(q.iovecs(1024)[0].iov_base == base);
  CHECK(q.iovecs(2).size() == 2);
}

TEST_CASE("the pool reuses blocks and keeps at most its limit of spares") {
  BlockPool pool(BlockPool::Limits{1, 1});
  uint8_t* a = pool.take(true);
  uint8_t* b = pool.take(true);
  pool.give_back(a, true);
  pool.give_back(b, true);  // beyond the limit: freed
  CHECK(pool.spare_bytes() == kLargeBlockBytes);
  CHECK(pool.take(true) == a);
  pool.give_back(a, true);
  CHECK(pool.blocks_out() == 0);
}

TEST_CASE("borrowed memory is read in place until settle() copies what is left of it") {
  BlockPool pool;
  CiphertextQueue q(pool);
  std::string a = pattern(1000, 3), b = pattern(50000, 4);
  const std::string expect = a + b;
  q.append_borrowed(reinterpret_cast<uint8_t*>(a.data()), a.size());
  q.append_borrowed(reinterpret_cast<uint8_t*>(b.data()), b.size());
  CHECK(pool.blocks_out() == 0);  // nothing copied yet
  CHECK(q.size() == expect.size());
  // The first 600 bytes lie in `a`: handed out where they are.
  CHECK(q.contiguous(600) == reinterpret_cast<uint8_t*>(a.data()));
  q.consume(600);
  // 800 bytes across the two borrowed pieces: joined in a block of the queue's own.
  const uint8_t* joined = q.contiguous(800);
  CHECK(std::string(reinterpret_cast<const char*>(joined), 800) == expect.substr(600, 800));
  q.consume(800);
  q.settle();
  // The caller may now reuse its memory: the queue holds its own copy of the rest.
  a.assign(a.size(), 'x');
  b.assign(b.size(), 'x');
  CHECK(gather(q) == expect.substr(1400));
  q.clear();
  CHECK(pool.blocks_out() == 0);
}

TEST_CASE("a record begun in an own block is completed in place with only its rest copied") {
  BlockPool pool;
  CiphertextQueue q(pool);
  const std::string head = pattern(9000, 5);
  std::string tail = pattern(30000, 6);
  append(q, head);  // one small block, with room for a whole record
  q.append_borrowed(reinterpret_cast<uint8_t*>(tail.data()), tail.size());
  const size_t record = 5 + 16384 + 256;  // the longest a peer may send
  REQUIRE(record <= kSmallBlockBytes);
  const uint8_t* p = q.contiguous(record);
  CHECK(pool.blocks_out() == 1);  // no second block: the rest went after the head
  CHECK(std::string(reinterpret_cast<const char*>(p), record) == (head + tail).substr(0, record));
  q.consume(record);
  q.settle();
  tail.assign(tail.size(), 'x');
  CHECK(gather(q) == (head + pattern(30000, 6)).substr(record));
}

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

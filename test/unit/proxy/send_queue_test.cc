// SendQueue (a relay direction's chunks not yet sent) and the worker's pool of them.
#include "ringtunnel/proxy/send_queue.h"

#include <vector>

#include <doctest/doctest.h>

using ringtunnel::proxy::Chunk;
using ringtunnel::proxy::SendQueue;
using ringtunnel::proxy::SendQueuePool;

namespace {

Chunk chunk(uint16_t n) {
  return {n, uint32_t(n) + 1, n, uint8_t(n % 3)};
}

std::vector<uint16_t> bids(const SendQueue& q) {
  std::vector<uint16_t> out;
  for (uint32_t i = 0; i < q.count; ++i)
    out.push_back(q.at(i).bid);
  return out;
}

}  // namespace

TEST_CASE("SendQueue: push and pop go around the ring in order") {
  SendQueue q;
  REQUIRE(q.chunks.size() == SendQueue::kMaxGather);
  for (uint16_t i = 0; i < 50; ++i)
    q.push(chunk(i));
  for (int i = 0; i < 40; ++i)
    q.pop();
  for (uint16_t i = 50; i < 90; ++i)  // past the end of the vector: wraps to its start
    q.push(chunk(i));
  CHECK(q.chunks.size() == SendQueue::kMaxGather);  // 50 fit: no growth
  CHECK(q.head == 40);
  CHECK(q.count == 50);
  std::vector<uint16_t> expected;
  for (uint16_t i = 40; i < 90; ++i)
    expected.push_back(i);
  CHECK(bids(q) == expected);
  CHECK(q.at(0).offset == 40);
  CHECK(q.at(0).length == 41);
  CHECK(q.at(0).cls == 1);
}

TEST_CASE("SendQueue: a full ring that wrapped doubles, keeping the order") {
  SendQueue q;
  for (uint16_t i = 0; i < 30; ++i)
    q.push(chunk(i));
  for (int i = 0; i < 30; ++i)
    q.pop();
  // The head is in the middle: the next 64 chunks fill the ring across its end.
  for (uint16_t i = 100; i < 164; ++i)
    q.push(chunk(i));
  REQUIRE(q.count == 64);
  REQUIRE(q.chunks.size() == 64);
  q.push(chunk(164));  // one more than it holds
  CHECK(q.chunks.size() == 128);
  CHECK(q.head == 0);
  CHECK(q.count == 65);
  std::vector<uint16_t> expected;
  for (uint16_t i = 100; i < 165; ++i)
    expected.push_back(i);
  CHECK(bids(q) == expected);
  // And again, far beyond: order kept through several doublings.
  for (uint16_t i = 165; i < 400; ++i)
    q.push(chunk(i));
  CHECK(q.chunks.size() == 512);
  for (int i = 0; i < 65; ++i)
    q.pop();
  CHECK(q.at(0).bid == 165);
  CHECK(q.at(q.count - 1).bid == 399);
}

TEST_CASE("SendQueuePool: a queue given back is reused, reset") {
  SendQueuePool pool;
  CHECK(pool.spare() == 0);
  SendQueue* q = pool.take();
  REQUIRE(q);
  for (uint16_t i = 0; i < 10; ++i)
    q->push(chunk(i));
  for (int i = 0; i < 10; ++i)
    q->pop();
  CHECK(q->head == 10);
  pool.give(q);
  CHECK(pool.spare() == 1);

  SendQueue* again = pool.take();
  CHECK(again == q);  // no new allocation
  CHECK(pool.spare() == 0);
  CHECK(again->head == 0);
  CHECK(again->count == 0);
  again->push(chunk(3));
  CHECK(again->at(0).bid == 3);

  SendQueue* other = pool.take();  // none spare: a new one
  CHECK(other != again);
  pool.give(again);
  pool.give(other);
  CHECK(pool.spare() == 2);
}

#include "ringtunnel/proxy/send_queue.h"

namespace ringtunnel::proxy {

void SendQueue::push(const Chunk& c) {
  if (count == chunks.size()) {
    std::vector<Chunk> grown(chunks.size() * 2);
    for (uint32_t i = 0; i < count; ++i)
      grown[i] = at(i);
    chunks.swap(grown);
    head = 0;
  }
  chunks[(head + count) % chunks.size()] = c;
  ++count;
}

SendQueue* SendQueuePool::take() {
  if (spare_.empty()) return new SendQueue;
  SendQueue* q = spare_.back().release();
  spare_.pop_back();
  return q;
}

void SendQueuePool::give(SendQueue* q) {
  q->head = q->count = 0;
  spare_.emplace_back(q);
}

}  // namespace ringtunnel::proxy

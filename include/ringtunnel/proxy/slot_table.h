// Slots for objects that completions name by (index, generation): relays, HBONE connections and
// streams. A released slot is reused with the next generation, so a late completion for its old
// object is recognised and dropped. Each slot is its own allocation and never moves, so a
// pointer to a live object stays valid while the table grows.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "ringtunnel/proxy/ops.h"
#include "ringtunnel/ring/op_tag.h"

namespace ringtunnel::proxy {

// T has a member `Slot slot` and `bool live() const`.
template <typename T>
class SlotTable {
 public:
  // A fresh T(args...) in a free slot, with its index and a new generation set. Generation 0
  // never names an object: worker-level operations use it. Null when the 2^24 indexes are all in
  // use.
  template <typename... Args>
  T* acquire(Args&&... args) {
    uint32_t index;
    uint32_t generation = 1;
    if (free_ != kNone) {
      index = free_;
      T& old = *slots_[index];
      free_ = old.slot.next_free;
      generation = (old.slot.generation + 1) & ring::OpTag::kGenerationMask;
      if (generation == 0) generation = 1;
      old.~T();
      new (&old) T(std::forward<Args>(args)...);
    } else if (slots_.size() <= ring::OpTag::kIndexMask) {
      index = uint32_t(slots_.size());
      slots_.push_back(std::make_unique<T>(std::forward<Args>(args)...));
    } else {
      return nullptr;
    }
    T& t = *slots_[index];
    t.slot.index = index;
    t.slot.generation = generation;
    ++live_;
    return &t;
  }

  void release(T& t) {
    t.slot.next_free = free_;
    free_ = t.slot.index;
    --live_;
  }

  // The object in slot `index` if it still has `generation`, else null. The caller checks
  // whether it is live (a released slot keeps its last generation until reused).
  T* find(uint32_t index, uint32_t generation) {
    T* t = index < slots_.size() ? slots_[index].get() : nullptr;
    return t && t->slot.generation == generation ? t : nullptr;
  }
  T* find(const Slot& slot) { return find(slot.index, slot.generation); }

  uint32_t live() const { return live_; }
  size_t size() const { return slots_.size(); }

  template <typename F>
  void for_each(F&& f) {
    for (auto& slot : slots_)
      f(*slot);
  }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  std::vector<std::unique_ptr<T>> slots_;
  uint32_t free_ = kNone;
  uint32_t live_ = 0;
};

}  // namespace ringtunnel::proxy

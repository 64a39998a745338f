// SlotTable: the slots completions name by (index, generation).
#include "ringtunnel/proxy/slot_table.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

using ringtunnel::proxy::Slot;
using ringtunnel::proxy::SlotTable;
using ringtunnel::ring::OpTag;

namespace {

struct Thing {
  Thing() = default;
  Thing(int a, std::string b) : a(a), b(std::move(b)) {}
  Slot slot;
  bool live() const { return true; }
  int a = 0;
  std::string b;
};

}  // namespace

TEST_CASE("SlotTable: a released slot is reused with the next generation, never 0") {
  SlotTable<Thing> table;
  Thing* t = table.acquire();
  REQUIRE(t);
  CHECK(t->slot.index == 0);
  CHECK(t->slot.generation == 1);  // generation 0 names no object
  CHECK(table.live() == 1);

  table.release(*t);
  CHECK(table.live() == 0);
  Thing* again = table.acquire();
  CHECK(again == t);  // the same slot, reused
  CHECK(again->slot.index == 0);
  CHECK(again->slot.generation == 2);

  // The last generation: the next one wraps past 0 to 1.
  table.release(*again);
  again->slot.generation = OpTag::kGenerationMask;
  Thing* wrapped = table.acquire();
  CHECK(wrapped->slot.index == 0);
  CHECK(wrapped->slot.generation == 1);
  table.release(*wrapped);
  CHECK(table.acquire()->slot.generation == 2);
}

TEST_CASE("SlotTable: find with a stale generation or an index never used is null") {
  SlotTable<Thing> table;
  Thing* t = table.acquire();
  const Slot old = t->slot;
  CHECK(table.find(old) == t);
  CHECK(table.find(old.index, old.generation + 1) == nullptr);
  CHECK(table.find(7, 1) == nullptr);  // beyond the table

  table.release(*t);
  // Released and not yet reused: still found (the caller checks live()), by its last generation.
  CHECK(table.find(old) == t);
  Thing* next = table.acquire();
  REQUIRE(next == t);
  CHECK(table.find(old) == nullptr);  // the old object's completions no longer find it
  CHECK(table.find(next->slot) == next);
}

TEST_CASE("SlotTable: objects keep their address while the table grows, and free slots go first") {
  SlotTable<Thing> table;
  std::vector<Thing*> things;
  for (int i = 0; i < 1000; ++i) {
    Thing* t = table.acquire(i, std::to_string(i));
    REQUIRE(t);
    things.push_back(t);
  }
  CHECK(table.size() == 1000);
  CHECK(table.live() == 1000);
  for (int i = 0; i < 1000; ++i) {
    CHECK(things[size_t(i)]->slot.index == uint32_t(i));
    CHECK(table.find(uint32_t(i), 1) == things[size_t(i)]);  // the same address as at acquire
    CHECK(things[size_t(i)]->a == i);
  }

  // Released slots are taken again (last released first) before the table grows.
  table.release(*things[10]);
  table.release(*things[500]);
  CHECK(table.acquire()->slot.index == 500);
  CHECK(table.acquire()->slot.index == 10);
  CHECK(table.acquire()->slot.index == 1000);
  CHECK(table.size() == 1001);

  size_t visited = 0;
  table.for_each([&](Thing&) { ++visited; });
  CHECK(visited == 1001);
}

TEST_CASE("SlotTable: acquire forwards its arguments to a fresh object, in new and reused slots") {
  SlotTable<Thing> table;
  std::string moved = "a string long enough not to fit the small-string buffer";
  Thing* t = table.acquire(42, std::move(moved));
  CHECK(t->a == 42);
  CHECK(t->b == "a string long enough not to fit the small-string buffer");

  t->a = 7;
  t->b = "left over";
  table.release(*t);
  Thing* reused = table.acquire(5, std::string("fresh"));
  REQUIRE(reused == t);
  CHECK(reused->a == 5);  // constructed anew, nothing of the old object left
  CHECK(reused->b == "fresh");
  table.release(*reused);
  Thing* defaulted = table.acquire();
  CHECK(defaulted->a == 0);
  CHECK(defaulted->b.empty());
  CHECK(defaulted->slot.generation == 3);
}

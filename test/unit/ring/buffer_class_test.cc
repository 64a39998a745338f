#include "ringtunnel/ring/buffer_class.h"

#include <doctest/doctest.h>

using ringtunnel::ring::BufferClassPolicy;
using ringtunnel::ring::BufferSizes;

namespace {
const BufferSizes kSizes{1024, 16384, 262144};
}

TEST_CASE("a connection starts in the smallest class") {
  BufferClassPolicy p;
  CHECK(p.cls == 0);
}

TEST_CASE("a read that fills its buffer moves the direction up one class") {
  BufferClassPolicy p;
  CHECK(p.on_read(1024, 0, kSizes));
  CHECK(p.cls == 1);
  CHECK(p.on_read(16384, 1, kSizes));
  CHECK(p.cls == 2);
  SUBCASE("and never past the largest") {
    CHECK_FALSE(p.on_read(262144, 2, kSizes));
    CHECK(p.cls == 2);
  }
}

TEST_CASE("reads that do not fill the buffer keep the class") {
  BufferClassPolicy p;
  for (int i = 0; i < 100; ++i)
    CHECK_FALSE(p.on_read(1000, 0, kSizes));
  CHECK(p.cls == 0);
}

TEST_CASE("a full read from the old class during a class change moves nothing") {
  BufferClassPolicy p;
  p.on_read(1024, 0, kSizes);  // now class 1; a receive from class 0 may still complete
  CHECK_FALSE(p.on_read(1024, 0, kSizes));
  CHECK(p.cls == 1);
}

TEST_CASE("going quiet moves the direction back down, one class at a time") {
  BufferClassPolicy p;
  p.on_read(1024, 0, kSizes);
  p.on_read(16384, 1, kSizes);
  REQUIRE(p.cls == 2);
  for (int i = 1; i < BufferClassPolicy::kQuietReads; ++i)
    CHECK_FALSE(p.on_read(100, 2, kSizes));
  CHECK(p.on_read(100, 2, kSizes));
  CHECK(p.cls == 1);
  for (int i = 1; i < BufferClassPolicy::kQuietReads; ++i)
    CHECK_FALSE(p.on_read(100, 1, kSizes));
  CHECK(p.on_read(100, 1, kSizes));
  CHECK(p.cls == 0);
  for (int i = 0; i < 10; ++i)
    CHECK_FALSE(p.on_read(1, 0, kSizes));
  CHECK(p.cls == 0);
}

TEST_CASE("one medium read in a quiet run starts the count again") {
  BufferClassPolicy p;
  p.on_read(1024, 0, kSizes);
  p.on_read(16384, 1, kSizes);
  for (int i = 1; i < BufferClassPolicy::kQuietReads; ++i)
    p.on_read(100, 2, kSizes);
  CHECK_FALSE(p.on_read(20000, 2, kSizes));  // would not fit class 1: not quiet
  for (int i = 1; i < BufferClassPolicy::kQuietReads; ++i)
    CHECK_FALSE(p.on_read(100, 2, kSizes));
  CHECK(p.cls == 2);
  CHECK(p.on_read(100, 2, kSizes));
  CHECK(p.cls == 1);
}

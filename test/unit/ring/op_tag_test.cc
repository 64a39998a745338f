#include "ringtunnel/ring/op_tag.h"

#include <initializer_list>

#include <doctest/doctest.h>

using ringtunnel::ring::decode;
using ringtunnel::ring::encode;
using ringtunnel::ring::OpTag;

TEST_CASE("an op tag survives the round trip through user_data") {
  const OpTag tags[] = {
      {1, 1, 0, 0, 1},
      {15, 15, 255, OpTag::kIndexMask, OpTag::kGenerationMask},
      {2, 7, 1, 123456, 987654},
  };
  for (const OpTag& t : tags)
    CHECK(decode(encode(t)) == t);
}

TEST_CASE("fields do not bleed into each other") {
  const uint64_t a = encode({3, 4, 1, 5, 9});
  CHECK(decode(a).owner == 3);
  CHECK(decode(a).op == 4);
  CHECK(decode(a).lane == 1);
  CHECK(decode(a).index == 5);
  CHECK(decode(a).generation == 9);
  CHECK(encode({3, 4, 1, 5, 9}) != encode({2, 4, 1, 5, 9}));
  CHECK(encode({3, 4, 1, 5, 9}) != encode({3, 5, 1, 5, 9}));
  CHECK(encode({3, 4, 1, 5, 9}) != encode({3, 4, 1, 5, 10}));
  CHECK(encode({3, 4, 1, 5, 9}) != encode({3, 4, 0, 5, 9}));
  CHECK(encode({3, 4, 1, 5, 9}) != encode({3, 4, 1, 6, 9}));
  // An owner or op past 4 bits is masked, never carried into its neighbour.
  CHECK(decode(encode({0x13, 0, 0, 0, 0})).op == 0);
  CHECK(decode(encode({0, 0x14, 0, 0, 0})).lane == 0);
}

TEST_CASE("a generation wraps modulo 2^24, an index is masked to 24 bits") {
  CHECK(decode(encode({1, 1, 0, 0, OpTag::kGenerationMask + 2})).generation == 1);
  CHECK(decode(encode({1, 1, 0, OpTag::kIndexMask + 1, 1})).index == 0);
  CHECK(decode(encode({1, 1, 0, OpTag::kIndexMask + 1, 1})).generation == 1);
}

TEST_CASE("the index carries what the 8-bit lane cannot, such as listener 256 and up") {
  for (uint32_t listener : {0u, 255u, 256u, 299u, 65535u, OpTag::kIndexMask}) {
    const OpTag t = decode(encode({1, 1, 0, listener, 0}));
    CHECK(t.index == listener);
    CHECK(t.lane == 0);
  }
}

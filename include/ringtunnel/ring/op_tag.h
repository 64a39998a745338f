// The identity of one submitted operation, carried in the SQE's user_data and returned in its CQE.
//
// A completion can arrive after the object it belongs to has been closed and its slot reused:
// the generation tells the two apart, so a late completion is recognised and dropped.
#pragma once

#include <cstdint>

namespace ringtunnel::ring {

struct OpTag {
  // Which kind of object the operation belongs to, and what it was: both meanings belong to the
  // layer that submits (proxy/ops.h). Each is 4 bits.
  uint8_t owner = 0;
  uint8_t op = 0;
  uint8_t lane = 0;         // which part of the owner (a relay direction); 8 bits, so never a count
  uint32_t index = 0;       // owner slot, < 2^24
  uint32_t generation = 0;  // owner slot's generation, taken modulo 2^24

  static constexpr uint32_t kOwnerBits = 4;
  static constexpr uint32_t kOpBits = 4;
  static constexpr uint32_t kIndexBits = 24;
  static constexpr uint32_t kGenerationBits = 24;
  static constexpr uint8_t kOwnerMask = (1u << kOwnerBits) - 1;
  static constexpr uint8_t kOpMask = (1u << kOpBits) - 1;
  static constexpr uint32_t kIndexMask = (1u << kIndexBits) - 1;
  static constexpr uint32_t kGenerationMask = (1u << kGenerationBits) - 1;

  friend constexpr bool operator==(const OpTag&, const OpTag&) = default;
};

// Layout, low to high: owner (4 bits), op (4), lane (8), index (24), generation (24).
constexpr uint64_t encode(OpTag tag) {
  return uint64_t{uint8_t(tag.owner & OpTag::kOwnerMask)} |
         uint64_t{uint8_t(tag.op & OpTag::kOpMask)} << 4 | uint64_t{tag.lane} << 8 |
         uint64_t{tag.index & OpTag::kIndexMask} << 16 |
         uint64_t{tag.generation & OpTag::kGenerationMask} << 40;
}

constexpr OpTag decode(uint64_t user_data) {
  return OpTag{static_cast<uint8_t>(user_data & OpTag::kOwnerMask),
               static_cast<uint8_t>((user_data >> 4) & OpTag::kOpMask),
               static_cast<uint8_t>(user_data >> 8),
               static_cast<uint32_t>(user_data >> 16) & OpTag::kIndexMask,
               static_cast<uint32_t>(user_data >> 40) & OpTag::kGenerationMask};
}

}  // namespace ringtunnel::ring

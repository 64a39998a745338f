// The identity of one submitted operation, carried in the SQE's user_data and returned in its CQE.
//
// A completion can arrive after the connection it belongs to has been closed and its slot reused:
// the generation tells the two apart, so a late completion is recognised and dropped.
#pragma once

#include <cstdint>

namespace ringtunnel::ring {

struct OpTag {
  uint8_t kind = 0;         // what the operation was; the meaning belongs to the layer that submits
  uint8_t lane = 0;         // which part of the owner (a relay direction); 8 bits, so never a count
  uint32_t index = 0;       // owner slot, < 2^24
  uint32_t generation = 0;  // owner slot's generation, taken modulo 2^24

  static constexpr uint32_t kIndexBits = 24;
  static constexpr uint32_t kGenerationBits = 24;
  static constexpr uint32_t kIndexMask = (1u << kIndexBits) - 1;
  static constexpr uint32_t kGenerationMask = (1u << kGenerationBits) - 1;

  friend constexpr bool operator==(const OpTag&, const OpTag&) = default;
};

// Layout, low to high: kind (8 bits), lane (8), index (24), generation (24).
constexpr uint64_t encode(OpTag tag) {
  return uint64_t{tag.kind} | uint64_t{tag.lane} << 8 |
         uint64_t{tag.index & OpTag::kIndexMask} << 16 |
         uint64_t{tag.generation & OpTag::kGenerationMask} << 40;
}

constexpr OpTag decode(uint64_t user_data) {
  return OpTag{static_cast<uint8_t>(user_data), static_cast<uint8_t>(user_data >> 8),
               static_cast<uint32_t>(user_data >> 16) & OpTag::kIndexMask,
               static_cast<uint32_t>(user_data >> 40) & OpTag::kGenerationMask};
}

}  // namespace ringtunnel::ring

// What a completion belongs to (Owner) and what it was (Op): the two 4-bit halves of an op tag's
// first byte (ring/op_tag.h). Completion routing switches on the owner, and every owner's
// handler switches over every Op with no default, so an Op added here fails the build
// (-Wswitch) until each owner says what it does with it.
#pragma once

#include <cstdint>
#include <string_view>

#include "ringtunnel/ring/op_tag.h"

namespace ringtunnel::proxy {

enum class Owner : uint8_t {
  none,    // never submitted: a completion tagged so is a bug
  worker,  // the loop itself: accepts (index: the listener), the wake read, listener cancels
  relay,   // a TCP relay (index: its slot)
  conn,    // an HBONE connection
  stream,  // an HBONE stream
};

enum class Op : uint8_t {
  none,
  connect,
  connect_timeout,  // the timeout linked to a connect
  recv,
  send,
  shutdown,
  cancel,
  close,
  poll,  // --tcp-splice: readiness before an inbound splice
  splice_in,
  splice_out,
  accept,
  wake,
};

static_assert(uint8_t(Owner::stream) <= ring::OpTag::kOwnerMask);
static_assert(uint8_t(Op::wake) <= ring::OpTag::kOpMask);

// Where an object lives in its table: completions name it by (index, generation).
struct Slot {
  uint32_t index = 0;
  uint32_t generation = 0;
  uint32_t next_free = 0;
};

constexpr uint64_t op_tag(Owner owner, Op op, uint8_t lane, uint32_t index, uint32_t generation) {
  return ring::encode({uint8_t(owner), uint8_t(op), lane, index, generation});
}

std::string_view to_string(Op op);

}  // namespace ringtunnel::proxy

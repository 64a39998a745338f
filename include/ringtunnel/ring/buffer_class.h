// Which receive-buffer size class a connection direction reads into.
//
// A connection starts in the smallest class, so a mostly idle or chatty connection holds little
// memory per read. A read that fills its buffer shows the socket had at least that much waiting:
// the direction moves up one class at once (bulk transfers reach the largest class after two
// reads). A run of reads that would have fit in the class below moves it back down, so a
// connection that has gone quiet after a burst stops taking large buffers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace ringtunnel::ring {

inline constexpr size_t kBufferClasses = 3;
using BufferSizes = std::array<uint32_t, kBufferClasses>;

struct BufferClassPolicy {
  // Consecutive reads that fit the class below before moving down: a few, so one short read in
  // the middle of a bulk transfer (the tail of a burst) does not cost a class change.
  static constexpr uint8_t kQuietReads = 4;

  uint8_t cls = 0;
  uint8_t small_reads = 0;

  // Accounts one read of `bytes` into a buffer of class `read_cls` (which may differ from `cls`
  // while a class change is under way). Returns true when `cls` changed.
  bool on_read(size_t bytes, uint8_t read_cls, const BufferSizes& sizes);
};

}  // namespace ringtunnel::ring

#include "ringtunnel/ring/buffer_class.h"

namespace ringtunnel::ring {

bool BufferClassPolicy::on_read(size_t bytes, uint8_t read_cls, const BufferSizes& sizes) {
  if (bytes >= sizes[read_cls]) {
    small_reads = 0;
    if (read_cls >= cls && read_cls + 1u < kBufferClasses) {
      cls = static_cast<uint8_t>(read_cls + 1);
      return true;
    }
    return false;
  }
  if (cls == 0 || bytes > sizes[cls - 1]) {
    small_reads = 0;
    return false;
  }
  if (++small_reads < kQuietReads) return false;
  small_reads = 0;
  --cls;
  return true;
}

}  // namespace ringtunnel::ring

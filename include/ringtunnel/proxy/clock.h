// The two clocks of the proxy: monotonic for deadlines and durations, wall time for the access
// log's start.
#pragma once

#include <cstdint>

namespace ringtunnel::proxy {

uint64_t monotonic_ns();
int64_t unix_ms();

}  // namespace ringtunnel::proxy

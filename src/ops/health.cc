#include "ringtunnel/ops/health.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace ringtunnel::ops {

std::string format_utc_iso(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", tm);
}

Health::Verdict Health::readiness(std::time_t now) const {
  if (draining.load(std::memory_order_acquire)) return {false, "draining"};
  const unsigned expected = workers_expected.load(std::memory_order_acquire);
  const unsigned ready = workers_ready.load(std::memory_order_acquire);
  if (expected == 0 || ready < expected)
    return {false, fmt::format("workers starting ({} of {} ready)", ready, expected)};
  if (config_needed.load(std::memory_order_acquire) &&
      !config_loaded.load(std::memory_order_acquire))
    return {false, "workload config not loaded"};
  if (identity_needed.load(std::memory_order_acquire)) {
    const int64_t not_after = cert_not_after.load(std::memory_order_acquire);
    const int64_t not_before = cert_not_before.load(std::memory_order_acquire);
    if (not_after == 0) return {false, "certificate not loaded"};
    if (now > not_after)
      return {false, fmt::format("certificate expired at {}", format_utc_iso(not_after))};
    if (now < not_before)
      return {false, fmt::format("certificate not valid before {}", format_utc_iso(not_before))};
  }
  return {true, "ready"};
}

}  // namespace ringtunnel::ops

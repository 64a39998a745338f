// libFuzzer target: parse_authority() on arbitrary text. Beyond "no crash": whatever it accepts
// prints back (Endpoint::to_string) as an authority that parses to the same address, so one
// address has one spelling in policy and logs.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "ringtunnel/h2/authority.h"

using ringtunnel::h2::AuthorityError;
using ringtunnel::h2::parse_authority;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ringtunnel::net::Endpoint first;
  if (parse_authority(text, first) != AuthorityError::ok) return 0;
  if (first.family() != AF_INET && first.family() != AF_INET6) abort();
  const std::string printed = first.to_string();
  ringtunnel::net::Endpoint second;
  if (parse_authority(printed, second) != AuthorityError::ok) abort();
  if (second.length != first.length || std::memcmp(&second.storage, &first.storage, first.length))
    abort();
  // The canonical spelling is a fixed point.
  if (second.to_string() != printed) abort();
  // IPv4 text is already canonical: accepted means printed back unchanged.
  if (!text.empty() && text[0] != '[' && printed != text) abort();
  return 0;
}

// Command-line flags -> Config. Every flag is described once, in a table that also writes --help.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/config/config.h"

namespace ringtunnel::config {

struct FlagsResult {
  enum class Action { run, help, version, usage_error } action = Action::run;
  Config config;
  std::string error;  // for usage_error: names the flag, the value and the reason
};

FlagsResult parse_flags(const std::vector<std::string_view>& args);
std::string help_text();

// Value parsers, exposed for tests. Each returns "" or the reason the text is not valid.
std::string parse_duration_ms(std::string_view text, int64_t& out);
std::string parse_size(std::string_view text, uint64_t& out);
std::string parse_forward(std::string_view text, Route& out);
// "CIDR[:PORTS]" of --allow-dest: a.b.c.d/n or [x::y]/n (a bare address: /32 or /128), then
// optionally ':' and N, N-M or a comma list of those.
std::string parse_allow_dest(std::string_view text, AllowDest& out);

}  // namespace ringtunnel::config

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

// The environment variables that give flags their defaults, as a mesh node proxy's deployment
// sets them; a flag given on the command line wins. Unset and empty are the same.
struct Environment {
  std::string local_xds_path;       // LOCAL_XDS_PATH: --config
  std::string proxy_workload_info;  // PROXY_WORKLOAD_INFO: --workload
  static Environment from_process();
};

// `env` defaults to none: parsing depends on the arguments only, unless main passes
// Environment::from_process().
FlagsResult parse_flags(const std::vector<std::string_view>& args, const Environment& env = {});
// Each flag's description ends with "Default: X.", X being the flag's value in Config{} as
// formatted by its row of the table: Config's member initializers are the only defaults.
std::string help_text();

// The flag table, for tests.
struct FlagInfo {
  const char* name;     // "--max-queued"
  const char* metavar;  // nullptr: a switch that takes no value
  // The default as --help shows it ("2m", "off", "one per online CPU"); empty for a flag
  // without a single default value (--forward, --allow-dest, --cert, --help, ...).
  std::string default_text;
  // The flag's value in a Config, spelled as the flag accepts it; nullptr where default_text
  // is empty.
  std::string (*shown)(const Config&);
};
std::vector<FlagInfo> flag_table();

// Value formatters, the inverses of the parsers below: format_size gives the largest binary
// unit that divides `bytes` exactly ("16k", "2m", "1g", "1000"); format_duration_ms gives whole
// seconds where it can ("60s", "5s"), else milliseconds ("300ms").
std::string format_size(uint64_t bytes);
std::string format_duration_ms(int64_t ms);

// Value parsers, exposed for tests. Each returns "" or the reason the text is not valid.
std::string parse_duration_ms(std::string_view text, int64_t& out);
std::string parse_size(std::string_view text, uint64_t& out);
std::string parse_forward(std::string_view text, Route& out);
// "CIDR[:PORTS]" of --allow-dest: a.b.c.d/n or [x::y]/n (a bare address: /32 or /128), then
// optionally ':' and N, N-M or a comma list of those.
std::string parse_allow_dest(std::string_view text, AllowDest& out);
// "NS/NAME/SA" of --workload: three non-empty parts, no other '/'.
std::string parse_workload_info(std::string_view text, Config& out);
// --mark: decimal, or hex after 0x, up to 0xffffffff.
std::string parse_mark(std::string_view text, uint32_t& out);

}  // namespace ringtunnel::config

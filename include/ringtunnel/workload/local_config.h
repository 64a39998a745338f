// Reads a local config file (YAML): top-level `workloads`, `services` and `policies`, camelCase
// fields, the file format's defaults, unknown fields rejected where the format rejects them.
//
// Nothing here throws: a bad file yields a ConfigError naming the file, the line and column of
// the offending node, the field path (`workloads[1].protocol`) and the reason. Unknown fields in
// the few places the format ignores them (a policy's matches, serviceAccounts entries, locality,
// cidrVips entries) are accepted and reported as warnings, since a typo there silently empties a
// condition.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/workload/model.h"

namespace ringtunnel::workload {

struct ConfigError {
  std::string file;
  int line = 0;      // 1-based; 0 when unknown (e.g. the file could not be read)
  int column = 0;    // 1-based
  std::string path;  // e.g. "workloads[1].protocol"; "" for the document itself
  std::string reason;

  // "cfg.yaml:12:5: workloads[1].protocol: expected HBONE or TCP, got \"UDP\""
  std::string to_string() const;
};

struct ConfigWarning {
  int line = 0;
  int column = 0;
  std::string path;
  std::string reason;
};

struct LoadResult {
  LocalConfig config;  // empty when error is set
  std::optional<ConfigError> error;
  std::vector<ConfigWarning> warnings;

  bool ok() const { return !error.has_value(); }
};

// Parses `yaml`; `file` only names it in errors.
LoadResult parse_local_config(std::string_view yaml, std::string_view file);

// Reads and parses the file at `path`.
LoadResult load_local_config(const std::string& path);

}  // namespace ringtunnel::workload

#include "ringtunnel/proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace ringtunnel::proxy {

namespace {

// Appends `value` in double quotes: '"' and '\' escaped by a backslash, every byte that `kept`
// refuses as \xNN.
template <typename Kept>
void append_quoted(std::string& out, std::string_view value, Kept kept) {
  out += '"';
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (kept(byte)) {
      out += c;
    } else {
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", byte);
    }
  }
  out += '"';
}

}  // namespace

void append_log_value(std::string& out, std::string_view value) {
  auto plain = [](unsigned char c) {
    return c > ' ' && c < 0x7f && c != '"' && c != '\\' && c != '=';
  };
  if (std::all_of(value.begin(), value.end(), plain))
    out += value;
  else
    append_quoted(out, value, plain);
}

void append_access_line(std::string& out, const AccessRecord& r, std::string_view reason) {
  const time_t secs = static_cast<time_t>(r.start_unix_ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  out += "access listener=";
  append_log_value(out, r.listener);
  out += " client=";
  append_log_value(out, r.client);
  out += " target=";
  append_log_value(out, r.target);
  fmt::format_to(std::back_inserter(out), " bytes_up={} bytes_down={} duration_ms={} end={}",
                 r.bytes_up, r.bytes_down, r.duration_ms, to_string(r.end));
  if (!r.src_identity.empty() || !r.dst_identity.empty()) {
    out += " src_identity=";
    append_log_value(out, r.src_identity.empty() ? "-" : r.src_identity);
    out += " dst_identity=";
    append_log_value(out, r.dst_identity.empty() ? "-" : r.dst_identity);
  }
  if (!reason.empty()) {
    out += " reason=";
    append_quoted(out, reason, [](unsigned char c) { return c >= ' ' && c < 0x7f; });
  }
  fmt::format_to(std::back_inserter(out), " start={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\n",
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec, r.start_unix_ms % 1000);
}

namespace {

// ,"name":"value" unless `value` is empty.
void append_json_field(std::string& out, std::string_view name, std::string_view value) {
  if (value.empty()) return;
  out += ',';
  append_json_string(out, name);
  out += ':';
  append_json_string(out, value);
}

void append_utc_ms(std::string& out, int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec, unix_ms % 1000);
}

}  // namespace

void append_access_json(std::string& out, const AccessRecord& r, std::string_view reason) {
  const bool failed = r.end != EndReason::closed && r.end != EndReason::none;
  const bool inbound = r.direction == AccessRecord::Direction::inbound;
  out += "{\"level\":";
  append_json_string(out, failed ? "error" : "info");
  out += ",\"time\":\"";
  append_utc_ms(out, r.start_unix_ms + int64_t(r.duration_ms));
  out += "\",\"scope\":\"access\",\"message\":\"connection complete\"";
  append_json_field(out, "src.addr", r.client);
  append_json_field(out, "src.workload", r.src_workload);
  append_json_field(out, "src.namespace", r.src_namespace);
  append_json_field(out, "src.identity", r.src_identity);
  append_json_field(out, "dst.addr", r.dst_addr.empty() ? r.target : r.dst_addr);
  append_json_field(out, "dst.hbone_addr", r.hbone_addr);
  append_json_field(out, "dst.service", r.dst_service);
  append_json_field(out, "dst.workload", r.dst_workload);
  append_json_field(out, "dst.namespace", r.dst_namespace);
  append_json_field(out, "dst.identity", r.dst_identity);
  append_json_field(out, "direction", inbound ? "inbound" : "outbound");
  // The reporting workload's bytes: outbound it is the client, inbound the target.
  fmt::format_to(
      std::back_inserter(out), ",\"bytes_sent\":{},\"bytes_recv\":{},\"duration\":\"{}ms\"",
      inbound ? r.bytes_down : r.bytes_up, inbound ? r.bytes_up : r.bytes_down, r.duration_ms);
  if (failed) {
    const std::string_view end = to_string(r.end);
    append_json_field(out, "error",
                      reason.empty() ? std::string(end) : fmt::format("{}: {}", end, reason));
  }
  out += "}\n";
}

std::string AccessLog::open(const std::string& where, LogSink& stderr_sink) {
  if (where == "off") return {};
  if (where == "-") {
    sink_ = &stderr_sink;
    return {};
  }
  const int fd = ::open(where.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("--access-log {}: {}", where, strerror(errno));
  file_ = std::make_unique<LogSink>(fd, true);
  sink_ = file_.get();
  return {};
}

std::string AccessLog::start() {
  return file_ ? file_->start() : std::string();
}

bool AccessLog::stop(int timeout_ms) {
  return file_ ? file_->stop(timeout_ms) : true;
}

void AccessLog::write(std::string& batch) {
  if (sink_)
    sink_->submit(batch);
  else
    batch.clear();
}

}  // namespace ringtunnel::proxy

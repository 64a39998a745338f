#include "ringtunnel/proxy/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

namespace ringtunnel::proxy {

std::string_view to_string(EndReason reason) {
  switch (reason) {
    case EndReason::none:
      return "none";
    case EndReason::closed:
      return "closed";
    case EndReason::client_reset:
      return "client_reset";
    case EndReason::target_reset:
      return "target_reset";
    case EndReason::connect_refused:
      return "connect_refused";
    case EndReason::connect_timeout:
      return "connect_timeout";
    case EndReason::connect_error:
      return "connect_error";
    case EndReason::drain_timeout:
      return "drain_timeout";
    case EndReason::error:
      return "error";
    case EndReason::refused:
      return "refused";
    case EndReason::denied:
      return "denied";
    case EndReason::bad_request:
      return "bad_request";
    case EndReason::peer_error:
      return "peer_error";
  }
  return "?";
}

void append_access_line(std::string& out, const AccessRecord& r, std::string_view reason) {
  const time_t secs = static_cast<time_t>(r.start_unix_ms / 1000);
  tm utc{};
  gmtime_r(&secs, &utc);
  fmt::format_to(std::back_inserter(out),
                 "access listener={} client={} target={} bytes_up={} bytes_down={} duration_ms={} "
                 "end={}",
                 r.listener, r.client, r.target, r.bytes_up, r.bytes_down, r.duration_ms,
                 to_string(r.end));
  if (!r.src_identity.empty() || !r.dst_identity.empty())
    fmt::format_to(std::back_inserter(out), " src_identity={} dst_identity={}",
                   r.src_identity.empty() ? "-" : r.src_identity,
                   r.dst_identity.empty() ? "-" : r.dst_identity);
  if (!reason.empty()) {
    out += " reason=\"";
    for (const char ch : reason) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += ch;
      } else if (c < 0x20 || c >= 0x7f) {
        fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
      } else {
        out += ch;
      }
    }
    out += '"';
  }
  fmt::format_to(std::back_inserter(out), " start={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\n",
                 utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                 utc.tm_sec, r.start_unix_ms % 1000);
}

std::string AccessLog::open(const std::string& where) {
  if (where == "off") return {};
  if (where == "-") {
    fd_ = STDERR_FILENO;
    return {};
  }
  fd_ = ::open(where.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) return fmt::format("--access-log {}: {}", where, strerror(errno));
  owned_ = true;
  return {};
}

void AccessLog::write(std::string& batch) {
  if (fd_ >= 0 && !batch.empty()) {
    // O_APPEND (or a pipe/tty for stderr) keeps each batch whole among the workers' batches.
    size_t done = 0;
    while (done < batch.size()) {
      const ssize_t n = ::write(fd_, batch.data() + done, batch.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // a full disk loses log lines, never connections
      done += static_cast<size_t>(n);
    }
  }
  batch.clear();
}

AccessLog::~AccessLog() {
  if (owned_) close(fd_);
}

}  // namespace ringtunnel::proxy

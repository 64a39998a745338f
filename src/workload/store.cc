#include "ringtunnel/workload/store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include <fmt/format.h>

#include "ringtunnel/workload/local_config.h"

namespace ringtunnel::workload {

namespace {

// Reads the whole of a regular file. Never blocks on a FIFO or device, never reads more than
// kMaxConfigBytes. Returns "" or the reason.
std::string read_file(const std::string& path, std::string& out) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fmt::format("cannot open: {}", std::strerror(errno));
  std::string err;
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    err = fmt::format("cannot stat: {}", std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    err = S_ISDIR(st.st_mode) ? "a directory, not a file" : "not a regular file";
  } else if (uint64_t(st.st_size) > kMaxConfigBytes) {
    err = fmt::format("{} bytes: larger than {} MiB, not a config file", st.st_size,
                      kMaxConfigBytes >> 20);
  } else {
    out.clear();
    char buffer[65536];
    for (;;) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        err = fmt::format("read failed: {}", std::strerror(errno));
        break;
      }
      if (n == 0) break;
      if (out.size() + size_t(n) > kMaxConfigBytes) {
        err = fmt::format("larger than {} MiB: not a config file", kMaxConfigBytes >> 20);
        break;
      }
      out.append(buffer, size_t(n));
    }
  }
  close(fd);
  return err;
}

std::string file_error(const std::string& path, std::string reason) {
  return ConfigError{path, 0, 0, "", std::move(reason)}.to_string();
}

bool is_local(const Workload& w, const LocalWorkloadInfo& local) {
  return w.namespace_ == local.namespace_ && w.name == local.name &&
         w.effective_service_account() == local.service_account;
}

std::string describe(const LocalWorkloadInfo& local) {
  return fmt::format("namespace \"{}\", name \"{}\" and service account \"{}\" (--workload {})",
                     local.namespace_, local.name, local.service_account, local.to_string());
}

}  // namespace

std::string Store::load(const std::string& path, const LocalWorkloadInfo& local, LoadNotes* notes) {
  std::lock_guard reloading(reload_mutex_);
  if (snapshot()) return "the config is already loaded";
  path_ = path;
  local_ = local;
  std::string bytes;
  if (std::string err = read_file(path_, bytes); !err.empty()) return file_error(path_, err);
  std::shared_ptr<const State> state;
  if (std::string err = build(bytes, state, notes); !err.empty()) return err;
  bytes_ = std::move(bytes);
  std::lock_guard lock(mutex_);
  current_ = std::move(state);
  generation_.store(1, std::memory_order_release);
  return {};
}

std::string Store::reload(LoadNotes* notes) {
  std::lock_guard reloading(reload_mutex_);
  const std::shared_ptr<const State> old = snapshot();
  if (!old) return "no config loaded";
  std::string bytes;
  if (std::string err = read_file(path_, bytes); !err.empty()) return file_error(path_, err);
  if (bytes == bytes_) {
    if (notes) notes->unchanged = true;
    return {};
  }
  std::shared_ptr<const State> state;
  if (std::string err = build(bytes, state, notes); !err.empty()) return err;
  // The node's certificate carries the local workload's identity: a file that changes it
  // cannot be served with that certificate.
  const std::string was = local_workload(*old)->spiffe_id();
  const std::string now = local_workload(*state)->spiffe_id();
  if (now != was)
    return file_error(path_, fmt::format("the local workload ({}) would change its identity from "
                                         "{} (the certificate's) to {}",
                                         local_.to_string(), was, now));
  bytes_ = std::move(bytes);
  std::lock_guard lock(mutex_);
  current_ = std::move(state);
  generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  return {};
}

std::string Store::build(const std::string& bytes, std::shared_ptr<const State>& out,
                         LoadNotes* notes) const {
  LoadResult parsed = parse_local_config(bytes, path_);
  if (!parsed.ok()) return parsed.error->to_string();
  std::vector<std::string> state_warnings;
  std::shared_ptr<const State> state = State::build(std::move(parsed.config), &state_warnings);
  std::vector<const Workload*> matches;
  for (const Workload& w : state->workloads())
    if (is_local(w, local_)) matches.push_back(&w);
  if (matches.empty())
    return file_error(path_, fmt::format("no workload has {}", describe(local_)));
  if (matches.size() > 1) {
    std::string uids;
    for (const Workload* w : matches)
      uids += fmt::format("{}\"{}\"", uids.empty() ? "" : ", ", w->uid);
    return file_error(path_, fmt::format("{} workloads (uids {}) have {}: it must name one",
                                         matches.size(), uids, describe(local_)));
  }
  if (notes) {
    for (const ConfigWarning& w : parsed.warnings)
      notes->warnings.push_back(ConfigError{path_, w.line, w.column, w.path, w.reason}.to_string());
    for (std::string& w : state_warnings)
      notes->warnings.push_back(file_error(path_, std::move(w)));
  }
  out = std::move(state);
  return {};
}

std::shared_ptr<const State> Store::snapshot(uint64_t* generation) const {
  std::lock_guard lock(mutex_);
  if (generation) *generation = generation_.load(std::memory_order_relaxed);
  return current_;
}

const Workload* Store::local_workload(const State& state) const {
  for (const Workload& w : state.workloads())
    if (is_local(w, local_)) return &w;
  return nullptr;
}

}  // namespace ringtunnel::workload

// ringtunnel: flags -> config -> one worker per core -> wait for SIGTERM/SIGINT -> drain -> exit.
// With --config, the main thread also reloads the workload config while it waits (on SIGHUP
// and when the file changes) and the workers take each new snapshot from the Store; with
// --cert/--key/--ca it does the same for the node's credentials (CertificateWatch).
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <future>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nghttp2/nghttp2.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev_identity.h"
#include "ringtunnel/config/flags.h"
#include "ringtunnel/net/ip.h"
#include "ringtunnel/ops/admin.h"
#include "ringtunnel/ops/health.h"
#include "ringtunnel/ops/http_server.h"
#include "ringtunnel/ops/metrics.h"
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/worker.h"
#include "ringtunnel/stats/metrics.h"
#include "ringtunnel/tls/credential_store.h"
#include "ringtunnel/tls/credentials.h"
#include "ringtunnel/workload/store.h"

namespace {

using namespace ringtunnel;

// A node proxy holds two descriptors per relayed connection: take all the hard limit allows.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// The node's identity: the files named by --cert/--key/--ca, or the embedded development one
// (written to a private temporary directory only long enough to be loaded).
std::string load_identity(const config::Config& config, std::unique_ptr<tls::Credentials>& out) {
  tls::init_library();
  if (!config.cert.empty())
    return tls::Credentials::load({config.cert, config.key, config.ca}, out);
  char dir[] = "/tmp/ringtunnel-dev-identity-XXXXXX";
  if (!mkdtemp(dir)) return fmt::format("mkdtemp: {}", strerror(errno));
  const std::string base = dir;
  const std::pair<const char*, const char*> parts[] = {
      {"cert.pem", kDevIdentity_cert}, {"key.pem", kDevIdentity_key}, {"ca.pem", kDevIdentity_ca}};
  std::string err;
  for (const auto& [name, pem] : parts) {
    FILE* f = fopen((base + "/" + name).c_str(), "w");
    if (!f || fputs(pem, f) < 0)
      err = fmt::format("writing {}/{}: {}", base, name, strerror(errno));
    if (f) fclose(f);
  }
  if (err.empty())
    err = tls::Credentials::load({base + "/cert.pem", base + "/key.pem", base + "/ca.pem"}, out);
  for (const auto& [name, pem] : parts)
    unlink((base + "/" + name).c_str());
  rmdir(dir);
  if (err.empty())
    proxy::log_line(fmt::format(
        "ringtunnel: using the embedded development identity {} (for trying ringtunnel on one "
        "machine; give --cert, --key and --ca in production)",
        out->identity().to_string()));
  return err;
}

std::string counts(const workload::State& state) {
  return fmt::format("{} workloads, {} services, {} policies", state.workloads().size(),
                     state.services().size(), state.policies().size());
}

void log_warnings(const workload::LoadNotes& notes) {
  for (const std::string& w : notes.warnings)
    proxy::log_line(proxy::LogLevel::warn, fmt::format("ringtunnel: config: warning: {}", w));
}

// --config at start-up: the file, and the local workload in it. Returns "" or the error (exit 2).
std::string load_config(const config::Config& config, workload::Store& store) {
  workload::LoadNotes notes;
  std::string err = store.load(
      config.config_path,
      {config.workload_namespace, config.workload_name, config.workload_service_account}, &notes);
  log_warnings(notes);
  return err;
}

// The local workload's SPIFFE ID is the one its node proxy presents: it must be the
// certificate's. Returns "" or the error (exit 1).
std::string check_local_identity(const config::Config& config, const workload::Store& store,
                                 const tls::CredentialStore& credentials) {
  const tls::Credentials& identity = *credentials.current();
  const auto state = store.snapshot();
  const std::string want = store.local_workload(*state)->spiffe_id();
  const std::string have = identity.identity().to_string();
  if (want == have) return {};
  return fmt::format(
      "the local workload {} has the identity {} in {}, but {} carries {}: they must be the "
      "same",
      store.local().to_string(), want, store.path(),
      config.cert.empty() ? std::string("the embedded development identity")
                          : fmt::format("the certificate {} (--cert)", config.cert),
      have);
}

// Setting SO_MARK needs CAP_NET_ADMIN: find out at start-up rather than on every upstream
// connection. Returns "" or the error (exit 1).
std::string check_mark(const config::Config& config) {
  if (!config.mark) return {};
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fmt::format("socket: {}", strerror(errno));
  std::string err;
  if (setsockopt(fd, SOL_SOCKET, SO_MARK, &config.mark, sizeof config.mark) != 0)
    err = fmt::format(
        "cannot mark upstream sockets with {:#x} (--mark{}): {}; setting SO_MARK needs "
        "CAP_NET_ADMIN (or give --mark 0 if the capture rules let ringtunnel's connections "
        "through otherwise)",
        config.mark,
        config.mark == config::Config::kCaptureMark
            ? ", the default with --outbound-listen and --inbound-plaintext-listen"
            : "",
        strerror(errno));
  close(fd);
  return err;
}

// Reads the config file again and logs the outcome: the new counts and generation, or the
// error and the generation that stays.
void reload_config(workload::Store& store, bool log_unchanged) {
  workload::LoadNotes notes;
  const std::string err = store.reload(&notes);
  log_warnings(notes);
  uint64_t generation = 0;
  const auto state = store.snapshot(&generation);
  if (!err.empty())
    proxy::log_line(proxy::LogLevel::error,
                    fmt::format("ringtunnel: config: {}; keeping generation {}", err, generation));
  else if (!notes.unchanged)
    proxy::log_line(fmt::format("ringtunnel: config: reloaded {}: {} (generation {})", store.path(),
                                counts(*state), generation));
  else if (log_unchanged)
    proxy::log_line(fmt::format("ringtunnel: config: {} is unchanged; keeping generation {}",
                                store.path(), generation));
}

// What wait_for_stop() and ConfigWaiter::wait() return for POST /quitquitquit (no signal is 0).
constexpr int kQuitRequested = 0;

// The main thread's wait without --config: a stop signal (SIGTERM, SIGINT) or the quit eventfd.
int wait_for_stop(const sigset_t& signals, int quit_fd) {
  const int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC);
  while (signal_fd >= 0) {
    pollfd fds[2] = {{signal_fd, POLLIN, 0}, {quit_fd, POLLIN, 0}};
    const int n = poll(fds, 2, -1);
    if (n < 0 && errno != EINTR) break;
    if (n > 0 && (fds[1].revents & POLLIN)) {
      close(signal_fd);
      return kQuitRequested;
    }
    signalfd_siginfo info{};
    if (n > 0 && (fds[0].revents & POLLIN) &&
        read(signal_fd, &info, sizeof info) == ssize_t(sizeof info)) {
      close(signal_fd);
      return int(info.ssi_signo);
    }
  }
  // No signalfd or poll (should not happen): signals only.
  if (signal_fd >= 0) close(signal_fd);
  int sig = 0;
  sigwait(&signals, &sig);
  return sig;
}

// Opens the operating listeners (--metrics-listen, --readiness-listen, --admin-listen), adds
// the readiness and admin routes, and starts their thread. Returns "" or the error (exit 1).
std::string start_ops(const config::Config& config, const workload::Store& store,
                      const tls::CredentialStore* identity, int quit_fd, const ops::Health& health,
                      const stats::MetricsRegistry& metrics, ops::HttpServer& server) {
  struct Listen {
    const char* flag;
    const std::string& address;
    const char* serves;
    int id = -1;
  } listens[] = {{"--metrics-listen", config.metrics_listen, "metrics"},
                 {"--readiness-listen", config.readiness_listen, "/healthz/ready"},
                 {"--admin-listen", config.admin_listen, "/config_dump, /logging, /quitquitquit"}};
  if (config.admin_listen != "off") {
    net::Endpoint at;
    net::parse_endpoint(config.admin_listen, at);
    const auto ip = net::IpAddress::from_sockaddr(at.addr(), at.length);
    const bool loopback = ip && (ip->is_v4() ? ip->bytes[0] == 127 : ip->to_string() == "::1");
    if (!loopback)
      proxy::log_line(proxy::LogLevel::warn,
                      fmt::format("ringtunnel: warning: --admin-listen {} is not a loopback "
                                  "address: anyone who reaches it can read the config and stop "
                                  "this process (POST /quitquitquit)",
                                  config.admin_listen));
  }
  for (Listen& l : listens) {
    if (l.address == "off") continue;
    net::Endpoint at;
    if (std::string err = net::parse_endpoint(l.address, at); !err.empty())
      return fmt::format("{} {}: {}", l.flag, l.address, err);
    std::string err;
    l.id = server.listen(at, l.flag, err);
    if (l.id < 0) return fmt::format("{} {}: cannot listen: {}", l.flag, l.address, err);
  }
  if (listens[0].id >= 0) ops::add_metrics_routes(server, listens[0].id, metrics);
  if (listens[1].id >= 0) ops::add_readiness_routes(server, listens[1].id, health);
  if (listens[2].id >= 0) {
    ops::AdminSources sources;
    sources.config = &config;
    sources.store = config.store ? &store : nullptr;
    if (identity) {  // the credentials in use (a refused reload leaves the old ones)
      sources.certificate_pem = [identity] { return identity->current()->certificate_pem(); };
      sources.ca_pem = [identity] { return identity->current()->ca_pem(); };
    }
    sources.quit = [quit_fd] {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = write(quit_fd, &one, sizeof one);
    };
    ops::add_admin_routes(server, listens[2].id, std::move(sources));
  }
  for (const Listen& l : listens)
    if (l.id >= 0)
      proxy::log_line(fmt::format("ringtunnel: {} {}: serving {}", l.flag, l.address, l.serves));
  return server.start();
}

// Watches the node's --cert, --key and --ca files and replaces the credentials when they change
// (tls/credential_store.h), and warns of the certificate's expiry. Like the config file, the
// directories are watched, not the files: a file renamed over, or a symbolic link swapped (a
// Kubernetes secret volume swaps a "..data" link beside the files), is seen. Events for the
// files' names (or any event in a directory where the path is a symbolic link) start a quiet
// period of kQuietMs, restarted by each further event, after which the three files are read
// together; files whose bytes did not change replace nothing and log nothing.
//
// Expiry: one warning once the certificate in use has less than kExpiryWarningS left, and one
// error when it has expired. Readiness (`health`) follows the certificate in use.
class CertificateWatch {
 public:
  static constexpr int kQuietMs = 100;
  static constexpr std::time_t kExpiryWarningS = 24 * 3600;
  using Clock = std::chrono::steady_clock;

  CertificateWatch(tls::CredentialStore& store, ops::Health& health)
      : store_(store), health_(health) {
    const tls::CredentialFiles& files = store.files();
    if (files.cert.empty()) return;  // the embedded development identity: nothing to watch
    fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd_ < 0) {
      proxy::log_line(
          proxy::LogLevel::warn,
          fmt::format("ringtunnel: identity: inotify: {}; SIGHUP re-reads --cert, --key and --ca",
                      strerror(errno)));
      return;
    }
    for (const std::string* path : {&files.cert, &files.key, &files.ca})
      add(*path);
  }
  ~CertificateWatch() {
    if (fd_ >= 0) close(fd_);
  }
  CertificateWatch(const CertificateWatch&) = delete;
  CertificateWatch& operator=(const CertificateWatch&) = delete;

  int fd() const { return fd_; }

  // Milliseconds until on_due() has something to do (-1: nothing).
  int timeout_ms() const {
    int64_t ms = -1;
    const auto lower = [&ms](int64_t v) { ms = ms < 0 ? v : std::min(ms, v); };
    if (pending_)
      lower(std::max<int64_t>(
          0, std::chrono::ceil<std::chrono::milliseconds>(due_ - Clock::now()).count()));
    const std::time_t not_after = store_.current()->not_after();
    const std::time_t now = std::time(nullptr);
    // Wall-clock deadlines: looked at again at least hourly, so that a clock step is followed.
    if (warned_soon_ != store_.generation())
      lower(std::clamp<int64_t>((not_after - kExpiryWarningS - now) * 1000, 0, 3'600'000));
    if (warned_expired_ != store_.generation())
      lower(std::clamp<int64_t>((not_after + 1 - now) * 1000, 0, 3'600'000));
    return int(ms);
  }

  // The inotify descriptor is readable.
  void on_events() {
    if (files_changed()) {
      pending_ = true;
      due_ = Clock::now() + std::chrono::milliseconds(kQuietMs);
    }
  }

  // Reloads once the quiet period is over, and warns of expiry when it is due.
  void on_due() {
    if (pending_ && Clock::now() >= due_) {
      pending_ = false;
      reload(false);
    }
    check_expiry();
  }

  // SIGHUP, or the files changed: reads them again and logs the outcome.
  void reload(bool log_unchanged) {
    if (store_.files().cert.empty()) return;
    pending_ = false;
    std::string err;
    const tls::CredentialStore::Outcome outcome = store_.reload(err);
    uint64_t generation = 0;
    const auto now = store_.current(&generation);
    switch (outcome) {
      case tls::CredentialStore::Outcome::replaced:
        health_.cert_not_before.store(int64_t(now->not_before()), std::memory_order_release);
        health_.cert_not_after.store(int64_t(now->not_after()), std::memory_order_release);
        proxy::log_line(fmt::format(
            "ringtunnel: identity: reloaded {}: serial {}, valid until {}; new TLS handshakes use "
            "it (generation {})",
            store_.files().cert, now->serial(), utc(now->not_after()), generation));
        break;
      case tls::CredentialStore::Outcome::unchanged:
        if (log_unchanged)
          proxy::log_line(
              fmt::format("ringtunnel: identity: {}, {} and {} are unchanged; keeping serial {} "
                          "(generation {})",
                          store_.files().cert, store_.files().key, store_.files().ca, now->serial(),
                          generation));
        break;
      case tls::CredentialStore::Outcome::refused:
        proxy::log_line(
            proxy::LogLevel::warn,
            fmt::format(
                "ringtunnel: identity: {}; keeping the certificate with serial {} (generation {})",
                err, now->serial(), generation));
        break;
    }
    check_expiry();
  }

 private:
  struct Watch {
    int wd;
    std::string dir;
    std::vector<std::string> names;
    bool any_event;  // a path in it is a symbolic link: any event may have moved its target
  };

  static std::string utc(std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  }

  void add(const std::string& path) {
    const size_t slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "."
                            : slash == 0               ? "/"
                                                       : path.substr(0, slash);
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    struct stat st {};
    const bool link = lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
    const int wd = inotify_add_watch(
        fd_, dir.c_str(),
        IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF);
    if (wd < 0) {
      proxy::log_line(
          proxy::LogLevel::warn,
          fmt::format("ringtunnel: identity: cannot watch {} for changes to {}: {}; SIGHUP "
                      "re-reads it",
                      dir, name, strerror(errno)));
      return;
    }
    for (Watch& w : watches_) {
      if (w.wd != wd) continue;
      w.names.push_back(name);
      w.any_event = w.any_event || link;
      return;
    }
    watches_.push_back({wd, dir, {name}, link});
  }

  // Drains the inotify events: whether one concerns a credential file.
  bool files_changed() {
    alignas(inotify_event) char buffer[8192];
    bool changed = false;
    for (;;) {
      const ssize_t n = read(fd_, buffer, sizeof buffer);
      if (n <= 0) return changed;
      for (ssize_t at = 0; at < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        at += ssize_t(sizeof(inotify_event) + event->len);
        const auto w = std::find_if(watches_.begin(), watches_.end(),
                                    [&](const Watch& x) { return x.wd == event->wd; });
        if (w == watches_.end()) continue;
        if (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
          proxy::log_line(proxy::LogLevel::warn,
                          fmt::format("ringtunnel: identity: {} was removed or moved: no longer "
                                      "watching it for changes; "
                                      "SIGHUP re-reads --cert, --key and --ca",
                                      w->dir));
          inotify_rm_watch(fd_, w->wd);
          watches_.erase(w);
          continue;
        }
        if (w->any_event ||
            (event->len && std::find(w->names.begin(), w->names.end(),
                                     std::string_view(event->name)) != w->names.end()))
          changed = true;
      }
    }
  }

  void check_expiry() {
    uint64_t generation = 0;
    const auto c = store_.current(&generation);
    const std::time_t now = std::time(nullptr);
    const std::string what = store_.files().cert.empty()
                                 ? std::string("the embedded development identity's certificate")
                                 : fmt::format("the certificate {}", store_.files().cert);
    if (warned_expired_ != generation && now > c->not_after()) {
      warned_expired_ = warned_soon_ = generation;
      proxy::log_line(proxy::LogLevel::error,
                      fmt::format("ringtunnel: identity: error: {} (serial {}) expired on {}: "
                                  "peers refuse it; replace it "
                                  "(it is re-read when it changes)",
                                  what, c->serial(), utc(c->not_after())));
    } else if (warned_soon_ != generation && now >= c->not_after() - kExpiryWarningS) {
      warned_soon_ = generation;
      proxy::log_line(
          proxy::LogLevel::warn,
          fmt::format("ringtunnel: identity: warning: {} (serial {}) expires on {}, in {} minutes; "
                      "replace it "
                      "(it is re-read when it changes)",
                      what, c->serial(), utc(c->not_after()), (c->not_after() - now) / 60));
    }
  }

  tls::CredentialStore& store_;
  ops::Health& health_;
  int fd_ = -1;
  std::vector<Watch> watches_;
  bool pending_ = false;  // a reload is due at due_
  Clock::time_point due_;
  uint64_t warned_soon_ = 0;     // the generation whose expiry was warned of
  uint64_t warned_expired_ = 0;  // the generation whose expiry was logged
};

// What the main thread does until a stop signal with --config or --cert: reloads on SIGHUP, and
// when the files change (the certificates: CertificateWatch). One thread (this one) both waits for
// signals (a signalfd: the signals stay blocked in every thread) and watches the file (inotify on
// its directory), so reloads never run concurrently and a stop is never delayed by more than one
// reload.
//
// The directory is watched, not the file: an editor or a deployment tool that writes a new
// file and renames it over the old one replaces the inode a file watch would follow. Events
// for the file's name (written and closed, renamed to, created, modified) start a short quiet
// period, restarted by each further event, after which the file is read: a file being written
// is read once, complete. When the path is a symbolic link (a Kubernetes ConfigMap volume
// swaps a link beside it), any event in the directory counts; a file whose bytes did not
// change replaces nothing.
class ConfigWaiter {
 public:
  static constexpr int kQuietMs = 100;
  using Clock = std::chrono::steady_clock;

  // `store` or `certs` may be null: nothing of theirs to watch.
  ConfigWaiter(workload::Store* store, CertificateWatch* certs, const sigset_t& signals,
               int quit_fd)
      : store_(store), certs_(certs), quit_fd_(quit_fd) {
    signal_fd_ = signalfd(-1, &signals, SFD_CLOEXEC);
    if (!store) return;
    const std::string& path = store->path();
    const size_t slash = path.rfind('/');
    dir_ = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    name_ = slash == std::string::npos ? path : path.substr(slash + 1);
    struct stat st {};
    any_event_ = lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
    inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (inotify_fd_ < 0 || inotify_add_watch(inotify_fd_, dir_.c_str(),
                                             IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_MODIFY |
                                                 IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
      proxy::log_line(
          proxy::LogLevel::warn,
          fmt::format(
              "ringtunnel: config: cannot watch {} for changes to {}: {}; SIGHUP reloads it", dir_,
              name_, strerror(errno)));
      stop_watching();
    }
    // A change between load() and the watch: the first check finds it (and says nothing when
    // the file is as loaded).
    pending_ = true;
    due_ = Clock::now();
  }
  ~ConfigWaiter() {
    stop_watching();
    if (signal_fd_ >= 0) close(signal_fd_);
  }
  ConfigWaiter(const ConfigWaiter&) = delete;
  ConfigWaiter& operator=(const ConfigWaiter&) = delete;

  // Returns the stop signal (SIGTERM or SIGINT), or kQuitRequested.
  int wait(const sigset_t& signals) {
    if (signal_fd_ < 0) {
      // No signalfd (should not happen): SIGHUP still reloads.
      for (int sig = 0;;) {
        sigwait(&signals, &sig);
        if (sig != SIGHUP) return sig;
        if (store_) reload_config(*store_, true);
        if (certs_) certs_->reload(true);
      }
    }
    for (;;) {
      // The quit eventfd (POST /quitquitquit) first; a negative descriptor (no config or
      // certificate files to watch) is skipped by poll().
      pollfd fds[4] = {{signal_fd_, POLLIN, 0},
                       {quit_fd_, POLLIN, 0},
                       {inotify_fd_, POLLIN, 0},
                       {certs_ ? certs_->fd() : -1, POLLIN, 0}};
      int timeout = -1;
      if (pending_)
        timeout = int(std::max<int64_t>(
            0, std::chrono::ceil<std::chrono::milliseconds>(due_ - Clock::now()).count()));
      if (const int certs_due = certs_ ? certs_->timeout_ms() : -1; certs_due >= 0)
        timeout = timeout < 0 ? certs_due : std::min(timeout, certs_due);
      const int n = poll(fds, 4, timeout);
      if (n < 0 && errno != EINTR) {
        proxy::log_line(proxy::LogLevel::error,
                        fmt::format("ringtunnel: config: poll: {}", strerror(errno)));
        return SIGTERM;
      }
      if (n > 0 && (fds[0].revents & POLLIN)) {
        signalfd_siginfo info{};
        if (read(signal_fd_, &info, sizeof info) == ssize_t(sizeof info)) {
          if (info.ssi_signo != SIGHUP) return int(info.ssi_signo);
          if (store_) {
            pending_ = false;  // this reload reads whatever the file now holds
            reload_config(*store_, true);
          }
          if (certs_) certs_->reload(true);
        }
      }
      if (n > 0 && (fds[1].revents & POLLIN)) return kQuitRequested;
      if (n > 0 && inotify_fd_ >= 0 && fds[2].revents) {
        if (file_changed()) {
          pending_ = true;
          due_ = Clock::now() + std::chrono::milliseconds(kQuietMs);
        }
      }
      if (pending_ && Clock::now() >= due_) {
        pending_ = false;
        reload_config(*store_, false);
      }
      if (certs_ && n > 0 && (fds[3].revents & POLLIN)) certs_->on_events();
      if (certs_) certs_->on_due();
    }
  }

 private:
  // Drains the inotify events: whether one concerns the config file.
  bool file_changed() {
    alignas(inotify_event) char buffer[8192];
    bool changed = false;
    for (;;) {
      const ssize_t n = read(inotify_fd_, buffer, sizeof buffer);
      if (n <= 0) return changed;
      for (ssize_t at = 0; at < n;) {
        const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
        at += ssize_t(sizeof(inotify_event) + event->len);
        if (event->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
          proxy::log_line(
              proxy::LogLevel::warn,
              fmt::format(
                  "ringtunnel: config: {} was removed or moved: no longer watching it for changes "
                  "to {}; SIGHUP reloads it",
                  dir_, name_));
          stop_watching();
          return changed;
        }
        if (any_event_ || (event->len && name_ == event->name)) changed = true;
      }
    }
  }

  void stop_watching() {
    if (inotify_fd_ >= 0) close(inotify_fd_);
    inotify_fd_ = -1;
  }

  workload::Store* store_;
  CertificateWatch* certs_;
  int quit_fd_ = -1;
  int signal_fd_ = -1;
  int inotify_fd_ = -1;
  std::string dir_, name_;
  bool any_event_ = false;
  bool pending_ = false;  // a reload is due at due_
  Clock::time_point due_;
};

// Writes what the log writers still hold and stops them; log_line() writes synchronously again.
void stop_logs(proxy::AccessLog& access_log, proxy::LogSink& stderr_sink) {
  proxy::set_log_sink(nullptr);
  access_log.stop(proxy::LogSink::kStopTimeoutMs);
  stderr_sink.stop(proxy::LogSink::kStopTimeoutMs);
}

int run(config::Config& config) {
  proxy::set_log_json(config.log_format == config::Config::LogFormat::json);
  // Standard error's writer: operational messages, and the access log unless it has a file.
  proxy::LogSink stderr_sink(STDERR_FILENO, false);
  proxy::AccessLog access_log;
  if (std::string err = access_log.open(config.access_log, stderr_sink); !err.empty()) {
    proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: {}", err));
    return 1;
  }
  // Lives until the workers have stopped: they hold config.store.
  workload::Store store;
  if (!config.config_path.empty()) {
    if (std::string err = load_config(config, store); !err.empty()) {
      proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: {}", err));
      return 2;
    }
    config.store = &store;
  }
  // The node's credentials, replaced while it runs when the files change (CertificateWatch).
  std::optional<tls::CredentialStore> identity;
  if (config.needs_identity()) {
    std::unique_ptr<tls::Credentials> loaded;
    if (std::string err = load_identity(config, loaded); !err.empty()) {
      proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: identity: {}", err));
      return 1;
    }
    identity.emplace(std::move(loaded), tls::CredentialFiles{config.cert, config.key, config.ca});
  }
  if (config.store) {
    if (std::string err = check_local_identity(config, store, *identity); !err.empty()) {
      proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: {}", err));
      return 1;
    }
    const auto state = store.snapshot();
    proxy::log_line(fmt::format(
        "ringtunnel: config: loaded {}: {} (generation {}); local workload {}, identity {}",
        store.path(), counts(*state), store.generation(), store.local().to_string(),
        store.local_workload(*state)->spiffe_id()));
  }
  if (std::string err = check_mark(config); !err.empty()) {
    proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: {}", err));
    return 1;
  }
  // The operating listeners, served from here on (readiness says 503 until the workers are up).
  ops::Health health;
  health.config_needed = config.store != nullptr;
  health.config_loaded = config.store != nullptr;
  health.identity_needed = identity.has_value();
  if (identity) {
    health.cert_not_before = int64_t(identity->current()->not_before());
    health.cert_not_after = int64_t(identity->current()->not_after());
  }
  const int quit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  // Every worker's counters, for /metrics; declared before the server, which renders them.
  stats::MetricsRegistry metrics;
  ops::HttpServer ops_server;
  if (std::string err = start_ops(config, store, identity ? &*identity : nullptr, quit_fd, health,
                                  metrics, ops_server);
      !err.empty()) {
    proxy::log_line(proxy::LogLevel::error, fmt::format("ringtunnel: {}", err));
    if (quit_fd >= 0) close(quit_fd);
    return 1;
  }
  const unsigned workers =
      config.workers ? config.workers : std::max(1u, std::thread::hardware_concurrency());
  health.workers_expected = workers;

  // Workers inherit this mask: only the main thread takes the stop signals, through sigwait
  // (and SIGHUP with --config or --cert, through ConfigWaiter; without them SIGHUP still ends
  // the process, as it always did).
  const bool cert_files = identity && !config.cert.empty();
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  if (config.store || cert_files) sigaddset(&stop, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::optional<CertificateWatch> cert_watch;
  if (identity) cert_watch.emplace(*identity, health);
  std::optional<ConfigWaiter> waiter;
  if (config.store || identity)
    waiter.emplace(config.store ? &store : nullptr, cert_watch ? &*cert_watch : nullptr, stop,
                   quit_fd);
  signal(SIGPIPE, SIG_IGN);  // a write to a reset peer returns EPIPE instead of killing us

  // From here on the log is written by writer threads: a worker never waits for its output.
  std::string log_err = stderr_sink.start();
  if (log_err.empty()) log_err = access_log.start();
  if (!log_err.empty()) {
    proxy::log_line(fmt::format("ringtunnel: {}", log_err));
    stop_logs(access_log, stderr_sink);
    return 1;
  }
  proxy::set_log_sink(&stderr_sink);

  std::vector<std::unique_ptr<proxy::Worker>> pool;
  // Whatever way run() returns, the workers leave the registry before they are destroyed (the
  // metrics server may still be scraping).
  struct Unregister {
    stats::MetricsRegistry& metrics;
    std::vector<std::unique_ptr<proxy::Worker>>& pool;
    ~Unregister() {
      for (const auto& w : pool)
        metrics.remove(w->metrics());
    }
  } unregister{metrics, pool};
  std::vector<std::thread> threads;
  std::vector<std::future<std::string>> started;
  for (unsigned i = 0; i < workers; ++i) {
    pool.push_back(
        std::make_unique<proxy::Worker>(i, config, access_log, identity ? &*identity : nullptr));
    metrics.add(pool.back()->metrics());
    auto ready = std::make_shared<std::promise<std::string>>();
    started.push_back(ready->get_future());
    threads.emplace_back([w = pool.back().get(), ready, &health] {
      std::string err = w->start();
      const bool ok = err.empty();
      ready->set_value(std::move(err));
      if (ok) health.workers_ready.fetch_add(1, std::memory_order_release);  // listeners armed
      if (ok) w->run();
    });
  }
  std::string failure;
  for (unsigned i = 0; i < workers; ++i)
    if (std::string err = started[i].get(); !err.empty() && failure.empty())
      failure = fmt::format("worker {}: {}", i, err);
  if (!failure.empty()) {
    proxy::log_line(proxy::LogLevel::error,
                    fmt::format("ringtunnel: start-up failed: {}", failure));
    for (auto& w : pool)
      w->request_drain();
    for (auto& t : threads)
      t.join();
    stop_logs(access_log, stderr_sink);
    return 1;
  }
  if (config.tcp_splice)
    proxy::log_line(
        fmt::format("ringtunnel: {} workers; io_uring: {}; relaying through {}-byte pipes", workers,
                    pool[0]->features().describe_ring(), config.splice_pipe_size));
  else
    proxy::log_line(
        fmt::format("ringtunnel: {} workers; io_uring: {}; receive buffers {}/{}/{} bytes", workers,
                    pool[0]->features().describe(), config.buffer_sizes[0], config.buffer_sizes[1],
                    config.buffer_sizes[2]));
  for (const config::Route& r : config.routes) {
    if (r.kind == config::Route::Kind::hbone)
      proxy::log_line(fmt::format("ringtunnel: listening on {} -> hbone://{}/{} (peer identity {})",
                                  r.listen_text, r.peer_text, r.target_text, r.identity));
    else
      proxy::log_line(fmt::format("ringtunnel: listening on {} -> tcp://{}{}", r.listen_text,
                                  r.target_text, config.tcp_splice ? " (splice)" : ""));
  }
  for (const config::Config::ListenAt& l : config.hbone_listens)
    proxy::log_line(fmt::format("ringtunnel: listening on {} for HBONE (mTLS, identity {})", l.text,
                                identity->current()->identity().to_string()));
  for (const config::Config::ListenAt& l : config.outbound_listens)
    proxy::log_line(fmt::format(
        "ringtunnel: listening on {} for captured outbound connections (routed by {}; upstream "
        "mark {:#x})",
        l.text, config.config_path, config.mark));
  for (const config::Config::ListenAt& l : config.inbound_plaintext_listens)
    proxy::log_line(fmt::format(
        "ringtunnel: listening on {} for captured inbound plaintext (to the local workload, under "
        "its policies)",
        l.text));
  std::string hbone_listen_text;
  for (const config::Config::ListenAt& l : config.hbone_listens)
    hbone_listen_text += (hbone_listen_text.empty() ? "" : " and ") + l.text;
  if (!config.hbone_listens.empty() && !config.config_path.empty()) {
    proxy::log_line(fmt::format(
        "ringtunnel: CONNECTs on {} may dial the local workload's addresses, under its policies "
        "({})",
        hbone_listen_text, config.config_path));
  } else if (!config.hbone_listens.empty()) {
    if (config.allow_dests.empty()) {
      proxy::log_line(
          fmt::format("ringtunnel: no --allow-dest given: every CONNECT on {} is refused (401)",
                      hbone_listen_text));
    } else {
      std::string allowed;
      for (const config::AllowDest& d : config.allow_dests)
        allowed += (allowed.empty() ? "" : " ") + d.text;
      proxy::log_line(fmt::format("ringtunnel: CONNECTs on {} may dial {} (--allow-dest)",
                                  hbone_listen_text, allowed));
    }
  }

  int sig = 0;
  if (waiter)
    sig = waiter->wait(stop);
  else
    sig = wait_for_stop(stop, quit_fd);
  health.draining.store(true, std::memory_order_release);
  proxy::log_line(fmt::format("ringtunnel: {} received, draining", sig == kQuitRequested
                                                                       ? "/quitquitquit"
                                                                   : sig == SIGTERM ? "SIGTERM"
                                                                                    : "SIGINT"));
  for (auto& w : pool)
    w->request_drain();
  for (auto& t : threads)
    t.join();
  proxy::log_line("ringtunnel: stopped");
  ops_server.stop();
  if (quit_fd >= 0) close(quit_fd);
  stop_logs(access_log, stderr_sink);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  config::FlagsResult parsed = config::parse_flags(args, config::Environment::from_process());
  switch (parsed.action) {
    case config::FlagsResult::Action::help:
      fmt::print("{}", config::help_text());
      return 0;
    case config::FlagsResult::Action::version:
      fmt::print("ringtunnel {}\nwolfSSL {} (AES-NI {})\nnghttp2 {}\n", RINGTUNNEL_VERSION,
                 wolfSSL_lib_version(),
#ifdef WOLFSSL_AESNI
                 "on",
#else
                 "off",
#endif
                 nghttp2_version(0)->version_str);
      return 0;
    case config::FlagsResult::Action::usage_error:
      proxy::log_line(fmt::format("ringtunnel: {}", parsed.error));
      proxy::log_line("See 'ringtunnel --help'.");
      return 2;
    case config::FlagsResult::Action::run:
      break;
  }
  raise_fd_limit();
  return run(parsed.config);
}

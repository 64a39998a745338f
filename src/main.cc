// ringtunnel: flags -> config -> one worker per core -> wait for SIGTERM/SIGINT -> drain -> exit.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <future>
#include <memory>
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
#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/worker.h"
#include "ringtunnel/tls/credentials.h"

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

// Writes what the log writers still hold and stops them; log_line() writes synchronously again.
void stop_logs(proxy::AccessLog& access_log, proxy::LogSink& stderr_sink) {
  proxy::set_log_sink(nullptr);
  access_log.stop(proxy::LogSink::kStopTimeoutMs);
  stderr_sink.stop(proxy::LogSink::kStopTimeoutMs);
}

int run(const config::Config& config) {
  // Standard error's writer: operational messages, and the access log unless it has a file.
  proxy::LogSink stderr_sink(STDERR_FILENO, false);
  proxy::AccessLog access_log;
  if (std::string err = access_log.open(config.access_log, stderr_sink); !err.empty()) {
    proxy::log_line(fmt::format("ringtunnel: {}", err));
    return 1;
  }
  std::unique_ptr<tls::Credentials> identity;
  if (config.needs_identity()) {
    if (std::string err = load_identity(config, identity); !err.empty()) {
      proxy::log_line(fmt::format("ringtunnel: identity: {}", err));
      return 1;
    }
  }
  const unsigned workers =
      config.workers ? config.workers : std::max(1u, std::thread::hardware_concurrency());

  // Workers inherit this mask: only the main thread takes the stop signals, through sigwait.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
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
  std::vector<std::thread> threads;
  std::vector<std::future<std::string>> started;
  for (unsigned i = 0; i < workers; ++i) {
    pool.push_back(std::make_unique<proxy::Worker>(i, config, access_log, identity.get()));
    auto ready = std::make_shared<std::promise<std::string>>();
    started.push_back(ready->get_future());
    threads.emplace_back([w = pool.back().get(), ready] {
      std::string err = w->start();
      const bool ok = err.empty();
      ready->set_value(std::move(err));
      if (ok) w->run();
    });
  }
  std::string failure;
  for (unsigned i = 0; i < workers; ++i)
    if (std::string err = started[i].get(); !err.empty() && failure.empty())
      failure = fmt::format("worker {}: {}", i, err);
  if (!failure.empty()) {
    proxy::log_line(fmt::format("ringtunnel: start-up failed: {}", failure));
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
  if (config.hbone_listen)
    proxy::log_line(fmt::format("ringtunnel: listening on {} for HBONE (mTLS, identity {})",
                                config.hbone_listen_text, identity->identity().to_string()));
  if (config.hbone_listen) {
    if (config.allow_dests.empty()) {
      proxy::log_line(
          fmt::format("ringtunnel: no --allow-dest given: every CONNECT on {} is refused (401)",
                      config.hbone_listen_text));
    } else {
      std::string allowed;
      for (const config::AllowDest& d : config.allow_dests)
        allowed += (allowed.empty() ? "" : " ") + d.text;
      proxy::log_line(fmt::format("ringtunnel: CONNECTs on {} may dial {} (--allow-dest)",
                                  config.hbone_listen_text, allowed));
    }
  }

  int sig = 0;
  sigwait(&stop, &sig);
  proxy::log_line(
      fmt::format("ringtunnel: {} received, draining", sig == SIGTERM ? "SIGTERM" : "SIGINT"));
  for (auto& w : pool)
    w->request_drain();
  for (auto& t : threads)
    t.join();
  proxy::log_line("ringtunnel: stopped");
  stop_logs(access_log, stderr_sink);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  config::FlagsResult parsed = config::parse_flags(args);
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

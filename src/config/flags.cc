#include "ringtunnel/config/flags.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "ringtunnel/tls/identity.h"

namespace ringtunnel::config {

namespace {

std::string parse_uint(std::string_view text, uint64_t min, uint64_t max, uint64_t& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size())
    return "not a whole number";
  if (out < min || out > max) return fmt::format("must be from {} to {}", min, max);
  return {};
}

// A whole number followed directly by one of `units`: durations ("250ms", "5s", "200us").
struct Unit {
  std::string_view suffix;
  uint64_t scale;
};
enum class Scaled { ok, malformed, too_large };
// `out` = the number times its unit's scale, when that is at most `max`.
Scaled parse_scaled(std::string_view text, std::initializer_list<Unit> units, uint64_t max,
                    uint64_t& out) {
  size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
    ++digits;
  uint64_t n;
  if (digits == 0 || std::from_chars(text.data(), text.data() + digits, n).ec != std::errc{})
    return Scaled::malformed;
  for (const Unit& unit : units)
    if (text.substr(digits) == unit.suffix) {
      if (n > max / unit.scale) return Scaled::too_large;
      out = n * unit.scale;
      return Scaled::ok;
    }
  return Scaled::malformed;
}

bool is_power_of_two(uint64_t v) {
  return v && !(v & (v - 1));
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  for (size_t start = 0;;) {
    const size_t at = text.find(sep, start);
    parts.push_back(text.substr(start, at - start));
    if (at == std::string_view::npos) return parts;
    start = at + 1;
  }
}

struct Flag {
  const char* name;
  const char* metavar;  // nullptr: a switch that takes no value
  const char* help;     // without the default: help_text() adds " Default: X."
  // The flag's value in `c`, spelled as `apply` accepts it; shown(Config{}) is the default in
  // --help. nullptr: the flag has no single default value (a repeatable or an optional one).
  std::string (*shown)(const Config& c);
  std::function<std::string(std::string_view, Config&)> apply;
};

template <auto field>
std::string show_size(const Config& c) {
  return format_size(c.*field);
}

template <auto field>
std::string show_duration(const Config& c) {
  return format_duration_ms(c.*field);
}

template <auto field>
std::string show_number(const Config& c) {
  return fmt::format("{}", c.*field);
}

template <auto field>
std::string show_switch(const Config& c) {
  return c.*field ? "on" : "off";
}

std::string show_workers(const Config& c) {
  return c.workers == 0 ? "one per online CPU" : fmt::format("{}", c.workers);
}

std::string show_buffer_sizes(const Config& c) {
  std::string out;
  for (const uint32_t s : c.buffer_sizes) {
    if (!out.empty()) out += ',';
    out += format_size(s);
  }
  return out;
}

std::string show_buffer_ring_entries(const Config& c) {
  std::string out;
  for (const uint32_t n : c.buffer_ring_entries)
    out += fmt::format("{}{}", out.empty() ? "" : ",", n);
  return out;
}

std::string show_access_log(const Config& c) {
  return c.access_log;
}

// Flags whose default comes from the environment or from other flags: the default is a sentence
// rather than a value. Config{} holds "none" (an empty path, a zero mark) for them.
std::string show_config(const Config& c) {
  return c.config_path.empty() ? "$LOCAL_XDS_PATH if set, else none" : c.config_path;
}

std::string show_workload(const Config& c) {
  if (c.workload_namespace.empty()) return "$PROXY_WORKLOAD_INFO if set, else none";
  return c.workload_namespace + "/" + c.workload_name + "/" + c.workload_service_account;
}

std::string show_mark(const Config& c) {
  if (c.mark) return fmt::format("{:#x}", c.mark);
  return fmt::format("{:#x} with --outbound-listen or --inbound-plaintext-listen, else 0 (none)",
                     Config::kCaptureMark);
}

// A repeatable capture listener: each address once.
std::string add_listen(std::string_view v, std::vector<Config::ListenAt>& out) {
  Config::ListenAt l;
  if (std::string err = net::parse_endpoint(v, l.at); !err.empty()) return err;
  l.text = l.at.to_string();
  out.push_back(std::move(l));
  return {};
}

// An operating listener: "off", or an address kept normalised.
std::string set_ops_listen(std::string_view v, std::string& out) {
  if (v == "off") return out = "off", "";
  net::Endpoint at;
  if (std::string err = net::parse_endpoint(v, at); !err.empty())
    return err + " (or off for no listener)";
  out = at.to_string();
  return {};
}

// A TCP keepalive setting: a number up to the kernel's limit, or off (0).
std::string parse_keepalive(std::string_view v, uint32_t& out,
                            uint32_t max = net::kMaxKeepaliveSeconds) {
  if (v == "off") return out = 0, "";
  uint64_t n;
  if (std::string err = parse_uint(v, 0, max, n); !err.empty())
    return err == "not a whole number" ? fmt::format("must be a number from 0 to {}, or off", max)
                                       : err;
  out = uint32_t(n);
  return {};
}

std::string set_bool(std::string_view v, bool& out) {
  if (v == "on" || v == "true" || v == "1") return out = true, "";
  if (v == "off" || v == "false" || v == "0") return out = false, "";
  return "must be on or off";
}

const std::vector<Flag>& flags() {
  static const std::vector<Flag> table = {
      {"--forward", "LISTEN=tcp://TARGET|LISTEN=hbone://PEER/TARGET?identity=SPIFFE_ID",
       "Relay every TCP connection accepted on LISTEN to TARGET: directly (tcp://), or as an "
       "HTTP/2 CONNECT stream for TARGET inside a pooled mutual-TLS connection to the HBONE proxy "
       "at PEER, whose certificate must carry SPIFFE_ID (hbone://). Addresses are ip:port, IPv6 "
       "as [addr]:port. Repeatable. Listeners named here or by --hbone-listen, and --config, "
       "replace the embedded default (127.0.0.1:15001=tcp://127.0.0.1:8080 and --hbone-listen "
       "127.0.0.1:15008).",
       nullptr,
       [](std::string_view v, Config& c) {
         Route r;
         std::string err = parse_forward(v, r);
         if (err.empty()) c.routes.push_back(std::move(r));
         return err;
       }},
      {"--hbone-listen", "ADDR",
       "Accept HBONE on ADDR (ip:port; port 15008 by convention): mutual TLS 1.3 with a client "
       "certificate required, HTTP/2 CONNECT streams, each dialled as plain TCP to its "
       ":authority and relayed. Repeatable: listeners are IPv6-only, so a dual-stack host takes "
       "one of each family (0.0.0.0:15008 and [::]:15008).",
       nullptr, [](std::string_view v, Config& c) { return add_listen(v, c.hbone_listens); }},
      {"--config", "PATH",
       "The workload config: a YAML file in the local-config format of an ambient-mesh node "
       "proxy (top-level workloads, services and policies; unknown fields are errors). With it "
       "ringtunnel is the node proxy of one mesh workload, named by --workload, whose SPIFFE ID "
       "must be the one in --cert. The file is read again when it changes (written in place, or "
       "a new file renamed over it) and on SIGHUP: a bad file at start-up exits 2 naming its "
       "line, column and field; a bad file later is logged and the running config stays. With "
       "it, the embedded default listeners are not added: name the listeners.",
       show_config,
       [](std::string_view v, Config& c) -> std::string {
         if (!c.config_path.empty()) return "may be given once";
         if (v.empty()) return "must be a file path";
         c.config_path = std::string(v);
         return {};
       }},
      {"--workload", "NS/NAME/SA",
       "The local workload: the namespace, name and service account of the workload in the "
       "--config file that this node serves. Required with --config.",
       show_workload,
       [](std::string_view v, Config& c) -> std::string {
         if (!c.workload_namespace.empty()) return "may be given once";
         return parse_workload_info(v, c);
       }},
      {"--outbound-listen", "ADDR",
       "Accept the local workload's outbound connections that the host's capture rules redirect "
       "here (iptables REDIRECT or TPROXY; port 15001 by convention), each routed by its "
       "original destination through the --config file. Repeatable: listeners are IPv6-only, so "
       "IPv4 and IPv6 capture take one each (0.0.0.0:15001 and [::]:15001). Needs --config.",
       nullptr, [](std::string_view v, Config& c) { return add_listen(v, c.outbound_listens); }},
      {"--inbound-plaintext-listen", "ADDR",
       "Accept plain TCP connections to the local workload that the host's capture rules "
       "redirect here (port 15006 by convention): they reach the local workload only, under the "
       "--config file's policies, without a peer identity. Repeatable, one per family as "
       "--outbound-listen. Needs --config.",
       nullptr,
       [](std::string_view v, Config& c) { return add_listen(v, c.inbound_plaintext_listens); }},
      {"--mark", "MARK",
       "SO_MARK of every upstream socket (decimal, or hex after 0x; 0: none), so that the host's "
       "capture rules can let ringtunnel's own connections through (e.g. iptables -m mark "
       "--mark 0x539/0xfff -j RETURN) instead of capturing them again. Setting a mark needs "
       "CAP_NET_ADMIN: without it, start-up fails.",
       show_mark, [](std::string_view v, Config& c) { return parse_mark(v, c.mark); }},
      {"--allow-dest", "CIDR[:PORTS]",
       "Let CONNECT streams arriving on --hbone-listen dial targets in CIDR, on PORTS only if "
       "given. CIDR is a.b.c.d/n or [x::y]/n, a bare address meaning /32 or /128; PORTS is N, "
       "N-M or a comma list of those. Examples: 10.0.0.0/8, 10.1.2.3:80,443, "
       "[fd00::]/64:8000-8100, 127.0.0.1:8080. Repeatable. With none, every CONNECT is refused "
       "(401); the embedded default allows its own demo target, 127.0.0.1:8080. Loopback "
       "(127.0.0.0/8, ::1) is only allowed by an entry whose network is itself loopback (e.g. "
       "127.0.0.0/8, [::1]/128): 0.0.0.0/0 and [::]/0 do not cover it. Always refused, whatever "
       "the entries: unspecified (0.0.0.0/8, ::), link-local, multicast and broadcast targets "
       "(400; IPv4-mapped IPv6 counts as the IPv4 address), the address:port of any listener of "
       "this ringtunnel, on every address for a wildcard listener (503), and peers whose SPIFFE "
       "trust domain is not this node's (401).",
       nullptr,
       [](std::string_view v, Config& c) {
         AllowDest d;
         std::string err = parse_allow_dest(v, d);
         if (err.empty()) c.allow_dests.push_back(std::move(d));
         return err;
       }},
      {"--cert", "FILE",
       "The node's certificate (PEM, leaf first), with its SPIFFE ID "
       "(spiffe://TD/ns/NS/sa/SA) as URI SAN; used by both HBONE directions. With none of "
       "--cert/--key/--ca, an embedded development identity is used (never in production).",
       nullptr,
       [](std::string_view v, Config& c) { return c.cert = std::string(v), std::string(); }},
      {"--key", "FILE", "The private key of --cert (PEM, unencrypted).", nullptr,
       [](std::string_view v, Config& c) { return c.key = std::string(v), std::string(); }},
      {"--ca", "FILE", "The CA certificates (PEM) that peers' certificates must chain to.", nullptr,
       [](std::string_view v, Config& c) { return c.ca = std::string(v), std::string(); }},
      {"--pool-idle-timeout", "DURATION",
       "An outbound HBONE connection with no stream left closes after this long.",
       show_duration<&Config::pool_idle_timeout_ms>,
       [](std::string_view v, Config& c) { return parse_duration_ms(v, c.pool_idle_timeout_ms); }},
      {"--h2-keepalive", "DURATION",
       "Interval of HTTP/2 PINGs on HBONE connections; a connection whose PING is still "
       "unanswered at the next one is closed.",
       show_duration<&Config::keepalive_ms>,
       [](std::string_view v, Config& c) -> std::string {
         if (std::string err = parse_duration_ms(v, c.keepalive_ms); !err.empty()) return err;
         return c.keepalive_ms > 0 ? "" : "must be more than 0";
       }},
      {"--h2-frame-size", "SIZE", "Largest HTTP/2 frame sent and accepted (16k to 16m).",
       show_size<&Config::h2_frame_size>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s < 16384 || s > (1u << 24) - 1) return "must be from 16k to 16m-1";
         c.h2_frame_size = uint32_t(s);
         return {};
       }},
      {"--h2-stream-window", "SIZE",
       "HTTP/2 receive window per stream: what one slow reader can make the sender hold back.",
       show_size<&Config::h2_stream_window>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s < 65535 || s > 0x7fffffff) return "must be from 65535 to 2g-1";
         c.h2_stream_window = uint32_t(s);
         return {};
       }},
      {"--h2-connection-window", "SIZE", "HTTP/2 receive window per connection.",
       show_size<&Config::h2_connection_window>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s < 65535 || s > 0x7fffffff) return "must be from 65535 to 2g-1";
         c.h2_connection_window = uint32_t(s);
         return {};
       }},
      {"--tls-record-size", "SIZE",
       "Plaintext bytes per full TLS record for bulk data (at most 16k).",
       show_size<&Config::tls_record_size>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s < 512 || s > 16384) return "must be from 512 to 16k";
         c.tls_record_size = uint32_t(s);
         return {};
       }},
      {"--hbone-idle-timeout", "DURATION",
       "An inbound HBONE connection with no stream for this long is closed gracefully (GOAWAY), "
       "even if its peer answers every keepalive PING.",
       show_duration<&Config::hbone_idle_timeout_ms>,
       [](std::string_view v, Config& c) -> std::string {
         if (std::string err = parse_duration_ms(v, c.hbone_idle_timeout_ms); !err.empty())
           return err;
         return c.hbone_idle_timeout_ms > 0 ? "" : "must be more than 0";
       }},
      {"--max-handshakes", "N",
       "Inbound HBONE connections per worker whose TLS handshake is still in progress (from "
       "accept until the handshake completes or the connection closes). A connection accepted "
       "beyond it is closed at once, before any state is allocated for it; such closes are "
       "counted in one log line per second.",
       show_number<&Config::max_handshakes>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.max_handshakes = static_cast<uint32_t>(n);
         return err;
       }},
      {"--max-handshakes-per-source", "N",
       "The same as --max-handshakes, per worker and client IP address: one source cannot take "
       "every handshake slot.",
       show_number<&Config::max_handshakes_per_source>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.max_handshakes_per_source = static_cast<uint32_t>(n);
         return err;
       }},
      {"--workers", "N", "Worker threads, each with its own io_uring and listeners.", show_workers,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 256, n);
         c.workers = static_cast<unsigned>(n);
         return err;
       }},
      {"--ring-entries", "N",
       "Submission queue entries per worker ring (the completion queue is 8x).",
       show_number<&Config::ring_entries>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 8, 32768, n);
         c.ring_entries = static_cast<unsigned>(n);
         return err;
       }},
      {"--sqpoll", nullptr,
       "Let a kernel thread per ring poll the submission queue (fewer system calls, one more busy "
       "thread per worker; loses on small machines).",
       show_switch<&Config::sqpoll>,
       [](std::string_view, Config& c) { return c.sqpoll = true, std::string(); }},
      {"--buffer-sizes", "S1,S2,S3",
       "Receive buffer size classes, smallest first. A connection starts in the first and moves up "
       "when its reads fill the buffer, down when it goes quiet. Sizes take k/m suffixes.",
       show_buffer_sizes,
       [](std::string_view v, Config& c) -> std::string {
         const auto parts = split(v, ',');
         if (parts.size() != ring::kBufferClasses) return "needs three sizes, smallest first";
         for (size_t i = 0; i < parts.size(); ++i) {
           uint64_t s;
           if (std::string err = parse_size(parts[i], s); !err.empty()) return err;
           if (s < 64 || s > (16u << 20)) return "each size must be from 64 bytes to 16m";
           if (i && s <= c.buffer_sizes[i - 1]) return "sizes must grow from first to last";
           c.buffer_sizes[i] = static_cast<uint32_t>(s);
         }
         return {};
       }},
      {"--buffer-ring-entries", "N|N1,N2,N3",
       "The most receive buffers per size class and worker (powers of two, up to 32768). One "
       "value applies to all classes. A worker starts with about 256 KiB of each class and adds "
       "as much again whenever fewer than a quarter of a class's buffers are free, up to this "
       "count; memory not yet added costs no resident memory.",
       show_buffer_ring_entries,
       [](std::string_view v, Config& c) -> std::string {
         const auto parts = split(v, ',');
         if (parts.size() != 1 && parts.size() != ring::kBufferClasses)
           return "needs one or three counts";
         for (size_t i = 0; i < ring::kBufferClasses; ++i) {
           uint64_t n;
           if (std::string err = parse_uint(parts[parts.size() == 1 ? 0 : i], 1, 32768, n);
               !err.empty())
             return err;
           if (!is_power_of_two(n)) return "each count must be a power of two";
           c.buffer_ring_entries[i] = static_cast<uint32_t>(n);
         }
         return {};
       }},
      {"--registered-buffers", "on|off",
       "Register the receive buffers with the ring, so gathered sends from them skip the per-send "
       "page lookup (used where the kernel supports it, probed at start-up).",
       show_switch<&Config::registered_buffers>,
       [](std::string_view v, Config& c) { return set_bool(v, c.registered_buffers); }},
      {"--fixed-files", "on|off",
       "Keep relayed sockets in each ring's file table (direct descriptors) instead of the "
       "process's fd table: no descriptor lookup per operation, and the open-files limit counts "
       "per worker. Such sockets do not show in /proc/PID/fd, lsof or ss -p. Used where the "
       "kernel supports it (probed at start-up). Off, a relay passes a half-close with "
       "shutdown(2) itself instead of on a kernel worker thread: about 10% less CPU per new "
       "connection, where the open-files limit allows two descriptors per connection.",
       show_switch<&Config::fixed_files>,
       [](std::string_view v, Config& c) { return set_bool(v, c.fixed_files); }},
      {"--max-queued", "SIZE",
       "Bytes one direction of a connection may hold received but not yet sent before its reads "
       "pause; bounds memory when a reader is slow. At least the largest buffer size.",
       show_size<&Config::max_queued>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s > (1u << 30)) return "must be at most 1g";
         c.max_queued = static_cast<uint32_t>(s);
         return {};
       }},
      {"--memory-budget", "SIZE",
       "Heap memory per worker for bytes buffered outside the receive-buffer pool: the data of "
       "stalled connections moved out of the pool (so that slow readers never starve the others "
       "of receive buffers), and HBONE tunnel bytes whose connection window was handed back on "
       "arrival (so that stalled streams never stop their siblings); each of the two has this "
       "budget. Past the first, new connections and streams are refused, and while the pool stays "
       "low the stalled connection holding the most of it is reset (end=overload); past the "
       "second, tunnel windows come back only when bytes leave. At least twice the largest "
       "buffer size.",
       show_size<&Config::memory_budget>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s > (uint64_t{64} << 30)) return "must be at most 64g";
         c.memory_budget = s;
         return {};
       }},
      {"--debug-poison-buffers", nullptr,
       "Test and debug mode: overwrite every receive buffer with 0xA5 bytes when it goes back to "
       "the kernel, so that a buffer still referenced after its release shows up as poison in the "
       "output. Costs a memset per buffer.",
       show_switch<&Config::poison_buffers>,
       [](std::string_view, Config& c) { return c.poison_buffers = true, std::string(); }},
      {"--connect-timeout", "DURATION",
       "How long a connection to a target may take before the client is reset.",
       show_duration<&Config::connect_timeout_ms>,
       [](std::string_view v, Config& c) -> std::string {
         if (std::string err = parse_duration_ms(v, c.connect_timeout_ms); !err.empty()) return err;
         return c.connect_timeout_ms > 0 ? "" : "must be more than 0";
       }},
      {"--drain-timeout", "DURATION",
       "On SIGTERM or SIGINT, stop accepting and let open connections finish for this long; then "
       "reset what is left and exit 0.",
       show_duration<&Config::drain_timeout_ms>,
       [](std::string_view v, Config& c) { return parse_duration_ms(v, c.drain_timeout_ms); }},
      {"--tcp-keepalive-time", "SECONDS|off",
       "TCP keepalive on every client and upstream socket (TCP relays, HBONE connections, captured "
       "connections): idle seconds before the first probe. Probes keep idle connections alive "
       "through NAT and firewalls and find dead peers. 0 or off turns keepalive off (as does 0 in "
       "the two flags below).",
       show_number<&Config::tcp_keepalive_time_s>,
       [](std::string_view v, Config& c) { return parse_keepalive(v, c.tcp_keepalive_time_s); }},
      {"--tcp-keepalive-interval", "SECONDS|off",
       "Seconds between TCP keepalive probes while the peer does not answer.",
       show_number<&Config::tcp_keepalive_interval_s>,
       [](std::string_view v, Config& c) {
         return parse_keepalive(v, c.tcp_keepalive_interval_s);
       }},
      {"--tcp-keepalive-probes", "N|off",
       "Unanswered TCP keepalive probes after which the kernel drops the connection (both of its "
       "sides are then reset by ringtunnel).",
       show_number<&Config::tcp_keepalive_probes>,
       [](std::string_view v, Config& c) {
         return parse_keepalive(v, c.tcp_keepalive_probes, net::kMaxKeepaliveProbes);
       }},
      {"--tcp-splice", nullptr,
       "Relay TCP to TCP through kernel pipes with splice instead of user-space buffers (no copy "
       "to user space; bytes are still counted). Slower than the default copy, and more CPU per "
       "byte, on every load measured (loopback, 1 stream: about 13 vs 19 Gbit/s, 0.38-0.44 vs "
       "0.25 CPU-s/GB; the kernel runs each splice on a worker thread of its own). Worth it "
       "where memory is short under load: no receive buffers are registered (the copy path's "
       "pool grows on demand, pinned, up to 21 MiB per worker with the default --buffer-sizes "
       "and --buffer-ring-entries), and each relay's pipes hold only the bytes in flight. README, "
       "Benchmarks, has the figures.",
       show_switch<&Config::tcp_splice>,
       [](std::string_view, Config& c) { return c.tcp_splice = true, std::string(); }},
      {"--splice-pipe-size", "SIZE", "Pipe capacity per direction with --tcp-splice.",
       show_size<&Config::splice_pipe_size>,
       [](std::string_view v, Config& c) -> std::string {
         uint64_t s;
         if (std::string err = parse_size(v, s); !err.empty()) return err;
         if (s < 4096 || s > (64u << 20)) return "must be from 4k to 64m";
         c.splice_pipe_size = static_cast<uint32_t>(s);
         return {};
       }},
      {"--ring-min-wait", "DURATION|off",
       "While a TCP relay of a worker moves bulk data (a read of 32 KiB or more in the last "
       "round), that worker's next wait lets completions gather this long before it returns, "
       "unless none has come by then (it then returns with the first): one system call per "
       "DURATION of a bulk stream rather than per TCP segment. Small messages (reads under 32 KiB) "
       "never start it, and while any connection of the worker has read a small message in the "
       "last 2 ms (request/response traffic, TCP or HBONE) it waits for each completion as "
       "without it, so a bulk transfer does not delay other connections' round trips. "
       "Microseconds or milliseconds (200us, 1ms), at most 10ms; off or 0: wait for each "
       "completion. Needs "
       "Linux 6.12 (IORING_FEAT_MIN_TIMEOUT; without it, and with --sqpoll, it is off); the "
       "start-up line says which is used.",
       [](const Config& c) {
         return c.ring_min_wait_us == 0          ? std::string("off")
                : c.ring_min_wait_us % 1000 == 0 ? fmt::format("{}ms", c.ring_min_wait_us / 1000)
                                                 : fmt::format("{}us", c.ring_min_wait_us);
       },
       [](std::string_view v, Config& c) -> std::string {
         if (v == "off" || v == "0") return c.ring_min_wait_us = 0, std::string();
         uint64_t us = 0;
         switch (parse_scaled(v, {{"us", 1}, {"ms", 1000}}, 10'000, us)) {
           case Scaled::malformed:
             return "must be off or a number with a unit: us or ms (e.g. 250us, 1ms)";
           case Scaled::too_large:
             return "must be at most 10ms";
           case Scaled::ok:
             break;
         }
         c.ring_min_wait_us = static_cast<uint32_t>(us);
         return {};
       }},
      {"--listen-backlog", "N", "Pending-connection queue of each listening socket.",
       show_number<&Config::listen_backlog>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.listen_backlog = static_cast<unsigned>(n);
         return err;
       }},
      {"--max-connections", "N",
       "Client connections per worker, of every listener together: TCP relays, inbound HBONE "
       "connections, and clients of --forward hbone:// listeners. A connection accepted beyond it "
       "is reset at once; open connections carry on. Refusals are counted in one log line per "
       "second.",
       show_number<&Config::max_connections>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.max_connections = static_cast<uint32_t>(n);
         return err;
       }},
      {"--max-streams", "N",
       "HBONE streams per worker, both directions together (counted until their TCP side is "
       "closed too). Beyond it a client of a --forward hbone:// listener is reset and an inbound "
       "CONNECT is answered 503; open streams carry on. Refusals are counted in one log line per "
       "second.",
       show_number<&Config::max_streams>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.max_streams = static_cast<uint32_t>(n);
         return err;
       }},
      {"--access-log", "PATH|-|off",
       "Where the line for each closed connection goes (addresses, bytes each way, duration, how "
       "it ended): a file appended to, - for standard error, or off.",
       show_access_log,
       [](std::string_view v, Config& c) -> std::string {
         if (v.empty()) return "must be a path, - or off";
         c.access_log = std::string(v);
         return {};
       }},
      {"--metrics-listen", "ADDR|off",
       "Serve metrics over HTTP on ADDR (ip:port; port 15020 by convention), or off. The "
       "operating listeners (this, --readiness-listen and --admin-listen) are served by one "
       "thread of their own, never by a worker: a slow or hostile client cannot stall the "
       "data path. Each request must arrive within 5 s with at most 8 KiB of request line "
       "and headers and no body; at most 64 connections are open per listener. [::]:PORT "
       "serves IPv6 and IPv4 both (for an IPv6 or dual-stack cluster). A listener that cannot "
       "be opened stops start-up (exit 1).",
       [](const Config& c) { return c.metrics_listen; },
       [](std::string_view v, Config& c) { return set_ops_listen(v, c.metrics_listen); }},
      {"--readiness-listen", "ADDR|off",
       "Serve readiness on ADDR, or off: GET /healthz/ready answers 200 \"ready\" once every "
       "worker's listeners are up, the --config file has loaded and the certificate is valid, "
       "else 503 with the reason; 503 \"draining\" from the start of a drain on.",
       [](const Config& c) { return c.readiness_listen; },
       [](std::string_view v, Config& c) { return set_ops_listen(v, c.readiness_listen); }},
      {"--admin-listen", "ADDR|off",
       "Serve the admin endpoint on ADDR, or off: GET /config_dump (JSON: workloads, services, "
       "policies, the certificate chain with its validity, every flag's value), GET /logging "
       "and POST /logging?level=error|warn|info|debug (the log level, changed at run time), "
       "POST /quitquitquit (drain and exit 0, as on SIGTERM). Anyone who can reach it can "
       "stop the process: keep it on loopback; a non-loopback ADDR is logged as a warning at "
       "start.",
       [](const Config& c) { return c.admin_listen; },
       [](std::string_view v, Config& c) { return set_ops_listen(v, c.admin_listen); }},
      {"--log-format", "text|json",
       "How access records and operational messages are written: text lines, or one JSON object "
       "per line. A JSON access record carries src.addr, src.workload, src.namespace, "
       "src.identity, dst.addr, dst.hbone_addr, dst.service, dst.workload, dst.namespace, "
       "dst.identity, direction, bytes_sent, bytes_recv, duration and error (fields that do not "
       "apply are left out); an operational message carries level, time, scope and message.",
       [](const Config& c) -> std::string {
         return c.log_format == Config::LogFormat::json ? "json" : "text";
       },
       [](std::string_view v, Config& c) -> std::string {
         if (v == "text") return c.log_format = Config::LogFormat::text, "";
         if (v == "json") return c.log_format = Config::LogFormat::json, "";
         return "must be text or json";
       }},
      // ---- metrics (stats/metrics.h)
      {"--metrics-max-series", "N",
       "TCP traffic metric series (istio_tcp_*: one per distinct set of labels) each worker keeps. "
       "A connection that would make one more is counted with every workload label \"unknown\", "
       "in ringtunnel_metrics_series_overflow_total, and the first is logged.",
       show_number<&Config::metrics_max_series>,
       [](std::string_view v, Config& c) {
         uint64_t n;
         std::string err = parse_uint(v, 1, 1u << 20, n);
         c.metrics_max_series = static_cast<uint32_t>(n);
         return err;
       }},
      {"--metrics-series-expiry", "DURATION",
       "A TCP traffic metric series with no open connection is dropped from /metrics once nothing "
       "has used it for this long (should its labels come back, it starts again from 0).",
       show_duration<&Config::metrics_series_expiry_ms>,
       [](std::string_view v, Config& c) -> std::string {
         if (std::string err = parse_duration_ms(v, c.metrics_series_expiry_ms); !err.empty())
           return err;
         return c.metrics_series_expiry_ms > 0 ? "" : "must be more than 0";
       }},
      {"--help", nullptr, "Print this help and exit.", nullptr, nullptr},
      {"--version", nullptr, "Print the version and the libraries in use, and exit.", nullptr,
       nullptr},
  };
  return table;
}

}  // namespace

std::vector<FlagInfo> flag_table() {
  const Config defaults;
  std::vector<FlagInfo> out;
  for (const Flag& f : flags())
    out.push_back({f.name, f.metavar, f.shown ? f.shown(defaults) : std::string(), f.shown});
  return out;
}

std::string format_size(uint64_t bytes) {
  for (const auto& [scale, suffix] : {std::pair<uint64_t, char>{uint64_t{1} << 30, 'g'},
                                      {uint64_t{1} << 20, 'm'},
                                      {uint64_t{1} << 10, 'k'}})
    if (bytes >= scale && bytes % scale == 0) return fmt::format("{}{}", bytes / scale, suffix);
  return fmt::format("{}", bytes);
}

std::string format_duration_ms(int64_t ms) {
  return ms % 1000 == 0 ? fmt::format("{}s", ms / 1000) : fmt::format("{}ms", ms);
}

std::string parse_duration_ms(std::string_view text, int64_t& out) {
  uint64_t ms = 0;
  switch (parse_scaled(text, {{"ms", 1}, {"s", 1000}, {"m", 60'000}}, 86'400'000, ms)) {
    case Scaled::malformed:
      return "must be a number with a unit: ms, s or m (e.g. 500ms, 5s)";
    case Scaled::too_large:
      return "must be at most one day";
    case Scaled::ok:
      break;
  }
  out = static_cast<int64_t>(ms);
  return {};
}

std::string parse_size(std::string_view text, uint64_t& out) {
  uint64_t scale = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'k':
      case 'K':
        scale = 1u << 10;
        break;
      case 'm':
      case 'M':
        scale = 1u << 20;
        break;
      case 'g':
      case 'G':
        scale = 1u << 30;
        break;
      default:
        break;
    }
    if (scale != 1) text.remove_suffix(1);
  }
  uint64_t n;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n == 0 ||
      n > (uint64_t{1} << 40) / scale)
    return "must be a size in bytes, with an optional k, m or g suffix (e.g. 16k)";
  out = n * scale;
  return {};
}

std::string parse_forward(std::string_view text, Route& out) {
  const size_t eq = text.find('=');
  if (eq == std::string_view::npos)
    return "must be LISTEN=tcp://TARGET or LISTEN=hbone://PEER/TARGET?identity=SPIFFE_ID";
  const std::string_view listen = text.substr(0, eq);
  std::string_view target = text.substr(eq + 1);
  if (std::string err = net::parse_endpoint(listen, out.listen); !err.empty())
    return fmt::format("listen address \"{}\": {}", listen, err);
  out.listen_text = out.listen.to_string();
  if (target.starts_with("hbone://")) {
    target.remove_prefix(8);
    const size_t slash = target.find('/');
    const size_t query = target.find("?identity=");
    if (slash == std::string_view::npos || query == std::string_view::npos || query < slash)
      return "an hbone target must be hbone://PEER/TARGET?identity=SPIFFE_ID";
    const std::string_view peer = target.substr(0, slash);
    const std::string_view authority = target.substr(slash + 1, query - slash - 1);
    const std::string_view identity = target.substr(query + 10);
    if (std::string err = net::parse_endpoint(peer, out.peer); !err.empty())
      return fmt::format("peer address \"{}\": {}", peer, err);
    if (std::string err = net::parse_endpoint(authority, out.target); !err.empty())
      return fmt::format("target address \"{}\": {}", authority, err);
    tls::SpiffeId id;
    if (std::string err = tls::parse_spiffe_id(identity, id); !err.empty())
      return fmt::format("identity \"{}\": {}", identity, err);
    out.kind = Route::Kind::hbone;
    out.peer_text = out.peer.to_string();
    out.target_text = out.target.to_string();
    out.identity = id.to_string();
    return {};
  }
  if (!target.starts_with("tcp://"))
    return fmt::format("the target must start with tcp:// or hbone:// (got \"{}\")", target);
  target.remove_prefix(6);
  if (std::string err = net::parse_endpoint(target, out.target); !err.empty())
    return fmt::format("target address \"{}\": {}", target, err);
  out.target_text = out.target.to_string();
  return {};
}

namespace {

// "80", "8000-8080", "80,443,8000-8100": inclusive ranges of ports 1-65535.
std::string parse_ports(std::string_view text, std::vector<std::pair<uint16_t, uint16_t>>& out) {
  if (text.empty()) return "no ports after ':' (omit ':' for every port)";
  for (const std::string_view part : split(text, ',')) {
    const size_t dash = part.find('-');
    const std::string_view first = part.substr(0, dash);
    const std::string_view last = dash == std::string_view::npos ? first : part.substr(dash + 1);
    uint64_t lo = 0, hi = 0;
    if (!parse_uint(first, 1, 65535, lo).empty() || !parse_uint(last, 1, 65535, hi).empty())
      return fmt::format("port \"{}\": ports are N or N-M, each from 1 to 65535", part);
    if (lo > hi) return fmt::format("port range \"{}\" ends before it starts", part);
    out.emplace_back(uint16_t(lo), uint16_t(hi));
  }
  return {};
}

}  // namespace

std::string parse_allow_dest(std::string_view text, AllowDest& out) {
  out = AllowDest{};
  std::string_view host, rest;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return "missing ']' after the IPv6 address";
    host = text.substr(1, close - 1);
    rest = text.substr(close + 1);
    out.family = AF_INET6;
  } else {
    const size_t colon = text.find(':');
    if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos)
      return "an IPv6 network must be in brackets: [x::y]/n";
    const size_t end = text.find_first_of("/:");
    host = text.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : text.substr(end);
    out.family = AF_INET;
  }
  if (host.empty() || host.size() >= INET6_ADDRSTRLEN)
    return out.family == AF_INET6 ? "not an IPv6 address" : "not an IPv4 address";
  char zhost[INET6_ADDRSTRLEN];
  std::memcpy(zhost, host.data(), host.size());
  zhost[host.size()] = '\0';
  if (inet_pton(out.family, zhost, out.network.data()) != 1)
    return fmt::format("\"{}\" is not a numeric {} address", host,
                       out.family == AF_INET6 ? "IPv6" : "IPv4");
  const unsigned bits = out.family == AF_INET6 ? 128 : 32;
  out.prefix = bits;
  if (rest.starts_with('/')) {
    const size_t colon = rest.find(':');
    const std::string_view length =
        rest.substr(1, colon == std::string_view::npos ? colon : colon - 1);
    uint64_t n = 0;
    if (!parse_uint(length, 0, bits, n).empty())
      return fmt::format("prefix length \"/{}\" must be a number from 0 to {}", length, bits);
    out.prefix = unsigned(n);
    rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon);
  }
  if (rest.starts_with(':')) {
    if (std::string err = parse_ports(rest.substr(1), out.ports); !err.empty()) return err;
  } else if (!rest.empty()) {
    return fmt::format("unexpected \"{}\" after the address: CIDR[:PORTS]", rest);
  }
  // One spelling per network: no host bits past the prefix.
  std::array<uint8_t, 16> masked{};
  for (unsigned i = 0; i < bits / 8; ++i) {
    const unsigned keep = out.prefix >= (i + 1) * 8 ? 8
                          : out.prefix > i * 8      ? out.prefix - i * 8
                                                    : 0;
    masked[i] = uint8_t(keep ? out.network[i] & uint8_t(0xff << (8 - keep)) : 0);
  }
  if (masked != out.network) {
    char net[INET6_ADDRSTRLEN];
    inet_ntop(out.family, masked.data(), net, sizeof net);
    return fmt::format("address bits are set past the /{} prefix (the network is {}{}{}/{})",
                       out.prefix, out.family == AF_INET6 ? "[" : "", net,
                       out.family == AF_INET6 ? "]" : "", out.prefix);
  }
  // An IPv4-mapped network is the IPv4 network it maps: targets are compared as IPv4.
  if (out.family == AF_INET6 && out.prefix >= 96 &&
      IN6_IS_ADDR_V4MAPPED(reinterpret_cast<const in6_addr*>(out.network.data()))) {
    std::array<uint8_t, 16> v4{};
    std::memcpy(v4.data(), out.network.data() + 12, 4);
    out.network = v4;
    out.family = AF_INET;
    out.prefix -= 96;
  }
  char net[INET6_ADDRSTRLEN];
  inet_ntop(out.family, out.network.data(), net, sizeof net);
  out.text = out.family == AF_INET6 ? fmt::format("[{}]/{}", net, out.prefix)
                                    : fmt::format("{}/{}", net, out.prefix);
  for (size_t i = 0; i < out.ports.size(); ++i) {
    const auto [lo, hi] = out.ports[i];
    out.text += i ? "," : ":";
    out.text += lo == hi ? fmt::format("{}", lo) : fmt::format("{}-{}", lo, hi);
  }
  return {};
}

std::string parse_workload_info(std::string_view text, Config& out) {
  const std::vector<std::string_view> parts = split(text, '/');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() || parts[2].empty())
    return "must be NS/NAME/SA: the workload's namespace, name and service account (e.g. "
           "default/vm-1/vm-sa)";
  out.workload_namespace = std::string(parts[0]);
  out.workload_name = std::string(parts[1]);
  out.workload_service_account = std::string(parts[2]);
  return {};
}

std::string parse_mark(std::string_view text, uint32_t& out) {
  const bool hex = text.starts_with("0x") || text.starts_with("0X");
  if (hex) text.remove_prefix(2);
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n, hex ? 16 : 10);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() || n > 0xffffffffu)
    return "must be a number from 0 to 0xffffffff (decimal, or hex after 0x)";
  out = static_cast<uint32_t>(n);
  return {};
}

Environment Environment::from_process() {
  Environment env;
  if (const char* v = std::getenv("LOCAL_XDS_PATH")) env.local_xds_path = v;
  if (const char* v = std::getenv("PROXY_WORKLOAD_INFO")) env.proxy_workload_info = v;
  return env;
}

FlagsResult parse_flags(const std::vector<std::string_view>& args, const Environment& env) {
  FlagsResult result;
  std::set<std::string_view> seen;  // the flags given
  auto usage = [&](std::string message) {
    result.action = FlagsResult::Action::usage_error;
    result.error = std::move(message);
    return result;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    std::string_view value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); arg.starts_with("--") && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = nullptr;
    for (const Flag& f : flags())
      if (arg == f.name) flag = &f;
    if (!flag) return usage(fmt::format("unknown option \"{}\"", args[i]));
    seen.insert(flag->name);
    if (arg == "--help") return result.action = FlagsResult::Action::help, result;
    if (arg == "--version") return result.action = FlagsResult::Action::version, result;
    if (!flag->metavar) {
      if (has_value) return usage(fmt::format("{} takes no value", flag->name));
    } else if (!has_value) {
      if (i + 1 >= args.size())
        return usage(fmt::format("{} needs a value: {}", flag->name, flag->metavar));
      value = args[++i];
    }
    if (std::string err = flag->apply(value, result.config); !err.empty())
      return usage(fmt::format("{} \"{}\": {}", flag->name, value, err));
  }
  Config& c = result.config;
  if (c.max_queued < c.buffer_sizes.back())
    return usage(fmt::format("--max-queued {} is smaller than the largest buffer size {}",
                             c.max_queued, c.buffer_sizes.back()));
  // Moving stalled data out of the pool goes a buffer at a time: a smaller budget could never
  // move one, and would refuse every connection.
  if (c.memory_budget < 2 * uint64_t{c.buffer_sizes.back()})
    return usage(fmt::format(
        "--memory-budget {} is smaller than twice the largest buffer size {}: it could never "
        "hold a stalled connection's data",
        c.memory_budget, c.buffer_sizes.back()));
  // The mesh node proxy: --config (or $LOCAL_XDS_PATH) and what only it gives a meaning to.
  const bool config_from_env = !seen.count("--config") && !env.local_xds_path.empty();
  if (config_from_env) c.config_path = env.local_xds_path;
  if (!c.config_path.empty()) {
    const std::string config_flag = fmt::format("--config \"{}\"{}", c.config_path,
                                                config_from_env ? " (from $LOCAL_XDS_PATH)" : "");
    if (!seen.count("--workload")) {
      if (env.proxy_workload_info.empty())
        return usage(fmt::format(
            "{} needs --workload NS/NAME/SA (or $PROXY_WORKLOAD_INFO): the local workload",
            config_flag));
      if (std::string err = parse_workload_info(env.proxy_workload_info, c); !err.empty())
        return usage(fmt::format("$PROXY_WORKLOAD_INFO \"{}\" (the default of --workload): {}",
                                 env.proxy_workload_info, err));
    }
    if (c.routes.empty() && c.hbone_listens.empty() && c.outbound_listens.empty() &&
        c.inbound_plaintext_listens.empty())
      return usage(
          fmt::format("{} names no listener: give --outbound-listen, --inbound-plaintext-listen, "
                      "--hbone-listen or --forward",
                      config_flag));
  } else {
    for (const char* name : {"--workload", "--outbound-listen", "--inbound-plaintext-listen"})
      if (seen.count(name))
        return usage(fmt::format("{} needs --config (the workload config)", name));
  }
  // Capture mode: the capture rules let the proxy's own connections through by their mark.
  if (!seen.count("--mark") &&
      (!c.outbound_listens.empty() || !c.inbound_plaintext_listens.empty()))
    c.mark = Config::kCaptureMark;
  if (c.routes.empty() && c.hbone_listens.empty() && c.config_path.empty()) {
    Route r;
    parse_forward(Config::kDefaultForward, r);
    c.routes.push_back(std::move(r));
    add_listen(Config::kDefaultHboneListen, c.hbone_listens);
    if (c.allow_dests.empty()) {
      AllowDest d;
      parse_allow_dest(Config::kDefaultAllowDest, d);
      c.allow_dests.push_back(std::move(d));
    }
  }
  const int credential_files = !c.cert.empty() + !c.key.empty() + !c.ca.empty();
  if (credential_files != 0 && credential_files != 3)
    return usage(
        "--cert, --key and --ca go together: give all three, or none for the embedded "
        "development identity");
  if (c.routes.size() > kMaxRoutes)
    return usage(fmt::format("--forward: {} listeners named, at most {} are supported",
                             c.routes.size(), kMaxRoutes));
  // Every listen address once: (flag, address) of each listener.
  std::vector<std::pair<const char*, const std::string*>> listeners;
  for (const Route& r : c.routes)
    listeners.emplace_back("--forward", &r.listen_text);
  for (const Config::ListenAt& l : c.hbone_listens)
    listeners.emplace_back("--hbone-listen", &l.text);
  for (const Config::ListenAt& l : c.outbound_listens)
    listeners.emplace_back("--outbound-listen", &l.text);
  for (const Config::ListenAt& l : c.inbound_plaintext_listens)
    listeners.emplace_back("--inbound-plaintext-listen", &l.text);
  for (const auto& [flag, text] : {std::pair{"--metrics-listen", &c.metrics_listen},
                                   std::pair{"--readiness-listen", &c.readiness_listen},
                                   std::pair{"--admin-listen", &c.admin_listen}})
    if (*text != "off") listeners.emplace_back(flag, text);
  for (size_t a = 0; a < listeners.size(); ++a)
    for (size_t b = a + 1; b < listeners.size(); ++b) {
      if (*listeners[a].second != *listeners[b].second) continue;
      if (std::string_view(listeners[a].first) == listeners[b].first)
        return usage(fmt::format("{}: {} is named twice as a listen address", listeners[a].first,
                                 *listeners[a].second));
      return usage(fmt::format("{} is named by both {} and {}", *listeners[a].second,
                               listeners[a].first, listeners[b].first));
    }
  return result;
}

std::string help_text() {
  std::string out =
      "Usage: ringtunnel [OPTIONS]\n\n"
      "ringtunnel is a node proxy for Linux: it relays TCP connections with per-core io_uring\n"
      "loops, batching receives and gathered sends so that it makes few system calls per byte.\n"
      "With no options it starts on its embedded default: --forward " +
      std::string(Config::kDefaultForward) + " --hbone-listen " + Config::kDefaultHboneListen +
      "\n(with an embedded development identity).\n\n"
      "Options (a value may follow as the next argument or after '='):\n";
  const Config defaults;
  for (const Flag& f : flags()) {
    std::string head =
        f.metavar ? fmt::format("  {} {}", f.name, f.metavar) : fmt::format("  {}", f.name);
    out += head + "\n";
    std::string help = f.help;
    if (f.shown) help += " Default: " + f.shown(defaults) + ".";
    // Wrap the description at 76 columns, indented.
    std::string_view text = help;
    while (!text.empty()) {
      size_t cut = text.size() <= 72 ? text.size() : text.rfind(' ', 72);
      if (cut == std::string_view::npos || cut == 0) cut = std::min<size_t>(72, text.size());
      out += "      " + std::string(text.substr(0, cut)) + "\n";
      text.remove_prefix(cut);
      while (text.starts_with(' '))
        text.remove_prefix(1);
    }
  }
  out +=
      "\nDurations take a unit: ms, s or m. Sizes take k, m or g (binary multiples).\n"
      "Exit codes: 0 after a clean stop (SIGTERM/SIGINT drain), 1 when start-up fails,\n"
      "2 for bad usage.\n";
  return out;
}

}  // namespace ringtunnel::config

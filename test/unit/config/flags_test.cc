#include "ringtunnel/config/flags.h"

#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <doctest/doctest.h>
#include <fmt/format.h>

using namespace ringtunnel::config;
using Action = FlagsResult::Action;

namespace {
FlagsResult parse(std::initializer_list<std::string_view> args) {
  return parse_flags(args);
}
}  // namespace

TEST_CASE("no flags: the embedded default") {
  const FlagsResult r = parse({});
  REQUIRE(r.action == Action::run);
  REQUIRE(r.config.routes.size() == 1);
  CHECK(r.config.routes[0].listen_text == "127.0.0.1:15001");
  CHECK(r.config.routes[0].target_text == "127.0.0.1:8080");
  CHECK(r.config.buffer_sizes == ringtunnel::ring::BufferSizes{1024, 16384, 262144});
}

TEST_CASE("flags set what they name, in both spellings") {
  const FlagsResult r = parse({"--forward",
                               "127.0.0.1:1000=tcp://127.0.0.1:2000",
                               "--forward=[::1]:1001=tcp://[::1]:2001",
                               "--workers",
                               "3",
                               "--ring-entries=256",
                               "--sqpoll",
                               "--buffer-sizes",
                               "2k,32k,1m",
                               "--buffer-ring-entries",
                               "64",
                               "--registered-buffers",
                               "off",
                               "--fixed-files=off",
                               "--max-queued",
                               "4m",
                               "--connect-timeout",
                               "300ms",
                               "--drain-timeout=2s",
                               "--tcp-splice",
                               "--splice-pipe-size",
                               "256k",
                               "--listen-backlog",
                               "128",
                               "--access-log",
                               "off"});
  REQUIRE(r.action == Action::run);
  const Config& c = r.config;
  REQUIRE(c.routes.size() == 2);  // named listeners replace the default
  CHECK(c.routes[1].listen_text == "[::1]:1001");
  CHECK(c.routes[1].target_text == "[::1]:2001");
  CHECK(c.workers == 3);
  CHECK(c.ring_entries == 256);
  CHECK(c.sqpoll);
  CHECK(c.buffer_sizes == ringtunnel::ring::BufferSizes{2048, 32768, 1 << 20});
  CHECK(c.buffer_ring_entries == std::array<uint32_t, 3>{64, 64, 64});
  CHECK_FALSE(c.registered_buffers);
  CHECK_FALSE(c.fixed_files);
  CHECK(c.max_queued == 4u << 20);
  CHECK(c.connect_timeout_ms == 300);
  CHECK(c.drain_timeout_ms == 2000);
  CHECK(c.tcp_splice);
  CHECK(c.splice_pipe_size == 256u << 10);
  CHECK(c.listen_backlog == 128);
  CHECK(c.access_log == "off");
}

TEST_CASE("bad usage names the flag, the value and the reason") {
  struct Case {
    std::initializer_list<std::string_view> args;
    const char* error;
  };
  const Case cases[] = {
      {{"--workers", "0"}, "--workers \"0\": must be from 1 to 256"},
      {{"--workers", "abc"}, "--workers \"abc\": not a whole number"},
      {{"--workers"}, "--workers needs a value: N"},
      {{"--bogus"}, "unknown option \"--bogus\""},
      {{"--sqpoll=1"}, "--sqpoll takes no value"},
      {{"--buffer-sizes", "1k,2k"}, "--buffer-sizes \"1k,2k\": needs three sizes, smallest first"},
      {{"--buffer-sizes", "4k,2k,8k"},
       "--buffer-sizes \"4k,2k,8k\": sizes must grow from first to last"},
      {{"--buffer-ring-entries", "100"},
       "--buffer-ring-entries \"100\": each count must be a power of two"},
      {{"--connect-timeout", "5"},
       "--connect-timeout \"5\": must be a number with a unit: ms, s or m (e.g. 500ms, 5s)"},
      {{"--connect-timeout", "0s"}, "--connect-timeout \"0s\": must be more than 0"},
      {{"--registered-buffers", "maybe"}, "--registered-buffers \"maybe\": must be on or off"},
      {{"--forward", "nonsense"},
       "--forward \"nonsense\": must be LISTEN=tcp://TARGET or "
       "LISTEN=hbone://PEER/TARGET?identity=SPIFFE_ID"},
      {{"--forward", "127.0.0.1:1=http://x"},
       "--forward \"127.0.0.1:1=http://x\": the target must start with tcp:// or hbone:// (got "
       "\"http://x\")"},
      {{"--forward", "127.0.0.1=tcp://127.0.0.1:1"},
       "--forward \"127.0.0.1=tcp://127.0.0.1:1\": listen address \"127.0.0.1\": missing ':port'"},
      {{"--forward", "127.0.0.1:1=tcp://127.0.0.1:2", "--forward", "127.0.0.1:1=tcp://127.0.0.1:3"},
       "--forward: 127.0.0.1:1 is named twice as a listen address"},
      {{"--max-queued", "16k"},
       "--max-queued 16384 is smaller than the largest buffer size 262144"},
      {{"--memory-budget", "100k"},
       "--memory-budget 102400 is smaller than twice the largest buffer size 262144: it could "
       "never hold a stalled connection's data"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.error);
    const FlagsResult r = parse(c.args);
    CHECK(r.action == Action::usage_error);
    CHECK(r.error == c.error);
  }
}

TEST_CASE("more --forward listeners than the workers can number is a usage error") {
  // Distinct listen addresses, 127.x.y.z:1000; the count is checked before anything else.
  std::vector<std::string> owned;
  for (size_t i = 0; i <= kMaxRoutes; ++i)
    owned.push_back(fmt::format("--forward=127.{}.{}.{}:1000=tcp://127.0.0.1:2000", i >> 16,
                                (i >> 8) & 255, i & 255));
  std::vector<std::string_view> args(owned.begin(), owned.end());
  const FlagsResult r = parse_flags(args);
  CHECK(r.action == Action::usage_error);
  CHECK(r.error == "--forward: 65533 listeners named, at most 65532 are supported");
  args.resize(300);  // 300 are fine
  CHECK(parse_flags(args).action == Action::run);
}

TEST_CASE("budgets: defaults, values and errors") {
  const FlagsResult d = parse({});
  REQUIRE(d.action == Action::run);
  CHECK(d.config.max_connections == 16384);
  CHECK(d.config.max_streams == 16384);
  CHECK(d.config.max_handshakes == 256);
  CHECK(d.config.max_handshakes_per_source == 32);
  CHECK(d.config.hbone_idle_timeout_ms == 60000);
  const FlagsResult r =
      parse({"--max-connections", "100", "--max-streams=50", "--max-handshakes", "64",
             "--max-handshakes-per-source", "8", "--hbone-idle-timeout", "1500ms"});
  REQUIRE(r.action == Action::run);
  CHECK(r.config.max_connections == 100);
  CHECK(r.config.max_streams == 50);
  CHECK(r.config.max_handshakes == 64);
  CHECK(r.config.max_handshakes_per_source == 8);
  CHECK(r.config.hbone_idle_timeout_ms == 1500);
  struct Case {
    std::initializer_list<std::string_view> args;
    const char* error;
  };
  const Case cases[] = {
      {{"--max-connections", "0"}, "--max-connections \"0\": must be from 1 to 1048576"},
      {{"--max-connections", "many"}, "--max-connections \"many\": not a whole number"},
      {{"--max-streams", "2000000"}, "--max-streams \"2000000\": must be from 1 to 1048576"},
      {{"--max-streams"}, "--max-streams needs a value: N"},
      {{"--max-handshakes", "-1"}, "--max-handshakes \"-1\": not a whole number"},
      {{"--max-handshakes-per-source", "0"},
       "--max-handshakes-per-source \"0\": must be from 1 to 1048576"},
      {{"--hbone-idle-timeout", "0s"}, "--hbone-idle-timeout \"0s\": must be more than 0"},
      {{"--hbone-idle-timeout", "60"},
       "--hbone-idle-timeout \"60\": must be a number with a unit: ms, s or m (e.g. 500ms, 5s)"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.error);
    const FlagsResult e = parse(c.args);
    CHECK(e.action == Action::usage_error);
    CHECK(e.error == c.error);
  }
}

TEST_CASE("--help and --version stop parsing") {
  CHECK(parse({"--help"}).action == Action::help);
  CHECK(parse({"--workers", "2", "--version"}).action == Action::version);
}

TEST_CASE("--help explains every flag") {
  const std::string help = help_text();
  for (const char* flag : {"--forward",
                           "--workers",
                           "--ring-entries",
                           "--sqpoll",
                           "--buffer-sizes",
                           "--buffer-ring-entries",
                           "--registered-buffers",
                           "--fixed-files",
                           "--max-queued",
                           "--memory-budget",
                           "--debug-poison-buffers",
                           "--connect-timeout",
                           "--drain-timeout",
                           "--tcp-splice",
                           "--splice-pipe-size",
                           "--listen-backlog",
                           "--access-log",
                           "--allow-dest",
                           "--max-connections",
                           "--max-streams",
                           "--max-handshakes",
                           "--max-handshakes-per-source",
                           "--hbone-idle-timeout",
                           "--config",
                           "--workload",
                           "--outbound-listen",
                           "--inbound-plaintext-listen",
                           "--mark",
                           "--help",
                           "--version"})
    CHECK_MESSAGE(help.find(std::string("  ") + flag) != std::string::npos, flag);
}

TEST_CASE("--ring-min-wait: microseconds or milliseconds up to 10ms, or off") {
  CHECK(parse({}).config.ring_min_wait_us == 200);
  CHECK(parse({"--ring-min-wait", "250us"}).config.ring_min_wait_us == 250);
  CHECK(parse({"--ring-min-wait", "1ms"}).config.ring_min_wait_us == 1000);
  CHECK(parse({"--ring-min-wait", "10ms"}).config.ring_min_wait_us == 10000);
  CHECK(parse({"--ring-min-wait", "0us"}).config.ring_min_wait_us == 0);
  CHECK(parse({"--ring-min-wait", "off"}).config.ring_min_wait_us == 0);
  CHECK(parse({"--ring-min-wait", "0"}).config.ring_min_wait_us == 0);
  const char* malformed = "must be off or a number with a unit: us or ms (e.g. 250us, 1ms)";
  for (std::string_view bad : {"5", "5s", "us", "-1ms", "1.5ms", "5 ms"})
    CHECK(parse({"--ring-min-wait", bad}).error ==
          fmt::format("--ring-min-wait \"{}\": {}", bad, malformed));
  for (std::string_view big : {"10001us", "11ms", "99999999999999999ms"})
    CHECK(parse({"--ring-min-wait", big}).error ==
          fmt::format("--ring-min-wait \"{}\": must be at most 10ms", big));
}

TEST_CASE("durations and sizes") {
  int64_t ms;
  CHECK(parse_duration_ms("250ms", ms) == "");
  CHECK(ms == 250);
  CHECK(parse_duration_ms("2m", ms) == "");
  CHECK(ms == 120000);
  CHECK(parse_duration_ms("1h", ms) != "");
  CHECK(parse_duration_ms("ms", ms) != "");
  CHECK(parse_duration_ms("1440m", ms) == "");
  CHECK(ms == 86'400'000);
  CHECK(parse_duration_ms("1441m", ms) == "must be at most one day");
  CHECK(parse_duration_ms("99999999999999999999s", ms) ==
        "must be a number with a unit: ms, s or m (e.g. 500ms, 5s)");
  uint64_t size;
  CHECK(parse_size("16k", size) == "");
  CHECK(size == 16384);
  CHECK(parse_size("3", size) == "");
  CHECK(size == 3);
  CHECK(parse_size("0", size) != "");
  CHECK(parse_size("-1k", size) != "");
  CHECK(parse_size("99999999999999g", size) != "");
}

TEST_CASE("the value formatters are the inverses of the parsers") {
  CHECK(format_size(16384) == "16k");
  CHECK(format_size(2u << 20) == "2m");
  CHECK(format_size(uint64_t{256} << 20) == "256m");
  CHECK(format_size(uint64_t{3} << 30) == "3g");
  CHECK(format_size(1536) == "1536");
  CHECK(format_size((1u << 20) + 1024) == "1025k");
  for (const uint64_t bytes :
       {uint64_t{1}, uint64_t{3}, uint64_t{512}, uint64_t{1000}, uint64_t{1023}, uint64_t{1024},
        uint64_t{1025}, uint64_t{1536}, uint64_t{65535}, uint64_t{65536}, uint64_t{1} << 20,
        (uint64_t{1} << 20) + 1, (uint64_t{1} << 20) + 1024, uint64_t{3} << 20, uint64_t{1} << 30,
        (uint64_t{1} << 30) + 4096, uint64_t{64} << 30, uint64_t{1} << 40}) {
    uint64_t back = 0;
    INFO(bytes, " formats as ", format_size(bytes));
    CHECK(parse_size(format_size(bytes), back) == "");
    CHECK(back == bytes);
  }
  CHECK(format_duration_ms(60000) == "60s");
  CHECK(format_duration_ms(5000) == "5s");
  CHECK(format_duration_ms(300) == "300ms");
  CHECK(format_duration_ms(1500) == "1500ms");
  for (const int64_t ms : {int64_t{0}, int64_t{1}, int64_t{250}, int64_t{999}, int64_t{1000},
                           int64_t{1500}, int64_t{60000}, int64_t{90000}, int64_t{86400000}}) {
    int64_t back = -1;
    INFO(ms, " formats as ", format_duration_ms(ms));
    CHECK(parse_duration_ms(format_duration_ms(ms), back) == "");
    CHECK(back == ms);
  }
}

namespace {
// help_text() by flag: "--name" -> its description, with the wrapping undone.
std::map<std::string, std::string> help_by_flag() {
  std::map<std::string, std::string> out;
  std::string* section = nullptr;
  const std::string help = help_text();
  for (size_t start = 0; start < help.size();) {
    const size_t end = std::min(help.find('\n', start), help.size());
    const std::string_view line = std::string_view(help).substr(start, end - start);
    start = end + 1;
    if (line.starts_with("  --")) {
      const std::string_view head = line.substr(2);
      section = &out[std::string(head.substr(0, head.find(' ')))];
    } else if (section && line.starts_with("      ")) {
      if (!section->empty()) *section += ' ';
      *section += line.substr(6);
    } else {
      section = nullptr;
    }
  }
  return out;
}

// Every flag's value in `c`, as --help would show it.
std::map<std::string, std::string> shown_values(const Config& c) {
  std::map<std::string, std::string> out;
  for (const FlagInfo& f : flag_table())
    if (f.shown) out[f.name] = f.shown(c);
  return out;
}

// The flags whose shown values differ between `got` and `expected`, e.g.
// "--max-streams 16384 (expected 8)"; empty if none.
std::string differences(const std::map<std::string, std::string>& got,
                        const std::map<std::string, std::string>& expected) {
  std::string out;
  for (const auto& [name, value] : expected)
    if (!got.count(name) || got.at(name) != value)
      out += fmt::format("{}{} {} (expected {})", out.empty() ? "" : "; ", name,
                         got.count(name) ? got.at(name) : "missing", value);
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
    ++n;
  return n;
}
}  // namespace

TEST_CASE("--help shows each flag's default as Config's initializers set it") {
  const std::map<std::string, std::string> help = help_by_flag();
  const Config defaults;
  const std::map<std::string, std::string> default_values = shown_values(defaults);
  // Flags with no single default value: repeatable, optional, or actions.
  const std::set<std::string> no_default = {"--forward",
                                            "--hbone-listen",
                                            "--outbound-listen",
                                            "--inbound-plaintext-listen",
                                            "--allow-dest",
                                            "--cert",
                                            "--key",
                                            "--ca",
                                            "--help",
                                            "--version"};
  // Defaults with a meaning of their own rather than a value the flag accepts.
  const std::map<std::string, std::string> special = {
      {"--workers", "one per online CPU"},
      {"--config", "$LOCAL_XDS_PATH if set, else none"},
      {"--workload", "$PROXY_WORKLOAD_INFO if set, else none"},
      {"--mark", "0x539 with --outbound-listen or --inbound-plaintext-listen, else 0 (none)"}};
  // Flags that are usage errors alone, and what they need beside them (flag, value pairs).
  const std::map<std::string, std::vector<std::string>> companions = {
      {"--config", {"--workload", "default/vm-1/vm-sa", "--hbone-listen", "127.0.0.1:15008"}},
      {"--workload", {"--config", "mesh.yaml", "--hbone-listen", "127.0.0.1:15008"}},
  };
  // Other values to set each kind of flag to: each that the flag accepts must come back as
  // written, and change that flag's value only.
  const std::map<std::string, std::vector<std::string>> others = {
      {"SIZE", {"4k", "64k", "1m", "8m", "512m"}},
      {"DURATION", {"250ms", "1s", "90s"}},
      {"DURATION|off", {"off", "50us", "1ms", "10ms"}},
      {"N", {"8", "64", "512"}},
      {"on|off", {"off", "on"}},
      {"S1,S2,S3", {"2k,32k,1m"}},
      {"N|N1,N2,N3", {"64,64,64", "2048,512,128"}},
      {"PATH|-|off", {"off"}},
      {"PATH", {"/etc/ringtunnel/mesh.yaml"}},
      {"NS/NAME/SA", {"prod/db-0/db"}},
      {"MARK", {"0x10", "0xffffffff"}},
      {"ADDR|off", {"off", "127.0.0.1:25020", "[::1]:25021"}},
      {"SECONDS|off", {"60", "7"}},
      {"N|off", {"4", "127"}},
      {"text|json", {"json"}},
  };
  const std::vector<FlagInfo> table = flag_table();
  REQUIRE(table.size() == help.size());
  size_t with_default = 0;
  for (const FlagInfo& f : table) {
    const std::string name = f.name;
    INFO(name);
    REQUIRE(help.count(name) == 1);
    const std::string& text = help.at(name);
    if (!f.shown) {
      CHECK(no_default.count(name) == 1);
      CHECK(f.default_text.empty());
      CHECK(count(text, "Default:") == 0);
      continue;
    }
    ++with_default;
    CHECK(no_default.count(name) == 0);
    const std::string& shown = f.default_text;
    INFO("shown default: ", shown);
    CHECK(shown == f.shown(defaults));
    CHECK(count(text, "Default:") == 1);
    CHECK(count(text, " Default: " + shown + ".") == 1);
    CHECK(text.ends_with(" Default: " + shown + "."));
    if (!f.metavar) {
      // A switch turns something on: its default is off, and giving it shows on.
      CHECK(shown == "off");
      const FlagsResult r = parse({name});
      REQUIRE(r.action == Action::run);
      std::map<std::string, std::string> expected = default_values;
      expected[name] = "on";
      CHECK(differences(shown_values(r.config), expected) == "");
      continue;
    }
    if (special.count(name)) {
      CHECK(shown == special.at(name));
    } else {
      // The shown default, given to the flag, is the default: the same value, nothing else
      // changed.
      const FlagsResult r = parse({name, shown});
      CHECK(r.error == "");
      REQUIRE(r.action == Action::run);
      CHECK(differences(shown_values(r.config), default_values) == "");
    }
    REQUIRE(others.count(f.metavar) == 1);
    size_t tried = 0;
    for (const std::string& value : others.at(f.metavar)) {
      if (value == shown) continue;
      std::vector<std::string_view> args = {name, value};
      std::map<std::string, std::string> expected = default_values;
      if (companions.count(name)) {
        const std::vector<std::string>& with = companions.at(name);
        args.insert(args.end(), with.begin(), with.end());
        for (size_t i = 0; i + 1 < with.size(); i += 2)
          if (expected.count(with[i])) expected[with[i]] = with[i + 1];
      }
      const FlagsResult r = parse_flags(args);
      if (r.action != Action::run) continue;  // out of this flag's range
      ++tried;
      INFO("value: ", value);
      expected[name] = value;
      CHECK(differences(shown_values(r.config), expected) == "");
    }
    CHECK(tried > 0);
  }
  CHECK(with_default + no_default.size() == table.size());
}

TEST_CASE("hbone forwards, --hbone-listen and the identity files") {
  const FlagsResult r = parse({"--forward",
                               "127.0.0.1:1000=hbone://127.0.0.1:15008/10.0.0.1:80?identity="
                               "spiffe://cluster.local/ns/default/sa/node-b",
                               "--hbone-listen", "127.0.0.1:15008", "--cert", "c.pem", "--key",
                               "k.pem", "--ca", "ca.pem", "--h2-frame-size", "64k"});
  REQUIRE(r.action == Action::run);
  const Config& c = r.config;
  REQUIRE(c.routes.size() == 1);
  CHECK(c.routes[0].kind == Route::Kind::hbone);
  CHECK(c.routes[0].peer_text == "127.0.0.1:15008");
  CHECK(c.routes[0].target_text == "10.0.0.1:80");
  CHECK(c.routes[0].identity == "spiffe://cluster.local/ns/default/sa/node-b");
  REQUIRE(c.hbone_listens.size() == 1);
  CHECK(c.hbone_listens[0].text == "127.0.0.1:15008");
  CHECK(c.h2_frame_size == 65536);
  CHECK(c.needs_identity());
}

TEST_CASE("--hbone-listen alone replaces the whole embedded default") {
  const FlagsResult r = parse({"--hbone-listen", "127.0.0.1:25008"});
  REQUIRE(r.action == Action::run);
  CHECK(r.config.routes.empty());
  REQUIRE(r.config.hbone_listens.size() == 1);
  CHECK(r.config.hbone_listens[0].text == "127.0.0.1:25008");
  const FlagsResult d = parse({});
  REQUIRE(d.config.hbone_listens.size() == 1);
  CHECK(d.config.hbone_listens[0].text == "127.0.0.1:15008");
  CHECK(d.config.needs_identity());
  const FlagsResult t = parse({"--forward", "127.0.0.1:1=tcp://127.0.0.1:2"});
  CHECK(t.config.hbone_listens.empty());
  CHECK_FALSE(t.config.needs_identity());
}

TEST_CASE("bad hbone usage says why") {
  struct Case {
    std::initializer_list<std::string_view> args;
    const char* error;
  };
  const Case cases[] = {
      {{"--forward", "127.0.0.1:1=hbone://127.0.0.1:2/127.0.0.1:3"},
       "--forward \"127.0.0.1:1=hbone://127.0.0.1:2/127.0.0.1:3\": an hbone target must be "
       "hbone://PEER/TARGET?identity=SPIFFE_ID"},
      {{"--forward", "127.0.0.1:1=hbone://127.0.0.1:2/127.0.0.1:3?identity=spiffe://x/y"}, nullptr},
      {{"--cert", "a.pem"},
       "--cert, --key and --ca go together: give all three, or none for the embedded "
       "development identity"},
      {{"--hbone-listen", "127.0.0.1:1", "--forward", "127.0.0.1:1=tcp://127.0.0.1:2"},
       "127.0.0.1:1 is named by both --forward and --hbone-listen"},
  };
  for (const Case& c : cases) {
    const FlagsResult r = parse(c.args);
    CHECK(r.action == Action::usage_error);
    if (c.error) CHECK(r.error == c.error);
  }
}

TEST_CASE("--allow-dest: networks, bare addresses and port lists, normalised") {
  struct Case {
    const char* value;
    const char* text;
  };
  const Case cases[] = {
      {"10.0.0.0/8", "10.0.0.0/8"},
      {"10.1.2.3", "10.1.2.3/32"},
      {"10.1.2.3:80", "10.1.2.3/32:80"},
      {"10.1.2.3:80,443,8000-8080", "10.1.2.3/32:80,443,8000-8080"},
      {"0.0.0.0/0", "0.0.0.0/0"},
      {"127.0.0.0/8:1-65535", "127.0.0.0/8:1-65535"},
      {"[::1]", "[::1]/128"},
      {"[fd00::]/64:9000", "[fd00::]/64:9000"},
      {"[FD00:0::]/16", "[fd00::]/16"},
      {"[::]/0", "[::]/0"},
      {"[::ffff:127.0.0.1]", "127.0.0.1/32"},  // IPv4-mapped: the IPv4 address
      {"[::ffff:10.0.0.0]/104:22", "10.0.0.0/8:22"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.value);
    const FlagsResult r = parse({"--hbone-listen", "127.0.0.1:15008", "--allow-dest", c.value});
    REQUIRE(r.action == Action::run);
    REQUIRE(r.config.allow_dests.size() == 1);
    CHECK(r.config.allow_dests[0].text == c.text);
  }
  const FlagsResult r =
      parse({"--allow-dest", "10.0.0.0/8", "--hbone-listen", "127.0.0.1:1", "--allow-dest=[::1]"});
  REQUIRE(r.action == Action::run);
  REQUIRE(r.config.allow_dests.size() == 2);  // repeatable
  CHECK(r.config.allow_dests[0].family == AF_INET);
  CHECK(r.config.allow_dests[0].prefix == 8);
  CHECK(r.config.allow_dests[0].ports.empty());
  CHECK(r.config.allow_dests[1].family == AF_INET6);
  CHECK(r.config.allow_dests[1].prefix == 128);
  AllowDest d;
  CHECK(parse_allow_dest("1.2.3.4:1-2,9", d) == "");
  CHECK(d.ports == std::vector<std::pair<uint16_t, uint16_t>>{{1, 2}, {9, 9}});
}

TEST_CASE("--allow-dest: the embedded default allows only its demo target; --hbone-listen none") {
  const FlagsResult d = parse({});
  REQUIRE(d.config.allow_dests.size() == 1);
  CHECK(d.config.allow_dests[0].text == "127.0.0.1/32:8080");
  const FlagsResult w = parse({"--workers", "2"});  // still the embedded default listeners
  REQUIRE(w.config.allow_dests.size() == 1);
  CHECK(w.config.allow_dests[0].text == "127.0.0.1/32:8080");
  const FlagsResult own = parse({"--allow-dest", "10.0.0.0/8"});  // default listeners, own list
  REQUIRE(own.config.allow_dests.size() == 1);
  CHECK(own.config.allow_dests[0].text == "10.0.0.0/8");
  CHECK(parse({"--hbone-listen", "127.0.0.1:25008"}).config.allow_dests.empty());
  CHECK(parse({"--forward", "127.0.0.1:1=tcp://127.0.0.1:2"}).config.allow_dests.empty());
  std::string help;  // the text with its wrapping undone
  for (const char ch : help_text())
    if (ch != ' ' || help.empty() || (help.back() != ' ' && help.back() != '\n')) help += ch;
  for (char& ch : help)
    if (ch == '\n') ch = ' ';
  CHECK(help.find(" --allow-dest CIDR[:PORTS]") != std::string::npos);
  CHECK(help.find("0.0.0.0/0 and [::]/0 do not cover it") != std::string::npos);
}

TEST_CASE("--allow-dest: bad values name the flag, the value and the reason") {
  struct Case {
    const char* value;
    const char* error;
  };
  const Case cases[] = {
      {"", "not an IPv4 address"},
      {"/8", "not an IPv4 address"},
      {"10.0.0/8", "\"10.0.0\" is not a numeric IPv4 address"},
      {"010.0.0.0/8", "\"010.0.0.0\" is not a numeric IPv4 address"},
      {"example.com", "\"example.com\" is not a numeric IPv4 address"},
      {"10.0.0.0/33", "prefix length \"/33\" must be a number from 0 to 32"},
      {"10.0.0.0/", "prefix length \"/\" must be a number from 0 to 32"},
      {"10.0.0.0/x", "prefix length \"/x\" must be a number from 0 to 32"},
      {"10.1.0.0/8", "address bits are set past the /8 prefix (the network is 10.0.0.0/8)"},
      {"10.0.0.0/8:", "no ports after ':' (omit ':' for every port)"},
      {"10.0.0.0/8:0", "port \"0\": ports are N or N-M, each from 1 to 65535"},
      {"10.0.0.0/8:65536", "port \"65536\": ports are N or N-M, each from 1 to 65535"},
      {"10.0.0.0/8:80,", "port \"\": ports are N or N-M, each from 1 to 65535"},
      {"10.0.0.0/8:http", "port \"http\": ports are N or N-M, each from 1 to 65535"},
      {"10.0.0.0/8:90-80", "port range \"90-80\" ends before it starts"},
      {"10.0.0.0/8:1-2-3", "port \"1-2-3\": ports are N or N-M, each from 1 to 65535"},
      {"::1/128", "an IPv6 network must be in brackets: [x::y]/n"},
      {"[::1/128", "missing ']' after the IPv6 address"},
      {"[::1]/129", "prefix length \"/129\" must be a number from 0 to 128"},
      {"[fd00::1]/64", "address bits are set past the /64 prefix (the network is [fd00::]/64)"},
      {"[fe80::1%eth0]", "\"fe80::1%eth0\" is not a numeric IPv6 address"},
      {"[10.0.0.1]", "\"10.0.0.1\" is not a numeric IPv6 address"},
      {"[::1]x", "unexpected \"x\" after the address: CIDR[:PORTS]"},
      {"[]", "not an IPv6 address"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.value);
    const FlagsResult r = parse({"--hbone-listen", "127.0.0.1:1", "--allow-dest", c.value});
    CHECK(r.action == Action::usage_error);
    CHECK(r.error == std::string("--allow-dest \"") + c.value + "\": " + c.error);
  }
  CHECK(parse({"--allow-dest"}).error == "--allow-dest needs a value: CIDR[:PORTS]");
}

TEST_CASE("mesh: the capture listeners are repeatable, one per family") {
  const FlagsResult r =
      parse({"--config", "m.yaml", "--workload", "a/b/c", "--outbound-listen", "0.0.0.0:15001",
             "--outbound-listen", "[::]:15001", "--inbound-plaintext-listen", "0.0.0.0:15006",
             "--inbound-plaintext-listen", "[::]:15006"});
  INFO(r.error);
  REQUIRE(r.action == Action::run);
  REQUIRE(r.config.outbound_listens.size() == 2);
  CHECK(r.config.outbound_listens[0].text == "0.0.0.0:15001");
  CHECK(r.config.outbound_listens[1].text == "[::]:15001");
  REQUIRE(r.config.inbound_plaintext_listens.size() == 2);
  CHECK(r.config.inbound_plaintext_listens[1].text == "[::]:15006");
  const FlagsResult h = parse({"--hbone-listen", "0.0.0.0:15008", "--hbone-listen", "[::]:15008"});
  REQUIRE(h.action == Action::run);
  REQUIRE(h.config.hbone_listens.size() == 2);
  CHECK(h.config.hbone_listens[1].text == "[::]:15008");
}

TEST_CASE("mesh: --config, --workload and the capture listeners set what they name") {
  const FlagsResult r =
      parse({"--config", "/etc/ringtunnel/mesh.yaml", "--workload", "prod/db-0/db",
             "--outbound-listen", "127.0.0.1:15001", "--inbound-plaintext-listen=[::1]:15006"});
  INFO(r.error);
  REQUIRE(r.action == Action::run);
  const Config& c = r.config;
  CHECK(c.config_path == "/etc/ringtunnel/mesh.yaml");
  CHECK(c.workload_namespace == "prod");
  CHECK(c.workload_name == "db-0");
  CHECK(c.workload_service_account == "db");
  REQUIRE(c.outbound_listens.size() == 1);
  CHECK(c.outbound_listens[0].text == "127.0.0.1:15001");
  REQUIRE(c.inbound_plaintext_listens.size() == 1);
  CHECK(c.inbound_plaintext_listens[0].text == "[::1]:15006");
  // No embedded default beside them, and the capture mark.
  CHECK(c.routes.empty());
  CHECK(c.hbone_listens.empty());
  CHECK(c.allow_dests.empty());
  CHECK(c.mark == 0x539);
  // The local workload's identity is checked against the certificate's.
  CHECK(c.needs_identity());
  CHECK(c.store == nullptr);  // main sets it
}

TEST_CASE("mesh: --forward, --hbone-listen and --allow-dest keep working beside --config") {
  const FlagsResult r = parse({"--config", "mesh.yaml", "--workload", "default/vm/sa", "--forward",
                               "127.0.0.1:1000=tcp://127.0.0.1:2000", "--hbone-listen",
                               "127.0.0.1:15008", "--allow-dest", "10.0.0.0/8"});
  INFO(r.error);
  REQUIRE(r.action == Action::run);
  REQUIRE(r.config.routes.size() == 1);
  CHECK(r.config.routes[0].listen_text == "127.0.0.1:1000");
  REQUIRE(r.config.hbone_listens.size() == 1);
  CHECK(r.config.hbone_listens[0].text == "127.0.0.1:15008");
  REQUIRE(r.config.allow_dests.size() == 1);
  CHECK(r.config.allow_dests[0].text == "10.0.0.0/8");
  CHECK(r.config.mark == 0);  // no capture listener: no mark unless asked for
  // --config with only --hbone-listen: still no embedded --forward or --allow-dest.
  const FlagsResult h = parse(
      {"--config", "mesh.yaml", "--workload", "default/vm/sa", "--hbone-listen", "127.0.0.1:1"});
  REQUIRE(h.action == Action::run);
  CHECK(h.config.routes.empty());
  CHECK(h.config.allow_dests.empty());
}

TEST_CASE("mesh: --mark, decimal or hex, and its capture-mode default") {
  uint32_t mark = 7;
  CHECK(parse_mark("0", mark) == "");
  CHECK(mark == 0);
  CHECK(parse_mark("1337", mark) == "");
  CHECK(mark == 0x539);
  CHECK(parse_mark("0x539", mark) == "");
  CHECK(mark == 0x539);
  CHECK(parse_mark("0XFFFFFFFF", mark) == "");
  CHECK(mark == 0xffffffffu);
  for (const char* bad : {"", "0x", "-1", "0x100000000", "4294967296", "12ab", "0x-1", " 1"}) {
    INFO(bad);
    CHECK(parse_mark(bad, mark) ==
          "must be a number from 0 to 0xffffffff (decimal, or hex after 0x)");
  }
  const std::vector<std::string_view> capture = {
      "--config", "m.yaml", "--workload", "a/b/c", "--inbound-plaintext-listen", "127.0.0.1:15006"};
  CHECK(parse_flags(capture).config.mark == Config::kCaptureMark);
  std::vector<std::string_view> with_mark = capture;
  with_mark.insert(with_mark.end(), {"--mark", "0"});
  CHECK(parse_flags(with_mark).config.mark == 0);  // capture rules that exclude otherwise
  with_mark.back() = "0x10";
  CHECK(parse_flags(with_mark).config.mark == 0x10);
  // Without capture, only --mark sets one (e.g. for the rules of a --forward set-up).
  CHECK(parse({"--forward", "127.0.0.1:1=tcp://127.0.0.1:2", "--mark", "0x20"}).config.mark ==
        0x20);
  CHECK(parse({"--forward", "127.0.0.1:1=tcp://127.0.0.1:2"}).config.mark == 0);
  CHECK(parse({}).config.mark == 0);
}

TEST_CASE("mesh: $LOCAL_XDS_PATH and $PROXY_WORKLOAD_INFO are the defaults of the flags") {
  Environment env;
  env.local_xds_path = "/var/run/mesh.yaml";
  env.proxy_workload_info = "prod/db-0/db";
  const std::vector<std::string_view> listen = {"--outbound-listen", "127.0.0.1:15001"};
  SUBCASE("both from the environment") {
    const FlagsResult r = parse_flags(listen, env);
    INFO(r.error);
    REQUIRE(r.action == Action::run);
    CHECK(r.config.config_path == "/var/run/mesh.yaml");
    CHECK(r.config.workload_namespace == "prod");
    CHECK(r.config.workload_name == "db-0");
    CHECK(r.config.workload_service_account == "db");
  }
  SUBCASE("flags win") {
    std::vector<std::string_view> args = listen;
    args.insert(args.end(), {"--config", "mine.yaml", "--workload", "a/b/c"});
    const FlagsResult r = parse_flags(args, env);
    REQUIRE(r.action == Action::run);
    CHECK(r.config.config_path == "mine.yaml");
    CHECK(r.config.workload_namespace == "a");
  }
  SUBCASE("--config given, --workload from the environment") {
    env.local_xds_path.clear();
    std::vector<std::string_view> args = listen;
    args.insert(args.end(), {"--config", "mine.yaml"});
    const FlagsResult r = parse_flags(args, env);
    REQUIRE(r.action == Action::run);
    CHECK(r.config.workload_name == "db-0");
  }
  SUBCASE("no config: $PROXY_WORKLOAD_INFO is not used, even malformed") {
    env.local_xds_path.clear();
    env.proxy_workload_info = "nonsense";
    const FlagsResult r = parse_flags({}, env);
    REQUIRE(r.action == Action::run);
    CHECK(r.config.config_path.empty());
    CHECK(r.config.workload_namespace.empty());
    CHECK(r.config.routes.size() == 1);  // the embedded default
  }
  SUBCASE("a malformed $PROXY_WORKLOAD_INFO with a config") {
    env.proxy_workload_info = "prod/db-0";
    const FlagsResult r = parse_flags(listen, env);
    CHECK(r.action == Action::usage_error);
    CHECK(r.error ==
          "$PROXY_WORKLOAD_INFO \"prod/db-0\" (the default of --workload): must be NS/NAME/SA: "
          "the workload's namespace, name and service account (e.g. default/vm-1/vm-sa)");
  }
  SUBCASE("$LOCAL_XDS_PATH without a workload") {
    env.proxy_workload_info.clear();
    const FlagsResult r = parse_flags(listen, env);
    CHECK(r.action == Action::usage_error);
    CHECK(r.error ==
          "--config \"/var/run/mesh.yaml\" (from $LOCAL_XDS_PATH) needs --workload NS/NAME/SA (or "
          "$PROXY_WORKLOAD_INFO): the local workload");
  }
  SUBCASE("the environment read by from_process") {
    setenv("LOCAL_XDS_PATH", "/a.yaml", 1);
    setenv("PROXY_WORKLOAD_INFO", "x/y/z", 1);
    const Environment e = Environment::from_process();
    unsetenv("LOCAL_XDS_PATH");
    unsetenv("PROXY_WORKLOAD_INFO");
    CHECK(e.local_xds_path == "/a.yaml");
    CHECK(e.proxy_workload_info == "x/y/z");
    const Environment none = Environment::from_process();
    CHECK(none.local_xds_path.empty());
    CHECK(none.proxy_workload_info.empty());
  }
}

TEST_CASE("mesh: bad usage names the flag, the value and the reason") {
  struct Case {
    std::vector<std::string_view> args;
    std::string error;
  };
  const std::string workload_format =
      "must be NS/NAME/SA: the workload's namespace, name and service account (e.g. "
      "default/vm-1/vm-sa)";
  const Case cases[] = {
      {{"--config", "m.yaml", "--outbound-listen", "127.0.0.1:1"},
       "--config \"m.yaml\" needs --workload NS/NAME/SA (or $PROXY_WORKLOAD_INFO): the local "
       "workload"},
      {{"--config", "m.yaml", "--workload", "a/b/c"},
       "--config \"m.yaml\" names no listener: give --outbound-listen, "
       "--inbound-plaintext-listen, --hbone-listen or --forward"},
      {{"--config", ""}, "--config \"\": must be a file path"},
      {{"--config", "a.yaml", "--config", "b.yaml"}, "--config \"b.yaml\": may be given once"},
      {{"--workload", "a/b/c", "--hbone-listen", "127.0.0.1:1"},
       "--workload needs --config (the workload config)"},
      {{"--outbound-listen", "127.0.0.1:15001"},
       "--outbound-listen needs --config (the workload config)"},
      {{"--inbound-plaintext-listen", "127.0.0.1:15006"},
       "--inbound-plaintext-listen needs --config (the workload config)"},
      {{"--config", "m.yaml", "--workload", "a/b"}, "--workload \"a/b\": " + workload_format},
      {{"--config", "m.yaml", "--workload", "a/b/c/d"},
       "--workload \"a/b/c/d\": " + workload_format},
      {{"--config", "m.yaml", "--workload", "a//c"}, "--workload \"a//c\": " + workload_format},
      {{"--config", "m.yaml", "--workload", "/b/c"}, "--workload \"/b/c\": " + workload_format},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--workload", "a/b/c"},
       "--workload \"a/b/c\": may be given once"},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--outbound-listen", "localhost:1"},
       "--outbound-listen \"localhost:1\": "},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--outbound-listen", "127.0.0.1:1",
        "--outbound-listen", "127.0.0.1:1"},
       "--outbound-listen: 127.0.0.1:1 is named twice as a listen address"},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--inbound-plaintext-listen", "[::]:1",
        "--outbound-listen", "[::]:1"},
       "[::]:1 is named by both --outbound-listen and --inbound-plaintext-listen"},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--outbound-listen", "127.0.0.1:1",
        "--inbound-plaintext-listen", "127.0.0.1:1"},
       "127.0.0.1:1 is named by both --outbound-listen and --inbound-plaintext-listen"},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--outbound-listen", "127.0.0.1:1",
        "--hbone-listen", "127.0.0.1:1"},
       "127.0.0.1:1 is named by both --hbone-listen and --outbound-listen"},
      {{"--config", "m.yaml", "--workload", "a/b/c", "--inbound-plaintext-listen", "127.0.0.1:1",
        "--forward", "127.0.0.1:1=tcp://127.0.0.1:2"},
       "127.0.0.1:1 is named by both --forward and --inbound-plaintext-listen"},
      {{"--mark", "lots"},
       "--mark \"lots\": must be a number from 0 to 0xffffffff (decimal, or hex after 0x)"},
      {{"--mark"}, "--mark needs a value: MARK"},
  };
  for (const Case& c : cases) {
    const FlagsResult r = parse_flags(c.args);
    std::string line;
    for (const std::string_view a : c.args)
      line += std::string(line.empty() ? "" : " ") + std::string(a);
    INFO(line);
    CHECK(r.action == Action::usage_error);
    if (c.error.ends_with(": "))
      CHECK(r.error.starts_with(c.error));
    else
      CHECK(r.error == c.error);
  }
}

TEST_CASE("TCP keepalive and log format: defaults, values, off and errors") {
  const FlagsResult d = parse({});
  CHECK(d.config.keepalive().time_s == 180);
  CHECK(d.config.keepalive().interval_s == 180);
  CHECK(d.config.keepalive().probes == 9);
  CHECK(d.config.keepalive().enabled());
  CHECK(d.config.log_format == Config::LogFormat::text);

  const FlagsResult r = parse({"--tcp-keepalive-time", "60", "--tcp-keepalive-interval=7",
                               "--tcp-keepalive-probes", "4", "--log-format", "json"});
  REQUIRE(r.action == Action::run);
  CHECK(r.config.keepalive().time_s == 60);
  CHECK(r.config.keepalive().interval_s == 7);
  CHECK(r.config.keepalive().probes == 4);
  CHECK(r.config.log_format == Config::LogFormat::json);

  CHECK(!parse({"--tcp-keepalive-time", "off"}).config.keepalive().enabled());
  CHECK(!parse({"--tcp-keepalive-probes", "0"}).config.keepalive().enabled());

  for (const auto& [args, want] :
       std::vector<std::pair<std::vector<std::string_view>, std::string>>{
           {{"--tcp-keepalive-probes", "128"}, "--tcp-keepalive-probes"},
           {{"--tcp-keepalive-time", "32768"}, "--tcp-keepalive-time"},
           {{"--tcp-keepalive-interval", "5s"}, "--tcp-keepalive-interval"},
           {{"--log-format", "yaml"}, "must be text or json"}}) {
    const FlagsResult bad = parse_flags(args);
    CHECK(bad.action == Action::usage_error);
    INFO(bad.error);
    CHECK(bad.error.find(want) != std::string::npos);
  }
}

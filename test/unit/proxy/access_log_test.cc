#include "ringtunnel/proxy/access_log.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

using namespace ringtunnel::proxy;

TEST_CASE("an access line names both ends, the bytes each way and how it ended") {
  std::string out;
  append_access_line(out, {"127.0.0.1:15001",
                           "127.0.0.1:40000",
                           "127.0.0.1:8080",
                           123,
                           456,
                           12,
                           EndReason::client_reset,
                           1'764'320'400'123,
                           {},
                           {}});
  CHECK(out ==
        "access listener=127.0.0.1:15001 client=127.0.0.1:40000 target=127.0.0.1:8080 bytes_up=123 "
        "bytes_down=456 duration_ms=12 end=client_reset start=2025-11-28T09:00:00.123Z\n");
}

TEST_CASE("an HBONE stream's line names both identities before the start time") {
  std::string out;
  append_access_line(
      out, {"127.0.0.1:15001", "127.0.0.1:40000", "127.0.0.1:8080", 1, 2, 3, EndReason::refused,
            1'764'320'400'123, "spiffe://td/ns/a/sa/b", "spiffe://td/ns/c/sa/d"});
  CHECK(out ==
        "access listener=127.0.0.1:15001 client=127.0.0.1:40000 target=127.0.0.1:8080 bytes_up=1 "
        "bytes_down=2 duration_ms=3 end=refused src_identity=spiffe://td/ns/a/sa/b "
        "dst_identity=spiffe://td/ns/c/sa/d start=2025-11-28T09:00:00.123Z\n");
}

TEST_CASE("every end reason has its own name") {
  const EndReason all[] = {
      EndReason::closed,          EndReason::client_reset,    EndReason::target_reset,
      EndReason::connect_refused, EndReason::connect_timeout, EndReason::connect_error,
      EndReason::drain_timeout,   EndReason::error,           EndReason::refused,
      EndReason::denied,          EndReason::bad_request,     EndReason::peer_error,
      EndReason::overload};
  for (EndReason a : all)
    for (EndReason b : all)
      if (a != b) CHECK(to_string(a) != to_string(b));
}

TEST_CASE("a refused stream's reason comes last before the start time, quoted and escaped") {
  const AccessRecord rec{"127.0.0.1:15008",
                         "127.0.0.1:40000",
                         "127.0.0.1:9",
                         0,
                         0,
                         1,
                         EndReason::denied,
                         1'764'320'400'123,
                         "spiffe://td/ns/a/sa/b",
                         "spiffe://td/ns/c/sa/d"};
  std::string out;
  append_access_line(out, rec, "loopback target 127.0.0.1:9 is not in a loopback --allow-dest");
  CHECK(out ==
        "access listener=127.0.0.1:15008 client=127.0.0.1:40000 target=127.0.0.1:9 bytes_up=0 "
        "bytes_down=0 duration_ms=1 end=denied src_identity=spiffe://td/ns/a/sa/b "
        "dst_identity=spiffe://td/ns/c/sa/d reason=\"loopback target 127.0.0.1:9 is not in a "
        "loopback --allow-dest\" start=2025-11-28T09:00:00.123Z\n");
  // Whatever a reason holds, it cannot end its quotes early, add a field or a line.
  out.clear();
  append_access_line(out, rec, "a\" end=closed x=\\\"\n\r\x01\xff");
  CHECK(out.find(" reason=\"a\\\" end=closed x=\\\\\\\"\\x0a\\x0d\\x01\\xff\" start=") !=
        std::string::npos);
  CHECK(out.find('\n') == out.size() - 1);
  // No reason: no field (the line is as it always was).
  out.clear();
  append_access_line(out, rec);
  CHECK(out.find("reason=") == std::string::npos);
}

namespace {

std::string line_with_client(std::string_view client) {
  std::string out;
  append_access_line(out,
                     {"127.0.0.1:15008", client, "127.0.0.1:8080", 1, 2, 3, EndReason::client_reset,
                      1'764'320'400'123, "spiffe://td/ns/a/sa/b", "spiffe://td/ns/c/sa/d"});
  return out;
}

// The fields of a line, split as a reader of the log would: on spaces, then at the first '='.
std::vector<std::pair<std::string, std::string>> fields(std::string_view line) {
  REQUIRE(line.ends_with('\n'));
  line.remove_suffix(1);
  std::vector<std::pair<std::string, std::string>> out;
  size_t at = 0;
  while (at <= line.size()) {
    const size_t end = std::min(line.find(' ', at), line.size());
    const std::string_view token = line.substr(at, end - at);
    const size_t eq = token.find('=');
    if (eq == std::string_view::npos)
      out.emplace_back(std::string(token), "");
    else
      out.emplace_back(std::string(token.substr(0, eq)), std::string(token.substr(eq + 1)));
    at = end + 1;
  }
  return out;
}

// Reverses append_log_value, as a consumer of the log would.
std::string unescape(std::string_view v) {
  if (!v.starts_with('"')) return std::string(v);
  REQUIRE(v.size() >= 2);
  REQUIRE(v.ends_with('"'));
  v = v.substr(1, v.size() - 2);
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '\\') {
      REQUIRE(v[i] != '"');
      out += v[i];
    } else if (v[i + 1] == 'x') {
      out += char(std::stoi(std::string(v.substr(i + 2, 2)), nullptr, 16));
      i += 3;
    } else {
      out += v[i + 1];
      ++i;
    }
  }
  return out;
}

}  // namespace

TEST_CASE("a hostile client value cannot add fields or lines to an access record") {
  const std::string_view hostile[] = {
      "1.2.3.4:5\naccess listener=x client=y target=z bytes_up=0 bytes_down=0 duration_ms=0 "
      "end=closed start=2025-01-01T00:00:00.000Z",
      "1.2.3.4:5\r\n",
      "1.2.3.4:5 end=closed",
      "a b",
      "\"1.2.3.4:5\"",
      "a\\\" end=closed \\\"",
      "end=closed",
      "=",
      "\xc3\xa9t\xc3\xa9\xff\x80",
      std::string_view("nul\0byte", 8),
      "\t\x7f\x1b[31m",
  };
  for (const std::string_view client : hostile) {
    CAPTURE(client);
    const std::string line = line_with_client(client);
    CAPTURE(line);
    CHECK(line.find('\n') == line.size() - 1);
    CHECK(line.find('\r') == std::string::npos);
    for (const char c : line.substr(0, line.size() - 1))
      CHECK((c >= ' ' && c <= '~'));
    const auto f = fields(line);
    REQUIRE(f.size() == 11);
    const std::vector<std::string> want = {"access",       "listener",     "client",      "target",
                                           "bytes_up",     "bytes_down",   "duration_ms", "end",
                                           "src_identity", "dst_identity", "start"};
    for (size_t i = 0; i < f.size(); ++i)
      CHECK(f[i].first == want[i]);
    CHECK(f[2].second.starts_with('"'));
    CHECK(unescape(f[2].second) == client);
    CHECK(f[7].second == "client_reset");
    CHECK(f[4].second == "1");
  }
}

TEST_CASE("escaped values: quotes, backslashes, and \\xNN for the rest") {
  auto value = [](std::string_view v) {
    std::string out;
    append_log_value(out, v);
    return out;
  };
  CHECK(value("1.2.3.4:5\n") == "\"1.2.3.4:5\\x0a\"");
  CHECK(value("a b") == "\"a\\x20b\"");
  CHECK(value("a\"b") == "\"a\\\"b\"");
  CHECK(value("a\\b") == "\"a\\\\b\"");
  CHECK(value("a=b") == "\"a\\x3db\"");
  CHECK(value("1.2.3.4 end=closed") == "\"1.2.3.4\\x20end\\x3dclosed\"");
  CHECK(value("\xc3\xa9\xff") == "\"\\xc3\\xa9\\xff\"");
  // Plain values print as they are.
  CHECK(value("127.0.0.1:40000") == "127.0.0.1:40000");
  CHECK(value("[::1]:40000") == "[::1]:40000");
  CHECK(value("spiffe://cluster.local/ns/default/sa/web-1_x~") ==
        "spiffe://cluster.local/ns/default/sa/web-1_x~");
  CHECK(value("") == "");
  // Every byte value survives the round trip.
  std::string all;
  for (int b = 0; b < 256; ++b)
    all += char(b);
  const std::string printed = value(all);
  CHECK(printed.find(' ') == std::string::npos);
  CHECK(printed.find('=') == std::string::npos);
  CHECK(unescape(printed) == all);
}

TEST_CASE("a JSON access record has ztunnel's field names, and leaves out what does not apply") {
  AccessRecord r{"127.0.0.1:15001",
                 "127.0.0.1:40000",
                 "127.0.0.1:8080",
                 123,
                 456,
                 12,
                 EndReason::closed,
                 1'764'320'400'123,
                 {},
                 {}};
  std::string out;
  append_access_json(out, r);
  CHECK(out ==
        "{\"level\":\"info\",\"time\":\"2025-11-28T09:00:00.135Z\",\"scope\":\"access\","
        "\"message\":\"connection complete\",\"src.addr\":\"127.0.0.1:40000\","
        "\"dst.addr\":\"127.0.0.1:8080\",\"direction\":\"outbound\",\"bytes_sent\":123,"
        "\"bytes_recv\":456,\"duration\":\"12ms\"}\n");
}

TEST_CASE("an inbound JSON record reports the destination's bytes; a failure is an error") {
  AccessRecord r{"127.0.0.1:15008",
                 "10.0.0.1:40000",
                 "10.0.0.2:8080",
                 1,
                 2,
                 3,
                 EndReason::denied,
                 1'764'320'400'000,
                 "spiffe://td/ns/a/sa/b",
                 "spiffe://td/ns/c/sa/d"};
  r.direction = AccessRecord::Direction::inbound;
  r.dst_addr = "10.0.0.2:15008";
  r.hbone_addr = "10.0.0.2:8080";
  r.src_workload = "a\"\n\xff";
  r.src_namespace = "ns-a";
  r.dst_workload = "d";
  r.dst_namespace = "ns-d";
  r.dst_service = "web.ns-d.svc.cluster.local";
  std::string out;
  append_access_json(out, r, "deny: policy ns-d/no");
  CHECK(out ==
        "{\"level\":\"error\",\"time\":\"2025-11-28T09:00:00.003Z\",\"scope\":\"access\","
        "\"message\":\"connection complete\",\"src.addr\":\"10.0.0.1:40000\","
        "\"src.workload\":\"a\\\"\\n\\u00ff\",\"src.namespace\":\"ns-a\","
        "\"src.identity\":\"spiffe://td/ns/a/sa/b\",\"dst.addr\":\"10.0.0.2:15008\","
        "\"dst.hbone_addr\":\"10.0.0.2:8080\",\"dst.service\":\"web.ns-d.svc.cluster.local\","
        "\"dst.workload\":\"d\",\"dst.namespace\":\"ns-d\","
        "\"dst.identity\":\"spiffe://td/ns/c/sa/d\",\"direction\":\"inbound\",\"bytes_sent\":2,"
        "\"bytes_recv\":1,\"duration\":\"3ms\",\"error\":\"denied: deny: policy ns-d/no\"}\n");
}

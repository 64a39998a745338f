// The operating servers' request parser (limits, methods, bodies, malformed input), readiness
// and the admin endpoint's JSON strings, without sockets.
#include "ringtunnel/ops/http_server.h"

#include <doctest/doctest.h>

#include <string>

#include "ringtunnel/config/flags.h"
#include "ringtunnel/ops/admin.h"
#include "ringtunnel/ops/health.h"
#include "ringtunnel/proxy/log.h"

using namespace ringtunnel;
using ops::ParseResult;
using State = ParseResult::State;

namespace {

ParseResult parse(const std::string& bytes, ops::Request* out = nullptr) {
  ops::Request r;
  ParseResult result = ops::parse_request(bytes, r);
  if (out) *out = r;
  return result;
}

}  // namespace

TEST_CASE("a complete GET, with its decoded query") {
  ops::Request r;
  const ParseResult p =
      parse("GET /logging?level=debug&x=a%20b+c&flag HTTP/1.1\r\nHost: h\r\n\r\n", &r);
  REQUIRE(p.state == State::complete);
  CHECK(r.method == "GET");
  CHECK(r.path == "/logging");
  CHECK(r.query.at("level") == "debug");
  CHECK(r.query.at("x") == "a b c");
  CHECK(r.query.at("flag") == "");
  CHECK(parse("POST /quitquitquit HTTP/1.0\r\nContent-Length: 0\r\n\r\n").state == State::complete);
  CHECK(parse("HEAD / HTTP/1.1\r\n\r\n").state == State::complete);
  CHECK(parse("\r\nGET / HTTP/1.1\r\n\r\n").state == State::complete);
}

TEST_CASE("a request is incomplete until its empty line, byte by byte") {
  const std::string request = "GET /healthz/ready HTTP/1.1\r\nHost: x\r\n\r\n";
  for (size_t n = 0; n < request.size(); ++n) {
    INFO(n);
    CHECK(parse(request.substr(0, n)).state == State::incomplete);
  }
  CHECK(parse(request).state == State::complete);
}

TEST_CASE("request line and headers beyond 8 KiB: 431") {
  const std::string start = "GET / HTTP/1.1\r\nX-Fill: ";
  std::string fill(ops::kMaxHeaderBytes - start.size() - 4, 'a');
  CHECK(parse(start + fill + "\r\n\r\n").state == State::complete);  // exactly 8 KiB
  fill += 'a';
  const ParseResult over = parse(start + fill + "\r\n\r\n");
  CHECK(over.state == State::error);
  CHECK(over.status == 431);
  // Never ending: 431 as soon as 8 KiB are there.
  const ParseResult endless = parse(start + std::string(ops::kMaxHeaderBytes, 'b'));
  CHECK(endless.status == 431);
  CHECK(parse(start + std::string(ops::kMaxHeaderBytes - start.size() - 1, 'b')).state ==
        State::incomplete);
}

TEST_CASE("methods other than GET, POST and HEAD: 405") {
  for (const char* m : {"PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE", "get"}) {
    INFO(m);
    const ParseResult p = parse(std::string(m) + " / HTTP/1.1\r\n\r\n");
    CHECK(p.state == State::error);
    CHECK(p.status == 405);
  }
}

TEST_CASE("a body: 413") {
  CHECK(parse("POST /logging HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").status == 413);
  CHECK(parse("POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n").status == 413);
  CHECK(parse("POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n").state == State::complete);
}

TEST_CASE("malformed request lines and headers: 400") {
  for (const char* bad : {
           "GARBAGE\r\n\r\n",
           "GET\r\n\r\n",
           "GET /\r\n\r\n",
           "GET / HTTP/1.1 extra\r\n\r\n",
           "GET  / HTTP/1.1\r\n\r\n",
           "GET / HTTP/2.0\r\n\r\n",
           "GET / FOO\r\n\r\n",
           "GET http://example/ HTTP/1.1\r\n\r\n",
           "GET * HTTP/1.1\r\n\r\n",
           "G(T / HTTP/1.1\r\n\r\n",
           "GET /a\x01 HTTP/1.1\r\n\r\n",
           "GET /?a=%zz HTTP/1.1\r\n\r\n",
           "GET /?a=%2 HTTP/1.1\r\n\r\n",
           "GET / HTTP/1.1\r\nno colon\r\n\r\n",
           "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
           "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
           "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
           "\x16\x03\x01\x02\x01\r\n\r\n",  // the start of a TLS ClientHello
       }) {
    INFO(bad);
    const ParseResult p = parse(bad);
    CHECK(p.state == State::error);
    CHECK(p.status == 400);
    CHECK(!p.reason.empty());
  }
}

TEST_CASE("responses say their length and close") {
  const ops::Response r{503, "text/plain; charset=utf-8", "draining\n"};
  CHECK(ops::format_response(r, false) ==
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Length: 9\r\nConnection: close\r\n\r\ndraining\n");
  CHECK(ops::format_response(r, true).ends_with("Connection: close\r\n\r\n"));
  CHECK(std::string(ops::reason_phrase(431)) == "Request Header Fields Too Large");
  CHECK(std::string(ops::reason_phrase(408)) == "Request Timeout");
}

TEST_CASE("readiness: workers, config, certificate, drain") {
  ops::Health h;
  const std::time_t now = 1'800'000'000;
  h.workers_expected = 2;
  CHECK_FALSE(h.readiness(now).ready);
  CHECK(h.readiness(now).reason == "workers starting (0 of 2 ready)");
  h.workers_ready = 2;
  CHECK(h.readiness(now).ready);
  CHECK(h.readiness(now).reason == "ready");
  h.config_needed = true;
  CHECK(h.readiness(now).reason == "workload config not loaded");
  h.config_loaded = true;
  h.identity_needed = true;
  CHECK(h.readiness(now).reason == "certificate not loaded");
  h.cert_not_before = now - 10;
  h.cert_not_after = now - 1;
  CHECK(h.readiness(now).reason == "certificate expired at 2027-01-15T07:59:59Z");
  h.cert_not_after = now + 3600;  // rotated
  CHECK(h.readiness(now).ready);
  h.cert_not_before = now + 60;
  CHECK(h.readiness(now).reason.starts_with("certificate not valid before "));
  h.cert_not_before = now - 10;
  h.draining = true;
  CHECK_FALSE(h.readiness(now).ready);
  CHECK(h.readiness(now).reason == "draining");
}

TEST_CASE("JSON strings are escaped, whatever the bytes") {
  CHECK(ops::json_string("plain") == "\"plain\"");
  CHECK(ops::json_string("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(ops::json_string("l1\nl2\t\x01") == "\"l1\\nl2\\t\\u0001\"");
  CHECK(ops::json_string("caf\xc3\xa9") == "\"caf\xc3\xa9\"");             // UTF-8 kept
  CHECK(ops::json_string("\xff\xc3") == "\"\\u00ff\\u00c3\"");             // not UTF-8: escaped
  CHECK(ops::json_string("\xed\xa0\x80") == "\"\\u00ed\\u00a0\\u0080\"");  // a surrogate
}

TEST_CASE("the flags in /config_dump: every flag of the table, each value as given") {
  const config::FlagsResult r = config::parse_flags(
      {"--workers", "3", "--forward", "127.0.0.1:1=tcp://127.0.0.1:2", "--admin-listen", "off"});
  REQUIRE(r.action == config::FlagsResult::Action::run);
  const std::string json = ops::flags_json(r.config);
  CHECK(json.find("\"--workers\":\"3\"") != std::string::npos);
  CHECK(json.find("\"--forward\":[\"127.0.0.1:1=tcp://127.0.0.1:2\"]") != std::string::npos);
  CHECK(json.find("\"--admin-listen\":\"off\"") != std::string::npos);
  CHECK(json.find("\"--readiness-listen\":\"0.0.0.0:15021\"") != std::string::npos);
  CHECK(json.find("\"--cert\":null") != std::string::npos);
  CHECK(json.find("--help") == std::string::npos);
  for (const config::FlagInfo& f : config::flag_table()) {
    if (std::string(f.name) == "--help" || std::string(f.name) == "--version") continue;
    INFO(f.name);
    CHECK(json.find(ops::json_string(f.name) + ":") != std::string::npos);
  }
}

TEST_CASE("log levels: parse, show, filter") {
  proxy::LogLevel l = proxy::LogLevel::info;
  CHECK(proxy::parse_log_level("debug", l));
  CHECK(l == proxy::LogLevel::debug);
  CHECK_FALSE(proxy::parse_log_level("verbose", l));
  CHECK_FALSE(proxy::parse_log_level("", l));
  CHECK(l == proxy::LogLevel::debug);
  const proxy::LogLevel was = proxy::log_level();
  proxy::set_log_level(proxy::LogLevel::warn);
  CHECK(proxy::log_enabled(proxy::LogLevel::error));
  CHECK(proxy::log_enabled(proxy::LogLevel::warn));
  CHECK_FALSE(proxy::log_enabled(proxy::LogLevel::info));
  CHECK(std::string(proxy::to_string(proxy::log_level())) == "warn");
  proxy::set_log_level(was);
}

TEST_CASE("admin: what a web page could send is refused, what tools send is served") {
  const auto refused = [](std::string host, std::string origin) {
    ops::Request r;
    r.method = "POST";
    r.path = "/quitquitquit";
    r.host = std::move(host);
    r.origin = std::move(origin);
    const auto out = ops::refused_from_browser(r);
    return out && out->status == 403;
  };
  // curl, scripts, port-forwards: an address or localhost, no Origin.
  for (const char* host : {"", "127.0.0.1:15000", "127.0.0.1", "localhost:15000", "localhost",
                           "[::1]:15000", "[::1]", "10.0.0.7:15000"})
    CHECK_FALSE(refused(host, ""));
  // A cross-site request carries Origin; DNS rebinding carries the attacker's name.
  CHECK(refused("127.0.0.1:15000", "http://evil.example"));
  CHECK(refused("127.0.0.1:15000", "null"));
  CHECK(refused("rebound.example:15000", ""));
  CHECK(refused("localhost.evil.example", ""));
  CHECK(refused("[::1", ""));
}

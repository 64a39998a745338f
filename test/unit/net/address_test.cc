#include "ringtunnel/net/address.h"

#include <doctest/doctest.h>

using ringtunnel::net::Endpoint;
using ringtunnel::net::parse_endpoint;

TEST_CASE("IPv4 and IPv6 endpoints parse and print back") {
  Endpoint e;
  CHECK(parse_endpoint("127.0.0.1:15001", e) == "");
  CHECK(e.family() == AF_INET);
  CHECK(e.to_string() == "127.0.0.1:15001");
  CHECK(parse_endpoint("[::1]:8080", e) == "");
  CHECK(e.family() == AF_INET6);
  CHECK(e.to_string() == "[::1]:8080");
  CHECK(parse_endpoint("0.0.0.0:0", e) == "");
}

TEST_CASE("bad endpoints say why") {
  Endpoint e;
  CHECK(parse_endpoint("127.0.0.1", e) == "missing ':port'");
  CHECK(parse_endpoint("127.0.0.1:", e) == "port must be a number from 0 to 65535");
  CHECK(parse_endpoint("127.0.0.1:65536", e) == "port must be a number from 0 to 65535");
  CHECK(parse_endpoint("127.0.0.1:80x", e) == "port must be a number from 0 to 65535");
  CHECK(parse_endpoint("localhost:80", e) == "not an IPv4 address (names are not resolved)");
  CHECK(parse_endpoint("::1:80", e) == "an IPv6 address must be in brackets: [addr]:port");
  CHECK(parse_endpoint("[::1:80", e) == "missing ']' after the IPv6 address");
  CHECK(parse_endpoint("[::1]80", e) == "missing ':port' after ']'");
  CHECK(parse_endpoint("[1.2.3.4]:80", e) == "not an IPv6 address");
}

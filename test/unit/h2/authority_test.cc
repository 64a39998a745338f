#include "ringtunnel/h2/authority.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>

#include <string>

using ringtunnel::h2::AuthorityError;
using ringtunnel::h2::describe;
using ringtunnel::h2::parse_authority;
using ringtunnel::net::Endpoint;

namespace {

AuthorityError parse(std::string_view text) {
  Endpoint e;
  return parse_authority(text, e);
}

}  // namespace

TEST_CASE("authority: numeric IPv4 and IPv6 targets parse into connect()-ready addresses") {
  struct Good {
    const char* text;
    int family;
    const char* printed;
  };
  const Good cases[] = {
      {"10.0.0.1:80", AF_INET, "10.0.0.1:80"},
      {"0.0.0.0:1", AF_INET, "0.0.0.0:1"},
      {"255.255.255.255:65535", AF_INET, "255.255.255.255:65535"},
      {"127.0.0.1:15008", AF_INET, "127.0.0.1:15008"},
      {"100.64.0.10:9", AF_INET, "100.64.0.10:9"},
      {"[::1]:443", AF_INET6, "[::1]:443"},
      {"[2001:db8::1]:8080", AF_INET6, "[2001:db8::1]:8080"},
      {"[FE80::1]:1", AF_INET6, "[fe80::1]:1"},
      {"[2001:0db8:0000:0000:0000:ff00:0042:8329]:65535", AF_INET6,
       "[2001:db8::ff00:42:8329]:65535"},
      {"[::]:80", AF_INET6, "[::]:80"},
      {"[64:ff9b::10.1.2.3]:80", AF_INET6, "[64:ff9b::a01:203]:80"},
      // IPv4-mapped: one address family per host for policy and logs.
      {"[::ffff:10.1.2.3]:80", AF_INET, "10.1.2.3:80"},
      {"[::ffff:a01:203]:80", AF_INET, "10.1.2.3:80"},
  };
  for (const Good& c : cases) {
    CAPTURE(c.text);
    Endpoint e;
    REQUIRE(parse_authority(c.text, e) == AuthorityError::ok);
    CHECK(e.family() == c.family);
    CHECK(e.length == (c.family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6)));
    CHECK(e.to_string() == c.printed);
  }
}

TEST_CASE("authority: anything else is refused with its reason") {
  struct Bad {
    std::string text;
    AuthorityError error;
  };
  const Bad cases[] = {
      {"", AuthorityError::empty},
      {std::string(54, '1'), AuthorityError::too_long},
      {"[" + std::string(50, ':') + "]:80", AuthorityError::too_long},
      // ports
      {"10.0.0.1", AuthorityError::missing_port},
      {"10.0.0.1:", AuthorityError::bad_port},
      {"10.0.0.1:0", AuthorityError::bad_port},
      {"10.0.0.1:65536", AuthorityError::bad_port},
      {"10.0.0.1:99999", AuthorityError::bad_port},
      {"10.0.0.1:123456", AuthorityError::bad_port},
      {"10.0.0.1:080", AuthorityError::bad_port},
      {"10.0.0.1:00080", AuthorityError::bad_port},
      {"10.0.0.1:8a", AuthorityError::bad_port},
      {"10.0.0.1:+80", AuthorityError::bad_port},
      {"10.0.0.1:-1", AuthorityError::bad_port},
      {"10.0.0.1:8 0", AuthorityError::bad_port},
      {"10.0.0.1:80 ", AuthorityError::bad_port},
      {"10.0.0.1:80\r\n", AuthorityError::bad_port},
      {std::string("10.0.0.1:80\0", 12), AuthorityError::bad_port},
      {"[::1]", AuthorityError::missing_port},
      {"[::1]80", AuthorityError::missing_port},
      {"[::1]:", AuthorityError::bad_port},
      {"[::1]:80x", AuthorityError::bad_port},
      {"[::1]:0", AuthorityError::bad_port},
      {"[::1] :80", AuthorityError::missing_port},
      // IPv4
      {"010.0.0.1:80", AuthorityError::bad_ipv4},
      {"10.0.0.01:80", AuthorityError::bad_ipv4},
      {"10.00.0.1:80", AuthorityError::bad_ipv4},
      {"256.0.0.1:80", AuthorityError::bad_ipv4},
      {"1.2.3.999:80", AuthorityError::bad_ipv4},
      {"1.2.3.1000:80", AuthorityError::bad_ipv4},
      {"1.2.3:80", AuthorityError::bad_ipv4},
      {"127.1:80", AuthorityError::bad_ipv4},
      {"1.2.3.4.5:80", AuthorityError::bad_ipv4},
      {"1.2.3.:80", AuthorityError::bad_ipv4},
      {".1.2.3:80", AuthorityError::bad_ipv4},
      {"1..2.3:80", AuthorityError::bad_ipv4},
      {"0x7f.0.0.1:80", AuthorityError::bad_ipv4},
      {"1.2.3.4 :80", AuthorityError::bad_ipv4},
      {" 1.2.3.4:80", AuthorityError::bad_ipv4},
      {"1.2.3.4\t:80", AuthorityError::bad_ipv4},
      {"-1.2.3.4:80", AuthorityError::bad_ipv4},
      {"example.com:80", AuthorityError::bad_ipv4},
      {"localhost:80", AuthorityError::bad_ipv4},
      {":80", AuthorityError::bad_ipv4},
      {"1.2.3.4@5.6.7.8:80", AuthorityError::bad_ipv4},
      // IPv6
      {"::1:80", AuthorityError::ipv6_without_brackets},
      {"2001:db8::1:443", AuthorityError::ipv6_without_brackets},
      {"1.2.3.4:80:80", AuthorityError::ipv6_without_brackets},
      {"[::1:80", AuthorityError::missing_bracket},
      {"[]:80", AuthorityError::bad_ipv6},
      {"[:::]:80", AuthorityError::bad_ipv6},
      {"[1.2.3.4]:80", AuthorityError::bad_ipv6},
      {"[::g]:80", AuthorityError::bad_ipv6},
      {"[ ::1]:80", AuthorityError::bad_ipv6},
      {"[1:2:3:4:5:6:7:8:9]:80", AuthorityError::bad_ipv6},
      {"[12345::1]:80", AuthorityError::bad_ipv6},
      {"[::ffff:01.2.3.4]:80", AuthorityError::bad_ipv6},
      {"[::1]]:80", AuthorityError::missing_port},
      {"[[::1]]:80", AuthorityError::missing_port},
      {"[fe80::1%eth0]:80", AuthorityError::zone_id},
      {"[fe80::1%25eth0]:80", AuthorityError::zone_id},
  };
  for (const Bad& c : cases) {
    CAPTURE(c.text);
    CHECK(parse(c.text) == c.error);
  }
}

TEST_CASE("authority: every error has a reason to log") {
  for (int e = int(AuthorityError::ok); e <= int(AuthorityError::zone_id); ++e) {
    CHECK(!describe(AuthorityError(e)).empty());
    CHECK(describe(AuthorityError(e)) != "unknown");
  }
}

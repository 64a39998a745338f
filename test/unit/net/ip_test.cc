#include "ringtunnel/net/ip.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <doctest/doctest.h>
#include <cstring>

using ringtunnel::net::IpAddress;
using ringtunnel::net::IpAddressHash;
using ringtunnel::net::IpCidr;

TEST_CASE("IP addresses parse numerically and print back") {
  CHECK(IpAddress::parse("10.1.2.3")->to_string() == "10.1.2.3");
  CHECK(IpAddress::parse("10.1.2.3")->is_v4());
  CHECK(IpAddress::parse("fd00::1")->to_string() == "fd00::1");
  CHECK(IpAddress::parse("::ffff:1.2.3.4")->version == 6);
  CHECK(*IpAddress::parse("10.1.2.3") == IpAddress::v4(10, 1, 2, 3));
  for (const char* bad : {"", "10.1.2", "10.1.2.3.4", "010.1.2.3", "256.1.1.1", "localhost",
                          "[::1]", "fe80::1%eth0", "1.2.3.4:80", " 1.2.3.4"}) {
    CAPTURE(bad);
    CHECK_FALSE(IpAddress::parse(bad));
  }
}

TEST_CASE("an IPv4-mapped address from a dual-stack socket is the IPv4 address") {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  inet_pton(AF_INET6, "::ffff:10.0.0.7", &in6.sin6_addr);
  auto ip = IpAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof in6);
  REQUIRE(ip);
  CHECK(*ip == IpAddress::v4(10, 0, 0, 7));
  sockaddr_in in{};
  in.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.9", &in.sin_addr);
  CHECK(IpAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&in), sizeof in)->to_string() ==
        "127.0.0.9");
  sockaddr bad{};
  bad.sa_family = AF_UNIX;
  CHECK_FALSE(IpAddress::from_sockaddr(&bad, sizeof bad));
}

TEST_CASE("equal addresses hash equally; families differ") {
  IpAddressHash h;
  CHECK(h(*IpAddress::parse("10.0.0.1")) == h(IpAddress::v4(10, 0, 0, 1)));
  CHECK(*IpAddress::parse("::") != *IpAddress::parse("0.0.0.0"));
}

TEST_CASE("CIDR blocks need a prefix length and contain by their first bits") {
  auto net = IpCidr::parse("10.1.0.0/16");
  REQUIRE(net);
  CHECK(net->contains(*IpAddress::parse("10.1.255.4")));
  CHECK_FALSE(net->contains(*IpAddress::parse("10.2.0.1")));
  CHECK_FALSE(net->contains(*IpAddress::parse("::ffff:10.1.0.1")));  // never across families
  auto odd = IpCidr::parse("10.1.2.3/9");  // host bits written: still the /9
  REQUIRE(odd);
  CHECK(odd->contains(*IpAddress::parse("10.127.0.0")));
  CHECK_FALSE(odd->contains(*IpAddress::parse("10.128.0.0")));
  CHECK(IpCidr::parse("0.0.0.0/0")->contains(*IpAddress::parse("1.2.3.4")));
  CHECK(IpCidr::parse("1.2.3.4/32")->contains(*IpAddress::parse("1.2.3.4")));
  CHECK_FALSE(IpCidr::parse("1.2.3.4/32")->contains(*IpAddress::parse("1.2.3.5")));
  CHECK(IpCidr::parse("fd00::/8")->contains(*IpAddress::parse("fdff::1")));
  CHECK_FALSE(IpCidr::parse("fd00::/8")->contains(*IpAddress::parse("fe00::1")));
  CHECK(IpCidr::parse("fd00::/8")->to_string() == "fd00::/8");
  for (const char* bad :
       {"10.0.0.1", "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/x", "10.0.0.0/-1", "/8"}) {
    CAPTURE(bad);
    CHECK_FALSE(IpCidr::parse(bad));
  }
}

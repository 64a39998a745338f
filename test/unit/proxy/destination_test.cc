#include "ringtunnel/proxy/destination.h"

#include <doctest/doctest.h>

#include <optional>
#include <string_view>

using ringtunnel::proxy::forwarded_for;
using ringtunnel::proxy::forwarded_host;

TEST_CASE("forwarded_for: the for= element of a forwarded header, wherever it is") {
  struct Case {
    std::string_view header;
    std::optional<std::string_view> client;
  };
  const Case cases[] = {
      {R"(for="10.250.0.1:40000")", "10.250.0.1:40000"},
      {R"(for="[fd00::1]:40000")", "[fd00::1]:40000"},
      // A service's hostname after it, as a node proxy sends it for a service VIP.
      {R"(for="10.250.0.1:40000";host=web.default.svc.cluster.local)", "10.250.0.1:40000"},
      {R"(host=web.default.svc.cluster.local; for="10.250.0.1:1")", "10.250.0.1:1"},
      {"for=10.250.0.1", "10.250.0.1"},
      {R"(For="1.2.3.4:5")", "1.2.3.4:5"},
      // None, empty or malformed: no client from it.
      {"", std::nullopt},
      {"host=x", std::nullopt},
      {R"(for="")", std::nullopt},
      {"for=", std::nullopt},
      {R"(for="1.2.3.4)", std::nullopt},
      {R"(for=1.2"3)", std::nullopt},
      {R"(before="1.2.3.4")", std::nullopt},
  };
  for (const Case& c : cases) {
    INFO(c.header);
    CHECK(forwarded_for(c.header) == c.client);
  }
}

TEST_CASE("forwarded_host: the host= element, as a node proxy sends it for a service") {
  CHECK(forwarded_host(R"(for="10.0.0.1:1";host=web.default.svc.cluster.local)") ==
        std::optional<std::string_view>("web.default.svc.cluster.local"));
  CHECK(forwarded_host(R"(host="web";for="10.0.0.1:1")") == std::optional<std::string_view>("web"));
  CHECK(forwarded_host(R"(for="10.0.0.1:1")") == std::nullopt);
  CHECK(forwarded_host("host=") == std::nullopt);
  CHECK(forwarded_host("hostname=x") == std::nullopt);
}

#include "ringtunnel/tls/identity.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/ssl.h>

#include <string>

#include <doctest/doctest.h>

#include "tls_test_support.h"

using ringtunnel::tls::kMaxSpiffeIdBytes;
using ringtunnel::tls::parse_spiffe_id;
using ringtunnel::tls::SpiffeId;

namespace {

std::string reason(std::string_view text) {
  SpiffeId id;
  return parse_spiffe_id(text, id);
}

}  // namespace

TEST_CASE("SPIFFE IDs that parse, and print back as they were") {
  const struct {
    const char* text;
    SpiffeId want;
  } cases[] = {
      {"spiffe://cluster.local/ns/default/sa/node-a", {"cluster.local", "default", "node-a"}},
      {"spiffe://a/ns/b/sa/c", {"a", "b", "c"}},
      {"spiffe://my_td-1.example.org/ns/kube-system/sa/ztunnel",
       {"my_td-1.example.org", "kube-system", "ztunnel"}},
      {"spiffe://td/ns/Team.A_1/sa/Svc-2", {"td", "Team.A_1", "Svc-2"}},
      {"spiffe://td/ns/a..b/sa/...", {"td", "a..b", "..."}},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    SpiffeId id;
    REQUIRE(parse_spiffe_id(c.text, id) == "");
    CHECK(id == c.want);
    CHECK(id.to_string() == c.text);
  }
}

TEST_CASE("a SPIFFE ID of exactly the maximum length parses; one byte more does not") {
  const std::string prefix = "spiffe://td/ns/default/sa/";
  std::string text = prefix + std::string(kMaxSpiffeIdBytes - prefix.size(), 'a');
  REQUIRE(text.size() == kMaxSpiffeIdBytes);
  CHECK(reason(text) == "");
  text += 'a';
  CHECK(reason(text).find("2049 bytes") != std::string::npos);
}

TEST_CASE("strings that are not SPIFFE IDs, and why") {
  const struct {
    std::string text;
    const char* why;
  } cases[] = {
      {"", "empty"},
      {"SPIFFE://td/ns/a/sa/b", "does not start with 'spiffe://'"},
      {"spiffe:/td/ns/a/sa/b", "does not start with 'spiffe://'"},
      {"https://td/ns/a/sa/b", "does not start with 'spiffe://'"},
      {" spiffe://td/ns/a/sa/b", "does not start with 'spiffe://'"},
      {"spiffe:///ns/a/sa/b", "trust domain is empty"},
      {"spiffe://", "trust domain is empty"},
      {"spiffe://TD/ns/a/sa/b", "upper-case 'T'"},
      {"spiffe://td.Example/ns/a/sa/b", "upper-case 'E'"},
      {"spiffe://td:443/ns/a/sa/b", "a port is not allowed"},
      {"spiffe://user@td/ns/a/sa/b", "userinfo is not allowed"},
      {"spiffe://[::1]/ns/a/sa/b", "'['"},
      {"spiffe://t%64/ns/a/sa/b", "percent-encoding"},
      {"spiffe://td?x/ns/a/sa/b", "a query is not allowed"},
      {"spiffe://td", "no path"},
      {"spiffe://td/", "ends with '/'"},
      {"spiffe://td/ns/a/sa/b/", "ends with '/'"},
      {"spiffe://td/ns/a/sa/", "ends with '/'"},
      {"spiffe://td/ns//sa/b", "namespace is empty"},
      {"spiffe://td/ns/a/sa/b?x=1", "a query is not allowed"},
      {"spiffe://td/ns/a/sa/b#frag", "a fragment is not allowed"},
      {"spiffe://td/ns/a%20b/sa/b", "percent-encoding"},
      {"spiffe://td/ns/./sa/b", "relative path segment"},
      {"spiffe://td/ns/a/sa/..", "relative path segment"},
      {"spiffe://td/ns/a/sa/b/c", "more than /ns/<namespace>/sa/<account>"},
      {"spiffe://td/ns/a/sa/b/c/d/e", "more than"},
      {"spiffe://td/ns/a/sb/b", "path is not /ns/<namespace>/sa/<account>"},
      {"spiffe://td/sa/b/ns/a", "path is not"},
      {"spiffe://td/NS/a/sa/b", "path is not"},
      {"spiffe://td/ns/a", "path is not"},
      {"spiffe://td//ns/a/sa/b", "path is not"},
      {"spiffe://td/ns/a/sa/b c", "byte 0x20"},
      {"spiffe://td/ns/a/sa/b\n", "byte 0x0a"},
      {std::string("spiffe://td/ns/a/sa/b\0c", 23), "byte 0x00"},
      {"spiffe://td/ns/a/sa/\xc3\xa9", "byte 0xc3"},
      {"spiffe://" + std::string(256, 'd') + "/ns/a/sa/b", "trust domain is 256 bytes long"},
  };
  for (const auto& c : cases) {
    INFO("text: ", c.text);
    SpiffeId id{"unchanged", "unchanged", "unchanged"};
    const std::string why = parse_spiffe_id(c.text, id);
    INFO("reason: ", why);
    CHECK(why.find(c.why) != std::string::npos);
    CHECK(id.trust_domain == "unchanged");
  }
}

TEST_CASE("the identity in a certificate's URI SAN") {
  const tls_test::CertDir& dir = tls_test::CertDir::get();
  const auto id_of = [&](const char* name, SpiffeId& id) {
    WOLFSSL_X509* x509 =
        wolfSSL_X509_load_certificate_file(dir.path(name).c_str(), WOLFSSL_FILETYPE_PEM);
    REQUIRE(x509 != nullptr);
    std::string why = ringtunnel::tls::spiffe_id_of(x509, id);
    wolfSSL_X509_free(x509);
    return why;
  };
  SpiffeId id;
  CHECK(id_of("node-a.crt", id) == "");
  CHECK(id == tls_test::spiffe("node-a"));
  CHECK(id_of("no-spiffe.crt", id).find("no URI SAN") != std::string::npos);
  CHECK(id_of("two-ids.crt", id).find("2 URI SANs") != std::string::npos);
  const std::string why = id_of("not-spiffe.crt", id);
  CHECK(why.find("'https://node-a.example/' is not a SPIFFE ID") != std::string::npos);
  // A CA certificate has no subject alternative names at all.
  CHECK(id_of("ca.crt", id).find("no subject alternative names") != std::string::npos);
  CHECK(ringtunnel::tls::spiffe_id_of(nullptr, id) == "no certificate");
}

#include "ringtunnel/tls/identity.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/openssl/x509v3.h>
#include <wolfssl/ssl.h>

#include <fmt/format.h>

namespace ringtunnel::tls {

namespace {

constexpr std::string_view kScheme = "spiffe://";

bool trust_domain_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

bool path_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

// A character the caller may not have meant to be there, named so that the message says which.
std::string describe(char c) {
  switch (c) {
    case '%':
      return "'%' (percent-encoding is not allowed)";
    case '?':
      return "'?' (a query is not allowed)";
    case '#':
      return "'#' (a fragment is not allowed)";
    case ':':
      return "':' (a port is not allowed)";
    case '@':
      return "'@' (userinfo is not allowed)";
  }
  if (c >= 'A' && c <= 'Z') return fmt::format("upper-case '{}'", c);
  if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e)
    return fmt::format("byte 0x{:02x}", static_cast<unsigned char>(c));
  return fmt::format("'{}'", c);
}

// Checks one path segment; `what` names it in the message.
std::string check_segment(std::string_view segment, std::string_view what) {
  if (segment.empty()) return fmt::format("the {} is empty", what);
  if (segment == "." || segment == "..")
    return fmt::format("the {} is '{}', a relative path segment", what, segment);
  for (char c : segment)
    if (!path_char(c))
      return fmt::format("the {} contains {} (allowed: A-Z a-z 0-9 . - _)", what, describe(c));
  return "";
}

}  // namespace

std::string SpiffeId::to_string() const {
  return fmt::format("spiffe://{}/ns/{}/sa/{}", trust_domain, ns, sa);
}

std::string parse_spiffe_id(std::string_view text, SpiffeId& out) {
  if (text.empty()) return "it is empty";
  if (text.size() > kMaxSpiffeIdBytes)
    return fmt::format("it is {} bytes long, more than the {} a SPIFFE ID may have", text.size(),
                       kMaxSpiffeIdBytes);
  if (!text.starts_with(kScheme)) return "it does not start with 'spiffe://'";
  std::string_view rest = text.substr(kScheme.size());

  const size_t slash = rest.find('/');
  const std::string_view domain = rest.substr(0, slash);
  if (domain.empty()) return "the trust domain is empty";
  if (domain.size() > kMaxTrustDomainBytes)
    return fmt::format("the trust domain is {} bytes long, more than {}", domain.size(),
                       kMaxTrustDomainBytes);
  for (char c : domain)
    if (!trust_domain_char(c))
      return fmt::format("the trust domain contains {} (allowed: a-z 0-9 . - _)", describe(c));
  if (slash == std::string_view::npos)
    return "it has no path: expected /ns/<namespace>/sa/<account>";
  if (text.ends_with('/')) return "it ends with '/'";
  rest.remove_prefix(slash);

  // rest is "/ns/<ns>/sa/<sa>": split on '/' into four segments, and a fifth for anything more.
  std::string_view segments[5];
  size_t count = 0;
  while (!rest.empty() && count < 5) {
    rest.remove_prefix(1);  // the '/'
    const size_t next = rest.find('/');
    segments[count++] = rest.substr(0, next);
    rest = next == std::string_view::npos ? std::string_view{} : rest.substr(next);
  }
  if (count < 4 || segments[0] != "ns" || segments[2] != "sa")
    return "the path is not /ns/<namespace>/sa/<account>";
  if (count > 4) return "the path has more than /ns/<namespace>/sa/<account>";
  if (std::string e = check_segment(segments[1], "namespace"); !e.empty()) return e;
  if (std::string e = check_segment(segments[3], "service account"); !e.empty()) return e;

  out.trust_domain = domain;
  out.ns = segments[1];
  out.sa = segments[3];
  return "";
}

std::string spiffe_id_of(const WOLFSSL_X509* cert, SpiffeId& out) {
  if (cert == nullptr) return "no certificate";
  auto* names = static_cast<WOLFSSL_GENERAL_NAMES*>(
      wolfSSL_X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return "the certificate has no subject alternative names (no URI SAN)";

  int uris = 0;
  std::string_view uri;
  for (int i = 0; i < wolfSSL_sk_GENERAL_NAME_num(names); ++i) {
    const WOLFSSL_GENERAL_NAME* name = wolfSSL_sk_GENERAL_NAME_value(names, i);
    if (name == nullptr || name->type != GEN_URI) continue;
    ++uris;
    const WOLFSSL_ASN1_STRING* s = name->d.uniformResourceIdentifier;
    uri = s != nullptr && s->data != nullptr ? std::string_view(s->data, size_t(s->length))
                                             : std::string_view{};
  }

  std::string error;
  if (uris == 0) {
    error = "the certificate has no URI SAN (a SPIFFE ID is expected there)";
  } else if (uris > 1) {
    error =
        fmt::format("the certificate has {} URI SANs; a SPIFFE certificate has exactly one", uris);
  } else if (std::string why = parse_spiffe_id(uri, out); !why.empty()) {
    // The URI comes from a peer: bound what goes into a log line, and keep it printable ASCII.
    constexpr size_t kShown = 128;
    std::string shown;
    for (char c : uri.substr(0, kShown))
      shown += (c >= 0x20 && c < 0x7f) ? c : '?';
    if (uri.size() > kShown) shown += "...";
    error = fmt::format("its URI SAN '{}' is not a SPIFFE ID: {}", shown, why);
  }
  wolfSSL_GENERAL_NAMES_free(names);
  return error;
}

}  // namespace ringtunnel::tls

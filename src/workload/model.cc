#include "ringtunnel/workload/model.h"

namespace ringtunnel::workload {

namespace {
// The defaults a control plane gives a workload that names no trust domain or service account.
const std::string kDefaultTrustDomain = "cluster.local";
const std::string kDefaultServiceAccount = "default";
}  // namespace

bool Workload::has_ip(const net::IpAddress& ip) const {
  for (const net::IpAddress& own : workload_ips) {
    if (own == ip) return true;
  }
  return false;
}

const std::string& Workload::effective_trust_domain() const {
  return trust_domain.empty() ? kDefaultTrustDomain : trust_domain;
}

const std::string& Workload::effective_service_account() const {
  return service_account.empty() ? kDefaultServiceAccount : service_account;
}

std::string Workload::spiffe_id() const {
  return "spiffe://" + effective_trust_domain() + "/ns/" + namespace_ + "/sa/" +
         effective_service_account();
}

bool StringMatch::matches(std::string_view text) const {
  switch (kind) {
    case Kind::exact:
      return text == value;
    case Kind::prefix:
      return text.starts_with(value);
    case Kind::suffix:
      return text.ends_with(value);
    case Kind::presence:
      return !text.empty();
  }
  return false;
}

bool Match::empty() const {
  return namespaces.empty() && not_namespaces.empty() && service_accounts.empty() &&
         not_service_accounts.empty() && principals.empty() && not_principals.empty() &&
         source_ips.empty() && not_source_ips.empty() && destination_ips.empty() &&
         not_destination_ips.empty() && destination_ports.empty() && not_destination_ports.empty();
}

const char* to_string(Protocol p) {
  return p == Protocol::hbone ? "HBONE" : "TCP";
}

const char* to_string(Scope s) {
  switch (s) {
    case Scope::global:
      return "Global";
    case Scope::namespace_:
      return "Namespace";
    case Scope::workload_selector:
      return "WorkloadSelector";
  }
  return "?";
}

const char* to_string(Action a) {
  return a == Action::allow ? "Allow" : "Deny";
}

}  // namespace ringtunnel::workload

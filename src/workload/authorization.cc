#include "ringtunnel/workload/authorization.h"

#include <array>

namespace ringtunnel::workload {

PeerIdentity::PeerIdentity(std::string_view trust_domain, std::string_view namespace_,
                           std::string_view service_account) {
  principal_.reserve(trust_domain.size() + namespace_.size() + service_account.size() + 8);
  principal_ += trust_domain;
  offset_[0] = 0;
  length_[0] = trust_domain.size();
  principal_ += "/ns/";
  offset_[1] = principal_.size();
  length_[1] = namespace_.size();
  principal_ += namespace_;
  principal_ += "/sa/";
  offset_[2] = principal_.size();
  length_[2] = service_account.size();
  principal_ += service_account;
}

namespace {

// Every value of `positive` may hold (or it is empty), and none of `negative` holds.
template <typename T, typename P>
bool field_holds(const std::vector<T>& positive, const std::vector<T>& negative, P&& holds) {
  if (!positive.empty()) {
    bool any = false;
    for (const T& v : positive) {
      if (holds(v)) {
        any = true;
        break;
      }
    }
    if (!any) return false;
  }
  for (const T& v : negative) {
    if (holds(v)) return false;
  }
  return true;
}

bool match_holds(const Match& m, const Connection& c) {
  const PeerIdentity* id = c.src_identity;
  const std::string_view peer_namespace = id != nullptr ? id->namespace_() : std::string_view();
  return field_holds(m.destination_ips, m.not_destination_ips,
                     [&](const net::IpCidr& n) { return n.contains(c.dst_ip); }) &&
         field_holds(m.source_ips, m.not_source_ips,
                     [&](const net::IpCidr& n) { return n.contains(c.src_ip); }) &&
         field_holds(m.destination_ports, m.not_destination_ports,
                     [&](uint16_t p) { return p == c.dst_port; }) &&
         field_holds(m.service_accounts, m.not_service_accounts,
                     [&](const ServiceAccountMatch& sa) {
                       return id != nullptr && id->namespace_() == sa.namespace_ &&
                              id->service_account() == sa.service_account;
                     }) &&
         field_holds(
             m.principals, m.not_principals,
             [&](const StringMatch& p) { return id != nullptr && p.matches(id->principal()); }) &&
         field_holds(m.namespaces, m.not_namespaces,
                     [&](const StringMatch& n) { return n.matches(peer_namespace); });
}

bool clause_holds(const Clause& clause, const Connection& c) {
  if (clause.empty()) return true;
  for (const Match& m : clause) {
    if (!m.empty() && match_holds(m, c)) return true;
  }
  return false;
}

bool rule_holds(const Rule& rule, const Connection& c) {
  for (const Clause& clause : rule) {
    if (!clause_holds(clause, c)) return false;
  }
  return true;
}

}  // namespace

bool matches(const Authorization& policy, const Connection& connection) {
  for (const Rule& rule : policy.rules) {
    if (rule_holds(rule, connection)) return true;
  }
  return false;
}

Verdict authorize(const WorkloadPolicies& policies, const Connection& connection) {
  const std::array<const PolicyGroup*, 3> groups{policies.namespace_, policies.global,
                                                 policies.selected};
  Verdict v;
  for (const PolicyGroup* g : groups) {
    if (g == nullptr) continue;
    for (const Authorization* p : g->deny_dry_run) {
      if (matches(*p, connection)) v.dry_run_matched.push_back(p);
    }
  }
  for (const PolicyGroup* g : groups) {
    if (g == nullptr) continue;
    for (const Authorization* p : g->deny) {
      if (matches(*p, connection)) {
        v.decision = Decision::deny;
        v.reason = Verdict::Reason::deny_matched;
        v.policy = p;
        return v;
      }
    }
  }
  bool any_allow = false, any_allow_dry_run = false, dry_run_allow_matched = false;
  for (const PolicyGroup* g : groups) {
    if (g == nullptr) continue;
    any_allow = any_allow || !g->allow.empty();
    any_allow_dry_run = any_allow_dry_run || !g->allow_dry_run.empty();
    for (const Authorization* p : g->allow_dry_run) {
      if (matches(*p, connection)) {
        v.dry_run_matched.push_back(p);
        dry_run_allow_matched = true;
      }
    }
  }
  if (!any_allow) {
    v.dry_run_no_allow_matched = any_allow_dry_run && !dry_run_allow_matched;
    return v;  // allow: no allow policy
  }
  for (const PolicyGroup* g : groups) {
    if (g == nullptr) continue;
    for (const Authorization* p : g->allow) {
      if (matches(*p, connection)) {
        v.reason = Verdict::Reason::allow_matched;
        v.policy = p;
        return v;
      }
    }
  }
  v.decision = Decision::deny;
  v.reason = Verdict::Reason::no_allow_matched;
  return v;
}

Verdict authorize(const State& state, const Workload& destination, const Connection& connection) {
  return authorize(state.policies_for(destination), connection);
}

std::string Verdict::describe() const {
  switch (reason) {
    case Reason::no_allow_policy:
      return "allow: no allow policy";
    case Reason::allow_matched:
      return "allow: policy " + policy->key();
    case Reason::deny_matched:
      return "deny: policy " + policy->key();
    case Reason::no_allow_matched:
      return "deny: no allow policy matched";
  }
  return "?";
}

std::string Verdict::describe_dry_run() const {
  std::string out;
  for (const Authorization* p : dry_run_matched) {
    if (!out.empty()) out += ", ";
    out += p->action == Action::deny ? "deny policy " : "allow policy ";
    out += p->key();
    out += " matched";
  }
  if (dry_run_no_allow_matched) {
    if (!out.empty()) out += ", ";
    out += "no allow policy matched";
  }
  return out;
}

}  // namespace ringtunnel::workload

// Authorization of one connection to a workload, by the policies that apply to it (state.h):
//
//   1. dry-run policies are evaluated and reported, never enforced;
//   2. a matching Deny policy denies;
//   3. with no Allow policy, the connection is allowed;
//   4. otherwise a matching Allow policy allows, and none matching denies.
//
// A policy matches when any of its rules matches (no rules: never). A rule matches when all its
// clauses match (no clauses: always). A clause matches when any of its matches holds (no matches:
// always; a match with every field empty is skipped, so a clause of only such matches never
// holds). A match holds when, for every field, some value holds (or the field is empty) and no
// value of its not-field holds (or that is empty). Without a peer identity: the peer's namespace
// is "", and no principal or service account holds. Principals are compared without the
// "spiffe://" prefix; service accounts by namespace and name (any trust domain).
//
// Cost: only the policies of the destination's scopes are looked at; no allocation unless a
// dry-run policy matches.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/net/ip.h"
#include "ringtunnel/workload/model.h"
#include "ringtunnel/workload/state.h"

namespace ringtunnel::workload {

// A peer's SPIFFE identity, spiffe://<trust domain>/ns/<namespace>/sa/<service account> (parsed
// from its certificate by tls/identity.h), held as its principal (the URI without "spiffe://")
// with the parts as offsets into it: built once per peer, compared without allocating.
class PeerIdentity {
 public:
  PeerIdentity(std::string_view trust_domain, std::string_view namespace_,
               std::string_view service_account);

  std::string_view principal() const { return principal_; }  // "TD/ns/NS/sa/SA"
  std::string_view trust_domain() const { return part(0); }
  std::string_view namespace_() const { return part(1); }
  std::string_view service_account() const { return part(2); }
  std::string uri() const { return "spiffe://" + principal_; }

 private:
  std::string_view part(int i) const {
    return std::string_view(principal_).substr(offset_[i], length_[i]);
  }
  std::string principal_;
  size_t offset_[3] = {};
  size_t length_[3] = {};
};

struct Connection {
  net::IpAddress src_ip;
  uint16_t src_port = 0;
  net::IpAddress dst_ip;
  uint16_t dst_port = 0;
  const PeerIdentity* src_identity = nullptr;  // null: no identity (plaintext inbound)
};

enum class Decision { allow, deny };

struct Verdict {
  enum class Reason {
    no_allow_policy,   // allowed: no Allow policy applies
    allow_matched,     // allowed by `policy`
    deny_matched,      // denied by `policy`
    no_allow_matched,  // denied: Allow policies apply, none matched
  };
  Decision decision = Decision::allow;
  Reason reason = Reason::no_allow_policy;
  const Authorization* policy = nullptr;  // the deciding policy, if one decided

  // Dry-run: the policies that matched (they decided nothing), and whether the dry-run Allow
  // policies would have denied (no enforced Allow applies, some dry-run Allow does, none matched).
  std::vector<const Authorization*> dry_run_matched;
  bool dry_run_no_allow_matched = false;

  bool allowed() const { return decision == Decision::allow; }
  // For the access log: "allow: no allow policy", "allow: policy ns/name",
  // "deny: policy ns/name", "deny: no allow policy matched".
  std::string describe() const;
  // What the dry-run policies would have decided, for the log: "" when none applied, else e.g.
  // "deny policy ns/a matched, allow policy ns/b matched" or "no allow policy matched" (the
  // dry-run Allow policies, were they enforced, would deny).
  std::string describe_dry_run() const;
};

// Whether one policy matches the connection (its action and dry-run flag are not looked at).
bool matches(const Authorization& policy, const Connection& connection);

// The verdict for `connection` to `destination` (a workload of `state`).
Verdict authorize(const State& state, const Workload& destination, const Connection& connection);

// The same with the policy groups already found (state.policies_for(destination)).
Verdict authorize(const WorkloadPolicies& policies, const Connection& connection);

}  // namespace ringtunnel::workload

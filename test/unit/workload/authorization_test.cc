#include "ringtunnel/workload/authorization.h"

#include <doctest/doctest.h>

#include <string>

#include "ringtunnel/workload/local_config.h"

using namespace ringtunnel::workload;
using ringtunnel::net::IpAddress;

namespace {

// The destination: workload "dst" of namespace "app" at 10.0.0.2 and fd00::2, which names the
// policies app/selected and elsewhere/named.
const char* const kWorkloads = R"(
workloads:
- uid: dst
  namespace: app
  workloadIps: [10.0.0.2, "fd00::2"]
  services: {}
  authorizationPolicies: [app/selected, elsewhere/named]
)";

// One policy as a `policies:` entry.
std::string policy(const char* name, const char* action, const char* rules,
                   const char* scope = "Namespace", const char* ns = "app", bool dry_run = false) {
  return std::string("- {name: ") + name + ", namespace: " + ns + ", scope: " + scope +
         ", action: " + action + ", dryRun: " + (dry_run ? "true" : "false") + ", rules: " + rules +
         "}\n";
}
std::string allow(const char* rules, const char* name = "a") {
  return policy(name, "Allow", rules);
}
std::string deny(const char* rules, const char* name = "d") {
  return policy(name, "Deny", rules);
}

// The verdict's policy pointers point into a State that is gone by then: read them here.
struct Result {
  Verdict verdict;
  std::string describe;
  std::string decider;
  std::vector<std::string> dry_run;
  std::string dry_run_text;  // describe_dry_run()
};

// `peer`: "trust-domain/namespace/service-account", or "" for no identity.
Result evaluate(const std::string& policies, const std::string& peer, const char* src,
                const char* dst, uint16_t port) {
  LoadResult r = parse_local_config(std::string(kWorkloads) + "policies:\n" + policies, "t.yaml");
  INFO((r.error ? r.error->to_string() : std::string()));
  REQUIRE(r.ok());
  auto state = State::build(std::move(r.config));
  std::optional<PeerIdentity> id;
  if (!peer.empty()) {
    const size_t a = peer.find('/'), b = peer.find('/', a + 1);
    id.emplace(peer.substr(0, a), peer.substr(a + 1, b - a - 1), peer.substr(b + 1));
  }
  Connection c{*IpAddress::parse(src), 40000, *IpAddress::parse(dst), port, id ? &*id : nullptr};
  Result out{authorize(*state, *state->workload_by_uid("dst"), c), "", "", {}, ""};
  out.describe = out.verdict.describe();
  out.dry_run_text = out.verdict.describe_dry_run();
  if (out.verdict.policy != nullptr) out.decider = out.verdict.policy->key();
  for (const Authorization* p : out.verdict.dry_run_matched)
    out.dry_run.push_back(p->key());
  return out;
}

constexpr const char* kPeer = "cluster.local/client/sa1";

struct Case {
  const char* what;
  std::string policies;
  bool allowed;
  const char* decider = "";  // the deciding policy's key, "" when none decided
  const char* peer = kPeer;
  const char* src = "10.1.0.5";
  uint16_t port = 8080;
  const char* dst = "10.0.0.2";
};

void run(const Case& c) {
  const std::string what = c.what;  // a std::string, so that a failure prints the text
  CAPTURE(what);
  CAPTURE(c.policies);
  Result r = evaluate(c.policies, c.peer, c.src, c.dst, c.port);
  CHECK(r.verdict.allowed() == c.allowed);
  CHECK(r.decider == std::string(c.decider));
}

}  // namespace

TEST_CASE("authorization: deny first, allow by default, else an allow must match") {
  const Case cases[] = {
      {"no policy: allow", "", true},
      {"a matching allow: allow", allow("[[[{namespaces: [!Exact client]}]]]"), true, "app/a"},
      {"allows apply but none matches: deny", allow("[[[{namespaces: [!Exact other]}]]]"), false},
      {"a matching deny: deny", deny("[[[{namespaces: [!Exact client]}]]]"), false, "app/d"},
      {"a deny that does not match, no allow: allow", deny("[[[{namespaces: [!Exact x]}]]]"), true},
      {"deny wins over a matching allow",
       allow("[[[{namespaces: [!Exact client]}]]]") + deny("[[[{destinationPorts: [8080]}]]]"),
       false, "app/d"},
      {"one allow of several matching is enough",
       allow("[[[{namespaces: [!Exact x]}]]]", "a1") +
           allow("[[[{namespaces: [!Exact client]}]]]", "a2"),
       true, "app/a2"},
      {"a dry-run deny that matches is not enforced",
       policy("dd", "Deny", "[[]]", "Namespace", "app", true), true},
      {"a dry-run allow is not an allow policy",
       policy("da", "Allow", "[[[{namespaces: [!Exact x]}]]]", "Namespace", "app", true), true},
      {"a dry-run allow that matches does not save a connection no allow matches",
       policy("da", "Allow", "[[]]", "Namespace", "app", true) +
           allow("[[[{namespaces: [!Exact x]}]]]"),
       false},
  };
  for (const Case& c : cases)
    run(c);
}

TEST_CASE("authorization: rules OR-ed, clauses AND-ed, matches OR-ed; empty ones") {
  const Case cases[] = {
      {"no rules: an allow never matches", allow("[]"), false},
      {"no rules: a deny never matches", deny("[]"), true},
      {"a rule without clauses matches (allow)", allow("[[]]"), true, "app/a"},
      {"a rule without clauses matches (deny)", deny("[[]]"), false, "app/d"},
      {"an empty clause holds", allow("[[[]]]"), true, "app/a"},
      {"a clause of only empty matches never holds", allow("[[[{}]]]"), false},
      {"an empty match is skipped (deny)", deny("[[[{}]]]"), true},
      {"an empty match beside one that holds", allow("[[[{}, {namespaces: [!Exact client]}]]]"),
       true, "app/a"},
      {"clauses AND-ed: one fails",
       allow("[[[{namespaces: [!Exact client]}], [{destinationPorts: [9090]}]]]"), false},
      {"clauses AND-ed: both hold",
       allow("[[[{namespaces: [!Exact client]}], [{destinationPorts: [8080]}]]]"), true, "app/a"},
      {"clauses AND-ed: an empty clause among them",
       allow("[[[{namespaces: [!Exact client]}], []]]"), true, "app/a"},
      {"rules OR-ed", allow("[[[{destinationPorts: [9090]}]], [[{destinationPorts: [8080]}]]]"),
       true, "app/a"},
      {"rules OR-ed: none holds",
       allow("[[[{destinationPorts: [9090]}]], [[{destinationPorts: [9091]}]]]"), false},
      {"matches OR-ed", allow("[[[{destinationPorts: [9090]}, {namespaces: [!Exact client]}]]]"),
       true, "app/a"},
      {"fields of one match AND-ed",
       allow("[[[{namespaces: [!Exact client], destinationPorts: [9090]}]]]"), false},
      {"values of one field OR-ed", allow("[[[{destinationPorts: [9090, 8080]}]]]"), true, "app/a"},
      {"a field and its not-field: the not-field wins",
       allow("[[[{destinationPorts: [8080], notDestinationPorts: [8080]}]]]"), false},
  };
  for (const Case& c : cases)
    run(c);
}

TEST_CASE("authorization: each field and its not-form") {
  const Case cases[] = {
      // namespaces: the peer identity's namespace, "" without one
      {"namespaces exact", allow("[[[{namespaces: [!Exact client]}]]]"), true, "app/a"},
      {"namespaces exact, other", allow("[[[{namespaces: [!Exact clien]}]]]"), false},
      {"namespaces prefix", allow("[[[{namespaces: [!Prefix cli]}]]]"), true, "app/a"},
      {"namespaces prefix, other", allow("[[[{namespaces: [!Prefix x]}]]]"), false},
      {"namespaces suffix", allow("[[[{namespaces: [!Suffix ent]}]]]"), true, "app/a"},
      {"namespaces suffix, other", allow("[[[{namespaces: [!Suffix x]}]]]"), false},
      {"namespaces presence", allow("[[[{namespaces: [!Presence []]}]]]"), true, "app/a"},
      {"namespaces presence, no identity", allow("[[[{namespaces: [!Presence []]}]]]"), false, "",
       ""},
      {"namespaces exact \"\", no identity", allow("[[[{namespaces: [!Exact \"\"]}]]]"), true,
       "app/a", ""},
      {"notNamespaces holding", allow("[[[{notNamespaces: [!Exact client]}]]]"), false},
      {"notNamespaces not holding", allow("[[[{notNamespaces: [!Exact other]}]]]"), true, "app/a"},
      {"notNamespaces presence, no identity", allow("[[[{notNamespaces: [!Presence []]}]]]"), true,
       "app/a", ""},
      // serviceAccounts: namespace and name, any trust domain; never without an identity
      {"serviceAccounts",
       allow("[[[{serviceAccounts: [{namespace: client, serviceAccount: sa1}]}]]]"), true, "app/a"},
      {"serviceAccounts, other account",
       allow("[[[{serviceAccounts: [{namespace: client, serviceAccount: sa2}]}]]]"), false},
      {"serviceAccounts, other namespace",
       allow("[[[{serviceAccounts: [{namespace: other, serviceAccount: sa1}]}]]]"), false},
      {"serviceAccounts, other trust domain",
       allow("[[[{serviceAccounts: [{namespace: client, serviceAccount: sa1}]}]]]"), true, "app/a",
       "td2/client/sa1"},
      {"serviceAccounts, no identity",
       allow("[[[{serviceAccounts: [{namespace: client, serviceAccount: sa1}]}]]]"), false, "", ""},
      {"notServiceAccounts holding",
       allow("[[[{notServiceAccounts: [{namespace: client, serviceAccount: sa1}]}]]]"), false},
      {"notServiceAccounts, no identity",
       allow("[[[{notServiceAccounts: [{namespace: client, serviceAccount: sa1}]}]]]"), true,
       "app/a", ""},
      // principals: compared without "spiffe://"; never without an identity
      {"principals exact", allow("[[[{principals: [!Exact cluster.local/ns/client/sa/sa1]}]]]"),
       true, "app/a"},
      {"principals exact with the scheme never match",
       allow("[[[{principals: [!Exact \"spiffe://cluster.local/ns/client/sa/sa1\"]}]]]"), false},
      {"principals prefix", allow("[[[{principals: [!Prefix cluster.local/]}]]]"), true, "app/a"},
      {"principals prefix with the scheme", allow("[[[{principals: [!Prefix \"spiffe://\"]}]]]"),
       false},
      {"principals suffix", allow("[[[{principals: [!Suffix /sa/sa1]}]]]"), true, "app/a"},
      {"principals suffix, other", allow("[[[{principals: [!Suffix /sa/sa2]}]]]"), false},
      {"principals presence", allow("[[[{principals: [!Presence []]}]]]"), true, "app/a"},
      {"principals presence, no identity", allow("[[[{principals: [!Presence []]}]]]"), false, "",
       ""},
      {"principals exact \"\", no identity", allow("[[[{principals: [!Exact \"\"]}]]]"), false, "",
       ""},
      {"principals, other trust domain",
       allow("[[[{principals: [!Exact cluster.local/ns/client/sa/sa1]}]]]"), false, "",
       "td2/client/sa1"},
      {"notPrincipals holding",
       allow("[[[{notPrincipals: [!Exact cluster.local/ns/client/sa/sa1]}]]]"), false},
      {"notPrincipals presence, no identity", allow("[[[{notPrincipals: [!Presence []]}]]]"), true,
       "app/a", ""},
      // sourceIps
      {"sourceIps", allow("[[[{sourceIps: [10.1.0.0/16]}]]]"), true, "app/a"},
      {"sourceIps, other", allow("[[[{sourceIps: [10.2.0.0/16]}]]]"), false},
      {"notSourceIps holding", allow("[[[{notSourceIps: [10.1.0.0/16]}]]]"), false},
      {"notSourceIps not holding", allow("[[[{notSourceIps: [10.2.0.0/16]}]]]"), true, "app/a"},
      {"sourceIps IPv6", allow("[[[{sourceIps: [\"::/0\"]}]]]"), true, "app/a", kPeer, "fd01::5"},
      {"sourceIps never across families", allow("[[[{sourceIps: [0.0.0.0/0]}]]]"), false, "", kPeer,
       "fd01::5"},
      // destinationIps
      {"destinationIps", allow("[[[{destinationIps: [10.0.0.2/32]}]]]"), true, "app/a"},
      {"destinationIps, other", allow("[[[{destinationIps: [10.0.0.3/32]}]]]"), false},
      {"notDestinationIps holding", allow("[[[{notDestinationIps: [10.0.0.0/24]}]]]"), false},
      {"notDestinationIps not holding", allow("[[[{notDestinationIps: [10.9.0.0/24]}]]]"), true,
       "app/a"},
      {"destinationIps IPv6", allow("[[[{destinationIps: [\"fd00::/64\"]}]]]"), true, "app/a",
       kPeer, "fd01::5", 8080, "fd00::2"},
      // destinationPorts (the reference example's policy)
      {"destinationPorts", allow("[[[{destinationPorts: [8080]}]]]"), true, "app/a"},
      {"destinationPorts, other", allow("[[[{destinationPorts: [9090]}]]]"), false},
      {"notDestinationPorts, another port", allow("[[[{notDestinationPorts: [9999]}]]]"), true,
       "app/a"},
      {"notDestinationPorts, that port", allow("[[[{notDestinationPorts: [9999]}]]]"), false, "",
       kPeer, "10.1.0.5", 9999},
  };
  for (const Case& c : cases)
    run(c);
}

TEST_CASE("authorization: only the policies of the destination's scopes apply") {
  const Case cases[] = {
      {"Global", policy("g", "Deny", "[[]]", "Global", "istio-system"), false, "istio-system/g"},
      {"Namespace, the workload's", policy("n", "Deny", "[[]]", "Namespace", "app"), false,
       "app/n"},
      {"Namespace, another", policy("n", "Deny", "[[]]", "Namespace", "other"), true},
      {"an allow of another namespace is no allow here",
       policy("n", "Allow", "[[[{namespaces: [!Exact x]}]]]", "Namespace", "other"), true},
      {"WorkloadSelector, named by the workload",
       policy("selected", "Deny", "[[]]", "WorkloadSelector", "app"), false, "app/selected"},
      {"WorkloadSelector, not named", policy("unnamed", "Deny", "[[]]", "WorkloadSelector", "app"),
       true},
      {"Namespace policy of another namespace, named by the workload",
       policy("named", "Deny", "[[]]", "Namespace", "elsewhere"), false, "elsewhere/named"},
      {"a Global allow and a selected allow: either",
       policy("g", "Allow", "[[[{destinationPorts: [1]}]]]", "Global", "istio-system") +
           policy("selected", "Allow", "[[]]", "WorkloadSelector", "app"),
       true, "app/selected"},
  };
  for (const Case& c : cases)
    run(c);
}

TEST_CASE("dry-run policies are reported, never enforced") {
  const std::string dry_deny = policy("dd", "Deny", "[[]]", "Namespace", "app", true);
  const std::string dry_allow_no =
      policy("da", "Allow", "[[[{destinationPorts: [1]}]]]", "Namespace", "app", true);
  const std::string dry_allow_yes = policy("dy", "Allow", "[[]]", "Namespace", "app", true);

  Result r = evaluate(dry_deny, kPeer, "10.1.0.5", "10.0.0.2", 8080);
  CHECK(r.verdict.allowed());
  CHECK(r.verdict.reason == Verdict::Reason::no_allow_policy);
  CHECK(r.dry_run == std::vector<std::string>{"app/dd"});
  CHECK_FALSE(r.verdict.dry_run_no_allow_matched);
  CHECK(r.dry_run_text == "deny policy app/dd matched");

  r = evaluate(dry_allow_no, kPeer, "10.1.0.5", "10.0.0.2", 8080);
  CHECK(r.verdict.allowed());
  CHECK(r.dry_run.empty());
  CHECK(r.verdict.dry_run_no_allow_matched);  // enforcing it would deny
  CHECK(r.dry_run_text == "no allow policy matched");

  r = evaluate(dry_allow_no + dry_allow_yes, kPeer, "10.1.0.5", "10.0.0.2", 8080);
  CHECK(r.verdict.allowed());
  CHECK(r.dry_run == std::vector<std::string>{"app/dy"});
  CHECK_FALSE(r.verdict.dry_run_no_allow_matched);
  CHECK(r.dry_run_text == "allow policy app/dy matched");

  // Reported even when an enforced deny decides.
  r = evaluate(dry_deny + deny("[[]]"), kPeer, "10.1.0.5", "10.0.0.2", 8080);
  CHECK_FALSE(r.verdict.allowed());
  CHECK(r.decider == "app/d");
  CHECK(r.dry_run == std::vector<std::string>{"app/dd"});
  CHECK(r.dry_run_text == "deny policy app/dd matched");

  // Nothing to report without dry-run policies.
  CHECK(evaluate(deny("[[]]"), kPeer, "10.1.0.5", "10.0.0.2", 80).dry_run_text.empty());
}

TEST_CASE("the verdict says why, for the access log") {
  CHECK(evaluate("", kPeer, "10.1.0.5", "10.0.0.2", 80).describe == "allow: no allow policy");
  CHECK(evaluate(allow("[[]]"), kPeer, "10.1.0.5", "10.0.0.2", 80).describe ==
        "allow: policy app/a");
  CHECK(evaluate(deny("[[]]"), kPeer, "10.1.0.5", "10.0.0.2", 80).describe == "deny: policy app/d");
  CHECK(evaluate(allow("[]"), kPeer, "10.1.0.5", "10.0.0.2", 80).describe ==
        "deny: no allow policy matched");
}

TEST_CASE("a peer identity keeps its parts across copies") {
  PeerIdentity a("cluster.local", "ns1", "sa1");
  CHECK(a.principal() == "cluster.local/ns/ns1/sa/sa1");
  CHECK(a.uri() == "spiffe://cluster.local/ns/ns1/sa/sa1");
  PeerIdentity b = a;
  a = PeerIdentity("x", "y", "z");
  CHECK(b.trust_domain() == "cluster.local");
  CHECK(b.namespace_() == "ns1");
  CHECK(b.service_account() == "sa1");
  CHECK(a.namespace_() == "y");
}

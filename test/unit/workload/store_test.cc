#include "ringtunnel/workload/store.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

using namespace ringtunnel::workload;

namespace {

// A private directory with one config file, removed at the end.
struct ConfigDir {
  std::string dir;
  std::string file;

  ConfigDir() {
    char name[] = "/tmp/ringtunnel-store-test-XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    dir = name;
    file = dir + "/mesh.yaml";
  }
  ~ConfigDir() {
    std::string cmd = "rm -rf '" + dir + "'";
    CHECK(std::system(cmd.c_str()) == 0);
  }
  void write(const std::string& text) const {
    // As editors do: a temporary file renamed over the config.
    const std::string tmp = file + ".tmp";
    FILE* f = fopen(tmp.c_str(), "w");
    REQUIRE(f != nullptr);
    REQUIRE(fputs(text.c_str(), f) >= 0);
    REQUIRE(fclose(f) == 0);
    REQUIRE(rename(tmp.c_str(), file.c_str()) == 0);
  }
};

const LocalWorkloadInfo kLocal{"default", "vm-1", "node-a"};

// The local workload (spiffe://cluster.local/ns/default/sa/node-a) with `local_extra` fields,
// `extra` more workloads, then `more` (YAML of workloads), a service, and `policies` Allow
// policies.
std::string config(int extra = 0, int policies = 0, const std::string& local_extra = "",
                   const std::string& more = "") {
  std::string yaml =
      "workloads:\n"
      "- uid: cluster1//v1/Pod/default/vm-1\n"
      "  name: vm-1\n"
      "  namespace: default\n"
      "  serviceAccount: node-a\n"
      "  workloadIps: [\"10.0.0.1\"]\n"
      "  protocol: HBONE\n"
      "  services: {}\n" +
      local_extra;
  for (int i = 0; i < extra; ++i)
    yaml += "- uid: cluster1//v1/Pod/default/app-" + std::to_string(i) + "\n  name: app-" +
            std::to_string(i) + "\n  namespace: default\n  workloadIps: [\"10.0.1." +
            std::to_string(i + 1) + "\"]\n  services: {}\n";
  yaml += more;
  yaml +=
      "services:\n- name: web\n  namespace: default\n  hostname: web.default\n"
      "  vips: [\"/10.96.0.1\"]\n  ports: {80: 8080}\n";
  if (policies) yaml += "policies:\n";
  for (int i = 0; i < policies; ++i)
    yaml += "- name: allow-" + std::to_string(i) +
            "\n  namespace: default\n  scope: Namespace\n  action: Allow\n  rules: []\n"
            "  dryRun: false\n";
  return yaml;
}

}  // namespace

TEST_CASE("store: load indexes the file and finds the local workload") {
  ConfigDir d;
  d.write(config(2, 1));
  Store store;
  CHECK(store.generation() == 0);
  CHECK(store.snapshot() == nullptr);
  LoadNotes notes;
  REQUIRE(store.load(d.file, kLocal, &notes) == "");
  CHECK(notes.warnings.empty());
  CHECK(store.generation() == 1);
  CHECK(store.path() == d.file);
  uint64_t generation = 0;
  const auto state = store.snapshot(&generation);
  REQUIRE(state != nullptr);
  CHECK(generation == 1);
  CHECK(state->workloads().size() == 3);
  CHECK(state->services().size() == 1);
  CHECK(state->policies().size() == 1);
  const Workload* local = store.local_workload(*state);
  REQUIRE(local != nullptr);
  CHECK(local->name == "vm-1");
  CHECK(local->spiffe_id() == "spiffe://cluster.local/ns/default/sa/node-a");
  // Loaded once: a second load is refused and changes nothing.
  CHECK(store.load(d.file, kLocal) != "");
  CHECK(store.generation() == 1);
}

TEST_CASE("store: the service account \"default\" matches a workload written without one") {
  ConfigDir d;
  d.write(
      "workloads:\n- uid: u1\n  name: vm\n  namespace: prod\n  workloadIps: [\"10.0.0.9\"]\n"
      "  services: {}\n");
  Store store;
  REQUIRE(store.load(d.file, {"prod", "vm", "default"}) == "");
  CHECK(store.local_workload(*store.snapshot())->spiffe_id() ==
        "spiffe://cluster.local/ns/prod/sa/default");
}

TEST_CASE("store: a bad file at load is an error naming the file, position, field, reason") {
  ConfigDir d;
  Store store;
  SUBCASE("missing") {
    const std::string err = store.load(d.file, kLocal);
    CHECK(err == d.file + ": cannot open: No such file or directory");
  }
  SUBCASE("a bad field") {
    d.write(config(0, 0, "", "- uid: x\n  name: x\n  namespace: default\n  protocol: UDP\n"));
    const std::string err = store.load(d.file, kLocal);
    INFO(err);
    CHECK(err.starts_with(d.file + ":12:13: workloads[1].protocol: "));
    CHECK(err.find("UDP") != std::string::npos);
  }
  SUBCASE("an unknown field") {
    d.write(config() + "surprise: 1\n");
    const std::string err = store.load(d.file, kLocal);
    INFO(err);
    CHECK(err.starts_with(d.file + ":15:1: "));
    CHECK(err.find("surprise") != std::string::npos);
  }
  SUBCASE("not YAML") {
    d.write("workloads: [\n");
    const std::string err = store.load(d.file, kLocal);
    INFO(err);
    CHECK(err.starts_with(d.file + ":"));
    CHECK(err.find("YAML") != std::string::npos);
  }
  SUBCASE("no such local workload") {
    d.write(config(1));
    const std::string err = store.load(d.file, {"default", "vm-2", "node-a"});
    CHECK(err == d.file +
                     ": no workload has namespace \"default\", name \"vm-2\" and service account "
                     "\"node-a\" (--workload default/vm-2/node-a)");
  }
  SUBCASE("the local workload's service account differs") {
    d.write(config(1));
    const std::string err = store.load(d.file, {"default", "vm-1", "default"});
    CHECK(err.find("no workload has") != std::string::npos);
  }
  SUBCASE("two workloads match the local one") {
    d.write(config(0, 0, "",
                   "- uid: other\n  name: vm-1\n  namespace: default\n  serviceAccount: node-a\n"
                   "  workloadIps: []\n  services: {}\n"));
    const std::string err = store.load(d.file, kLocal);
    INFO(err);
    CHECK(err.starts_with(d.file + ": 2 workloads (uids \"cluster1//v1/Pod/default/vm-1\", "
                                   "\"other\") have namespace \"default\""));
  }
  SUBCASE("a directory") {
    REQUIRE(mkdir(d.file.c_str(), 0700) == 0);
    CHECK(store.load(d.file, kLocal) == d.file + ": a directory, not a file");
  }
  SUBCASE("a FIFO: refused at once, no wait for a writer") {
    REQUIRE(mkfifo(d.file.c_str(), 0600) == 0);
    CHECK(store.load(d.file, kLocal) == d.file + ": not a regular file");
  }
  SUBCASE("too large") {
    const int fd = open(d.file.c_str(), O_CREAT | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, off_t(kMaxConfigBytes) + 1) == 0);
    close(fd);
    const std::string err = store.load(d.file, kLocal);
    INFO(err);
    CHECK(err.starts_with(d.file + ": 67108865 bytes: larger than 64 MiB"));
  }
  CHECK(store.generation() == 0);
  CHECK(store.snapshot() == nullptr);
}

TEST_CASE("store: warnings name the file") {
  ConfigDir d;
  d.write(config(0, 0, "  authorizationPolicies: [\"default/missing\"]\n"));
  Store store;
  LoadNotes notes;
  REQUIRE(store.load(d.file, kLocal, &notes) == "");
  REQUIRE(notes.warnings.size() == 1);
  CHECK(notes.warnings[0].starts_with(d.file + ": "));
  CHECK(notes.warnings[0].find("default/missing") != std::string::npos);
}

TEST_CASE("store: reload replaces the snapshot and counts generations") {
  ConfigDir d;
  d.write(config(1));
  Store store;
  CHECK(store.reload() == "no config loaded");
  REQUIRE(store.load(d.file, kLocal) == "");
  const auto first = store.snapshot();

  d.write(config(2, 3));
  LoadNotes notes;
  REQUIRE(store.reload(&notes) == "");
  CHECK(!notes.unchanged);
  CHECK(store.generation() == 2);
  const auto second = store.snapshot();
  CHECK(second != first);
  CHECK(second->workloads().size() == 3);
  CHECK(second->policies().size() == 3);
  // A holder of the old snapshot still reads it whole.
  CHECK(first->workloads().size() == 2);
  CHECK(store.local_workload(*first)->name == "vm-1");

  // The same bytes again: nothing replaced.
  LoadNotes same;
  REQUIRE(store.reload(&same) == "");
  CHECK(same.unchanged);
  CHECK(store.generation() == 2);
  CHECK(store.snapshot() == second);

  d.write(config(0));
  REQUIRE(store.reload() == "");
  CHECK(store.generation() == 3);
  CHECK(store.snapshot()->workloads().size() == 1);
}

TEST_CASE("store: a bad reload keeps the old snapshot and generation") {
  ConfigDir d;
  d.write(config(1, 1));
  Store store;
  REQUIRE(store.load(d.file, kLocal) == "");
  d.write(config(2));
  REQUIRE(store.reload() == "");
  const auto good = store.snapshot();
  REQUIRE(store.generation() == 2);

  std::string err;
  SUBCASE("a syntax error") {
    d.write(config(1, 0, "",
                   "- uid: x\n  name: x\n  namespace: default\n  workloadIps: []\n  services: {}\n"
                   "  capacity: lots\n"));
    err = store.reload();
    CHECK(err.starts_with(d.file + ":19:13: workloads[2].capacity: "));
  }
  SUBCASE("the local workload is gone") {
    d.write("workloads: []\n");
    err = store.reload();
    CHECK(err.starts_with(d.file + ": no workload has namespace \"default\", name \"vm-1\""));
  }
  SUBCASE("the local workload's identity changes") {
    d.write(config(1, 0, "  trustDomain: other.example\n"));
    err = store.reload();
    CHECK(err == d.file +
                     ": the local workload (default/vm-1/node-a) would change its identity from "
                     "spiffe://cluster.local/ns/default/sa/node-a (the certificate's) to "
                     "spiffe://other.example/ns/default/sa/node-a");
  }
  SUBCASE("the file is gone") {
    REQUIRE(unlink(d.file.c_str()) == 0);
    err = store.reload();
    CHECK(err == d.file + ": cannot open: No such file or directory");
  }
  INFO(err);
  CHECK(err != "");
  CHECK(store.generation() == 2);
  CHECK(store.snapshot() == good);
  CHECK(store.snapshot()->workloads().size() == 3);

  // A good file after the bad one is taken.
  d.write(config(4));
  REQUIRE(store.reload() == "");
  CHECK(store.generation() == 3);
  CHECK(store.snapshot()->workloads().size() == 5);
}

TEST_CASE("store: readers see each generation with its own snapshot while reloads run") {
  ConfigDir d;
  d.write(config(0));
  Store store;
  REQUIRE(store.load(d.file, kLocal) == "");
  std::atomic<bool> done{false};
  std::atomic<int> mismatches{0};
  std::atomic<uint64_t> seen{0};
  // Generation G's file has G-1 extra workloads: a reader checks each pair it takes.
  std::thread reader([&] {
    uint64_t mine = 0;
    while (!done.load()) {
      if (store.generation() == mine) continue;
      uint64_t generation = 0;
      const auto state = store.snapshot(&generation);
      if (generation < mine || state->workloads().size() != generation) ++mismatches;
      mine = generation;
      seen = generation;
    }
  });
  for (int g = 2; g <= 30; ++g) {
    d.write(config(g - 1));
    REQUIRE(store.reload() == "");
  }
  while (seen.load() != 30)
    std::this_thread::yield();
  done = true;
  reader.join();
  CHECK(mismatches.load() == 0);
  CHECK(store.generation() == 30);
}

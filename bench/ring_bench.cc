// The loop's per-operation overhead: a message echoed across a socketpair, with blocking
// write/read system calls (the baseline) and through the ring (one enter per round trip, or one
// enter for a batch of pairs, which is how the relay runs under load).
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include <benchmark/benchmark.h>

#include "ringtunnel/ring/ring.h"

using ringtunnel::ring::Ring;

namespace {

struct Pairs {
  std::vector<int> a, b;
  explicit Pairs(int n) {
    for (int i = 0; i < n; ++i) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
      a.push_back(sv[0]);
      b.push_back(sv[1]);
    }
  }
  ~Pairs() {
    for (size_t i = 0; i < a.size(); ++i)
      close(a[i]), close(b[i]);
  }
};

void BM_BlockingEcho(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  Pairs p(1);
  std::vector<char> out(size, 'x'), in(size);
  for (auto _ : state) {
    if (write(p.a[0], out.data(), size) != ssize_t(size)) abort();
    size_t got = 0;
    while (got < size)
      got += size_t(read(p.b[0], in.data() + got, size - got));
  }
  state.SetBytesProcessed(int64_t(state.iterations() * size));
}

// `pairs` sends and `pairs` receives per iteration, all submitted with one enter.
void ring_echo(benchmark::State& state, int pairs) {
  const auto size = size_t(state.range(0));
  Pairs p(pairs);
  Ring ring;
  if (!ring.init({256, false}).empty()) {
    state.SkipWithError("io_uring_setup failed");
    return;
  }
  std::vector<char> out(size, 'x'), in(size * size_t(pairs));
  for (auto _ : state) {
    for (int i = 0; i < pairs; ++i) {
      io_uring_sqe* s = ring.sqe();
      io_uring_prep_send(s, p.a[size_t(i)], out.data(), size, 0);
      s->flags |= IOSQE_IO_LINK;
      s = ring.sqe();
      io_uring_prep_recv(s, p.b[size_t(i)], in.data() + size * size_t(i), size, MSG_WAITALL);
    }
    int done = 0;
    while (done < 2 * pairs) {
      ring.submit_and_wait(std::nullopt);
      done += int(ring.drain_completions([](const io_uring_cqe& c) {
        if (c.res < 0) abort();
      }));
    }
  }
  state.SetBytesProcessed(int64_t(state.iterations() * size * size_t(pairs)));
  state.counters["pairs"] = pairs;
}

void BM_RingEcho(benchmark::State& state) {
  ring_echo(state, 1);
}
void BM_RingEchoBatch16(benchmark::State& state) {
  ring_echo(state, 16);
}

}  // namespace

BENCHMARK(BM_BlockingEcho)->Arg(64)->Arg(16384);
BENCHMARK(BM_RingEcho)->Arg(64)->Arg(16384);
BENCHMARK(BM_RingEchoBatch16)->Arg(64)->Arg(16384);
BENCHMARK_MAIN();

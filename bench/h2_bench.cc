// The HTTP/2 framer's own cost: DATA frames encoded by a client H2Session and decoded by a
// server H2Session, back to back in memory, per frame size. No TLS, no sockets, no copy between
// the two (the server is fed the client's output spans as they are), so the figure is what
// nghttp2 and the session's bookkeeping cost per byte: an upper bound on what the framer allows.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <benchmark/benchmark.h>

#include "ringtunnel/h2/session.h"

using namespace ringtunnel::h2;

namespace {

// Consumes at once (the bytes "left on the other socket"), so the window never closes.
struct Sink : SessionEvents {
  H2Session* session = nullptr;
  size_t received = 0;
  size_t released = 0;
  void on_connect_request(int32_t id, const ringtunnel::net::Endpoint&,
                          std::span<const Header>) override {
    session->submit_response(id, 200);
  }
  void on_data(int32_t id, const uint8_t*, size_t n) override {
    received += n;
    session->consume(id, n);
  }
  void on_end_stream(int32_t) override {}
  void on_reset(int32_t, uint32_t) override { abort(); }
  void on_stream_closed(int32_t) override {}
  void on_payload_released(int32_t, std::span<const uint8_t> piece, bool) override {
    released += piece.size();
  }
};

// Hands everything `from` has to `to`, span by span, as a TLS writer would read it. With
// `staging`, the spans are first copied into 16 KiB records (one memcpy per byte: the least a
// real TLS layer does), and `to` is fed the records.
size_t move_output(H2Session& from, H2Session& to, std::vector<uint8_t>* staging = nullptr) {
  size_t moved = 0;
  for (;;) {
    const auto spans = from.pending();
    if (spans.empty()) return moved;
    size_t n = 0;
    for (const auto& s : spans) {
      if (!staging) {
        if (to.feed(s.data(), s.size()) < 0) abort();
      } else {
        for (size_t off = 0; off < s.size();) {
          const size_t take = std::min(s.size() - off, staging->size());
          std::memcpy(staging->data(), s.data() + off, take);
          if (to.feed(staging->data(), take) < 0) abort();
          off += take;
        }
      }
      n += s.size();
    }
    from.consume_output(n);
    moved += n;
  }
}

void run(benchmark::State& state, bool copy) {
  const auto frame = uint32_t(state.range(0));
  constexpr size_t kBatch = 4u << 20;  // one stream window per iteration
  SessionOptions co, so;
  co.role = Role::client;
  so.role = Role::server;
  co.max_frame_size = so.max_frame_size = frame;
  Sink client_events, server_events;
  H2Session client(co, client_events), server(so, server_events);
  client_events.session = &client;
  server_events.session = &server;
  std::vector<uint8_t> record(16u << 10);
  std::vector<uint8_t>* staging = copy ? &record : nullptr;
  const int32_t id = client.submit_connect("10.0.0.1:80");
  while (move_output(client, server) + move_output(server, client) > 0) {
  }
  std::vector<uint8_t> payload(kBatch, 0x5a);
  for (auto _ : state) {
    if (client.submit_data(id, payload.data(), payload.size()) != 0) abort();
    while (move_output(client, server, staging) + move_output(server, client) > 0) {
    }
  }
  if (server_events.received != kBatch * state.iterations()) abort();
  state.SetBytesProcessed(int64_t(kBatch * state.iterations()));
  state.counters["frames/s"] = benchmark::Counter(
      double(kBatch / frame) * double(state.iterations()), benchmark::Counter::kIsRate);
}

// The framer alone: payloads are referenced on both sides and never touched.
void BM_DataFrames(benchmark::State& state) {
  run(state, false);
}
BENCHMARK(BM_DataFrames)->Arg(16 << 10)->Arg(256 << 10)->Arg(1 << 20);

// The same with one copy of every byte in between, as a TLS layer reads it.
void BM_DataFramesCopied(benchmark::State& state) {
  run(state, true);
}
BENCHMARK(BM_DataFramesCopied)->Arg(16 << 10)->Arg(256 << 10)->Arg(1 << 20);

}  // namespace

BENCHMARK_MAIN();

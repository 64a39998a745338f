// The TLS record layer's cost against the cipher alone, in one binary so both run on the same
// wolfSSL build and the same CPU:
//   BM_AesGcmEncrypt / BM_AesGcmEncryptDecrypt   wc_AesGcm* on one 16 KiB record's plaintext:
//                                                the floor.
//   BM_RecordEncrypt      TlsSession::write() into the outbound queue, then consume(): what a
//                         sender pays per byte.
//   BM_RecordRoundTrip    client write() -> pending() -> server feed() -> read(): what both ends
//                         of a tunnel pay per byte, with every copy the record layer makes.
//   BM_RecordRoundTripInPlace  the same with drain(): the plaintext handed over where it was
//                         decrypted, as the HBONE connection takes it.
//   The record benchmarks' second argument: 1 = ringtunnel's record layer (the default),
//   0 = wolfSSL's (SessionOptions::own_records), side by side in one run.
//   BM_Handshake          a full mutual-TLS 1.3 handshake (P-256 certificates, X25519), both
//                         sides in this thread.
// Certificates come from scripts/gen-certs.sh, run once into a temporary directory.
#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/wolfcrypt/aes.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "ringtunnel/tls/credentials.h"
#include "ringtunnel/tls/session.h"

using namespace ringtunnel::tls;

namespace {

constexpr const char* kTrustDomain = "bench.test";

class Fixture {
 public:
  static Fixture& get() {
    static Fixture f;
    return f;
  }
  std::unique_ptr<Credentials> client_creds, server_creds;
  SpiffeId server_id{kTrustDomain, "default", "node-b"};

 private:
  Fixture() {
    char tmpl[] = "/tmp/ringtunnel-tls-bench-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    const std::string cmd = std::string("'") + RINGTUNNEL_SOURCE_ROOT + "/scripts/gen-certs.sh' '" +
                            dir_ + "' " + kTrustDomain + " 2>/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
    const auto files = [&](const char* name) {
      return CredentialFiles{dir_ + "/" + name + ".crt", dir_ + "/" + name + ".key",
                             dir_ + "/ca.crt"};
    };
    for (auto [name, creds] : {std::pair{"node-a", &client_creds}, {"node-b", &server_creds}})
      if (std::string e = Credentials::load(files(name), *creds); !e.empty())
        throw std::runtime_error(e);
  }
  ~Fixture() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

// Moves everything `from` has queued into `to`, as one gathered send and its receive would.
void carry(TlsSession& from, TlsSession& to) {
  size_t sent = 0;
  for (const iovec& v : from.pending()) {
    to.feed(static_cast<const uint8_t*>(v.iov_base), v.iov_len);
    sent += v.iov_len;
  }
  from.consume(sent);
}

SessionOptions with_records(int64_t own) {
  SessionOptions o;
  o.own_records = own != 0;
  return o;
}

struct Connected {
  explicit Connected(int64_t own = 1)
      : client{*Fixture::get().client_creds, Role::client, pool, with_records(own)},
        server{*Fixture::get().server_creds, Role::server, pool, with_records(own)} {}
  BlockPool pool;
  TlsSession client;
  TlsSession server;

  bool connect() {
    client.expect_peer(Fixture::get().server_id);
    for (int round = 0; round < 10; ++round) {
      const HandshakeStatus c = client.handshake();
      carry(client, server);
      const HandshakeStatus s = server.handshake();
      carry(server, client);
      if (c == HandshakeStatus::failed || s == HandshakeStatus::failed) return false;
      if (c == HandshakeStatus::done && s == HandshakeStatus::done) return true;
    }
    return false;
  }
};

void BM_AesGcmEncrypt(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  std::vector<byte> in(size, 0x5a), out(size);
  byte key[16] = {1}, iv[12] = {2}, tag[16], aad[5] = {23, 3, 3};
  Aes aes;
  wc_AesInit(&aes, nullptr, INVALID_DEVID);
  wc_AesGcmSetKey(&aes, key, sizeof key);
  for (auto _ : state) {
    if (wc_AesGcmEncrypt(&aes, out.data(), in.data(), word32(size), iv, sizeof iv, tag, sizeof tag,
                         aad, sizeof aad) != 0)
      state.SkipWithError("wc_AesGcmEncrypt failed");
    benchmark::DoNotOptimize(out.data());
  }
  wc_AesFree(&aes);
  state.SetBytesProcessed(int64_t(state.iterations() * size));
}

void BM_AesGcmEncryptDecrypt(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  std::vector<byte> in(size, 0x5a), out(size), back(size);
  byte key[16] = {1}, iv[12] = {2}, tag[16], aad[5] = {23, 3, 3};
  Aes aes;
  wc_AesInit(&aes, nullptr, INVALID_DEVID);
  wc_AesGcmSetKey(&aes, key, sizeof key);
  for (auto _ : state) {
    if (wc_AesGcmEncrypt(&aes, out.data(), in.data(), word32(size), iv, sizeof iv, tag, sizeof tag,
                         aad, sizeof aad) != 0 ||
        wc_AesGcmDecrypt(&aes, back.data(), out.data(), word32(size), iv, sizeof iv, tag,
                         sizeof tag, aad, sizeof aad) != 0)
      state.SkipWithError("wc_AesGcm* failed");
    benchmark::DoNotOptimize(back.data());
  }
  wc_AesFree(&aes);
  state.SetBytesProcessed(int64_t(state.iterations() * size));
}

void BM_RecordEncrypt(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  Connected c(state.range(1));
  if (!c.connect()) return state.SkipWithError("handshake failed");
  std::vector<uint8_t> in(size, 0x5a);
  for (auto _ : state) {
    if (!c.client.write(in.data(), in.size())) return state.SkipWithError("write failed");
    c.client.consume(c.client.pending_bytes());
  }
  state.SetBytesProcessed(int64_t(state.iterations() * size));
  state.SetLabel(c.client.cipher());
}

void BM_RecordRoundTrip(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  Connected c(state.range(1));
  if (!c.connect()) return state.SkipWithError("handshake failed");
  std::vector<uint8_t> in(size, 0x5a), out(256 * 1024);
  for (auto _ : state) {
    if (!c.client.write(in.data(), in.size())) return state.SkipWithError("write failed");
    carry(c.client, c.server);
    size_t got = 0;
    for (;;) {
      const ReadResult r = c.server.read(out.data(), out.size());
      got += r.bytes;
      if (r.bytes < out.size()) break;
    }
    if (got != size) return state.SkipWithError("read less than was written");
  }
  state.SetBytesProcessed(int64_t(state.iterations() * size));
  state.SetLabel(c.client.cipher());
}

void BM_RecordRoundTripInPlace(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  Connected c(state.range(1));
  if (!c.connect()) return state.SkipWithError("handshake failed");
  std::vector<uint8_t> in(size, 0x5a);
  for (auto _ : state) {
    if (!c.client.write(in.data(), in.size())) return state.SkipWithError("write failed");
    carry(c.client, c.server);
    size_t got = 0;
    c.server.drain(
        [](void* arg, std::span<const uint8_t> plaintext) {
          *static_cast<size_t*>(arg) += plaintext.size();
          benchmark::DoNotOptimize(plaintext.data());
          return true;
        },
        &got);
    if (got != size) return state.SkipWithError("read less than was written");
  }
  state.SetBytesProcessed(int64_t(state.iterations() * size));
  state.SetLabel(c.client.cipher());
}

void BM_Handshake(benchmark::State& state) {
  for (auto _ : state) {
    Connected c;
    if (!c.connect()) return state.SkipWithError("handshake failed");
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}

}  // namespace

BENCHMARK(BM_AesGcmEncrypt)->Arg(16384);
BENCHMARK(BM_AesGcmEncryptDecrypt)->Arg(16384);
BENCHMARK(BM_RecordEncrypt)->ArgsProduct({{16384, 256 * 1024}, {0, 1}});
BENCHMARK(BM_RecordRoundTrip)->ArgsProduct({{16384, 256 * 1024, 1024}, {0, 1}});
BENCHMARK(BM_RecordRoundTripInPlace)->ArgsProduct({{16384, 256 * 1024, 1024}, {0, 1}});
BENCHMARK(BM_Handshake)->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();

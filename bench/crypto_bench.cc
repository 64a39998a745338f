// AES-GCM throughput of the wolfSSL ringtunnel links against: the reason the project builds its
// own (Debian's has no AES-NI). One 16 KiB TLS record's worth of plaintext per iteration.
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>

#include <vector>

#include <benchmark/benchmark.h>

namespace {

void BM_AesGcmEncrypt(benchmark::State& state) {
  const auto size = size_t(state.range(0));
  const auto key_bytes = unsigned(state.range(1));
  std::vector<byte> in(size, 0x5a), out(size);
  byte key[32] = {1}, iv[12] = {2}, tag[16], aad[13] = {3};
  Aes aes;
  wc_AesInit(&aes, nullptr, INVALID_DEVID);
  if (wc_AesGcmSetKey(&aes, key, key_bytes) != 0) {
    state.SkipWithError("wc_AesGcmSetKey failed");
    return;
  }
  for (auto _ : state) {
    if (wc_AesGcmEncrypt(&aes, out.data(), in.data(), word32(size), iv, sizeof iv, tag, sizeof tag,
                         aad, sizeof aad) != 0)
      abort();
    benchmark::DoNotOptimize(out.data());
  }
  wc_AesFree(&aes);
  state.SetBytesProcessed(int64_t(state.iterations() * size));
}

}  // namespace

BENCHMARK(BM_AesGcmEncrypt)->Args({16384, 16})->Args({16384, 32})->Args({1024, 16});
BENCHMARK_MAIN();

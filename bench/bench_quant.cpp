// One-token products (GEMV, M = 1) and few-row products (M = 4: beam search,
// batched decoding) with f32, bf16, q8 and q4 weights: the decoding step's cost
// per matrix. One thread (no executor). The weights are cycled over copies
// totalling at least 512 MiB, so every call reads them from DRAM, as decoding a
// model much larger than the caches does. Items/s = products per second.
// BM_read_bandwidth is the yardstick: a one-thread streaming read of 1 GiB.
//
// Many rows (prompts, images: M = 9..257 at OpenFlamingo-3B's decoder and
// ViT-L shapes), q8 and q4: BM_many_* is linear_q (with AVX512-VNNI: the
// integer kernels over cached weight panels); BM_many_*_dequant is
// detail::linear_q_dequantised (weight panels dequantised to f32, then the
// f32 kernel), which linear_q uses for more than 3 rows without VNNI. The
// dequantising loop runs as compiled here (baseline flags in a dispatching
// build), the f32 kernel through the active kernel set.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include <flamingo/core/dtype.hpp>
#include <flamingo/kernels/gemm.hpp>
#include <flamingo/kernels/quant.hpp>

namespace fk = flamingo::kernels;
using flamingo::bf16;

namespace {

constexpr std::size_t kColdBytes = std::size_t(512) << 20;

// On a shared machine the least disturbed repetition is the one to read:
// --benchmark_repetitions=N adds a "min" row (the best of N; for rates, min of
// the time-derived counters is the worst, so read the time column).
double best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

std::size_t copies_for(std::size_t bytes, std::size_t cold = kColdBytes) {
    return std::max<std::size_t>(1, (cold + bytes - 1) / bytes);
}

std::vector<float> random_floats(std::size_t n, unsigned seed = 1) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
}

void finish(benchmark::State& state, std::size_t weight_bytes) {
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(weight_bytes));
}

// f32 or bf16 weights: range(0) x range(1) = N x K, range(2) = M.
template <class W>
void BM_gemv_float(benchmark::State& state) {
    const std::size_t N = state.range(0), K = state.range(1), M = state.range(2);
    const std::size_t copies = copies_for(N * K * sizeof(W));
    std::vector<W> w(copies * N * K);
    {
        auto wf = random_floats(N * K);
        for (std::size_t c = 0; c < copies; ++c)
            for (std::size_t i = 0; i < N * K; ++i) w[c * N * K + i] = W(wf[i]);
    }
    auto x = random_floats(M * K, 2);
    std::vector<float> y(M * N);
    std::size_t c = 0;
    for (auto _ : state) {
        fk::linear(M, N, K, x.data(), K, w.data() + c * N * K, K, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
        c = c + 1 == copies ? 0 : c + 1;
    }
    finish(state, N * K * sizeof(W));
}
void BM_gemv_f32(benchmark::State& state) { BM_gemv_float<float>(state); }
void BM_gemv_bf16(benchmark::State& state) { BM_gemv_float<bf16>(state); }

void gemv_q(benchmark::State& state, fk::QFormat f, bool dequant = false) {
    const std::size_t N = state.range(0), K = state.range(1), M = state.range(2);
    const fk::QBuffer one = fk::quantize(f, random_floats(N * K).data(), N, K, K);
    const std::size_t bytes = one.data.size() + (one.scales.size() + one.offsets.size()) * sizeof(flamingo::f16);
    // Many rows: 128 MiB of copies (4x the 32 MB L3 a Zen 5 core sees) suffice and set up faster.
    std::vector<fk::QBuffer> bufs(copies_for(bytes, M > 8 ? kColdBytes / 4 : kColdBytes), one);
    auto x = random_floats(M * K, 2);
    std::vector<float> y(M * N);
    std::size_t c = 0;
    for (auto _ : state) {
        if (dequant) fk::detail::linear_q_dequantised(M, x.data(), K, bufs[c].view(f, N, K), nullptr, y.data(), N, false);
        else fk::linear_q(M, x.data(), K, bufs[c].view(f, N, K), nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
        c = c + 1 == bufs.size() ? 0 : c + 1;
    }
    finish(state, bytes);
}
void BM_gemv_q8(benchmark::State& state) { gemv_q(state, fk::QFormat::Q8); }
void BM_gemv_q4(benchmark::State& state) { gemv_q(state, fk::QFormat::Q4); }

#if defined(__x86_64__) || defined(_M_X64)
// Sums 1 GiB of floats with 256-bit loads and a software prefetch a little
// ahead, as the GEMV kernels read (bench_gemm's read-bandwidth benchmark, on one thread).
__attribute__((target("avx2"))) float read_sum(const float* p, std::size_t n) {
    __m256 s[8];
    for (auto& v : s) v = _mm256_setzero_ps();
    for (std::size_t i = 0; i + 64 <= n; i += 64) {
        for (std::size_t l = 0; l < 256; l += 64) _mm_prefetch(reinterpret_cast<const char*>(p + i) + 512 + l, _MM_HINT_T0);
        for (int j = 0; j < 8; ++j) s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(p + i + 8 * j));
    }
    for (int j = 1; j < 8; ++j) s[0] = _mm256_add_ps(s[0], s[j]);
    alignas(32) float t[8];
    _mm256_store_ps(t, s[0]);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

void BM_read_bandwidth(benchmark::State& state) {
    if (!__builtin_cpu_supports("avx2")) return state.SkipWithError("needs AVX2");
    const std::size_t n = (std::size_t(1) << 30) / sizeof(float);
    std::vector<float> buf(n, 1.0f);
    for (auto _ : state) benchmark::DoNotOptimize(read_sum(buf.data(), n));
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(float)));
}
BENCHMARK(BM_read_bandwidth)->ComputeStatistics("min", best)->Unit(benchmark::kMillisecond);
#endif

void shapes(benchmark::internal::Benchmark* b) {
    b->ComputeStatistics("min", best);
    b->Args({4096, 4096, 1})->Args({11008, 4096, 1})->Args({4096, 11008, 1})->Args({4096, 4096, 4});
    b->ArgNames({"N", "K", "M"})->Unit(benchmark::kMicrosecond);
}

// OpenFlamingo-3B: MPT-1B's projections (d 2048, MLP 8192) and ViT-L's MLP
// (1024 -> 4096, 4096 -> 1024). Each case runs the new and the old path one
// after the other, so that both see the same load.
const bool many_rows_registered = [] {
    const std::pair<int, int> NK[] = {{2048, 2048}, {8192, 2048}, {2048, 8192}, {4096, 1024}, {1024, 4096}};
    for (fk::QFormat f : {fk::QFormat::Q8, fk::QFormat::Q4})
        for (auto [N, K] : NK)
            for (int M : {9, 16, 32, 64, 128, 257})
                for (bool dequant : {false, true}) {
                    const std::string name = std::string("BM_many_") + fk::qformat_name(f) + (dequant ? "_dequant" : "");
                    benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { gemv_q(s, f, dequant); })
                        ->Args({N, K, M})
                        ->ArgNames({"N", "K", "M"})
                        ->ComputeStatistics("min", best)
                        ->Unit(benchmark::kMillisecond);
                }
    return true;
}();

}  // namespace

BENCHMARK(BM_gemv_f32)->Apply(shapes);
BENCHMARK(BM_gemv_bf16)->Apply(shapes);
BENCHMARK(BM_gemv_q8)->Apply(shapes);
BENCHMARK(BM_gemv_q4)->Apply(shapes);
BENCHMARK_MAIN();

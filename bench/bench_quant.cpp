// One-token products (GEMV) with f32, bf16, q8 and q4 weights: the decoding
// step's cost per matrix. One thread (no executor), the weights far larger
// than the caches, as in decoding. Items/s = products per second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include <flamingo/core/dtype.hpp>
#include <flamingo/kernels/gemm.hpp>
#include <flamingo/kernels/quant.hpp>

namespace fk = flamingo::kernels;
using flamingo::bf16;

namespace {

std::vector<float> random_floats(std::size_t n) {
    std::mt19937 gen(1);
    std::normal_distribution<float> d(0.0f, 0.05f);
    std::vector<float> v(n);
    for (auto& x : v) x = d(gen);
    return v;
}

void finish(benchmark::State& state, std::size_t weight_bytes) {
    state.SetItemsProcessed(state.iterations());
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(weight_bytes));
}

void BM_gemv_f32(benchmark::State& state) {
    const std::size_t N = state.range(0), K = state.range(1);
    auto w = random_floats(N * K), x = random_floats(K);
    std::vector<float> y(N);
    for (auto _ : state) {
        fk::linear(1, N, K, x.data(), K, w.data(), K, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
    }
    finish(state, N * K * sizeof(float));
}

void BM_gemv_bf16(benchmark::State& state) {
    const std::size_t N = state.range(0), K = state.range(1);
    auto wf = random_floats(N * K), x = random_floats(K);
    std::vector<bf16> w(N * K);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = bf16(wf[i]);
    std::vector<float> y(N);
    for (auto _ : state) {
        fk::linear(1, N, K, x.data(), K, w.data(), K, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
    }
    finish(state, N * K * sizeof(bf16));
}

void gemv_q(benchmark::State& state, fk::QFormat f) {
    const std::size_t N = state.range(0), K = state.range(1);
    auto wf = random_floats(N * K), x = random_floats(K);
    auto buf = fk::quantize(f, wf.data(), N, K, K);
    const fk::QMatrix m = buf.view(f, N, K);
    std::vector<float> y(N);
    for (auto _ : state) {
        fk::linear_q(1, x.data(), K, m, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
    }
    finish(state, buf.data.size() + (buf.scales.size() + buf.offsets.size()) * sizeof(float));
}
void BM_gemv_q8(benchmark::State& state) { gemv_q(state, fk::QFormat::Q8); }
void BM_gemv_q4(benchmark::State& state) { gemv_q(state, fk::QFormat::Q4); }

void shapes(benchmark::internal::Benchmark* b) {
    b->Args({4096, 4096})->Args({11008, 4096})->Args({4096, 11008})->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(BM_gemv_f32)->Apply(shapes);
BENCHMARK(BM_gemv_bf16)->Apply(shapes);
BENCHMARK(BM_gemv_q8)->Apply(shapes);
BENCHMARK(BM_gemv_q4)->Apply(shapes);
BENCHMARK_MAIN();

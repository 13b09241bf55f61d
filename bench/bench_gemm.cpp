// GEMM / GEMV / memory-bandwidth benchmark for flamingo::kernels::{matmul, linear}.
//
// Prints Google Benchmark's table, then a summary with the ratios that matter:
// ours / Eigen for GEMM, bf16 / f32 for GEMV, GEMV bandwidth / measured read
// bandwidth. Multi-threaded runs are timed by wall clock; single-threaded ones
// (names ending in _1t, Eigen's default product, the naive loop) by the CPU time
// of the thread, which stays meaningful when other jobs share the cores.
//
//   ./bench_gemm                      all benchmarks, then the summary
//   ./bench_gemm --benchmark_filter=Gemv
#include <benchmark/benchmark.h>

#define EIGEN_USE_THREADS
#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <flamingo/core/executor.hpp>
#include <flamingo/kernels/gemm.hpp>

namespace {

using flamingo::bf16;
namespace fk = flamingo::kernels;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

struct Shape {
    std::size_t M, N, K;
};
const Shape kGemmShapes[] = {{1, 2048, 2048}, {64, 2048, 8192}, {320, 1024, 1024}, {1024, 1024, 1024}};

// Runs a benchmark on an executor of a given size (0: the one main() set up).
class PoolSize {
public:
    explicit PoolSize(int n) {
        if (n) ex_ = std::make_unique<flamingo::Executor>(n), use_ = std::make_unique<flamingo::Executor::Scope>(*ex_);
    }

private:
    std::unique_ptr<flamingo::Executor> ex_;
    std::unique_ptr<flamingo::Executor::Scope> use_;
};

void set_gemm_counters(benchmark::State& st, const Shape& s) {
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(s.M) * double(s.N) * double(s.K) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------- GEMM

void BM_GemmOurs(benchmark::State& st, Shape s, int threads) {
    PoolSize pool(threads);
    auto A = random_floats(s.M * s.K, 1), B = random_floats(s.K * s.N, 2);
    std::vector<float> C(s.M * s.N);
    for (auto _ : st) {
        fk::matmul(s.M, s.N, s.K, A.data(), s.K, B.data(), s.N, C.data(), s.N);
        benchmark::DoNotOptimize(C.data());
    }
    set_gemm_counters(st, s);
}

// Eigen's default product on row-major maps. Without OpenMP (this build) Eigen's
// GEMM is single-threaded.
void BM_GemmEigen(benchmark::State& st, Shape s) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    auto A = random_floats(s.M * s.K, 1), B = random_floats(s.K * s.N, 2);
    std::vector<float> C(s.M * s.N);
    Eigen::Map<const Mat> a(A.data(), Eigen::Index(s.M), Eigen::Index(s.K));
    Eigen::Map<const Mat> b(B.data(), Eigen::Index(s.K), Eigen::Index(s.N));
    Eigen::Map<Mat> c(C.data(), Eigen::Index(s.M), Eigen::Index(s.N));
    for (auto _ : st) {
        c.noalias() = a * b;
        benchmark::DoNotOptimize(C.data());
    }
    set_gemm_counters(st, s);
    st.SetLabel("threads=" + std::to_string(Eigen::nbThreads()));
}

// Eigen's tensor contraction on a 2-thread pool: Eigen's own multi-threaded
// product without OpenMP, for a like-for-like thread count.
void BM_GemmEigenTensor2T(benchmark::State& st, Shape s) {
    auto A = random_floats(s.M * s.K, 1), B = random_floats(s.K * s.N, 2);
    std::vector<float> C(s.M * s.N);
    // Row-major A[M,K]·B[K,N] is column-major B'[N,K]·A'[K,M].
    Eigen::TensorMap<Eigen::Tensor<const float, 2>> a(A.data(), Eigen::Index(s.K), Eigen::Index(s.M));
    Eigen::TensorMap<Eigen::Tensor<const float, 2>> b(B.data(), Eigen::Index(s.N), Eigen::Index(s.K));
    Eigen::TensorMap<Eigen::Tensor<float, 2>> c(C.data(), Eigen::Index(s.N), Eigen::Index(s.M));
    Eigen::ThreadPool pool(2);
    Eigen::ThreadPoolDevice dev(&pool, 2);
    Eigen::array<Eigen::IndexPair<int>, 1> dims = {Eigen::IndexPair<int>(1, 0)};
    for (auto _ : st) {
        c.device(dev) = b.contract(a, dims);
        benchmark::DoNotOptimize(C.data());
    }
    set_gemm_counters(st, s);
}

// Plain triple loop (i, k, j order so the inner loop is contiguous; the
// compiler vectorises it), one thread.
void BM_GemmNaive(benchmark::State& st, Shape s) {
    auto A = random_floats(s.M * s.K, 1), B = random_floats(s.K * s.N, 2);
    std::vector<float> C(s.M * s.N);
    for (auto _ : st) {
        std::fill(C.begin(), C.end(), 0.0f);
        for (std::size_t i = 0; i < s.M; ++i)
            for (std::size_t k = 0; k < s.K; ++k) {
                float a = A[i * s.K + k];
                const float* b = &B[k * s.N];
                float* c = &C[i * s.N];
                for (std::size_t j = 0; j < s.N; ++j) c[j] += a * b[j];
            }
        benchmark::DoNotOptimize(C.data());
    }
    set_gemm_counters(st, s);
}

// ---------------------------------------------------------------- GEMV

// Enough copies of the weight matrix that one pass over them exceeds the caches
// several times: every call reads its weights from DRAM, as in decoding a model
// whose weights are far larger than the caches.
constexpr std::size_t kColdBytes = std::size_t(512) << 20;

template <class W>
void BM_Gemv(benchmark::State& st, std::size_t N, std::size_t K, int threads) {
    PoolSize pool(threads);
    const std::size_t one = N * K * sizeof(W);
    const std::size_t copies = std::max<std::size_t>(1, (kColdBytes + one - 1) / one);
    std::vector<W> w(copies * N * K);
    {
        auto f = random_floats(N * K, 3);
        for (std::size_t c = 0; c < copies; ++c)
            for (std::size_t i = 0; i < N * K; ++i) w[c * N * K + i] = W(f[i]);
    }
    auto x = random_floats(K, 4), bias = random_floats(N, 5);
    std::vector<float> y(N);
    std::size_t c = 0;
    for (auto _ : st) {
        fk::linear(1, N, K, x.data(), K, w.data() + c * N * K, K, bias.data(), y.data(), N);
        benchmark::DoNotOptimize(y.data());
        c = c + 1 == copies ? 0 : c + 1;
    }
    st.counters["GB/s"] = benchmark::Counter(double(one) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["rows/s"] = benchmark::Counter(double(N), benchmark::Counter::kIsIterationInvariantRate);
}

// Eigen's matrix-vector product on the same (f32) data, for reference.
void BM_GemvEigen(benchmark::State& st, std::size_t N, std::size_t K) {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const std::size_t one = N * K * sizeof(float);
    const std::size_t copies = std::max<std::size_t>(1, (kColdBytes + one - 1) / one);
    std::vector<float> w(copies * N * K);
    {
        auto f = random_floats(N * K, 3);
        for (std::size_t c = 0; c < copies; ++c) std::copy(f.begin(), f.end(), w.begin() + std::ptrdiff_t(c * N * K));
    }
    auto x = random_floats(K, 4);
    std::vector<float> y(N);
    Eigen::Map<const Eigen::VectorXf> xv(x.data(), Eigen::Index(K));
    Eigen::Map<Eigen::VectorXf> yv(y.data(), Eigen::Index(N));
    std::size_t c = 0;
    for (auto _ : st) {
        Eigen::Map<const Mat> wm(w.data() + c * N * K, Eigen::Index(N), Eigen::Index(K));
        yv.noalias() = wm * xv;
        benchmark::DoNotOptimize(y.data());
        c = c + 1 == copies ? 0 : c + 1;
    }
    st.counters["GB/s"] = benchmark::Counter(double(one) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["rows/s"] = benchmark::Counter(double(N), benchmark::Counter::kIsIterationInvariantRate);
}

// Beam search: M rows against the same weights (read once for all rows).
template <class W>
void BM_LinearSmallM(benchmark::State& st, std::size_t M, std::size_t N, std::size_t K) {
    const std::size_t one = N * K * sizeof(W);
    const std::size_t copies = std::max<std::size_t>(1, (kColdBytes + one - 1) / one);
    std::vector<W> w(copies * N * K);
    {
        auto f = random_floats(N * K, 3);
        for (std::size_t c = 0; c < copies; ++c)
            for (std::size_t i = 0; i < N * K; ++i) w[c * N * K + i] = W(f[i]);
    }
    auto x = random_floats(M * K, 4);
    std::vector<float> y(M * N);
    std::size_t c = 0;
    for (auto _ : st) {
        fk::linear(M, N, K, x.data(), K, w.data() + c * N * K, K, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
        c = c + 1 == copies ? 0 : c + 1;
    }
    st.counters["GB/s"] = benchmark::Counter(double(one) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M * N * K) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// Compute-bound linear (prompt, Perceiver, ViT shapes): W stored [out, in].
// widen: bf16 weights through the widening f32 path whatever the CPU has (the
// path FLAMINGO_BF16_GEMM=widen selects), next to linear()'s choice. Through the
// switch rather than the internal kernel, so that a build that picks its kernels
// at run time measures the chosen set's widening path, not its own baseline copy.
template <class W>
void BM_LinearGemm(benchmark::State& st, std::size_t M, std::size_t N, std::size_t K, bool widen) {
    auto X = random_floats(M * K, 1), f = random_floats(N * K, 2), bias = random_floats(N, 3);
    std::vector<W> w(N * K);
    for (std::size_t i = 0; i < N * K; ++i) w[i] = W(f[i]);
    std::vector<float> Y(M * N);
    auto& dot = fk::bf16_dot_switch();
    const bool was = dot.load();
    dot.store(was && !widen);
    double best = 0;  // the fastest call, seconds
    for (auto _ : st) {
        const auto t0 = std::chrono::steady_clock::now();
        fk::linear(M, N, K, X.data(), K, w.data(), K, bias.data(), Y.data(), N);
        benchmark::DoNotOptimize(Y.data());
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = best == 0 ? dt : std::min(best, dt);
    }
    dot.store(was);
    set_gemm_counters(st, {M, N, K});
    // GFLOP/s above is the mean over the run (all calls / all time); this is the
    // best single call, the statistic of bench/pytorch_gemm.py's "best" column.
    if (best > 0) st.counters["best_GFLOP/s"] = 2.0 * double(M) * double(N) * double(K) * 1e-9 / best;
}

// ---------------------------------------------------------------- bandwidth

// Streaming read-reduce over 1 GiB: the machine's read bandwidth, the yardstick
// for GEMV. Like the GEMV kernels it prefetches a little ahead in software (on
// this machine that reads ~10% faster than relying on the hardware prefetcher).
void BM_ReadBandwidth(benchmark::State& st, int threads) {
    PoolSize pool(threads);
    using batch = xsimd::batch<float>;
    constexpr std::size_t V = batch::size, step = 8 * V;
    const std::size_t n = (std::size_t(1) << 30) / sizeof(float);
    std::vector<float> buf(n, 1.0f);
    std::vector<float> partial(64);
    const float* p = buf.data();
    for (auto _ : st) {
        flamingo::parallel_for(
            n,
            [&](std::size_t b, std::size_t e) {  // chunks are whole multiples of step
                batch s[8];
                for (auto& x : s) x = batch(0.0f);
                for (std::size_t i = b; i + step <= e; i += step) {
                    for (std::size_t l = 0; l < step * sizeof(float); l += 64)
                        __builtin_prefetch(reinterpret_cast<const char*>(p + i) + 512 + l, 0, 3);
                    for (std::size_t j = 0; j < 8; ++j) s[j] += batch::load_unaligned(p + i + j * V);
                }
                partial[b * 8 / n] = xsimd::hadd(((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7])));
            },
            step);
        benchmark::DoNotOptimize(partial.data());
    }
    st.counters["GB/s"] = benchmark::Counter(double(n * sizeof(float)) * 1e-9,
                                             benchmark::Counter::kIsIterationInvariantRate);
}

// ---------------------------------------------------------------- thread pool

void BM_EmptyParallelFor(benchmark::State& st) {
    // Two chunks: the caller's and the worker's (which the caller runs itself
    // if the worker has not claimed it by the time the caller is done).
    for (auto _ : st) flamingo::parallel_for(2, [](std::size_t, std::size_t) { benchmark::ClobberMemory(); });
}

void BM_SmallGemv(benchmark::State& st, std::size_t N, std::size_t K, int threads) {
    PoolSize pool(threads);
    auto w = random_floats(N * K, 1), x = random_floats(K, 2);
    std::vector<float> y(N);
    for (auto _ : st) {
        fk::linear(1, N, K, x.data(), K, w.data(), K, nullptr, y.data(), N);
        benchmark::DoNotOptimize(y.data());
    }
}

// ---------------------------------------------------------------- registration

std::string shape_name(const Shape& s) {
    return std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
}
// Linear GEMM shapes: Perceiver / ViT ones, then an OpenFlamingo-3B prompt of
// 165 tokens (d_model 2048, MLP 8192): attention projection, MLP up, MLP down;
// last kGemmShapes' three, which bench/pytorch_gemm.py measures in PyTorch.
const Shape kLinearShapes[] = {{64, 1024, 1024},  {257, 4096, 1024}, {1300, 2048, 2048},
                               {165, 2048, 2048}, {165, 8192, 2048}, {165, 2048, 8192},
                               {64, 2048, 8192},  {320, 1024, 1024}, {1024, 1024, 1024}};
const std::pair<std::size_t, std::size_t> kGemvShapes[] = {{2048, 2048}, {2048, 8192}, {8192, 2048}, {50280, 2048}};

void register_all() {
    for (const Shape& s : kGemmShapes) {
        const std::string shape = shape_name(s);
        benchmark::RegisterBenchmark(("Gemm/ours/" + shape).c_str(), BM_GemmOurs, s, 0)->UseRealTime();
        benchmark::RegisterBenchmark(("Gemm/ours_1t/" + shape).c_str(), BM_GemmOurs, s, 1);
        benchmark::RegisterBenchmark(("Gemm/eigen/" + shape).c_str(), BM_GemmEigen, s);
        benchmark::RegisterBenchmark(("Gemm/eigen_tensor_2t/" + shape).c_str(), BM_GemmEigenTensor2T, s)
            ->UseRealTime();
        if (s.M * s.N * s.K <= std::size_t(1) << 30)
            benchmark::RegisterBenchmark(("Gemm/naive/" + shape).c_str(), BM_GemmNaive, s);
    }
    for (auto [N, K] : kGemvShapes) {
        const std::string shape = std::to_string(N) + "x" + std::to_string(K);
        benchmark::RegisterBenchmark(("Gemv/f32/" + shape).c_str(), BM_Gemv<float>, N, K, 0)->UseRealTime();
        benchmark::RegisterBenchmark(("Gemv/bf16/" + shape).c_str(), BM_Gemv<bf16>, N, K, 0)->UseRealTime();
        benchmark::RegisterBenchmark(("Gemv/f32_1t/" + shape).c_str(), BM_Gemv<float>, N, K, 1);
        benchmark::RegisterBenchmark(("Gemv/bf16_1t/" + shape).c_str(), BM_Gemv<bf16>, N, K, 1);
        benchmark::RegisterBenchmark(("Gemv/eigen_f32/" + shape).c_str(), BM_GemvEigen, N, K);
    }
    benchmark::RegisterBenchmark("Bandwidth/read", BM_ReadBandwidth, 0)->UseRealTime();
    benchmark::RegisterBenchmark("Bandwidth/read_1t", BM_ReadBandwidth, 1);
    for (std::size_t M : {2, 4, 8, 16}) {
        const std::string shape = std::to_string(M) + "x8192x2048";
        benchmark::RegisterBenchmark(("LinearSmallM/f32/" + shape).c_str(), BM_LinearSmallM<float>, M, 8192, 2048)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("LinearSmallM/bf16/" + shape).c_str(), BM_LinearSmallM<bf16>, M, 8192, 2048)
            ->UseRealTime();
    }
    for (const Shape& s : kLinearShapes) {
        const std::string shape = shape_name(s);
        benchmark::RegisterBenchmark(("Linear/f32/" + shape).c_str(), BM_LinearGemm<float>, s.M, s.N, s.K, false)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("Linear/bf16_widen/" + shape).c_str(), BM_LinearGemm<bf16>, s.M, s.N, s.K,
                                     true)
            ->UseRealTime();
        benchmark::RegisterBenchmark(("Linear/bf16/" + shape).c_str(), BM_LinearGemm<bf16>, s.M, s.N, s.K, false)
            ->UseRealTime();
    }
    benchmark::RegisterBenchmark("Pool/empty_parallel_for", BM_EmptyParallelFor)->UseRealTime();
    for (int t : {0, 1}) {
        const std::string sfx = t ? "_1t" : "";
        benchmark::RegisterBenchmark(("Pool/gemv_256x256" + sfx).c_str(), BM_SmallGemv, 256, 256, t)->UseRealTime();
        benchmark::RegisterBenchmark(("Pool/gemv_1024x1024" + sfx).c_str(), BM_SmallGemv, 1024, 1024, t)
            ->UseRealTime();
    }
}

// Records every run's counters so the summary can put ratios side by side.
class Recorder : public benchmark::ConsoleReporter {
public:
    std::map<std::string, benchmark::BenchmarkReporter::Run> runs;
    void ReportRuns(const std::vector<Run>& report) override {
        ConsoleReporter::ReportRuns(report);
        for (const auto& r : report)
            if (r.run_type == Run::RT_Iteration && !r.error_occurred) runs[r.run_name.function_name] = r;
    }
    double counter(const std::string& name, const std::string& c) const {
        auto it = runs.find(name);
        if (it == runs.end()) return 0;
        auto jt = it->second.counters.find(c);
        return jt == it->second.counters.end() ? 0 : double(jt->second);
    }
    double seconds(const std::string& name) const {
        auto it = runs.find(name);
        if (it == runs.end()) return 0;
        return it->second.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(it->second.time_unit);
    }
};

void print_summary(const Recorder& r) {
    std::printf("\nSummary (pool: %d threads). GFLOP/s; 2-thread columns by wall time, 1-thread by CPU time.\n",
                flamingo::num_threads());
    std::printf("%-16s %8s %8s %8s %8s %8s %10s %10s %10s\n", "GEMM MxNxK", "ours", "ours_1t", "eigen", "eig_2t",
                "naive", "ours/eig", "1t/eig", "ours/eig2t");
    for (const Shape& s : kGemmShapes) {
        const std::string shape = shape_name(s);
        auto g = [&](const char* who) { return r.counter(std::string("Gemm/") + who + "/" + shape, "GFLOP/s"); };
        double o = g("ours"), o1 = g("ours_1t"), e = g("eigen"), e2 = g("eigen_tensor_2t"), n = g("naive");
        if (o == 0) continue;
        std::printf("%-16s %8.1f %8.1f %8.1f %8.1f %8.1f %10.2f %10.2f %10.2f\n", shape.c_str(), o, o1, e, e2, n,
                    e ? o / e : 0, e ? o1 / e : 0, e2 ? o / e2 : 0);
    }
    std::printf("\nLinear (bf16: %s). GFLOP/s, wall time\n", fk::bf16_gemm_kind());
    std::printf("%-16s %8s %10s %8s %11s %9s\n", "linear MxNxK", "f32", "bf16_widen", "bf16", "bf16/widen",
                "bf16/f32");
    for (const Shape& s : kLinearShapes) {
        const std::string shape = shape_name(s);
        auto g = [&](const char* who) { return r.counter(std::string("Linear/") + who + "/" + shape, "GFLOP/s"); };
        double f = g("f32"), w = g("bf16_widen"), b = g("bf16");
        if (f == 0 && w == 0 && b == 0) continue;
        std::printf("%-16s %8.1f %10.1f %8.1f %11.2f %9.2f\n", shape.c_str(), f, w, b, w ? b / w : 0, f ? b / f : 0);
    }
    const double bw = r.counter("Bandwidth/read", "GB/s"), bw1 = r.counter("Bandwidth/read_1t", "GB/s");
    std::printf("\nread bandwidth: %.1f GB/s (all threads, wall), %.1f GB/s (1 thread, CPU time)\n", bw, bw1);
    std::printf("%-12s %9s %9s %10s %10s %8s %7s %7s | %9s %9s %8s %7s %7s\n", "GEMV NxK", "f32 GB/s", "bf16 GB/s",
                "f32 rows/s", "bf16 rows/s", "bf16/f32", "f32/bw", "bf16/bw", "f32_1t", "bf16_1t", "bf16/f32",
                "f32/bw1", "bf16/bw1");
    for (auto [N, K] : kGemvShapes) {
        const std::string s = std::to_string(N) + "x" + std::to_string(K);
        auto g = [&](const char* who, const char* c) { return r.counter(std::string("Gemv/") + who + "/" + s, c); };
        double f = g("f32", "GB/s"), b = g("bf16", "GB/s"), fr = g("f32", "rows/s"), br = g("bf16", "rows/s");
        double f1 = g("f32_1t", "GB/s"), b1 = g("bf16_1t", "GB/s");
        if (f == 0 && b == 0) continue;
        std::printf("%-12s %9.1f %9.1f %10.3g %10.3g %8.2f %7.2f %7.2f | %9.1f %9.1f %8.2f %7.2f %7.2f\n", s.c_str(), f,
                    b, fr, br, fr ? br / fr : 0, bw ? f / bw : 0, bw ? b / bw : 0, f1, b1, f1 ? b1 / f1 * 2 : 0,
                    bw1 ? f1 / bw1 : 0, bw1 ? b1 / bw1 : 0);
    }
    double pe = r.seconds("Pool/empty_parallel_for");
    double g2 = r.seconds("Pool/gemv_256x256"), g1 = r.seconds("Pool/gemv_256x256_1t");
    double h2 = r.seconds("Pool/gemv_1024x1024"), h1 = r.seconds("Pool/gemv_1024x1024_1t");
    if (pe > 0)
        std::printf("\nempty parallel_for %.2f us; linear 1x256x256 f32 %.2f us (1 thread %.2f); "
                    "1x1024x1024 %.1f us (1 thread %.1f)\n",
                    pe * 1e6, g2 * 1e6, g1 * 1e6, h2 * 1e6, h1 * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
    flamingo::Executor executor;  // all hardware threads, as the command uses by default
    flamingo::Executor::Scope use(executor);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    register_all();
    Recorder rec;
    benchmark::RunSpecifiedBenchmarks(&rec);
    print_summary(rec);
    benchmark::Shutdown();
}

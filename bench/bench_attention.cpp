// Attention: the tiled online-softmax kernel (flamingo::kernels::attention)
// against the textbook version that materialises the T x T score matrix with
// Eigen (S = scale * Q K^T, mask, softmax, O = S V), both parallel over heads
// with the same thread pool.
//
// Prints Google Benchmark's table, then a summary: wall-clock and process CPU
// time of each (CPU time is the steadier figure when other jobs share the
// cores), the ratios, and the peak extra heap memory of one call (measured by
// counting operator new; Eigen's own GEMM packing buffers bypass it and are not
// included).
//
//   ./bench_attention
//   ./bench_attention --benchmark_filter=Decode
#include <benchmark/benchmark.h>

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <flamingo/core/executor.hpp>
#include <flamingo/kernels/attention.hpp>
#include <flamingo/kernels/softmax.hpp>

// ---- heap accounting: current and peak bytes obtained through operator new ----

// GCC cannot see that operator new below is the aligned_alloc that free() releases.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace heap {
std::atomic<std::size_t> current{0}, peak{0};
constexpr std::size_t kHeader = 64;  // keeps the caller's alignment up to 64 bytes

void* take(std::size_t n, std::size_t align) {
    align = std::max(align, kHeader);
    void* raw = std::aligned_alloc(align, (n + align + align - 1) / align * align);
    if (!raw) throw std::bad_alloc();
    auto* p = static_cast<char*>(raw) + align;
    reinterpret_cast<std::size_t*>(p)[-1] = n;
    reinterpret_cast<std::size_t*>(p)[-2] = align;
    const std::size_t now = current.fetch_add(n) + n;
    std::size_t pk = peak.load();
    while (now > pk && !peak.compare_exchange_weak(pk, now)) {
    }
    return p;
}

void give(void* ptr) {
    if (!ptr) return;
    auto* p = static_cast<char*>(ptr);
    const std::size_t n = reinterpret_cast<std::size_t*>(p)[-1], align = reinterpret_cast<std::size_t*>(p)[-2];
    current.fetch_sub(n);
    std::free(p - align);
}
}  // namespace heap

void* operator new(std::size_t n) { return heap::take(n, 16); }
void* operator new[](std::size_t n) { return heap::take(n, 16); }
void* operator new(std::size_t n, std::align_val_t a) { return heap::take(n, std::size_t(a)); }
void* operator new[](std::size_t n, std::align_val_t a) { return heap::take(n, std::size_t(a)); }
void operator delete(void* p) noexcept { heap::give(p); }
void operator delete[](void* p) noexcept { heap::give(p); }
void operator delete(void* p, std::size_t) noexcept { heap::give(p); }
void operator delete[](void* p, std::size_t) noexcept { heap::give(p); }
void operator delete(void* p, std::align_val_t) noexcept { heap::give(p); }
void operator delete[](void* p, std::align_val_t) noexcept { heap::give(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { heap::give(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { heap::give(p); }

namespace {

namespace fk = flamingo::kernels;

constexpr std::size_t kHeads = 16, kDim = 64;

// q, k, v as a projection writes them: [T][heads][head_dim].
struct Inputs {
    std::size_t n_q, n_kv;
    std::vector<float> q, k, v, out;

    Inputs(std::size_t nq, std::size_t nkv) : n_q(nq), n_kv(nkv) {
        std::mt19937 gen(42);
        std::normal_distribution<float> dist(0.0f, 1.0f);
        auto fill = [&](std::vector<float>& x, std::size_t rows) {
            x.resize(rows * kHeads * kDim);
            for (auto& e : x) e = dist(gen);
        };
        fill(q, n_q);
        fill(k, n_kv);
        fill(v, n_kv);
        out.assign(n_q * kHeads * kDim, 0.0f);
    }

    fk::AttentionArgs args(bool causal) {
        fk::AttentionArgs a;
        a.n_q = n_q;
        a.n_kv = n_kv;
        a.n_heads = a.n_kv_heads = kHeads;
        a.head_dim = kDim;
        a.q = q.data();
        a.k = k.data();
        a.v = v.data();
        a.out = out.data();
        a.q_row_stride = a.k_row_stride = a.v_row_stride = a.out_row_stride = kHeads * kDim;
        a.q_head_stride = a.k_head_stride = a.v_head_stride = a.out_head_stride = kDim;
        a.scale = 1.0f / std::sqrt(float(kDim));
        a.causal = causal;
        a.q_pos0 = n_kv - n_q;
        return a;
    }
};

void tiled(Inputs& in, bool causal) { fk::attention(in.args(causal)); }

// The materialised version: per head, S (n_q x n_kv) in a per-thread buffer.
void materialised(Inputs& in, bool causal) {
    using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Map = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
    using MapOut = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;
    const auto nq = Eigen::Index(in.n_q), nkv = Eigen::Index(in.n_kv);
    const Eigen::OuterStride<> rs(Eigen::Index(kHeads * kDim));
    const float scale = 1.0f / std::sqrt(float(kDim));
    const std::size_t pos0 = in.n_kv - in.n_q;
    flamingo::parallel_for(kHeads, [&](std::size_t h0, std::size_t h1) {
        std::vector<float> sbuf(in.n_q * in.n_kv);
        Eigen::Map<RowMat> S(sbuf.data(), nq, nkv);
        for (std::size_t h = h0; h < h1; ++h) {
            Map Q(in.q.data() + h * kDim, nq, Eigen::Index(kDim), rs);
            Map K(in.k.data() + h * kDim, nkv, Eigen::Index(kDim), rs);
            Map V(in.v.data() + h * kDim, nkv, Eigen::Index(kDim), rs);
            MapOut O(in.out.data() + h * kDim, nq, Eigen::Index(kDim), rs);
            S.noalias() = (Q * scale) * K.transpose();
            if (causal)
                for (Eigen::Index i = 0; i < nq; ++i)
                    for (Eigen::Index j = Eigen::Index(pos0) + i + 1; j < nkv; ++j)
                        S(i, j) = -std::numeric_limits<float>::infinity();
            fk::softmax_rows(sbuf.data(), in.n_q, in.n_kv, in.n_kv);
            O.noalias() = S * V;
        }
    });
}

using Fn = void (*)(Inputs&, bool);

// Repetitions and their minimum: the machine is shared, and the fastest
// repetition is the one least disturbed by other jobs.
double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

benchmark::internal::Benchmark* setup(benchmark::internal::Benchmark* b, benchmark::TimeUnit unit) {
    return b->UseRealTime()->MeasureProcessCPUTime()->Unit(unit)->Repetitions(5)->ComputeStatistics("min", min_of)
        ->DisplayAggregatesOnly();
}

void run(benchmark::State& st, Fn fn, std::size_t n_q, std::size_t n_kv, bool causal) {
    Inputs in(n_q, n_kv);
    fn(in, causal);  // warm up
    const std::size_t base = heap::current.load();
    heap::peak.store(base);
    fn(in, causal);
    const double extra = double(heap::peak.load() - base);
    for (auto _ : st) {
        fn(in, causal);
        benchmark::DoNotOptimize(in.out.data());
    }
    st.counters["extra_MiB"] = extra / (1024.0 * 1024.0);
    // Useful work: 2 multiply-adds per head_dim element per visible (query, key) pair.
    double pairs = double(n_q) * double(n_kv);
    if (causal) pairs -= double(n_q) * double(n_q - 1) / 2.0;
    st.counters["GFLOP/s"] =
        benchmark::Counter(4.0 * pairs * kDim * kHeads * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
    for (std::size_t T : {256, 1024, 4096})
        for (bool causal : {false, true}) {
            const std::string shape = "/T:" + std::to_string(T) + "/causal:" + std::to_string(causal);
            setup(benchmark::RegisterBenchmark(("Prefill/tiled" + shape).c_str(), run, tiled, T, T, causal),
                  benchmark::kMillisecond);
            setup(benchmark::RegisterBenchmark(("Prefill/materialised" + shape).c_str(), run, materialised, T, T,
                                              causal),
                  benchmark::kMillisecond);
        }
    for (std::size_t T : {1024, 4096}) {
        const std::string shape = "/n_kv:" + std::to_string(T);
        setup(benchmark::RegisterBenchmark(("Decode/tiled" + shape).c_str(), run, tiled, 1, T, true),
              benchmark::kMicrosecond);
        setup(benchmark::RegisterBenchmark(("Decode/materialised" + shape).c_str(), run, materialised, 1, T, true),
              benchmark::kMicrosecond);
    }
}

// Console output plus a closing table that pairs tiled with materialised runs.
class Summary : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const auto& r : runs) {
            if (r.run_type != Run::RT_Aggregate || r.aggregate_name != "min") continue;
            auto it = r.counters.find("extra_MiB");
            results_[r.run_name.str()] = {r.GetAdjustedRealTime(), r.GetAdjustedCPUTime(), r.time_unit,
                                            it == r.counters.end() ? 0.0 : double(it->second)};
        }
    }
    void Finalize() override {
        ConsoleReporter::Finalize();
        std::printf("\n%-28s %12s %12s %7s %12s %12s %7s %10s %10s\n", "16 heads, head_dim 64", "tiled wall",
                    "mat. wall", "ratio", "tiled cpu", "mat. cpu", "ratio", "tiled MiB", "mat. MiB");
        for (const auto& [name, t] : results_) {
            const auto pos = name.find("/tiled");
            if (pos == std::string::npos) continue;
            const std::string other = name.substr(0, pos) + "/materialised" + name.substr(pos + 6);
            auto m = results_.find(other);
            if (m == results_.end()) continue;
            const char* unit = benchmark::GetTimeUnitString(t.unit);
            std::string shape = name.substr(0, pos) + name.substr(pos + 6);
            shape = shape.substr(0, shape.find("/repeats"));
            std::printf("%-28s %9.3f %-2s %9.3f %-2s %6.2fx %9.3f %-2s %9.3f %-2s %6.2fx %10.2f %10.2f\n",
                        shape.c_str(),
                        t.wall, unit, m->second.wall, unit, m->second.wall / t.wall, t.cpu, unit, m->second.cpu, unit,
                        m->second.cpu / t.cpu, t.mib, m->second.mib);
        }
        std::printf("threads: %d; fastest of 5 repetitions; wall = real time, cpu = CPU time of the whole process\n",
                    flamingo::num_threads());
    }

private:
    struct Result {
        double wall, cpu;
        benchmark::TimeUnit unit;
        double mib;
    };
    std::map<std::string, Result> results_;
};

}  // namespace

int main(int argc, char** argv) {
    flamingo::Executor executor;  // all hardware threads, as the command uses by default
    flamingo::Executor::Scope use(executor);
    register_all();
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    Summary summary;
    benchmark::RunSpecifiedBenchmarks(&summary);
    benchmark::Shutdown();
    return 0;
}

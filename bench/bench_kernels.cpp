// Softmax, LayerNorm, RMSNorm and GELU throughput (GB/s, counting one read and
// one write of every element) at transformer sizes, beside plain scalar loops.
//
// "kernel" runs on the thread pool (all threads; wall time), "kernel_1t" on one
// thread and "scalar" is the straightforward loop a first implementation would
// write (both by CPU time, steadier when other jobs share the cores).
// Google Benchmark's table comes first, then a summary with the ratios.
//
//   ./bench_kernels
//   ./bench_kernels --benchmark_filter=Softmax
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <flamingo/core/executor.hpp>
#include <flamingo/kernels/activation.hpp>
#include <flamingo/kernels/norm.hpp>
#include <flamingo/kernels/softmax.hpp>

namespace {

namespace fk = flamingo::kernels;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
    std::mt19937 gen(seed);
    std::normal_distribution<float> dist(0.0f, 2.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

// ---- plain scalar loops ----

void scalar_softmax(float* x, std::size_t rows, std::size_t cols) {
    for (std::size_t r = 0; r < rows; ++r) {
        float* row = x + r * cols;
        float m = row[0];
        for (std::size_t j = 1; j < cols; ++j) m = std::max(m, row[j]);
        float sum = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) sum += (row[j] = std::exp(row[j] - m));
        const float inv = 1.0f / sum;
        for (std::size_t j = 0; j < cols; ++j) row[j] *= inv;
    }
}

void scalar_layer_norm(const float* x, float* y, std::size_t rows, std::size_t n, const float* g, const float* b) {
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        float mean = 0.0f, var = 0.0f;
        for (std::size_t i = 0; i < n; ++i) mean += xr[i];
        mean /= float(n);
        for (std::size_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
        const float rstd = 1.0f / std::sqrt(var / float(n) + 1e-5f);
        for (std::size_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * rstd * g[i] + b[i];
    }
}

void scalar_rms_norm(const float* x, float* y, std::size_t rows, std::size_t n, const float* g) {
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x + r * n;
        float* yr = y + r * n;
        float ss = 0.0f;
        for (std::size_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
        const float rs = 1.0f / std::sqrt(ss / float(n) + 1e-6f);
        for (std::size_t i = 0; i < n; ++i) yr[i] = g[i] * (xr[i] * rs);
    }
}

void scalar_gelu(float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678f));
}

// ---- benchmarks ----

enum class Impl { kernel, kernel_1t, scalar };
const char* impl_name(Impl i) { return i == Impl::kernel ? "kernel" : i == Impl::kernel_1t ? "kernel_1t" : "scalar"; }

// One thread for the kernel_1t variant: an executor of one thread for the scope.
struct ThreadScope {
    flamingo::Executor one{1};
    std::optional<flamingo::Executor::Scope> use;
    explicit ThreadScope(Impl impl) {
        if (impl == Impl::kernel_1t) use.emplace(one);
    }
};

void set_rate(benchmark::State& st, std::size_t elems) {
    st.counters["GB/s"] = benchmark::Counter(double(elems) * 8.0 * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["bytes"] = double(elems) * 8.0;  // for the summary, which uses the fastest repetition
}

double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

void BM_Softmax(benchmark::State& st, Impl impl, std::size_t rows, std::size_t cols) {
    ThreadScope threads(impl);
    const auto src = random_floats(rows * cols, 1);
    auto x = src;
    for (auto _ : st) {
        // Softmax is idempotent enough for timing: re-running on its own output
        // keeps values in [0, 1] without a copy in the loop.
        if (impl == Impl::scalar)
            scalar_softmax(x.data(), rows, cols);
        else
            fk::softmax_rows(x.data(), rows, cols, cols);
        benchmark::DoNotOptimize(x.data());
    }
    set_rate(st, rows * cols);
}

void BM_LayerNorm(benchmark::State& st, Impl impl, std::size_t rows, std::size_t n) {
    ThreadScope threads(impl);
    const auto x = random_floats(rows * n, 1);
    const auto g = random_floats(n, 2), b = random_floats(n, 3);
    std::vector<float> y(rows * n);
    for (auto _ : st) {
        if (impl == Impl::scalar)
            scalar_layer_norm(x.data(), y.data(), rows, n, g.data(), b.data());
        else
            fk::layer_norm_rows(x.data(), n, y.data(), n, rows, n, g.data(), b.data(), 1e-5f);
        benchmark::DoNotOptimize(y.data());
    }
    set_rate(st, rows * n);
}

void BM_RMSNorm(benchmark::State& st, Impl impl, std::size_t rows, std::size_t n) {
    ThreadScope threads(impl);
    const auto x = random_floats(rows * n, 1);
    const auto g = random_floats(n, 2);
    std::vector<float> y(rows * n);
    for (auto _ : st) {
        if (impl == Impl::scalar)
            scalar_rms_norm(x.data(), y.data(), rows, n, g.data());
        else
            fk::rms_norm_rows(x.data(), n, y.data(), n, rows, n, g.data(), 1e-6f);
        benchmark::DoNotOptimize(y.data());
    }
    set_rate(st, rows * n);
}

void BM_GeluErf(benchmark::State& st, Impl impl, std::size_t rows, std::size_t n) {
    ThreadScope threads(impl);
    const auto src = random_floats(rows * n, 1);
    auto x = src;
    for (auto _ : st) {
        st.PauseTiming();
        x = src;
        st.ResumeTiming();
        if (impl == Impl::scalar)
            scalar_gelu(x.data(), rows * n);
        else
            fk::gelu_erf(x.data(), rows * n);
        benchmark::DoNotOptimize(x.data());
    }
    set_rate(st, rows * n);
}

template <class Fn>
void add(const std::string& op, Fn fn, std::size_t rows, std::size_t cols) {
    for (Impl impl : {Impl::kernel, Impl::kernel_1t, Impl::scalar}) {
        const std::string name =
            op + "/" + impl_name(impl) + "/rows:" + std::to_string(rows) + "/cols:" + std::to_string(cols);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), fn, impl, rows, cols)
                      ->Unit(benchmark::kMicrosecond)
                      ->Repetitions(5)
                      ->ComputeStatistics("min", min_of)
                      ->DisplayAggregatesOnly();
        // One-thread variants are timed by the thread's CPU time, which other jobs
        // on the machine disturb least; the pooled kernel needs wall time.
        if (impl == Impl::kernel) b->UseRealTime();
    }
}

void register_all() {
    for (std::size_t n : {1024, 2048, 4096}) add("Softmax", BM_Softmax, 256, n);
    add("Softmax", BM_Softmax, 1, 50257);   // next-token distribution while decoding
    add("Softmax", BM_Softmax, 16, 50257);  // scoring a few positions
    for (std::size_t n : {1024, 2048, 4096}) add("LayerNorm", BM_LayerNorm, 256, n);
    add("LayerNorm", BM_LayerNorm, 1, 4096);  // decoding: one row
    for (std::size_t n : {1024, 2048, 4096}) add("RMSNorm", BM_RMSNorm, 256, n);
    add("RMSNorm", BM_RMSNorm, 1, 4096);
    add("GeluErf", BM_GeluErf, 256, 4096);
}

// Console output plus a table with kernel / scalar ratios.
class Summary : public benchmark::ConsoleReporter {
public:
    void ReportRuns(const std::vector<Run>& runs) override {
        ConsoleReporter::ReportRuns(runs);
        for (const auto& r : runs) {
            if (r.run_type != Run::RT_Aggregate || r.aggregate_name != "min") continue;
            auto it = r.counters.find("bytes");
            const bool wall = r.run_name.str().find("/real_time") != std::string::npos;
            const double seconds = (wall ? r.GetAdjustedRealTime() : r.GetAdjustedCPUTime()) * 1e-6;  // us
            if (it != r.counters.end() && seconds > 0) gbs_[r.run_name.str()] = double(it->second) / seconds * 1e-9;
        }
    }
    void Finalize() override {
        ConsoleReporter::Finalize();
        std::printf("\n%-34s %10s %10s %10s %9s %9s\n", "GB/s", "kernel", "kernel_1t", "scalar", "k/scalar",
                    "k1t/scalar");
        for (const auto& [name, k] : gbs_) {
            const auto pos = name.find("/kernel/");
            if (pos == std::string::npos) continue;
            std::string rest = name.substr(pos + 8);
            rest = rest.substr(0, rest.find("/real_time"));  // the one-thread variants have no such suffix
            auto other = [&](const char* impl) {
                auto it = gbs_.find(name.substr(0, pos) + "/" + impl + "/" + rest);
                return it == gbs_.end() ? 0.0 : it->second;
            };
            const double k1 = other("kernel_1t"), s = other("scalar");
            const std::string shape = name.substr(0, pos) + " " + rest.substr(0, rest.find("/repeats"));
            std::printf("%-34s %10.2f %10.2f %10.2f %8.2fx %8.2fx\n", shape.c_str(), k, k1, s, s > 0 ? k / s : 0.0,
                        s > 0 ? k1 / s : 0.0);
        }
        std::printf("threads: %d; fastest of 5 repetitions\n", flamingo::num_threads());
    }

private:
    std::map<std::string, double> gbs_;
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

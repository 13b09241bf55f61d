// The run-time kernel choice (kernels/dispatch.hpp): the detector, FLAMINGO_ISA,
// and every table this CPU runs checked against plain scalar references, so even
// a -march=native test build exercises the AVX-VNNI, AVX2 and SSE2 kernels a little. (The
// whole kernel suite runs once per set through FLAMINGO_ISA: tests/CMakeLists.txt.)
#ifdef FLAMINGO_TEST_KERNEL_TABLES

#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <flamingo/core/error.hpp>
#include <flamingo/kernels/dispatch.hpp>
#include <flamingo/kernels/gemm.hpp>
#include <flamingo/kernels/quant.hpp>

#include "kernel_test_util.hpp"

namespace fk = flamingo::kernels;
using fk::Isa;

namespace {

// What the CPU offers, asked independently of the detector (cpuid via the compiler).
bool cpu_has_avx512_set() {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
}
bool cpu_has_avx2_set() {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
bool cpu_has_avxvnni_set() { return cpu_has_avx2_set() && __builtin_cpu_supports("avxvnni"); }

// Y = X W^T + b in double; also sum |x||w| per output for the tolerance.
void reference_linear(std::size_t M, std::size_t N, std::size_t K, const std::vector<float>& X,
                      const std::vector<float>& W, const std::vector<float>& b, std::vector<double>& Y,
                      std::vector<double>& mag) {
    Y.assign(M * N, 0.0);
    mag.assign(M * N, 0.0);
    for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < N; ++j) {
            double s = b[j], m = std::fabs(b[j]);
            for (std::size_t k = 0; k < K; ++k) {
                s += double(X[i * K + k]) * double(W[j * K + k]);
                m += std::fabs(double(X[i * K + k]) * double(W[j * K + k]));
            }
            Y[i * N + j] = s;
            mag[i * N + j] = m;
        }
}

std::vector<Isa> runnable() {
    std::vector<Isa> v;
    for (int i = 0; i < fk::kIsaCount; ++i)
        if (fk::kernel_table(Isa(i))) v.push_back(Isa(i));
    return v;
}

}  // namespace

TEST_CASE("dispatch: the detected set runs on this CPU and is the best it offers") {
    const Isa best = fk::detect_isa();
    const fk::KernelTable* t = fk::kernel_table(best);
    REQUIRE(t != nullptr);
    CHECK(t->isa == best);
    // Not a chain: an AVX-512 CPU may lack AVX-VNNI (Zen 4) and the reverse (Alder Lake).
    const bool has[fk::kIsaCount] = {true, cpu_has_avx2_set(), cpu_has_avxvnni_set(),
                                     cpu_has_avx512_set() && cpu_has_avx2_set()};
    const Isa expected = has[3] ? Isa::avx512 : has[2] ? Isa::avxvnni : has[1] ? Isa::avx2 : Isa::sse2;
    CHECK(best == expected);
    fk::IsaMask mask = 0;
    for (int i = 0; i < fk::kIsaCount; ++i) {
        CAPTURE(fk::isa_name(Isa(i)));
        CHECK((fk::kernel_table(Isa(i)) != nullptr) == has[i]);
        if (has[i]) mask |= fk::isa_bit(Isa(i));
    }
    CHECK(fk::runnable_isas() == mask);
    std::string runs;
    for (int i = 0; i < fk::kIsaCount; ++i)
        if (has[i]) runs += std::string(" ") + fk::isa_name(Isa(i));
    const std::string set = std::string("kernel set: ") + t->description + "; runnable:" + runs;
    MESSAGE(set);
}

TEST_CASE("dispatch: FLAMINGO_ISA chooses the set; a set the CPU lacks falls back with a warning; a bad name is an error") {
    using fk::isa_bit;
    const fk::IsaMask all = isa_bit(Isa::sse2) | isa_bit(Isa::avx2) | isa_bit(Isa::avxvnni) | isa_bit(Isa::avx512);
    const fk::IsaMask avx2_cpu = isa_bit(Isa::sse2) | isa_bit(Isa::avx2);  // Haswell .. Zen 3
    const fk::IsaMask zen4 = avx2_cpu | isa_bit(Isa::avx512);             // AVX-512 without AVX-VNNI
    const fk::IsaMask alder = avx2_cpu | isa_bit(Isa::avxvnni);           // AVX-VNNI without AVX-512
    std::string w;
    CHECK(fk::choose_isa(all, nullptr, &w) == Isa::avx512);
    CHECK(fk::choose_isa(all, "", &w) == Isa::avx512);
    CHECK(fk::choose_isa(all, "avxvnni", &w) == Isa::avxvnni);
    CHECK(fk::choose_isa(all, "avx2", &w) == Isa::avx2);
    CHECK(fk::choose_isa(all, "sse2", &w) == Isa::sse2);
    CHECK(fk::choose_isa(zen4, nullptr, &w) == Isa::avx512);
    CHECK(fk::choose_isa(zen4, "avx2", &w) == Isa::avx2);
    CHECK(fk::choose_isa(alder, nullptr, &w) == Isa::avxvnni);
    CHECK(fk::choose_isa(alder, "avx2", &w) == Isa::avx2);
    CHECK(fk::choose_isa(avx2_cpu, "", &w) == Isa::avx2);
    CHECK(fk::choose_isa(0, nullptr, &w) == Isa::sse2);  // sse2 runs everywhere, listed or not
    CHECK(w.empty());
    // A set the CPU lacks: the highest runnable set below it, with a warning.
    CHECK(fk::choose_isa(avx2_cpu, "avx512", &w) == Isa::avx2);
    CHECK(w.find("avx512") != std::string::npos);
    CHECK(w.find("using avx2") != std::string::npos);
    w.clear();
    CHECK(fk::choose_isa(zen4, "avxvnni", &w) == Isa::avx2);  // not avx512, which is above it
    CHECK(w.find("FLAMINGO_ISA=avxvnni") != std::string::npos);
    CHECK(w.find("using avx2") != std::string::npos);
    w.clear();
    CHECK(fk::choose_isa(alder, "avx512", &w) == Isa::avxvnni);
    CHECK(w.find("using avxvnni") != std::string::npos);
    w.clear();
    CHECK(fk::choose_isa(isa_bit(Isa::sse2), "avx2", &w) == Isa::sse2);
    CHECK(!w.empty());
    w.clear();
    CHECK(fk::choose_isa(isa_bit(Isa::sse2), "avxvnni", &w) == Isa::sse2);
    CHECK(w.find("using sse2") != std::string::npos);
    CHECK_THROWS_WITH_AS(fk::choose_isa(all, "AVX512", &w), doctest::Contains("not a kernel set"), flamingo::Error);
    CHECK_THROWS_WITH_AS(fk::choose_isa(all, "avx-vnni", &w), doctest::Contains("avxvnni"), flamingo::Error);
    CHECK_THROWS_AS(fk::choose_isa(all, "avx", &w), flamingo::Error);

    // The table in use is the one the environment asked for (ctest sets FLAMINGO_ISA per run).
    const Isa chosen = fk::choose_isa(fk::runnable_isas(), std::getenv("FLAMINGO_ISA"), nullptr);
    CHECK(fk::active_kernels().isa == chosen);
#ifdef FLAMINGO_DISPATCH
    // Dispatching programs report the active table's bf16 path.
    CHECK(fk::detail::bf16_dot_enabled() == (fk::active_kernels().bf16_dot && fk::bf16_dot_switch().load()));
#endif
}

TEST_CASE("dispatch: every runnable table's products match scalar references") {
    ktest::Threads threads(2);
    for (Isa isa : runnable()) {
        const fk::KernelTable& t = *fk::kernel_table(isa);
        CAPTURE(fk::isa_name(isa));
        for (std::size_t M : {1, 3, 5, 20}) {
            const std::size_t N = 37, K = 75;
            CAPTURE(M);
            auto X = ktest::randn(M * K, 1), Wf = ktest::randn(N * K, 2), b = ktest::randn(N, 3);
            std::vector<flamingo::bf16> Wb(N * K);
            std::vector<float> Wbf(N * K);  // the bf16 weights' exact values
            for (std::size_t i = 0; i < N * K; ++i) Wb[i] = flamingo::bf16(Wf[i]), Wbf[i] = float(Wb[i]);
            std::vector<double> ref, mag;
            std::vector<float> Y(M * N);

            reference_linear(M, N, K, X, Wf, b, ref, mag);
            t.linear_f32(M, N, K, X.data(), K, Wf.data(), K, b.data(), Y.data(), N, false);
            for (std::size_t i = 0; i < M * N; ++i) CHECK(std::fabs(Y[i] - ref[i]) <= 1e-5 * mag[i]);

            // bf16 weights: f32 contract, or 2^-8 sum|x||w| when activations are rounded to bf16 (gemm.hpp).
            reference_linear(M, N, K, X, Wbf, b, ref, mag);
            t.linear_bf16(M, N, K, X.data(), K, Wb.data(), K, b.data(), Y.data(), N, false);
            const double tol = (t.bf16_dot && M > 1) ? std::ldexp(1.0, -8) : 1e-5;
            for (std::size_t i = 0; i < M * N; ++i) CHECK(std::fabs(Y[i] - ref[i]) <= tol * mag[i]);

            // q8 weights against their dequantised values: the integer path quantises the
            // activations per block of 32 (error at most max|x|/254 per element), the
            // dequantising one (more than 3 rows in the SSE2 set) does not (quant.hpp).
            fk::QBuffer qb = fk::quantize(fk::QFormat::Q8, Wf.data(), N, K, K);
            const fk::QMatrix qm = qb.view(fk::QFormat::Q8, N, K);
            std::vector<float> Wq(N * K);
            for (std::size_t r = 0; r < N; ++r) fk::dequantize_row(qm, r, Wq.data() + r * K);
            reference_linear(M, N, K, X, Wq, b, ref, mag);
            t.linear_q(M, X.data(), K, qm, b.data(), Y.data(), N, false);
            for (std::size_t i = 0; i < M; ++i)
                for (std::size_t j = 0; j < N; ++j) {
                    double bound = 1e-5 * mag[i * N + j];
                    if (isa != Isa::sse2 || M <= 3)  // the integer path
                        for (std::size_t k = 0; k < K; ++k) {
                            float amax = 0.0f;
                            for (std::size_t l = k / 32 * 32; l < std::min(K, k / 32 * 32 + 32); ++l)
                                amax = std::max(amax, std::fabs(X[i * K + l]));
                            bound += std::fabs(double(Wq[j * K + k])) * amax / 254.0 * 1.0001;
                        }
                    CHECK(std::fabs(Y[i * N + j] - ref[i * N + j]) <= bound);
                }
        }
        // One elementwise kernel and one row kernel, enough to see the table is wired right.
        auto x = ktest::randn(123, 4);
        std::vector<float> y = x;
        t.silu(y.data(), y.size());
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double r = double(x[i]) / (1.0 + std::exp(-double(x[i])));
            CHECK(std::fabs(y[i] - r) <= 1e-6 * (1.0 + std::fabs(r)));
        }
        y = x;
        t.softmax_rows(y.data(), 3, 41, 41);
        for (std::size_t r = 0; r < 3; ++r) {
            double m = -1e30, s = 0.0;
            for (std::size_t i = 0; i < 41; ++i) m = std::max(m, double(x[r * 41 + i]));
            for (std::size_t i = 0; i < 41; ++i) s += std::exp(double(x[r * 41 + i]) - m);
            for (std::size_t i = 0; i < 41; ++i)
                CHECK(std::fabs(y[r * 41 + i] - std::exp(double(x[r * 41 + i]) - m) / s) <= 1e-6);
        }
    }
}

#endif  // FLAMINGO_TEST_KERNEL_TABLES

// matmul and linear against a plain scalar reference that accumulates in double.
//
// Tolerance: |ours - ref| <= 1e-5 * sum_k |a_ik| |b_kj| (plus |bias| and |C_old|
// when present). f32 accumulation of K <= 1000 products of random signs stays
// near sqrt(K) * 2^-24 (~2e-6); dropping, duplicating or misplacing a single
// term, or rounding the activations to bf16, is off by ~1e-3 or more.
//
// bf16 weights with more than 8 rows multiply in bf16 where the CPU has
// AVX512-BF16 (gemm.hpp): there the reference is computed from the activations
// rounded to bf16 (same 1e-5 bound), and the result is also held against the
// unrounded product within 2^-8 * sum_k |a_ik| |b_kj|.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <flamingo/core/dtype.hpp>
#include <flamingo/core/error.hpp>
#include <flamingo/core/executor.hpp>
#include <flamingo/kernels/gemm.hpp>

using flamingo::bf16;
namespace fk = flamingo::kernels;

namespace {

constexpr double kTol = 1e-5;
const double kBf16Tol = std::ldexp(1.0, -8);  // activations rounded to bf16: <= 2^-9 relative each
constexpr float kSentinel = -12345.0f;  // fills the padding between rows; must survive untouched

const std::size_t kSizes[] = {1, 2, 3, 7, 15, 16, 17, 63, 65, 100, 257, 1000};

std::vector<float> random_floats(std::size_t n, std::mt19937& gen) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

// A [rows, cols] matrix with leading dimension ld, padding filled with the sentinel.
std::vector<float> padded(std::size_t rows, std::size_t cols, std::size_t ld, std::mt19937& gen) {
    std::vector<float> m(rows ? (rows - 1) * ld + cols : 0, kSentinel);
    auto r = random_floats(rows * cols, gen);
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j) m[i * ld + j] = r[i * cols + j];
    return m;
}

class ThreadCount {  // an executor of n threads for one scope
public:
    explicit ThreadCount(int n) : ex_(n) {}

private:
    flamingo::Executor ex_;
    flamingo::Executor::Scope use_{ex_};
};

struct Case {
    std::size_t M, N, K;
    bool bf16_weights = false, bias = false, accumulate = false;
    std::size_t pad = 0;  // extra elements per row in every operand
    int path = 0;         // matmul: 0 as dispatched, 1 packed K-blocks of B, 2 packed slivers of B
    std::string str() const {
        return "M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
               (bf16_weights ? " bf16" : " f32") + (bias ? " bias" : "") + (accumulate ? " accumulate" : "") +
               " pad=" + std::to_string(pad) + " path=" + std::to_string(path) + " threads=" + std::to_string(flamingo::num_threads());
    }
};

// Compares C (with padding) against ref/mag; returns the worst error relative to mag.
double compare(const Case& c, const std::vector<float>& C, std::size_t ldc, const std::vector<double>& ref,
               const std::vector<double>& mag, double tol = kTol) {
    double worst = 0;
    std::size_t bad = 0;
    for (std::size_t i = 0; i < c.M; ++i) {
        for (std::size_t j = 0; j < c.N; ++j) {
            double err = std::fabs(double(C[i * ldc + j]) - ref[i * c.N + j]);
            double rel = err / (mag[i * c.N + j] + 1e-30);
            if (!(rel <= tol) && bad++ < 3)
                FAIL_CHECK(c.str(), ": C[", i, ",", j, "] = ", C[i * ldc + j], ", expected ", ref[i * c.N + j]);
            if (rel > worst) worst = rel;
        }
        if (i + 1 < c.M)
            for (std::size_t j = c.N; j < ldc; ++j)
                if (C[i * ldc + j] != kSentinel && bad++ < 3) FAIL_CHECK(c.str(), ": padding of row ", i, " written");
    }
    CHECK_MESSAGE(bad == 0, c.str(), ": ", bad, " wrong elements");
    return worst;
}

// Whether linear() multiplies these operands in bf16 (rounding the activations).
bool bf16_products(const Case& c) { return c.bf16_weights && c.M > 1 && fk::detail::bf16_dot_enabled(); }

// x_chunk_bytes > 0 calls the packed weight path directly with that chunk size:
// widening bf16 weights, or (dot, bf16 weights, AVX512-BF16 only) multiplying in bf16.
template <class W>
double run_linear(const Case& c, std::mt19937& gen, std::size_t x_chunk_bytes = 0, bool dot = false) {
    const std::size_t ldx = c.K + c.pad, ldw = c.K + c.pad, ldy = c.N + c.pad;
    auto X = padded(c.M, c.K, ldx, gen);
    auto wf = padded(c.N, c.K, ldw, gen);
    std::vector<W> w(wf.size());
    for (std::size_t i = 0; i < wf.size(); ++i) w[i] = W(wf[i]);
    auto bias = random_floats(c.N, gen);
    auto Y = padded(c.M, c.N, ldy, gen);

    const bool rounded = x_chunk_bytes ? dot : bf16_products(c);
    auto reference = [&](bool round_x, std::vector<double>& ref, std::vector<double>& mag) {
        ref.assign(c.M * c.N, 0.0), mag.assign(c.M * c.N, 0.0);
        for (std::size_t i = 0; i < c.M; ++i)
            for (std::size_t j = 0; j < c.N; ++j) {
                double s = 0, a = 0;
                for (std::size_t k = 0; k < c.K; ++k) {
                    float x = X[i * ldx + k];
                    if (round_x) x = float(bf16(x));
                    double p = double(x) * double(float(w[j * ldw + k]));
                    s += p;
                    a += std::fabs(p);
                }
                if (c.bias) s += bias[j], a += std::fabs(bias[j]);
                if (c.accumulate) s += Y[i * ldy + j], a += std::fabs(Y[i * ldy + j]);
                ref[i * c.N + j] = s;
                mag[i * c.N + j] = a;
            }
    };
    std::vector<double> ref, mag, exact_ref, exact_mag;
    reference(rounded, ref, mag);
    if (rounded) reference(false, exact_ref, exact_mag);
    if (x_chunk_bytes && dot) {
#if defined(__AVX512BF16__)
        if constexpr (std::is_same_v<W, bf16>)
            fk::detail::gemm_panels<fk::detail::WeightPairs, fk::detail::Bf16Dot>(
                c.M, c.N, c.K, X.data(), ldx, fk::detail::WeightPairs{w.data(), ldw}, Y.data(), ldy, c.accumulate,
                c.bias ? bias.data() : nullptr, x_chunk_bytes);
#endif
    } else if (x_chunk_bytes) {
        fk::detail::gemm_panels(c.M, c.N, c.K, X.data(), ldx, fk::detail::WeightRows<W>{w.data(), ldw}, Y.data(),
                                ldy, c.accumulate, c.bias ? bias.data() : nullptr, x_chunk_bytes);
    } else {
        fk::linear(c.M, c.N, c.K, X.data(), ldx, w.data(), ldw, c.bias ? bias.data() : nullptr, Y.data(), ldy,
                   c.accumulate);
    }
    if (rounded) compare(c, Y, ldy, exact_ref, exact_mag, kBf16Tol);
    return compare(c, Y, ldy, ref, mag);
}

double run_matmul(const Case& c, std::mt19937& gen) {
    const std::size_t lda = c.K + c.pad, ldb = c.N + c.pad, ldc = c.N + c.pad;
    auto A = padded(c.M, c.K, lda, gen), B = padded(c.K, c.N, ldb, gen), C = padded(c.M, c.N, ldc, gen);
    std::vector<double> ref(c.M * c.N), mag(c.M * c.N);
    for (std::size_t i = 0; i < c.M; ++i)
        for (std::size_t j = 0; j < c.N; ++j) {
            double s = 0, a = 0;
            for (std::size_t k = 0; k < c.K; ++k) {
                double p = double(A[i * lda + k]) * double(B[k * ldb + j]);
                s += p;
                a += std::fabs(p);
            }
            if (c.accumulate) s += C[i * ldc + j], a += std::fabs(C[i * ldc + j]);
            ref[i * c.N + j] = s;
            mag[i * c.N + j] = a;
        }
    if (c.path == 1)
        fk::detail::gemm_packed(c.M, c.N, c.K, A.data(), lda, fk::detail::BRowMajor{B.data(), ldb}, C.data(), ldc,
                                c.accumulate, nullptr);
    else if (c.path == 2)
        fk::detail::gemm_panels(c.M, c.N, c.K, A.data(), lda, fk::detail::RowMajorPanels{B.data(), ldb}, C.data(),
                                ldc, c.accumulate, nullptr);
    else
        fk::matmul(c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C.data(), ldc, c.accumulate);
    return compare(c, C, ldc, ref, mag);
}

double run_case(const Case& c, bool is_linear, std::mt19937& gen) {
    if (!is_linear) return run_matmul(c, gen);
    return c.bf16_weights ? run_linear<bf16>(c, gen) : run_linear<float>(c, gen);
}

// Every (M, N, K) from the awkward sizes up to 3e6 multiply-adds, each with one
// of the 16 option combinations (cycled, so each combination meets every path).
void sweep(bool is_linear) {
    for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        std::mt19937 gen(threads);
        double worst = 0;
        unsigned v = 0;
        for (std::size_t M : kSizes)
            for (std::size_t N : kSizes)
                for (std::size_t K : kSizes) {
                    if (M * N * K > 3000000) continue;
                    Case c{M, N, K};
                    c.bf16_weights = v & 1;
                    c.bias = is_linear && (v & 2);
                    c.accumulate = v & 4;
                    c.pad = (v & 8) ? 1 + v % 5 : 0;
                    if (!is_linear && M > 8) c.path = 1 + int(v & 1);  // both packed paths of matmul
                    v = v * 7 + 3;  // an odd multiplier walks all 16 combinations in different orders
                    worst = std::max(worst, run_case(c, is_linear, gen));
                }
        MESSAGE((is_linear ? "linear" : "matmul"), " sweep, threads=", threads, ": worst error ", worst,
                " x sum|a||b|");
    }
}

}  // namespace

TEST_CASE("linear matches the scalar reference at awkward sizes") { sweep(true); }

TEST_CASE("matmul matches the scalar reference at awkward sizes") { sweep(false); }

TEST_CASE("every option combination on each kernel path") {
    // M picks the path: 1 (GEMV), 2..8 (few rows), 9+ (packed GEMM; 200 spans
    // several M blocks); N = 3100 crosses the packed GEMM's N block.
    std::mt19937 gen(7);
    for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        for (std::size_t M : {1, 2, 5, 8, 9, 33, 200})
            for (std::size_t N : {1, 17, 100, 3100})
                for (std::size_t K : {1, 31, 300}) {
                    if (M * N * K > 2000000) continue;
                    for (unsigned v = 0; v < 16; ++v) {
                        Case c{M, N, K, bool(v & 1), bool(v & 2), bool(v & 4), (v & 8) ? 3u : 0u};
                        run_case(c, true, gen);
                        if (!c.bf16_weights && !c.bias)
                            for (int path : {0, 1, 2})
                                if (path == 0 || M > 8) {
                                    c.path = path;
                                    run_case(c, false, gen);
                                }
                    }
                }
    }
}

TEST_CASE("the weight path over several chunks of rows") {
    // Normally a chunk of X is 8 MiB; tiny chunks exercise the loop over chunks
    // (one and a few register-block rows per chunk, a short last chunk).
    std::mt19937 gen(5);
    for (int threads : {1, 2}) {
        ThreadCount tc(threads);
        for (std::size_t chunk : {std::size_t(1), std::size_t(100000)})
            for (std::size_t M : {9, 50, 100}) {
                run_linear<float>(Case{M, 70, 300, false, true, false, 2}, gen, chunk);
                run_linear<bf16>(Case{M, 70, 300, true, false, true, 0}, gen, chunk);
                if (fk::detail::kBf16Dot) run_linear<bf16>(Case{M, 70, 301, true, true, true, 3}, gen, chunk, true);
            }
    }
}

TEST_CASE("large products") {
    std::mt19937 gen(11);
    ThreadCount tc(2);
    run_case(Case{257, 1000, 1000, true, true, false, 0}, true, gen);
    run_case(Case{1000, 257, 1000, false, false, true, 5}, false, gen);
    run_case(Case{20, 3100, 700, false, false, false, 1}, false, gen);  // B over 8 MiB: K-blocks of B
    run_case(Case{8, 4096, 1000, true, true, true, 2}, true, gen);
}

TEST_CASE("bf16 weights keep the activations exact up to 8 rows, and beyond unless multiplying in bf16") {
    // x = 1 + 2^-12 is not representable in bf16 (8 significant bits) but every
    // partial sum of up to 64 of them is exact in f32; with weights 1.0 each
    // output is 64 * x exactly, which rounding x to bf16 turns into 64.
    const float x = 1.0f + std::ldexp(1.0f, -12);
    for (std::size_t M : {1, 4, 8, 9, 64}) {
        CAPTURE(M);
        const std::size_t N = 33, K = 64;
        std::vector<float> X(M * K, x), Y(M * N);
        std::vector<bf16> w(N * K, bf16(1.0f));
        fk::linear(M, N, K, X.data(), K, w.data(), K, nullptr, Y.data(), N);
        const bool rounds = M > 1 && fk::detail::bf16_dot_enabled();
        for (float y : Y) REQUIRE(y == (rounds ? 64.0f : 64.0f * x));
    }
}

TEST_CASE("bf16 products: threads, and the widening path, in one binary") {
    // Each output's sum runs in the same order whatever the thread count, so 1 and
    // 2 threads agree bit for bit; the widening path (what FLAMINGO_BF16_GEMM=widen
    // selects) keeps the f32 contract on the same operands.
    if (!fk::detail::bf16_dot_enabled()) return;  // not compiled in, or FLAMINGO_BF16_GEMM=widen
    const std::size_t M = 37, N = 150, K = 1001;  // no dimension a multiple of a tile; K odd
    std::mt19937 gen(13);
    auto X = random_floats(M * K, gen), wf = random_floats(N * K, gen), bias = random_floats(N, gen);
    std::vector<bf16> w(N * K);
    for (std::size_t i = 0; i < N * K; ++i) w[i] = bf16(wf[i]);
    auto product = [&](int threads) {
        ThreadCount tc(threads);
        std::vector<float> Y(M * N, 0.5f);
        fk::linear(M, N, K, X.data(), K, w.data(), K, bias.data(), Y.data(), N, true);
        return Y;
    };
    auto y1 = product(1), y2 = product(2);
    CHECK(y1 == y2);
    std::vector<float> yw(M * N, 0.5f);
    fk::detail::gemm_panels(M, N, K, X.data(), K, fk::detail::WeightRows<bf16>{w.data(), K}, yw.data(), N, true,
                            bias.data());
    double worst_dot = 0, worst_widen = 0;
    for (std::size_t i = 0; i < M; ++i)
        for (std::size_t j = 0; j < N; ++j) {
            double s = 0.5 + bias[j], a = 0.5 + std::fabs(bias[j]);
            for (std::size_t k = 0; k < K; ++k) {
                double p = double(X[i * K + k]) * double(float(w[j * K + k]));
                s += p, a += std::fabs(p);
            }
            worst_dot = std::max(worst_dot, std::fabs(y1[i * N + j] - s) / a);
            worst_widen = std::max(worst_widen, std::fabs(yw[i * N + j] - s) / a);
        }
    MESSAGE("vs the unrounded product: bf16 products ", worst_dot, ", widened ", worst_widen, " x sum|a||b|");
    CHECK(worst_dot <= kBf16Tol);
    CHECK(worst_widen <= kTol);
    CHECK(worst_dot > worst_widen);  // the bf16 path did run (rounding shows)
}

TEST_CASE("empty products") {
    std::vector<float> C = {1, 2, 3, 4, 5, 6}, bias = {10, 20, 30};
    SUBCASE("K = 0 gives the bias, or leaves C alone plus the bias when accumulating") {
        fk::linear<float>(2, 3, 0, nullptr, 0, nullptr, 0, bias.data(), C.data(), 3, false);
        CHECK(C == std::vector<float>{10, 20, 30, 10, 20, 30});
        fk::linear<bf16>(2, 3, 0, nullptr, 0, nullptr, 0, bias.data(), C.data(), 3, true);
        CHECK(C == std::vector<float>{20, 40, 60, 20, 40, 60});
        fk::matmul(2, 3, 0, nullptr, 0, nullptr, 3, C.data(), 3, true);
        CHECK(C == std::vector<float>{20, 40, 60, 20, 40, 60});
        fk::matmul(2, 3, 0, nullptr, 0, nullptr, 3, C.data(), 3, false);
        CHECK(C == std::vector<float>(6, 0.0f));
    }
    SUBCASE("M = 0 or N = 0 touches nothing") {
        fk::matmul(0, 3, 4, nullptr, 4, nullptr, 3, nullptr, 3);
        fk::linear<float>(2, 0, 4, nullptr, 4, nullptr, 4, nullptr, nullptr, 0);
        CHECK(C == std::vector<float>{1, 2, 3, 4, 5, 6});
    }
}

TEST_CASE("bad operands are errors that name the operand") {
    std::vector<float> a(64), b(64), c(64);
    auto message = [](auto&& f) {
        try {
            f();
        } catch (const flamingo::Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    CHECK(message([&] { fk::matmul(2, 4, 4, a.data(), 3, b.data(), 4, c.data(), 4); }).find("A has shape [2, 4]") !=
          std::string::npos);
    CHECK(message([&] { fk::matmul(2, 4, 4, a.data(), 4, b.data(), 2, c.data(), 4); }).find("B") != std::string::npos);
    CHECK(message([&] { fk::linear(2, 4, 4, a.data(), 4, b.data(), 4, nullptr, c.data(), 3); }).find("Y") !=
          std::string::npos);
    CHECK(message([&] { fk::linear<float>(2, 4, 4, a.data(), 4, nullptr, 4, nullptr, c.data(), 4); }).find("W is null") !=
          std::string::npos);
}

TEST_CASE("nested inside parallel_for the products run serially and stay correct") {
    ThreadCount tc(2);
    std::mt19937 gen(3);
    const std::size_t M = 40, N = 70, K = 50, parts = 4;
    auto X = random_floats(parts * M * K, gen), W = random_floats(N * K, gen);
    std::vector<float> Y(parts * M * N), R(parts * M * N);
    flamingo::parallel_for(parts, [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
            fk::linear(M, N, K, &X[p * M * K], K, W.data(), K, nullptr, &Y[p * M * N], N);
            fk::linear(1, N, K, &X[p * M * K], K, W.data(), K, nullptr, &R[p * M * N], N);  // GEMV path too
        }
    });
    for (std::size_t p = 0; p < parts; ++p)
        for (std::size_t i = 0; i < M; ++i)
            for (std::size_t j = 0; j < N; ++j) {
                double s = 0, a = 0;
                for (std::size_t k = 0; k < K; ++k) {
                    s += double(X[(p * M + i) * K + k]) * W[j * K + k];
                    a += std::fabs(double(X[(p * M + i) * K + k]) * W[j * K + k]);
                }
                REQUIRE(std::fabs(Y[(p * M + i) * N + j] - s) <= kTol * a);
                if (i == 0) REQUIRE(std::fabs(R[p * M * N + j] - s) <= kTol * a);
            }
}

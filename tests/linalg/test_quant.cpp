// q8/q4 weights: quantisation round trips, and linear_q against plain scalar
// references written here from the format description in kernels/quant.hpp.
//
// The integer reference quantises the activations by the documented rule, takes
// each block's integer dot product and sums the terms in double. The kernel
// must agree within 1e-5 * sum of |terms| (f32 combination of exact integers);
// a wrong nibble, block or scale is off by far more.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <flamingo/core/error.hpp>
#include <flamingo/core/executor.hpp>
#include <flamingo/kernels/quant.hpp>
#if defined(FLAMINGO_DISPATCH)
#include <flamingo/kernels/dispatch.hpp>
#endif

namespace fk = flamingo::kernels;
using fk::QFormat;

namespace {

const std::size_t kCols[] = {1, 5, 31, 32, 33, 64, 95, 96, 100, 128, 257, 588};
const std::size_t kRows[] = {1, 3, 16, 17, 70};

std::vector<float> random_floats(std::size_t n, std::mt19937& gen, float scale = 1.0f) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(gen);
    return v;
}

// Element k of row r, read straight from the documented layout.
int stored_value(const fk::QMatrix& m, std::size_t r, std::size_t k) {
    const std::uint8_t* p = static_cast<const std::uint8_t*>(m.data) + r * m.row_bytes();
    if (m.format == QFormat::Q8) return static_cast<const std::int8_t*>(m.data)[r * m.padded_cols() + k];
    const std::size_t b = k / 32, i = k % 32;
    const std::uint8_t byte = p[b * 16 + i % 16];
    return i < 16 ? byte & 15 : byte >> 4;
}

double ref_weight(const fk::QMatrix& m, std::size_t r, std::size_t k) {
    const std::size_t b = k / 32;
    const double d = float(m.scales[r * m.blocks() + b]);
    const double v = stored_value(m, r, k);
    return m.format == QFormat::Q8 ? d * v : d * v + float(m.offsets[r * m.blocks() + b]);
}

// |scale * q| + |offset|: float rounding of the dequantised value is relative to
// its terms, not to the sum (q4's scale * q + offset may cancel), and whether
// the sum is fused (FMA) depends on the build.
double ref_weight_terms(const fk::QMatrix& m, std::size_t r, std::size_t k) {
    const std::size_t b = k / 32;
    const double dv = std::fabs(double(float(m.scales[r * m.blocks() + b])) * stored_value(m, r, k));
    return m.format == QFormat::Q8 ? dv : dv + std::fabs(double(float(m.offsets[r * m.blocks() + b])));
}

// y = W x by the documented GEMV rule, in double; bound = 1e-5 * sum over elements of |terms|.
void ref_gemv(const fk::QMatrix& m, const float* x, std::vector<double>& y, std::vector<double>& bound) {
    const std::size_t K = m.cols, nb = m.blocks();
    std::vector<int> xq(nb * 32, 0);
    std::vector<double> xd(nb);
    for (std::size_t b = 0; b < nb; ++b) {
        float amax = 0;
        for (std::size_t k = b * 32; k < std::min(K, b * 32 + 32); ++k) amax = std::max(amax, std::fabs(x[k]));
        const float d = amax / 127.0f;
        xd[b] = d;
        for (std::size_t k = b * 32; k < std::min(K, b * 32 + 32); ++k)
            xq[k] = d > 0 ? int(std::clamp(std::nearbyint(x[k] / d), -127.0f, 127.0f)) : 0;
    }
    y.assign(m.rows, 0.0);
    bound.assign(m.rows, 0.0);
    for (std::size_t r = 0; r < m.rows; ++r)
        for (std::size_t b = 0; b < nb; ++b) {
            long dot = 0, sum = 0, absdot = 0, abssum = 0;
            for (std::size_t k = b * 32; k < b * 32 + 32; ++k) {
                const long p = long(k < K ? stored_value(m, r, k) : 0) * xq[k];
                dot += p, sum += xq[k];
                absdot += std::labs(p), abssum += std::labs(xq[k]);
            }
            const double dw = float(m.scales[r * nb + b]), mw = m.format == QFormat::Q4 ? float(m.offsets[r * nb + b]) : 0.0;
            y[r] += dw * xd[b] * double(dot) + mw * xd[b] * double(sum);
            // The kernels add a block's partial dots (a few elements each) in
            // float, so rounding is relative to the elements' magnitudes, not
            // to the block's (possibly cancelled) total.
            bound[r] += 1e-5 * (std::fabs(dw) * xd[b] * double(absdot) + std::fabs(mw) * xd[b] * double(abssum)) + 1e-30;
        }
}

}  // namespace

TEST_CASE("quantize: q8 and q4 round trips stay within half a step of each block, q4 no worse than min/max") {
    std::mt19937 gen(7);
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (std::size_t K : kCols) {
            const std::size_t N = 5;
            auto w = random_floats(N * K, gen, 0.05f);
            if (K > 2) w[1] = 0.0f, w[2] = 3.0f;  // an outlier
            auto buf = fk::quantize(f, w.data(), N, K, K);
            fk::QMatrix m = buf.view(f, N, K);
            std::vector<float> row(K);
            for (std::size_t r = 0; r < N; ++r) {
                fk::dequantize_row(m, r, row.data());
                for (std::size_t k = 0; k < K; ++k) {
                    const std::size_t b = k / 32;
                    const double step = float(m.scales[r * m.blocks() + b]);
                    CAPTURE(fk::qformat_name(f));
                    CAPTURE(K);
                    CAPTURE(k);
                    const int v = stored_value(m, r, k);
                    // Within half a step plus the f16 rounding of d and m
                    // (2^-11 of the weight, where a block's extreme is
                    // clamped or a block is constant), except q4 values beyond
                    // the block's range [m, m + 15 d] (clamped to its nearest end).
                    const bool clamped = f == QFormat::Q4 && ((v == 0 && w[r * K + k] < row[k]) ||
                                                              (v == 15 && w[r * K + k] > row[k]));
                    if (!clamped)
                        REQUIRE(std::fabs(row[k] - w[r * K + k]) <=
                                0.5 * step * (1 + 1e-5) + (std::ldexp(1.0, -11) + 1e-7) * std::fabs(w[r * K + k]));
                    REQUIRE(std::fabs(row[k] - ref_weight(m, r, k)) <= 1e-6 * ref_weight_terms(m, r, k) + 1e-30);
                    if (f == QFormat::Q8) REQUIRE((v >= -127 && v <= 127));
                    else REQUIRE((v >= 0 && v <= 15));
                }
                // The padding of the last block is zero.
                for (std::size_t k = K; k < m.padded_cols(); ++k) REQUIRE(stored_value(m, r, k) == 0);
                // q4: no block's squared error exceeds that of min/max (d = (max - min) / 15, m = min,
                // both rounded to f16 as stored).
                if (f == QFormat::Q4)
                    for (std::size_t k0 = 0; k0 < K; k0 += 32) {
                        const std::size_t n = std::min<std::size_t>(32, K - k0);
                        const float* x = w.data() + r * K + k0;
                        const float lo = *std::min_element(x, x + n), hi = *std::max_element(x, x + n);
                        const double d = float(flamingo::f16((hi - lo) / 15.0f)), lo16 = float(flamingo::f16(lo));
                        double got = 0, minmax = 0;
                        for (std::size_t i = 0; i < n; ++i) {
                            const double mm = d > 0 ? lo16 + d * std::clamp(std::nearbyint((x[i] - lo16) / d), 0.0, 15.0) : lo16;
                            minmax += (mm - x[i]) * (mm - x[i]);
                            got += (row[k0 + i] - double(x[i])) * (row[k0 + i] - double(x[i]));
                        }
                        CAPTURE(k0);
                        REQUIRE(got <= minmax * (1 + 1e-4) + 1e-12);
                    }
            }
        }
}

TEST_CASE("quantize: all-zero blocks are exact, constant blocks within the f16 rounding of their value") {
    std::vector<float> w(96, 0.0f);
    for (std::size_t k = 32; k < 64; ++k) w[k] = -0.25f;  // a power of two: exact in f16 as q4's offset
    for (std::size_t k = 64; k < 96; ++k) w[k] = 0.1f;    // not: 0.1 * (1 - 2^-13) or so
    for (QFormat f : {QFormat::Q8, QFormat::Q4}) {
        CAPTURE(fk::qformat_name(f));
        auto buf = fk::quantize(f, w.data(), 1, 96, 96);
        std::vector<float> row(96);
        fk::dequantize_row(buf.view(f, 1, 96), 0, row.data());
        for (std::size_t k = 0; k < 96; ++k) {
            CAPTURE(k);
            if (w[k] == 0.0f || (f == QFormat::Q4 && w[k] == -0.25f)) CHECK(row[k] == w[k]);
            else CHECK(std::fabs(row[k] - w[k]) <= std::ldexp(std::fabs(w[k]), -11));
        }
        CHECK(row[70] != 0.1f);  // (else the case above tests nothing)
    }
}

TEST_CASE("quantize: weights beyond what f16 scales and offsets hold are refused, naming the first") {
    // Just below each format's bound quantises (the largest weight within 2^-11 of itself);
    // at it, or a NaN, is an error naming the row and column of the first such weight.
    for (auto [f, limit] : {std::pair{QFormat::Q8, 8.0e6f}, std::pair{QFormat::Q4, 32768.0f}}) {
        CAPTURE(fk::qformat_name(f));
        std::vector<float> w(2 * 40, 0.5f);
        w[45] = std::nextafter(limit, 0.0f);
        auto buf = fk::quantize(f, w.data(), 2, 40, 40);
        std::vector<float> row(40);
        fk::dequantize_row(buf.view(f, 2, 40), 1, row.data());
        CHECK(std::fabs(row[5] - w[45]) <= std::ldexp(w[45], -11));
        for (float bad : {limit, -limit, std::numeric_limits<float>::quiet_NaN()}) {
            w[45] = bad;
            w[47] = limit;  // a later one is not the one named
            CHECK_THROWS_WITH_AS(fk::quantize(f, w.data(), 2, 40, 40), doctest::Contains("weight at [1, 5]"),
                                 flamingo::Error);
            w[47] = 0.5f;
        }
    }
}

TEST_CASE("linear_q one row: both GEMV paths match the scalar integer reference on odd shapes") {
    std::mt19937 gen(11);
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (std::size_t K : kCols)
            for (std::size_t N : kRows) {
                CAPTURE(fk::qformat_name(f));
                CAPTURE(K);
                CAPTURE(N);
                auto w = random_floats(N * K, gen, 0.05f);
                auto x = random_floats(K, gen);
                if (K > 3) x[3] = 0.0f;
                auto buf = fk::quantize(f, w.data(), N, K, K);
                fk::QMatrix m = buf.view(f, N, K);
                std::vector<double> ref, bound;
                ref_gemv(m, x.data(), ref, bound);

                fk::detail::QActivations a;
                a.prepare(x.data(), K, f);
                std::vector<float> y1(N), y2(N);
                fk::detail::gemv_q_rows_portable(m, &a, 1, 0, N, y1.data(), N);
                fk::detail::gemv_q_rows(m, &a, 1, 0, N, y2.data(), N);
                for (std::size_t r = 0; r < N; ++r) {
                    REQUIRE(std::fabs(y1[r] - ref[r]) <= bound[r]);
                    REQUIRE(std::fabs(y2[r] - ref[r]) <= bound[r]);
                }
                // Through the public entry point, with bias and accumulate.
                std::vector<float> bias = random_floats(N, gen), y(N, 1.0f);
                fk::linear_q(1, x.data(), K, m, bias.data(), y.data(), N, true);
                for (std::size_t r = 0; r < N; ++r)
                    REQUIRE(std::fabs(y[r] - (ref[r] + bias[r] + 1.0)) <= bound[r] + 1e-6 * (std::fabs(bias[r]) + 1));
            }
}

TEST_CASE("linear_q one row: close to the float product within the quantisation error") {
    std::mt19937 gen(3);
    const std::size_t N = 64, K = 256;
    auto w = random_floats(N * K, gen, 0.05f);
    auto x = random_floats(K, gen);
    for (QFormat f : {QFormat::Q8, QFormat::Q4}) {
        auto buf = fk::quantize(f, w.data(), N, K, K);
        std::vector<float> y(N);
        fk::linear_q(1, x.data(), K, buf.view(f, N, K), nullptr, y.data(), N);
        double err = 0, norm = 0;
        for (std::size_t r = 0; r < N; ++r) {
            double exact = 0;
            for (std::size_t k = 0; k < K; ++k) exact += double(w[r * K + k]) * x[k];
            err += (y[r] - exact) * (y[r] - exact);
            norm += exact * exact;
        }
        const double rel = std::sqrt(err / norm);
        MESSAGE(std::string(fk::qformat_name(f)), " GEMV relative RMS error vs f32: ", rel);
        CHECK(rel < (f == QFormat::Q8 ? 0.01 : 0.12));
    }
}

// Whether linear_q multiplies more than 3 rows as integers here (AVX512-VNNI
// or AVX2) or by dequantised weights (quant.hpp's contracts).
bool integer_many_rows() {
#if defined(FLAMINGO_DISPATCH)
    return fk::active_kernels().isa != fk::Isa::sse2;
#else
    return fk::detail::kQIntegerManyRows;
#endif
}

TEST_CASE("linear_q many rows: each row matches the scalar reference of its path, threaded or not") {
    // More rows than one pass of the kernels takes (8 with VNNI or AVX2, 3 otherwise),
    // with a last group of a different size; K = 4100 makes each thread's
    // weight rows more than one panel. Strided X and Y, bias and accumulate.
    // With VNNI or AVX2, the integer reference; otherwise the dequantised weights times
    // the f32 activations (1e-5 of the sum of |terms|).
    const bool integer = integer_many_rows();
    MESSAGE("many rows: ", std::string(integer ? "integer kernels" : "dequantised weights"));
    std::mt19937 gen(5);
    struct Shape {
        std::size_t K, N;
    };
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (std::size_t M : {9u, 17u, 64u})
            for (Shape sh : {Shape{33, 37}, Shape{95, 37}, Shape{300, 37}, Shape{4100, 100}}) {
                const std::size_t K = sh.K, N = sh.N, ldx = K + 3, ldy = N + 5;
                CAPTURE(fk::qformat_name(f));
                CAPTURE(M);
                CAPTURE(K);
                CAPTURE(N);
                auto w = random_floats(N * K, gen, 0.05f);
                auto x = random_floats(M * ldx, gen);
                auto bias = random_floats(N, gen);
                auto buf = fk::quantize(f, w.data(), N, K, K);
                fk::QMatrix m = buf.view(f, N, K);
                std::vector<std::vector<double>> ref(M), bound(M);
                for (std::size_t i = 0; i < M; ++i) {
                    if (integer) {
                        ref_gemv(m, x.data() + i * ldx, ref[i], bound[i]);
                        continue;
                    }
                    ref[i].assign(N, 0.0), bound[i].assign(N, 0.0);
                    for (std::size_t r = 0; r < N; ++r)
                        for (std::size_t k = 0; k < K; ++k) {
                            ref[i][r] += ref_weight(m, r, k) * x[i * ldx + k];
                            bound[i][r] += 1e-5 * std::fabs(ref_weight(m, r, k) * x[i * ldx + k]);
                        }
                }
                for (bool acc : {false, true}) {
                    std::vector<float> y1(M * ldy, 1.0f), y2(M * ldy, 1.0f);
                    const float* b = acc ? bias.data() : nullptr;
                    fk::linear_q(M, x.data(), ldx, m, b, y1.data(), ldy, acc);
                    {
                        flamingo::Executor ex(2);
                        flamingo::Executor::Scope use(ex);
                        fk::linear_q(M, x.data(), ldx, m, b, y2.data(), ldy, acc);
                    }
                    for (std::size_t i = 0; i < M; ++i)
                        for (std::size_t r = 0; r < ldy; ++r) {
                            if (r >= N) {  // the gap between rows of Y is not written
                                REQUIRE(y1[i * ldy + r] == 1.0f);
                                continue;
                            }
                            const double add = acc ? bias[r] + 1.0 : 0.0;
                            REQUIRE(std::fabs(y1[i * ldy + r] - (ref[i][r] + add)) <=
                                    bound[i][r] + 1e-6 * (std::fabs(add) + 1));
                        }
                    REQUIRE(y2 == y1);  // each output is computed the same way whatever the split
                }
            }
}

TEST_CASE("linear_q few rows: every activation row matches the scalar integer reference") {
    // Row counts around the kernels' rows per pass (4, 2, 1 weight rows for
    // 1-2, 3-4, 5-8 activation rows), odd block counts and more than 16 blocks.
    std::mt19937 gen(13);
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (std::size_t M : {2u, 3u, 4u, 5u, 8u})
            for (std::size_t K : {5u, 33u, 95u, 160u, 588u, 1030u})
                for (std::size_t N : {1u, 3u, 6u, 17u}) {
                    CAPTURE(fk::qformat_name(f));
                    CAPTURE(M);
                    CAPTURE(K);
                    CAPTURE(N);
                    auto w = random_floats(N * K, gen, 0.05f);
                    auto x = random_floats(M * K, gen);
                    auto bias = random_floats(N, gen);
                    auto buf = fk::quantize(f, w.data(), N, K, K);
                    fk::QMatrix m = buf.view(f, N, K);
                    std::vector<std::vector<double>> ref(M), bound(M);
                    std::vector<fk::detail::QActivations> a(M);
                    for (std::size_t i = 0; i < M; ++i) {
                        ref_gemv(m, x.data() + i * K, ref[i], bound[i]);
                        a[i].prepare(x.data() + i * K, K, f);
                    }
                    auto check_rows = [&](const std::vector<float>& y, double add) {
                        for (std::size_t i = 0; i < M; ++i)
                            for (std::size_t r = 0; r < N; ++r) {
                                const double b = add ? bias[r] + add : 0.0;
                                REQUIRE(std::fabs(y[i * N + r] - (ref[i][r] + b)) <=
                                        bound[i][r] + (add ? 1e-6 * (std::fabs(b) + 1) : 0.0));
                            }
                    };
                    std::vector<float> y(M * N);
                    fk::detail::gemv_q_rows_portable(m, a.data(), M, 0, N, y.data(), N);
                    check_rows(y, 0);
                    fk::detail::gemv_q_rows(m, a.data(), M, 0, N, y.data(), N);
                    check_rows(y, 0);
                    if (M <= 3 || integer_many_rows()) {  // the integer path through the public entry point
                        std::fill(y.begin(), y.end(), 1.0f);
                        fk::linear_q(M, x.data(), K, m, bias.data(), y.data(), N, true);
                        check_rows(y, 1.0);
                    }
#if defined(FLAMINGO_DISPATCH)
                    // The AVX-512 (always with VNNI), AVX-VNNI and AVX2 tables take up to 8 rows in one pass.
                    for (fk::Isa isa : {fk::Isa::avx512, fk::Isa::avxvnni, fk::Isa::avx2}) {
                        const fk::KernelTable* t = fk::kernel_table(isa);
                        if (!t) continue;
                        CAPTURE(fk::isa_name(isa));
                        std::fill(y.begin(), y.end(), 1.0f);
                        t->linear_q(M, x.data(), K, m, bias.data(), y.data(), N, true);
                        check_rows(y, 1.0);
                        flamingo::Executor ex(2);
                        flamingo::Executor::Scope use(ex);
                        std::vector<float> yt(M * N, 1.0f);
                        t->linear_q(M, x.data(), K, m, bias.data(), yt.data(), N, true);
                        REQUIRE(yt == y);
                    }
                    // avxvnni is the avx2 kernel with vpdpbusd forming the same integers
                    // (quant.hpp), so its outputs are the avx2 set's bit for bit.
                    const fk::KernelTable *t2 = fk::kernel_table(fk::Isa::avx2), *tv = fk::kernel_table(fk::Isa::avxvnni);
                    if (t2 && tv) {
                        std::vector<float> y2(M * N), yv(M * N);
                        t2->linear_q(M, x.data(), K, m, bias.data(), y2.data(), N, false);
                        tv->linear_q(M, x.data(), K, m, bias.data(), yv.data(), N, false);
                        REQUIRE(yv == y2);
                    }
#endif
                }
}

namespace {

using LinearQ = void (*)(std::size_t, const float*, std::size_t, const fk::QMatrix&, const float*, float*, std::size_t,
                         bool);
struct QPath {
    std::string name;
    LinearQ f;
    bool integer_many_rows;  // more than 3 rows as integers too (quant.hpp's contracts)
};

// linear_q of every kernel set this CPU runs (dispatching builds), else of this build's flags.
std::vector<QPath> q_paths() {
    std::vector<QPath> v;
#if defined(FLAMINGO_DISPATCH)
    for (int i = 0; i < fk::kIsaCount; ++i)
        if (const fk::KernelTable* t = fk::kernel_table(fk::Isa(i)))
            v.push_back({fk::isa_name(fk::Isa(i)), t->linear_q, fk::Isa(i) != fk::Isa::sse2});
#else
    v.push_back({"inline", &fk::linear_q, fk::detail::kQIntegerManyRows});
#endif
    return v;
}

}  // namespace

TEST_CASE("linear_q worst-case blocks: the largest products stay exact on every kernel set") {
    // Activations of one magnitude quantise to +-127; q8 weights +-127 (and
    // -128, which quantize never writes but a file could hold) and q4 weights
    // 0 and 15, with signs matched so that adjacent products add up: the
    // largest pairs the int16 stage of an AVX2 kernel can meet (q8:
    // 2 * 128 * 127 = 32512 <= 32767). A kernel whose pairs saturate (e.g.
    // vpmaddubsw on w + 128 and x, up to 2 * 255 * 127) is off here by far
    // more than the bound. K = 330: 11 blocks (one group of 8 and a rest; q4
    // in the AVX2 set: 5 pairs and a last block alone); N = 11: weight rows
    // in passes of 4, 2 and 1 and a remainder.
    const std::size_t K = 330, N = 11;
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (int pattern = 0; pattern < 4; ++pattern) {
            fk::QMatrix shape{f, N, K};
            const std::size_t nb = shape.blocks(), rb = shape.row_bytes();
            fk::QBuffer buf;
            buf.data.assign(N * rb, 0);
            buf.scales.resize(N * nb);
            buf.offsets.assign(f == QFormat::Q4 ? N * nb : 0, flamingo::f16(-0.75f));
            for (std::size_t r = 0; r < N; ++r) {
                for (std::size_t b = 0; b < nb; ++b) buf.scales[r * nb + b] = flamingo::f16(0.5f + 0.25f * float((r + b) % 3));
                for (std::size_t k = 0; k < K; ++k) {
                    const bool hi = pattern == 0 ? true : pattern == 1 ? false : pattern == 2 ? (k / 2 + r) % 2 == 0
                                                                                           : (k / 2 + r) % 3 != 0;
                    std::uint8_t* row = buf.data.data() + r * rb;
                    if (f == QFormat::Q8) {
                        const int v = hi ? 127 : pattern == 3 ? -128 : -127;
                        row[k] = std::uint8_t(std::int8_t(v));
                    } else {
                        const std::size_t b = k / 32, i = k % 32;
                        row[b * 16 + i % 16] |= std::uint8_t((hi ? 15 : 0) << (i < 16 ? 0 : 4));
                    }
                }
            }
            const fk::QMatrix m = buf.view(f, N, K);
            for (const QPath& path : q_paths())
                for (std::size_t M : {1u, 2u, 3u, 4u, 8u, 9u}) {
                    if (M > 3 && !path.integer_many_rows) continue;  // dequantised: other contract, tested above
                    CAPTURE(path.name);
                    CAPTURE(fk::qformat_name(f));
                    CAPTURE(pattern);
                    CAPTURE(M);
                    // Row i: all +2, all -2, or the sign of weight row i (products all
                    // positive), or its opposite (all negative).
                    std::vector<float> x(M * K);
                    for (std::size_t i = 0; i < M; ++i)
                        for (std::size_t k = 0; k < K; ++k) {
                            const int w = stored_value(m, i % N, k);
                            const float s = f == QFormat::Q8 ? (w < 0 ? -1.0f : 1.0f) : (w > 0 ? 1.0f : -1.0f);
                            x[i * K + k] = i % 4 == 0 ? 2.0f : i % 4 == 1 ? -2.0f : i % 4 == 2 ? 2.0f * s : -2.0f * s;
                        }
                    std::vector<float> y(M * N);
                    path.f(M, x.data(), K, m, nullptr, y.data(), N, false);
                    std::vector<double> ref, bound;
                    for (std::size_t i = 0; i < M; ++i) {
                        ref_gemv(m, x.data() + i * K, ref, bound);
                        for (std::size_t r = 0; r < N; ++r) {
                            CAPTURE(i);
                            CAPTURE(r);
                            REQUIRE(std::fabs(y[i * N + r] - ref[r]) <= bound[r]);
                        }
                    }
                }
        }
}

TEST_CASE("linear_q exact integers: every kernel set's block dot products equal the plain C++ sums") {
    // Scales 1 and integer offsets, activations integers with a +-127 in each
    // block (so their scale is 1 and they quantise to themselves): every term
    // and partial sum is an integer below 2^24 (19 blocks * 32 * 128 * 127),
    // so each output is the integer sum of the block dots exactly, whichever
    // instructions formed them (vpdpbusd, vpmaddubsw + vpmaddwd, plain C++).
    // q8 weights span [-128, 127], q4 [0, 15]; K = 600: 19 blocks, more than
    // one group of 16 and an odd count.
    std::mt19937 gen(21);
    for (QFormat f : {QFormat::Q8, QFormat::Q4})
        for (std::size_t K : {32u, 95u, 600u}) {
            const std::size_t N = 11;
            fk::QMatrix shape{f, N, K};
            const std::size_t nb = shape.blocks(), rb = shape.row_bytes();
            fk::QBuffer buf;
            buf.data.resize(N * rb);
            std::uniform_int_distribution<int> byte(0, 255);
            for (auto& v : buf.data) v = std::uint8_t(byte(gen));
            if (f == QFormat::Q8)  // zero padding, as stored
                for (std::size_t r = 0; r < N; ++r) std::fill(buf.data.begin() + r * rb + K, buf.data.begin() + (r + 1) * rb, 0);
            buf.scales.assign(N * nb, flamingo::f16(1.0f));
            if (f == QFormat::Q4)
                for (std::size_t i = 0; i < N * nb; ++i) buf.offsets.push_back(flamingo::f16(float(int(i % 5) - 2)));
            const fk::QMatrix m = buf.view(f, N, K);
            std::uniform_int_distribution<int> act(-127, 127);
            for (std::size_t M : {1u, 2u, 3u, 5u, 8u, 9u, 17u}) {
                std::vector<float> x(M * K);
                for (std::size_t k = 0; k < M * K; ++k) x[k] = float(k % K % 32 == 0 ? (k % 2 ? 127 : -127) : act(gen));
                std::vector<long> ref(M * N, 0);
                for (std::size_t i = 0; i < M; ++i)
                    for (std::size_t r = 0; r < N; ++r)
                        for (std::size_t k = 0; k < K; ++k) {
                            const long w = stored_value(m, r, k) + (f == QFormat::Q4 ? long(float(m.offsets[r * nb + k / 32])) : 0);
                            ref[i * N + r] += w * long(x[i * K + k]);
                        }
                for (const QPath& path : q_paths()) {
                    CAPTURE(path.name);
                    CAPTURE(fk::qformat_name(f));
                    CAPTURE(K);
                    CAPTURE(M);
                    std::vector<float> y(M * N);
                    path.f(M, x.data(), K, m, nullptr, y.data(), N, false);
                    for (std::size_t j = 0; j < M * N; ++j) {
                        CAPTURE(j);
                        REQUIRE(double(y[j]) == double(ref[j]));
                    }
                }
            }
        }
}

TEST_CASE("linear_q: GEMV is the same with threads, and bad operands are errors") {
    std::mt19937 gen(9);
    const std::size_t N = 333, K = 160;
    auto w = random_floats(N * K, gen, 0.05f);
    auto x = random_floats(K, gen);
    for (QFormat f : {QFormat::Q8, QFormat::Q4}) {
        auto buf = fk::quantize(f, w.data(), N, K, K);
        fk::QMatrix m = buf.view(f, N, K);
        std::vector<float> y1(N), y2(N);
        fk::linear_q(1, x.data(), K, m, nullptr, y1.data(), N);
        {
            flamingo::Executor ex(2);
            flamingo::Executor::Scope use(ex);
            fk::linear_q(1, x.data(), K, m, nullptr, y2.data(), N);
        }
        CHECK(y1 == y2);
        fk::QMatrix bad = m;
        bad.scales = nullptr;
        CHECK_THROWS_WITH_AS(fk::linear_q(1, x.data(), K, bad, nullptr, y1.data(), N),
                             doctest::Contains("lack data, scales or offsets"), flamingo::Error);
    }
}

// LayerNorm and RMSNorm against double-precision scalar references.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <flamingo/kernels/norm.hpp>

#include "kernel_test_util.hpp"

namespace fk = flamingo::kernels;

namespace {

// PyTorch LayerNorm: biased variance; gamma, beta optional.
std::vector<double> ref_layer_norm(const float* x, std::size_t n, const float* g, const float* b, double eps) {
    double mean = 0, var = 0;
    for (std::size_t i = 0; i < n; ++i) mean += x[i];
    mean /= double(n);
    for (std::size_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
    var /= double(n);
    std::vector<double> y(n);
    for (std::size_t i = 0; i < n; ++i)
        y[i] = (x[i] - mean) / std::sqrt(var + eps) * (g ? g[i] : 1.0) + (b ? b[i] : 0.0);
    return y;
}

std::vector<double> ref_rms_norm(const float* x, std::size_t n, const float* g, double eps) {
    double ms = 0;
    for (std::size_t i = 0; i < n; ++i) ms += double(x[i]) * x[i];
    ms /= double(n);
    std::vector<double> y(n);
    for (std::size_t i = 0; i < n; ++i) y[i] = x[i] / std::sqrt(ms + eps) * (g ? g[i] : 1.0);
    return y;
}

enum class Kind { layer, rms };

// Normalises rows x n (strides n + 3 in, n + 5 out) and returns the largest
// error relative to the largest |gamma| (outputs are O(gamma)). With
// `per_condition`, a LayerNorm row's error is divided by 1 + |mean| / std: float
// rounding of the mean alone moves (x - mean) / std by ~6e-8 |mean| / std, which
// matters for short rows whose few values happen to be close together.
double run(Kind kind, std::size_t rows, std::size_t n, bool use_gamma, bool use_beta, float mean, float stddev,
           unsigned seed, bool per_condition = true) {
    const std::size_t ldx = n + 3, ldy = n + 5;
    const float eps = 1e-5f;
    auto x = ktest::randn(rows * ldx, seed, mean, stddev);
    auto gamma = ktest::randn(n, seed + 1000, 1.0f, 0.5f);
    auto beta = ktest::randn(n, seed + 2000, 0.0f, 0.5f);
    std::vector<float> y(rows * ldy, ktest::kSentinel);
    const float* g = use_gamma ? gamma.data() : nullptr;
    const float* b = use_beta ? beta.data() : nullptr;
    if (kind == Kind::layer)
        fk::layer_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, g, b, eps);
    else
        fk::rms_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, g, eps);
    double gmax = 1;
    if (g)
        for (float v : gamma) gmax = std::max(gmax, double(std::fabs(v)));
    double worst = 0;
    for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = x.data() + r * ldx;
        auto ref = kind == Kind::layer ? ref_layer_norm(xr, n, g, b, eps) : ref_rms_norm(xr, n, g, eps);
        double cond = 0;
        if (kind == Kind::layer && per_condition) {
            double m = 0, v = 0;
            for (std::size_t i = 0; i < n; ++i) m += xr[i];
            m /= double(n);
            for (std::size_t i = 0; i < n; ++i) v += (xr[i] - m) * (xr[i] - m);
            cond = std::fabs(m) / std::sqrt(v / double(n) + eps);
        }
        for (std::size_t i = 0; i < n; ++i)
            worst = std::max(worst, std::fabs(y[r * ldy + i] - ref[i]) / gmax / (1.0 + cond));
        for (std::size_t i = n; i < ldy; ++i) REQUIRE(y[r * ldy + i] == ktest::kSentinel);
    }
    return worst;
}

}  // namespace

TEST_CASE("layer_norm_rows and rms_norm_rows match double references") {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        unsigned seed = 1;
        for (std::size_t n : {1, 2, 7, 16, 63, 65, 1000, 4099})
            for (std::size_t rows : {1, 5, 40})
                for (int affine = 0; affine < 3; ++affine) {
                    // affine: 0 none, 1 gamma only (MPT's no-bias LayerNorm), 2 gamma and beta
                    INFO("n ", n, " rows ", rows, " affine ", affine, " threads ", nt);
                    CHECK(run(Kind::layer, rows, n, affine >= 1, affine == 2, 3.0f, 2.0f, seed++) < 2e-6);
                    CHECK(run(Kind::rms, rows, n, affine >= 1, false, 0.5f, 2.0f, seed++) < 2e-6);
                }
    }
}

TEST_CASE("layer_norm_rows: a large common offset does not destroy the variance") {
    // mean 1000, std 1: E[x^2] - E[x]^2 in float would lose ~all digits of the
    // variance; the two-pass form only pays for the rounding of the mean itself
    // (ulp(1000) / 2 ~ 3e-5 of a unit standard deviation).
    CHECK(run(Kind::layer, 8, 4096, true, true, 1000.0f, 1.0f, 77, false) < 1e-4);
    CHECK(run(Kind::layer, 8, 4096, false, false, 3.0f, 1e-3f, 78, false) < 1e-3);
}

TEST_CASE("norms work in place and reject short strides") {
    auto x = ktest::randn(3 * 100, 5, 1.0f, 2.0f);
    auto expect = x;
    fk::layer_norm_rows(x.data(), 100, expect.data(), 100, 3, 100, nullptr, nullptr, 1e-5f);
    fk::layer_norm_rows(x.data(), 100, x.data(), 100, 3, 100, nullptr, nullptr, 1e-5f);
    CHECK(x == expect);
    fk::rms_norm_rows(x.data(), 100, expect.data(), 100, 3, 100, nullptr, 1e-6f);
    fk::rms_norm_rows(x.data(), 100, x.data(), 100, 3, 100, nullptr, 1e-6f);
    CHECK(x == expect);
    CHECK_THROWS_AS(fk::layer_norm_rows(x.data(), 50, x.data(), 100, 3, 100, nullptr, nullptr, 1e-5f), flamingo::Error);
    CHECK_THROWS_AS(fk::rms_norm_rows(x.data(), 100, x.data(), 99, 3, 100, nullptr, 1e-5f), flamingo::Error);
}

TEST_CASE("layer_norm_rows: constant rows give beta (variance 0, eps keeps it finite)") {
    std::vector<float> x(17, 2.5f), y(17), beta(17);
    for (std::size_t i = 0; i < 17; ++i) beta[i] = float(i);
    fk::layer_norm_rows(x.data(), 17, y.data(), 17, 1, 17, nullptr, beta.data(), 1e-5f);
    for (std::size_t i = 0; i < 17; ++i) CHECK(y[i] == beta[i]);
}

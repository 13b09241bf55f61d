// softmax_rows against a double-precision scalar softmax.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <flamingo/kernels/softmax.hpp>

#include "kernel_test_util.hpp"

using flamingo::kernels::softmax_rows;

namespace {

std::vector<double> ref_softmax(const float* x, std::size_t n) {
    double m = -INFINITY;
    for (std::size_t j = 0; j < n; ++j) m = std::max(m, double(x[j]));
    std::vector<double> y(n);
    double s = 0;
    for (std::size_t j = 0; j < n; ++j) s += (y[j] = std::exp(double(x[j]) - m));
    for (auto& v : y) v /= s;
    return y;
}

// Runs softmax_rows on rows x cols with stride cols + pad and checks every
// element against the reference (relative 4e-6) and the padding untouched.
void check_softmax(std::size_t rows, std::size_t cols, std::size_t pad, float mean, float stddev, unsigned seed) {
    const std::size_t ld = cols + pad;
    auto x = ktest::randn(rows * ld, seed, mean, stddev);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = cols; j < ld; ++j) x[r * ld + j] = ktest::kSentinel;
    auto y = x;
    softmax_rows(y.data(), rows, cols, ld);
    double worst = 0;
    for (std::size_t r = 0; r < rows; ++r) {
        auto ref = ref_softmax(x.data() + r * ld, cols);
        for (std::size_t j = 0; j < cols; ++j)
            worst = std::max(worst, std::fabs(y[r * ld + j] - ref[j]) / (ref[j] + 1e-30));
        for (std::size_t j = cols; j < ld; ++j) REQUIRE(y[r * ld + j] == ktest::kSentinel);
    }
    INFO("rows ", rows, " cols ", cols, " pad ", pad, " mean ", mean, " stddev ", stddev);
    CHECK(worst < 4e-6);
}

}  // namespace

TEST_CASE("softmax_rows matches a double reference at awkward sizes") {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        unsigned seed = 1;
        for (std::size_t cols : {1, 2, 7, 15, 16, 17, 63, 65, 1000, 4099})
            for (std::size_t rows : {1, 3, 37})
                for (std::size_t pad : {0, 5}) check_softmax(rows, cols, pad, 0.0f, 3.0f, seed++);
        check_softmax(2, 50257, 3, 0.0f, 4.0f, seed++);  // vocabulary-wide rows
    }
}

TEST_CASE("softmax_rows is stable for large inputs") {
    // exp(1000) overflows float; subtracting the row maximum keeps it finite.
    check_softmax(4, 100, 1, 1000.0f, 2.0f, 99);
    check_softmax(4, 100, 1, -1000.0f, 2.0f, 98);
}

TEST_CASE("softmax_rows: -inf entries get probability 0; an all -inf row is NaN as in PyTorch") {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> x = {1.0f, -inf, 2.0f, -inf, -inf, -inf};
    softmax_rows(x.data(), 2, 3, 3);
    const double e = std::exp(1.0);
    CHECK(x[0] == doctest::Approx(1.0 / (1.0 + e)).epsilon(1e-6));
    CHECK(x[1] == 0.0f);
    CHECK(x[2] == doctest::Approx(e / (1.0 + e)).epsilon(1e-6));
    for (int j = 3; j < 6; ++j) CHECK(std::isnan(x[j]));
}

TEST_CASE("softmax_rows rejects a row stride shorter than a row") {
    std::vector<float> x(10);
    CHECK_THROWS_AS(softmax_rows(x.data(), 2, 5, 4), flamingo::Error);
    softmax_rows(x.data(), 0, 5, 0);  // nothing to do
    softmax_rows(x.data(), 1, 5, 0);  // one row needs no stride
    CHECK(x[0] == doctest::Approx(0.2));
}

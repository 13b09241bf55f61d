#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include <flamingo/tensor.hpp>

using namespace flamingo;

namespace {
template <class T, class E>
void fill_random(Tensor<T, E>& t, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-2.0f, 2.0f);
    for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = T(d(rng));
}
}  // namespace

TEST_CASE("fused elementwise expressions match scalar loops at awkward sizes") {
    for (std::size_t m : {1, 3, 17}) {
        for (std::size_t n : {1, 7, 15, 16, 17, 63, 65, 1000}) {
            Matrix<> a(m, n), b(m, n), out(m, n);
            fill_random(a, unsigned(m * 1000 + n));
            fill_random(b, unsigned(m * 1000 + n + 1));
            out = a * tanh(b) + a / (abs(b) + 1.0f) - 0.5f;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                    float x = a(i, j), y = b(i, j);
                    double want = double(x) * std::tanh(double(y)) + double(x) / (std::fabs(double(y)) + 1.0) - 0.5;
                    REQUIRE(out(i, j) == doctest::Approx(want).epsilon(1e-5));
                }
        }
    }
}

TEST_CASE("unary math against std") {
    Vector<> x(1000), y(1000);
    for (int i = 0; i < 1000; ++i) x(i) = -8.0f + 16.0f * float(i) / 999.0f;
    y = exp(x);
    for (int i = 0; i < 1000; ++i) CHECK(y(i) == doctest::Approx(std::exp(double(x(i)))).epsilon(2e-6));
    y = erf(x);
    for (int i = 0; i < 1000; ++i) CHECK(y(i) == doctest::Approx(std::erf(double(x(i)))).epsilon(2e-6).scale(1e-6));
    y = sigmoid(x);
    for (int i = 0; i < 1000; ++i) CHECK(y(i) == doctest::Approx(1.0 / (1.0 + std::exp(-double(x(i))))).epsilon(2e-6));
    y = sqrt(abs(x)) + maximum(x, 0.0f) - minimum(x, 1.0f);
    for (int i = 0; i < 1000; ++i) {
        double v = x(i);
        CHECK(y(i) == doctest::Approx(std::sqrt(std::fabs(v)) + std::max(v, 0.0) - std::min(v, 1.0)).epsilon(2e-6));
    }
}

TEST_CASE("NumPy broadcasting: row vectors, column vectors, scalars, leading axes") {
    Matrix<> x(5, 9);
    fill_random(x, 1);
    Vector<> row(9);
    fill_random(row, 2);
    Tensor<float, extents<dyn, 1>> col(5);
    fill_random(col, 3);
    Matrix<> y(5, 9);
    y = (x - col) * row + 2.0f;
    for (std::size_t i = 0; i < 5; ++i)
        for (std::size_t j = 0; j < 9; ++j) CHECK(y(i, j) == doctest::Approx((x(i, j) - col(i, 0)) * row(j) + 2.0f));

    // [2, 5, 9] with [5, 9]
    Tensor<float, extents<2, 5, 9>> t3;
    fill_random(t3, 4);
    Tensor<float, extents<2, 5, 9>> r3;
    r3 = t3 + x;
    for (std::size_t b = 0; b < 2; ++b)
        for (std::size_t i = 0; i < 5; ++i)
            for (std::size_t j = 0; j < 9; ++j) CHECK(r3(b, i, j) == t3(b, i, j) + x(i, j));

    // broadcasting into the destination
    y = row;
    for (std::size_t i = 0; i < 5; ++i) CHECK(y(i, 8) == row(8));
    y = 3.0f;
    CHECK(y(4, 4) == 3.0f);
}

TEST_CASE("run-time shape mismatches throw naming both shapes") {
    Matrix<> a(3, 4), b(4, 3), c(3, 4);
    CHECK_THROWS_WITH_AS(a + b, "cannot broadcast shapes [3, 4] and [4, 3] in an elementwise expression", Error);
    Vector<> v(5);
    CHECK_THROWS_WITH_AS(c = a * v, "cannot broadcast shapes [3, 4] and [5] in an elementwise expression", Error);
    Matrix<> d(2, 4);
    CHECK_THROWS_WITH_AS(d = a + c, "cannot assign an expression of shape [3, 4] to a tensor of shape [2, 4]", Error);
}

TEST_CASE("views: strided reads and writes, transposes, slices") {
    Matrix<> a(4, 6);
    fill_random(a, 5);
    Matrix<> t(6, 4);
    t = transpose(a.view());
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 6; ++j) CHECK(t(j, i) == a(i, j));
    // write through a column slice
    a.view().slice<1>(2, 3).assign(7.0f);
    for (std::size_t i = 0; i < 4; ++i) CHECK(a(i, 2) == 7.0f);
    // write a transposed view
    Matrix<> u(4, 6);
    transpose(u.view()).assign(t * 2.0f);
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = 0; j < 6; ++j) CHECK(u(i, j) == t(j, i) * 2.0f);
}

TEST_CASE("aliasing: in-place updates work; overlapping layouts go through a temporary") {
    Matrix<> a(8, 8);
    fill_random(a, 6);
    Matrix<> orig = a;
    a = a * 2.0f + a;  // same element read and written: safe in place
    for (std::size_t i = 0; i < 64; ++i) CHECK(a.data()[i] == doctest::Approx(orig.data()[i] * 3.0f));

    a = orig;
    a.view().assign(transpose(a.view()));  // would corrupt without a temporary
    for (std::size_t i = 0; i < 8; ++i)
        for (std::size_t j = 0; j < 8; ++j) CHECK(a(i, j) == orig(j, i));

    a = orig;
    a = a - a.view()[0];  // row 0 is broadcast and overwritten
    for (std::size_t i = 0; i < 8; ++i)
        for (std::size_t j = 0; j < 8; ++j) CHECK(a(i, j) == orig(i, j) - orig(0, j));

    // shifted overlap: rows [1, 8) written from rows [0, 7)
    a = orig;
    a.rows(1, 8).assign(a.rows(0, 7) + 0.0f);
    for (std::size_t i = 1; i < 8; ++i) CHECK(a(i, 3) == orig(i - 1, 3));
}

TEST_CASE("reductions over the last axis") {
    for (std::size_t n : {1, 7, 16, 63, 65, 1000}) {
        Matrix<> x(3, n);
        fill_random(x, unsigned(n));
        auto s = sum(x);
        auto m = max(x * 2.0f);
        auto avg = mean(x);
        for (std::size_t i = 0; i < 3; ++i) {
            double ws = 0, wm = -1e30;
            for (std::size_t j = 0; j < n; ++j) ws += x(i, j), wm = std::max(wm, 2.0 * x(i, j));
            CHECK(s(i) == doctest::Approx(ws).epsilon(1e-5).scale(1.0));
            CHECK(m(i) == doctest::Approx(wm));
            CHECK(avg(i) == doctest::Approx(ws / double(n)).epsilon(1e-5).scale(1.0));
        }
    }
    Vector<> v(5);
    for (int i = 0; i < 5; ++i) v(i) = float(i - 10);
    float mx = max(v);
    CHECK(mx == -6.0f);  // all-negative rows: the identity is -inf, not 0
    CHECK(sum(v) == -40.0f);
}

TEST_CASE("large expressions split across threads give the same result") {
    Matrix<> a(300, 513), b(300, 513), y1(300, 513), y2(300, 513);
    fill_random(a, 9);
    fill_random(b, 10);
    y1 = exp(a) * b;  // no executor: one thread
    Executor ex(2);
    Executor::Scope use(ex);
    y2 = exp(a) * b;
    for (std::size_t i = 0; i < y1.size(); ++i) REQUIRE(y1.data()[i] == y2.data()[i]);
}

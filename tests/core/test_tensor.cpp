#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>

#include <flamingo/tensor.hpp>

using namespace flamingo;

TEST_CASE("extents mix static and dynamic sizes") {
    extents<dyn, 64> e(10);
    static_assert(decltype(e)::rank() == 2 && decltype(e)::rank_dynamic() == 1);
    static_assert(sizeof(e) == sizeof(std::size_t), "only the dynamic size is stored");
    CHECK(e.extent(0) == 10);
    CHECK(e.extent(1) == 64);
    CHECK(e.size() == 640);
    extents<dyn, 64> all(std::size_t(3), std::size_t(64));
    CHECK(all.extent(0) == 3);
    CHECK_THROWS_WITH_AS((extents<dyn, 64>(std::size_t(3), std::size_t(65))), "extent 1 is fixed at 64 but 65 was given",
                         Error);
    CHECK(shape_string(extents<2, dyn, 4>(7)) == "[2, 7, 4]");
    static_assert(extents<3, 4>{}.size() == 12);
}

TEST_CASE("tensors own aligned zeroed memory; views index with strides") {
    Tensor<float, extents<dyn, 5>> t(3);
    CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
    for (std::size_t i = 0; i < t.size(); ++i) CHECK(t.data()[i] == 0.0f);
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t j = 0; j < 5; ++j) t(i, j) = float(10 * i + j);
    auto v = t.view();
    CHECK(v(2, 3) == 23.0f);
    CHECK(v[1](4) == 14.0f);
    auto tr = transpose(v);
    CHECK(tr.extent(0) == 5);
    CHECK(tr(4, 1) == 14.0f);
    CHECK(!tr.contiguous());
    auto cols = v.slice<1>(1, 4);
    CHECK(cols.extent(1) == 3);
    CHECK(cols(2, 0) == 21.0f);
    auto r = v.rows(1, 3);
    CHECK(r(0, 0) == 10.0f);
    CHECK_THROWS_WITH_AS(v.rows(2, 4), "slice [2, 4) out of range for axis 0 of shape [3, 5]", Error);
    auto flat = reshape<extents<15>>(v);
    CHECK(flat(13) == 23.0f);
    CHECK_THROWS_AS((reshape<extents<dyn, 4>>(v, 4)), Error);
    CHECK_THROWS_WITH_AS(reshape<dextents<1>>(tr, 15), "reshape: view of shape [5, 3] is not contiguous", Error);

    // views over foreign memory (a memory-mapped file behaves the same)
    const float raw[6] = {1, 2, 3, 4, 5, 6};
    TensorView<const float, extents<2, 3>> m(raw, {});
    CHECK(m(1, 2) == 6.0f);

    Tensor<float, extents<dyn, 5>> copy = t;
    copy(0, 0) = 99;
    CHECK(t(0, 0) == 0.0f);
}

TEST_CASE("bf16 and f16 storage convert on read and write") {
    Tensor<bf16, dextents<1>> b(5);
    Tensor<float, dextents<1>> f(5);
    for (int i = 0; i < 5; ++i) f(i) = 1.0f + float(i) / 3.0f;
    b = f;
    for (int i = 0; i < 5; ++i) CHECK(float(b(i)) == float(bf16(f(i))));
    Tensor<f16, dextents<1>> h(5);
    h = f * 2.0f;
    for (int i = 0; i < 5; ++i) CHECK(float(h(i)) == float(f16(f(i) * 2.0f)));
    Tensor<float, dextents<1>> back(b + h);
    for (int i = 0; i < 5; ++i) CHECK(back(i) == float(b(i)) + float(h(i)));
}

TEST_CASE("matmul of tensors and views against a scalar loop") {
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> d(-1, 1);
    for (auto [m, k, n] : {std::array<std::size_t, 3>{1, 1, 1}, {3, 7, 5}, {17, 65, 33}, {64, 100, 7}}) {
        Matrix<> a(m, k), b(k, n), bt(n, k);
        for (std::size_t i = 0; i < a.size(); ++i) a.data()[i] = d(rng);
        for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = d(rng);
        bt = transpose(b.view());
        auto want = [&](std::size_t i, std::size_t j) {
            double s = 0;
            for (std::size_t p = 0; p < k; ++p) s += double(a(i, p)) * b(p, j);
            return s;
        };
        auto c1 = matmul(a, b);                      // contiguous
        auto c2 = matmul(a, transpose(bt.view()));   // transposed view: the A·W^T kernel
        Matrix<> wide(k, 2 * n);
        wide.view().slice<1>(0, n).assign(b);
        auto c3 = matmul(a, wide.view().slice<1>(0, n));  // strided rows
        auto c4 = matmul(transpose(transpose(a.view())), b);
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                const double w = want(i, j), tol = 1e-5 * (1 + double(k));
                CHECK(std::fabs(c1(i, j) - w) <= tol);
                CHECK(std::fabs(c2(i, j) - w) <= tol);
                CHECK(std::fabs(c3(i, j) - w) <= tol);
                CHECK(std::fabs(c4(i, j) - w) <= tol);
            }
    }
    Matrix<> a(2, 3), b(4, 2);
    CHECK_THROWS_WITH_AS(matmul(a, b), "matmul: cannot multiply [2, 3] by [4, 2]", Error);
    Tensor<float, extents<2, 3>> s1;
    Tensor<float, extents<3, 5>> s2;
    auto c = matmul(s1, s2);
    static_assert(std::is_same_v<decltype(c), Tensor<float, extents<2, 5>>>, "static shapes propagate");
}

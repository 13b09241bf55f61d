// Activations against double-precision scalar formulas.
//
// The references are written in the form that is accurate in double for every
// x (erfc for the GELU tail, exp for the sigmoid); PyTorch's float formulas
// agree with them except where PyTorch's own 1 + erf(...) or 1 + tanh(...)
// cancels (x < -3 or so), where ours is the more accurate one: on a sweep of
// [-12, 12] PyTorch 1.13's float GELU is off by up to 8e-4 relative for |x| <= 4
// (3.4e-7 absolute), these kernels by under 2e-6.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <flamingo/kernels/activation.hpp>

#include "kernel_test_util.hpp"

namespace fk = flamingo::kernels;

namespace {

double ref_gelu_erf(double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }
double ref_gelu_tanh(double x) {
    const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
    return x / (1.0 + std::exp(-2.0 * u));  // = 0.5 x (1 + tanh u)
}
double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double ref_silu(double x) { return x * ref_sigmoid(x); }
double ref_quick_gelu(double x) { return x * ref_sigmoid(1.702 * x); }

// Inputs: a dense sweep of [-12, 12] plus random values, n of them.
std::vector<float> inputs(std::size_t n, unsigned seed) {
    auto x = ktest::randn(n, seed, 0.0f, 3.0f);
    for (std::size_t i = 0; i < n && i < 4801; ++i) x[i] = -12.0f + 0.005f * float(i);
    return x;
}

struct Err {
    double core = 0;  // max relative error for |x| <= 4
    double all = 0;   // max relative error where |f(x)| > 1e-30 (normal floats)
};

Err measure(const std::vector<float>& x, const std::vector<float>& y, double (*ref)(double)) {
    Err e;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double r = ref(double(x[i]));
        if (std::fabs(r) <= 1e-30) {
            REQUIRE(std::fabs(y[i]) <= 1e-29);
            continue;
        }
        const double rel = std::fabs(double(y[i]) - r) / std::fabs(r);
        e.all = std::max(e.all, rel);
        if (std::fabs(x[i]) <= 4.0f) e.core = std::max(e.core, rel);
    }
    return e;
}

// In the far negative tail the result is exp(-c x^2) or exp(-c x^3) times x, and
// the float rounding of the exponent's argument alone costs ~|argument| * 6e-8
// relative; `tail_tol` allows for that.
void check_unary(std::string name, void (*f)(float*, std::size_t), double (*ref)(double), double core_tol,
                 double tail_tol) {
    for (std::size_t n : {1, 7, 16, 63, 65, 1000, 5003, 100003}) {
        const auto x = inputs(n, unsigned(n));
        auto y = x;
        y.push_back(ktest::kSentinel);
        f(y.data(), n);
        CHECK(y[n] == ktest::kSentinel);
        y.pop_back();
        const Err e = measure(x, y, ref);
        INFO(name, " n=", n, " max rel err |x|<=4: ", e.core, ", everywhere: ", e.all);
        CHECK(e.core < core_tol);
        CHECK(e.all < tail_tol);
    }
}

}  // namespace

TEST_CASE("activations match double references") {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        check_unary("gelu_erf", fk::gelu_erf, ref_gelu_erf, 2e-6, 2e-5);
        check_unary("gelu_tanh", fk::gelu_tanh, ref_gelu_tanh, 2e-6, 2e-5);
        check_unary("quick_gelu", fk::quick_gelu, ref_quick_gelu, 1e-6, 3e-6);
        check_unary("silu", fk::silu, ref_silu, 1e-6, 1e-6);
    }
}

TEST_CASE("activations: special values") {
    const float inf = INFINITY;
    std::vector<float> x = {0.0f, inf, -inf, 100.0f, -100.0f, 1e-30f};
    auto g = x;
    fk::gelu_erf(g.data(), g.size());
    CHECK(g[0] == 0.0f);
    CHECK(g[1] == inf);
    CHECK(g[3] == 100.0f);
    CHECK(g[4] == 0.0f);
    CHECK(g[5] == doctest::Approx(0.5e-30).epsilon(1e-6));
    auto s = x;
    fk::silu(s.data(), s.size());
    CHECK(s[0] == 0.0f);
    CHECK(s[3] == 100.0f);
    CHECK(s[4] == doctest::Approx(-100.0 * std::exp(-100.0)).epsilon(1e-5));
}

TEST_CASE("swiglu = silu(gate) * up") {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        for (std::size_t n : {1, 7, 17, 64, 1001, 70001}) {
            const auto gate = inputs(n, 7 + unsigned(n));
            const auto up = ktest::randn(n, 11 + unsigned(n));
            std::vector<float> out(n + 1, ktest::kSentinel);
            fk::swiglu(gate.data(), up.data(), out.data(), n);
            CHECK(out[n] == ktest::kSentinel);
            double worst = 0;
            for (std::size_t i = 0; i < n; ++i) {
                const double r = ref_silu(gate[i]) * double(up[i]);
                worst = std::max(worst, std::fabs(out[i] - r) / std::max(std::fabs(r), 1e-30));
            }
            INFO("n=", n, " max rel err ", worst);
            CHECK(worst < 1e-6);
            // In place over gate.
            auto g = gate;
            fk::swiglu(g.data(), up.data(), g.data(), n);
            CHECK(std::equal(g.begin(), g.end(), out.begin()));
        }
    }
}

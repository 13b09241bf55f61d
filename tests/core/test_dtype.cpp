#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include <flamingo/core/dtype.hpp>

using flamingo::bf16;
using flamingo::f16;

// Reference: exact conversion through double, round to nearest even on the
// target grid, computed without bit tricks.
static double round_to_grid(double x, int mant_bits, int min_exp) {
    if (x == 0) return x;
    int e = std::ilogb(x);
    if (e < min_exp) e = min_exp;
    double ulp = std::ldexp(1.0, e - mant_bits);
    return std::nearbyint(x / ulp) * ulp;  // default rounding mode: nearest even
}

TEST_CASE("bf16 conversion rounds to nearest even") {
    for (float x : {0.0f, 1.0f, -1.5f, 3.14159265f, 1e-3f, 65504.0f, 1e30f, -7.77e-20f, 1.00390625f, 1.01171875f}) {
        double want = round_to_grid(x, 7, -126);
        CHECK(float(bf16(x)) == float(want));
    }
    CHECK(std::isnan(float(bf16(std::numeric_limits<float>::quiet_NaN()))));
    CHECK(std::isinf(float(bf16(std::numeric_limits<float>::infinity()))));
}

TEST_CASE("f16 conversion matches the IEEE half grid") {
    for (float x : {0.0f, 1.0f, -2.5f, 3.14159265f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 1e-6f, -3e-7f, 0.333333f,
                    1.00048828125f, 1.00146484375f, 2.9802322e-08f, 4.4703484e-08f}) {
        double want = round_to_grid(x, 10, -14);
        if (std::fabs(want) < std::ldexp(1.0, -25)) want = 0;  // below half the smallest subnormal
        CHECK(float(f16(x)) == float(want));
    }
    CHECK(std::isinf(float(f16(70000.0f))));
    CHECK(std::isinf(float(f16(65520.0f))));
    CHECK(float(f16(65519.0f)) == 65504.0f);
    CHECK(std::isnan(float(f16(std::numeric_limits<float>::quiet_NaN()))));
    // every half value survives a round trip through float
    for (unsigned b = 0; b < 0x10000; ++b) {
        f16 h = f16::from_bits(std::uint16_t(b));
        float x = float(h);
        if (std::isnan(x)) continue;
        REQUIRE(f16(x).bits == b);
    }
}

// Rotary embedding: the cos/sin table against values computed by PyTorch the
// Hugging Face way (tests/data/kernels/make_rope_fixture.py), and apply_rope
// against a double-precision rotate_half reference.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <flamingo/kernels/rope.hpp>

#include "kernel_test_util.hpp"

namespace fk = flamingo::kernels;

namespace {

struct HfTable {
    std::size_t rot_dim = 0;
    float theta = 0;
    std::vector<float> inv_freq;
    std::vector<std::size_t> pos;
    std::vector<std::vector<float>> cos, sin;
};

std::vector<HfTable> load_fixture() {
    std::ifstream f(std::string(FLAMINGO_TEST_DATA) + "/kernels/rope_hf.txt");
    REQUIRE(f.good());
    std::vector<HfTable> tables;
    std::string line;
    auto floats = [](std::istringstream& is, std::size_t n) {
        std::vector<float> v(n);
        for (auto& x : v) is >> x;
        return v;
    };
    while (std::getline(f, line)) {
        std::istringstream is(line);
        std::string tag;
        is >> tag;
        if (tag == "table") {
            HfTable t;
            double theta;
            std::size_t npos;
            is >> t.rot_dim >> theta >> npos;
            t.theta = float(theta);
            tables.push_back(t);
        } else if (tag == "inv_freq") {
            tables.back().inv_freq = floats(is, tables.back().rot_dim / 2);
        } else if (tag == "pos") {
            auto& t = tables.back();
            std::size_t p;
            std::string word;
            is >> p >> word;
            t.pos.push_back(p);
            t.cos.push_back(floats(is, t.rot_dim / 2));
            is >> word;
            t.sin.push_back(floats(is, t.rot_dim / 2));
        }
        REQUIRE(!is.fail());
    }
    return tables;
}

}  // namespace

TEST_CASE("RopeTable matches the Hugging Face float32 recipe computed by PyTorch") {
    const auto tables = load_fixture();
    REQUIRE(tables.size() == 6);
    for (const auto& t : tables) {
        const fk::RopeTable rt(t.rot_dim, t.theta, 4096);
        const std::size_t h = t.rot_dim / 2;
        // PyTorch's vectorised powf is one ulp off the exact power for (96, 1e4)
        // at index 20; every other inverse frequency matches bit for bit.
        std::size_t ulp_off = 0;
        for (std::size_t i = 0; i < h; ++i) {
            const float ours = rt.inv_freq()[i], theirs = t.inv_freq[i];
            if (ours != theirs) {
                ++ulp_off;
                CHECK(std::nextafter(ours, theirs) == theirs);
            }
        }
        const bool exact_freqs = !(t.rot_dim == 96 && t.theta == 10000.0f);
        CHECK(ulp_off == (exact_freqs ? 0u : 1u));
        // With equal frequencies, cos/sin agree to float rounding at every position;
        // the one-ulp frequency moves the angle at position 4095 by ~4e-6.
        const double tol = exact_freqs ? 1.2e-7 : 1e-5;
        double worst = 0;
        for (std::size_t r = 0; r < t.pos.size(); ++r) {
            const std::size_t p = t.pos[r];
            for (std::size_t i = 0; i < h; ++i) {
                worst = std::max(worst, double(std::fabs(rt.cos(p)[i] - t.cos[r][i])));
                worst = std::max(worst, double(std::fabs(rt.sin(p)[i] - t.sin[r][i])));
            }
        }
        INFO("rot_dim ", t.rot_dim, " theta ", t.theta);
        CHECK(worst <= tol);
    }
}

namespace {

// Rows of a fused QKV-like buffer: row r holds n_heads heads of head_dim floats
// head_stride apart, rows row_stride apart; only the first rot_dim dims rotate.
void check_apply(std::size_t n_rows, std::size_t n_heads, std::size_t head_dim, std::size_t rot_dim,
                 std::size_t head_stride, std::size_t row_stride, std::size_t pos0, unsigned seed) {
    const fk::RopeTable table(rot_dim, 10000.0f, 4096);
    auto x = ktest::randn(n_rows * row_stride + 7, seed);
    auto y = x;
    fk::apply_rope(y.data(), n_rows, row_stride, n_heads, head_stride, rot_dim, pos0, table);
    const std::size_t h = rot_dim / 2;
    std::vector<bool> touched(x.size(), false);
    double worst = 0;
    for (std::size_t r = 0; r < n_rows; ++r)
        for (std::size_t hd = 0; hd < n_heads; ++hd) {
            const std::size_t base = r * row_stride + hd * head_stride;
            const float* c = table.cos(pos0 + r);
            const float* s = table.sin(pos0 + r);
            for (std::size_t i = 0; i < h; ++i) {
                const double x1 = x[base + i], x2 = x[base + h + i];
                // x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1)
                worst = std::max(worst, std::fabs(y[base + i] - (x1 * c[i] - x2 * s[i])));
                worst = std::max(worst, std::fabs(y[base + h + i] - (x2 * c[i] + x1 * s[i])));
                touched[base + i] = touched[base + h + i] = true;
            }
            (void)head_dim;
        }
    std::size_t changed = 0;  // pass-through dims, other heads' data, padding
    for (std::size_t e = 0; e < x.size(); ++e) changed += !touched[e] && y[e] != x[e];
    INFO("rows ", n_rows, " heads ", n_heads, " head_dim ", head_dim, " rot_dim ", rot_dim, " pos0 ", pos0);
    CHECK(worst < 1e-6);
    CHECK(changed == 0);
}

}  // namespace

TEST_CASE("apply_rope rotates the first rot_dim dims of every head") {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        unsigned seed = 1;
        for (std::size_t head_dim : {2, 8, 20, 64, 80, 128})
            for (std::size_t pct : {25, 50, 100}) {
                const std::size_t rot_dim = std::max<std::size_t>(2, head_dim * pct / 100 / 2 * 2);
                for (std::size_t n_rows : {1, 3, 130}) {
                    // Separate q buffer (heads packed) and a fused QKV row (3 sections, padding).
                    check_apply(n_rows, 4, head_dim, rot_dim, head_dim, 4 * head_dim, 0, seed++);
                    check_apply(n_rows, 4, head_dim, rot_dim, head_dim, 3 * 4 * head_dim + 5, 4096 - n_rows, seed++);
                }
            }
    }
}

TEST_CASE("rotary embedding rejects bad arguments") {
    CHECK_THROWS_AS(fk::RopeTable(7, 10000.0f, 16), flamingo::Error);
    CHECK_THROWS_AS(fk::RopeTable(0, 10000.0f, 16), flamingo::Error);
    CHECK_THROWS_AS(fk::RopeTable(8, -1.0f, 16), flamingo::Error);
    CHECK_THROWS_AS(fk::RopeTable(8, 10000.0f, 0), flamingo::Error);
    CHECK_THROWS_AS(fk::RopeTable(1 << 20, 10000.0f, 1 << 20), flamingo::Error);  // 2^39 entries
    const fk::RopeTable t(8, 10000.0f, 16);
    std::vector<float> x(8 * 20);
    CHECK_THROWS_AS(fk::apply_rope(x.data(), 2, 8, 1, 8, 8, 15, t), flamingo::Error);  // positions 15, 16
    CHECK_THROWS_AS(fk::apply_rope(x.data(), 1, 8, 1, 8, 6, 0, t), flamingo::Error);   // table is for 8
    fk::apply_rope(x.data(), 1, 8, 1, 8, 8, 15, t);
    fk::apply_rope(x.data(), 0, 8, 1, 8, 8, 1000, t);  // no rows: nothing to check
}

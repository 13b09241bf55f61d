// The tiled attention kernel against a naive reference that forms every score
// row in double precision, applies the masks, softmax and the weighted sum.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <flamingo/kernels/attention.hpp>

#include "kernel_test_util.hpp"

namespace fk = flamingo::kernels;

namespace {

enum class Ranges { none, random, media, begin_only, end_only };

struct Case {
    std::size_t n_q, n_kv, n_heads, n_kv_heads, head_dim;
    bool causal = false;
    std::size_t q_pos0 = 0;
    bool alibi = false;
    Ranges ranges = Ranges::none;
    bool fused = false;  // q, k, v interleaved in one row as a fused QKV projection writes them (needs n_q == n_kv)
};

struct Data {
    std::vector<float> qbuf, kvbuf, out;
    std::vector<float> slopes;
    std::vector<std::uint32_t> begin, end;
    fk::AttentionArgs args;
};

// Builds inputs with the layouts of the model: either one fused QKV buffer
// (row = [q heads | k heads | v heads | padding]), or a separate query buffer
// and a head-major KV cache with padded rows. The output rows are padded too.
Data make(const Case& c, unsigned seed) {
    Data D;
    fk::AttentionArgs& a = D.args;
    const std::size_t d = c.head_dim, H = c.n_heads, G = c.n_kv_heads;
    a.n_q = c.n_q;
    a.n_kv = c.n_kv;
    a.n_heads = H;
    a.n_kv_heads = G;
    a.head_dim = d;
    a.scale = float(1.0 / std::sqrt(double(d)));
    a.causal = c.causal;
    a.q_pos0 = c.q_pos0;
    if (c.fused) {
        REQUIRE(c.n_q == c.n_kv);
        const std::size_t rs = (H + 2 * G) * d + 3;
        D.qbuf = ktest::randn(c.n_q * rs, seed);
        a.q = D.qbuf.data();
        a.k = D.qbuf.data() + H * d;
        a.v = D.qbuf.data() + (H + G) * d;
        a.q_row_stride = a.k_row_stride = a.v_row_stride = rs;
        a.q_head_stride = a.k_head_stride = a.v_head_stride = d;
    } else {
        D.qbuf = ktest::randn(c.n_q * H * d, seed);
        a.q = D.qbuf.data();
        a.q_row_stride = H * d;
        a.q_head_stride = d;
        // cache[kv][head][row][d + 1]: rows d + 1 apart, heads (n_kv + 2) rows apart.
        const std::size_t row = d + 1, head = (c.n_kv + 2) * row;
        D.kvbuf = ktest::randn(2 * G * head + 1, seed + 1);
        a.k = D.kvbuf.data();
        a.v = D.kvbuf.data() + G * head;
        a.k_row_stride = a.v_row_stride = row;
        a.k_head_stride = a.v_head_stride = head;
    }
    a.out_row_stride = H * d + 2;
    a.out_head_stride = d;
    D.out.assign(c.n_q * a.out_row_stride + 1, ktest::kSentinel);
    a.out = D.out.data();
    if (c.alibi) {
        D.slopes.resize(H);
        for (std::size_t h = 0; h < H; ++h) D.slopes[h] = float(std::pow(2.0, -8.0 * double(h + 1) / double(H)));
        a.alibi_slopes = D.slopes.data();
    }
    if (c.ranges != Ranges::none) {
        std::mt19937 rng(seed + 2);
        D.begin.resize(c.n_q);
        D.end.resize(c.n_q);
        const std::size_t seg = std::max<std::size_t>(1, c.n_kv / 5);
        for (std::size_t i = 0; i < c.n_q; ++i) {
            std::size_t b, e;
            if (c.ranges == Ranges::media) {
                // Runs of 13 text tokens see one image's segment; the first run sees none.
                const std::size_t img = i / 13;
                b = img == 0 ? 0 : std::min(c.n_kv, (img - 1) % 5 * seg);
                e = img == 0 ? 0 : std::min(c.n_kv, b + seg);
            } else {
                b = rng() % (c.n_kv + 1);
                e = b + rng() % (c.n_kv - b + 1);
                if (rng() % 7 == 0) e = b;  // empty
            }
            D.begin[i] = std::uint32_t(b);
            D.end[i] = std::uint32_t(e);
        }
        if (c.ranges != Ranges::end_only) a.kv_begin = D.begin.data();
        if (c.ranges != Ranges::begin_only) a.kv_end = D.end.data();
    }
    return D;
}

// Largest |out - reference| over all outputs; REQUIREs the padding untouched.
double max_error(const Data& D) {
    const fk::AttentionArgs& a = D.args;
    const std::size_t d = a.head_dim, group = a.n_heads / a.n_kv_heads;
    double worst = 0;
    std::vector<double> p(a.n_kv);
    for (std::size_t h = 0; h < a.n_heads; ++h) {
        const std::size_t g = h / group;
        for (std::size_t i = 0; i < a.n_q; ++i) {
            std::size_t lo = a.kv_begin ? a.kv_begin[i] : 0, hi = a.kv_end ? a.kv_end[i] : a.n_kv;
            if (a.causal) hi = std::min(hi, a.q_pos0 + i + 1);
            const float* q = a.q + i * a.q_row_stride + h * a.q_head_stride;
            const float* o = a.out + i * a.out_row_stride + h * a.out_head_stride;
            double m = -INFINITY, sum = 0;
            for (std::size_t j = lo; j < hi; ++j) {
                const float* k = a.k + j * a.k_row_stride + g * a.k_head_stride;
                double s = 0;
                for (std::size_t e = 0; e < d; ++e) s += double(q[e]) * k[e];
                s *= a.scale;
                if (a.alibi_slopes) s += double(a.alibi_slopes[h]) * (double(j) - double(a.q_pos0 + i));
                p[j] = s;
                m = std::max(m, s);
            }
            for (std::size_t j = lo; j < hi; ++j) sum += (p[j] = std::exp(p[j] - m));
            for (std::size_t e = 0; e < d; ++e) {
                double r = 0;
                for (std::size_t j = lo; j < hi; ++j) r += p[j] * a.v[j * a.v_row_stride + g * a.v_head_stride + e];
                if (lo < hi) r /= sum;  // an empty range gives 0
                worst = std::max(worst, std::fabs(o[e] - r));
            }
        }
    }
    // Everything between and after the output heads keeps its sentinel.
    std::size_t written = 0;
    for (float x : D.out) written += x != ktest::kSentinel;
    REQUIRE(written <= a.n_q * a.n_heads * d);
    for (std::size_t i = 0; i < a.n_q; ++i)
        for (std::size_t j = a.n_heads * d; j < a.out_row_stride; ++j)
            REQUIRE(D.out[i * a.out_row_stride + j] == ktest::kSentinel);
    REQUIRE(D.out.back() == ktest::kSentinel);
    return worst;
}

void check_case(const Case& c, unsigned seed) {
    for (int nt : {1, 2}) {
        ktest::Threads threads(nt);
        Data D = make(c, seed);
        fk::attention(D.args);
        const double err = max_error(D);
        // Outputs are O(1); the float kernel stays within ~1.2e-6 of the double
        // reference on these cases (measured), 1e-5 leaves room for other ISAs.
        const double tol = 1e-5;
        INFO("n_q ", c.n_q, " n_kv ", c.n_kv, " heads ", c.n_heads, "/", c.n_kv_heads, " head_dim ", c.head_dim,
             " causal ", c.causal, " q_pos0 ", c.q_pos0, " alibi ", c.alibi, " ranges ", int(c.ranges), " fused ",
             c.fused, " threads ", nt, " err ", err);
        CHECK(err < tol);
    }
}

}  // namespace

TEST_CASE("attention: every head_dim from 1 to 130, block and row paths") {
    for (std::size_t d = 1; d <= 130; ++d) {
        const unsigned s = unsigned(d) * 10;
        // Prefill-shaped, grouped-query (3 query heads per kv head), causal after a cache of 18.
        check_case({19, 37, 3, 1, d, true, 18, d % 2 == 1, Ranges::none, false}, s);
        // Fused QKV buffer, per-row ranges.
        check_case({21, 21, 2, 2, d, false, 0, false, Ranges::random, true}, s + 1);
        // Decoding: one query row against a cache.
        check_case({1, 37, 2, 2, d, true, 36, d % 3 == 0, Ranges::none, false}, s + 2);
        // A few query rows (speculative / small batches) take the row path too.
        check_case({3, 37, 4, 2, d, d % 2 == 0, 34, false, d % 4 == 1 ? Ranges::random : Ranges::none, false}, s + 3);
    }
}

TEST_CASE("attention: prefill shapes") {
    unsigned s = 5000;
    check_case({65, 65, 4, 4, 64, true, 0, false, Ranges::none, true}, s++);
    check_case({130, 130, 4, 2, 80, true, 0, true, Ranges::none, true}, s++);
    check_case({257, 257, 2, 2, 64, false, 0, false, Ranges::none, true}, s++);  // ViT: 256 patches + class token
    check_case({64, 320, 2, 2, 64, false, 0, false, Ranges::none, false}, s++);  // Perceiver: latents over media+latents
    check_case({64, 200, 2, 1, 96, true, 136, false, Ranges::none, false}, s++);  // chunk after a cache of 136
    check_case({300, 1000, 1, 1, 128, true, 700, true, Ranges::none, false}, s++);
    for (std::size_t n : {7, 8, 9, 15, 16, 17, 31, 33, 47, 63, 64, 65, 100})
        check_case({n, n, 2, 1, 32, true, 0, n % 2 == 0, Ranges::none, true}, s++);
    // q_pos0 beyond the cache: the causal limit is clipped to the keys there are.
    check_case({20, 30, 2, 2, 16, true, 50, false, Ranges::none, false}, s++);
}

TEST_CASE("attention: per-row key ranges (Flamingo's media mask) with and without causality") {
    unsigned s = 6000;
    for (Ranges r : {Ranges::random, Ranges::media, Ranges::begin_only, Ranges::end_only})
        for (bool causal : {false, true}) {
            check_case({100, 300, 3, 3, 32, causal, 200, false, r, false}, s++);
            check_case({70, 70, 2, 2, 64, causal, 0, causal, r, true}, s++);
            check_case({1, 500, 2, 2, 64, causal, 499, false, r, false}, s++);
        }
}

TEST_CASE("attention: decoding against long caches, keys split across threads") {
    unsigned s = 7000;
    check_case({1, 1000, 16, 16, 64, true, 999, false, Ranges::none, false}, s++);
    check_case({1, 3000, 1, 1, 128, true, 2999, false, Ranges::none, false}, s++);  // one head: split keys
    check_case({1, 4100, 2, 2, 80, true, 4099, true, Ranges::none, false}, s++);
    check_case({1, 4100, 1, 1, 64, false, 0, false, Ranges::random, false}, s++);
    check_case({2, 2500, 1, 1, 64, true, 2498, false, Ranges::none, false}, s++);
    check_case({1, 1100, 8, 1, 64, true, 1099, false, Ranges::none, false}, s++);  // multi-query
}

TEST_CASE("attention: empty inputs give zero rows") {
    for (std::size_t n_q : {1, 40}) {
        Case c{n_q, 0, 2, 2, 16, false, 0, false, Ranges::none, false};
        Data D = make(c, 1);
        fk::attention(D.args);
        for (std::size_t i = 0; i < n_q; ++i)
            for (std::size_t e = 0; e < 2 * 16; ++e) CHECK(D.out[i * D.args.out_row_stride + e] == 0.0f);
    }
    // Every row's range empty.
    Case c{40, 50, 2, 2, 16, false, 0, false, Ranges::random, false};
    Data D = make(c, 2);
    std::fill(D.end.begin(), D.end.end(), 0u);
    std::fill(D.begin.begin(), D.begin.end(), 0u);
    fk::attention(D.args);
    CHECK(max_error(D) == 0.0);
    // No query rows: nothing is written.
    Data E = make({0, 10, 1, 1, 8, false, 0, false, Ranges::none, false}, 3);
    fk::attention(E.args);
}

TEST_CASE("attention may write its output over the queries") {
    for (int nt : {1, 2})
        for (std::size_t n : {1, 3, 40, 130}) {
            ktest::Threads threads(nt);
            Data D = make({n, n, 4, 2, 24, true, 0, false, Ranges::none, true}, 11);
            fk::attention(D.args);  // into the separate output buffer
            auto a = D.args;
            a.out = const_cast<float*>(a.q);
            a.out_row_stride = a.q_row_stride;
            a.out_head_stride = a.q_head_stride;
            fk::attention(a);
            std::size_t differ = 0;
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t e = 0; e < 4 * 24; ++e)
                    differ += a.out[i * a.out_row_stride + e] != D.out[i * D.args.out_row_stride + e];
            INFO("n ", n, " threads ", nt);
            CHECK(differ == 0);
        }
}

TEST_CASE("attention rejects inconsistent arguments") {
    Data D = make({4, 10, 4, 2, 8, false, 0, false, Ranges::random, false}, 1);
    auto a = D.args;
    a.n_kv_heads = 3;
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
    a = D.args;
    a.head_dim = 0;
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
    a = D.args;
    a.k = nullptr;
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
    a = D.args;
    a.q_pos0 = std::size_t(1) << 40;  // positions past 2^24 are not exact in float
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
    a = D.args;
    D.end[2] = 11;  // past n_kv
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
    D.end[2] = 5;
    D.begin[2] = 6;  // begin after end
    CHECK_THROWS_AS(fk::attention(a), flamingo::Error);
}

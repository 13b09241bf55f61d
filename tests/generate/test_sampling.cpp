// Sampling warpers (temperature, top-k, top-p) against their definitions, and
// the no-repeat-n-gram rule against a brute-force check.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>

#include <flamingo/generate/logits.hpp>

using namespace flamingo::generate;

namespace {
// Empirical frequencies of `draws` samples.
std::vector<double> frequencies(const std::vector<float>& logits, const SamplingOptions& o, int draws) {
    Sampler sample(o, 42);
    std::vector<double> f(logits.size());
    for (int i = 0; i < draws; ++i) {
        std::vector<float> s = logits;
        f[std::size_t(sample(s))] += 1.0 / draws;
    }
    return f;
}
std::vector<double> softmax(const std::vector<double>& x) {
    double mx = *std::max_element(x.begin(), x.end()), sum = 0;
    std::vector<double> p(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) sum += p[i] = std::exp(x[i] - mx);
    for (double& v : p) v /= sum;
    return p;
}
}  // namespace

TEST_CASE("temperature sampling draws from softmax(logits / T)") {
    const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    for (float T : {0.5f, 1.0f, 2.0f}) {
        auto f = frequencies(logits, {T, 0, 1.0f}, 200000);
        std::vector<double> scaled;
        for (float l : logits) scaled.push_back(double(l) / T);
        auto p = softmax(scaled);
        for (std::size_t i = 0; i < p.size(); ++i) CHECK(f[i] == doctest::Approx(p[i]).epsilon(0.02).scale(0.01));
    }
}

TEST_CASE("top-k keeps the k most likely tokens, renormalised") {
    const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    auto f = frequencies(logits, {1.0f, 2, 1.0f}, 100000);
    auto p = softmax({2.0, 1.5});
    CHECK(f[1] == doctest::Approx(p[0]).epsilon(0.02));
    CHECK(f[4] == doctest::Approx(p[1]).epsilon(0.02));
    CHECK(f[0] + f[2] + f[3] == 0.0);
    auto g = frequencies(logits, {1.0f, 1, 1.0f}, 1000);  // k = 1 is greedy
    CHECK(g[1] == doctest::Approx(1.0));
}

TEST_CASE("top-p keeps the smallest set whose probability reaches p") {
    // probabilities 0.5, 0.3, 0.2: p = 0.6 keeps the first two, p = 0.5 only the first
    const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
    auto f = frequencies(logits, {1.0f, 0, 0.6f}, 100000);
    CHECK(f[0] == doctest::Approx(0.5 / 0.8).epsilon(0.02));
    CHECK(f[1] == doctest::Approx(0.3 / 0.8).epsilon(0.03));
    CHECK(f[2] == 0.0);
    auto g = frequencies(logits, {1.0f, 0, 0.5f}, 1000);
    CHECK(g[0] == doctest::Approx(1.0));
}

TEST_CASE("the same seed gives the same draws") {
    const std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f};
    Sampler a({}, 7), b({}, 7);
    for (int i = 0; i < 100; ++i) {
        std::vector<float> x = logits, y = logits;
        CHECK(a(x) == b(y));
    }
}

TEST_CASE("no-repeat-n-gram bans exactly the completions of earlier n-grams") {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 200; ++trial) {
        std::vector<std::int32_t> seq(std::size_t(rng() % 12));
        for (auto& t : seq) t = std::int32_t(rng() % 4);
        for (std::size_t n = 1; n <= 4; ++n) {
            std::vector<float> s(4, 0.0f);
            ban_repeated_ngrams(seq, n, s);
            for (std::int32_t tok = 0; tok < 4; ++tok) {
                // brute force: would appending tok create an n-gram seen before?
                std::vector<std::int32_t> ext = seq;
                ext.push_back(tok);
                bool repeat = false;
                if (ext.size() >= n) {
                    std::vector<std::int32_t> last(ext.end() - std::ptrdiff_t(n), ext.end());
                    for (std::size_t i = 0; i + n < ext.size(); ++i)
                        if (std::equal(last.begin(), last.end(), ext.begin() + std::ptrdiff_t(i))) repeat = true;
                }
                CHECK((s[std::size_t(tok)] == -INFINITY) == repeat);
            }
        }
    }
}

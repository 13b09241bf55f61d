#pragma once
// Turning next-token logits into choices, with Hugging Face generate()'s
// semantics: log-softmax, the no-repeat-n-gram rule, temperature / top-k /
// top-p sampling.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

namespace flamingo::generate {

inline void log_softmax(std::span<float> x) {
    float mx = -std::numeric_limits<float>::infinity();
    for (float v : x) mx = std::max(mx, v);
    double sum = 0;
    for (float v : x) sum += std::exp(double(v) - mx);
    const float lse = mx + float(std::log(sum));
    for (float& v : x) v -= lse;
}

inline std::size_t argmax(std::span<const float> x) {
    return std::size_t(std::max_element(x.begin(), x.end()) - x.begin());
}

// Sets to -inf every token that would complete an n-gram already present in
// `seq` (prompt included), as NoRepeatNGramLogitsProcessor.
inline void ban_repeated_ngrams(std::span<const std::int32_t> seq, std::size_t n, std::span<float> scores) {
    if (n == 0 || seq.size() + 1 < n) return;
    const std::size_t prefix = n - 1, start = seq.size() - prefix;
    for (std::size_t i = 0; i + n <= seq.size(); ++i) {
        if (std::equal(seq.begin() + std::ptrdiff_t(i), seq.begin() + std::ptrdiff_t(i + prefix),
                       seq.begin() + std::ptrdiff_t(start))) {
            const std::int32_t banned = seq[i + prefix];
            if (banned >= 0 && std::size_t(banned) < scores.size())
                scores[std::size_t(banned)] = -std::numeric_limits<float>::infinity();
        }
    }
}

struct SamplingOptions {
    float temperature = 1.0f;
    std::size_t top_k = 50;  // Hugging Face's default when sampling; 0 disables
    float top_p = 1.0f;
};

// Hugging Face's sampling warpers in their order (temperature, top-k, top-p),
// then a draw from the softmax. Keeps its buffers between draws, so sampling
// allocates nothing once it has seen the vocabulary.
class Sampler {
public:
    explicit Sampler(const SamplingOptions& o = {}, std::uint64_t seed = 0) : o_(o), rng_(seed) {}

    // `scores` is modified.
    std::int32_t operator()(std::span<float> scores) {
        const float ninf = -std::numeric_limits<float>::infinity();
        if (o_.temperature != 1.0f)
            for (float& s : scores) s /= o_.temperature;
        const std::size_t V = scores.size();
        if (o_.top_k > 0 && o_.top_k < V) {
            tmp_.assign(scores.begin(), scores.end());
            std::nth_element(tmp_.begin(), tmp_.begin() + std::ptrdiff_t(o_.top_k - 1), tmp_.end(), std::greater<>());
            const float kth = tmp_[o_.top_k - 1];
            for (float& s : scores)
                if (s < kth) s = ninf;
        }
        if (o_.top_p < 1.0f) {
            // As TopPLogitsWarper: in ascending order of probability, drop tokens while
            // the cumulative probability stays <= 1 - top_p; the most likely one stays.
            // Ties keep index order, as a stable sort does.
            order_.resize(V);
            std::iota(order_.begin(), order_.end(), 0);
            std::sort(order_.begin(), order_.end(), [&](std::size_t a, std::size_t b) {
                return scores[a] < scores[b] || (scores[a] == scores[b] && a < b);
            });
            tmp_.assign(scores.begin(), scores.end());
            log_softmax(tmp_);
            float cum = 0.0f;
            for (std::size_t i = 0; i + 1 < V; ++i) {
                cum += std::exp(tmp_[order_[i]]);
                if (cum > 1.0f - o_.top_p) break;
                scores[order_[i]] = ninf;
            }
        }
        log_softmax(scores);
        std::uniform_real_distribution<double> u(0.0, 1.0);
        double r = u(rng_), cum = 0;
        std::size_t last = 0;
        for (std::size_t i = 0; i < V; ++i) {
            if (scores[i] == ninf) continue;
            cum += std::exp(double(scores[i]));
            last = i;
            if (r < cum) return std::int32_t(i);
        }
        return std::int32_t(last);
    }

    // Sizes the buffers for a vocabulary of V.
    void reserve(std::size_t V) {
        tmp_.reserve(V);
        order_.reserve(V);
    }

private:
    SamplingOptions o_;
    std::mt19937_64 rng_;
    std::vector<float> tmp_;
    std::vector<std::size_t> order_;
};

}  // namespace flamingo::generate

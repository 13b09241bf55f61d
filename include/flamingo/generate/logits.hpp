#pragma once
// Turning next-token logits into choices, with Hugging Face generate()'s
// semantics: log-softmax, the no-repeat-n-gram rule, temperature / top-k /
// top-p sampling.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
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

// Hugging Face's warpers in their order (temperature, top-k, top-p), then a
// draw from the softmax. `scores` is modified.
inline std::int32_t sample(std::span<float> scores, const SamplingOptions& o, std::mt19937_64& rng) {
    const float ninf = -std::numeric_limits<float>::infinity();
    if (o.temperature != 1.0f)
        for (float& s : scores) s /= o.temperature;
    const std::size_t V = scores.size();
    if (o.top_k > 0 && o.top_k < V) {
        std::vector<float> tmp(scores.begin(), scores.end());
        std::nth_element(tmp.begin(), tmp.begin() + std::ptrdiff_t(o.top_k - 1), tmp.end(), std::greater<>());
        const float kth = tmp[o.top_k - 1];
        for (float& s : scores)
            if (s < kth) s = ninf;
    }
    if (o.top_p < 1.0f) {
        // As TopPLogitsWarper: in ascending order of probability, drop tokens while
        // the cumulative probability stays <= 1 - top_p; the most likely one stays.
        std::vector<std::size_t> order(V);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
        std::vector<float> p(scores.begin(), scores.end());
        log_softmax(p);
        float cum = 0.0f;
        for (std::size_t i = 0; i + 1 < V; ++i) {
            cum += std::exp(p[order[i]]);
            if (cum > 1.0f - o.top_p) break;
            scores[order[i]] = ninf;
        }
    }
    log_softmax(scores);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    double r = u(rng), cum = 0;
    std::size_t last = 0;
    for (std::size_t i = 0; i < V; ++i) {
        if (scores[i] == ninf) continue;
        cum += std::exp(double(scores[i]));
        last = i;
        if (r < cum) return std::int32_t(i);
    }
    return std::int32_t(last);
}

}  // namespace flamingo::generate

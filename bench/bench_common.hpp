#pragma once
// What the model-level benches (batching, chat, contexts, prefix) share.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

#include <flamingo/model/weights.hpp>

namespace bench {

// The value of --weights: f32, bf16, q8 or q4. Anything else ends the bench
// with an error, so that a typo never runs (and reports) f32 by mistake.
inline flamingo::model::WeightType weights_arg(const char* bench, std::string_view v) {
    if (const auto t = flamingo::model::parse_weight_type(v)) return *t;
    std::fprintf(stderr, "%s: --weights must be f32, bf16, q8 or q4, not \"%.*s\"\n", bench, int(v.size()), v.data());
    std::exit(2);
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace bench

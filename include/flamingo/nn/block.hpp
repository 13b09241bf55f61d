#pragma once
// The pre-norm transformer block every family here is made of:
//   sequential:  x = x + attn(norm1(x));  x = x + ffn(norm2(x))
//   parallel:    x = x + attn(norm1(x)) + ffn(norm2(x))      (GPT-NeoX)
#include "attention.hpp"
#include "mlp.hpp"
#include "norm.hpp"

namespace flamingo::nn {

template <std::size_t Width, class Ffn>
struct TransformerBlock {
    Norm<Width> norm1, norm2;
    SelfAttention<Width> attn;
    Ffn ffn;
    bool parallel_residual = false;

    template <class XV>
    void operator()(const XV& x, std::span<const Segment> segments, std::size_t layer, Scratch& s) const {
        const std::size_t M = x.extent(0), D = x.extent(1);
        auto h = s.rows<Width>(kNormed, M, D);
        norm1(x, h);
        if (parallel_residual) {
            auto a = s.rows<Width>(kBranch, M, D);
            attn(h, a, segments, layer, s);
            norm2(x, h);
            ffn(h, a, s, /*accumulate=*/true);
            x.assign(x + a);
        } else {
            attn(h, x, segments, layer, s, /*accumulate=*/true);
            norm2(x, h);
            ffn(h, x, s, /*accumulate=*/true);
        }
    }
};

}  // namespace flamingo::nn

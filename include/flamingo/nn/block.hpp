#pragma once
// The pre-norm transformer block every family here is made of:
//   sequential:  x = x + attn(norm1(x));  x = x + ffn(norm2(x))
//   parallel:    x = x + attn(norm1(x)) + ffn(norm2(x))      (GPT-NeoX)
#include <algorithm>

#include "attention.hpp"
#include "mlp.hpp"
#include "norm.hpp"

namespace flamingo::nn {

struct TransformerBlock {
    Norm norm1, norm2;
    SelfAttention attn;
    Mlp ffn;
    bool parallel_residual = false;

    std::size_t workspace(std::size_t M) const {
        const std::size_t D = norm1.n;
        return ws_floats(M, D) * (parallel_residual ? 2 : 1) + std::max(attn.workspace(M), ffn.workspace(M));
    }

    void operator()(const Act& x, std::span<const Segment> segments, std::size_t layer, Workspace& ws) const {
        Workspace::Frame frame(ws);
        const std::size_t M = x.extent(0), D = x.extent(1);
        auto h = ws.rows(M, D);
        norm1(x, h);
        if (parallel_residual) {
            auto a = ws.rows(M, D);
            attn(h, a, segments, layer, ws);
            norm2(x, h);
            ffn(h, a, ws, /*accumulate=*/true);
            x.assign(x + a);
        } else {
            attn(h, x, segments, layer, ws, /*accumulate=*/true);
            norm2(x, h);
            ffn(h, x, ws, /*accumulate=*/true);
        }
    }
};

}  // namespace flamingo::nn

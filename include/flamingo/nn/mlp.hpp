#pragma once
// Feed-forward networks:
//   Mlp:         down(act(up(x)))                  GELU, QuickGELU, ReLU ... (ViT, MPT, GPT-NeoX)
//                down(act(gate(x)) * up(x))        when it has a gate (LLaMA's SwiGLU)
//   FeedForward: mlp(norm(x))                      OpenFlamingo's FeedForward (LayerNorm, Linear,
//                                                  GELU, Linear, no biases), in the Perceiver and
//                                                  the gated cross-attention
#include <algorithm>
#include <string>

#include "../core/expr.hpp"
#include "../kernels/activation.hpp"
#include "linear.hpp"
#include "norm.hpp"

namespace flamingo::nn {

enum class Activation { GeluErf, GeluTanh, QuickGelu, Silu, Relu };

// Hugging Face ACT2FN names (the ones our decoder families use).
inline Activation activation_from_name(const std::string& name) {
    if (name == "gelu") return Activation::GeluErf;
    if (name == "gelu_new" || name == "gelu_fast" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
    if (name == "quick_gelu") return Activation::QuickGelu;
    if (name == "silu" || name == "swish") return Activation::Silu;
    if (name == "relu") return Activation::Relu;
    fail(ErrorKind::Config, "unsupported activation \"", name, "\"");
}

inline void activate(Activation a, float* x, std::size_t n) {
    switch (a) {
        case Activation::GeluErf: return kernels::gelu_erf(x, n);
        case Activation::GeluTanh: return kernels::gelu_tanh(x, n);
        case Activation::QuickGelu: return kernels::quick_gelu(x, n);
        case Activation::Silu: return kernels::silu(x, n);
        case Activation::Relu:
            for (std::size_t i = 0; i < n; ++i) x[i] = std::max(x[i], 0.0f);
            return;
    }
}

struct Mlp {
    Linear up, gate, down;  // gate empty: no gating
    Activation act = Activation::GeluErf;

    std::size_t workspace(std::size_t M) const { return ws_floats(M, up.out()) * (gate.empty() ? 1 : 2); }

    // y (+)= mlp(x); x and y are [M, width].
    void operator()(const CAct& x, const Act& y, Workspace& ws, bool accumulate = false) const {
        Workspace::Frame f(ws);
        auto h = ws.rows(x.extent(0), up.out());
        up(x, h);
        if (gate.empty()) {
            activate(act, h.data(), h.size());
        } else {
            auto g = ws.rows(x.extent(0), gate.out());
            gate(x, g);
            if (act == Activation::Silu) {
                kernels::swiglu(g.data(), h.data(), h.data(), h.size());
            } else {
                activate(act, g.data(), g.size());
                h.assign(g * h);
            }
        }
        down(h, y, accumulate);
    }
};

struct FeedForward {
    Norm norm;
    Mlp mlp;

    std::size_t workspace(std::size_t M) const { return ws_floats(M, norm.n) + mlp.workspace(M); }

    // y (+)= mlp(norm(x))
    void operator()(const CAct& x, const Act& y, Workspace& ws, bool accumulate = false) const {
        Workspace::Frame f(ws);
        auto h = ws.rows(x.extent(0), x.extent(1));
        norm(x, h);
        mlp(h, y, ws, accumulate);
    }
};

}  // namespace flamingo::nn

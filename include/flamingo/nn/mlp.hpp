#pragma once
// Feed-forward networks: Linear, activation, Linear (GELU, QuickGELU, ReLU ...)
// and the gated form of LLaMA (SwiGLU: down(act(gate(x)) * up(x))).
#include <algorithm>
#include <string>

#include "../core/expr.hpp"
#include "../kernels/activation.hpp"
#include "linear.hpp"

namespace flamingo::nn {

enum class Activation { GeluErf, GeluTanh, QuickGelu, Silu, Relu };

// Hugging Face ACT2FN names (the ones our decoder families use).
inline Activation activation_from_name(const std::string& name) {
    if (name == "gelu") return Activation::GeluErf;
    if (name == "gelu_new" || name == "gelu_fast" || name == "gelu_pytorch_tanh") return Activation::GeluTanh;
    if (name == "quick_gelu") return Activation::QuickGelu;
    if (name == "silu" || name == "swish") return Activation::Silu;
    if (name == "relu") return Activation::Relu;
    fail("unsupported activation \"", name, "\"");
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

// down(act(up(x))). Hidden is the inner width.
template <std::size_t Width = dyn, std::size_t Hidden = dyn>
struct Mlp {
    Linear<Hidden, Width> up;
    Linear<Width, Hidden> down;
    Activation act = Activation::GeluErf;

    // y (+)= mlp(x); x and y are [M, Width].
    template <class XV, class YV>
    void operator()(const XV& x, const YV& y, Scratch& s, bool accumulate = false) const {
        auto h = s.rows<Hidden>(kInner0, x.extent(0), up.out());
        up(x, h);
        activate(act, h.data(), h.size());
        down(h, y, accumulate);
    }
};

// down(act(gate(x)) * up(x)).
template <std::size_t Width = dyn, std::size_t Hidden = dyn>
struct GatedMlp {
    Linear<Hidden, Width> gate, up;
    Linear<Width, Hidden> down;
    Activation act = Activation::Silu;

    template <class XV, class YV>
    void operator()(const XV& x, const YV& y, Scratch& s, bool accumulate = false) const {
        const std::size_t M = x.extent(0), H = up.out();
        auto g = s.rows<Hidden>(kInner0, M, H);
        auto u = s.rows<Hidden>(kInner1, M, H);
        gate(x, g);
        up(x, u);
        if (act == Activation::Silu) {
            kernels::swiglu(g.data(), u.data(), g.data(), g.size());
        } else {
            activate(act, g.data(), g.size());
            g.assign(g * u);
        }
        down(g, y, accumulate);
    }
};

}  // namespace flamingo::nn

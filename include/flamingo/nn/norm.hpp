#pragma once
// LayerNorm (with or without bias) and RMSNorm over the last axis.
#include <string>

#include "../kernels/norm.hpp"
#include "linear.hpp"

namespace flamingo::nn {

template <std::size_t N = dyn>
struct Norm {
    enum class Kind { LayerNorm, RMSNorm };
    Kind kind = Kind::LayerNorm;
    const float* weight = nullptr;
    const float* bias = nullptr;
    std::size_t n = 0;
    float eps = 1e-5f;

    static Norm layer_norm(WeightLoader& L, const std::string& prefix, std::size_t n, float eps, bool has_bias = true) {
        check_static(N, n, prefix + ".weight size");
        Norm r;
        r.n = n, r.eps = eps;
        r.weight = L.floats(prefix + ".weight", {n});
        if (has_bias) r.bias = L.floats(prefix + ".bias", {n});
        return r;
    }
    static Norm rms_norm(WeightLoader& L, const std::string& prefix, std::size_t n, float eps) {
        check_static(N, n, prefix + ".weight size");
        Norm r;
        r.kind = Kind::RMSNorm;
        r.n = n, r.eps = eps;
        r.weight = L.floats(prefix + ".weight", {n});
        return r;
    }

    template <class XV, class YV>
    void operator()(const XV& x, const YV& y) const {
        check(x.extent(1) == n && y.extent(1) == n && x.extent(0) == y.extent(0), "Norm(", n, "): cannot map ",
              shape_string(x.extents()), " to ", shape_string(y.extents()));
        const std::size_t rows = x.extent(0), ldx = std::size_t(x.stride(0)), ldy = std::size_t(y.stride(0));
        if (kind == Kind::LayerNorm) kernels::layer_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, weight, bias, eps);
        else kernels::rms_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, weight, eps);
    }
};

}  // namespace flamingo::nn

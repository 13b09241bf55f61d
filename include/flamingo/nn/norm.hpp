#pragma once
// LayerNorm (with or without bias) and RMSNorm over the last axis.
#include "../core/error.hpp"
#include "../kernels/norm.hpp"
#include "workspace.hpp"

namespace flamingo::nn {

struct Norm {
    enum class Kind { LayerNorm, RMSNorm };
    Kind kind = Kind::LayerNorm;
    const float* weight = nullptr;
    const float* bias = nullptr;  // LayerNorm only, optional
    std::size_t n = 0;
    float eps = 1e-5f;

    bool empty() const { return weight == nullptr; }

    // y = norm(x) row by row; y may be x.
    void operator()(const CAct& x, const Act& y) const {
        check(x.extent(1) == n && y.extent(1) == n && x.extent(0) == y.extent(0), ErrorKind::Shape, "Norm(", n,
              "): cannot map ", shape_string(x.extents()), " to ", shape_string(y.extents()));
        const std::size_t rows = x.extent(0), ldx = std::size_t(x.stride(0)), ldy = std::size_t(y.stride(0));
        if (kind == Kind::LayerNorm) kernels::layer_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, weight, bias, eps);
        else kernels::rms_norm_rows(x.data(), ldx, y.data(), ldy, rows, n, weight, eps);
    }
};

}  // namespace flamingo::nn

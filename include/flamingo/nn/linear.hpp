#pragma once
// nn.Linear and nn.Embedding over weights held as dtype-tagged views (F32 or
// BF16, usually straight into the memory-mapped checkpoint), or for Linear as
// block-quantised q8/q4 matrices (kernels/quant.hpp).
#include <cstddef>
#include <cstring>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/gemm.hpp"
#include "../kernels/quant.hpp"
#include "workspace.hpp"

namespace flamingo::nn {

// y = x W^T + b with W stored [out, in] (PyTorch nn.Linear).
struct Linear {
    AnyView w;          // [out, in], F32 or BF16; empty when q holds the weights
    kernels::QMatrix q;  // [out, in] quantised (q8/q4), used when w is empty
    const float* bias = nullptr;

    bool quantized() const { return w.empty() && !q.empty(); }
    bool empty() const { return w.empty() && q.empty(); }
    std::size_t out() const { return quantized() ? q.rows : w.extent(0); }
    std::size_t in() const { return quantized() ? q.cols : w.extent(1); }

    // y[M, out] = x[M, in] W^T + b   (accumulate: y += ...)
    void operator()(const CAct& x, const Act& y, bool accumulate = false) const {
        check(x.extent(1) == in() && y.extent(1) == out() && x.extent(0) == y.extent(0) && x.stride(1) == 1 &&
                  y.stride(1) == 1,
              ErrorKind::Shape, "Linear ", out(), "x", in(), ": cannot map ", shape_string(x.extents()), " to ",
              shape_string(y.extents()));
        const std::size_t M = x.extent(0), ldx = std::size_t(x.stride(0)), ldy = std::size_t(y.stride(0));
        if (quantized()) return kernels::linear_q(M, x.data(), ldx, q, bias, y.data(), ldy, accumulate);
        switch (w.dtype()) {
            case DType::F32:
                return kernels::linear(M, out(), in(), x.data(), ldx, static_cast<const float*>(w.data()), in(), bias,
                                       y.data(), ldy, accumulate);
            case DType::BF16:
                return kernels::linear(M, out(), in(), x.data(), ldx, static_cast<const bf16*>(w.data()), in(), bias,
                                       y.data(), ldy, accumulate);
            default:
                fail(ErrorKind::Shape, "Linear: weights of dtype ", dtype_name(w.dtype()), " are not supported");
        }
    }
};

// A lookup table [rows, dim] (token embeddings), F32 or BF16.
struct Embedding {
    AnyView table;

    std::size_t rows() const { return table.extent(0); }
    std::size_t dim() const { return table.extent(1); }
    // Row r as floats.
    void operator()(std::size_t r, float* out) const {
        const std::size_t D = dim();
        if (table.dtype() == DType::F32) {
            std::memcpy(out, static_cast<const float*>(table.data()) + r * D, D * sizeof(float));
        } else {
            const bf16* p = static_cast<const bf16*>(table.data()) + r * D;
            for (std::size_t i = 0; i < D; ++i) out[i] = float(p[i]);
        }
    }
};

}  // namespace flamingo::nn

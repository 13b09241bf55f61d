#pragma once
// nn.Linear, activations views and the per-session scratch memory.
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/gemm.hpp"
#include "weights.hpp"

namespace flamingo::nn {

// Activations: a [rows, W] block of rows (W static in presets, dyn otherwise).
template <std::size_t W = dyn>
using Act = TensorView<float, extents<dyn, W>>;
template <std::size_t W = dyn>
using CAct = TensorView<const float, extents<dyn, W>>;

template <std::size_t W = dyn>
Act<W> act(float* p, std::size_t rows, std::size_t cols, std::size_t ld) {
    return Act<W>(p, extents<dyn, W>(rows, cols), {std::ptrdiff_t(ld), 1});
}
// Columns [c0, c0 + n) of a row block.
template <class V>
auto columns(const V& v, std::size_t c0, std::size_t n) {
    return v.template slice<1>(c0, c0 + n);
}

// Checks a preset's compile-time size against the checkpoint's.
inline void check_static(std::size_t stat, std::size_t actual, const std::string& what) {
    if (stat != dyn && stat != actual) fail(what, ": this preset is compiled for ", stat, ", the model has ", actual);
}

// y = x W^T + b with W stored [out, in] (PyTorch nn.Linear).
template <std::size_t Out = dyn, std::size_t In = dyn>
struct Linear {
    Matrix w;
    const float* bias = nullptr;

    std::size_t out() const { return w.rows; }
    std::size_t in() const { return w.cols; }

    static Linear load(WeightLoader& L, const std::string& prefix, std::size_t out, std::size_t in, bool has_bias) {
        check_static(Out, out, prefix + ".weight rows");
        check_static(In, in, prefix + ".weight columns");
        Linear l;
        l.w = L.matrix(prefix + ".weight", out, in);
        if (has_bias) l.bias = L.floats(prefix + ".bias", {out});
        return l;
    }

    // y[M, out] = x[M, in] W^T + b   (accumulate: y += ...)
    template <class XV, class YV>
    void operator()(const XV& x, const YV& y, bool accumulate = false) const {
        static_assert(extents_compatible(XV::extents_type::static_extent(1), In), "Linear: input width mismatch");
        static_assert(extents_compatible(YV::extents_type::static_extent(1), Out), "Linear: output width mismatch");
        check(x.extent(1) == in() && y.extent(1) == out() && x.extent(0) == y.extent(0) && x.stride(1) == 1 &&
                  y.stride(1) == 1,
              "Linear ", out(), "x", in(), ": cannot map ", shape_string(x.extents()), " to ",
              shape_string(y.extents()));
        const std::size_t M = x.extent(0);
        if (w.f32)
            kernels::linear(M, out(), in(), x.data(), std::size_t(x.stride(0)), w.f32, in(), bias, y.data(),
                            std::size_t(y.stride(0)), accumulate);
        else
            kernels::linear(M, out(), in(), x.data(), std::size_t(x.stride(0)), w.b16, in(), bias, y.data(),
                            std::size_t(y.stride(0)), accumulate);
    }
};

// Working memory of a forward pass: numbered buffers that only grow, so that
// once a session has seen its largest step, decoding allocates nothing.
class Scratch {
public:
    static constexpr int kSlots = 8;

    float* get(int slot, std::size_t n) {
        auto& b = slots_[std::size_t(slot)];
        if (b.size() < n) {
            b.assign(n, 0.0f);
            ++grows_;
        }
        return b.data();
    }
    template <std::size_t W = dyn>
    Act<W> rows(int slot, std::size_t rows, std::size_t cols) {
        return act<W>(get(slot, rows * cols), rows, cols, cols);
    }
    std::uint32_t* indices(int slot, std::size_t n) {
        auto& b = index_slots_[std::size_t(slot)];
        if (b.size() < n) {
            b.assign(n, 0);
            ++grows_;
        }
        return b.data();
    }
    std::size_t grows() const { return grows_; }

private:
    std::array<std::vector<float>, kSlots> slots_;
    std::array<std::vector<std::uint32_t>, 2> index_slots_;
    std::size_t grows_ = 0;
};

// Scratch slots: a block owns 0-1 (normed input, branch output) and 6-7;
// attention and feed-forward, never live at the same time, use 2-5.
enum ScratchSlot : int { kNormed = 0, kBranch = 1, kInner0 = 2, kInner1 = 3, kInner2 = 4, kInner3 = 5, kOuter0 = 6, kOuter1 = 7 };

}  // namespace flamingo::nn

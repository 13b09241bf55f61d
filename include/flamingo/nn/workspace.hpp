#pragma once
// Working memory of a forward pass, owned by one context.
//
// Modules declare what a forward of M rows needs (`workspace(M)`, in floats,
// counted with ws_floats so that alignment padding is included) and take it in
// stack order inside a Frame that gives it back when the module returns. The
// context reserves the model's declared total once, so the decode loop never
// allocates. Should a declaration fall short, the forward still runs: the
// shortfall comes from an overflow block, counted in grows(), and the next
// reserve() makes the main block big enough (tests check grows() stays put).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace flamingo::nn {

// Activations: a [rows, cols] block of float rows, rows ld apart.
using Act = TensorView<float, dextents<2>>;
using CAct = TensorView<const float, dextents<2>>;

inline Act act(float* p, std::size_t rows, std::size_t cols, std::size_t ld) {
    return Act(p, dextents<2>(rows, cols), {std::ptrdiff_t(ld), 1});
}
inline Act act(float* p, std::size_t rows, std::size_t cols) { return act(p, rows, cols, cols); }
// Columns [c0, c0 + n) of a row block.
template <class V>
auto columns(const V& v, std::size_t c0, std::size_t n) {
    return v.template slice<1>(c0, c0 + n);
}

// Floats a request of n floats occupies (64-byte granules).
constexpr std::size_t ws_floats(std::size_t n) { return (n + 15) / 16 * 16; }
constexpr std::size_t ws_floats(std::size_t rows, std::size_t cols) { return ws_floats(rows * cols); }

class Workspace {
public:
    Workspace() = default;
    Workspace(const Workspace&) = delete;
    Workspace& operator=(const Workspace&) = delete;

    // Makes the main block hold at least n floats (and whatever the last forward
    // needed). Only grows; call it between forwards, never inside one.
    void reserve(std::size_t n) {
        check(top_ == 0, "Workspace::reserve inside a forward pass");
        n = ws_floats(std::max({n, high_water_, capacity_}));
        overflow_.clear();
        if (n > capacity_) {
            main_.reset(static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t(64))));
            capacity_ = n;
            ++grows_;
        }
    }

    // Gives back everything taken after it was made.
    class Frame {
    public:
        explicit Frame(Workspace& ws) : ws_(ws), top_(ws.top_), overflow_(ws.overflow_.size()) {}
        Frame(const Frame&) = delete;
        Frame& operator=(const Frame&) = delete;
        ~Frame() {
            ws_.top_ = top_;
            ws_.overflow_.resize(overflow_);
        }

    private:
        Workspace& ws_;
        std::size_t top_, overflow_;
    };

    float* floats(std::size_t n) {
        const std::size_t need = ws_floats(n);
        high_water_ = std::max(high_water_, top_ + need);
        if (top_ + need <= capacity_) {
            float* p = main_.get() + top_;
            top_ += need;
            return p;
        }
        // Beyond the plan: a block of its own, freed when its frame ends.
        top_ += need;
        ++grows_, ++overflows_;
        overflow_.emplace_back(static_cast<float*>(::operator new(need * sizeof(float), std::align_val_t(64))));
        return overflow_.back().get();
    }
    Act rows(std::size_t rows, std::size_t cols) { return act(floats(rows * cols), rows, cols, cols); }
    std::uint32_t* indices(std::size_t n) {
        static_assert(sizeof(std::uint32_t) == sizeof(float));
        return reinterpret_cast<std::uint32_t*>(floats(n));
    }

    std::size_t capacity() const { return capacity_; }
    // Allocations so far: constant once the context has seen its largest step.
    std::size_t grows() const { return grows_; }
    // Requests beyond the reserved plan so far (zero when every module declares enough).
    std::size_t overflows() const { return overflows_; }

private:
    struct Free {
        void operator()(float* p) const { ::operator delete(p, std::align_val_t(64)); }
    };
    std::unique_ptr<float, Free> main_;
    std::vector<std::unique_ptr<float, Free>> overflow_;
    std::size_t capacity_ = 0, top_ = 0, high_water_ = 0, grows_ = 0, overflows_ = 0;
};

}  // namespace flamingo::nn

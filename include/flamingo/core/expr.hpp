#pragma once
// Elementwise expression templates over tensors and views.
//
//   y = x * tanh(gate) + residual;      // one fused loop, no temporaries
//   y = (x - mean_col) / scale_row;     // NumPy broadcasting: [M,1] and [N] against [M,N]
//
// An expression is a small tree of nodes holding views by value. Assigning it
// evaluates the tree once per element, row by row, in SIMD batches (xsimd),
// splitting rows across threads when the work is large. Shapes broadcast as in
// NumPy (right-aligned, size-1 axes stretch); two static extents that cannot
// broadcast fail to compile, run-time mismatches throw flamingo::Error naming
// both shapes. Aliasing: a destination that overlaps an operand read through a
// different layout (x = transpose(x), x = x - x[0]) is evaluated through a
// temporary; plain in-place updates (x = x * 2) are not.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "dtype.hpp"
#include "error.hpp"
#include "extents.hpp"
#include "executor.hpp"
#include "tensor.hpp"

namespace flamingo {

namespace expr {

using fbatch = xsimd::batch<float>;
inline constexpr std::size_t lanes = fbatch::size;
inline constexpr std::size_t max_rank = 4;

// A run-time shape of rank <= max_rank.
struct Shape {
    std::size_t rank = 0;
    std::array<std::size_t, max_rank> d{};
    std::size_t size() const {
        std::size_t n = 1;
        for (std::size_t i = 0; i < rank; ++i) n *= d[i];
        return n;
    }
    bool operator==(const Shape& o) const {
        if (rank != o.rank) return false;
        for (std::size_t i = 0; i < rank; ++i)
            if (d[i] != o.d[i]) return false;
        return true;
    }
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) {
    os << '[';
    for (std::size_t i = 0; i < s.rank; ++i) os << (i ? ", " : "") << s.d[i];
    return os << ']';
}

template <class Ext>
Shape shape_of(const Ext& e) {
    static_assert(Ext::rank() <= max_rank, "expressions support tensors of rank <= 4");
    Shape s;
    s.rank = Ext::rank();
    for (std::size_t i = 0; i < s.rank; ++i) s.d[i] = e.extent(i);
    return s;
}

inline bool broadcast(const Shape& a, const Shape& b, Shape& out) {
    out.rank = std::max(a.rank, b.rank);
    for (std::size_t i = 0; i < out.rank; ++i) {
        std::size_t ai = i + a.rank >= out.rank ? a.d[i + a.rank - out.rank] : 1;
        std::size_t bi = i + b.rank >= out.rank ? b.d[i + b.rank - out.rank] : 1;
        if (ai != bi && ai != 1 && bi != 1) return false;
        out.d[i] = ai == 1 ? bi : ai;
    }
    return true;
}

// ---- static broadcasting of extents --------------------------------------------

template <class A, class B>
struct broadcast_extents;

template <std::size_t... A, std::size_t... B>
struct broadcast_extents<extents<A...>, extents<B...>> {
    static constexpr std::size_t ra = sizeof...(A), rb = sizeof...(B), r = ra > rb ? ra : rb;
    static constexpr std::array<std::size_t, ra> a{A...};
    static constexpr std::array<std::size_t, rb> b{B...};
    static constexpr std::size_t at(std::size_t i, bool left) {
        if (left) return i + ra >= r ? a[i + ra - r] : 1;
        return i + rb >= r ? b[i + rb - r] : 1;
    }
    static constexpr std::size_t combine(std::size_t x, std::size_t y) {
        if (x == 1) return y;
        if (y == 1) return x;
        if (x == dyn) return y;
        return x;
    }
    static constexpr bool compatible = [] {
        for (std::size_t i = 0; i < r; ++i) {
            std::size_t x = at(i, true), y = at(i, false);
            if (x != dyn && y != dyn && x != y && x != 1 && y != 1) return false;
        }
        return true;
    }();
    template <std::size_t... I>
    static auto make(std::index_sequence<I...>) -> extents<combine(at(I, true), at(I, false))...>;
    using type = decltype(make(std::make_index_sequence<r>{}));
};

// ---- nodes ----------------------------------------------------------------------

template <class T>
float load_scalar(const T* p) {
    return to_float(*p);
}

// A tensor operand read through its (broadcast) strides.
template <class T, class Ext>
struct Leaf : node_tag {
    using extents_type = Ext;
    using value_type = std::remove_const_t<T>;

    const value_type* data;
    Ext ext;
    std::array<std::ptrdiff_t, max_rank> strides{};  // own strides, then output-space strides after bind
    std::ptrdiff_t last = 0;
    const value_type* row = nullptr;

    explicit Leaf(const TensorView<T, Ext>& v) : data(v.data()), ext(v.extents()) {
        for (std::size_t i = 0; i < Ext::rank(); ++i) strides[i] = v.stride(i);
    }
    Shape shape() const { return shape_of(ext); }

    // Re-express strides in the output's index space; broadcast axes get stride 0.
    void bind(const Shape& out) {
        std::array<std::ptrdiff_t, max_rank> s{};
        for (std::size_t k = 0; k < out.rank; ++k) {
            std::ptrdiff_t j = std::ptrdiff_t(k) - std::ptrdiff_t(out.rank - Ext::rank());
            s[k] = (j < 0 || ext.extent(std::size_t(j)) == 1) ? 0 : strides[std::size_t(j)];
        }
        strides = s;
        last = out.rank ? s[out.rank - 1] : 0;
        row = data;
    }
    void begin_row(const std::size_t* idx, std::size_t n) {
        std::ptrdiff_t off = 0;
        for (std::size_t k = 0; k < n; ++k) off += std::ptrdiff_t(idx[k]) * strides[k];
        row = data + off;
    }
    fbatch load(std::size_t c, std::size_t n) const {
        if constexpr (std::is_same_v<value_type, float>) {
            if (n == lanes && last == 1) return fbatch::load_unaligned(row + c);
        }
        if (last == 0) return fbatch(load_scalar(row));
        alignas(64) float buf[lanes] = {};
        for (std::size_t i = 0; i < n; ++i) buf[i] = load_scalar(row + std::ptrdiff_t(c + i) * last);
        return fbatch::load_aligned(buf);
    }
    template <class F>
    void for_each_leaf(F&& f) const {
        f(static_cast<const void*>(data), span_bytes(), strides, std::is_same_v<value_type, float>);
    }
    // Byte extent [data, data + span) this operand may read.
    std::size_t span_bytes() const {
        std::ptrdiff_t hi = 0;
        for (std::size_t i = 0; i < Ext::rank(); ++i)
            if (ext.extent(i) > 0) hi += std::ptrdiff_t(ext.extent(i) - 1) * std::abs(strides[i]);
        return std::size_t(hi + 1) * sizeof(value_type);
    }
};

struct Scalar : node_tag {
    using extents_type = extents<>;
    float value;
    explicit Scalar(float v) : value(v) {}
    Shape shape() const { return {}; }
    void bind(const Shape&) {}
    void begin_row(const std::size_t*, std::size_t) {}
    fbatch load(std::size_t, std::size_t) const { return fbatch(value); }
    template <class F>
    void for_each_leaf(F&&) const {}
};

template <class Op, class A>
struct Unary : node_tag {
    using extents_type = typename A::extents_type;
    A a;
    explicit Unary(const A& x) : a(x) {}
    Shape shape() const { return a.shape(); }
    void bind(const Shape& s) { a.bind(s); }
    void begin_row(const std::size_t* i, std::size_t n) { a.begin_row(i, n); }
    fbatch load(std::size_t c, std::size_t n) const { return Op::apply(a.load(c, n)); }
    template <class F>
    void for_each_leaf(F&& f) const { a.for_each_leaf(f); }
};

template <class Op, class A, class B>
struct Binary : node_tag {
    using bx = broadcast_extents<typename A::extents_type, typename B::extents_type>;
    static_assert(bx::compatible,
                  "flamingo: operand shapes cannot broadcast (static extents differ and neither is 1)");
    using extents_type = typename bx::type;
    A a;
    B b;
    Shape out;
    Binary(const A& x, const B& y) : a(x), b(y) {
        if (!broadcast(a.shape(), b.shape(), out))
            fail("cannot broadcast shapes ", a.shape(), " and ", b.shape(), " in an elementwise expression");
    }
    Shape shape() const { return out; }
    void bind(const Shape& s) { a.bind(s), b.bind(s); }
    void begin_row(const std::size_t* i, std::size_t n) { a.begin_row(i, n), b.begin_row(i, n); }
    fbatch load(std::size_t c, std::size_t n) const { return Op::apply(a.load(c, n), b.load(c, n)); }
    template <class F>
    void for_each_leaf(F&& f) const { a.for_each_leaf(f), b.for_each_leaf(f); }
};

// ---- operations -----------------------------------------------------------------

struct Add { static fbatch apply(fbatch x, fbatch y) { return x + y; } };
struct Sub { static fbatch apply(fbatch x, fbatch y) { return x - y; } };
struct Mul { static fbatch apply(fbatch x, fbatch y) { return x * y; } };
struct Div { static fbatch apply(fbatch x, fbatch y) { return x / y; } };
struct Max { static fbatch apply(fbatch x, fbatch y) { return xsimd::max(x, y); } };
struct Min { static fbatch apply(fbatch x, fbatch y) { return xsimd::min(x, y); } };
struct Neg { static fbatch apply(fbatch x) { return -x; } };
struct Exp { static fbatch apply(fbatch x) { return xsimd::exp(x); } };
struct Log { static fbatch apply(fbatch x) { return xsimd::log(x); } };
struct Sqrt { static fbatch apply(fbatch x) { return xsimd::sqrt(x); } };
struct Tanh { static fbatch apply(fbatch x) { return xsimd::tanh(x); } };
struct Abs { static fbatch apply(fbatch x) { return xsimd::abs(x); } };
struct Erf { static fbatch apply(fbatch x) { return xsimd::erf(x); } };
struct Sigmoid { static fbatch apply(fbatch x) { return fbatch(1.0f) / (fbatch(1.0f) + xsimd::exp(-x)); } };

// ---- operand wrapping -------------------------------------------------------------

template <class T, class E>
Leaf<T, E> as_node(const TensorView<T, E>& v) { return Leaf<T, E>(v); }
template <class T, class E>
Leaf<const T, E> as_node(const Tensor<T, E>& t) { return Leaf<const T, E>(t.view()); }
template <class N>
    requires is_node<N>
const N& as_node(const N& n) { return n; }
template <class S>
    requires std::is_arithmetic_v<S>
Scalar as_node(S s) { return Scalar(float(s)); }

template <class X>
using node_t = std::decay_t<decltype(as_node(std::declval<const X&>()))>;

template <class X, class Y>
constexpr bool binary_operands = (is_operand<X> && (is_operand<Y> || std::is_arithmetic_v<Y>)) ||
                                 (std::is_arithmetic_v<X> && is_operand<Y>);

// ---- evaluation ---------------------------------------------------------------------

template <class T>
void store(T* p, std::ptrdiff_t stride, fbatch v, std::size_t n) {
    if constexpr (std::is_same_v<T, float>) {
        if (stride == 1 && n == lanes) return v.store_unaligned(p);
    }
    alignas(64) float buf[lanes];
    v.store_aligned(buf);
    for (std::size_t i = 0; i < n; ++i) p[std::ptrdiff_t(i) * stride] = from_float<T>(buf[i]);
}

// Walks the rows of `out` (all axes but the last), calling row(node, idx, r).
template <class Node, class RowFn>
void for_rows(const Node& node, const Shape& out, RowFn&& row) {
    std::size_t cols = out.rank ? out.d[out.rank - 1] : 1;
    std::size_t nrows = cols ? out.size() / cols : 0;
    std::size_t lead = out.rank ? out.rank - 1 : 0;
    auto run = [&](std::size_t r0, std::size_t r1) {
        Node n = node;  // each thread walks its own copy (leaves keep row cursors)
        n.bind(out);
        std::array<std::size_t, max_rank> idx{};
        for (std::size_t r = r0; r < r1; ++r) {
            std::size_t rem = r;
            for (std::size_t k = lead; k-- > 0;) idx[k] = rem % out.d[k], rem /= out.d[k];
            n.begin_row(idx.data(), lead);
            row(n, idx, cols);
        }
    };
    if (out.size() >= (std::size_t(1) << 16) && nrows > 1) parallel_for(nrows, run);
    else run(0, nrows);
}

template <class T, class Ext, class Node>
void evaluate_into(const TensorView<T, Ext>& dst, const Node& node) {
    Shape out = shape_of(dst.extents());
    std::size_t lead = out.rank ? out.rank - 1 : 0;
    std::ptrdiff_t last = out.rank ? dst.stride(out.rank - 1) : 1;
    for_rows(node, out, [&](Node& n, const std::array<std::size_t, max_rank>& idx, std::size_t cols) {
        T* p = dst.data();
        for (std::size_t k = 0; k < lead; ++k) p += std::ptrdiff_t(idx[k]) * dst.stride(k);
        std::size_t c = 0;
        for (; c + lanes <= cols; c += lanes) store(p + std::ptrdiff_t(c) * last, last, n.load(c, lanes), lanes);
        if (c < cols) store(p + std::ptrdiff_t(c) * last, last, n.load(c, cols - c), cols - c);
    });
}

// Whether an operand of static extents S can be written into extents D: S may
// have fewer axes and size-1 axes that broadcast, never a conflicting size.
template <class D, class S>
constexpr bool assignable_extents() {
    if (S::rank() > D::rank()) return false;
    for (std::size_t i = 0; i < S::rank(); ++i) {
        std::size_t s = S::static_extent(i), d = D::static_extent(i + D::rank() - S::rank());
        if (s != dyn && d != dyn && s != d && s != 1) return false;
    }
    return true;
}

template <class T, class Ext, class X>
void assign(const TensorView<T, Ext>& dst, const X& x) {
    static_assert(!std::is_const_v<T>, "cannot assign to a view of const elements");
    static_assert(is_operand<X> || std::is_arithmetic_v<X>, "assign: not a tensor, view, expression or number");
    auto node = as_node(x);
    using N = decltype(node);
    static_assert(assignable_extents<Ext, typename N::extents_type>(),
                  "flamingo: the expression's static shape does not match the destination's");
    Shape out = shape_of(dst.extents()), b;
    if (!broadcast(out, node.shape(), b) || !(b == out))
        fail("cannot assign an expression of shape ", node.shape(), " to a tensor of shape ", out);

    // Overlap through a different layout would read elements already written.
    bool unsafe = false;
    const char* dlo = reinterpret_cast<const char*>(dst.data());
    const char* dhi = dlo + Leaf<T, Ext>(dst).span_bytes();
    auto probe = node;
    probe.bind(out);
    probe.for_each_leaf([&](const void* p, std::size_t span, const auto& strides, bool same_type) {
        const char* lo = static_cast<const char*>(p);
        if (lo >= dhi || lo + span <= dlo) return;
        bool same = same_type && std::is_same_v<T, float> && p == static_cast<const void*>(dst.data());
        for (std::size_t k = 0; same && k < out.rank; ++k)  // a length-1 axis is never stepped along
            same = out.d[k] == 1 || strides[k] == dst.stride(k);
        if (!same) unsafe = true;
    });
    if (unsafe) {
        Tensor<float, Ext> tmp(dst.extents());
        evaluate_into(tmp.view(), node);
        evaluate_into(dst, as_node(tmp));
    } else {
        evaluate_into(dst, node);
    }
}

}  // namespace expr

// ---- public operators ------------------------------------------------------------------

#define FLAMINGO_BINARY_OP(op, Op)                                                                  \
    template <class X, class Y>                                                                     \
        requires expr::binary_operands<X, Y>                                                        \
    auto operator op(const X& x, const Y& y) {                                                      \
        return expr::Binary<expr::Op, expr::node_t<X>, expr::node_t<Y>>(expr::as_node(x), expr::as_node(y)); \
    }
FLAMINGO_BINARY_OP(+, Add)
FLAMINGO_BINARY_OP(-, Sub)
FLAMINGO_BINARY_OP(*, Mul)
FLAMINGO_BINARY_OP(/, Div)
#undef FLAMINGO_BINARY_OP

#define FLAMINGO_BINARY_FN(name, Op)                                                                \
    template <class X, class Y>                                                                     \
        requires expr::binary_operands<X, Y>                                                        \
    auto name(const X& x, const Y& y) {                                                             \
        return expr::Binary<expr::Op, expr::node_t<X>, expr::node_t<Y>>(expr::as_node(x), expr::as_node(y)); \
    }
FLAMINGO_BINARY_FN(maximum, Max)
FLAMINGO_BINARY_FN(minimum, Min)
#undef FLAMINGO_BINARY_FN

#define FLAMINGO_UNARY_FN(name, Op)                                           \
    template <class X>                                                        \
        requires expr::is_operand<X>                                          \
    auto name(const X& x) {                                                   \
        return expr::Unary<expr::Op, expr::node_t<X>>(expr::as_node(x));      \
    }
FLAMINGO_UNARY_FN(operator-, Neg)
FLAMINGO_UNARY_FN(exp, Exp)
FLAMINGO_UNARY_FN(log, Log)
FLAMINGO_UNARY_FN(sqrt, Sqrt)
FLAMINGO_UNARY_FN(tanh, Tanh)
FLAMINGO_UNARY_FN(abs, Abs)
FLAMINGO_UNARY_FN(erf, Erf)
FLAMINGO_UNARY_FN(sigmoid, Sigmoid)
#undef FLAMINGO_UNARY_FN

template <class T, class Ext>
template <class E>
const TensorView<T, Ext>& TensorView<T, Ext>::assign(const E& e) const {
    expr::assign(*this, e);
    return *this;
}

template <class T, class Ext>
template <class E>
    requires(expr::is_operand<E> || std::is_arithmetic_v<E>)
Tensor<T, Ext>& Tensor<T, Ext>::operator=(const E& e) {
    expr::assign(view(), e);
    return *this;
}

template <class T, class Ext>
template <class E>
    requires(expr::is_operand<E> && !std::is_same_v<std::decay_t<E>, Tensor<T, Ext>>)
Tensor<T, Ext>::Tensor(const E& e) {
    auto node = expr::as_node(e);
    expr::Shape s = node.shape();
    check(s.rank == Ext::rank(), "cannot initialise a rank-", Ext::rank(), " tensor from an expression of shape ", s);
    std::array<std::size_t, Ext::rank()> sizes{};
    for (std::size_t i = 0; i < Ext::rank(); ++i) sizes[i] = s.d[i];
    *this = Tensor(Ext(sizes));
    expr::assign(view(), node);
}

// Evaluates an expression into a new float tensor of its shape.
template <class X>
    requires expr::is_operand<X>
auto eval(const X& x) {
    using Ext = typename expr::node_t<X>::extents_type;
    return Tensor<float, Ext>(x);
}

// ---- reductions over the last axis ---------------------------------------------------------

namespace expr {

template <class Ext>
struct drop_last;
template <std::size_t... E>
struct drop_last<extents<E...>> {
    static constexpr std::array<std::size_t, sizeof...(E)> in{E...};
    template <std::size_t... I>
    static auto make(std::index_sequence<I...>) -> extents<in[I]...>;
    using type = decltype(make(std::make_index_sequence<sizeof...(E) - 1>{}));
};

inline float hmax(fbatch v) {
    alignas(64) float buf[lanes];
    v.store_aligned(buf);
    return *std::max_element(buf, buf + lanes);
}

// Kind: 0 sum, 1 max, 2 mean.
template <int Kind, class X>
auto reduce_last(const X& x) {
    auto node = as_node(x);
    using N = decltype(node);
    using In = typename N::extents_type;
    static_assert(In::rank() >= 1, "reduction over the last axis needs rank >= 1");
    using Out = typename drop_last<In>::type;
    Shape s = node.shape();
    check(Kind != 1 || s.d[s.rank - 1] > 0, "max over an empty last axis of shape ", s);
    std::array<std::size_t, Out::rank()> sizes{};
    for (std::size_t i = 0; i + 1 < s.rank; ++i) sizes[i] = s.d[i];
    Tensor<float, Out> result{Out(sizes)};
    float* res = result.data();
    for_rows(node, s, [&](N& n, const std::array<std::size_t, max_rank>& idx, std::size_t cols) {
        std::size_t r = 0;
        for (std::size_t k = 0; k + 1 < s.rank; ++k) r = r * s.d[k] + idx[k];
        fbatch acc(Kind == 1 ? -INFINITY : 0.0f);
        std::size_t c = 0;
        for (; c + lanes <= cols; c += lanes) acc = Kind == 1 ? xsimd::max(acc, n.load(c, lanes)) : acc + n.load(c, lanes);
        float v = Kind == 1 ? hmax(acc) : xsimd::hadd(acc);
        if (c < cols) {
            alignas(64) float buf[lanes];
            n.load(c, cols - c).store_aligned(buf);
            for (std::size_t i = 0; i < cols - c; ++i) v = Kind == 1 ? std::max(v, buf[i]) : v + buf[i];
        }
        res[r] = Kind == 2 ? (cols ? v / float(cols) : NAN) : v;
    });
    if constexpr (Out::rank() == 0) return res[0];
    else return result;
}

}  // namespace expr

// Sum, maximum and mean over the last axis: a [M, N] operand gives a [M] tensor,
// a vector gives a float.
template <class X>
    requires expr::is_operand<X>
auto sum(const X& x) { return expr::reduce_last<0>(x); }
template <class X>
    requires expr::is_operand<X>
auto max(const X& x) { return expr::reduce_last<1>(x); }
template <class X>
    requires expr::is_operand<X>
auto mean(const X& x) { return expr::reduce_last<2>(x); }

}  // namespace flamingo

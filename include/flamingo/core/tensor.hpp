#pragma once
// Owning tensors and non-owning views over any memory (a memory-mapped file
// included). Row-major by default; views carry strides so that transposes and
// slices are free. Elementwise expressions live in expr.hpp.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "dtype.hpp"
#include "error.hpp"
#include "extents.hpp"

namespace flamingo {

namespace detail {

template <class Ext>
struct drop_first;
template <std::size_t E0, std::size_t... E>
struct drop_first<extents<E0, E...>> {
    using type = extents<E...>;
};

template <class Ext>
struct first_dynamic;
template <std::size_t E0, std::size_t... E>
struct first_dynamic<extents<E0, E...>> {
    using type = extents<dyn, E...>;
};

template <class Ext, std::size_t Axis>
struct set_dynamic;
template <std::size_t Axis, std::size_t... E>
struct set_dynamic<extents<E...>, Axis> {
    static constexpr std::array<std::size_t, sizeof...(E)> in{E...};
    template <std::size_t... I>
    static auto make(std::index_sequence<I...>) -> extents<(I == Axis ? dyn : in[I])...>;
    using type = decltype(make(std::make_index_sequence<sizeof...(E)>{}));
};

template <class Ext>
struct swap2;
template <std::size_t A, std::size_t B>
struct swap2<extents<A, B>> {
    using type = extents<B, A>;
};

inline constexpr std::size_t tensor_alignment = 64;

struct AlignedFree {
    void operator()(void* p) const { ::operator delete(p, std::align_val_t(tensor_alignment)); }
};

template <class T>
T* aligned_alloc_array(std::size_t n) {
    if (n == 0) return nullptr;
    check(n <= std::size_t(-1) / sizeof(T) / 2, "tensor of ", n, " elements is too large to allocate");
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(tensor_alignment)));
}

}  // namespace detail

template <class T, class Ext>
class TensorView;
template <class T, class Ext>
class Tensor;

template <class T>
struct is_tensor_view : std::false_type {};
template <class T, class E>
struct is_tensor_view<TensorView<T, E>> : std::true_type {};
template <class T>
struct is_tensor : std::false_type {};
template <class T, class E>
struct is_tensor<Tensor<T, E>> : std::true_type {};

namespace expr {
struct node_tag {};
template <class T>
constexpr bool is_node = std::is_base_of_v<node_tag, T>;
// Anything an elementwise expression can read: tensors, views, expression nodes.
template <class X>
constexpr bool is_operand = is_node<std::decay_t<X>> || is_tensor<std::decay_t<X>>::value ||
                            is_tensor_view<std::decay_t<X>>::value;
}  // namespace expr

template <class Ext>
constexpr std::array<std::ptrdiff_t, Ext::rank()> row_major_strides(const Ext& e) {
    std::array<std::ptrdiff_t, Ext::rank()> s{};
    std::ptrdiff_t acc = 1;
    for (std::size_t i = Ext::rank(); i-- > 0;) {
        s[i] = acc;
        acc *= std::ptrdiff_t(e.extent(i));
    }
    return s;
}

// A non-owning, strided view of T elements with extents Ext.
template <class T, class Ext>
class TensorView {
    static_assert(is_extents<Ext>::value, "TensorView<T, Ext>: Ext must be flamingo::extents<...>");

public:
    using element_type = T;
    using value_type = std::remove_const_t<T>;
    using extents_type = Ext;
    using strides_type = std::array<std::ptrdiff_t, Ext::rank()>;
    static constexpr std::size_t rank() { return Ext::rank(); }

    TensorView() = default;
    TensorView(T* data, const Ext& e) : data_(data), ext_(e), strides_(row_major_strides(e)) {}
    TensorView(T* data, const Ext& e, const strides_type& s) : data_(data), ext_(e), strides_(s) {}

    // A view of mutable data converts to a view of const data.
    template <class U>
        requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
    TensorView(const TensorView<U, Ext>& o) : data_(o.data()), ext_(o.extents()), strides_(o.strides()) {}

    T* data() const { return data_; }
    const Ext& extents() const { return ext_; }
    std::size_t extent(std::size_t i) const { return ext_.extent(i); }
    std::size_t size() const { return ext_.size(); }
    const strides_type& strides() const { return strides_; }
    std::ptrdiff_t stride(std::size_t i) const { return strides_[i]; }
    bool contiguous() const { return strides_ == row_major_strides(ext_); }

    template <class... I>
        requires(sizeof...(I) == Ext::rank() && (std::is_integral_v<I> && ...))
    T& operator()(I... idx) const {
        std::array<std::ptrdiff_t, rank()> i{std::ptrdiff_t(idx)...};
        std::ptrdiff_t off = 0;
        for (std::size_t k = 0; k < rank(); ++k) off += i[k] * strides_[k];
        return data_[off];
    }

    // Sub-tensor at index i of the first axis (a row of a matrix).
    auto operator[](std::size_t i) const requires(rank() >= 2) {
        using Sub = typename detail::drop_first<Ext>::type;
        std::array<std::size_t, rank() - 1> e{};
        std::array<std::ptrdiff_t, rank() - 1> s{};
        for (std::size_t k = 1; k < rank(); ++k) e[k - 1] = extent(k), s[k - 1] = strides_[k];
        return TensorView<T, Sub>(data_ + std::ptrdiff_t(i) * strides_[0], Sub(e), s);
    }

    // First-axis range [begin, end).
    auto rows(std::size_t begin, std::size_t end) const {
        return slice<0>(begin, end);
    }

    // Range [begin, end) along Axis; that axis becomes dynamic.
    template <std::size_t Axis>
    auto slice(std::size_t begin, std::size_t end) const {
        static_assert(Axis < rank(), "slice: axis out of range");
        using Out = typename detail::set_dynamic<Ext, Axis>::type;
        check(begin <= end && end <= extent(Axis), "slice [", begin, ", ", end, ") out of range for axis ", Axis,
              " of shape ", shape_string(ext_));
        auto e = ext_.sizes();
        e[Axis] = end - begin;
        return TensorView<T, Out>(data_ + std::ptrdiff_t(begin) * strides_[Axis], Out(e), strides_);
    }

    // Writes an expression, tensor, view or number into the viewed elements (expr.hpp).
    // Plain `=` between views rebinds the handle, as with std::span.
    template <class E>
    const TensorView& assign(const E& expr) const;

private:
    T* data_ = nullptr;
    Ext ext_{};
    strides_type strides_{};
};

// Swapped axes of a matrix view; no data moves.
template <class T, class Ext>
auto transpose(const TensorView<T, Ext>& v) {
    static_assert(Ext::rank() == 2, "transpose: a matrix (rank 2) view is required");
    using Out = typename detail::swap2<Ext>::type;
    return TensorView<T, Out>(v.data(), Out(v.extent(1), v.extent(0)), {v.stride(1), v.stride(0)});
}

// Same data, new shape; the view must be contiguous and sizes must agree.
template <class NewExt, class T, class Ext, class... I>
auto reshape(const TensorView<T, Ext>& v, I... sizes) {
    if constexpr (Ext::all_static() && NewExt::all_static()) {
        static_assert(Ext{}.size() == NewExt{}.size(), "reshape: static sizes differ");
    }
    NewExt ne = [&] {
        if constexpr (sizeof...(I) == 0) return NewExt{};
        else return NewExt(sizes...);
    }();
    check(v.contiguous(), "reshape: view of shape ", shape_string(v.extents()), " is not contiguous");
    check(ne.size() == v.size(), "reshape: cannot view shape ", shape_string(v.extents()), " as ", shape_string(ne));
    return TensorView<T, NewExt>(v.data(), ne);
}

// The same view with its axes reordered: axis i of the result is axis Axes[i]
// of v (NumPy's transpose(v, axes)); no data moves.
template <std::size_t... Axes, class T, std::size_t... E>
auto permute(const TensorView<T, extents<E...>>& v) {
    static_assert(sizeof...(Axes) == sizeof...(E), "permute: give one axis per dimension");
    constexpr std::array<std::size_t, sizeof...(E)> statics{E...};
    using Out = extents<statics[Axes]...>;
    static_assert([] {
        std::array<bool, sizeof...(E)> seen{};
        for (std::size_t a : {Axes...}) {
            if (a >= sizeof...(E) || seen[a]) return false;
            seen[a] = true;
        }
        return true;
    }(), "permute: the axes must be a permutation of 0..rank-1");
    return TensorView<T, Out>(v.data(), Out(v.extent(Axes)...), {v.stride(Axes)...});
}

// An owning tensor: 64-byte aligned, row-major, contiguous.
template <class T, class Ext>
class Tensor {
    static_assert(!std::is_const_v<T>, "Tensor<T>: T must not be const");

public:
    using element_type = T;
    using value_type = T;
    using extents_type = Ext;
    static constexpr std::size_t rank() { return Ext::rank(); }

    Tensor() requires(Ext::rank_dynamic() > 0) = default;
    Tensor() requires(Ext::rank_dynamic() == 0) : Tensor(Ext{}) {}
    explicit Tensor(const Ext& e) : ext_(e), data_(detail::aligned_alloc_array<T>(e.size())) {
        std::fill_n(data_.get(), e.size(), T{});
    }
    template <class... I>
        requires((std::is_integral_v<I> && ...) && sizeof...(I) > 0)
    explicit Tensor(I... sizes) : Tensor(Ext(sizes...)) {}

    Tensor(const Tensor& o) : ext_(o.ext_), data_(detail::aligned_alloc_array<T>(o.size())) {
        std::copy_n(o.data(), o.size(), data());
    }
    Tensor(Tensor&&) noexcept = default;
    Tensor& operator=(const Tensor& o) {
        if (this != &o) *this = Tensor(o);
        return *this;
    }
    Tensor& operator=(Tensor&&) noexcept = default;

    // Evaluates an expression (or copies a view) of the same shape; see expr.hpp.
    template <class E>
        requires(expr::is_operand<E> || std::is_arithmetic_v<E>)
    Tensor& operator=(const E& expr);
    template <class E>
        requires(expr::is_operand<E> && !std::is_same_v<std::decay_t<E>, Tensor>)
    explicit Tensor(const E& expr);

    T* data() { return data_.get(); }
    const T* data() const { return data_.get(); }
    const Ext& extents() const { return ext_; }
    std::size_t extent(std::size_t i) const { return ext_.extent(i); }
    std::size_t size() const { return ext_.size(); }

    TensorView<T, Ext> view() { return {data(), ext_}; }
    TensorView<const T, Ext> view() const { return {data(), ext_}; }
    operator TensorView<T, Ext>() { return view(); }
    operator TensorView<const T, Ext>() const { return view(); }

    template <class... I>
    T& operator()(I... idx) { return view()(idx...); }
    template <class... I>
    const T& operator()(I... idx) const { return view()(idx...); }
    auto operator[](std::size_t i) { return view()[i]; }
    auto operator[](std::size_t i) const { return view()[i]; }
    auto rows(std::size_t b, std::size_t e) { return view().rows(b, e); }
    auto rows(std::size_t b, std::size_t e) const { return view().rows(b, e); }

private:
    Ext ext_{};
    std::unique_ptr<T[], detail::AlignedFree> data_;
};

// Convenience aliases.
template <class T = float>
using Matrix = Tensor<T, dextents<2>>;
template <class T = float>
using Vector = Tensor<T, dextents<1>>;

template <class T, class Ext>
TensorView<T, Ext> make_view(T* data, const Ext& e) {
    return {data, e};
}

// A read-only, contiguous view whose element type is known only at run time:
// what a checkpoint hands out. as<T, Rank>() gives the typed view after
// checking the dtype and the rank.
class AnyView {
public:
    static constexpr std::size_t kMaxRank = 4;

    AnyView() = default;
    AnyView(DType dtype, const void* data, std::initializer_list<std::size_t> shape)
        : AnyView(dtype, data, shape.begin(), shape.size()) {}
    AnyView(DType dtype, const void* data, const std::size_t* shape, std::size_t rank)
        : dtype_(dtype), data_(data), rank_(rank) {
        check(rank <= kMaxRank, "a tensor view has at most ", kMaxRank, " axes, got ", rank);
        std::copy_n(shape, rank, shape_.begin());
    }
    template <class T, class Ext>
    AnyView(const TensorView<T, Ext>& v) : AnyView(dtype_of<std::remove_const_t<T>>(), v.data(), v.extents().sizes().data(), Ext::rank()) {
        check(v.contiguous(), "AnyView: the view of shape ", shape_string(v.extents()), " is not contiguous");
    }

    bool empty() const { return data_ == nullptr; }
    DType dtype() const { return dtype_; }
    const void* data() const { return data_; }
    std::size_t rank() const { return rank_; }
    std::size_t extent(std::size_t i) const { return i < rank_ ? shape_[i] : 1; }
    std::size_t size() const {
        std::size_t n = 1;
        for (std::size_t i = 0; i < rank_; ++i) n *= shape_[i];
        return n;
    }
    std::size_t bytes() const { return size() * dtype_size(dtype_); }

    template <class T, std::size_t Rank>
    TensorView<const T, dextents<Rank>> as() const {
        check(dtype_ == dtype_of<T>(), "tensor view: holds ", dtype_name(dtype_), ", read as ", dtype_name(dtype_of<T>()));
        check(rank_ == Rank, "tensor view: has ", rank_, " axes, read with ", Rank);
        std::array<std::size_t, Rank> e{};
        std::copy_n(shape_.begin(), Rank, e.begin());
        return {static_cast<const T*>(data_), dextents<Rank>(e)};
    }

private:
    DType dtype_ = DType::F32;
    const void* data_ = nullptr;
    std::array<std::size_t, kMaxRank> shape_{};
    std::size_t rank_ = 0;
};

}  // namespace flamingo

#pragma once
// Extents mixing compile-time and run-time sizes, in the spirit of std::mdspan:
// extents<dyn, 1024> is a [tokens, 1024] shape whose first size is known only
// at run time. Only the dynamic sizes are stored.
#include <array>
#include <cstddef>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <type_traits>

#include "error.hpp"

namespace flamingo {

inline constexpr std::size_t dyn = std::numeric_limits<std::size_t>::max();

template <std::size_t... E>
class extents {
public:
    static constexpr std::size_t rank() { return sizeof...(E); }
    static constexpr std::size_t rank_dynamic() { return ((E == dyn) + ... + 0); }
    static constexpr std::size_t static_extent(std::size_t i) { return statics_[i]; }
    static constexpr bool all_static() { return rank_dynamic() == 0; }

    constexpr extents() = default;  // dynamic sizes start at 0, as std::extents

    // Either the dynamic sizes only, or all sizes (static ones are then checked).
    template <class... I>
        requires((std::is_integral_v<I> && ...) && sizeof...(I) > 0 &&
                 (sizeof...(I) == rank_dynamic() || sizeof...(I) == rank()))
    constexpr explicit extents(I... sizes) {
        std::array<std::size_t, sizeof...(I)> s{static_cast<std::size_t>(sizes)...};
        init(s.data(), s.size());
    }

    // From a run-time array of all sizes (checked against the static ones).
    constexpr explicit extents(const std::array<std::size_t, rank()>& all) { init(all.data(), rank()); }

    constexpr std::size_t extent(std::size_t i) const {
        if (statics_[i] != dyn) return statics_[i];
        return dynamic_[dyn_index_[i]];
    }

    constexpr std::size_t size() const {
        std::size_t n = 1;
        for (std::size_t i = 0; i < rank(); ++i) n *= extent(i);
        return n;
    }

    constexpr std::array<std::size_t, rank()> sizes() const {
        std::array<std::size_t, rank()> a{};
        for (std::size_t i = 0; i < rank(); ++i) a[i] = extent(i);
        return a;
    }

    template <std::size_t... F>
    constexpr bool operator==(const extents<F...>& o) const {
        if constexpr (sizeof...(F) != rank()) return false;
        else {
            for (std::size_t i = 0; i < rank(); ++i)
                if (extent(i) != o.extent(i)) return false;
            return true;
        }
    }

private:
    static constexpr std::array<std::size_t, rank()> statics_{E...};
    static constexpr std::array<std::size_t, rank()> dyn_index_ = [] {
        std::array<std::size_t, rank()> idx{};
        std::size_t k = 0;
        for (std::size_t i = 0; i < rank(); ++i) idx[i] = statics_[i] == dyn ? k++ : 0;
        return idx;
    }();

    constexpr void init(const std::size_t* s, std::size_t n) {
        if (n == rank_dynamic() && n != rank()) {
            for (std::size_t i = 0; i < n; ++i) dynamic_[i] = s[i];
            return;
        }
        for (std::size_t i = 0; i < rank(); ++i) {
            if (statics_[i] == dyn) dynamic_[dyn_index_[i]] = s[i];
            else if (statics_[i] != s[i])
                fail("extent ", i, " is fixed at ", statics_[i], " but ", s[i], " was given");
        }
    }

    std::array<std::size_t, rank_dynamic()> dynamic_{};
};

// All-dynamic extents of rank R: dextents<2> == extents<dyn, dyn>.
namespace detail {
template <std::size_t R, std::size_t... E>
struct make_dextents : make_dextents<R - 1, dyn, E...> {};
template <std::size_t... E>
struct make_dextents<0, E...> {
    using type = extents<E...>;
};
}  // namespace detail
template <std::size_t R>
using dextents = typename detail::make_dextents<R>::type;

template <class T>
struct is_extents : std::false_type {};
template <std::size_t... E>
struct is_extents<extents<E...>> : std::true_type {};

// "[3, 1024]"
template <std::size_t... E>
std::string shape_string(const extents<E...>& e) {
    std::ostringstream os;
    os << '[';
    for (std::size_t i = 0; i < e.rank(); ++i) os << (i ? ", " : "") << e.extent(i);
    os << ']';
    return os.str();
}

template <std::size_t... E>
std::ostream& operator<<(std::ostream& os, const extents<E...>& e) {
    return os << shape_string(e);
}

// Two static extents are compatible unless both are static and differ.
constexpr bool extents_compatible(std::size_t a, std::size_t b) { return a == dyn || b == dyn || a == b; }

}  // namespace flamingo

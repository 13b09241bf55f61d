#pragma once
// Unicode properties the tokenizer needs (regex classes, \w, NFC/NFD), from the
// generated tables in unicode_tables.hpp (Unicode 14.0, Python's unicodedata).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flamingo/text/unicode_tables.hpp"
#include "flamingo/text/utf8.hpp"

namespace flamingo::unicode {

// Classes of the GPT-2 pre-tokenizer regex.
enum class CharClass : std::uint8_t { Other = 0, Letter = 1, Number = 2, Space = 3 };

namespace detail {

template <std::size_t N>
inline std::uint8_t range_lookup(const unicode_data::Range (&table)[N], char32_t cp) {
    const auto* end = table + N;
    const auto* it = std::upper_bound(table, end, cp, [](char32_t c, const unicode_data::Range& r) { return c < r.lo; });
    if (it == table) return 0;
    --it;
    return cp <= it->hi ? it->value : 0;
}

struct AsciiClasses {
    CharClass cls[128];
    constexpr AsciiClasses() : cls{} {
        for (std::uint32_t c = 0; c < 128; ++c) {
            CharClass k = CharClass::Other;
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) k = CharClass::Letter;
            else if (c >= '0' && c <= '9') k = CharClass::Number;
            else if (c == ' ' || (c >= 0x09 && c <= 0x0D)) k = CharClass::Space;
            cls[c] = k;
        }
    }
};
inline constexpr AsciiClasses ascii_classes{};

}  // namespace detail

inline CharClass char_class(char32_t cp) {
    if (cp < 128) return detail::ascii_classes.cls[cp];
    return static_cast<CharClass>(detail::range_lookup(unicode_data::regex_class, cp));
}

// Unicode White_Space (Oniguruma's and Rust's \s).
inline bool is_whitespace(char32_t cp) { return char_class(cp) == CharClass::Space; }

// Rust regex \w (Unicode): used by added tokens' single_word.
inline bool is_word(char32_t cp) {
    if (cp < 128) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
    return detail::range_lookup(unicode_data::word_chars, cp) != 0;
}

inline std::uint8_t combining_class(char32_t cp) {
    if (cp < 0x300) return 0;
    return detail::range_lookup(unicode_data::combining_class, cp);
}

namespace detail {

inline constexpr char32_t hangul_s = 0xAC00, hangul_l = 0x1100, hangul_v = 0x1161, hangul_t = 0x11A7;
inline constexpr char32_t hangul_l_count = 19, hangul_v_count = 21, hangul_t_count = 28;
inline constexpr char32_t hangul_n = hangul_v_count * hangul_t_count, hangul_count = hangul_l_count * hangul_n;

inline void decompose(char32_t cp, std::vector<char32_t>& out) {
    if (cp >= hangul_s && cp < hangul_s + hangul_count) {
        const char32_t s = cp - hangul_s;
        out.push_back(hangul_l + s / hangul_n);
        out.push_back(hangul_v + (s % hangul_n) / hangul_t_count);
        if (s % hangul_t_count != 0) out.push_back(hangul_t + s % hangul_t_count);
        return;
    }
    const auto& table = unicode_data::canonical_decomposition;
    const auto* end = std::end(table);
    const auto* it = std::lower_bound(std::begin(table), end, cp,
                                      [](const unicode_data::Decomposition& d, char32_t c) { return d.cp < c; });
    if (it == end || it->cp != cp) {
        out.push_back(cp);
        return;
    }
    decompose(it->first, out);  // depth is bounded by the table (at most a few levels)
    if (it->second != 0) decompose(it->second, out);
}

// Primary composite of (a, b), or 0.
inline char32_t compose(char32_t a, char32_t b) {
    if (a >= hangul_l && a < hangul_l + hangul_l_count && b >= hangul_v && b < hangul_v + hangul_v_count)
        return hangul_s + ((a - hangul_l) * hangul_v_count + (b - hangul_v)) * hangul_t_count;
    if (a >= hangul_s && a < hangul_s + hangul_count && (a - hangul_s) % hangul_t_count == 0 && b > hangul_t &&
        b < hangul_t + hangul_t_count)
        return a + (b - hangul_t);
    const auto& table = unicode_data::canonical_composition;
    const auto* end = std::end(table);
    const auto* it = std::lower_bound(std::begin(table), end, std::pair<char32_t, char32_t>(a, b),
                                      [](const unicode_data::Composition& c, const std::pair<char32_t, char32_t>& k) {
                                          return c.first != k.first ? c.first < k.first : c.second < k.second;
                                      });
    return it != end && it->first == a && it->second == b ? it->composite : 0;
}

// Canonical decomposition and ordering (NFD) of valid UTF-8, as code points.
inline std::vector<char32_t> nfd_code_points(std::string_view s) {
    std::vector<char32_t> cps;
    cps.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) decompose(utf8::next(s, i), cps);
    // Stable sort of each run of non-starters by combining class (n log n, even for hostile runs).
    for (std::size_t i = 0; i < cps.size();) {
        if (combining_class(cps[i]) == 0) {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < cps.size() && combining_class(cps[j]) != 0) ++j;
        if (j - i > 1)
            std::stable_sort(cps.begin() + static_cast<std::ptrdiff_t>(i), cps.begin() + static_cast<std::ptrdiff_t>(j),
                             [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        i = j;
    }
    return cps;
}

// Below U+0300 every character is its own NFC and NFD... except that precomposed
// Latin-1 letters decompose under NFD, so the shortcut is for NFC only.
inline bool below_combining_marks(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0xCC) return false;  // lead bytes of U+0300 and above
    }
    return true;
}

}  // namespace detail

// Normalization Form C of valid UTF-8.
inline std::string nfc(std::string_view s) {
    if (detail::below_combining_marks(s)) return std::string(s);
    std::vector<char32_t> d = detail::nfd_code_points(s);
    std::size_t out = 0;
    std::size_t starter = 0;
    bool have_starter = false;
    int last_class = -1;  // class of the last character kept after the starter; -1: none yet
    for (std::size_t i = 0; i < d.size(); ++i) {
        const char32_t ch = d[i];
        const int cls = combining_class(ch);
        // Blocked unless nothing was kept since the starter or the last kept mark has a lower class.
        if (have_starter && (last_class == -1 || last_class < cls)) {
            const char32_t composite = detail::compose(d[starter], ch);
            if (composite != 0) {
                d[starter] = composite;
                continue;
            }
        }
        if (cls == 0) {
            starter = out;
            have_starter = true;
            last_class = -1;
        } else {
            last_class = cls;
        }
        d[out++] = ch;
    }
    d.resize(out);
    std::string result;
    result.reserve(s.size());
    for (char32_t cp : d) utf8::append(result, cp);
    return result;
}

// Normalization Form D of valid UTF-8.
inline std::string nfd(std::string_view s) {
    bool ascii = true;
    for (char c : s) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    if (ascii) return std::string(s);
    std::string result;
    result.reserve(s.size() + s.size() / 2);
    for (char32_t cp : detail::nfd_code_points(s)) utf8::append(result, cp);
    return result;
}

}  // namespace flamingo::unicode

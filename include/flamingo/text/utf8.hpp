#pragma once
// UTF-8 decoding, validation and the lossy conversion Hugging Face's decoders use.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace flamingo::utf8 {

inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

// Length of the well-formed UTF-8 sequence starting at s[i] (1..4), or 0 if the
// bytes there are not one (overlong, surrogate, beyond U+10FFFF, truncated).
inline std::size_t sequence_length(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
    const std::size_t left = s.size() - i;
    const unsigned char c = b(0);
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    const auto cont = [&](std::size_t k, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
        return k < left && b(k) >= lo && b(k) <= hi;
    };
    if (c < 0xE0) return cont(1) ? 2 : 0;
    if (c < 0xF0) {
        const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return cont(1, lo, hi) && cont(2) ? 3 : 0;
    }
    if (c < 0xF5) {
        const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
    }
    return 0;
}

// Decodes the sequence at s[i] of length len (from sequence_length, > 0).
inline char32_t decode(std::string_view s, std::size_t i, std::size_t len) {
    const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
    switch (len) {
        case 1: return b(0);
        case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
        case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
        default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
    }
}

// Decodes the code point at s[i] of valid UTF-8 and advances i past it.
inline char32_t next(std::string_view s, std::size_t& i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const std::size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    const char32_t cp = decode(s, i, len);
    i += len;
    return cp;
}

// Byte offset of the first ill-formed sequence, or npos when s is valid UTF-8.
inline std::size_t first_invalid(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const std::size_t len = sequence_length(s, i);
        if (len == 0) return i;
        i += len;
    }
    return npos;
}

inline void append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

inline constexpr std::string_view replacement_character = "\xEF\xBF\xBD";  // U+FFFD

// Valid UTF-8 from arbitrary bytes: each maximal ill-formed subpart becomes one
// U+FFFD (as Rust's String::from_utf8_lossy and the WHATWG TextDecoder do).
inline std::string lossy(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        const std::size_t len = sequence_length(s, i);
        if (len > 0) {
            out.append(s.substr(i, len));
            i += len;
            continue;
        }
        // Skip the longest prefix of a valid sequence (lead byte plus fitting continuations).
        std::size_t skip = 1;
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0xC2 && c < 0xF5) {
            const std::size_t need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            for (std::size_t k = 1; k < need && i + k < s.size(); ++k) {
                const unsigned char d = static_cast<unsigned char>(s[i + k]);
                unsigned char lo = 0x80, hi = 0xBF;
                if (k == 1) {
                    if (c == 0xE0) lo = 0xA0;
                    if (c == 0xED) hi = 0x9F;
                    if (c == 0xF0) lo = 0x90;
                    if (c == 0xF4) hi = 0x8F;
                }
                if (d < lo || d > hi) break;
                skip = k + 1;
            }
        }
        out.append(replacement_character);
        i += skip;
    }
    return out;
}

}  // namespace flamingo::utf8

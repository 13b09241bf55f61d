#pragma once
// Storage element types: bfloat16 and IEEE half, with scalar conversions.
// Vectorised conversions live in the kernels; these are the reference semantics
// (round to nearest even, NaN kept quiet, as PyTorch converts).
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace flamingo {

struct bf16 {
    std::uint16_t bits = 0;
    bf16() = default;
    explicit bf16(float f) : bits(from_float(f)) {}
    explicit operator float() const { return std::bit_cast<float>(std::uint32_t(bits) << 16); }

    static constexpr std::uint16_t from_float(float f) {
        std::uint32_t u = std::bit_cast<std::uint32_t>(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return std::uint16_t((u >> 16) | 0x40);  // quiet NaN
        u += 0x7fffu + ((u >> 16) & 1u);                                            // nearest even
        return std::uint16_t(u >> 16);
    }
    static bf16 from_bits(std::uint16_t b) {
        bf16 r;
        r.bits = b;
        return r;
    }
};

struct f16 {
    std::uint16_t bits = 0;
    f16() = default;
    explicit f16(float f) : bits(from_float(f)) {}
    explicit operator float() const { return to_float(bits); }

    static constexpr float to_float(std::uint16_t h) {
        std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
        std::uint32_t exp = (h >> 10) & 0x1fu;
        std::uint32_t man = h & 0x3ffu;
        if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));  // inf / nan
        if (exp == 0) {
            if (man == 0) return std::bit_cast<float>(sign);
            // subnormal: value = man * 2^-24
            float v = float(man) * (1.0f / 16777216.0f);
            return sign ? -v : v;
        }
        return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
    }
    static constexpr std::uint16_t from_float(float f) {
        std::uint32_t u = std::bit_cast<std::uint32_t>(f);
        std::uint16_t sign = std::uint16_t((u >> 16) & 0x8000u);
        std::uint32_t a = u & 0x7fffffffu;
        if (a > 0x7f800000u) return std::uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // nan
        if (a >= 0x477ff000u) return std::uint16_t(sign | 0x7c00u);  // rounds to inf (>= 65520)
        if (a < 0x38800000u) {                                        // result is subnormal or zero
            // scale into the subnormal grid (2^-24 units) and round to nearest even
            std::uint32_t man = (a & 0x7fffffu) | 0x800000u;
            int shift = 126 - int(a >> 23);  // 113 - exp + 13
            if (shift > 24) return sign;
            std::uint32_t q = man >> shift;
            std::uint32_t rem = man & ((1u << shift) - 1);
            std::uint32_t half = 1u << (shift - 1);
            if (rem > half || (rem == half && (q & 1))) ++q;
            return std::uint16_t(sign | q);
        }
        std::uint32_t r = a - 0x38000000u;  // rebias exponent 127 -> 15
        r += 0xfffu + ((r >> 13) & 1u);
        return std::uint16_t(sign | (r >> 13));
    }
    static f16 from_bits(std::uint16_t b) {
        f16 r;
        r.bits = b;
        return r;
    }
};

enum class DType { F32, F16, BF16, I64, I8, U8 };

constexpr std::size_t dtype_size(DType t) {
    switch (t) {
        case DType::F32: return 4;
        case DType::F16: return 2;
        case DType::BF16: return 2;
        case DType::I64: return 8;
        case DType::I8: return 1;
        case DType::U8: return 1;
    }
    return 0;
}

constexpr std::string_view dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I64: return "I64";
        case DType::I8: return "I8";
        case DType::U8: return "U8";
    }
    return "?";
}

template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<f16>() { return DType::F16; }
template <> constexpr DType dtype_of<bf16>() { return DType::BF16; }
template <> constexpr DType dtype_of<std::int64_t>() { return DType::I64; }
template <> constexpr DType dtype_of<std::int8_t>() { return DType::I8; }
template <> constexpr DType dtype_of<std::uint8_t>() { return DType::U8; }

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) { return float(x); }
inline float to_float(f16 x) { return float(x); }

template <class T> T from_float(float x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline bf16 from_float<bf16>(float x) { return bf16(x); }
template <> inline f16 from_float<f16>(float x) { return f16(x); }

}  // namespace flamingo

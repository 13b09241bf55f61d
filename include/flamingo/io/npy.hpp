#pragma once
// NumPy .npy files: a writer for float32 and int64 arrays (the `logits` and
// `embed` outputs, test fixtures), and a bounds-checked reader for the
// fixtures PyTorch/NumPy scripts produce.
//
// Format (version 1.0): "\x93NUMPY", major, minor, u16 little-endian header
// length, then a Python dict literal
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// padded with spaces and a final '\n' so the data starts on a 64-byte
// boundary; then the raw data in C order. Version 2.0/3.0 only widen the
// header length to u32 (3.0: the header is UTF-8).
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/io/mmap.hpp"

namespace flamingo::io {

enum class NpyDType { F4, F8, I4, I8, Bool, U1 };

inline constexpr std::size_t npy_dtype_size(NpyDType t) {
    switch (t) {
        case NpyDType::F4: case NpyDType::I4: return 4;
        case NpyDType::F8: case NpyDType::I8: return 8;
        case NpyDType::Bool: case NpyDType::U1: return 1;
    }
    return 0;
}

inline constexpr std::string_view npy_dtype_descr(NpyDType t) {
    switch (t) {
        case NpyDType::F4: return "<f4";
        case NpyDType::F8: return "<f8";
        case NpyDType::I4: return "<i4";
        case NpyDType::I8: return "<i8";
        case NpyDType::Bool: return "|b1";
        case NpyDType::U1: return "|u1";
    }
    return "?";
}

struct NpyArray {
    NpyDType dtype = NpyDType::F4;
    std::vector<std::size_t> shape;
    std::vector<std::byte> data;  // little-endian, C order
    std::string file;

    std::size_t numel() const {
        std::size_t n = 1;
        for (auto d : shape) n *= d;  // checked when read
        return n;
    }
    // Any dtype converted to float (bool: 0/1; int64 and float64 rounded).
    std::vector<float> as_float() const {
        std::vector<float> out(numel());
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = float(element_as_double(i));
        return out;
    }
    // Integer and bool dtypes as int64; floating dtypes are an error.
    std::vector<std::int64_t> as_int64() const {
        if (dtype == NpyDType::F4 || dtype == NpyDType::F8)
            fail(ErrorKind::Format, file, ": array has dtype ", npy_dtype_descr(dtype), ", expected an integer dtype");
        std::vector<std::int64_t> out(numel());
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = element_as_int(i);
        return out;
    }

private:
    template <class T>
    T load(std::size_t i) const {
        T v;
        std::memcpy(&v, data.data() + i * sizeof(T), sizeof(T));
        return v;
    }
    double element_as_double(std::size_t i) const {
        switch (dtype) {
            case NpyDType::F4: return load<float>(i);
            case NpyDType::F8: return load<double>(i);
            default: return double(element_as_int(i));
        }
    }
    std::int64_t element_as_int(std::size_t i) const {
        switch (dtype) {
            case NpyDType::I4: return load<std::int32_t>(i);
            case NpyDType::I8: return load<std::int64_t>(i);
            case NpyDType::Bool: return load<std::uint8_t>(i) != 0;
            case NpyDType::U1: return load<std::uint8_t>(i);
            default: return 0;
        }
    }
};

namespace detail {

inline std::string npy_header(std::string_view descr, const std::vector<std::size_t>& shape) {
    std::string dict = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (";
    for (std::size_t i = 0; i < shape.size(); ++i) dict += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) dict += ",";  // a 1-tuple
    dict += "), }";
    // Pad with spaces so that magic + version + length + dict + '\n' is a multiple of 64.
    bool v2 = 10 + dict.size() + 1 > 65535;
    std::size_t prefix = v2 ? 12 : 10;
    std::size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
    dict.append(total - prefix - dict.size() - 1, ' ');
    dict += '\n';
    std::string out = "\x93NUMPY";
    out += char(v2 ? 2 : 1);
    out += char(0);
    std::uint32_t len = std::uint32_t(dict.size());
    for (std::size_t i = 0; i < (v2 ? 4u : 2u); ++i) out += char((len >> (8 * i)) & 0xff);
    return out + dict;
}

inline void write_npy_bytes(const std::filesystem::path& path, std::string_view descr, const void* data,
                            std::size_t elem_size, const std::vector<std::size_t>& shape) {
    std::size_t n = 1;
    for (auto d : shape)
        if (__builtin_mul_overflow(n, d, &n)) fail(ErrorKind::Limit, path.string(), ": array shape overflows");
    std::size_t nbytes;
    if (__builtin_mul_overflow(n, elem_size, &nbytes)) fail(ErrorKind::Limit, path.string(), ": array shape overflows");
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail(ErrorKind::File, "cannot write '", path.string(), "': ", std::strerror(errno));
    const std::string header = npy_header(descr, shape);
    out.write(header.data(), std::streamsize(header.size()));
    if (nbytes) out.write(static_cast<const char*>(data), std::streamsize(nbytes));
    out.close();
    if (!out) fail(ErrorKind::File, "cannot write '", path.string(), "': write failed");
}

}  // namespace detail

// Writes a little-endian C-order array (shape {} is a scalar).
inline void write_npy(const std::filesystem::path& path, const float* data, const std::vector<std::size_t>& shape) {
    static_assert(sizeof(float) == 4);
    detail::write_npy_bytes(path, "<f4", data, 4, shape);
}
inline void write_npy(const std::filesystem::path& path, const std::int64_t* data, const std::vector<std::size_t>& shape) {
    detail::write_npy_bytes(path, "<i8", data, 8, shape);
}

namespace detail {

// A cursor over the header's dict literal; errors name the file.
class NpyHeaderParser {
public:
    NpyHeaderParser(std::string_view s, const std::string& file) : s_(s), file_(file) {}

    template <class... Parts>
    [[noreturn]] void bad(Parts&&... parts) const {
        fail(ErrorKind::Format, file_, ": bad .npy header: ", std::forward<Parts>(parts)...);
    }
    void skip_ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
    }
    bool eat(char c) {
        skip_ws();
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!eat(c)) bad("expected '", c, "' at offset ", i_);
    }
    std::string string_literal() {
        skip_ws();
        if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) bad("expected a string at offset ", i_);
        char q = s_[i_++];
        std::size_t start = i_;
        while (i_ < s_.size() && s_[i_] != q) {
            if (s_[i_] == '\\') bad("escapes in strings are not supported");
            ++i_;
        }
        if (i_ >= s_.size()) bad("unterminated string");
        return std::string(s_.substr(start, i_++ - start));
    }
    bool bool_literal() {
        skip_ws();
        if (s_.substr(i_, 4) == "True") return i_ += 4, true;
        if (s_.substr(i_, 5) == "False") return i_ += 5, false;
        bad("expected True or False at offset ", i_);
    }
    std::vector<std::size_t> shape_tuple() {
        expect('(');
        std::vector<std::size_t> shape;
        while (!eat(')')) {
            skip_ws();
            std::size_t v = 0;
            std::size_t digits = 0;
            while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
                if (__builtin_mul_overflow(v, std::size_t(10), &v) ||
                    __builtin_add_overflow(v, std::size_t(s_[i_] - '0'), &v))
                    bad("shape dimension overflows");
                ++i_, ++digits;
            }
            if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix
            if (!digits) bad("expected a non-negative integer in shape at offset ", i_);
            shape.push_back(v);
            if (eat(')')) break;
            expect(',');
        }
        return shape;
    }
    bool at_end() {
        skip_ws();
        return i_ == s_.size();
    }

private:
    std::string_view s_;
    std::string file_;
    std::size_t i_ = 0;
};

}  // namespace detail

// Reads a .npy file (dtypes <f4 <f8 <i4 <i8 |b1 |u1, C order); anything else,
// or a file whose size does not match its header, is an error naming the file.
inline NpyArray read_npy(const std::filesystem::path& path) {
    const std::string file = path.string();
    MappedFile m = MappedFile::open(path);
    const auto* b = reinterpret_cast<const unsigned char*>(m.data());
    const std::size_t size = m.size();
    if (size < 10 || std::memcmp(b, "\x93NUMPY", 6) != 0) fail(ErrorKind::Format, file, ": not a .npy file (bad magic)");
    const int major = b[6];
    std::size_t hlen, hstart;
    if (major == 1) {
        hlen = std::size_t(b[8]) | std::size_t(b[9]) << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) fail(ErrorKind::Format, file, ": truncated .npy header");
        hlen = std::size_t(b[8]) | std::size_t(b[9]) << 8 | std::size_t(b[10]) << 16 | std::size_t(b[11]) << 24;
        hstart = 12;
    } else {
        fail(ErrorKind::Format, file, ": unsupported .npy version ", major, ".", int(b[7]));
    }
    if (hlen > size - hstart) fail(ErrorKind::Format, file, ": .npy header length ", hlen, " runs past the end of the file");

    detail::NpyHeaderParser p(std::string_view(reinterpret_cast<const char*>(b + hstart), hlen), file);
    NpyArray a;
    a.file = file;
    bool have_descr = false, have_order = false, have_shape = false;
    p.expect('{');
    while (!p.eat('}')) {
        std::string key = p.string_literal();
        p.expect(':');
        if (key == "descr" && !have_descr) {
            std::string d = p.string_literal();
            if (d == "<f4") a.dtype = NpyDType::F4;
            else if (d == "<f8") a.dtype = NpyDType::F8;
            else if (d == "<i4") a.dtype = NpyDType::I4;
            else if (d == "<i8") a.dtype = NpyDType::I8;
            else if (d == "|b1") a.dtype = NpyDType::Bool;
            else if (d == "|u1") a.dtype = NpyDType::U1;
            else if (!d.empty() && d[0] == '>') fail(ErrorKind::Format, file, ": big-endian .npy data ('", d, "') is not supported");
            else fail(ErrorKind::Format, file, ": unsupported .npy dtype '", d, "' (expected <f4, <f8, <i4, <i8, |b1 or |u1)");
            have_descr = true;
        } else if (key == "fortran_order" && !have_order) {
            if (p.bool_literal()) fail(ErrorKind::Format, file, ": Fortran-order .npy arrays are not supported");
            have_order = true;
        } else if (key == "shape" && !have_shape) {
            a.shape = p.shape_tuple();
            have_shape = true;
        } else {
            p.bad("unexpected or repeated key '", key, "'");
        }
        if (p.eat('}')) break;
        p.expect(',');
    }
    if (!p.at_end()) p.bad("text after the dict");
    if (!have_descr || !have_order || !have_shape) p.bad("missing 'descr', 'fortran_order' or 'shape'");

    std::size_t n = 1, nbytes;
    for (auto d : a.shape)
        if (__builtin_mul_overflow(n, d, &n)) fail(ErrorKind::Limit, file, ": .npy shape overflows");
    if (__builtin_mul_overflow(n, npy_dtype_size(a.dtype), &nbytes)) fail(ErrorKind::Limit, file, ": .npy shape overflows");
    const std::size_t have = size - hstart - hlen;
    if (have != nbytes)
        fail(ErrorKind::Format, file, ": .npy data is ", have, " bytes, but ", npy_dtype_descr(a.dtype), " with shape (",
             a.shape.size(), " dims, ", n, " elements) needs ", nbytes);
    a.data.resize(nbytes);
    if (nbytes) std::memcpy(a.data.data(), b + hstart + hlen, nbytes);
    return a;
}

}  // namespace flamingo::io

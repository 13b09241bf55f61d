#pragma once
// The implementation of flamingo/io/image.hpp, compiled once in a program: in
// the CMake package's library (src/image.cpp), or in the one translation unit
// that defines FLAMINGO_IMPLEMENTATION before including flamingo/io/image.hpp.
//
// stb_image (JPEG, PNG, BMP, TGA) is compiled here with static linkage
// (STB_IMAGE_STATIC), so its functions are private to this translation unit and
// cannot collide with a copy of stb_image that the program has itself. This
// translation unit must not include <stb_image.h> on its own.
// Before stb_image sees a file, the decoder refuses or mends what stb_image
// 2.27 would mishandle (found by fuzzing; see check_jpeg_huffman_tables,
// png_for_stb, bmp_with_full_palette, the zeroing allocator below).
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/io/image.hpp"
#include "flamingo/io/image_gif.hpp"
#include "flamingo/io/image_preprocess.hpp"

#ifdef STBI_INCLUDE_STB_IMAGE_H
#error "the file that compiles flamingo's image decoding (FLAMINGO_IMPLEMENTATION) must not include <stb_image.h>"
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
#endif
// Zeroed allocations: on corrupt JPEGs (a scan naming a Huffman table that was
// never defined) and TGAs, stb_image 2.27 reads fields it never wrote, and with
// malloc those are stale heap bytes used as indices.
#define STBI_MALLOC(size) std::calloc(1, size)
#define STBI_REALLOC(p, size) std::realloc(p, size)
#define STBI_FREE(p) std::free(p)
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_TGA
#define STBI_NO_STDIO
#include <stb_image.h>
#undef STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace flamingo {

namespace detail {
namespace {

void check_size(int w, int h, const std::string& name, const ImageLimits& lim) {
    check(w > 0 && h > 0, ErrorKind::Format, "image '", name, "': ", w, "x", h, " image has no pixels");
    check(w <= lim.max_width && h <= lim.max_height, ErrorKind::Limit, "image '", name, "': ", w, "x", h, " exceeds the size limit ",
          lim.max_width, "x", lim.max_height);
}

Image blank_image(int w, int h) {
    Image im;
    im.width = w;
    im.height = h;
    im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
    return im;
}

// ---- stb_image through callbacks that record a read past the end ----

// stb_image reads through `read` in two ways: refilling its own small buffer
// (the first read of a context goes there), where a short read near the end is
// normal, and copying a block straight into an image (stbi__getn), where a short
// read means missing data, yet its TGA reader ignores the result. So: any read
// at the end, and any short read into a buffer other than stb's own, is an overrun.
struct StbSource {
    std::span<const std::uint8_t> data;
    std::size_t pos = 0;
    bool overrun = false;
    const char* refill_buffer = nullptr;

    static int read(void* user, char* out, int n) {
        auto& s = *static_cast<StbSource*>(user);
        const std::size_t left = s.data.size() - s.pos;
        if (n <= 0) return 0;
        if (!s.refill_buffer) s.refill_buffer = out;
        if (left == 0 || (left < static_cast<std::size_t>(n) && out != s.refill_buffer)) s.overrun = true;
        if (left == 0) return 0;
        const std::size_t k = std::min(left, static_cast<std::size_t>(n));
        std::memcpy(out, s.data.data() + s.pos, k);
        s.pos += k;
        return static_cast<int>(k);
    }
    static void skip(void* user, int n) {
        auto& s = *static_cast<StbSource*>(user);
        if (n <= 0) return;
        if (static_cast<std::size_t>(n) > s.data.size() - s.pos) {
            s.overrun = true;
            s.pos = s.data.size();
        } else {
            s.pos += static_cast<std::size_t>(n);
        }
    }
    static int eof(void* user) {
        auto& s = *static_cast<StbSource*>(user);
        return s.pos >= s.data.size();
    }
    static constexpr stbi_io_callbacks callbacks{&StbSource::read, &StbSource::skip, &StbSource::eof};
};

struct StbFree {
    void operator()(void* p) const { stbi_image_free(p); }
};

std::uint32_t read_be(std::span<const std::uint8_t> b, std::size_t at, int n) {
    std::uint32_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | b[at + i];
    return v;
}

// The PNG as stb_image should see it, or empty when it can take the file as is:
//  - a PLTE of fewer than 256 entries is filled up with Pillow's default palette
//    (grey, i -> (i, i, i)), which is what Pillow shows for indices past the
//    file's palette, where stb_image would read uninitialised memory;
//  - empty IDAT chunks are dropped (stb_image would memcpy to a null pointer).
// Chunk CRCs are left as they are: stb_image does not check them.
std::vector<std::uint8_t> png_for_stb(std::span<const std::uint8_t> b) {
    std::vector<std::uint8_t> out;
    bool changed = false;
    std::size_t pos = 8;
    out.insert(out.end(), b.begin(), b.begin() + std::min<std::size_t>(8, b.size()));
    while (b.size() >= 12 && pos <= b.size() - 12) {
        const std::size_t len = read_be(b, pos, 4);
        if (len > b.size() - pos - 12) break;
        const auto type = b.subspan(pos + 4, 4);
        const std::size_t next = pos + 12 + len;
        if (std::memcmp(type.data(), "IDAT", 4) == 0 && len == 0) {
            changed = true;
        } else if (std::memcmp(type.data(), "PLTE", 4) == 0 && len > 0 && len % 3 == 0 && len < 768) {
            changed = true;
            for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(768 >> s));
            out.insert(out.end(), b.begin() + pos + 4, b.begin() + pos + 8 + len);
            for (std::size_t i = len / 3; i < 256; ++i) out.insert(out.end(), 3, static_cast<std::uint8_t>(i));
            out.insert(out.end(), b.begin() + next - 4, b.begin() + next);
        } else {
            out.insert(out.end(), b.begin() + pos, b.begin() + next);
        }
        pos = next;
        if (std::memcmp(type.data(), "IEND", 4) == 0) break;
    }
    if (!changed) return {};
    out.insert(out.end(), b.begin() + pos, b.end());
    return out;
}

// Where a JPEG's data starts after its SOI marker, 0 if it is no JPEG: stb_image
// takes any run of 0xFF bytes followed by 0xD8 as the start of one.
std::size_t jpeg_start(std::span<const std::uint8_t> b) {
    std::size_t i = 0;
    while (i < b.size() && b[i] == 0xFF) ++i;
    return i > 0 && i < b.size() && b[i] == 0xD8 ? i + 1 : 0;
}

// stb_image 2.27 builds a JPEG Huffman table without checking that its code
// counts add up to at most 256 and then writes past the table. Walk the marker
// segments as stb_image does (stray bytes between segments skipped, entropy-coded
// data up to the next marker) and refuse such tables before it sees them.
void check_jpeg_huffman_tables(std::span<const std::uint8_t> b, const std::string& name) {
    std::size_t pos = jpeg_start(b);
    while (pos + 1 < b.size()) {
        if (b[pos] != 0xFF || b[pos + 1] == 0xFF || b[pos + 1] == 0x00) {
            ++pos;
            continue;
        }
        const std::uint8_t marker = b[pos + 1];
        pos += 2;
        if (marker == 0xD9) return;  // EOI
        if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no segment
        if (b.size() - pos < 2) return;
        const std::size_t len = read_be(b, pos, 2);
        if (len < 2) return;  // stb_image refuses it
        if (marker == 0xC4) {
            // Tables as stb_image reads them: while the segment has bytes left, a
            // whole table, even past the segment's end; past the file's end it reads 0s.
            std::size_t at = pos + 2;
            for (long left = static_cast<long>(len) - 2; left > 0 && at < b.size();) {
                std::size_t codes = 0;
                for (std::size_t i = at + 1; i <= at + 16 && i < b.size(); ++i) codes += b[i];
                check(codes <= 256, ErrorKind::Format, "image '", name, "': corrupt JPEG (Huffman table with ", codes, " codes)");
                left -= static_cast<long>(17 + codes);
                at += 17 + codes;
            }
        }
        if (len > b.size() - pos) return;  // truncated: left to the reads past the end
        pos += len;
        if (marker == 0xDA) {  // entropy-coded data: FF 00 is a data byte, RSTn belong to the scan
            while (pos + 1 < b.size() &&
                   !(b[pos] == 0xFF && b[pos + 1] != 0x00 && b[pos + 1] != 0xFF && (b[pos + 1] < 0xD0 || b[pos + 1] > 0xD7)))
                ++pos;
        }
    }
}

Image decode_stb(std::span<const std::uint8_t> bytes, const std::string& name, const ImageLimits& lim) {
    int w = 0, h = 0, comp = 0;
    StbSource info{bytes};
    if (!stbi_info_from_callbacks(&StbSource::callbacks, &info, &w, &h, &comp))
        fail(ErrorKind::Format, "image '", name, "': not a readable image (", stbi_failure_reason(), ")");
    check_size(w, h, name, lim);
    StbSource probe{bytes};
    const bool wide = stbi_is_16_bit_from_callbacks(&StbSource::callbacks, &probe);

    StbSource src{bytes};
    int dw = 0, dh = 0, n = 0;
    std::unique_ptr<void, StbFree> pixels(
        wide ? static_cast<void*>(stbi_load_16_from_callbacks(&StbSource::callbacks, &src, &dw, &dh, &n, 0))
             : static_cast<void*>(stbi_load_from_callbacks(&StbSource::callbacks, &src, &dw, &dh, &n, 0)));
    if (src.overrun) fail(ErrorKind::Format, "image '", name, "': truncated (the file ends before the image data does)");
    if (!pixels) fail(ErrorKind::Format, "image '", name, "': corrupt image (", stbi_failure_reason(), ")");
    check(dw == w && dh == h && n >= 1 && n <= 4, ErrorKind::Format, "image '", name, "': inconsistent image header");

    Image im = blank_image(w, h);
    const std::size_t count = static_cast<std::size_t>(w) * h;
    if (wide) {
        // Pillow: 16-bit grey loads as mode "I" and converts by clipping; other 16-bit modes keep the high byte.
        const auto* p = static_cast<const std::uint16_t*>(pixels.get());
        for (std::size_t i = 0; i < count; ++i, p += n) {
            if (n <= 2) {
                const std::uint8_t g = n == 1 ? static_cast<std::uint8_t>(std::min<int>(p[0], 255))
                                              : static_cast<std::uint8_t>(p[0] >> 8);
                im.rgb[3 * i] = im.rgb[3 * i + 1] = im.rgb[3 * i + 2] = g;
            } else {
                for (int c = 0; c < 3; ++c) im.rgb[3 * i + c] = static_cast<std::uint8_t>(p[c] >> 8);
            }
        }
    } else {
        const auto* p = static_cast<const std::uint8_t*>(pixels.get());
        for (std::size_t i = 0; i < count; ++i, p += n) {
            if (n <= 2) im.rgb[3 * i] = im.rgb[3 * i + 1] = im.rgb[3 * i + 2] = p[0];
            else std::memcpy(&im.rgb[3 * i], p, 3);
        }
    }
    return im;
}

// ---- binary PNM (P4, P5, P6) as Pillow 9.4 reads it ----

Image decode_pnm(std::span<const std::uint8_t> b, const std::string& name, const ImageLimits& lim) {
    const char kind = static_cast<char>(b[1]);
    std::size_t pos = 2;
    auto space = [](std::uint8_t c) { return c == ' ' || (c >= 9 && c <= 13); };
    // Header tokens as Pillow reads them: whitespace and '#' comments between, at most 10 characters each.
    auto token = [&](const char* what) -> long {
        std::string t;
        while (pos < b.size() && t.size() <= 10) {
            const std::uint8_t c = b[pos++];
            if (space(c)) {
                if (t.empty()) continue;
                break;
            }
            if (c == '#') {
                while (pos < b.size() && b[pos] != '\r' && b[pos] != '\n') ++pos;
                if (pos < b.size()) ++pos;
                continue;
            }
            check(c >= '0' && c <= '9', ErrorKind::Format, "image '", name, "': bad PNM header (", what, ")");
            t += static_cast<char>(c);
        }
        check(!t.empty(), ErrorKind::Format, "image '", name, "': truncated PNM header");
        check(t.size() <= 10, ErrorKind::Format, "image '", name, "': bad PNM header (", what, " too long)");
        return std::stol(t);
    };
    const long w = token("width"), h = token("height");
    check_size(static_cast<int>(std::min<long>(w, std::numeric_limits<int>::max())),
               static_cast<int>(std::min<long>(h, std::numeric_limits<int>::max())), name, lim);
    const long maxval = kind == '4' ? 1 : token("maxval");
    check(maxval > 0 && maxval < 65536, ErrorKind::Format, "image '", name, "': PNM maxval ", maxval, " is not in 1..65535");

    const std::size_t count = static_cast<std::size_t>(w) * h;
    const std::size_t bands = kind == '6' ? 3 : 1, sample = maxval < 256 ? 1 : 2;
    const std::size_t row_bytes = kind == '4' ? (static_cast<std::size_t>(w) + 7) / 8 : w * bands * sample;
    check(b.size() - pos >= row_bytes * h, ErrorKind::Format, "image '", name, "': truncated PNM data");
    Image im = blank_image(static_cast<int>(w), static_cast<int>(h));
    const std::uint8_t* d = b.data() + pos;
    if (kind == '4') {  // 1 bit per pixel, 1 = black
        for (long y = 0; y < h; ++y)
            for (long x = 0; x < w; ++x) {
                const bool black = (d[y * row_bytes + x / 8] >> (7 - x % 8)) & 1;
                std::memset(&im.rgb[(y * w + x) * 3], black ? 0 : 255, 3);
            }
        return im;
    }
    // Pillow: maxval 255 is raw; P5 with maxval 65535 is read as 16-bit and clipped
    // to 255; other maxvals scale with Python's round(v / maxval * top), where top
    // is 65535 for P5 with maxval > 255 (mode "I", then clipped), else 255.
    const double top = (kind == '5' && maxval > 255) ? 65535.0 : 255.0;
    std::vector<std::uint8_t> map(sample == 1 ? 256 : 65536);
    for (std::size_t v = 0; v < map.size(); ++v) {
        double s = static_cast<double>(v);
        if (maxval != 255 && !(kind == '5' && maxval == 65535))
            s = std::min(top, std::nearbyint(static_cast<double>(v) / static_cast<double>(maxval) * top));
        map[v] = static_cast<std::uint8_t>(std::min(s, 255.0));
    }
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t c = 0; c < 3; ++c) {
            const std::size_t k = i * bands + (bands == 3 ? c : 0);
            const unsigned v = sample == 1 ? d[k] : (d[2 * k] << 8) | d[2 * k + 1];
            im.rgb[3 * i + c] = map[v];
        }
    return im;
}

// A palette BMP (1, 4 or 8 bits) with a full 256-entry palette: the file's first
// `colors` entries (biClrUsed, or 2^bits), then Pillow's default grey ramp, which
// is what Pillow shows for indices past the palette; stb_image would read
// uninitialised memory there. Empty when the file is not such a BMP.
std::vector<std::uint8_t> bmp_with_full_palette(std::span<const std::uint8_t> b) {
    auto le = [&](std::size_t at, int n) {
        std::uint32_t v = 0;
        for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[at + i];
        return v;
    };
    if (b.size() < 54) return {};
    const std::uint32_t header = le(14, 4), bits = le(28, 2), offset = le(10, 4);
    if (header < 40 || header > b.size() - 14 || (bits != 1 && bits != 4 && bits != 8)) return {};
    const std::size_t start = 14 + header;
    if (offset < start || offset > b.size()) return {};
    std::uint32_t colors = le(46, 4);
    if (colors == 0 || colors > 256) colors = std::min<std::uint32_t>(colors == 0 ? 1u << bits : colors, 256);
    std::vector<std::uint8_t> out(b.begin(), b.begin() + start);
    for (std::uint32_t i = 0; i < 256; ++i) {
        const std::size_t at = start + 4 * i;
        if (i < colors && at + 4 <= b.size()) out.insert(out.end(), b.begin() + at, b.begin() + at + 4);
        else out.insert(out.end(), {static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i), 0});
    }
    out.insert(out.end(), b.begin() + offset, b.end());
    const std::uint32_t new_offset = static_cast<std::uint32_t>(start + 1024);
    for (int i = 0; i < 4; ++i) out[10 + i] = static_cast<std::uint8_t>(new_offset >> (8 * i));
    return out;
}

// stb_image widens the n-bit channels of 16-bit BMPs by bit replication, which
// keeps the field in the top n bits; Pillow computes field * 255 / (2^n - 1).
void rescale_bmp16(std::span<const std::uint8_t> b, Image& im) {
    auto le = [&](std::size_t at, int n) {
        std::uint32_t v = 0;
        for (int i = n - 1; i >= 0; --i) v = (v << 8) | b[at + i];
        return v;
    };
    if (b.size() < 66 || le(14, 4) < 40 || le(28, 2) != 16) return;
    std::array<std::uint32_t, 3> masks{0x7C00, 0x03E0, 0x001F};  // BI_RGB: 5-5-5
    if (le(30, 4) == 3) masks = {le(54, 4), le(58, 4), le(62, 4)};  // BI_BITFIELDS
    for (int c = 0; c < 3; ++c) {
        const int bits = std::popcount(masks[c]);
        if (bits < 1 || bits > 7) continue;
        std::array<std::uint8_t, 256> map;
        for (int v = 0; v < 256; ++v) map[v] = static_cast<std::uint8_t>((v >> (8 - bits)) * 255 / ((1 << bits) - 1));
        for (std::size_t i = c; i < im.rgb.size(); i += 3) im.rgb[i] = map[im.rgb[i]];
    }
}

enum class ImageFormat { Unknown, Jpeg, Png, Bmp, Gif, Pnm, PlainPnm, Tga };

ImageFormat sniff(std::span<const std::uint8_t> b) {
    auto starts = [&](const char* magic, std::size_t n) { return b.size() >= n && std::memcmp(b.data(), magic, n) == 0; };
    if (starts("\xFF\xD8\xFF", 3)) return ImageFormat::Jpeg;  // Pillow's test; stb_image's is looser
    if (jpeg_start(b) > 0) return ImageFormat::Unknown;
    if (starts("\x89PNG\r\n\x1A\n", 8)) return ImageFormat::Png;
    if (starts("BM", 2)) return ImageFormat::Bmp;
    if (starts("GIF87a", 6) || starts("GIF89a", 6)) return ImageFormat::Gif;
    if (b.size() >= 2 && b[0] == 'P' && b[1] >= '4' && b[1] <= '6') return ImageFormat::Pnm;
    if (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '3') return ImageFormat::PlainPnm;
    return ImageFormat::Tga;  // TGA has no signature: stb_image decides
}

std::vector<std::uint8_t> read_image_file(const std::filesystem::path& file, const ImageLimits& lim) {
    const std::string name = file.string();
    std::error_code ec;
    const auto status = std::filesystem::status(file, ec);
    check(std::filesystem::exists(status), ErrorKind::File, "image '", name, "': no such file");
    check(!std::filesystem::is_directory(status), ErrorKind::File, "image '", name, "': is a directory, not an image file");
    check(std::filesystem::is_regular_file(status), ErrorKind::File, "image '", name, "': not a regular file");
    const auto size = std::filesystem::file_size(file, ec);
    check(!ec, ErrorKind::File, "image '", name, "': cannot read the file size (", ec.message(), ")");
    check(size <= lim.max_file_bytes, ErrorKind::Limit, "image '", name, "': file of ", size, " bytes exceeds the limit of ",
          lim.max_file_bytes, " bytes");
    std::ifstream in(file, std::ios::binary);
    check(in.good(), ErrorKind::File, "image '", name, "': cannot open the file");
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    check(static_cast<std::uint64_t>(in.gcount()) == size, ErrorKind::File, "image '", name, "': could not read the whole file");
    return bytes;
}

[[noreturn]] void too_few_frames(const std::string& name, std::size_t available, std::size_t wanted) {
    fail(ErrorKind::Input, "'", name, "' has ", available, " frame", available == 1 ? "" : "s", ", fewer than the ", wanted, " asked for");
}

void check_total(std::size_t frames, const Image& frame, const std::string& name, const ImageLimits& lim) {
    const std::uint64_t total = static_cast<std::uint64_t>(frames) * frame.rgb.size();
    check(total <= lim.max_total_bytes, ErrorKind::Limit, "image '", name, "': ", frames, " frames of ", frame.width, "x", frame.height,
          " take ", total, " bytes, more than the limit of ", lim.max_total_bytes);
}

}  // namespace
}  // namespace detail

// ---- The public functions (declared and described in image.hpp) ----

Image decode_image(std::span<const std::uint8_t> bytes, const std::string& name, const ImageLimits& limits) {
    using detail::ImageFormat;
    check(!bytes.empty(), ErrorKind::Format, "image '", name, "': empty file");
    switch (detail::sniff(bytes)) {
        case ImageFormat::Gif: {
            detail::GifDecoder gif(bytes, name, limits.max_width, limits.max_height);
            check(gif.next(), ErrorKind::Format, "image '", name, "': GIF without any image");
            return gif.canvas();
        }
        case ImageFormat::Pnm: return detail::decode_pnm(bytes, name, limits);
        case ImageFormat::Bmp: {
            const auto padded = detail::bmp_with_full_palette(bytes);
            Image im = detail::decode_stb(padded.empty() ? bytes : std::span<const std::uint8_t>(padded), name, limits);
            detail::rescale_bmp16(bytes, im);
            return im;
        }
        case ImageFormat::Png: {
            const auto fixed = detail::png_for_stb(bytes);
            return detail::decode_stb(fixed.empty() ? bytes : std::span<const std::uint8_t>(fixed), name, limits);
        }
        case ImageFormat::Jpeg: detail::check_jpeg_huffman_tables(bytes, name); return detail::decode_stb(bytes, name, limits);
        case ImageFormat::PlainPnm: fail(ErrorKind::Format, "image '", name, "': plain (ASCII) PNM is not supported");
        case ImageFormat::Unknown: fail(ErrorKind::Format, "image '", name, "': not an image (unrecognised format)");
        case ImageFormat::Tga: return detail::decode_stb(bytes, name, limits);
    }
    fail(ErrorKind::Format, "image '", name, "': unhandled format");
}

std::vector<Image> decode_frames(std::span<const std::uint8_t> bytes, const std::string& name,
                                 const ImageLimits& limits) {
    std::vector<Image> frames;
    if (detail::sniff(bytes) != detail::ImageFormat::Gif) {
        frames.push_back(decode_image(bytes, name, limits));
        return frames;
    }
    detail::GifDecoder gif(bytes, name, limits.max_width, limits.max_height);
    while (gif.next()) {
        detail::check_total(frames.size() + 1, gif.canvas(), name, limits);
        frames.push_back(gif.canvas());
    }
    check(!frames.empty(), ErrorKind::Format, "image '", name, "': GIF without any image");
    return frames;
}

std::vector<std::size_t> sample_frame_indices(std::size_t available, std::size_t wanted) {
    std::vector<std::size_t> out;
    if (wanted == 0) return out;
    check(available > 0, ErrorKind::Input, "sample_frame_indices: no frames to sample ", wanted, " from");
    out.reserve(wanted);
    for (std::size_t k = 0; k < wanted; ++k) {
        const unsigned __int128 num = static_cast<unsigned __int128>(2 * static_cast<unsigned __int128>(k) + 1) * available;
        out.push_back(static_cast<std::size_t>(num / (static_cast<unsigned __int128>(2) * wanted)));
    }
    return out;
}

std::vector<Image> decode_media_frames(std::span<const std::uint8_t> bytes, const std::string& name,
                                       std::size_t frames, const ImageLimits& limits) {
    check(frames > 0, ErrorKind::Input, "'", name, "': no frames asked for");
    if (frames == 1) return {decode_image(bytes, name, limits)};
    if (detail::sniff(bytes) != detail::ImageFormat::Gif) {
        decode_image(bytes, name, limits);  // a file that is no image says so, rather than "1 frame"
        detail::too_few_frames(name, 1, frames);
    }
    // Count the frames first, then decode keeping only the chosen ones, so long
    // animations need little memory.
    std::size_t available = 0;
    {
        detail::GifDecoder counter(bytes, name, limits.max_width, limits.max_height);
        while (counter.next(false)) ++available;
    }
    if (available < frames) detail::too_few_frames(name, available, frames);
    const auto pick = sample_frame_indices(available, frames);
    std::vector<Image> out;
    detail::GifDecoder gif(bytes, name, limits.max_width, limits.max_height);
    for (std::size_t index = 0, k = 0; k < pick.size(); ++index) {
        check(gif.next(), ErrorKind::Format, "image '", name, "': GIF frame ", index, " is missing");
        if (index == 0) detail::check_total(frames, gif.canvas(), name, limits);
        if (pick[k] != index) continue;
        out.push_back(gif.canvas());
        ++k;
    }
    return out;
}

Image load_image(const std::filesystem::path& file, const ImageLimits& limits) {
    const auto bytes = detail::read_image_file(file, limits);
    return decode_image(bytes, file.string(), limits);
}

std::vector<Image> load_frames(const std::filesystem::path& file, const ImageLimits& limits) {
    const auto bytes = detail::read_image_file(file, limits);
    return decode_frames(bytes, file.string(), limits);
}

std::vector<Image> load_frame_files(std::span<const std::filesystem::path> files, const ImageLimits& limits) {
    std::vector<Image> frames;
    std::uint64_t total = 0;
    for (const auto& f : files) {
        frames.push_back(load_image(f, limits));
        total += frames.back().rgb.size();
        check(total <= limits.max_total_bytes, ErrorKind::Limit, "image '", f.string(), "': frames so far take ", total,
              " bytes, more than the limit of ", limits.max_total_bytes);
    }
    return frames;
}

std::vector<Image> load_media_frames(const std::filesystem::path& path, std::size_t frames, const ImageLimits& limits) {
    namespace fs = std::filesystem;
    const std::string name = path.string();
    std::error_code ec;
    if (!fs::is_directory(path, ec)) {
        const auto bytes = detail::read_image_file(path, limits);
        return decode_media_frames(bytes, name, frames, limits);
    }
    check(frames > 0, ErrorKind::Input, "'", name, "': no frames asked for");
    std::vector<fs::path> files;
    for (fs::directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code file_ec;
        if (it->is_regular_file(file_ec)) files.push_back(it->path());
    }
    check(!ec, ErrorKind::File, "'", name, "': cannot list the frame directory (", ec.message(), ")");
    if (files.size() < frames) detail::too_few_frames(name, files.size(), frames);
    std::sort(files.begin(), files.end());
    std::vector<fs::path> pick;
    for (std::size_t i : sample_frame_indices(files.size(), frames)) pick.push_back(files[i]);
    return load_frame_files(pick, limits);
}

}  // namespace flamingo

#pragma once
// Pixel work on decoded images: Pillow's antialiased bicubic resize (bit-exact
// with Pillow 9.4's Image.resize(..., BICUBIC) on 8-bit RGB) and open_clip's eval
// transform (torchvision Resize(size, BICUBIC) -> CenterCrop -> ToTensor -> Normalize).
//
// Resampling is separable, as in Pillow: per output sample a window of input
// samples is weighted by a bicubic kernel (a = -0.5) stretched by the downscale
// factor (that stretch is the antialiasing), the weights are normalised to sum 1
// and turned into 22-bit fixed point; the horizontal pass writes a clipped 8-bit
// intermediate, the vertical pass reads it. A pass is skipped when its size does
// not change. Every double and integer operation below mirrors Pillow's order so
// that the results agree to the bit.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "flamingo/core/error.hpp"

namespace flamingo {

// 8-bit RGB, interleaved, row-major: pixel (x, y) channel c is rgb[(y * width + x) * 3 + c].
struct Image {
    int width = 0, height = 0;
    std::vector<std::uint8_t> rgb;
};

struct ClipPreprocess {
    int image_size = 224;
    std::array<float, 3> mean{0.48145466f, 0.4578275f, 0.40821073f};
    std::array<float, 3> std{0.26862954f, 0.26130258f, 0.27577711f};
};

namespace detail {

// Returns v through memory, so the compiler cannot fuse the multiply that
// produced it with a following add (an FMA would round differently from Pillow).
inline double unfused(double v) {
    volatile double t = v;
    return t;
}

// Pillow's bicubic kernel with a = -0.5, evaluated in Pillow's operation order.
inline double bicubic_kernel(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) {
        const double t = unfused(1.5 * x) - 2.5;  // ((a + 2) x - (a + 3))
        return unfused(t * x * x) + 1.0;
    }
    if (x < 2.0) {
        const double t = unfused((x - 5.0) * x) + 8.0;
        return (unfused(t * x) - 4.0) * -0.5;
    }
    return 0.0;
}

constexpr int resample_precision_bits = 32 - 8 - 2;  // Pillow's PRECISION_BITS for 8-bit images
constexpr std::uint64_t max_output_pixels = std::uint64_t{1} << 28;  // bounds what a bad argument can allocate
constexpr int max_clip_image_size = 4096;

// Fixed-point taps of one resampling axis, for the outputs [first_out, first_out + count).
struct ResampleTaps {
    int ksize = 0;                     // taps per output (stride of weights)
    std::vector<int> start, length;    // first input index and number of taps, per output
    std::vector<std::int32_t> weights; // count * ksize
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a box (0, in_size),
// restricted to some of the outputs (each output's taps depend only on its index).
inline ResampleTaps bicubic_taps(int in_size, int out_size, int first_out, int count) {
    // Pillow computes the scale from float box coordinates.
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = 2.0 * filterscale;
    const double inv = 1.0 / filterscale;
    ResampleTaps taps;
    taps.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    taps.start.resize(count);
    taps.length.resize(count);
    taps.weights.assign(static_cast<std::size_t>(count) * taps.ksize, 0);
    std::vector<double> k(taps.ksize);
    for (int i = 0; i < count; ++i) {
        const int xx = first_out + i;
        const double center = (xx + 0.5) * scale;
        int xmin = static_cast<int>(center - support + 0.5);  // truncation, as Pillow's (int) cast
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            k[x] = bicubic_kernel((x + xmin - center + 0.5) * inv);
            ww += k[x];
        }
        std::int32_t* w = &taps.weights[static_cast<std::size_t>(i) * taps.ksize];
        for (int x = 0; x < xmax; ++x) {
            const double v = ww != 0.0 ? k[x] / ww : k[x];
            const double s = v * (1 << resample_precision_bits);
            w[x] = static_cast<std::int32_t>(v < 0 ? -0.5 + s : 0.5 + s);
        }
        taps.start[i] = xmin;
        taps.length[i] = xmax;
    }
    return taps;
}

inline std::uint8_t clip_fixed(std::int32_t acc) {
    const std::int32_t v = acc >> resample_precision_bits;  // arithmetic shift: floor, as Pillow
    return static_cast<std::uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

inline void check_image(const Image& im, const char* what) {
    check(im.width > 0 && im.height > 0, what, ": image has no pixels (", im.width, "x", im.height, ")");
    check(im.rgb.size() == static_cast<std::size_t>(im.width) * im.height * 3, what, ": image of ", im.width, "x",
          im.height, " holds ", im.rgb.size(), " bytes, expected ", static_cast<std::size_t>(im.width) * im.height * 3);
}

// The window [x0, x0 + w) x [y0, y0 + h) of the image resized to out_w x out_h,
// computed without the rest (what CenterCrop after Resize needs).
inline Image resize_bicubic_window(const Image& in, int out_w, int out_h, int x0, int y0, int w, int h) {
    const bool need_h = out_w != in.width;
    const bool need_v = out_h != in.height;
    Image out;
    out.width = w;
    out.height = h;
    out.rgb.resize(static_cast<std::size_t>(w) * h * 3);

    // Input rows that the vertical pass reads (all of the window's rows when it is skipped).
    ResampleTaps vt;
    int row0 = y0, rows = h;
    if (need_v) {
        vt = bicubic_taps(in.height, out_h, y0, h);
        row0 = vt.start.front();
        rows = vt.start.back() + vt.length.back() - row0;
    }

    // Horizontal pass into an 8-bit intermediate of the needed rows (or a view of the input).
    std::vector<std::uint8_t> mid;
    const std::uint8_t* src = nullptr;  // row r of the intermediate = input row row0 + r
    std::size_t src_stride = 0;
    int src_x0 = 0;  // column of the intermediate that is output column x0
    if (need_h) {
        const ResampleTaps ht = bicubic_taps(in.width, out_w, x0, w);
        mid.resize(static_cast<std::size_t>(rows) * w * 3);
        const std::int32_t half = 1 << (resample_precision_bits - 1);
        for (int r = 0; r < rows; ++r) {
            const std::uint8_t* row = &in.rgb[static_cast<std::size_t>(row0 + r) * in.width * 3];
            std::uint8_t* dst = &mid[static_cast<std::size_t>(r) * w * 3];
            for (int i = 0; i < w; ++i) {
                const std::int32_t* k = &ht.weights[static_cast<std::size_t>(i) * ht.ksize];
                const std::uint8_t* p = row + static_cast<std::size_t>(ht.start[i]) * 3;
                std::int32_t s0 = half, s1 = half, s2 = half;
                for (int t = 0; t < ht.length[i]; ++t) {
                    s0 += p[3 * t + 0] * k[t];
                    s1 += p[3 * t + 1] * k[t];
                    s2 += p[3 * t + 2] * k[t];
                }
                dst[3 * i + 0] = clip_fixed(s0);
                dst[3 * i + 1] = clip_fixed(s1);
                dst[3 * i + 2] = clip_fixed(s2);
            }
        }
        src = mid.data();
        src_stride = static_cast<std::size_t>(w) * 3;
    } else {
        src = in.rgb.data() + static_cast<std::size_t>(row0) * in.width * 3;
        src_stride = static_cast<std::size_t>(in.width) * 3;
        src_x0 = x0;
    }

    const std::size_t row_bytes = static_cast<std::size_t>(w) * 3;
    if (!need_v) {
        for (int r = 0; r < h; ++r)
            std::copy_n(src + r * src_stride + static_cast<std::size_t>(src_x0) * 3, row_bytes,
                        &out.rgb[r * row_bytes]);
        return out;
    }

    // Vertical pass: one accumulator row, taps outermost so the inner loop vectorises.
    std::vector<std::int32_t> acc(row_bytes);
    for (int j = 0; j < h; ++j) {
        std::fill(acc.begin(), acc.end(), 1 << (resample_precision_bits - 1));
        const std::int32_t* k = &vt.weights[static_cast<std::size_t>(j) * vt.ksize];
        for (int t = 0; t < vt.length[j]; ++t) {
            const std::uint8_t* p = src + static_cast<std::size_t>(vt.start[j] + t - row0) * src_stride +
                                    static_cast<std::size_t>(src_x0) * 3;
            const std::int32_t kt = k[t];
            for (std::size_t i = 0; i < row_bytes; ++i) acc[i] += p[i] * kt;
        }
        std::uint8_t* dst = &out.rgb[j * row_bytes];
        for (std::size_t i = 0; i < row_bytes; ++i) dst[i] = clip_fixed(acc[i]);
    }
    return out;
}

// Python's round() of n / 2 (round half to even), as torchvision's CenterCrop offsets use.
inline int half_round_even(int n) {
    int q = n / 2;
    if (n % 2 != 0 && q % 2 != 0) ++q;
    return q;
}

}  // namespace detail

// Pillow's Image.resize((width, height), Image.BICUBIC) of an RGB image, to the bit.
// The same size returns a copy, as Pillow does.
inline Image resize_bicubic(const Image& in, int width, int height) {
    detail::check_image(in, "resize_bicubic");
    check(width > 0 && height > 0, "resize_bicubic: target size ", width, "x", height, " must be positive");
    check(static_cast<std::uint64_t>(width) * height <= detail::max_output_pixels, "resize_bicubic: target size ",
          width, "x", height, " is too large");
    return detail::resize_bicubic_window(in, width, height, 0, 0, width, height);
}

// Output size of torchvision's Resize(size) on a width x height image: the shorter
// side becomes `size`, the longer int(size * long / short) (truncated, in double).
inline std::array<int, 2> clip_resize_size(int width, int height, int size) {
    const bool w_short = width <= height;
    const long long shorter = w_short ? width : height, longer = w_short ? height : width;
    const double l = static_cast<double>(static_cast<long long>(size) * longer) / static_cast<double>(shorter);
    check(l <= static_cast<double>(std::numeric_limits<int>::max()), "CLIP preprocessing: resizing ", width, "x",
          height, " to shorter side ", size, " gives a side of ", l, " pixels, too large");
    const int new_long = static_cast<int>(l);
    return w_short ? std::array<int, 2>{size, new_long} : std::array<int, 2>{new_long, size};
}

// open_clip's eval transform: Resize(image_size, BICUBIC) on the shorter side,
// CenterCrop(image_size), ToTensor (/255), Normalize(mean, std). Returns CHW float
// [3, image_size, image_size], bit-identical to torchvision's. When the resize
// would not change the size it is skipped, as torchvision does (so an image_size
// square image passes unresampled). The input is RGB: open_clip itself converts
// to RGB only after resizing, so a palette, alpha, 16-bit or 1-bit PIL image
// handed to it unconverted is resampled differently (nearest neighbour for
// palettes, premultiplied alpha); decoding here always converts first.
inline std::vector<float> clip_preprocess(const Image& im, const ClipPreprocess& cfg) {
    detail::check_image(im, "clip_preprocess");
    const int S = cfg.image_size;
    check(S > 0 && S <= detail::max_clip_image_size, "clip_preprocess: image_size must be in 1..",
          detail::max_clip_image_size, ", got ", S);
    const auto [rw, rh] = clip_resize_size(im.width, im.height, S);
    // The shorter side is S and the longer at least S, so the crop never pads.
    const int left = detail::half_round_even(rw - S), top = detail::half_round_even(rh - S);
    Image crop;
    if (rw == im.width && rh == im.height) {
        crop.width = crop.height = S;
        crop.rgb.resize(static_cast<std::size_t>(S) * S * 3);
        for (int y = 0; y < S; ++y)
            std::copy_n(&im.rgb[(static_cast<std::size_t>(top + y) * im.width + left) * 3], static_cast<std::size_t>(S) * 3,
                        &crop.rgb[static_cast<std::size_t>(y) * S * 3]);
    } else {
        crop = detail::resize_bicubic_window(im, rw, rh, left, top, S, S);
    }
    // Float32 arithmetic in torch's order: x / 255, then (x - mean) / std.
    const std::size_t plane = static_cast<std::size_t>(S) * S;
    std::vector<float> out(3 * plane);
    for (int c = 0; c < 3; ++c) {
        std::array<float, 256> lut;
        for (int v = 0; v < 256; ++v) lut[v] = (static_cast<float>(v) / 255.0f - cfg.mean[c]) / cfg.std[c];
        float* dst = &out[c * plane];
        for (std::size_t i = 0; i < plane; ++i) dst[i] = lut[crop.rgb[i * 3 + c]];
    }
    return out;
}

}  // namespace flamingo

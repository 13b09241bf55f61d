#pragma once
// Pixel work on decoded images: Pillow's antialiased bicubic resize (bit-exact
// with Pillow 9.4's Image.resize(..., BICUBIC) on 8-bit RGB) and open_clip's eval
// transform (torchvision Resize(size, BICUBIC) -> CenterCrop -> ToTensor -> Normalize).
//
// Resizing is separable: a horizontal pass into a clipped 8-bit intermediate,
// then a vertical pass; a pass whose size does not change is skipped. Each pass
// is an AxisFilter (below): per output sample, a run of input samples and their
// fixed-point weights.
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
    // false: IDEFICS's image processor, a resize of the whole image to
    // image_size x image_size (Pillow bicubic, the aspect ratio not kept) and no crop.
    bool center_crop = true;
};

namespace detail {

// ---- The resampling filter of one axis ----
//
// Output sample i of an axis resized from n to m samples sits at
// centre = (i + 0.5) * n / m in input coordinates (input sample j covers
// [j, j + 1)). Its value is a weighted sum of the inputs near it, weighted by
// the cubic kernel at their distance. Downscaling stretches the kernel by n / m,
// so that every input under the output's footprint contributes (antialiasing);
// upscaling uses it as is. The weights of each output are normalised to sum 1
// (the kernel's samples do not quite, and the image border cuts off part of
// it), then stored as 22-bit fixed point.
//
// Pillow's numbers are what the tests pin, bit for bit, so the floating-point
// steps below are done in the order that gives them: a different but
// mathematically equal order changes some weights in their last bit and, after
// rounding to fixed point, an occasional pixel.

// Passes a product through memory so that the compiler cannot contract it with
// the next addition into one FMA (which rounds once where we need two roundings).
inline double rounded(double v) {
    volatile double r = v;
    return r;
}

// Keys' cubic convolution kernel with a = -0.5, zero from |x| = 2 on:
//   |x| < 1:  (a + 2)|x|^3 - (a + 3)|x|^2 + 1
//   |x| < 2:  a|x|^3 - 5a|x|^2 + 8a|x| - 4a
// each evaluated as a Horner chain from the highest power.
inline double cubic_kernel(double x) {
    constexpr double a = -0.5;
    constexpr double near[] = {a + 2, -(a + 3), 0, 1}, far[] = {a, -5 * a, 8 * a, -4 * a};
    x = std::fabs(x);
    if (x >= 2.0) return 0.0;
    const double* c = x < 1.0 ? near : far;
    double v = c[0];
    for (int k = 1; k < 4; ++k) v = rounded(v * x) + c[k];
    return v;
}

// 22 fractional bits leave 10 of an int32 accumulator for the 8-bit sample, the
// sign and the overshoot of the kernel's negative lobes.
constexpr int weight_bits = 22;
constexpr std::uint64_t max_output_pixels = std::uint64_t{1} << 28;  // bounds what a bad argument can allocate
constexpr int max_clip_image_size = 4096;

// Weight v as fixed point, rounded half away from zero by adding +-0.5 and
// truncating (std::lround, rounding exactly, differs for a few weights).
inline std::int32_t to_fixed(double v) {
    const double scaled = v * (1 << weight_bits);
    return static_cast<std::int32_t>(v < 0 ? scaled - 0.5 : scaled + 0.5);
}

// A weighted sum back to an 8-bit sample: the sum started at one half (see
// fixed_half), so flooring rounds it; then it is clipped to 0..255.
constexpr std::int32_t fixed_half = std::int32_t{1} << (weight_bits - 1);
inline std::uint8_t from_fixed(std::int32_t sum) {
    return static_cast<std::uint8_t>(std::clamp(sum >> weight_bits, 0, 255));
}

// The inputs and weights of some outputs of one axis.
struct AxisFilter {
    struct Window {
        int first = 0, size = 0;  // input samples first .. first + size - 1
    };
    int stride = 0;                      // weights stored per output: the widest window
    std::vector<Window> windows;         // per output
    std::vector<std::int32_t> weights;   // per output, `stride` of them, the first window.size used

    const std::int32_t* weights_of(int i) const { return &weights[static_cast<std::size_t>(i) * stride]; }
};

// The filter for outputs [first_out, first_out + count) of an axis resized from
// in_size to out_size samples (an output's window depends only on its index).
inline AxisFilter bicubic_axis(int in_size, int out_size, int first_out, int count) {
    const double scale = static_cast<double>(static_cast<float>(in_size)) / out_size;  // Pillow's box is float
    const double stretch = std::max(scale, 1.0);
    const double inv_stretch = 1.0 / stretch;  // multiplied by, not divided by, as Pillow does
    const double radius = 2.0 * stretch;       // the stretched kernel's support
    AxisFilter f;
    f.stride = 2 * static_cast<int>(std::ceil(radius)) + 1;
    f.windows.resize(count);
    f.weights.assign(static_cast<std::size_t>(count) * f.stride, 0);
    std::vector<double> kernel(f.stride);
    for (int i = 0; i < count; ++i) {
        const double centre = (first_out + i + 0.5) * scale;
        // Inputs j with centre - radius <= j + 0.5 < centre + radius, as floor(x + 0.5)
        // bounds (a negative lower bound truncates towards 0, clamped to 0 anyway).
        const int lo = std::max(0, static_cast<int>(centre - radius + 0.5));
        const int hi = std::min(in_size, static_cast<int>(centre + radius + 0.5));
        double total = 0.0;
        for (int j = lo; j < hi; ++j) {
            kernel[j - lo] = cubic_kernel((j - centre + 0.5) * inv_stretch);
            total += kernel[j - lo];
        }
        std::int32_t* w = &f.weights[static_cast<std::size_t>(i) * f.stride];
        for (int j = lo; j < hi; ++j) w[j - lo] = to_fixed(total != 0.0 ? kernel[j - lo] / total : kernel[j - lo]);
        f.windows[i] = {lo, hi - lo};
    }
    return f;
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
    AxisFilter vf;
    int row0 = y0, rows = h;
    if (need_v) {
        vf = bicubic_axis(in.height, out_h, y0, h);
        row0 = vf.windows.front().first;
        rows = vf.windows.back().first + vf.windows.back().size - row0;
    }

    // Horizontal pass into an 8-bit intermediate of the needed rows (or a view of the input).
    std::vector<std::uint8_t> mid;
    const std::uint8_t* src = nullptr;  // row r of the intermediate = input row row0 + r
    std::size_t src_stride = 0;
    int src_x0 = 0;  // column of the intermediate that is output column x0
    if (need_h) {
        const AxisFilter hf = bicubic_axis(in.width, out_w, x0, w);
        mid.resize(static_cast<std::size_t>(rows) * w * 3);
        for (int r = 0; r < rows; ++r) {
            const std::uint8_t* row = &in.rgb[static_cast<std::size_t>(row0 + r) * in.width * 3];
            std::uint8_t* dst = &mid[static_cast<std::size_t>(r) * w * 3];
            for (int i = 0; i < w; ++i) {
                const std::int32_t* k = hf.weights_of(i);
                const std::uint8_t* p = row + static_cast<std::size_t>(hf.windows[i].first) * 3;
                std::int32_t s0 = fixed_half, s1 = fixed_half, s2 = fixed_half;
                for (int t = 0; t < hf.windows[i].size; ++t) {
                    s0 += p[3 * t + 0] * k[t];
                    s1 += p[3 * t + 1] * k[t];
                    s2 += p[3 * t + 2] * k[t];
                }
                dst[3 * i + 0] = from_fixed(s0);
                dst[3 * i + 1] = from_fixed(s1);
                dst[3 * i + 2] = from_fixed(s2);
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
        std::fill(acc.begin(), acc.end(), fixed_half);
        const std::int32_t* k = vf.weights_of(j);
        for (int t = 0; t < vf.windows[j].size; ++t) {
            const std::uint8_t* p = src + static_cast<std::size_t>(vf.windows[j].first + t - row0) * src_stride +
                                    static_cast<std::size_t>(src_x0) * 3;
            const std::int32_t kt = k[t];
            for (std::size_t i = 0; i < row_bytes; ++i) acc[i] += p[i] * kt;
        }
        std::uint8_t* dst = &out.rgb[j * row_bytes];
        for (std::size_t i = 0; i < row_bytes; ++i) dst[i] = from_fixed(acc[i]);
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

// CHW floats [3, S, S] of an S x S image: float32 arithmetic in torch's order,
// x / 255, then (x - mean) / std.
inline std::vector<float> normalize_rgb(const Image& im, const ClipPreprocess& cfg) {
    const std::size_t plane = static_cast<std::size_t>(im.width) * im.height;
    std::vector<float> out(3 * plane);
    for (int c = 0; c < 3; ++c) {
        std::array<float, 256> lut;
        for (int v = 0; v < 256; ++v) lut[v] = (static_cast<float>(v) / 255.0f - cfg.mean[c]) / cfg.std[c];
        float* dst = &out[c * plane];
        for (std::size_t i = 0; i < plane; ++i) dst[i] = lut[im.rgb[i * 3 + c]];
    }
    return out;
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
    if (!cfg.center_crop) {
        const Image sq = im.width == S && im.height == S ? im : resize_bicubic(im, S, S);
        return normalize_rgb(sq, cfg);
    }
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
    return normalize_rgb(crop, cfg);
}

}  // namespace flamingo

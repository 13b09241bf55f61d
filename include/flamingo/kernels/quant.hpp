#pragma once
// Block-quantised weights (q8, q4) and the products that use them.
//
// Formats (README, "Quantised weights"): a weight matrix [rows, cols] is cut
// along cols (the input dimension) into blocks of 32; cols is padded with
// zeros to a multiple of 32, so any cols works. Per block and row:
//   q8: 32 int8 values q in [-127, 127], scale d (f16):  w = d * q,
//       d = max|w| / 127 rounded to f16 (symmetric; -128 is never used).
//   q4: 32 4-bit values q in [0, 15] in 16 bytes, scale d and offset m (f16):
//       w = d * q + m, q = round((w - m) / d) clamped to [0, 15]; (d, m) the
//       candidate of least squared error over the block: min/max (m = min(w),
//       d = (max(w) - min(w)) / 15) or a least-squares refit (detail::q4_block),
//       each rounded to f16 before its levels and error are computed.
//       Byte j (0..15) of a block holds element j in its low nibble and
//       element j + 16 in its high nibble.
// Scales and offsets are f16, as ggml's: 8.5 bits per weight for q8 and 5 for
// q4 (with f32 they were 9 and 6, and q4 could not read less than 6/16 of
// bf16's bytes). The levels are chosen for the rounded values, so the contract
// below holds as before; where rounding shrank d, the block's extreme weight
// is clamped by up to 2^-11 of itself (q8). Blocks with max|w| below
// 2^-14 * 127 get subnormal scales (absolute error at most ~4e-6 per weight);
// blocks beyond f16's range (with room: |w| >= 32768 for q4, 8e6 for q8)
// are refused by quantize().
// The offset makes q4 use all 16 levels on a block's actual range: relative
// RMS error with min/max alone 0.078 against 0.086 for the best symmetric
// 4-bit variant on Gaussian blocks, 0.094 against 0.116 on heavy-tailed
// (Student t, 4 dof); the least-squares search brings q4 to 0.070 and 0.085.
//
// Accuracy contracts:
//   quantize_*: each dequantised weight is within d/2 of the original
//     (q8: max|w|/254 of its block, up to the f16 rounding of d), plus f32
//     rounding; q4: the same for the values within [m, m + 15 d], the others
//     are clamped to its nearer end, and each block's squared error is at most
//     that of min/max rounded to f16 (whose values are within about (max - min)/30).
//   linear_q with AVX512-VNNI, AVX-VNNI or AVX2 (any number of activation rows M), and
//   in plain C++ for M <= 3: each activation row is
//     quantised the same way as q8 weights (per block of 32, scale max|x|/127,
//     round to nearest) and each block's dot product is computed exactly in
//     int32 (in partial sums of a few elements); these are then combined in f32:
//     y = sum_b d_w*d_x*dot_b (+ m*(d_x*sum_b(x_q)) for q4). Against that
//     expression evaluated exactly, the error is below 1e-5 times the same
//     sum taken over |each element's term| (tests check this). Against the float product
//     with the original weights, add the quantisation errors of both sides.
//   linear_q in plain C++ (no AVX2: the SSE2 set), M > 3:
//     panels of weights are dequantised
//     to f32 and multiplied by the f32 kernel (activations not quantised), so
//     only the weight quantisation error adds to the f32 contract of gemm.hpp.
// What runs where: the integer dot products use AVX512-VNNI (vpdpbusd, 512-bit)
// when the compiler targets it (the avx512 kernel set), else AVX2 (256-bit,
// gemv_q_block_avx2) with its int32 sums from AVX-VNNI's VEX vpdpbusd when
// targeted without AVX-512 (the avxvnni set: Alder Lake and later Intel client
// CPUs, Zen 5) or from vpmaddubsw + vpmaddwd (the avx2 set, and AVX-512 builds
// without VNNI), else plain C++ (the sse2 set); all give the same integers
// (tests compare them exactly). The avxvnni kernels are the avx2 ones, same
// layouts and order of float operations, with one vpdpbusd (two for a q4 pair
// of blocks) in place of the vpmaddubsw/vpmaddwd pair, so their outputs equal
// the avx2 set's bit for bit. Activation
// rows are taken kQFewRows at a time (8 with VNNI or AVX2, 3 otherwise: one-token
// decoding, beam search and batched decoding are one such group); with more
// rows (prompts, images) the weights are taken a panel at a time, kept in
// cache while every group of rows passes over it, so they are read from
// memory once whatever M is. Measured (bench_quant, one thread, M = 9..257
// at OpenFlamingo-3B shapes; bench/README.md): with VNNI this is 1.1-19x the
// speed of dequantising in 57 of 60 cases (the other three, q8 on ViT-L's MLP
// shapes at M = 128 and 257: 0.83-0.99x), so VNNI builds never dequantise;
// with AVX2 (M = 9..257, three of the shapes, loaded machine) it is 1.1-12x
// in 29 of 30 cases, and the 30th (q4, 4096 x 1024, M = 257: 0.72-0.80x)
// went to 1.45x once q4 took two blocks per load, so AVX2 builds never
// dequantise either; the
// plain C++ loop is 0.16-0.75x it (q8 from M = 16, q4 from M = 9; the
// AVX2 set before its integer kernel, two shapes), so the SSE2 set
// dequantises above kQFewRows.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512F__)
#include <immintrin.h>
#define FLAMINGO_QUANT_VNNI 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define FLAMINGO_QUANT_AVX2 1
#if defined(__AVXVNNI__) && !defined(__AVX512F__)
#define FLAMINGO_QUANT_AVXVNNI 1  // the AVX2 kernels with vpdpbusd (VEX) for the int32 sums
#endif
#endif

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "gemm.hpp"

namespace flamingo::kernels {

inline constexpr std::size_t kQBlock = 32;

enum class QFormat { Q8, Q4 };

inline const char* qformat_name(QFormat f) { return f == QFormat::Q8 ? "q8" : "q4"; }

// A quantised [rows, cols] matrix (rows = outputs, cols = inputs), row-major,
// each row padded to whole blocks. Does not own its storage.
struct QMatrix {
    QFormat format = QFormat::Q8;
    std::size_t rows = 0, cols = 0;
    const void* data = nullptr;       // q8: int8 [rows, padded_cols()]; q4: uint8 [rows, padded_cols() / 2]
    const f16* scales = nullptr;      // [rows, blocks()]
    const f16* offsets = nullptr;     // q4: [rows, blocks()]; q8: unused

    bool empty() const { return data == nullptr; }
    std::size_t blocks() const { return (cols + kQBlock - 1) / kQBlock; }
    std::size_t padded_cols() const { return blocks() * kQBlock; }
    std::size_t row_bytes() const { return format == QFormat::Q8 ? padded_cols() : padded_cols() / 2; }
    const std::uint8_t* row(std::size_t r) const { return static_cast<const std::uint8_t*>(data) + r * row_bytes(); }
};

// Owns a quantised matrix's storage.
struct QBuffer {
    std::vector<std::uint8_t> data;
    std::vector<f16> scales, offsets;

    QMatrix view(QFormat f, std::size_t rows, std::size_t cols) const {
        return {f, rows, cols, data.data(), scales.data(), f == QFormat::Q4 ? offsets.data() : nullptr};
    }
};

FLAMINGO_KERNELS_BEGIN

// ---- quantisation of one row ------------------------------------------------

namespace detail {
inline float round_f16(float x) { return float(f16(x)); }
}  // namespace detail

// x[cols] -> q[padded cols] int8, scales[blocks]: f16 for weights, float for
// activations (quantised per call, whose scales are not stored).
template <class Scale>
inline void quantize_row_q8(const float* x, std::size_t cols, std::int8_t* q, Scale* scales) {
    const std::size_t nb = (cols + kQBlock - 1) / kQBlock;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t k0 = b * kQBlock, n = std::min(kQBlock, cols - k0);
        float amax = 0.0f;
        for (std::size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[k0 + i]));
        float d = amax / 127.0f;
        if constexpr (std::is_same_v<Scale, f16>) d = detail::round_f16(d);
        scales[b] = Scale(d);
        for (std::size_t i = 0; i < kQBlock; ++i) {
            float v = (i < n && d > 0.0f) ? std::nearbyint(x[k0 + i] / d) : 0.0f;
            q[k0 + i] = std::int8_t(std::clamp(v, -127.0f, 127.0f));
        }
    }
}

namespace detail {

// ---- q4's choice of scale and offset -----------------------------------------
// The search is written so that tools/flamingo_ref.py (quantize_dequantize)
// can repeat it operation for operation and get the same bytes: every sum is
// taken in order over the block, in double, of terms whose products are exact
// (so fusing a multiply with an add, as some builds do, cannot change them).

// The levels of a block x[0, n) for scale d and offset m: round((x - m) / d)
// clamped to [0, 15] (0 when d is 0).
inline void q4_levels(const float* x, std::size_t n, float d, float m, std::uint8_t* v) {
    for (std::size_t i = 0; i < n; ++i)
        v[i] = d > 0.0f ? std::uint8_t(std::clamp(std::nearbyint((x[i] - m) / d), 0.0f, 15.0f)) : 0;
}

// The block's squared error, each element's error rounded to f32 first (so
// that its square is exact in double).
inline double q4_error(const float* x, std::size_t n, float d, float m, const std::uint8_t* v) {
    double sum = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        const double e = double(float(double(x[i]) - (double(d) * double(v[i]) + double(m))));
        sum += e * e;
    }
    return sum;
}

// The least-squares (d, m) for the levels v: false when the levels are all
// equal or the fitted scale is not positive.
inline bool q4_fit(const float* x, std::size_t n, const std::uint8_t* v, float& d, float& m) {
    std::int64_t sq = 0, sqq = 0;
    for (std::size_t i = 0; i < n; ++i) sq += v[i], sqq += std::int64_t(v[i]) * v[i];
    const std::int64_t nn = std::int64_t(n), den = nn * sqq - sq * sq;
    if (den <= 0) return false;
    double num = 0.0, sx = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        num += double(nn * v[i] - sq) * double(x[i]);  // |nn * v - sq| < 2^9: the product is exact
        sx += double(x[i]);
    }
    const float fd = float(num / double(den));
    if (!(fd > 0.0f)) return false;
    d = fd;
    m = float((sx - double(fd) * double(sq)) / double(nn));
    return true;
}

// The candidates of q4_block after min/max: the levels of scale
// (max - min) / (15 + t) from the minimum, for each t, refitted by least
// squares; then kQ4Refits refits of the best levels so far (README,
// "Quantised weights": a finer grid of 21 values gained 0.0004 in relative
// RMS error over the bundled model's matrices, 0.0709 -> 0.0705).
inline constexpr float kQ4Grid[] = {-1.0f, -0.5f, 0.5f, 1.0f, 2.0f};
inline constexpr int kQ4Refits = 2;

// One q4 block x[0, n): levels v[0, n), scale d and offset m. The candidate
// with the least squared error wins; the first is min/max (d = (max - min) /
// 15, m = min), so no block does worse than that rule.
inline void q4_block(const float* x, std::size_t n, std::uint8_t* v, f16& d_out, f16& m_out) {
    float lo = x[0], hi = x[0];
    for (std::size_t i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
    float d = round_f16((hi - lo) / 15.0f), m = round_f16(lo);
    q4_levels(x, n, d, m, v);
    double err = q4_error(x, n, d, m, v);
    std::uint8_t t[kQBlock], w[kQBlock];
    auto consider = [&](const std::uint8_t* levels) {
        float d2 = 0.0f, m2 = 0.0f;
        if (!q4_fit(x, n, levels, d2, m2)) return;
        d2 = round_f16(d2), m2 = round_f16(m2);
        if (!(d2 > 0.0f)) return;
        q4_levels(x, n, d2, m2, w);
        const double e2 = q4_error(x, n, d2, m2, w);
        if (e2 < err) err = e2, d = d2, m = m2, std::copy(w, w + n, v);
    };
    if (hi > lo) {  // (a constant block has nothing better than min/max)
        for (const float g : kQ4Grid) {
            q4_levels(x, n, (hi - lo) / (15.0f + g), lo, t);
            consider(t);
        }
        for (int k = 0; k < kQ4Refits; ++k) consider(v);
    }
    d_out = f16(d), m_out = f16(m);
}

}  // namespace detail

// x[cols] -> q[padded cols / 2] packed nibbles, scales[blocks], offsets[blocks].
// Each block's (d, m) is the one of a few candidates with the least squared
// error over the block (detail::q4_block); the first candidate is min/max
// (d = (max - min) / 15, m = min), so no block does worse than that rule.
inline void quantize_row_q4(const float* x, std::size_t cols, std::uint8_t* q, f16* scales, f16* offsets) {
    const std::size_t nb = (cols + kQBlock - 1) / kQBlock;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t k0 = b * kQBlock, n = std::min(kQBlock, cols - k0);
        std::uint8_t v[kQBlock] = {};
        detail::q4_block(x + k0, n, v, scales[b], offsets[b]);
        std::uint8_t* out = q + b * (kQBlock / 2);
        for (std::size_t j = 0; j < kQBlock / 2; ++j) out[j] = std::uint8_t(v[j] | (v[j + kQBlock / 2] << 4));
    }
}

// Row r of m as floats (its cols values; the padding is not written).
inline void dequantize_row(const QMatrix& m, std::size_t r, float* out) {
    const std::uint8_t* p = m.row(r);
    const f16* d = m.scales + r * m.blocks();
    if (m.format == QFormat::Q8) {
        const std::int8_t* q = reinterpret_cast<const std::int8_t*>(p);
        for (std::size_t k = 0; k < m.cols; ++k) out[k] = float(d[k / kQBlock]) * float(q[k]);
    } else {
        const f16* o = m.offsets + r * m.blocks();
        for (std::size_t k = 0; k < m.cols; ++k) {
            const std::size_t b = k / kQBlock, i = k % kQBlock;
            const std::uint8_t byte = p[b * (kQBlock / 2) + i % (kQBlock / 2)];
            const int v = i < kQBlock / 2 ? (byte & 0x0f) : (byte >> 4);
            out[k] = float(d[b]) * float(v) + float(o[b]);
        }
    }
}

// Quantises a row-major float matrix [rows, cols] (leading dimension ld).
inline QBuffer quantize(QFormat f, const float* w, std::size_t rows, std::size_t cols, std::size_t ld) {
    QMatrix shape{f, rows, cols};
    QBuffer b;
    b.data.resize(rows * shape.row_bytes());
    b.scales.resize(rows * shape.blocks());
    if (f == QFormat::Q4) b.offsets.resize(rows * shape.blocks());
    // Rows on the calling thread's executor, if any (q4's search costs some
    // 6x min/max); each row's bytes do not depend on the split.
    // f16 scales and offsets bound the weights (with room for q4's refits,
    // whose offset can pass the block's minimum): a row beyond is refused, as
    // is a NaN, before its levels are computed from an infinite scale.
    const float limit = f == QFormat::Q8 ? 8.0e6f : 32768.0f;
    std::atomic<std::size_t> bad{rows};
    parallel_for(rows, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            bool ok = true;
            for (std::size_t k = 0; k < cols; ++k) ok &= std::fabs(w[r * ld + k]) < limit;
            if (!ok) {
                for (std::size_t cur = bad.load(); r < cur && !bad.compare_exchange_weak(cur, r);) {}
                continue;
            }
            if (f == QFormat::Q8)
                quantize_row_q8(w + r * ld, cols,
                                reinterpret_cast<std::int8_t*>(b.data.data() + r * shape.row_bytes()),
                                b.scales.data() + r * shape.blocks());
            else
                quantize_row_q4(w + r * ld, cols, b.data.data() + r * shape.row_bytes(),
                                b.scales.data() + r * shape.blocks(), b.offsets.data() + r * shape.blocks());
        }
    });
    if (const std::size_t r = bad.load(); r < rows) {
        std::size_t k = 0;
        while (std::fabs(w[r * ld + k]) < limit) ++k;
        fail(ErrorKind::Input, "quantize: the ", qformat_name(f), " weight at [", r, ", ", k, "] is ", w[r * ld + k],
             "; ", qformat_name(f), "'s f16 scales", f == QFormat::Q4 ? " and offsets" : "",
             " hold weights of magnitude below ", limit);
    }
    return b;
}

namespace detail {

// Activation rows per pass of the integer kernels over a weight row.
#if defined(FLAMINGO_QUANT_VNNI) || defined(FLAMINGO_QUANT_AVX2)
inline constexpr std::size_t kQFewRows = 8;
#else
inline constexpr std::size_t kQFewRows = 3;  // as before the VNNI few-row kernel; 4-8 rows in plain C++ not measured
#endif

// More rows than kQFewRows use the integer kernels too (with VNNI or AVX2), or dequantised panels (see the top).
#if defined(FLAMINGO_QUANT_VNNI) || defined(FLAMINGO_QUANT_AVX2)
inline constexpr bool kQIntegerManyRows = true;
#else
inline constexpr bool kQIntegerManyRows = false;
#endif

// Bytes of quantised weights (with their scales) per panel of the many-row
// product: a panel stays in L2 (1-2 MB per core on current x86) while every
// group of activation rows passes over it.
inline constexpr std::size_t kQPanelBytes = std::size_t(256) << 10;

// One activation row quantised per block (the q8 weight rule), with each
// block's sum of quantised values, plus the layouts the SIMD kernels read.
struct QActivations {
    std::vector<std::int8_t> q;    // [padded cols]
    std::vector<float> d;          // [blocks]
    std::vector<std::int32_t> sum; // [blocks]
#ifdef FLAMINGO_QUANT_VNNI
    // Blocks are taken 16 at a time (one vector of their scales) and 4 at a
    // time per pair of weight vectors: the first holds elements 0-15 of the 4
    // blocks, the second elements 16-31 (q4: the low and the high nibbles of
    // 64 bytes; q8: two 64-byte loads regrouped by 128-bit lanes). `bytes`
    // holds the activations in that order, [b0 0-15, b1 0-15, b2 0-15, b3 0-15,
    // b0 16-31, ..., b3 16-31] per 4 blocks, so each 32-bit lane of vpdpbusd's
    // result sums 8 products of one block. All arrays are zero-padded to whole
    // groups of 16 blocks: a padded activation contributes nothing whatever
    // the weight byte it meets.
    //   q8: vpdpbusd multiplies w + 128 (w ^ 0x80, unsigned) by x; starting
    //       from init = -128 * (the sum of each lane's 8 activations) gives
    //       exactly the signed dot product.
    //   q4: corr = d * sum per block, for the offset term.
    // q8 with one activation row reads 2 blocks per weight vector instead (no
    // regrouping; measured faster there): `nat` in natural order and `init2`
    // per lane of 4 activations.
    std::vector<std::int8_t> bytes, nat;   // [groups * 16 * 32]
    std::vector<std::int32_t> init, init2; // q8: [groups * 4 * 16], [groups * 8 * 16]
    std::vector<float> dx, corr;      // [groups * 16]: scales; q4: scale * sum
#elif defined(FLAMINGO_QUANT_AVX2)
    // q4 takes two blocks per 32-byte load (their low nibbles, then their high
    // nibbles): `pairs` holds the activations in that order, [b0 0-15, b1 0-15,
    // b0 16-31, b1 16-31] per 2 blocks, and `dx8` their scales [d0 x4, d1 x4],
    // so lanes 0-3 of a step's int32 vector belong to b0 and 4-7 to b1.
    std::vector<float> corr;       // [blocks]: q4's offset term d * sum per block
    std::vector<std::int8_t> pairs; // q4: [blocks / 2 * 64]
    std::vector<float> dx8;        // q4: [blocks / 2 * 8]
#endif
    void prepare(const float* x, std::size_t cols, QFormat f) {
        const std::size_t nb = (cols + kQBlock - 1) / kQBlock;
        q.resize(nb * kQBlock);
        d.resize(nb);
        sum.resize(nb);
        quantize_row_q8(x, cols, q.data(), d.data());
        for (std::size_t b = 0; b < nb; ++b) {
            std::int32_t s = 0;
            for (std::size_t i = 0; i < kQBlock; ++i) s += q[b * kQBlock + i];
            sum[b] = s;
        }
#ifdef FLAMINGO_QUANT_VNNI
        const std::size_t ng = (nb + 15) / 16;
        bytes.assign(ng * 16 * kQBlock, 0);
        dx.assign(ng * 16, 0.0f);
        corr.assign(ng * 16, 0.0f);
        std::copy(d.begin(), d.end(), dx.begin());
        for (std::size_t b = 0; b < nb; ++b) {
            std::int8_t* g = bytes.data() + (b / 4) * 128 + (b % 4) * 16;
            std::memcpy(g, q.data() + b * kQBlock, 16);
            std::memcpy(g + 64, q.data() + b * kQBlock + 16, 16);
            corr[b] = d[b] * float(sum[b]);
        }
        if (f == QFormat::Q8) {
            nat.assign(ng * 16 * kQBlock, 0);
            std::copy(q.begin(), q.end(), nat.begin());
            init2.assign(ng * 8 * 16, 0);
            for (std::size_t l = 0; l < init2.size(); ++l)
                init2[l] = -128 * (nat[4 * l] + nat[4 * l + 1] + nat[4 * l + 2] + nat[4 * l + 3]);
            init.assign(ng * 4 * 16, 0);
            for (std::size_t l = 0; l < init.size(); ++l) {
                const std::int8_t* lo = bytes.data() + (l / 16) * 128 + (l % 16) * 4;
                init[l] = -128 * (lo[0] + lo[1] + lo[2] + lo[3] + lo[64] + lo[65] + lo[66] + lo[67]);
            }
        }
#elif defined(FLAMINGO_QUANT_AVX2)
        corr.resize(nb);
        for (std::size_t b = 0; b < nb; ++b) corr[b] = d[b] * float(sum[b]);
        if (f == QFormat::Q4) {
            pairs.resize(nb / 2 * 64);
            dx8.resize(nb / 2 * 8);
            for (std::size_t b = 0; b + 1 < nb; b += 2)
                for (std::size_t h = 0; h < 2; ++h) {
                    std::memcpy(pairs.data() + b * 32 + h * 16, q.data() + (b + h) * kQBlock, 16);
                    std::memcpy(pairs.data() + b * 32 + 32 + h * 16, q.data() + (b + h) * kQBlock + 16, 16);
                    std::fill_n(dx8.data() + b * 4 + h * 4, 4, d[b + h]);
                }
        }
#endif
    }
};

// Thread-local activation rows for one call.
inline std::vector<QActivations>& qactivations(std::size_t M) {
    thread_local std::vector<QActivations> a;
    if (a.size() < M) a.resize(M);
    return a;
}

// y[i * ldy + r - n0] = W[r] · x_i for weight rows r in [n0, n1) and the M
// quantised activation rows a[0..M) (no bias), in plain C++: the path without
// VNNI or AVX2, and compiled always so tests can compare them.
inline void gemv_q_rows_portable(const QMatrix& m, const QActivations* a, std::size_t M, std::size_t n0,
                                 std::size_t n1, float* y, std::size_t ldy) {
    const std::size_t nb = m.blocks();
    for (std::size_t r = n0; r < n1; ++r) {
        const std::uint8_t* p = m.row(r);
        const f16* ds = m.scales + r * nb;
        for (std::size_t i = 0; i < M; ++i) {
            float acc = 0.0f;
            for (std::size_t b = 0; b < nb; ++b) {
                const std::int8_t* xa = a[i].q.data() + b * kQBlock;
                std::int32_t dot = 0;
                if (m.format == QFormat::Q8) {
                    const std::int8_t* w = reinterpret_cast<const std::int8_t*>(p) + b * kQBlock;
                    for (std::size_t j = 0; j < kQBlock; ++j) dot += std::int32_t(w[j]) * xa[j];
                    acc += float(ds[b]) * a[i].d[b] * float(dot);
                } else {
                    const std::uint8_t* w = p + b * (kQBlock / 2);
                    for (std::size_t j = 0; j < kQBlock / 2; ++j)
                        dot += std::int32_t(w[j] & 0x0f) * xa[j] + std::int32_t(w[j] >> 4) * xa[j + kQBlock / 2];
                    acc += float(ds[b]) * a[i].d[b] * float(dot) +
                           float(m.offsets[r * nb + b]) * a[i].d[b] * float(a[i].sum[b]);
                }
            }
            y[i * ldy + r - n0] = acc;
        }
    }
}

#ifdef FLAMINGO_QUANT_VNNI
// The first n of 16 f16 values at p as floats (the rest 0), n given as a mask.
inline __m512 load_f16x16(__mmask16 km, const f16* p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(km, p));
}

// out[i][j] = W[r0 + j] · x_i for MM activation rows and R weight rows, AVX512-VNNI.
// Per group of 16 blocks, each row's 16 scales are one vector. Per 4 blocks
// (QActivations describes the order) two vpdpbusd per activation row give 16
// lanes of exact integer dots, 4 lanes per block, converted once and scaled
// by d_w * d_x permuted into the lanes. The R rows are read as R streams while
// the same bytes of the next R rows are prefetched.
// Pairs (q8 only): 2 blocks per weight vector, 8 lanes per block, natural order.
template <QFormat F, std::size_t MM, std::size_t R, bool Pairs = false>
inline void gemv_q_block_vnni(const QMatrix& m, const QActivations* a, std::size_t r0, float (&out)[MM][R]) {
    static_assert(!Pairs || F == QFormat::Q8);
    constexpr std::size_t BB = F == QFormat::Q8 ? 32 : 16;  // weight bytes per block
    constexpr std::size_t BV = Pairs ? 2 : 4;              // blocks per step
    const std::size_t nb = m.blocks(), rb = m.row_bytes();
    const std::uint8_t* w0 = m.row(r0);
    const f16* ds0 = m.scales + r0 * nb;
    const f16* os0 = F == QFormat::Q4 ? m.offsets + r0 * nb : nullptr;
    __m512 acc[MM][R];
    for (std::size_t i = 0; i < MM; ++i)
        for (std::size_t r = 0; r < R; ++r) acc[i][r] = _mm512_setzero_ps();
    const __m512i lanes = Pairs ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
                                : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);  // lane -> block
    const __m512i flip = _mm512_set1_epi8(char(0x80)), lomask = _mm512_set1_epi8(0x0f);
    // Blocks [b0, b0 + nbt) of the R rows; Full: nbt = 16 (the loop is unrolled).
    auto group = [&](std::size_t b0, std::size_t nbt, auto full) {
        constexpr bool kFull = decltype(full)::value;
        const __mmask16 km = kFull ? __mmask16(0xffff) : __mmask16((1u << nbt) - 1);
        __m512 dw[R];
        for (std::size_t r = 0; r < R; ++r) {
            dw[r] = load_f16x16(km, ds0 + r * nb + b0);
            __builtin_prefetch(ds0 + (R + r) * nb + b0, 0, 3);
        }
        if constexpr (F == QFormat::Q4)
            for (std::size_t r = 0; r < R; ++r) {  // offset term: m * (d_x * sum x_q) per block
                const __m512 mo = load_f16x16(km, os0 + r * nb + b0);
                __builtin_prefetch(os0 + (R + r) * nb + b0, 0, 3);
                for (std::size_t i = 0; i < MM; ++i)
                    acc[i][r] = _mm512_fmadd_ps(mo, _mm512_loadu_ps(a[i].corr.data() + b0), acc[i][r]);
            }
        const std::size_t nv = kFull ? 16 / BV : (nbt + BV - 1) / BV;
#pragma GCC unroll 8
        for (std::size_t j = 0; j < nv; ++j) {
            const __m512i idx = _mm512_add_epi32(lanes, _mm512_set1_epi32(int(BV * j)));
            const std::size_t left = kFull ? BV : std::min<std::size_t>(BV, nbt - BV * j);  // blocks here
            __m512i wa[R], wb[R];  // elements 0-15 and 16-31 of the 4 blocks (Pairs: wa, 2 blocks)
            __m512 s[R];
            for (std::size_t r = 0; r < R; ++r) {
                const std::uint8_t* p = w0 + r * rb + (b0 + BV * j) * BB;
                if constexpr (Pairs) {
                    __builtin_prefetch(p + R * rb, 0, 3);
                    const __m512i v = left == 2 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(0xffffffffull, p);
                    wa[r] = _mm512_xor_si512(v, flip);
                } else if constexpr (F == QFormat::Q8) {
                    __builtin_prefetch(p + R * rb, 0, 3);
                    __builtin_prefetch(p + R * rb + 64, 0, 3);
                    const __m512i v0 = left >= 2 ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(0xffffffffull, p);
                    const __m512i v1 = left == 4   ? _mm512_loadu_si512(p + 64)
                                       : left == 3 ? _mm512_maskz_loadu_epi8(0xffffffffull, p + 64)
                                                   : _mm512_setzero_si512();
                    wa[r] = _mm512_xor_si512(_mm512_shuffle_i64x2(v0, v1, 0x88), flip);  // w + 128, unsigned
                    wb[r] = _mm512_xor_si512(_mm512_shuffle_i64x2(v0, v1, 0xdd), flip);
                } else {
                    __builtin_prefetch(p + R * rb, 0, 3);
                    const __m512i v = left == 4 ? _mm512_loadu_si512(p)
                                                : _mm512_maskz_loadu_epi8((1ull << (16 * left)) - 1, p);
                    wa[r] = _mm512_and_si512(v, lomask);
                    wb[r] = _mm512_and_si512(_mm512_srli_epi16(v, 4), lomask);
                }
                s[r] = _mm512_permutexvar_ps(idx, dw[r]);
            }
            for (std::size_t i = 0; i < MM; ++i) {
                if constexpr (Pairs) {
                    const __m512 dxv = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(a[i].dx.data() + b0));
                    const __m512i xa = _mm512_loadu_si512(a[i].nat.data() + (b0 + 2 * j) * kQBlock);
                    for (std::size_t r = 0; r < R; ++r) {
                        const __m512i init = _mm512_loadu_si512(a[i].init2.data() + (b0 + 2 * j) * 8);
                        const __m512i dot = _mm512_dpbusd_epi32(init, wa[r], xa);
                        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s[r], dxv), acc[i][r]);
                    }
                } else {
                    const std::int8_t* xb = a[i].bytes.data() + (b0 + 4 * j) * kQBlock;
                    const __m512 dxv = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(a[i].dx.data() + b0));
                    const __m512i xa = _mm512_loadu_si512(xb), xc = _mm512_loadu_si512(xb + 64);
                    for (std::size_t r = 0; r < R; ++r) {
                        __m512i dot = F == QFormat::Q8 ? _mm512_loadu_si512(a[i].init.data() + (b0 + 4 * j) * 4)
                                                       : _mm512_setzero_si512();
                        dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dot, wa[r], xa), wb[r], xc);
                        acc[i][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(s[r], dxv), acc[i][r]);
                    }
                }
            }
        }
    };
    std::size_t b0 = 0;
    for (; b0 + 16 <= nb; b0 += 16) group(b0, 16, std::true_type{});
    if (b0 < nb) group(b0, nb - b0, std::false_type{});
    for (std::size_t i = 0; i < MM; ++i)
        for (std::size_t r = 0; r < R; ++r) out[i][r] = _mm512_reduce_add_ps(acc[i][r]);
}

template <QFormat F, std::size_t MM>
inline void gemv_q_rows_vnni(const QMatrix& m, const QActivations* a, std::size_t n0, std::size_t n1, float* y,
                             std::size_t ldy) {
    // Weight rows per pass: enough independent chains, within the 32 vector registers.
    constexpr std::size_t R = MM <= 2 ? 4 : MM <= 4 ? 2 : 1;
    constexpr bool kPairs = F == QFormat::Q8 && MM == 1;
    std::size_t r = n0;
    for (; r + R <= n1; r += R) {
        float out[MM][R];
        gemv_q_block_vnni<F, MM, R, kPairs>(m, a, r, out);
        for (std::size_t i = 0; i < MM; ++i)
            for (std::size_t j = 0; j < R; ++j) y[i * ldy + r + j - n0] = out[i][j];
    }
    for (; r < n1; ++r) {
        float out[MM][1];
        gemv_q_block_vnni<F, MM, 1, kPairs>(m, a, r, out);
        for (std::size_t i = 0; i < MM; ++i) y[i * ldy + r - n0] = out[i][0];
    }
}
#endif

#ifdef FLAMINGO_QUANT_AVX2
// The 32 weights of one block as bytes in element order: q8 as stored (int8);
// q4's low nibbles (elements 0-15) then its high nibbles (16-31), as 0..15.
template <QFormat F>
inline __m256i load_block_avx2(const std::uint8_t* p) {
    if constexpr (F == QFormat::Q8) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), lo = _mm_set1_epi8(0x0f);
        return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), lo), _mm_and_si128(v, lo));
    }
}

inline float hsum_avx2(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// out[i][j] = W[r0 + j] · x_i for MM activation rows and R weight rows, AVX2.
// Per block, vpmaddubsw multiplies unsigned by signed bytes into pairs of
// int16 sums (saturating) and vpmaddwd by ones adds the pairs into 8 int32
// lanes of 4 products each, converted and scaled by d_w * d_x. With AVX-VNNI
// one vpdpbusd does both on the same operands, its int32 sums exact without an
// int16 stage; the same unsigned/signed operands keep it free of the +128
// correction the 512-bit kernel needs (measured: bench/README.md, "The avxvnni set"):
//   q8: |w| (0..128, unsigned) times x with w's sign moved onto it (vpsignb;
//       x in [-127, 127], so negating it cannot overflow): a pair is at most
//       2 * 128 * 127 = 32512 < 32767, never saturated, even for a stored -128.
//       (The VNNI trick, w + 128 unsigned, would reach 2 * 255 * 127 = 64770.)
//   q4: the nibbles are unsigned already: pairs within 2 * 15 * 127 = 3810.
//       Two blocks per step: one 32-byte load, its low and its high nibbles
//       multiplied by the activations in QActivations::pairs' order and the
//       two int16 vectors added (at most 4 * 15 * 127 = 7620), so one
//       vpmaddwd, conversion and multiply-add serve 64 weights. The offset
//       term m * (d_x * sum x_q) is one multiply-add per 8 blocks.
// The R rows are read as R streams while the same bytes of the next R rows
// are prefetched.
template <QFormat F, std::size_t MM, std::size_t R>
inline void gemv_q_block_avx2(const QMatrix& m, const QActivations* a, std::size_t r0, float (&out)[MM][R]) {
    constexpr std::size_t BB = F == QFormat::Q8 ? 32 : 16;  // weight bytes per block
    const std::size_t nb = m.blocks(), rb = m.row_bytes();
    const std::uint8_t* w0 = m.row(r0);
    const f16* ds0 = m.scales + r0 * nb;
    [[maybe_unused]] const __m256i ones = _mm256_set1_epi16(1);  // not with AVX-VNNI
    __m256 acc[MM][R];
    for (std::size_t i = 0; i < MM; ++i)
        for (std::size_t r = 0; r < R; ++r) acc[i][r] = _mm256_setzero_ps();
    std::size_t b = 0;
    if constexpr (F == QFormat::Q4) {
        const __m256i lomask = _mm256_set1_epi8(0x0f);
        const __m256i halves = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0);
        for (; b + 2 <= nb; b += 2) {
            __m256i lo[R], hi[R];
            __m256 dw[R];  // [d_b x4, d_b+1 x4]
            for (std::size_t r = 0; r < R; ++r) {
                const std::uint8_t* p = w0 + r * rb + b * BB;
                __builtin_prefetch(p + R * rb, 0, 3);
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
                lo[r] = _mm256_and_si256(v, lomask);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(v, 4), lomask);
                std::uint32_t d2;  // two f16 scales
                std::memcpy(&d2, ds0 + r * nb + b, sizeof d2);
                dw[r] = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(int(d2)))), halves);
            }
            for (std::size_t i = 0; i < MM; ++i) {
                const std::int8_t* xp = a[i].pairs.data() + b * kQBlock;
                const __m256i xl = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp));
                const __m256i xh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 32));
                const __m256 dx = _mm256_loadu_ps(a[i].dx8.data() + b * 4);
                for (std::size_t r = 0; r < R; ++r) {
#ifdef FLAMINGO_QUANT_AVXVNNI
                    const __m256i isum = _mm256_dpbusd_avx_epi32(
                        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo[r], xl), hi[r], xh);
#else
                    const __m256i sums = _mm256_add_epi16(_mm256_maddubs_epi16(lo[r], xl), _mm256_maddubs_epi16(hi[r], xh));
                    const __m256i isum = _mm256_madd_epi16(sums, ones);
#endif
                    acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw[r], dx), acc[i][r]);
                }
            }
        }
    }
    for (; b < nb; ++b) {  // q8: every block; q4: the last of an odd count
        __m256i w[R], u[R];  // the block's weights; q8: also |w|
        float dw[R];
        for (std::size_t r = 0; r < R; ++r) {
            const std::uint8_t* p = w0 + r * rb + b * BB;
            __builtin_prefetch(p + R * rb, 0, 3);
            w[r] = load_block_avx2<F>(p);
            if constexpr (F == QFormat::Q8) u[r] = _mm256_abs_epi8(w[r]);
            dw[r] = _cvtsh_ss(ds0[r * nb + b].bits);
        }
        for (std::size_t i = 0; i < MM; ++i) {
            const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].q.data() + b * kQBlock));
            const float dx = a[i].d[b];
            for (std::size_t r = 0; r < R; ++r) {
                const __m256i wu = F == QFormat::Q8 ? u[r] : w[r];                         // unsigned
                const __m256i xs = F == QFormat::Q8 ? _mm256_sign_epi8(x, w[r]) : x;      // signed
#ifdef FLAMINGO_QUANT_AVXVNNI
                const __m256i isum = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), wu, xs);
#else
                const __m256i isum = _mm256_madd_epi16(_mm256_maddubs_epi16(wu, xs), ones);
#endif
                acc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw[r] * dx), acc[i][r]);
            }
        }
    }
    if constexpr (F == QFormat::Q4) {  // offset term, 8 blocks at a time, then the rest
        const std::size_t nb8 = nb / 8 * 8;
        for (std::size_t r = 0; r < R; ++r) {
            const f16* o = m.offsets + (r0 + r) * nb;
            for (std::size_t i = 0; i < MM; ++i) {
                __m256 t = _mm256_setzero_ps();
                for (std::size_t k = 0; k < nb8; k += 8)
                    t = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(o + k))),
                                        _mm256_loadu_ps(a[i].corr.data() + k), t);
                float rest = 0.0f;
                for (std::size_t k = nb8; k < nb; ++k) rest += float(o[k]) * a[i].corr[k];
                out[i][r] = hsum_avx2(_mm256_add_ps(acc[i][r], t)) + rest;
            }
        }
    } else {
        for (std::size_t i = 0; i < MM; ++i)
            for (std::size_t r = 0; r < R; ++r) out[i][r] = hsum_avx2(acc[i][r]);
    }
}

template <QFormat F, std::size_t MM>
inline void gemv_q_rows_avx2(const QMatrix& m, const QActivations* a, std::size_t n0, std::size_t n1, float* y,
                             std::size_t ldy) {
    // Weight rows per pass: enough independent chains, within the 16 vector registers.
    constexpr std::size_t R = F == QFormat::Q4 ? (MM <= 2 ? 2 : 1) : MM == 1 ? 4 : MM <= 4 ? 2 : 1;
    std::size_t r = n0;
    for (; r + R <= n1; r += R) {
        float out[MM][R];
        gemv_q_block_avx2<F, MM, R>(m, a, r, out);
        for (std::size_t i = 0; i < MM; ++i)
            for (std::size_t j = 0; j < R; ++j) y[i * ldy + r + j - n0] = out[i][j];
    }
    for (; r < n1; ++r) {
        float out[MM][1];
        gemv_q_block_avx2<F, MM, 1>(m, a, r, out);
        for (std::size_t i = 0; i < MM; ++i) y[i * ldy + r - n0] = out[i][0];
    }
}
#endif

// y[i * ldy + r - n0] = W[r] · x_i for weight rows [n0, n1) and M <= kQFewRows
// quantised activation rows (no bias); the weights are read once for all M.
inline void gemv_q_rows(const QMatrix& m, const QActivations* a, std::size_t M, std::size_t n0, std::size_t n1,
                        float* y, std::size_t ldy) {
#if defined(FLAMINGO_QUANT_VNNI) || defined(FLAMINGO_QUANT_AVX2)
    auto rows = [&](auto mm) {
        constexpr std::size_t MM = decltype(mm)::value;
#ifdef FLAMINGO_QUANT_VNNI
        if (m.format == QFormat::Q8) return gemv_q_rows_vnni<QFormat::Q8, MM>(m, a, n0, n1, y, ldy);
        return gemv_q_rows_vnni<QFormat::Q4, MM>(m, a, n0, n1, y, ldy);
#else
        if (m.format == QFormat::Q8) return gemv_q_rows_avx2<QFormat::Q8, MM>(m, a, n0, n1, y, ldy);
        return gemv_q_rows_avx2<QFormat::Q4, MM>(m, a, n0, n1, y, ldy);
#endif
    };
    switch (M) {
        case 1: return rows(std::integral_constant<std::size_t, 1>{});
        case 2: return rows(std::integral_constant<std::size_t, 2>{});
        case 3: return rows(std::integral_constant<std::size_t, 3>{});
        case 4: return rows(std::integral_constant<std::size_t, 4>{});
        case 5: return rows(std::integral_constant<std::size_t, 5>{});
        case 6: return rows(std::integral_constant<std::size_t, 6>{});
        case 7: return rows(std::integral_constant<std::size_t, 7>{});
        case 8: return rows(std::integral_constant<std::size_t, 8>{});
        default: break;
    }
#endif
    gemv_q_rows_portable(m, a, M, n0, n1, y, ldy);
}

// Y[M,N] = X[M,K] · W^T + bias by panels of weight rows dequantised to f32,
// each multiplied by the f32 kernel: many rows in plain C++ builds (the SSE2 set).
inline void linear_q_dequantised(std::size_t M, const float* X, std::size_t ldx, const QMatrix& W, const float* bias,
                                 float* Y, std::size_t ldy, bool accumulate) {
    const std::size_t N = W.rows, K = W.cols;
    const std::size_t panel = std::clamp<std::size_t>((std::size_t(1) << 17) / K / 16 * 16, 16, 256);
    parallel_for(
        N,
        [&](std::size_t n0, std::size_t n1) {
            thread_local std::vector<float> buf;
            for (std::size_t p0 = n0; p0 < n1; p0 += panel) {
                const std::size_t p1 = std::min(n1, p0 + panel);
                buf.resize((p1 - p0) * K);
                for (std::size_t r = p0; r < p1; ++r) dequantize_row(W, r, buf.data() + (r - p0) * K);
                linear(M, p1 - p0, K, X, ldx, buf.data(), K, bias ? bias + p0 : nullptr, Y + p0, ldy, accumulate);
            }
        },
        16);
}

inline void check_qmatrix(const QMatrix& m) {
    check(!m.empty() && m.scales != nullptr && (m.format == QFormat::Q8 || m.offsets != nullptr), ErrorKind::Shape,
          "linear: ", qformat_name(m.format), " weights [", m.rows, ", ", m.cols, "] lack data, scales or offsets");
}

}  // namespace detail

// Y[M,N] = X[M,K] · W^T + bias with W a quantised [N, K] matrix (see the contracts above).
inline void linear_q(std::size_t M, const float* X, std::size_t ldx, const QMatrix& W, const float* bias, float* Y,
                     std::size_t ldy, bool accumulate = false) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().linear_q(M, X, ldx, W, bias, Y, ldy, accumulate);
#else
    const std::size_t N = W.rows, K = W.cols;
    if (M == 0 || N == 0) return;
    detail::check_matrix("linear", "X", X, M, K, ldx);
    detail::check_matrix("linear", "Y", Y, M, N, ldy);
    if (K == 0) return detail::empty_product(M, N, bias, Y, ldy, accumulate);
    detail::check_qmatrix(W);
    if (!detail::kQIntegerManyRows && M > detail::kQFewRows)
        return detail::linear_q_dequantised(M, X, ldx, W, bias, Y, ldy, accumulate);
    // Each activation row is quantised once. Each thread's weight rows are
    // taken a panel at a time, small enough to stay in L2 while every group of
    // up to kQFewRows activation rows runs the integer kernel over it.
    std::vector<detail::QActivations>& a = detail::qactivations(M);
    parallel_for(M, [&](std::size_t i0, std::size_t i1) {
        for (std::size_t i = i0; i < i1; ++i) a[i].prepare(X + i * ldx, K, W.format);
    });
    // One group (decoding): no panels, one pass over the thread's rows as before.
    const std::size_t row_bytes = W.row_bytes() + W.blocks() * sizeof(f16) * (W.format == QFormat::Q4 ? 2 : 1);
    const std::size_t panel =
        M <= detail::kQFewRows ? N : std::max<std::size_t>(16, detail::kQPanelBytes / row_bytes / 16 * 16);
    parallel_for(
        N,
        [&](std::size_t n0, std::size_t n1) {
            thread_local std::vector<float> tmp;
            for (std::size_t p0 = n0; p0 < n1; p0 += panel) {
                const std::size_t p1 = std::min(n1, p0 + panel), np = p1 - p0;
                tmp.resize(detail::kQFewRows * np);
                for (std::size_t g = 0; g < M; g += detail::kQFewRows) {
                    const std::size_t mm = std::min(detail::kQFewRows, M - g);
                    detail::gemv_q_rows(W, a.data() + g, mm, p0, p1, tmp.data(), np);
                    for (std::size_t i = 0; i < mm; ++i)
                        for (std::size_t n = p0; n < p1; ++n) {
                            const float v = tmp[i * np + n - p0] + (bias ? bias[n] : 0.0f);
                            float& y = Y[(g + i) * ldy + n];
                            y = accumulate ? y + v : v;
                        }
                }
            }
        },
        16);
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels

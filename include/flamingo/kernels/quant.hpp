#pragma once
// Block-quantised weights (q8, q4) and the products that use them.
//
// Formats (README, "Quantised weights"): a weight matrix [rows, cols] is cut
// along cols (the input dimension) into blocks of 32; cols is padded with
// zeros to a multiple of 32, so any cols works. Per block and row:
//   q8: 32 int8 values q in [-127, 127], scale d (f32):  w = d * q,
//       d = max|w| / 127 (symmetric; -128 is never used).
//   q4: 32 4-bit values q in [0, 15] in 16 bytes, scale d and offset m (f32):
//       w = d * q + m, m = min(w), d = (max(w) - min(w)) / 15.
//       Byte j (0..15) of a block holds element j in its low nibble and
//       element j + 16 in its high nibble.
// Scales and offsets are f32 rather than f16: they add no rounding of their
// own and have no range limits (f16 scales of near-zero blocks go subnormal);
// the price is 0.5 bit per weight each (q8: 9 bits per weight, q4: 6).
// The offset makes q4 use all 16 levels on a block's actual range: relative
// RMS error 0.078 against 0.086 for the best symmetric 4-bit variant on
// Gaussian blocks, 0.094 against 0.116 on heavy-tailed (Student t, 4 dof).
//
// Accuracy contracts:
//   quantize_*: each dequantised weight is within d/2 of the original
//     (q8: max|w|/254 of its block; q4: (max - min)/30), plus f32 rounding.
//   linear_q, one row (GEMV): the activations are quantised the same way as q8
//     weights (per block of 32, scale max|x|/127, round to nearest) and each
//     block's dot product is computed exactly in int32 (in partial sums of a
//     few elements); these are then combined in f32:
//     y = sum_b d_w*d_x*dot_b (+ m*d_x*sum_b(x_q) for q4). Against that
//     expression evaluated exactly, the error is below 1e-5 times the same
//     sum taken over |each element's term| (tests check this). Against the float product
//     with the original weights, add the quantisation errors of both sides.
//   linear_q, several rows (GEMM): panels of weights are dequantised to f32
//     and multiplied by the f32 kernel (activations not quantised), so only
//     the weight quantisation error adds to the f32 contract of gemm.hpp.
// The integer dot products use AVX512-VNNI (vpdpbusd) when the compiler
// targets it, plain C++ otherwise; both give the same integers.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512F__)
#include <immintrin.h>
#define FLAMINGO_QUANT_VNNI 1
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
    const float* scales = nullptr;    // [rows, blocks()]
    const float* offsets = nullptr;   // q4: [rows, blocks()]; q8: unused

    bool empty() const { return data == nullptr; }
    std::size_t blocks() const { return (cols + kQBlock - 1) / kQBlock; }
    std::size_t padded_cols() const { return blocks() * kQBlock; }
    std::size_t row_bytes() const { return format == QFormat::Q8 ? padded_cols() : padded_cols() / 2; }
    const std::uint8_t* row(std::size_t r) const { return static_cast<const std::uint8_t*>(data) + r * row_bytes(); }
};

// Owns a quantised matrix's storage.
struct QBuffer {
    std::vector<std::uint8_t> data;
    std::vector<float> scales, offsets;

    QMatrix view(QFormat f, std::size_t rows, std::size_t cols) const {
        return {f, rows, cols, data.data(), scales.data(), f == QFormat::Q4 ? offsets.data() : nullptr};
    }
};

FLAMINGO_KERNELS_BEGIN

// ---- quantisation of one row ------------------------------------------------

// x[cols] -> q[padded cols] int8, scales[blocks].
inline void quantize_row_q8(const float* x, std::size_t cols, std::int8_t* q, float* scales) {
    const std::size_t nb = (cols + kQBlock - 1) / kQBlock;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t k0 = b * kQBlock, n = std::min(kQBlock, cols - k0);
        float amax = 0.0f;
        for (std::size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[k0 + i]));
        const float d = amax / 127.0f;
        scales[b] = d;
        for (std::size_t i = 0; i < kQBlock; ++i) {
            float v = (i < n && d > 0.0f) ? std::nearbyint(x[k0 + i] / d) : 0.0f;
            q[k0 + i] = std::int8_t(std::clamp(v, -127.0f, 127.0f));
        }
    }
}

// x[cols] -> q[padded cols / 2] packed nibbles, scales[blocks], offsets[blocks].
inline void quantize_row_q4(const float* x, std::size_t cols, std::uint8_t* q, float* scales, float* offsets) {
    const std::size_t nb = (cols + kQBlock - 1) / kQBlock;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t k0 = b * kQBlock, n = std::min(kQBlock, cols - k0);
        float lo = x[k0], hi = x[k0];
        for (std::size_t i = 1; i < n; ++i) lo = std::min(lo, x[k0 + i]), hi = std::max(hi, x[k0 + i]);
        const float d = (hi - lo) / 15.0f;
        scales[b] = d;
        offsets[b] = lo;
        std::uint8_t v[kQBlock] = {};
        for (std::size_t i = 0; i < n; ++i)
            v[i] = d > 0.0f ? std::uint8_t(std::clamp(std::nearbyint((x[k0 + i] - lo) / d), 0.0f, 15.0f)) : 0;
        std::uint8_t* out = q + b * (kQBlock / 2);
        for (std::size_t j = 0; j < kQBlock / 2; ++j) out[j] = std::uint8_t(v[j] | (v[j + kQBlock / 2] << 4));
    }
}

// Row r of m as floats (its cols values; the padding is not written).
inline void dequantize_row(const QMatrix& m, std::size_t r, float* out) {
    const std::uint8_t* p = m.row(r);
    const float* d = m.scales + r * m.blocks();
    if (m.format == QFormat::Q8) {
        const std::int8_t* q = reinterpret_cast<const std::int8_t*>(p);
        for (std::size_t k = 0; k < m.cols; ++k) out[k] = d[k / kQBlock] * float(q[k]);
    } else {
        const float* o = m.offsets + r * m.blocks();
        for (std::size_t k = 0; k < m.cols; ++k) {
            const std::size_t b = k / kQBlock, i = k % kQBlock;
            const std::uint8_t byte = p[b * (kQBlock / 2) + i % (kQBlock / 2)];
            const int v = i < kQBlock / 2 ? (byte & 0x0f) : (byte >> 4);
            out[k] = d[b] * float(v) + o[b];
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
    for (std::size_t r = 0; r < rows; ++r) {
        if (f == QFormat::Q8)
            quantize_row_q8(w + r * ld, cols, reinterpret_cast<std::int8_t*>(b.data.data() + r * shape.row_bytes()),
                            b.scales.data() + r * shape.blocks());
        else
            quantize_row_q4(w + r * ld, cols, b.data.data() + r * shape.row_bytes(),
                            b.scales.data() + r * shape.blocks(), b.offsets.data() + r * shape.blocks());
    }
    return b;
}

namespace detail {

// One activation row quantised per block (the q8 weight rule), with each
// block's sum of quantised values, plus the layouts the SIMD kernels read.
struct QActivations {
    std::vector<std::int8_t> q;    // [padded cols]
    std::vector<float> d;          // [blocks]
    std::vector<std::int32_t> sum; // [blocks]
#ifdef FLAMINGO_QUANT_VNNI
    // Per chunk of 64 inputs (two blocks): 64 activation bytes in the order
    // the weights are read, and 16 f32 lanes of block scales (and for q4 the
    // per-lane sums times the scale) in the order vpdpbusd produces.
    std::vector<std::int8_t> bytes;  // [chunks * 64]
    std::vector<std::uint64_t> neg;  // q8: which of the 64 activations are negative
    std::vector<float> dlanes, slanes;  // [chunks * 16]
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
        const std::size_t nc = (nb + 1) / 2;
        bytes.resize(nc * 64);
        neg.resize(nc);
        dlanes.resize(nc * 16);
        slanes.resize(nc * 16);
        for (std::size_t c = 0; c < nc; ++c) {
            alignas(64) std::int8_t a[64] = {};
            float* dl = dlanes.data() + 16 * c;
            float* sl = slanes.data() + 16 * c;
            const bool two = 2 * c + 1 < nb;
            const std::int8_t* src = q.data() + 2 * c * kQBlock;
            const float d0 = d[2 * c], d1 = two ? d[2 * c + 1] : 0.0f;
            if (f == QFormat::Q8) {
                // Natural order: lanes 0-7 block 0, lanes 8-15 block 1.
                std::memcpy(a, src, two ? 64 : 32);
                for (int l = 0; l < 16; ++l) dl[l] = l < 8 ? d0 : d1, sl[l] = 0.0f;
                __m512i v = _mm512_load_si512(a);
                neg[c] = _mm512_movepi8_mask(v);
                _mm512_storeu_si512(bytes.data() + 64 * c, _mm512_abs_epi8(v));
            } else {
                // The q4 unpacking order: [b0 0-15, b1 0-15, b0 16-31, b1 16-31].
                std::memcpy(a, src, 16);
                std::memcpy(a + 32, src + 16, 16);
                if (two) std::memcpy(a + 16, src + 32, 16), std::memcpy(a + 48, src + 48, 16);
                for (int l = 0; l < 16; ++l) {
                    const bool first = (l / 4) % 2 == 0;
                    dl[l] = first ? d0 : d1;
                    std::int32_t ls = 0;
                    for (int i = 0; i < 4; ++i) ls += a[4 * l + i];
                    sl[l] = float(ls) * dl[l];
                }
                std::memcpy(bytes.data() + 64 * c, a, 64);
                neg[c] = 0;
            }
        }
#endif
    }
};

inline QActivations& qactivations() {
    thread_local QActivations a;
    return a;
}

// y[n0, n1) = W x for one quantised activation row (no bias), in plain C++:
// the path without VNNI, and compiled always so tests can compare the two.
inline void gemv_q_rows_portable(const QMatrix& m, const QActivations& a, std::size_t n0, std::size_t n1, float* y) {
    const std::size_t nb = m.blocks();
    for (std::size_t r = n0; r < n1; ++r) {
        const std::uint8_t* p = m.row(r);
        const float* ds = m.scales + r * nb;
        float acc = 0.0f;
        for (std::size_t b = 0; b < nb; ++b) {
            const std::int8_t* xa = a.q.data() + b * kQBlock;
            std::int32_t dot = 0;
            if (m.format == QFormat::Q8) {
                const std::int8_t* w = reinterpret_cast<const std::int8_t*>(p) + b * kQBlock;
                for (std::size_t i = 0; i < kQBlock; ++i) dot += std::int32_t(w[i]) * xa[i];
                acc += ds[b] * a.d[b] * float(dot);
            } else {
                const std::uint8_t* w = p + b * (kQBlock / 2);
                for (std::size_t j = 0; j < kQBlock / 2; ++j)
                    dot += std::int32_t(w[j] & 0x0f) * xa[j] + std::int32_t(w[j] >> 4) * xa[j + kQBlock / 2];
                acc += ds[b] * a.d[b] * float(dot) + m.offsets[r * nb + b] * a.d[b] * float(a.sum[b]);
            }
        }
        y[r - n0] = acc;
    }
}

// y[n0, n1) = W x for one quantised activation row (no bias).
inline void gemv_q_rows(const QMatrix& m, const QActivations& a, std::size_t n0, std::size_t n1, float* y) {
#ifdef FLAMINGO_QUANT_VNNI
    const std::size_t nb = m.blocks();
    const std::size_t nc = (nb + 1) / 2;
    const bool odd = nb % 2 == 1;
    const __m512i zero = _mm512_setzero_si512();
    if (m.format == QFormat::Q8) {
        const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
        for (std::size_t r = n0; r < n1; ++r) {
            const std::int8_t* w = reinterpret_cast<const std::int8_t*>(m.row(r));
            const float* ds = m.scales + r * nb;
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            for (std::size_t c = 0; c < nc; ++c) {
                const bool last_half = odd && c + 1 == nc;
                const __m512i wv = last_half ? _mm512_maskz_loadu_epi8(0xffffffffull, w + 64 * c)
                                             : _mm512_loadu_si512(w + 64 * c);
                const __m512i ws = _mm512_mask_sub_epi8(wv, a.neg[c], zero, wv);  // sign of x moved onto w
                const __m512i dot = _mm512_dpbusd_epi32(zero, _mm512_loadu_si512(a.bytes.data() + 64 * c), ws);
                const __m512 dw = _mm512_permutexvar_ps(halves, _mm512_maskz_loadu_ps(last_half ? 1 : 3, ds + 2 * c));
                const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(a.dlanes.data() + 16 * c));
                if (c % 2 == 0) acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc0);
                else acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc1);
            }
            y[r - n0] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        }
    } else {
        const __m512i quads = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
        const __m256i lomask = _mm256_set1_epi8(0x0f);
        for (std::size_t r = n0; r < n1; ++r) {
            const std::uint8_t* w = m.row(r);
            const float* ds = m.scales + r * nb;
            const float* os = m.offsets + r * nb;
            __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            for (std::size_t c = 0; c < nc; ++c) {
                const bool last_half = odd && c + 1 == nc;
                const __m256i b = last_half ? _mm256_maskz_loadu_epi8(0xffffu, w + 32 * c)
                                            : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * c));
                const __m256i lo = _mm256_and_si256(b, lomask);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), lomask);
                const __m512i qv = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
                const __m512i dot = _mm512_dpbusd_epi32(zero, qv, _mm512_loadu_si512(a.bytes.data() + 64 * c));
                const __mmask16 k = last_half ? 1 : 3;
                const __m512 dw = _mm512_permutexvar_ps(quads, _mm512_maskz_loadu_ps(k, ds + 2 * c));
                const __m512 mw = _mm512_permutexvar_ps(quads, _mm512_maskz_loadu_ps(k, os + 2 * c));
                acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_loadu_ps(a.dlanes.data() + 16 * c)), acc0);
                acc1 = _mm512_fmadd_ps(mw, _mm512_loadu_ps(a.slanes.data() + 16 * c), acc1);
            }
            y[r - n0] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
        }
    }
#else
    gemv_q_rows_portable(m, a, n0, n1, y);
#endif
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
    if (M < 4) {
        // One activation row at a time: weights are read once per row, as integers.
        for (std::size_t i = 0; i < M; ++i) {
            detail::QActivations& a = detail::qactivations();
            a.prepare(X + i * ldx, K, W.format);
            float* y = Y + i * ldy;
            parallel_for(
                N,
                [&](std::size_t n0, std::size_t n1) {
                    thread_local std::vector<float> tmp;
                    tmp.resize(n1 - n0);
                    detail::gemv_q_rows(W, a, n0, n1, tmp.data());
                    for (std::size_t n = n0; n < n1; ++n) {
                        float v = tmp[n - n0] + (bias ? bias[n] : 0.0f);
                        y[n] = accumulate ? y[n] + v : v;
                    }
                },
                16);
        }
        return;
    }
    // Many rows: dequantise panels of weight rows and use the f32 kernel on each.
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
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels

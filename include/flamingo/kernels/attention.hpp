#pragma once
// Scaled dot-product attention as a tiled online-softmax kernel: O(T * d)
// working memory, the T x T score matrix is never formed.
//
// Each query row i sees a contiguous key range [lo_i, hi_i): the optional
// per-row range [kv_begin[i], kv_end[i]) intersected with the causal limit
// j <= q_pos0 + i. Flamingo's media mask (a text token sees the visual tokens
// of one image) and the decoder's causal mask both take this form. A row with
// an empty range gets a zero output, which is what OpenFlamingo does for text
// that has no image before it.
//
// Two code paths:
//  - blocks (prefill): up to 4 * W query rows of one head are processed
//    together with the rows along the SIMD lanes. Q is transposed into a small
//    buffer once per block; keys and values are then read straight from their
//    strided rows and broadcast, so head_dim needs no padding and K/V no
//    packing. Per tile of 64 keys: scores S^T = K Q^T, then bias, mask and
//    online-softmax update all lane-parallel, then O^T += V^T P^T.
//  - rows (decoding, few queries): one query row against its key range with
//    dot products along head_dim; when there are fewer (head, row) pairs than
//    threads, each key range is split across threads and the partial softmax
//    states (max, sum, weighted values) are merged afterwards.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "detail/vmath.hpp"

namespace flamingo::kernels {

struct AttentionArgs {
    std::size_t n_q = 0, n_kv = 0;                          // query rows, key/value rows
    std::size_t n_heads = 1, n_kv_heads = 1, head_dim = 0;  // head h uses kv head h / (n_heads / n_kv_heads)
    const float* q = nullptr;                               // q[i * q_row_stride + h * q_head_stride + d]
    std::size_t q_row_stride = 0, q_head_stride = 0;
    const float* k = nullptr;
    std::size_t k_row_stride = 0, k_head_stride = 0;
    const float* v = nullptr;
    std::size_t v_row_stride = 0, v_head_stride = 0;
    float* out = nullptr;
    std::size_t out_row_stride = 0, out_head_stride = 0;
    float scale = 1.0f;                           // applied to q.k
    bool causal = false;                          // query i sees keys j <= q_pos0 + i
    std::size_t q_pos0 = 0;                       // tokens already in the KV cache
    const float* alibi_slopes = nullptr;          // per head: score += slope * (j - (q_pos0 + i))
    const std::uint32_t* kv_begin = nullptr;      // optional per-query key range [kv_begin[i], kv_end[i]),
    const std::uint32_t* kv_end = nullptr;        // intersected with the causal limit
};

FLAMINGO_KERNELS_BEGIN

namespace detail::attn_impl {

using vmath::Buffer;
using vmath::kInf;
using vmath::vf;
using vmath::W;

constexpr std::size_t kTile = 64;                   // keys per tile (block path)
constexpr int kMaxNV = 4;                           // query rows per block: up to kMaxNV * W
// Accumulator registers per micro-kernel: AVX-512 has 32 vector registers, the
// others 16. (24 for the scores and 16 for the values measured best on Zen 5.)
constexpr int kAccQK = W >= 16 ? 24 : 8;
constexpr int kAccPV = W >= 16 ? 16 : 8;
constexpr std::size_t kChunk = 256;                 // keys per chunk (row path)
constexpr std::size_t kMaxKeys = std::size_t(1) << 24;  // key positions are exact in float below this

// The validated arguments plus each query row's key range.
struct Problem {
    const AttentionArgs& a;
    std::size_t group;  // query heads per kv head
    const std::size_t *lo, *hi;

    const float* q_row(std::size_t h, std::size_t i) const { return a.q + i * a.q_row_stride + h * a.q_head_stride; }
    const float* k_head(std::size_t h) const { return a.k + (h / group) * a.k_head_stride; }
    const float* v_head(std::size_t h) const { return a.v + (h / group) * a.v_head_stride; }
    float* out_row(std::size_t h, std::size_t i) const { return a.out + i * a.out_row_stride + h * a.out_head_stride; }
    float slope(std::size_t h) const { return a.alibi_slopes ? a.alibi_slopes[h] : 0.0f; }
};

// ---- block path ----------------------------------------------------------------

struct BlockWork {
    Buffer qt, st, ot;  // Q^T (d x BQ), scores/probabilities (tile x BQ), O^T (d x BQ)
};

// Per-thread working memory that only grows: the kernel runs once per layer and
// token while decoding, and after the first calls it allocates nothing.
struct Scratch {
    std::vector<std::size_t> lo, hi, cost, order;
    Buffer partial, qbuf, s;
    BlockWork block;
};
inline Scratch& scratch() {
    thread_local Scratch s;
    return s;
}
template <class T>
T* grow(std::vector<T>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

// st[c][lanes] = sum_d k_c[d] * qt[d][lanes] for NK keys; folds them into the
// running lane maxima mt.
template <int NV, int NK>
inline void qk_keys(const float* qt, std::size_t d, const float* const* kp, float* st, vf* mt) {
    constexpr std::size_t BQ = NV * W;
    vf acc[NK][NV];
    for (int c = 0; c < NK; ++c)
        for (int v = 0; v < NV; ++v) acc[c][v] = vf(0.0f);
    for (std::size_t dd = 0; dd < d; ++dd) {
        vf qv[NV];
        for (int v = 0; v < NV; ++v) {
            qv[v] = vf::load_aligned(qt + dd * BQ + v * W);
            vmath::pin(qv[v]);
        }
        for (int c = 0; c < NK; ++c) {
            const vf kb(kp[c][dd]);
            for (int v = 0; v < NV; ++v) acc[c][v] = xsimd::fma(kb, qv[v], acc[c][v]);
        }
    }
    for (int c = 0; c < NK; ++c)
        for (int v = 0; v < NV; ++v) {
            acc[c][v].store_aligned(st + c * BQ + v * W);
            mt[v] = xsimd::max(mt[v], acc[c][v]);
        }
}

// ot[dd0 + c][lanes] = ot[...] * alpha + sum_j v_j[dd0 + c] * st[j][lanes] for ND dims.
template <int NV, int ND>
inline void pv_dims(float* ot, const float* st, std::size_t tn, const float* vrow, std::size_t vstride,
                    const vf* alpha) {
    constexpr std::size_t BQ = NV * W;
    vf acc[ND][NV];
    for (int c = 0; c < ND; ++c)
        for (int v = 0; v < NV; ++v) acc[c][v] = vf::load_aligned(ot + c * BQ + v * W) * alpha[v];
    for (std::size_t j = 0; j < tn; ++j, vrow += vstride) {
        vf p[NV];
        for (int v = 0; v < NV; ++v) {
            p[v] = vf::load_aligned(st + j * BQ + v * W);
            vmath::pin(p[v]);
        }
        for (int c = 0; c < ND; ++c) {
            const vf vb(vrow[c]);
            for (int v = 0; v < NV; ++v) acc[c][v] = xsimd::fma(vb, p[v], acc[c][v]);
        }
    }
    for (int c = 0; c < ND; ++c)
        for (int v = 0; v < NV; ++v) acc[c][v].store_aligned(ot + c * BQ + v * W);
}

// Query rows i0 .. i0 + R - 1 (R <= NV * W) of head h.
template <int NV>
void attend_block(const Problem& P, std::size_t h, std::size_t i0, std::size_t R, BlockWork& ws) {
    constexpr std::size_t BQ = NV * W;
    constexpr int NK = std::min(12, kAccQK / NV);  // keys per score micro-kernel
    constexpr int ND = std::min(12, kAccPV / NV);  // head dims per value micro-kernel
    const AttentionArgs& a = P.a;
    const std::size_t d = a.head_dim;

    // Lane ranges; padding lanes repeat the last row (their results are dropped).
    alignas(64) float lo_f[BQ], hi_f[BQ], pos_f[BQ];
    std::size_t klo = std::numeric_limits<std::size_t>::max(), khi = 0;
    std::size_t max_lo = 0, min_hi = std::numeric_limits<std::size_t>::max();
    for (std::size_t r = 0; r < BQ; ++r) {
        const std::size_t i = i0 + std::min(r, R - 1);
        const std::size_t lo = P.lo[i], hi = P.hi[i];
        if (lo < hi) {
            klo = std::min(klo, lo);
            khi = std::max(khi, hi);
        }
        max_lo = std::max(max_lo, lo);
        min_hi = std::min(min_hi, hi);
        lo_f[r] = float(lo);
        hi_f[r] = float(hi);
        pos_f[r] = float(a.q_pos0 + i);
    }
    if (klo >= khi) {  // no row sees any key
        for (std::size_t r = 0; r < R; ++r) std::fill_n(P.out_row(h, i0 + r), d, 0.0f);
        return;
    }

    ws.qt.resize(d * BQ);
    ws.st.resize(kTile * BQ);
    ws.ot.resize(d * BQ);
    float* qt = ws.qt.data();
    float* st = ws.st.data();
    float* ot = ws.ot.data();
    // Row by row: query rows are often a power of two apart (heads interleaved
    // in 4 KiB rows), and reading them column by column would thrash one L1 set.
    for (std::size_t r = 0; r < BQ; ++r) {
        const float* qr = r < R ? P.q_row(h, i0 + r) : nullptr;
        for (std::size_t dd = 0; dd < d; ++dd) qt[dd * BQ + r] = qr ? qr[dd] * a.scale : 0.0f;
    }
    std::fill_n(ot, d * BQ, 0.0f);

    vf m[NV], l[NV], lo_v[NV], hi_v[NV], pos_v[NV];
    for (int v = 0; v < NV; ++v) {
        m[v] = vf(-kInf);
        l[v] = vf(0.0f);
        lo_v[v] = vf::load_aligned(lo_f + v * W);
        hi_v[v] = vf::load_aligned(hi_f + v * W);
        pos_v[v] = vf::load_aligned(pos_f + v * W);
    }
    const bool alibi = a.alibi_slopes != nullptr;
    const vf slope(P.slope(h));
    const float* kh = P.k_head(h);
    const float* vh = P.v_head(h);

    for (std::size_t t0 = klo; t0 < khi; t0 += kTile) {
        const std::size_t tn = std::min(kTile, khi - t0);
        bool any = false;  // skip tiles no row sees (gaps between media ranges)
        for (std::size_t r = 0; r < R && !any; ++r)
            any = std::max(P.lo[i0 + r], t0) < std::min(P.hi[i0 + r], t0 + tn);
        if (!any) continue;
        const bool full = t0 >= max_lo && t0 + tn <= min_hi;  // every row sees every key of the tile

        // Scores and their maxima.
        vf mt[NV];
        for (int v = 0; v < NV; ++v) mt[v] = vf(-kInf);
        std::size_t j = 0;
        for (; j + NK <= tn; j += NK) {
            const float* kp[NK];
            for (int c = 0; c < NK; ++c) kp[c] = kh + (t0 + j + c) * a.k_row_stride;
            qk_keys<NV, NK>(qt, d, kp, st + j * BQ, mt);
        }
        if constexpr (NK > 4)
            for (; j + 4 <= tn; j += 4) {  // a tile of 64 keys leaves 4 for NK = 6
                const float* kp[4];
                for (int c = 0; c < 4; ++c) kp[c] = kh + (t0 + j + c) * a.k_row_stride;
                qk_keys<NV, 4>(qt, d, kp, st + j * BQ, mt);
            }
        for (; j < tn; ++j) {
            const float* kp[1] = {kh + (t0 + j) * a.k_row_stride};
            qk_keys<NV, 1>(qt, d, kp, st + j * BQ, mt);
        }

        // Bias and mask change the scores; the maxima are then taken again.
        if (alibi || !full) {
            for (int v = 0; v < NV; ++v) mt[v] = vf(-kInf);
            for (j = 0; j < tn; ++j) {
                const vf jf(float(t0 + j));
                for (int v = 0; v < NV; ++v) {
                    float* sp = st + j * BQ + v * W;
                    vf s = vf::load_aligned(sp);
                    if (alibi) s += slope * (jf - pos_v[v]);
                    if (!full) s = xsimd::select((jf >= lo_v[v]) && (jf < hi_v[v]), s, vf(-kInf));
                    s.store_aligned(sp);
                    mt[v] = xsimd::max(mt[v], s);
                }
            }
        }
        // Online softmax: rescale by exp(old max - new max). A lane that has seen
        // no key yet keeps max -inf; it subtracts 0 so that exp gives 0, not NaN.
        vf alpha[NV], mu[NV], sum[NV];
        for (int v = 0; v < NV; ++v) {
            const vf mn = xsimd::max(m[v], mt[v]);
            mu[v] = xsimd::select(mn == vf(-kInf), vf(0.0f), mn);
            alpha[v] = xsimd::exp(m[v] - mu[v]);
            m[v] = mn;
            sum[v] = vf(0.0f);
        }
        for (j = 0; j < tn; ++j)
            for (int v = 0; v < NV; ++v) {
                float* sp = st + j * BQ + v * W;
                const vf p = xsimd::exp(vf::load_aligned(sp) - mu[v]);
                p.store_aligned(sp);
                sum[v] += p;
            }
        for (int v = 0; v < NV; ++v) l[v] = xsimd::fma(l[v], alpha[v], sum[v]);

        // Weighted values.
        const float* vrow = vh + t0 * a.v_row_stride;
        std::size_t dd = 0;
        for (; dd + ND <= d; dd += ND) pv_dims<NV, ND>(ot + dd * BQ, st, tn, vrow + dd, a.v_row_stride, alpha);
        for (; dd < d; ++dd) pv_dims<NV, 1>(ot + dd * BQ, st, tn, vrow + dd, a.v_row_stride, alpha);
    }

    alignas(64) float inv_l[BQ];
    for (int v = 0; v < NV; ++v)
        xsimd::select(l[v] > vf(0.0f), vf(1.0f) / l[v], vf(0.0f)).store_aligned(inv_l + v * W);
    for (std::size_t r = 0; r < R; ++r) {
        float* o = P.out_row(h, i0 + r);
        for (std::size_t dd = 0; dd < d; ++dd) o[dd] = ot[dd * BQ + r] * inv_l[r];
    }
}

inline void attend_block_dispatch(const Problem& P, std::size_t h, std::size_t i0, std::size_t R, BlockWork& ws) {
    switch ((R + W - 1) / W) {
        case 1: return attend_block<1>(P, h, i0, R, ws);
        case 2: return attend_block<2>(P, h, i0, R, ws);
        case 3: return attend_block<3>(P, h, i0, R, ws);
        default: return attend_block<4>(P, h, i0, R, ws);
    }
}

inline void run_blocks(const Problem& P, bool parallel) {
    const AttentionArgs& a = P.a;
    constexpr std::size_t BQ = kMaxNV * W;
    const std::size_t nb = (a.n_q + BQ - 1) / BQ;
    // Costliest blocks first (later blocks under a causal mask see more keys),
    // handed out dynamically so that uneven blocks balance across threads.
    Scratch& sc = scratch();
    std::size_t* cost = grow(sc.cost, nb);
    std::size_t* order = grow(sc.order, nb);
    for (std::size_t b = 0; b < nb; ++b) {
        std::size_t lo = std::numeric_limits<std::size_t>::max(), hi = 0;
        for (std::size_t i = b * BQ; i < std::min(a.n_q, (b + 1) * BQ); ++i)
            if (P.lo[i] < P.hi[i]) {
                lo = std::min(lo, P.lo[i]);
                hi = std::max(hi, P.hi[i]);
            }
        cost[b] = hi > lo ? hi - lo : 0;
    }
    std::iota(order, order + nb, std::size_t(0));
    // Ties broken by index: deterministic, and std::sort needs no buffer
    // (stable_sort would allocate one on every call).
    std::sort(order, order + nb, [&](std::size_t x, std::size_t y) {
        return cost[x] != cost[y] ? cost[x] > cost[y] : x < y;
    });

    const std::size_t n_items = nb * a.n_heads;
    std::atomic<std::size_t> next{0};
    auto worker = [&](std::size_t, std::size_t) {
        BlockWork& ws = scratch().block;
        for (std::size_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < n_items;) {
            const std::size_t b = order[it / a.n_heads], h = it % a.n_heads;
            const std::size_t i0 = b * BQ;
            attend_block_dispatch(P, h, i0, std::min(BQ, a.n_q - i0), ws);
        }
    };
    if (parallel)
        parallel_for(std::size_t(num_threads()), worker);
    else
        worker(0, 1);
}

// ---- row path ------------------------------------------------------------------

// Requests the cache lines of a row of n floats. Rows of one head in a KV cache
// interleaved by heads sit on different pages, which the hardware prefetchers
// do not follow.
inline void prefetch_row(const float* p, std::size_t n) {
#if defined(__GNUC__)
    for (std::size_t e = 0; e < n; e += 64 / sizeof(float)) __builtin_prefetch(p + e);
    __builtin_prefetch(p + n - 1);
#else
    (void)p;
    (void)n;
#endif
}

struct RowState {
    float m, l;  // running maximum and sum of exp(score - m)
};

// s[c] = q . k_c for W keys (rows kr[c]). (xsimd 8.1's haddp, which would
// reduce the W sums in one transpose, permutes its lanes on AVX-512.)
inline vf dot_keys(const float* q, std::size_t d, const float* const* kr) {
    using vmath::load_tail;
    const std::size_t nfull = d / W * W, tail = d - nfull;
    alignas(64) float sums[W];
    for (std::size_t c = 0; c < W; ++c) {
        vf a0(0.0f), a1(0.0f);
        std::size_t dd = 0;
        for (; dd + 2 * W <= nfull; dd += 2 * W) {
            a0 = xsimd::fma(vf::load_aligned(q + dd), vf::load_unaligned(kr[c] + dd), a0);
            a1 = xsimd::fma(vf::load_aligned(q + dd + W), vf::load_unaligned(kr[c] + dd + W), a1);
        }
        if (dd < nfull) a0 = xsimd::fma(vf::load_aligned(q + dd), vf::load_unaligned(kr[c] + dd), a0);
        if (tail) a1 = xsimd::fma(vf::load_aligned(q + nfull), load_tail(kr[c] + nfull, tail, 0.0f), a1);
        sums[c] = vmath::hsum(a0 + a1);
    }
    return vf::load_aligned(sums);
}

// o += sum_c p[c] v_c for up to 4 value rows; o is updated once per group.
template <int N>
inline void add_values(float* o, std::size_t d, const float* p, const float* const* vr) {
    using vmath::load_tail;
    const std::size_t nfull = d / W * W, tail = d - nfull;
    vf pv[N];
    for (int c = 0; c < N; ++c) pv[c] = vf(p[c]);
    std::size_t dd = 0;
    for (; dd < nfull; dd += W) {
        vf a = vf::load_aligned(o + dd);
        for (int c = 0; c < N; ++c) a = xsimd::fma(pv[c], vf::load_unaligned(vr[c] + dd), a);
        a.store_aligned(o + dd);
    }
    if (tail) {
        vf a = vf::load_aligned(o + dd);  // o is padded to whole vectors
        for (int c = 0; c < N; ++c) a = xsimd::fma(pv[c], load_tail(vr[c] + dd, tail, 0.0f), a);
        a.store_aligned(o + dd);
    }
}

// Softmax state of one query row over keys [j0, j1). o (head_dim rounded up
// to whole vectors, aligned) receives sum_j exp(s_j - m) v_j; qbuf (same size)
// and s (kChunk floats) are scratch.
inline RowState attend_row(const Problem& P, std::size_t h, std::size_t i, std::size_t j0, std::size_t j1,
                           float* o, float* qbuf, float* s) {
    using vmath::load_tail;
    const AttentionArgs& a = P.a;
    const std::size_t d = a.head_dim, dpad = (d + W - 1) / W * W;
    const float* qr = P.q_row(h, i);
    for (std::size_t dd = 0; dd < dpad; ++dd) qbuf[dd] = dd < d ? qr[dd] * a.scale : 0.0f;
    std::fill_n(o, dpad, 0.0f);
    const float* kh = P.k_head(h);
    const float* vh = P.v_head(h);
    const vf slope(P.slope(h));
    const float pos = float(a.q_pos0 + i);
    alignas(64) float lane[W];
    for (std::size_t c = 0; c < W; ++c) lane[c] = float(c);
    RowState st{-kInf, 0.0f};

    for (std::size_t c0 = j0; c0 < j1; c0 += kChunk) {
        const std::size_t n = std::min(kChunk, j1 - c0);
        // Scores, W keys at a time; the last group repeats its final key.
        vf vmax(-kInf);
        for (std::size_t j = 0; j < n; j += W) {
            const float* kr[W];
            for (std::size_t c = 0; c < W; ++c) kr[c] = kh + (c0 + std::min(j + c, n - 1)) * a.k_row_stride;
            for (std::size_t c = j + W; c < std::min(n, j + 2 * W); ++c)
                prefetch_row(kh + (c0 + c) * a.k_row_stride, d);
            vf sc = dot_keys(qbuf, d, kr);
            if (a.alibi_slopes) sc += slope * (vf(float(c0 + j) - pos) + vf::load_aligned(lane));
            if (j + W <= n)
                sc.store_unaligned(s + j);
            else
                vmath::store_tail(s + j, sc, n - j);
            vmax = xsimd::max(vmax, sc);
        }
        const float mn = std::max(st.m, vmath::hmax(vmax));
        const float alpha = std::exp(st.m - mn);  // 0 on the first chunk (m = -inf)
        const vf mv(mn);
        const float sum = float(vmath::sum_blocks(n, [&](std::size_t j, std::size_t len) {
            if (len == W) {
                const vf p = xsimd::exp(vf::load_unaligned(s + j) - mv);
                p.store_unaligned(s + j);
                return p;
            }
            const vf p = xsimd::exp(load_tail(s + j, len, -kInf) - mv);
            vmath::store_tail(s + j, p, len);
            return p;
        }));
        st.l = st.l * alpha + sum;
        st.m = mn;
        if (alpha != 1.0f) {
            const vf av(alpha);
            for (std::size_t dd = 0; dd < dpad; dd += W) (vf::load_aligned(o + dd) * av).store_aligned(o + dd);
        }
        std::size_t j = 0;
        for (; j + 4 <= n; j += 4) {
            const float* vr[4];
            for (int c = 0; c < 4; ++c) vr[c] = vh + (c0 + j + c) * a.v_row_stride;
            for (std::size_t c = j + 16; c < std::min(n, j + 20); ++c) prefetch_row(vh + (c0 + c) * a.v_row_stride, d);
            add_values<4>(o, d, s + j, vr);
        }
        for (; j < n; ++j) {
            const float* vr[1] = {vh + (c0 + j) * a.v_row_stride};
            add_values<1>(o, d, s + j, vr);
        }
    }
    return st;
}

inline void run_rows(const Problem& P, bool parallel) {
    const AttentionArgs& a = P.a;
    const std::size_t d = a.head_dim;
    const std::size_t n_items = a.n_q * a.n_heads;  // item = (row, head)
    std::size_t longest = 0;
    for (std::size_t i = 0; i < a.n_q; ++i) longest = std::max(longest, P.hi[i] - std::min(P.lo[i], P.hi[i]));
    // Split key ranges when there are fewer items than threads and enough keys.
    const std::size_t nt = parallel ? std::size_t(num_threads()) : 1;
    std::size_t parts = 1;
    if (n_items < nt) parts = std::min((nt + n_items - 1) / n_items, std::max<std::size_t>(1, longest / (2 * kChunk)));

    const std::size_t dpad = (d + W - 1) / W * W;
    const std::size_t stride = dpad + W;  // per part: o[dpad], m, l, padding to keep o aligned
    Buffer& partial = scratch().partial;
    partial.resize(n_items * parts * stride);
    auto body = [&](std::size_t begin, std::size_t end) {
        Scratch& mine = scratch();
        Buffer& qbuf = mine.qbuf;
        Buffer& s = mine.s;
        qbuf.resize(dpad), s.resize(kChunk);
        for (std::size_t t = begin; t < end; ++t) {
            const std::size_t item = t / parts, part = t % parts;
            const std::size_t i = item / a.n_heads, h = item % a.n_heads;
            const std::size_t lo = P.lo[i], hi = std::max(P.lo[i], P.hi[i]);
            const std::size_t j0 = lo + (hi - lo) * part / parts, j1 = lo + (hi - lo) * (part + 1) / parts;
            float* slot = partial.data() + t * stride;
            RowState rs{-kInf, 0.0f};
            if (j0 < j1)
                rs = attend_row(P, h, i, j0, j1, slot, qbuf.data(), s.data());
            else
                std::fill_n(slot, d, 0.0f);
            slot[dpad] = rs.m;
            slot[dpad + 1] = rs.l;
        }
    };
    if (parallel)
        parallel_for(n_items * parts, body);
    else
        body(0, n_items * parts);

    // Merge the parts: rescale each to the common maximum.
    for (std::size_t item = 0; item < n_items; ++item) {
        const std::size_t i = item / a.n_heads, h = item % a.n_heads;
        const float* first = partial.data() + item * parts * stride;
        float m = -kInf;
        for (std::size_t p = 0; p < parts; ++p) m = std::max(m, first[p * stride + dpad]);
        float* o = P.out_row(h, i);
        std::fill_n(o, d, 0.0f);
        if (m == -kInf) continue;  // empty range
        float l = 0.0f;
        for (std::size_t p = 0; p < parts; ++p) {
            const float* slot = first + p * stride;
            if (slot[dpad] == -kInf) continue;
            const float w = std::exp(slot[dpad] - m);
            l += slot[dpad + 1] * w;
            for (std::size_t dd = 0; dd < d; ++dd) o[dd] += slot[dd] * w;
        }
        const float inv = 1.0f / l;
        for (std::size_t dd = 0; dd < d; ++dd) o[dd] *= inv;
    }
}

}  // namespace detail::attn_impl

// out = softmax(scale * q k^T + alibi, masked) v for every head; see AttentionArgs.
// out may share memory with q (each head's query row is read before its output
// row is written), not with k or v.
inline void attention(const AttentionArgs& a) {
#if FLAMINGO_KERNELS_DISPATCHED
    active_kernels().attention(a);
#else
    using namespace detail::attn_impl;
    if (a.n_q == 0 || a.n_heads == 0) return;
    check(a.head_dim > 0, "attention: head_dim must be positive");
    check(a.n_kv_heads >= 1 && a.n_heads % a.n_kv_heads == 0, "attention: ", a.n_heads,
          " query heads cannot be grouped over ", a.n_kv_heads, " key/value heads");
    check(a.q != nullptr && a.out != nullptr, "attention: missing query or output pointer");
    check(a.n_kv == 0 || (a.k != nullptr && a.v != nullptr), "attention: missing key or value pointer");
    check(a.n_kv <= kMaxKeys, "attention: ", a.n_kv, " keys exceed the supported ", kMaxKeys);
    check(a.q_pos0 <= kMaxKeys && a.n_q <= kMaxKeys, "attention: query positions ", a.q_pos0, " + ", a.n_q,
          " exceed the supported ", kMaxKeys);

    Scratch& sc = scratch();
    std::size_t* lo_row = grow(sc.lo, a.n_q);
    std::size_t* hi_row = grow(sc.hi, a.n_q);
    Problem P{a, a.n_heads / a.n_kv_heads, lo_row, hi_row};
    std::size_t total_keys = 0;
    for (std::size_t i = 0; i < a.n_q; ++i) {
        std::size_t lo = a.kv_begin ? a.kv_begin[i] : 0;
        std::size_t hi = a.kv_end ? a.kv_end[i] : a.n_kv;
        check(hi <= a.n_kv && lo <= hi, "attention: key range [", lo, ", ", hi, ") of query row ", i,
              " is not within [0, ", a.n_kv, ")");
        if (a.causal) hi = std::min(hi, a.q_pos0 + i + 1);
        lo = std::min(lo, hi);
        lo_row[i] = lo;
        hi_row[i] = hi;
        total_keys += hi - lo;
    }
    const bool parallel = num_threads() > 1 && total_keys * a.n_heads * a.head_dim >= (std::size_t(1) << 15);
    if (a.n_q == 1 || a.n_q < W / 2)
        run_rows(P, parallel);
    else
        run_blocks(P, parallel);
#endif
}

FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels

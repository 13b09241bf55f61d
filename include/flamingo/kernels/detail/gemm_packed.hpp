#pragma once
// Packed, register-blocked GEMM for the compute-bound shapes (M beyond a few rows).
//
// Operands are packed into slivers: A into MR rows, B into NR columns, both
// k-major, so one k step of the MR x NR micro-kernel reads NR contiguous floats
// of B and MR of A. The micro-kernel keeps the whole C tile in registers and does
// MR*NR/kV FMAs per k step from NR/kV vector loads and MR broadcasts.
//
// Two drivers share it, differing in how B is packed:
//  - gemm_panels packs one B sliver at a time over all of K (A packed once and
//    shared). Used for weights (their rows run along K, so a sliver is NR rows
//    read start to end) and for matmul when B is in cache or M is large.
//  - gemm_packed packs B in K-blocks of long row pieces (classic GotoBLAS order),
//    for matmul with few rows of A and a large row-major B coming from DRAM.
//
// gemm_panels also runs with bf16 weights multiplied in bf16 (Bf16Dot,
// AVX512-BF16): the same drivers and tiles over operands packed in k-pairs of
// bf16 (gemm_bf16.hpp) instead of floats.
#include <algorithm>
#include <cstddef>

#include "../../core/executor.hpp"
#include "gemm_bf16.hpp"
#include "gemm_simd.hpp"

#include "isa.hpp"

namespace flamingo::kernels {
FLAMINGO_KERNELS_BEGIN
namespace detail {

// Register blocking: MR x (NV vectors). 32 vector registers (AVX-512) hold an
// 8 x 48 tile (24 accumulators); 16 registers hold 6 x 16 (12 accumulators).
inline constexpr std::size_t kMR = kAvx512 ? 8 : 6;
inline constexpr std::size_t kNV = kAvx512 ? 3 : 2;
inline constexpr std::size_t kNR = kNV * kV;
// Cache blocking of gemm_packed: a B sliver (KC x NR) stays in L1 while the A
// block (MC x KC, in L2) streams past it; the packed B block (KC x NC) is shared
// in L2/L3.
inline constexpr std::size_t kKC = 256;
inline constexpr std::size_t kMC = 96;
inline constexpr std::size_t kNC = 3072;
// gemm_panels: K-block per micro-kernel call (the B sliver piece, KC x NR, is
// read from L1/L2 by every A sliver), and the size of the packed A chunk (L3).
inline constexpr std::size_t kPanelKC = 1024;
inline constexpr std::size_t kAChunkBytes = std::size_t(8) << 20;

// acc = A_sliver · B_sliver over kc; C tile = (load_c ? C : 0) + acc (+ bias).
template <std::size_t MR, std::size_t NV>
inline void micro_kernel(std::size_t kc, const float* __restrict a, const float* __restrict b, float* c,
                         std::size_t ldc, bool load_c, const float* bias) {
    // The C tile is usually far out in cache; fetch it while the products run.
    for (std::size_t i = 0; i < MR; ++i)
        for (std::size_t j = 0; j < NV * kV; j += 64 / sizeof(float)) __builtin_prefetch(c + i * ldc + j, 1);
    fbatch acc[MR][NV];
    for (std::size_t i = 0; i < MR; ++i)
        for (std::size_t j = 0; j < NV; ++j) acc[i][j] = fbatch(0.0f);
    for (std::size_t k = 0; k < kc; ++k) {
        fbatch bv[NV];
        for (std::size_t j = 0; j < NV; ++j) bv[j] = fbatch::load_aligned(b + j * kV);
        for (std::size_t i = 0; i < MR; ++i) {
            fbatch av(a[i]);
            for (std::size_t j = 0; j < NV; ++j) acc[i][j] = xsimd::fma(av, bv[j], acc[i][j]);
        }
        a += MR;
        b += NV * kV;
    }
    store_tile<MR, NV>(acc, c, ldc, load_c, bias);
}

// The tile functions take packed f32 slivers, or packed bf16 k-pairs (uint32_t,
// gemm_bf16.hpp); kc counts k steps of the packing (elements or pairs).
//
// One MR x nr tile at the edges: computed in full into a buffer, merged element-wise.
template <std::size_t NV, class T>
inline void edge_tile(std::size_t kc, const T* a, const T* b, float* c, std::size_t ldc, std::size_t mr,
                      std::size_t nr, bool load_c, const float* bias) {
    alignas(64) float tile[kMR * NV * kV];
    micro_kernel<kMR, NV>(kc, a, b, tile, NV * kV, false, nullptr);
    for (std::size_t i = 0; i < mr; ++i)
        for (std::size_t j = 0; j < nr; ++j) {
            float v = tile[i * NV * kV + j] + (bias ? bias[j] : 0.0f);
            c[i * ldc + j] = load_c ? c[i * ldc + j] + v : v;
        }
}

template <std::size_t NV, class T>
inline void tile(std::size_t kc, const T* a, const T* b, float* c, std::size_t ldc, std::size_t mr,
                 std::size_t nr, bool load_c, const float* bias) {
    if (mr == kMR && nr == NV * kV)
        micro_kernel<kMR, NV>(kc, a, b, c, ldc, load_c, bias);
    else
        edge_tile<NV>(kc, a, b, c, ldc, mr, nr, load_c, bias);
}

// Dispatches on the sliver's vector count (only the last sliver is narrower).
template <std::size_t NV = kNV, class T>
inline void tile_any(std::size_t nv, std::size_t kc, const T* a, const T* b, float* c, std::size_t ldc,
                     std::size_t mr, std::size_t nr, bool load_c, const float* bias) {
    if constexpr (NV > 1)
        if (nv < NV) return tile_any<NV - 1>(nv, kc, a, b, c, ldc, mr, nr, load_c, bias);
    tile<NV>(kc, a, b, c, ldc, mr, nr, load_c, bias);
}

// Walks the cache lines of a strided region (rows of row_bytes at a stride),
// prefetching a few at a time: spreads the next block's DRAM reads over the
// current block's arithmetic instead of stalling on them when packing.
struct LinePrefetcher {
    const char* base = nullptr;
    std::size_t row_bytes = 0, stride = 0, rows = 0;
    std::size_t row = 0, offset = 0;

    void issue(std::size_t lines) {
        for (; lines && row < rows; --lines) {
            __builtin_prefetch(base + row * stride + offset, 0, 2);
            offset += 64;
            if (offset >= row_bytes) offset = 0, ++row;
        }
    }
    std::size_t lines_left() const {
        return row >= rows ? 0 : (rows - row) * ((row_bytes + 63) / 64) - offset / 64;
    }
};

// The B operand of matmul, B[K, N] row-major. pack() fills one sliver (columns
// [n0, n0 + nr) of rows [k0, k0 + kc), width w >= nr, zero-padded); source()
// describes the memory that packing columns [n0, n1) of those rows reads.
struct BRowMajor {
    const float* p;
    std::size_t ld;
    void pack(std::size_t k0, std::size_t kc, std::size_t n0, std::size_t nr, std::size_t w, float* dst) const {
        const float* src = p + k0 * ld + n0;
        if (nr == w) {
            for (std::size_t k = 0; k < kc; ++k, src += ld, dst += w)
                for (std::size_t j = 0; j < w; j += kV) fbatch::load_unaligned(src + j).store_aligned(dst + j);
        } else {
            for (std::size_t k = 0; k < kc; ++k, src += ld, dst += w) {
                std::size_t j = 0;
                for (; j < nr; ++j) dst[j] = src[j];
                for (; j < w; ++j) dst[j] = 0.0f;
            }
        }
    }
    LinePrefetcher source(std::size_t k0, std::size_t kc, std::size_t n0, std::size_t n1) const {
        return {reinterpret_cast<const char*>(p + k0 * ld + n0), (n1 - n0) * sizeof(float), ld * sizeof(float), kc};
    }
};

// Packed operand shared by all threads of one product: the calling thread's.
inline Scratch& shared_scratch() {
    thread_local Scratch s;
    return s;
}
inline Scratch& a_scratch() {
    thread_local Scratch s;
    return s;
}

// C[M, N] (=|+=) A[M, K] · B[K, N] (+ bias[N]); requires K > 0.
//
// Per block of B (KC x NC): the threads pack it together into a shared buffer,
// then compute; both steps are split into the same P parts and part p runs on
// pool thread p (unless the caller had to take it over), so part p can prefetch,
// while computing, exactly the source memory it will pack next.
inline void gemm_packed(std::size_t M, std::size_t N, std::size_t K, const float* A, std::size_t lda,
                        const BRowMajor& B, float* C, std::size_t ldc, bool accumulate, const float* bias) {
    constexpr std::size_t MR = kMR, NR = kNR;
    const std::size_t P = std::size_t(num_threads());

    // Even K blocks (no short last block).
    const std::size_t kblocks = (K + kKC - 1) / kKC;
    const std::size_t kc_max = (K + kblocks - 1) / kblocks;

    // M blocks: a multiple of the thread count when M is large, so threads get equal shares.
    std::size_t mblocks = (M + kMC - 1) / kMC;
    if (mblocks > 1 && mblocks % P) mblocks += P - mblocks % P;
    std::size_t mc = (M + mblocks - 1) / mblocks;
    mc = (mc + MR - 1) / MR * MR;
    mblocks = (M + mc - 1) / mc;

    const std::size_t nc_max = std::min(kNC, (N + NR - 1) / NR * NR);
    float* bp = shared_scratch().get(kc_max * nc_max);
    auto slivers_of = [&](std::size_t nc) { return (nc + NR - 1) / NR; };
    auto part_range = [&](std::size_t n, std::size_t p) { return std::pair{n * p / P, n * (p + 1) / P}; };

    for (std::size_t jc = 0; jc < N; jc += nc_max) {
        const std::size_t nc = std::min(nc_max, N - jc);
        const std::size_t slivers = slivers_of(nc);
        // With few M blocks, the N range is split too so every thread has work.
        const std::size_t nchunks = std::min(slivers, mblocks >= P ? std::size_t(1) : (P + mblocks - 1) / mblocks);
        const std::size_t tasks = mblocks * nchunks;

        for (std::size_t pc = 0; pc < K; pc += kc_max) {
            const std::size_t kc = std::min(kc_max, K - pc);
            parallel_for(P, [&](std::size_t p0, std::size_t p1) {
                for (std::size_t p = p0; p < p1; ++p) {
                    auto [s0, s1] = part_range(slivers, p);
                    for (std::size_t s = s0; s < s1; ++s) {
                        std::size_t nr = std::min(NR, nc - s * NR);
                        std::size_t w = std::min(NR, (nr + kV - 1) / kV * kV);
                        B.pack(pc, kc, jc + s * NR, nr, w, bp + s * kc * NR);
                    }
                }
            });

            // The block packed after this one, and the share of its source each part packs.
            std::size_t next_pc = pc + kc, next_jc = jc;
            if (next_pc >= K) next_pc = 0, next_jc = jc + nc;
            const bool has_next = next_jc < N;
            const std::size_t next_nc = has_next ? std::min(nc_max, N - next_jc) : 0;
            const std::size_t next_kc = has_next ? std::min(kc_max, K - next_pc) : 0;

            const bool load_c = accumulate || pc > 0;
            const float* bias_blk = pc == 0 && bias ? bias + jc : nullptr;
            parallel_for(P, [&](std::size_t p0, std::size_t p1) {
                for (std::size_t p = p0; p < p1; ++p) {
                    auto [t0, t1] = part_range(tasks, p);
                    LinePrefetcher pf;
                    if (has_next) {
                        auto [s0, s1] = part_range(slivers_of(next_nc), p);
                        if (s0 < s1)
                            pf = B.source(next_pc, next_kc, next_jc + s0 * NR, next_jc + std::min(next_nc, s1 * NR));
                    }
                    std::size_t calls = 0;  // micro-kernel calls of this part, to pace the prefetches
                    for (std::size_t t = t0; t < t1; ++t) {
                        const std::size_t ib = t / nchunks, jb = t % nchunks;
                        const std::size_t mcur = std::min(mc, M - ib * mc);
                        calls += (slivers * (jb + 1) / nchunks - slivers * jb / nchunks) * ((mcur + MR - 1) / MR);
                    }
                    const std::size_t per_call = calls ? pf.lines_left() / calls + 1 : 0;

                    float* ap = a_scratch().get(mc * kc);
                    std::size_t packed_ib = ~std::size_t(0);
                    for (std::size_t t = t0; t < t1; ++t) {
                        const std::size_t ib = t / nchunks, jb = t % nchunks;
                        const std::size_t i0 = ib * mc, mcur = std::min(mc, M - i0);
                        if (ib != packed_ib) {
                            for (std::size_t ir = 0; ir < mcur; ir += MR)
                                pack_interleaved(A + (i0 + ir) * lda + pc, lda, std::min(MR, mcur - ir), MR, kc,
                                                 ap + ir * kc);
                            packed_ib = ib;
                        }
                        const std::size_t s_begin = slivers * jb / nchunks, s_end = slivers * (jb + 1) / nchunks;
                        for (std::size_t s = s_begin; s < s_end; ++s) {
                            const std::size_t n0 = s * NR, nr = std::min(NR, nc - n0);
                            const std::size_t nv = (nr + kV - 1) / kV;
                            const float* bs = bp + s * kc * NR;
                            const float* bias_s = bias_blk ? bias_blk + n0 : nullptr;
                            for (std::size_t ir = 0; ir < mcur; ir += MR) {
                                pf.issue(per_call);
                                tile_any(nv, kc, ap + ir * kc, bs, C + (i0 + ir) * ldc + jc + n0, ldc,
                                         std::min(MR, mcur - ir), nr, load_c, bias_s);
                            }
                        }
                    }
                }
            });
        }
    }
}

inline Scratch& panel_scratch() {
    thread_local Scratch s;
    return s;
}

// The arithmetic of gemm_panels: the packed element type T, how many k steps
// of T K takes, the K-block per micro-kernel call (in k steps), and how X is
// packed into MR-row slivers [k step][MR].
struct F32Dot {  // f32 products, f32 accumulation
    using T = float;
    static constexpr std::size_t kKC = kPanelKC;
    static std::size_t steps(std::size_t K) { return K; }
    static void pack_x(const float* x, std::size_t ldx, std::size_t rows, std::size_t K, T* dst) {
        pack_interleaved(x, ldx, rows, kMR, K, dst);
    }
};

#if defined(__AVX512BF16__)
struct Bf16Dot {  // products of bf16 pairs (X rounded to bf16), f32 accumulation
    using T = std::uint32_t;                         // a k-pair of bf16
    static constexpr std::size_t kKC = kPanelKC / 2;  // the same bytes of B per call as F32Dot
    static std::size_t steps(std::size_t K) { return (K + 1) / 2; }
    static void pack_x(const float* x, std::size_t ldx, std::size_t rows, std::size_t K, T* dst) {
        pack_pairs(x, ldx, rows, kMR, K, dst);
    }
};
#endif

// Sources of the B operand for gemm_panels: pack_panel() writes columns
// [n0, n0 + nr) over all of K as [k][wd] (zero-padded to wd), source() names the
// memory that packing columns [n0, n1) reads.
template <class W>
struct WeightRows {  // B = W^T, W[N, K] row-major (a weight stored [out, in])
    const W* p;
    std::size_t ld;
    void pack_panel(std::size_t n0, std::size_t nr, std::size_t wd, std::size_t K, float* dst) const {
        pack_interleaved(p + n0 * ld, ld, nr, wd, K, dst);
    }
    LinePrefetcher source(std::size_t n0, std::size_t n1, std::size_t K) const {
        return {reinterpret_cast<const char*>(p + n0 * ld), K * sizeof(W), ld * sizeof(W), n1 - n0};
    }
};

#if defined(__AVX512BF16__)
struct WeightPairs {  // B = W^T, W[N, K] bf16 row-major, packed as k-pairs [K/2][wd] for Bf16Dot
    const bf16* p;
    std::size_t ld;
    void pack_panel(std::size_t n0, std::size_t nr, std::size_t wd, std::size_t K, std::uint32_t* dst) const {
        pack_pairs(p + n0 * ld, ld, nr, wd, K, dst);
    }
    LinePrefetcher source(std::size_t n0, std::size_t n1, std::size_t K) const {
        return WeightRows<bf16>{p, ld}.source(n0, n1, K);
    }
};
#endif

struct RowMajorPanels {  // B[K, N] row-major
    const float* p;
    std::size_t ld;
    void pack_panel(std::size_t n0, std::size_t nr, std::size_t wd, std::size_t K, float* dst) const {
        BRowMajor{p, ld}.pack(0, K, n0, nr, wd, dst);
    }
    LinePrefetcher source(std::size_t n0, std::size_t n1, std::size_t K) const {
        return {reinterpret_cast<const char*>(p + n0), (n1 - n0) * sizeof(float), ld * sizeof(float), K};
    }
};

// Y[M, N] (=|+=) X[M, K] · B[K, N] (+ bias[N]); K > 0.
//
// X is packed once per chunk of rows (shared by the threads); the threads split
// the B slivers, packing each over all of K just before multiplying it and
// prefetching the next one's source meanwhile. Nothing is packed twice. For a
// weight this reads NR rows start to end, which keeps DRAM streaming: packing a
// K-block of many weight rows instead reads short pieces of thousands of rows,
// and measured several times slower.
//
// Dot is the arithmetic (F32Dot, or Bf16Dot with BSrc = WeightPairs); positions
// along K (pc, kc) count Dot's k steps, D of them.
template <class BSrc, class Dot = F32Dot>
void gemm_panels(std::size_t M, std::size_t N, std::size_t K, const float* X, std::size_t ldx, const BSrc& B,
                 float* Y, std::size_t ldy, bool accumulate, const float* bias,
                 std::size_t x_chunk_bytes = kAChunkBytes) {
    using T = typename Dot::T;
    static_assert(sizeof(T) == sizeof(float));  // the scratch buffers hold floats
    constexpr std::size_t MR = kMR, NR = kNR;
    const std::size_t D = Dot::steps(K);
    const std::size_t kblocks = (D + Dot::kKC - 1) / Dot::kKC;
    const std::size_t kc_max = (D + kblocks - 1) / kblocks;
    std::size_t mchunk = std::max<std::size_t>(1, x_chunk_bytes / (D * sizeof(T) * MR)) * MR;
    mchunk = std::min(mchunk, (M + MR - 1) / MR * MR);
    T* xp = reinterpret_cast<T*>(shared_scratch().get(mchunk * D));
    const std::size_t slivers = (N + NR - 1) / NR;

    for (std::size_t i0 = 0; i0 < M; i0 += mchunk) {
        const std::size_t mcur = std::min(mchunk, M - i0), xs = (mcur + MR - 1) / MR;
        // X sliver a holds rows i0 + a*MR.., laid out [k][MR] over the whole of K.
        parallel_for(xs, [&](std::size_t a0, std::size_t a1) {
            for (std::size_t a = a0; a < a1; ++a)
                Dot::pack_x(X + (i0 + a * MR) * ldx, ldx, std::min(MR, mcur - a * MR), K, xp + a * MR * D);
        });
        parallel_for(slivers, [&](std::size_t s0, std::size_t s1) {
            T* bp = reinterpret_cast<T*>(panel_scratch().get(D * NR));
            for (std::size_t s = s0; s < s1; ++s) {
                const std::size_t n0 = s * NR, nr = std::min(NR, N - n0);
                const std::size_t nv = (nr + kV - 1) / kV, wd = nv * kV;
                B.pack_panel(n0, nr, wd, K, bp);  // [k step][wd]
                // The next sliver's source: fetched from DRAM while this one is multiplied.
                LinePrefetcher pf;
                if (s + 1 < s1) pf = B.source(n0 + NR, std::min(N, n0 + 2 * NR), K);
                const std::size_t per_call = pf.lines_left() / (kblocks * xs) + 1;
                for (std::size_t pc = 0; pc < D; pc += kc_max) {
                    const std::size_t kc = std::min(kc_max, D - pc);
                    const bool load_c = accumulate || pc > 0;
                    const float* bias_s = pc == 0 && bias ? bias + n0 : nullptr;
                    for (std::size_t a = 0; a < xs; ++a) {
                        pf.issue(per_call);
                        tile_any(nv, kc, xp + a * MR * D + pc * MR, bp + pc * wd, Y + (i0 + a * MR) * ldy + n0, ldy,
                                 std::min(MR, mcur - a * MR), nr, load_c, bias_s);
                    }
                }
            }
        });
    }
}

}  // namespace detail
FLAMINGO_KERNELS_END
}  // namespace flamingo::kernels

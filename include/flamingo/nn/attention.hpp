#pragma once
// Multi-head self-attention, generic over the ways checkpoints store the
// query/key/value projections and over position encodings (rotary, ALiBi, or
// none); grouped-query heads; an optional KV cache for decoding.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "../core/executor.hpp"
#include "../core/expr.hpp"
#include "../kernels/attention.hpp"
#include "../kernels/rope.hpp"
#include "linear.hpp"
#include "norm.hpp"
#include "workspace.hpp"

namespace flamingo::nn {

// Keys and values of one sequence, every layer: [layers][capacity][kv_width],
// and one byte per position that a model may keep about the sequence read so
// far (IDEFICS: whether a position is cut off from the images by an end of
// document), copied along with the keys and values.
class KVCache {
public:
    KVCache() = default;
    // Keys/values are not zeroed: a position is read only after it is written,
    // and the pages of positions never written are never touched.
    KVCache(std::size_t layers, std::size_t capacity, std::size_t kv_width)
        : layers_(layers), capacity_(capacity), width_(kv_width),
          k_(std::make_unique_for_overwrite<float[]>(layers * capacity * kv_width)),
          v_(std::make_unique_for_overwrite<float[]>(layers * capacity * kv_width)), marks_(capacity) {}

    std::size_t capacity() const { return capacity_; }
    std::size_t width() const { return width_; }
    std::size_t length() const { return length_; }
    void set_length(std::size_t n) {
        check(n <= capacity_, ErrorKind::Limit, "KV cache: length ", n, " exceeds its capacity ", capacity_);
        length_ = n;
    }
    float* k(std::size_t layer, std::size_t pos) { return k_.get() + (layer * capacity_ + pos) * width_; }
    float* v(std::size_t layer, std::size_t pos) { return v_.get() + (layer * capacity_ + pos) * width_; }
    const float* k(std::size_t layer, std::size_t pos) const { return k_.get() + (layer * capacity_ + pos) * width_; }
    const float* v(std::size_t layer, std::size_t pos) const { return v_.get() + (layer * capacity_ + pos) * width_; }
    std::uint8_t mark(std::size_t pos) const { return marks_[pos]; }
    void set_mark(std::size_t pos, std::uint8_t m) {
        check(pos < capacity_, ErrorKind::Limit, "KV cache: position ", pos, " exceeds its capacity ", capacity_);
        marks_[pos] = m;
    }

    // Makes positions [from, to) equal to `src`'s (a beam taking over its parent's history).
    void copy_from(const KVCache& src, std::size_t from, std::size_t to) {
        for (std::size_t l = 0; l < layers_; ++l) {
            std::size_t off = (l * capacity_ + from) * width_, n = (to - from) * width_;
            std::memcpy(k_.get() + off, src.k_.get() + off, n * sizeof(float));
            std::memcpy(v_.get() + off, src.v_.get() + off, n * sizeof(float));
        }
        std::copy(src.marks_.begin() + std::ptrdiff_t(from), src.marks_.begin() + std::ptrdiff_t(to),
                  marks_.begin() + std::ptrdiff_t(from));
        length_ = src.length_;
    }
    // Takes over the first n positions of a cache of any capacity (the same layers and width).
    void copy_prefix(const KVCache& src, std::size_t n) {
        check(src.layers_ == layers_ && src.width_ == width_ && n <= src.length_ && n <= capacity_, ErrorKind::Shape,
              "KV cache: cannot take ", n, " positions from a cache of another shape or length");
        for (std::size_t l = 0; l < layers_; ++l) {
            std::memcpy(k_.get() + l * capacity_ * width_, src.k_.get() + l * src.capacity_ * width_,
                        n * width_ * sizeof(float));
            std::memcpy(v_.get() + l * capacity_ * width_, src.v_.get() + l * src.capacity_ * width_,
                        n * width_ * sizeof(float));
        }
        std::copy_n(src.marks_.begin(), n, marks_.begin());
        length_ = n;
    }

private:
    std::size_t layers_ = 0, capacity_ = 0, width_ = 0, length_ = 0;
    std::unique_ptr<float[]> k_, v_;
    std::vector<std::uint8_t> marks_;
};

// A run of consecutive rows of a batch that belong to one sequence: rows
// [row0, row0 + rows) hold positions [pos0, pos0 + rows). With a cache, they
// attend causally to everything the cache holds before them; without one
// (vision), to each other only.
struct Segment {
    std::size_t row0 = 0, rows = 0, pos0 = 0;
    KVCache* cache = nullptr;
};

// Runs f(segment) for every segment. A decoding step of several sequences
// (one row each) runs them across the threads, each attention on one thread:
// alone, each would be too small to split well (a few heads over a short
// cache) and would cost a parallel loop, with its wait for the slowest thread,
// per sequence and layer. Other batches (a prompt) split inside each attention.
template <class F>
void for_each_segment(std::span<const Segment> segments, F&& f) {
    const bool decoding = segments.size() > 1 && std::all_of(segments.begin(), segments.end(),
                                                             [](const Segment& s) { return s.rows == 1; });
    if (!decoding) {
        for (const Segment& seg : segments) f(seg);
        return;
    }
    parallel_for(segments.size(), [&](std::size_t b, std::size_t e) {
        for (std::size_t s = b; s < e; ++s) f(segments[s]);
    });
}

// How a checkpoint lays out the query/key/value projection.
enum class QKVLayout {
    Fused,      // one [q | k | v] projection (open_clip in_proj, MPT Wqkv)
    PerHead,    // one projection, per head [q k v] (GPT-NeoX query_key_value)
    Separate,   // q_proj, k_proj, v_proj (LLaMA)
};

struct SelfAttention {
    QKVLayout layout = QKVLayout::Fused;
    Linear qkv;         // Fused / PerHead
    Linear q, k, v;     // Separate
    Linear out;
    std::size_t heads = 0, kv_heads = 0, head_dim = 0;
    float scale = 1.0f;

    // Optional features.
    const kernels::RopeTable* rope = nullptr;  // rotary on the first rope->rot_dim() dims of each head
    std::vector<float> alibi_slopes;           // per head (MPT)
    std::optional<float> clip_qkv;             // MPT: clamp the projections
    std::optional<Norm> q_ln, k_ln;          // MPT: LayerNorm of q and k over the whole width
    bool causal = true;

    std::size_t q_width() const { return heads * head_dim; }
    std::size_t kv_width() const { return kv_heads * head_dim; }
    std::size_t qkv_width() const { return q_width() + 2 * kv_width(); }

    // Column offsets and head stride of q, k, v inside the projection buffer.
    struct Layout {
        std::size_t q, k, v, head_stride;
    };
    Layout offsets() const {
        if (layout == QKVLayout::PerHead) return {0, head_dim, 2 * head_dim, 3 * head_dim};
        return {0, q_width(), q_width() + kv_width(), head_dim};
    }

    std::size_t workspace(std::size_t M) const { return ws_floats(M, qkv_width()) + ws_floats(M, q_width()); }

    // y (+)= attention(x) over the given segments; x, y: [M, width].
    void operator()(const CAct& x, const Act& y, std::span<const Segment> segments, std::size_t layer, Workspace& ws,
                    bool accumulate = false) const {
        Workspace::Frame frame(ws);
        const std::size_t M = x.extent(0), W = qkv_width();
        auto buf = ws.rows(M, W);
        if (layout == QKVLayout::Separate) {
            q(x, columns(buf, 0, q_width()));
            k(x, columns(buf, q_width(), kv_width()));
            v(x, columns(buf, q_width() + kv_width(), kv_width()));
        } else {
            qkv(x, buf);
        }
        if (clip_qkv) {
            const float c = *clip_qkv;
            buf.assign(minimum(maximum(buf, -c), c));
        }
        if (q_ln) (*q_ln)(columns(buf, 0, q_width()), columns(buf, 0, q_width()));
        if (k_ln) (*k_ln)(columns(buf, q_width(), kv_width()), columns(buf, q_width(), kv_width()));

        const Layout c = offsets();
        auto o = ws.rows(M, q_width());
        for_each_segment(segments, [&](const Segment& seg) {
            float* rows = buf.data() + seg.row0 * W;
            if (rope) {
                kernels::apply_rope(rows + c.q, seg.rows, W, heads, c.head_stride, rope->rot_dim(), seg.pos0, *rope);
                kernels::apply_rope(rows + c.k, seg.rows, W, kv_heads, c.head_stride, rope->rot_dim(), seg.pos0, *rope);
            }
            kernels::AttentionArgs a;
            a.n_q = seg.rows;
            a.n_heads = heads, a.n_kv_heads = kv_heads, a.head_dim = head_dim;
            a.q = rows + c.q, a.q_row_stride = W, a.q_head_stride = c.head_stride;
            a.out = o.data() + seg.row0 * q_width(), a.out_row_stride = q_width(), a.out_head_stride = head_dim;
            a.scale = scale;
            a.alibi_slopes = alibi_slopes.empty() ? nullptr : alibi_slopes.data();
            if (seg.cache) {
                KVCache& kv = *seg.cache;
                check(seg.pos0 + seg.rows <= kv.capacity(), ErrorKind::Limit, "sequence of ", seg.pos0 + seg.rows,
                      " tokens exceeds the KV cache capacity ", kv.capacity());
                for (std::size_t r = 0; r < seg.rows; ++r) {  // gather heads into the cache's [kv_heads * head_dim] rows
                    float* kd = kv.k(layer, seg.pos0 + r);
                    float* vd = kv.v(layer, seg.pos0 + r);
                    const float* src = rows + r * W;
                    for (std::size_t h = 0; h < kv_heads; ++h) {
                        std::memcpy(kd + h * head_dim, src + c.k + h * c.head_stride, head_dim * sizeof(float));
                        std::memcpy(vd + h * head_dim, src + c.v + h * c.head_stride, head_dim * sizeof(float));
                    }
                }
                a.n_kv = seg.pos0 + seg.rows;
                a.k = kv.k(layer, 0), a.k_row_stride = kv_width(), a.k_head_stride = head_dim;
                a.v = kv.v(layer, 0), a.v_row_stride = kv_width(), a.v_head_stride = head_dim;
                a.causal = causal, a.q_pos0 = seg.pos0;
            } else {
                a.n_kv = seg.rows;
                a.k = rows + c.k, a.k_row_stride = W, a.k_head_stride = c.head_stride;
                a.v = rows + c.v, a.v_row_stride = W, a.v_head_stride = c.head_stride;
                a.causal = causal, a.q_pos0 = 0;
            }
            kernels::attention(a);
        });
        out(o, y, accumulate);
    }
};

}  // namespace flamingo::nn

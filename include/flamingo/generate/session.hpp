#pragma once
// A decoding session: one request's state on a shared, immutable model. The
// prompt's visual tokens (encoded once), their cross-attention keys/values
// (projected once per prompt), one KV cache per sequence (beam or candidate),
// the working memory and the logits buffer. Buffers are sized when the session
// is prepared, so a decoding step allocates nothing. A session is used by one
// thread at a time; the model it runs on may be shared by many sessions.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../model/flamingo.hpp"

namespace flamingo::generate {

class Session {
public:
    explicit Session(const model::Flamingo& m) : model_(m) { clear_media(); }

    const model::Flamingo& model() const { return model_; }
    std::size_t vocab_size() const { return model_.vocab_size(); }
    std::size_t num_media() const { return media_.n_media; }

    // Media as normalised pixels [n_media, frames, 3, S, S]: encoded once.
    void set_media(const float* pixels, std::size_t n_media, std::size_t frames) {
        set_visual(encode(pixels, n_media, frames), n_media);
    }
    // Visual tokens [n_media * num_latents, width] of media given as pixels,
    // without making them the session's (e.g. to cache them first).
    Tensor<float, dextents<2>> encode(const float* pixels, std::size_t n_media, std::size_t frames) {
        check(frames >= 1, "frames must be at least 1");
        const auto t0 = clock::now();
        Tensor<float, dextents<2>> visual(n_media * model_.num_latents(), model_.vision_width());
        ws_.reserve(model_.encode_workspace(n_media, frames));
        model_.encode(pixels, n_media, frames, visual.view(), ws_);
        stats_.media_seconds += seconds_since(t0), stats_.media_encoded += n_media;
        return visual;
    }
    // Already encoded visual tokens [n_media * num_latents, width] (e.g. cached from an earlier request).
    void set_visual(Tensor<float, dextents<2>> visual, std::size_t n_media) {
        const auto t0 = clock::now();
        check(visual.extent(0) == n_media * model_.num_latents() && visual.extent(1) == model_.vision_width(),
              ErrorKind::Shape, "visual tokens: expected [", n_media * model_.num_latents(), ", ",
              model_.vision_width(), "] for ", n_media, " media, got ", shape_string(visual.extents()));
        visual_ = std::move(visual);
        model_.project_media(visual_.view(), n_media, media_);
        ++media_version_;
        stats_.media_seconds += seconds_since(t0);
    }
    // CLIP embeddings [n, embed_dim] of n normalised images [n, 3, S, S].
    Tensor<float, dextents<2>> embed(const float* pixels, std::size_t n) {
        const auto t0 = clock::now();
        Tensor<float, dextents<2>> out(n, model_.embed_dim());
        ws_.reserve(model_.embed_workspace(n));
        model_.embed(pixels, n, out.view(), ws_);
        stats_.media_seconds += seconds_since(t0);
        return out;
    }

    // More media after the current ones, encoded alone; the media already there
    // keep their visual tokens and keys/values (a conversation adding images turn by turn).
    void add_media(const float* pixels, std::size_t n_new, std::size_t frames) {
        check(frames >= 1, "frames must be at least 1");
        if (n_new == 0) return;
        add_visual(encode(pixels, n_new, frames), n_new);
    }
    // The same with visual tokens [n_new * num_latents, width] already encoded.
    void add_visual(const Tensor<float, dextents<2>>& fresh, std::size_t n_new) {
        if (n_new == 0) return;
        const auto t0 = clock::now();
        const std::size_t L = model_.num_latents(), W = model_.vision_width(), n0 = media_.n_media;
        check(fresh.extent(0) == n_new * L && fresh.extent(1) == W, ErrorKind::Shape, "visual tokens: expected [",
              n_new * L, ", ", W, "] for ", n_new, " media, got ", shape_string(fresh.extents()));
        model::MediaKV kv;
        model_.project_media(fresh.view(), n_new, kv);
        Tensor<float, dextents<2>> visual((n0 + n_new) * L, W);
        std::copy_n(visual_.data(), n0 * L * W, visual.data());
        std::copy_n(fresh.data(), n_new * L * W, visual.data() + n0 * L * W);
        visual_ = std::move(visual);
        for (std::size_t l = 0; l < media_.kv.size(); ++l)
            media_.kv[l].insert(media_.kv[l].end(), kv.kv[l].begin(), kv.kv[l].end());
        media_.n_media = n0 + n_new;
        ++media_version_;
        stats_.media_seconds += seconds_since(t0);
    }
    // Keeps the first n media and drops the rest.
    void keep_media(std::size_t n) {
        if (n >= media_.n_media) return;
        const std::size_t L = model_.num_latents(), W = model_.vision_width();
        Tensor<float, dextents<2>> visual(n * L, W);
        std::copy_n(visual_.data(), n * L * W, visual.data());
        visual_ = std::move(visual);
        for (auto& kv : media_.kv)
            if (!kv.empty()) kv.resize(kv.size() / media_.n_media * n);
        media_.n_media = n;
        ++media_version_;
    }

    void clear_media() { set_visual(Tensor<float, dextents<2>>(std::size_t(0), model_.vision_width()), 0); }
    // The visual tokens [n_media * num_latents, width] of the current media.
    const Tensor<float, dextents<2>>& visual() const { return visual_; }
    // Their keys/values for cross-attention (e.g. for a batch of several sessions' rows).
    const model::MediaKV& media_kv() const { return media_; }
    // Changes whenever the media do: whoever keeps facts about them (a prefix
    // cache's keys) can tell whether they still hold.
    std::uint64_t media_version() const { return media_version_; }

    // Sizes the caches and buffers: `sequences` caches of `capacity` positions,
    // steps of up to `rows` tokens. The first `keep` positions of cache 0 are
    // kept (a conversation's history); the other caches start empty.
    void prepare(std::size_t sequences, std::size_t capacity, std::size_t rows, std::size_t keep = 0) {
        check(capacity <= model_.max_positions(), ErrorKind::Limit, "a sequence of ", capacity,
              " tokens exceeds the model's context of ", model_.max_positions(), " positions");
        check(keep == 0 || (!caches_.empty() && keep <= caches_[0].length() && keep <= capacity && sequences >= 1),
              "session: cannot keep ", keep, " positions of its cache");
        if (caches_.size() != sequences || (sequences && caches_[0].capacity() < capacity)) {
            std::vector<nn::KVCache> old;
            if (keep) {
                old.push_back(std::move(caches_[0]));
                // kept histories grow: leave room for a few more turns
                capacity = std::max(capacity, std::min(model_.max_positions(), 2 * old[0].capacity()));
            }
            // in steps of positions, so that a request a little longer than the
            // last finds room; room never written costs no memory (KVCache)
            capacity = std::min(model_.max_positions(), (capacity + kCapacityStep - 1) / kCapacityStep * kCapacityStep);
            caches_.clear();
            for (std::size_t i = 0; i < sequences; ++i)
                caches_.emplace_back(model_.num_layers(), capacity, model_.kv_width());
            if (keep) caches_[0].copy_prefix(old[0], keep);
        }
        if (!caches_.empty()) caches_[0].set_length(keep);
        rows = std::max(rows, sequences);
        tokens_.resize(rows), text_time_.resize(rows), rows_.resize(rows), segments_.resize(sequences);
        media_ptrs_.assign(sequences, &media_);
        logits_.resize(rows * vocab_size());
        ws_.reserve(model_.forward_workspace(rows, rows));
    }

    nn::KVCache& cache(std::size_t seq) { return caches_.at(seq); }
    const nn::KVCache& cache(std::size_t seq) const { return caches_.at(seq); }
    std::size_t num_caches() const { return caches_.size(); }

    // Time spent reading tokens given at once (prompts, candidates) and in
    // one-token decoding steps, for --verbose.
    struct Stats {
        double read_seconds = 0, step_seconds = 0, media_seconds = 0;
        std::size_t read_tokens = 0, steps = 0;
        std::size_t media_encoded = 0;  // media run through the vision encoder
        // Taken from a prefix cache instead of computed: prompt positions
        // (their keys/values) and media (their visual tokens).
        std::size_t reused_tokens = 0, media_reused = 0;
    };
    Stats& mutable_stats() { return stats_; }
    const Stats& stats() const { return stats_; }
    void reset_stats() { stats_ = {}; }
    // Allocations of working memory so far (constant while decoding), and how
    // many of them a module's declared needs did not foresee (zero).
    std::size_t workspace_grows() const { return ws_.grows(); }
    std::size_t workspace_overflows() const { return ws_.overflows(); }

    // Runs `ids` as positions [pos0, pos0 + n) of sequence `seq`. text_time
    // per token (see model::Batch). Returns logits of every row when
    // all_logits, else of the last row only.
    std::span<const float> run(std::size_t seq, std::span<const std::int32_t> ids, std::span<const std::uint32_t> tt,
                               std::size_t pos0, bool all_logits) {
        const std::size_t n = ids.size();
        check(n > 0, "nothing to run");
        check(n <= tokens_.size() && seq < caches_.size(), "session not prepared for ", n, " tokens");
        nn::Segment s{0, n, pos0, &caches_[seq]};
        for (std::size_t i = 0; i < n; ++i) rows_[i] = i;
        std::span<const std::size_t> rows = all_logits ? std::span<const std::size_t>(rows_.data(), n)
                                                       : std::span<const std::size_t>(&rows_[n - 1], 1);
        const auto t0 = clock::now();
        model_.forward({ids, tt, {&s, 1}, {media_ptrs_.data(), 1}}, rows,
                       nn::act(logits_.data(), rows.size(), vocab_size()), ws_);
        stats_.read_seconds += seconds_since(t0), stats_.read_tokens += n;
        caches_[seq].set_length(pos0 + n);
        return {logits_.data(), rows.size() * vocab_size()};
    }

    // One new token for each listed sequence, at its current length; all attend
    // to the prompt's media as generated tokens do. Returns logits [n, vocab].
    std::span<const float> step(std::span<const std::int32_t> next, std::span<const std::size_t> seqs) {
        const std::size_t n = next.size();
        check(n == seqs.size() && n <= tokens_.size() && n <= segments_.size(), "session not prepared for ", n,
              " sequences");
        for (std::size_t i = 0; i < n; ++i) {
            tokens_[i] = next[i];
            text_time_[i] = std::uint32_t(media_.n_media);
            rows_[i] = i;
            segments_[i] = {i, 1, caches_[seqs[i]].length(), &caches_[seqs[i]]};
        }
        const auto t0 = clock::now();
        model_.forward({{tokens_.data(), n}, {text_time_.data(), n}, {segments_.data(), n}, {media_ptrs_.data(), n}},
                       {rows_.data(), n}, nn::act(logits_.data(), n, vocab_size()), ws_);
        stats_.step_seconds += seconds_since(t0), ++stats_.steps;
        for (std::size_t i = 0; i < n; ++i) caches_[seqs[i]].set_length(segments_[i].pos0 + 1);
        return {logits_.data(), n * vocab_size()};
    }

    // OpenFlamingo's text time of a prompt: <image> tokens at or before each
    // position; the count must match the media given.
    std::vector<std::uint32_t> prompt_text_time(std::span<const std::int32_t> ids) const {
        std::vector<std::uint32_t> tt(ids.size());
        std::uint32_t n = 0;
        for (std::size_t i = 0; i < ids.size(); ++i) tt[i] = n += ids[i] == model_.config().media_token_id;
        check(n == media_.n_media, "the prompt has ", n, " <image> token", n == 1 ? "" : "s", " but ",
              media_.n_media, " image", media_.n_media == 1 ? " was" : "s were", " given");
        return tt;
    }

private:
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t kCapacityStep = 128;
    static double seconds_since(clock::time_point t0) {
        return std::chrono::duration<double>(clock::now() - t0).count();
    }

    const model::Flamingo& model_;
    Stats stats_;
    std::uint64_t media_version_ = 0;
    nn::Workspace ws_;
    Tensor<float, dextents<2>> visual_;
    model::MediaKV media_;
    std::vector<const model::MediaKV*> media_ptrs_;
    std::vector<nn::KVCache> caches_;
    std::vector<std::int32_t> tokens_;
    std::vector<std::uint32_t> text_time_;
    std::vector<std::size_t> rows_;
    std::vector<nn::Segment> segments_;
    std::vector<float> logits_;
};

}  // namespace flamingo::generate

#pragma once
// An inference session: the prompt's visual tokens (encoded once), their
// cross-attention keys/values (projected once per prompt), and one KV cache
// per sequence (beam or candidate). Buffers are sized when the session is
// prepared, so a decoding step allocates nothing.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../model/flamingo.hpp"

namespace flamingo::generate {

class Session {
public:
    explicit Session(model::Model& m) : model_(m) { model_.project_media(nullptr, 0, media_); }

    model::Model& model() { return model_; }
    std::size_t vocab_size() const { return model_.vocab_size(); }
    std::size_t num_media() const { return media_.n_media; }

    // Media as normalised pixels [n_media, frames, 3, S, S]: encoded once.
    void set_media(const float* pixels, std::size_t n_media, std::size_t frames) {
        const auto t0 = clock::now();
        auto visual = model_.encode_media(pixels, n_media, frames);
        stats_.media_seconds += seconds_since(t0);
        set_visual(std::move(visual), n_media);
    }
    // Already encoded visual tokens [n_media, num_latents, width] (e.g. cached from an earlier run).
    void set_visual(std::vector<float> visual, std::size_t n_media) {
        const auto t0 = clock::now();
        check(visual.size() == n_media * model_.num_latents() * model_.vision_width(), "visual tokens: expected ",
              n_media, " x ", model_.num_latents(), " x ", model_.vision_width(), " values, got ", visual.size());
        visual_ = std::move(visual);
        model_.project_media(visual_.data(), n_media, media_);
        stats_.media_seconds += seconds_since(t0);
    }
    const std::vector<float>& visual() const { return visual_; }

    // Sizes the caches and buffers: `sequences` caches of `capacity` positions,
    // steps of up to `rows` tokens.
    void prepare(std::size_t sequences, std::size_t capacity, std::size_t rows) {
        check(capacity <= model_.max_positions(), "a sequence of ", capacity,
              " tokens exceeds the model's context of ", model_.max_positions(), " positions");
        if (caches_.size() != sequences || (sequences && caches_[0].capacity() < capacity)) {
            caches_.clear();
            for (std::size_t i = 0; i < sequences; ++i)
                caches_.emplace_back(model_.num_layers(), capacity, model_.kv_width());
        }
        rows = std::max(rows, sequences);
        tokens_.resize(rows), text_time_.resize(rows), rows_.resize(rows), segments_.resize(sequences);
        logits_.resize(rows * vocab_size());
    }

    nn::KVCache& cache(std::size_t seq) { return caches_.at(seq); }

    // Time spent reading tokens given at once (prompts, candidates) and in
    // one-token decoding steps, for --verbose.
    struct Stats {
        double read_seconds = 0, step_seconds = 0, media_seconds = 0;
        std::size_t read_tokens = 0, steps = 0;
    };
    const Stats& stats() const { return stats_; }
    void reset_stats() { stats_ = {}; }

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
        model_.forward({ids, tt, {&s, 1}}, media_, rows, logits_.data());
        stats_.read_seconds += seconds_since(t0), stats_.read_tokens += n;
        caches_[seq].set_length(pos0 + n);
        return {logits_.data(), rows.size() * vocab_size()};
    }

    // One new token for each listed sequence, at its current length; all attend
    // to the prompt's media as generated tokens do. Returns logits [n, vocab].
    std::span<const float> step(std::span<const std::int32_t> next, std::span<const std::size_t> seqs) {
        const std::size_t n = next.size();
        check(n == seqs.size() && n <= tokens_.size(), "session not prepared for ", n, " sequences");
        for (std::size_t i = 0; i < n; ++i) {
            tokens_[i] = next[i];
            text_time_[i] = std::uint32_t(media_.n_media);
            rows_[i] = i;
            segments_[i] = {i, 1, caches_[seqs[i]].length(), &caches_[seqs[i]]};
        }
        const auto t0 = clock::now();
        model_.forward({{tokens_.data(), n}, {text_time_.data(), n}, {segments_.data(), n}}, media_,
                       {rows_.data(), n}, logits_.data());
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
    static double seconds_since(clock::time_point t0) {
        return std::chrono::duration<double>(clock::now() - t0).count();
    }

    model::Model& model_;
    Stats stats_;
    std::vector<float> visual_;
    model::MediaContext media_;
    std::vector<nn::KVCache> caches_;
    std::vector<std::int32_t> tokens_;
    std::vector<std::uint32_t> text_time_;
    std::vector<std::size_t> rows_;
    std::vector<nn::Segment> segments_;
    std::vector<float> logits_;
};

}  // namespace flamingo::generate

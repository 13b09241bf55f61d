#pragma once
// The library's front door: load a model once, then ask it from any number of
// contexts, on any number of threads.
//
//   auto model = flamingo::Model::load("models/shapes-flamingo");  // immutable, shared
//   flamingo::Context ctx(model);                                  // one request's state
//   ctx.set_media({"a.png", "b.png"});
//   auto g = ctx.generate("<image>A red circle.<|endofchunk|><image>");
//   std::cout << g.text;
//
// A Model holds the weights (views into the memory-mapped files), the config,
// the tokenizer and the image preprocessing; all of it is const. A Context
// holds what one request needs: its media and their keys/values, KV caches,
// working memory, statistics and an executor (the threads its loops run on).
// A context is used by one thread at a time; contexts share their model.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/executor.hpp"
#include "core/tensor.hpp"
#include "generate/batcher.hpp"
#include "generate/generate.hpp"
#include "generate/prefix_cache.hpp"
#include "io/image.hpp"
#include "io/image_preprocess.hpp"
#include "model/flamingo.hpp"
#include "text/tokenizer.hpp"

namespace flamingo {

using model::WeightType;
using generate::PrefixCache;

struct LoadOptions {
    // The format the large matrices are held and multiplied in; unset: as
    // stored (a quantised directory's q8/q4, else f32).
    std::optional<WeightType> weights;
};

// Media as normalised pixels [n, frames, 3, S, S].
using Pixels = Tensor<float, dextents<5>>;

class Model {
public:
    static std::shared_ptr<const Model> load(const std::filesystem::path& dir, const LoadOptions& opt = {}) {
        return std::shared_ptr<const Model>(new Model(dir, opt));
    }

    const model::Config& config() const { return net_->config(); }
    const model::Flamingo& network() const { return *net_; }
    const Tokenizer& tokenizer() const { return tokenizer_; }
    const std::filesystem::path& directory() const { return dir_; }
    const ImageLimits& image_limits() const { return limits_; }

    std::size_t vocab_size() const { return net_->vocab_size(); }
    std::size_t max_positions() const { return net_->max_positions(); }
    std::size_t embed_dim() const { return net_->embed_dim(); }
    std::size_t image_size() const { return net_->image_size(); }

    // A prompt's token ids, as Hugging Face's tokenizer(text) gives them; for
    // IDEFICS, as its processor gives them for the text with an image at each
    // <image> (model::idefics::prompt_text: the fake tokens around images).
    std::vector<std::int32_t> tokenize(std::string_view prompt) const {
        check(!prompt.empty(), "the prompt is empty");
        std::vector<std::int32_t> ids = config().arch == model::Arch::Idefics
                                            ? tokenizer_.encode(model::idefics::prompt_text(prompt))
                                            : tokenizer_.encode(prompt);
        check(!ids.empty(), "the prompt encodes to no tokens");
        check(ids.size() <= max_positions(), ErrorKind::Limit, "the prompt has ", ids.size(),
              " tokens, more than the model's context of ", max_positions(), " positions");
        return ids;
    }
    // Text of generated ids.
    std::string decode(std::span<const std::int32_t> ids) const { return tokenizer_.decode(ids); }

    // Media files to pixels [n, frames, 3, S, S]: each an image, an animated
    // GIF or a directory of frame images, as io::load_media_frames reads them
    // (sampled evenly to `frames`; fewer frames than asked is an error).
    Pixels load_media(const std::vector<std::string>& files, std::size_t frames = 1) const {
        check(frames >= 1, "frames must be at least 1");
        std::vector<std::vector<Image>> media;
        media.reserve(files.size());
        for (const std::string& f : files) media.push_back(frames_of(f, frames));
        return preprocess(media);
    }
    // Decoded images to pixels: media[i] holds medium i's frames (all media the same count).
    Pixels preprocess(const std::vector<std::vector<Image>>& media) const {
        const std::size_t n = media.size(), frames = n ? media[0].size() : 1, S = image_size();
        Pixels px(n, frames, std::size_t(3), S, S);
        float* out = px.data();
        for (const auto& m : media) {
            check(m.size() == frames, "every medium needs the same number of frames: ", m.size(), " and ", frames);
            for (const Image& im : m) {
                std::vector<float> p = clip_preprocess(im, preprocess_);
                out = std::copy(p.begin(), p.end(), out);
            }
        }
        return px;
    }

private:
    Model(const std::filesystem::path& dir, const LoadOptions& opt)
        : dir_(dir), net_(model::load_flamingo(dir, opt.weights)), tokenizer_(Tokenizer::load(dir / "tokenizer.json")) {
        const auto& c = net_->config();
        preprocess_.center_crop = !c.vision.hf_clip;
        preprocess_.image_size = c.vision.image_size;
        preprocess_.mean = c.vision.image_mean;
        preprocess_.std = c.vision.image_std;
        const std::int32_t V = std::int32_t(net_->vocab_size());
        const std::string cfg = (dir / "config.json").string(), tok = (dir / "tokenizer.json").string();
        check(c.media_token_id < V, ErrorKind::Config, cfg, ": media_token_id ", c.media_token_id,
              " is outside the vocabulary of ", V, " tokens");
        check(c.eoc_token_id < V, ErrorKind::Config, cfg, ": eoc_token_id ", c.eoc_token_id,
              " is outside the vocabulary of ", V, " tokens");
        // (an IDEFICS tokenizer may know tokens the model has no row for; the decoder refuses them in a prompt)
        check(c.arch == model::Arch::Idefics || tokenizer_.max_id() < V, ErrorKind::Shape, tok, ": token id ",
              tokenizer_.max_id(), " is outside the model's vocabulary of ", V, " tokens (the token embedding has ", V,
              " rows)");
    }

    std::vector<Image> frames_of(const std::string& file, std::size_t frames) const {
        return load_media_frames(file, frames, limits_);
    }

    std::filesystem::path dir_;
    std::unique_ptr<model::Flamingo> net_;
    Tokenizer tokenizer_;
    ClipPreprocess preprocess_;
    ImageLimits limits_;
};

struct ContextOptions {
    int threads = 0;                     // threads of the context's own executor; 0: all hardware threads
    std::shared_ptr<Executor> executor;  // or an executor shared with other contexts
};

struct Generation {
    std::string text;                  // the continuation, without the stop token
    std::vector<std::int32_t> tokens;  // generated ids, the stop token included when generation ended on it
    bool stopped = false;              // ended on the stop token
    double score = 0;                  // beam search: the best hypothesis's score
};

struct Scored {
    std::string candidate;
    generate::CandidateScore score;
};

class Context {
public:
    // prefix_cache: prompt prefixes and encoded media shared with the model's
    // other contexts (see generate/prefix_cache.hpp); null: none.
    explicit Context(std::shared_ptr<const Model> model, const ContextOptions& opt = {},
                     std::shared_ptr<PrefixCache> prefix_cache = nullptr)
        : model_(std::move(model)), session_(check_model(model_)->network()) {
        set_executor(opt.executor ? opt.executor
                                  : std::make_shared<Executor>(opt.threads > 0 ? opt.threads
                                                                               : Executor::hardware_threads()));
        set_prefix_cache(std::move(prefix_cache));
    }

    const Model& model() const { return *model_; }
    const std::shared_ptr<const Model>& shared_model() const { return model_; }
    // The threads this context's work runs on; replace it between calls, never during one.
    Executor& executor() { return *executor_; }
    const std::shared_ptr<Executor>& shared_executor() const { return executor_; }
    void set_executor(std::shared_ptr<Executor> ex) {
        check(ex != nullptr, "a context needs an executor");
        executor_ = std::move(ex);
    }
    generate::Session& session() { return session_; }
    // The prefix cache generate() and score() use (null: none); the cache
    // serves this context's model only. Set it between calls, never during one.
    void set_prefix_cache(std::shared_ptr<PrefixCache> cache) {
        if (cache) cache->bind(model_->network());
        cache_ = std::move(cache);
        keys_version_ = 0;  // the media's keys are computed when media are next given
    }
    const std::shared_ptr<PrefixCache>& prefix_cache() const { return cache_; }
    // A decoding loop shared with other contexts of the model (see
    // generate/batcher.hpp): generate() and a conversation's replies (greedy,
    // sampling, beam search) step there, together with the other contexts'
    // requests; null: alone. Set it between calls, never during one.
    void set_batcher(std::shared_ptr<generate::Batcher> batcher) {
        check(!batcher || &batcher->model() == &model_->network(), "the batcher runs another model");
        batcher_ = std::move(batcher);
    }
    const std::shared_ptr<generate::Batcher>& batcher() const { return batcher_; }
    // generate::generate() on this context's session (its cache already holds
    // the prompt's first `cached` positions), through the batcher if one is set.
    generate::GenerateResult generate_tokens(std::span<const std::int32_t> ids, const generate::GenerateOptions& opt,
                                             std::size_t cached = 0) {
        Executor::Scope use(*executor_);
        return batcher_ ? batcher_->generate(session_, ids, opt, cached) : generate::generate(session_, ids, opt, cached);
    }
    const generate::Session::Stats& stats() const { return session_.stats(); }

    // Media for the prompts that follow, encoded once: files (see Model::load_media) or pixels.
    void set_media(const std::vector<std::string>& files, std::size_t frames = 1) {
        set_media(model_->load_media(files, frames));
    }
    void set_media(const Pixels& px) {
        Executor::Scope use(*executor_);
        if (!cache_) return session_.set_media(px.data(), px.extent(0), px.extent(1));
        const std::size_t S = model_->image_size();
        check(px.extent(2) == 3 && px.extent(3) == S && px.extent(4) == S, ErrorKind::Shape, "pixels: expected [n, frames, 3, ",
              S, ", ", S, "], got ", shape_string(px.extents()));
        auto keys = media_keys(px.data(), px.extent(0), px.extent(1));
        session_.set_visual(encode_media(px.data(), px.extent(0), px.extent(1), keys), px.extent(0));
        media_keys_ = std::move(keys), keys_version_ = session_.media_version();
    }
    // With a prefix cache: the digests by which it knows media given as pixels [n, frames, 3, S, S].
    std::vector<generate::Digest> media_keys(const float* px, std::size_t n, std::size_t frames) const {
        check(cache_ != nullptr, "media keys need a prefix cache");
        // A Perceiver with media-time embeddings gives a medium's tokens by its
        // place too: then the place is part of the key.
        const bool by_place = model_->config().perceiver.max_num_media.has_value();
        const std::size_t per = frames * 3 * model_->image_size() * model_->image_size();
        std::vector<generate::Digest> keys(n);
        for (std::size_t i = 0; i < n; ++i)
            keys[i] = cache_->digest(px + i * per, per * sizeof(float), kPixels + frames * kPlaces + (by_place ? i + 1 : 0));
        return keys;
    }
    // With a prefix cache: visual tokens [n * num_latents, width] of media
    // given as pixels and their keys; those the cache holds come from it, the
    // others are encoded together and given to it.
    PrefixCache::Visual encode_media(const float* px, std::size_t n, std::size_t frames,
                                     std::span<const generate::Digest> keys) {
        check(cache_ != nullptr && keys.size() == n, "encode_media needs a prefix cache and a key per medium");
        const std::size_t per = frames * 3 * model_->image_size() * model_->image_size();
        const std::size_t L = model_->network().num_latents(), W = model_->network().vision_width();
        std::vector<std::shared_ptr<const PrefixCache::Visual>> known(n);
        std::vector<std::size_t> missing;
        for (std::size_t i = 0; i < n; ++i)
            if (!(known[i] = cache_->find_media(keys[i]))) missing.push_back(i);
        // with media-time embeddings a subset would be encoded at other places: all or none
        if (model_->config().perceiver.max_num_media && !missing.empty()) {
            missing.resize(n);
            std::iota(missing.begin(), missing.end(), std::size_t(0));
            std::fill(known.begin(), known.end(), nullptr);
        }
        PrefixCache::Visual fresh(missing.size() * L, W);
        if (missing.size() == n) {
            fresh = session_.encode(px, n, frames);
        } else if (!missing.empty()) {
            std::vector<float> pixels(missing.size() * per);
            for (std::size_t j = 0; j < missing.size(); ++j)
                std::copy_n(px + missing[j] * per, per, pixels.data() + j * per);
            fresh = session_.encode(pixels.data(), missing.size(), frames);
        }
        PrefixCache::Visual visual(n * L, W);
        for (std::size_t i = 0, j = 0; i < n; ++i) {
            if (known[i]) {
                std::copy_n(known[i]->data(), L * W, visual.data() + i * L * W);
                continue;
            }
            PrefixCache::Visual one(L, W);
            std::copy_n(fresh.data() + j++ * L * W, L * W, one.data());
            std::copy_n(one.data(), L * W, visual.data() + i * L * W);
            cache_->put_media(keys[i], std::move(one));
        }
        session_.mutable_stats().media_reused += n - missing.size();
        return visual;
    }
    // Already encoded visual tokens [n_media * num_latents, width] (see visual()).
    void set_visual(Tensor<float, dextents<2>> visual, std::size_t n_media) {
        Executor::Scope use(*executor_);
        std::vector<generate::Digest> keys;
        if (cache_ && n_media && visual.size() % n_media == 0) {
            const std::size_t per = visual.size() / n_media;
            for (std::size_t i = 0; i < n_media; ++i)
                keys.push_back(cache_->digest(visual.data() + i * per, per * sizeof(float), kVisual));
        }
        session_.set_visual(std::move(visual), n_media);
        media_keys_ = std::move(keys), keys_version_ = session_.media_version();
    }
    const Tensor<float, dextents<2>>& visual() const { return session_.visual(); }
    std::size_t num_media() const { return session_.num_media(); }

    Generation generate(std::string_view prompt, const generate::GenerateOptions& opt = {}) {
        const auto ids = model_->tokenize(prompt);
        Executor::Scope use(*executor_);
        std::size_t cached = 0;
        const bool caching = caches_prompts();
        if (caching && opt.num_beams >= 1 && ids.size() + opt.max_new_tokens <= model_->max_positions())
            cached = cache_->restore(session_, ids, media_keys_, opt.num_beams, ids.size() + opt.max_new_tokens);
        const auto r = generate_tokens(ids, opt, cached);
        if (caching) cache_->store(session_, ids, media_keys_);
        Generation g;
        g.tokens = r.tokens;
        g.stopped = r.stopped, g.score = r.score;
        std::span<const std::int32_t> shown(r.tokens);
        if (r.stopped) shown = shown.first(shown.size() - 1);
        g.text = model_->decode(shown);
        return g;
    }
    Generation generate(std::string_view prompt, const std::vector<std::string>& images,
                        const generate::GenerateOptions& opt = {}) {
        set_media(images);
        return generate(prompt, opt);
    }

    // Log-likelihood of each candidate continuation: candidates are tokenized
    // alone, without special tokens, and appended to the prompt.
    std::vector<Scored> score(std::string_view prompt, const std::vector<std::string>& candidates) {
        const auto ids = model_->tokenize(prompt);
        check(!candidates.empty(), "score needs at least one candidate");
        std::vector<std::vector<std::int32_t>> cand;
        for (std::size_t i = 0; i < candidates.size(); ++i) {
            check(!candidates[i].empty(), "candidate ", i + 1, " is empty");
            cand.push_back(model_->tokenizer().encode(candidates[i], false));
            check(!cand.back().empty(), "candidate ", i + 1, " (\"", candidates[i], "\") encodes to no tokens");
        }
        Executor::Scope use(*executor_);
        std::size_t cached = 0, longest = 0;
        for (const auto& c : cand) longest = std::max(longest, c.size());
        const bool caching = caches_prompts();
        if (caching && ids.size() + longest <= model_->max_positions())
            cached = cache_->restore(session_, ids, media_keys_, 1, ids.size() + longest);
        auto s = generate::score(session_, ids, cand, cached);
        if (caching) cache_->store(session_, ids, media_keys_);
        std::vector<Scored> out;
        for (std::size_t i = 0; i < s.size(); ++i) out.push_back({candidates[i], std::move(s[i])});
        return out;
    }

    // Teacher-forced logits of every prompt position: [T, vocab].
    Tensor<float, dextents<2>> logits(std::string_view prompt) {
        const auto ids = model_->tokenize(prompt);
        Executor::Scope use(*executor_);
        const auto tt = session_.prompt_text_time(ids);
        session_.prepare(1, ids.size(), ids.size());
        const auto lg = session_.run(0, ids, tt, 0, true);
        Tensor<float, dextents<2>> out(ids.size(), model_->vocab_size());
        std::copy(lg.begin(), lg.end(), out.data());
        return out;
    }

    // CLIP embeddings (pooled, projected) of images: [n, embed_dim].
    Tensor<float, dextents<2>> embed(const std::vector<std::string>& images) {
        check(!images.empty(), "embed needs at least one image");
        return embed(model_->load_media(images, 1));
    }
    Tensor<float, dextents<2>> embed(const Pixels& px) {
        check(px.extent(1) == 1, "embed takes images (one frame each), not videos of ", px.extent(1), " frames");
        Executor::Scope use(*executor_);
        return session_.embed(px.data(), px.extent(0));
    }

private:
    // Digest kinds: pixels (plus the frame count), visual tokens.
    static constexpr std::uint64_t kVisual = 1, kPixels = 2, kPlaces = std::uint64_t(1) << 32;

    // Whether prompts go through the cache: one is set and the media's keys
    // are those of the media the session holds (not changed behind our back).
    // Text-only prompts need no keys.
    bool caches_prompts() {
        if (cache_ && keys_version_ != session_.media_version() && session_.num_media() == 0)
            media_keys_.clear(), keys_version_ = session_.media_version();
        return cache_ && keys_version_ == session_.media_version();
    }

    static const std::shared_ptr<const Model>& check_model(const std::shared_ptr<const Model>& m) {
        check(m != nullptr, "a context needs a model");
        return m;
    }

    std::shared_ptr<const Model> model_;
    generate::Session session_;
    std::shared_ptr<Executor> executor_;
    std::shared_ptr<PrefixCache> cache_;
    std::shared_ptr<generate::Batcher> batcher_;
    std::vector<generate::Digest> media_keys_;  // of the session's media, when keys_version_ is its media_version()
    std::uint64_t keys_version_ = 0;
};

}  // namespace flamingo

#pragma once
// The whole path from files and text to answers, for programs that just want
// to ask a model: load a model directory, read images (or video) and an
// interleaved prompt, then generate, score, compute logits or embed.
//
//   flamingo::Pipeline p("models/shapes-flamingo");
//   auto r = p.generate("<image>A red circle.<|endofchunk|><image>", {"a.png", "b.png"});
//   std::cout << r.text;
#include <chrono>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "generate/generate.hpp"
#include "io/image.hpp"
#include "io/image_preprocess.hpp"
#include "model/presets.hpp"
#include "text/tokenizer.hpp"

namespace flamingo {

struct Generation {
    std::string text;                  // the continuation, without the stop token
    std::vector<std::int32_t> tokens;  // generated ids, the stop token included when generation ended on it
    bool stopped = false;
    double score = 0;
};

class Pipeline {
public:
    explicit Pipeline(const std::filesystem::path& model_dir, const model::LoadOptions& opt = {})
        : model_(model::load_model(model_dir, opt)),
          tokenizer_(Tokenizer::load(model_dir / "tokenizer.json")),
          session_(*model_) {
        const auto& c = model_->config();
        preprocess_.image_size = c.vision.image_size;
        preprocess_.mean = c.vision.image_mean;
        preprocess_.std = c.vision.image_std;
        const std::int32_t V = std::int32_t(model_->vocab_size());
        check(c.media_token_id >= 0 && c.media_token_id < V, model_dir.string(), "/config.json: media_token_id ",
              c.media_token_id, " is outside the vocabulary of ", V, " tokens");
        check(c.eoc_token_id >= 0 && c.eoc_token_id < V, model_dir.string(), "/config.json: eoc_token_id ",
              c.eoc_token_id, " is outside the vocabulary of ", V, " tokens");
    }

    model::Model& model() { return *model_; }
    const Tokenizer& tokenizer() const { return tokenizer_; }
    generate::Session& session() { return session_; }

    // Media files to normalised pixels [n, frames, 3, S, S]. A file is an image
    // (frames = 1: an animated GIF gives its first frame), or with frames > 1 an
    // animated GIF sampled evenly to that many frames, or a directory of frame
    // images (sorted by name) sampled likewise.
    std::vector<float> load_media(const std::vector<std::string>& files, std::size_t frames = 1) const {
        check(frames >= 1, "frames must be at least 1");
        const std::size_t S = std::size_t(preprocess_.image_size), per = 3 * S * S;
        std::vector<float> pixels;
        pixels.reserve(files.size() * frames * per);
        for (const std::string& f : files) {
            for (const Image& im : frames_of(f, frames)) {
                std::vector<float> p = clip_preprocess(im, preprocess_);
                pixels.insert(pixels.end(), p.begin(), p.end());
            }
        }
        return pixels;
    }

    // Encodes the media once for the prompts that follow.
    void set_media(const std::vector<std::string>& files, std::size_t frames = 1) {
        std::vector<float> px = load_media(files, frames);
        session_.set_media(px.data(), files.size(), frames);
    }

    // A prompt's token ids, as Hugging Face's tokenizer(text) gives them.
    std::vector<std::int32_t> tokenize(std::string_view prompt) const {
        check(!prompt.empty(), "the prompt is empty");
        std::vector<std::int32_t> ids = tokenizer_.encode(prompt);
        check(!ids.empty(), "the prompt encodes to no tokens");
        check(ids.size() <= model_->max_positions(), "the prompt has ", ids.size(),
              " tokens, more than the model's context of ", model_->max_positions(), " positions");
        return ids;
    }

    Generation generate(std::string_view prompt, const generate::GenerateOptions& opt = {}) {
        auto ids = tokenize(prompt);
        auto r = generate::generate(session_, ids, opt);
        Generation g;
        g.tokens = r.tokens;
        g.stopped = r.stopped, g.score = r.score;
        std::span<const std::int32_t> shown(r.tokens);
        if (r.stopped) shown = shown.first(shown.size() - 1);
        g.text = tokenizer_.decode(shown);
        return g;
    }
    Generation generate(std::string_view prompt, const std::vector<std::string>& images,
                        const generate::GenerateOptions& opt = {}) {
        set_media(images);
        return generate(prompt, opt);
    }

    struct Scored {
        std::string candidate;
        generate::CandidateScore score;
    };
    // Candidates are tokenized alone, without special tokens, and appended to the prompt.
    std::vector<Scored> score(std::string_view prompt, const std::vector<std::string>& candidates) {
        auto ids = tokenize(prompt);
        std::vector<std::vector<std::int32_t>> cand;
        for (std::size_t i = 0; i < candidates.size(); ++i) {
            check(!candidates[i].empty(), "candidate ", i + 1, " is empty");
            cand.push_back(tokenizer_.encode(candidates[i], false));
            check(!cand.back().empty(), "candidate ", i + 1, " (\"", candidates[i], "\") encodes to no tokens");
        }
        auto s = generate::score(session_, ids, cand);
        std::vector<Scored> out;
        for (std::size_t i = 0; i < s.size(); ++i) out.push_back({candidates[i], std::move(s[i])});
        return out;
    }

    // Teacher-forced logits of every prompt position: [T, vocab].
    std::vector<float> logits(std::string_view prompt, std::size_t* rows = nullptr) {
        auto ids = tokenize(prompt);
        auto tt = session_.prompt_text_time(ids);
        session_.prepare(1, ids.size(), ids.size());
        auto lg = session_.run(0, ids, tt, 0, true);
        if (rows) *rows = ids.size();
        return {lg.begin(), lg.end()};
    }

    // CLIP embeddings (pooled, projected) of images: [n, embed_dim].
    std::vector<float> embed(const std::vector<std::string>& images) {
        check(!images.empty(), "embed needs at least one image");
        std::vector<float> px = load_media(images, 1), out(images.size() * model_->embed_dim());
        model_->vision(px.data(), images.size(), nullptr, out.data());
        return out;
    }

private:
    std::vector<Image> frames_of(const std::string& file, std::size_t frames) const {
        return load_media_frames(file, frames, limits_);
    }

    std::unique_ptr<model::Model> model_;
    Tokenizer tokenizer_;
    generate::Session session_;
    ClipPreprocess preprocess_;
    ImageLimits limits_;
};

}  // namespace flamingo

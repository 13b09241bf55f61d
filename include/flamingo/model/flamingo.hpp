#pragma once
// The composed Flamingo model (OpenFlamingo's Flamingo):
//   visual tokens = perceiver(vision_encoder(pixels) patch tokens)    per image or video
//   logits        = lang_encoder(tokens, cross-attending to the visual tokens)
// Immutable once loaded: every method is const and takes the caller's
// working memory, so any number of threads can run it at once.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"
#include "idefics.hpp"
#include "language_model.hpp"
#include "perceiver.hpp"
#include "vision.hpp"
#include "weights.hpp"

namespace flamingo::model {

class Flamingo {
public:
    Flamingo(Config c, std::unique_ptr<Weights> weights)
        : config_(std::move(c)), weights_(std::move(weights)), vision_(*weights_, config_.vision),
          perceiver_(*weights_, config_.perceiver, std::size_t(config_.vision.width)), lm_(*weights_, config_),
          unused_(weights_->unused()), copied_bytes_(weights_->copied_bytes()),
          copied_quantized_bytes_(weights_->copied_quantized_bytes()) {}

    const Config& config() const { return config_; }
    WeightType weight_type() const { return weights_->type(); }

    std::size_t vocab_size() const { return lm_.vocab_size(); }
    std::size_t num_layers() const { return lm_.num_layers(); }
    std::size_t kv_width() const { return lm_.kv_width(); }        // keys (or values) per token per layer
    std::size_t max_positions() const { return lm_.max_positions(); }  // the context limit
    std::size_t embed_dim() const { return vision_.embed_dim(); }   // CLIP embedding size
    std::size_t vision_width() const { return vision_.width(); }
    std::size_t image_size() const { return vision_.image_size(); }
    std::size_t vision_tokens_per_image() const { return vision_.num_tokens(); }
    std::size_t num_latents() const { return perceiver_.num_latents(); }

    // Visual tokens [n_media * num_latents, vision_width] of media given as
    // normalised pixels [n_media, frames, 3, S, S].
    void encode(const float* pixels, std::size_t n_media, std::size_t frames, const nn::Act& visual,
                nn::Workspace& ws) const {
        check(visual.extent(0) == n_media * num_latents() && visual.extent(1) == vision_width(), ErrorKind::Shape,
              "visual tokens: expected [", n_media * num_latents(), ", ", vision_width(), "], given ",
              shape_string(visual.extents()));
        if (n_media == 0) return;
        nn::Workspace::Frame frame(ws);
        auto features = ws.rows(n_media * frames * vision_tokens_per_image(), vision_width());
        vision_.forward(pixels, n_media * frames, features, {}, ws);
        perceiver_.forward(features.data(), n_media, frames, vision_tokens_per_image(), visual, ws);
    }
    std::size_t encode_workspace(std::size_t n_media, std::size_t frames) const {
        return nn::ws_floats(n_media * frames * vision_tokens_per_image(), vision_width()) +
               std::max(vision_.workspace(n_media * frames),
                        perceiver_.workspace(n_media, frames, vision_tokens_per_image()));
    }

    // CLIP embeddings [n, embed_dim] of n normalised images [n, 3, S, S].
    void embed(const float* pixels, std::size_t n, const nn::Act& out, nn::Workspace& ws) const {
        check(out.extent(0) == n && out.extent(1) == embed_dim(), ErrorKind::Shape, "embeddings: expected [", n,
              ", ", embed_dim(), "], given ", shape_string(out.extents()));
        vision_.forward(pixels, n, {}, out, ws);
    }
    std::size_t embed_workspace(std::size_t n) const { return vision_.workspace(n); }

    // Cross-attention keys/values of visual tokens [n_media * num_latents, width].
    void project_media(const nn::CAct& visual, std::size_t n_media, MediaKV& media) const {
        lm_.project_media(visual, n_media, num_latents(), media);
    }

    // Decoder pass; logits [logit_rows.size(), vocab] for the chosen rows.
    void forward(const Batch& b, std::span<const std::size_t> logit_rows, const nn::Act& logits,
                 nn::Workspace& ws) const {
        lm_.forward(b, logit_rows, logits, ws);
    }
    std::size_t forward_workspace(std::size_t rows, std::size_t logit_rows) const {
        return lm_.workspace(rows, logit_rows);
    }

    // The parts, for callers that run them one by one.
    const VisionTransformer& vision() const { return vision_; }
    const PerceiverResampler& perceiver() const { return perceiver_; }
    const LanguageModel& language_model() const { return lm_; }

    // Checkpoint tensors the model does not use.
    const std::vector<std::string>& unused_tensors() const { return unused_; }
    // Bytes of weights held outside the memory-mapped files (converted copies).
    std::size_t copied_weight_bytes() const { return copied_bytes_; }
    // Of those, the quantised matrices' (quantised at load): 0 when all are
    // views into a quantised checkpoint's mapping.
    std::size_t copied_quantized_bytes() const { return copied_quantized_bytes_; }
    // The weights as loaded (the checkpoint and the quantised matrices by name).
    const Weights& weights() const { return *weights_; }

private:
    Config config_;
    std::unique_ptr<Weights> weights_;
    VisionTransformer vision_;
    PerceiverResampler perceiver_;
    LanguageModel lm_;
    std::vector<std::string> unused_;
    std::size_t copied_bytes_ = 0, copied_quantized_bytes_ = 0;
};

// Loads a model directory's config.json and weights, with the weight type
// asked for, or when none is, the one the directory is stored in
// (resolve_weight_type: a quantised directory's format, else f32).
inline std::unique_ptr<Flamingo> load_flamingo(const std::filesystem::path& dir,
                                               std::optional<WeightType> type = std::nullopt) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(dir, ec)) fail(ErrorKind::File, dir.string(), ": model directory does not exist");
    if (!fs::is_directory(dir, ec))
        fail(ErrorKind::File, dir.string(),
             ": not a directory (a model is a directory with config.json, tokenizer.json and safetensors weights)");
    Config cfg = load_config(dir / "config.json");
    if (cfg.arch == Arch::Idefics) {
        idefics::token_id(dir / "tokenizer.json", idefics::kFakeToken);  // (checks it is there)
        cfg.media_token_id = idefics::token_id(dir / "tokenizer.json", idefics::kImageToken);
    }
    io::Checkpoint ckpt = io::Checkpoint::open(dir);
    const WeightType t = resolve_weight_type(ckpt, type);
    auto weights = std::make_unique<Weights>(std::move(ckpt), t);
    return std::make_unique<Flamingo>(std::move(cfg), std::move(weights));
}

}  // namespace flamingo::model

#pragma once
// The composed Flamingo model (OpenFlamingo's Flamingo):
//   visual tokens = perceiver(vision_encoder(pixels) patch tokens)    per image or video
//   logits        = lang_encoder(tokens, cross-attending to the visual tokens)
// `Model` is the run-time interface the engine and the command line use; the
// templates below it are instantiated per preset (presets.hpp).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../io/config.hpp"
#include "language_model.hpp"
#include "perceiver.hpp"
#include "vision.hpp"

namespace flamingo::model {

class Model {
public:
    virtual ~Model() = default;

    const io::FlamingoConfig& config() const { return config_; }
    virtual std::string_view preset() const = 0;

    virtual std::size_t vocab_size() const = 0;
    virtual std::size_t num_layers() const = 0;
    virtual std::size_t kv_width() const = 0;       // keys (or values) per token per layer
    virtual std::size_t max_positions() const = 0;  // the context limit
    virtual std::size_t embed_dim() const = 0;      // CLIP embedding size
    virtual std::size_t vision_tokens_per_image() const = 0;
    virtual std::size_t num_latents() const = 0;
    std::size_t vision_width() const { return std::size_t(config_.vision.width); }
    std::size_t image_size() const { return std::size_t(config_.vision.image_size); }

    // Vision tower on n normalised images [n, 3, S, S]: patch tokens
    // [n, vision_tokens_per_image, width] and/or pooled embeddings [n, embed_dim].
    virtual void vision(const float* pixels, std::size_t n, float* tokens, float* pooled) = 0;
    // Perceiver: features [n_media, frames, vision_tokens_per_image, width] -> [n_media, num_latents, width].
    virtual void perceive(const float* features, std::size_t n_media, std::size_t frames, float* out) = 0;
    // Cross-attention keys/values of the visual tokens [n_media, num_latents, width].
    virtual void project_media(const float* visual, std::size_t n_media, MediaContext& ctx) = 0;
    // Decoder pass; logits [logit_rows.size(), vocab] for the chosen rows.
    virtual void forward(const Batch& b, const MediaContext& media, std::span<const std::size_t> logit_rows,
                         float* logits) = 0;

    // Visual tokens of media given as pixels [n_media, frames, 3, S, S].
    std::vector<float> encode_media(const float* pixels, std::size_t n_media, std::size_t frames) {
        const std::size_t v = vision_tokens_per_image(), W = vision_width();
        std::vector<float> features(n_media * frames * v * W), out(n_media * num_latents() * W);
        if (n_media == 0) return out;
        vision(pixels, n_media * frames, features.data(), nullptr);
        perceive(features.data(), n_media, frames, out.data());
        return out;
    }

    // Allocations of working memory so far (constant while decoding).
    std::size_t scratch_grows() const { return scratch_.grows(); }
    // Checkpoint tensors the model does not use.
    const std::vector<std::string>& unused_tensors() const { return unused_; }
    // Bytes of weights held outside the memory-mapped files (converted copies).
    std::size_t copied_weight_bytes() const { return copied_bytes_; }

protected:
    explicit Model(io::FlamingoConfig c) : config_(std::move(c)) {}

    io::FlamingoConfig config_;
    nn::Scratch scratch_;
    std::vector<std::string> unused_;
    std::size_t copied_bytes_ = 0;
};

// Compile-time sizes of a preset; dyn where the checkpoint decides.
template <std::size_t VisionWidth, std::size_t VisionMlp, std::size_t Hidden, class Ffn>
struct Shape {
    static constexpr std::size_t vision_width = VisionWidth, vision_mlp = VisionMlp, hidden = Hidden;
    using ffn = Ffn;
};

template <class S>
class Flamingo final : public Model {
public:
    Flamingo(std::string_view name, io::FlamingoConfig c, std::unique_ptr<nn::WeightLoader> weights)
        : Model(std::move(c)), name_(name), weights_(std::move(weights)),
          vision_(*weights_, config_.vision),
          perceiver_(*weights_, config_.perceiver, std::size_t(config_.vision.width)),
          lm_(*weights_, config_) {
        unused_ = weights_->unused();
        copied_bytes_ = weights_->copied_bytes();
    }

    std::string_view preset() const override { return name_; }
    std::size_t vocab_size() const override { return lm_.vocab_size(); }
    std::size_t num_layers() const override { return lm_.num_layers(); }
    std::size_t kv_width() const override { return lm_.kv_width(); }
    std::size_t max_positions() const override { return lm_.max_positions(); }
    std::size_t embed_dim() const override { return vision_.embed_dim(); }
    std::size_t vision_tokens_per_image() const override { return vision_.num_patches(); }
    std::size_t num_latents() const override { return perceiver_.num_latents(); }

    void vision(const float* pixels, std::size_t n, float* tokens, float* pooled) override {
        vision_.forward(pixels, n, tokens, pooled, scratch_);
    }
    void perceive(const float* features, std::size_t n_media, std::size_t frames, float* out) override {
        perceiver_.forward(features, n_media, frames, vision_.num_patches(), out, scratch_);
    }
    void project_media(const float* visual, std::size_t n_media, MediaContext& ctx) override {
        lm_.project_media(visual, n_media, num_latents(), vision_width(), ctx);
    }
    void forward(const Batch& b, const MediaContext& media, std::span<const std::size_t> logit_rows,
                 float* logits) override {
        lm_.forward(b, media, logit_rows, logits, scratch_);
    }

private:
    std::string name_;
    std::unique_ptr<nn::WeightLoader> weights_;
    VisionTransformer<S::vision_width, S::vision_mlp> vision_;
    PerceiverResampler<S::vision_width> perceiver_;
    LanguageModel<S::hidden, typename S::ffn, S::vision_width> lm_;
};

}  // namespace flamingo::model

#pragma once
// Statically shaped instantiations for the released OpenFlamingo models, and
// the run-time-shaped one that loads any valid config.json. load_model picks
// the preset whose sizes match the checkpoint, else the run-time one.
#include <filesystem>
#include <memory>
#include <string>

#include "../io/config.hpp"
#include "../io/safetensors.hpp"
#include "flamingo.hpp"

namespace flamingo::model {

// ViT-L/14 image tower shared by every release.
inline constexpr std::size_t kViTL = 1024, kViTLMlp = 4096;

// OpenFlamingo-3B: MPT-1B (mosaic_gpt), d_model 2048, cross-attention on every layer.
using OpenFlamingo3B = Shape<kViTL, kViTLMlp, 2048, nn::Mlp<2048, 8192>>;
// OpenFlamingo-4B: RedPajama-INCITE-3B (gpt_neox), hidden 2560, every 2nd layer.
using OpenFlamingo4B = Shape<kViTL, kViTLMlp, 2560, nn::Mlp<2560, 10240>>;
// OpenFlamingo-9B: MPT-7B (mpt), d_model 4096, every 4th layer.
using OpenFlamingo9B = Shape<kViTL, kViTLMlp, 4096, nn::Mlp<4096, 16384>>;
// Any config.json.
using DynamicMlp = Shape<dyn, dyn, dyn, nn::Mlp<>>;
using DynamicGated = Shape<dyn, dyn, dyn, nn::GatedMlp<>>;

struct LoadOptions {
    nn::WeightType weights = nn::WeightType::F32;
    bool force_dynamic = false;  // skip the static presets (tests compare both paths)
};

namespace detail {

inline bool vit_l(const io::FlamingoConfig& c) {
    return std::size_t(c.vision.width) == kViTL && std::size_t(c.vision.mlp_width) == kViTLMlp;
}
inline bool text_is(const io::FlamingoConfig& c, io::Family f, int hidden, int ffn) {
    return c.text.family == f && c.text.hidden_size == hidden && c.text.intermediate_size == ffn;
}

}  // namespace detail

// The preset a config selects: "openflamingo-3b", "-4b", "-9b" when every
// compile-time size matches, else "dynamic".
inline std::string_view select_preset(const io::FlamingoConfig& c) {
    using io::Family;
    if (detail::vit_l(c)) {
        if (detail::text_is(c, Family::Mpt, 2048, 8192)) return "openflamingo-3b";
        if (detail::text_is(c, Family::GptNeox, 2560, 10240)) return "openflamingo-4b";
        if (detail::text_is(c, Family::Mpt, 4096, 16384)) return "openflamingo-9b";
    }
    return "dynamic";
}

inline std::unique_ptr<Model> load_model(const std::filesystem::path& dir, const LoadOptions& opt = {}) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::exists(dir, ec)) fail(dir.string(), ": model directory does not exist");
    if (!fs::is_directory(dir, ec))
        fail(dir.string(), ": not a directory (a model is a directory with config.json, tokenizer.json and safetensors weights)");
    io::FlamingoConfig cfg = io::load_config(dir / "config.json");
    auto weights = std::make_unique<nn::WeightLoader>(io::Checkpoint::open(dir), opt.weights);
    const std::string_view name = opt.force_dynamic ? "dynamic" : select_preset(cfg);
    if (name == "openflamingo-3b") return std::make_unique<Flamingo<OpenFlamingo3B>>(name, cfg, std::move(weights));
    if (name == "openflamingo-4b") return std::make_unique<Flamingo<OpenFlamingo4B>>(name, cfg, std::move(weights));
    if (name == "openflamingo-9b") return std::make_unique<Flamingo<OpenFlamingo9B>>(name, cfg, std::move(weights));
    if (cfg.text.family == io::Family::Llama)
        return std::make_unique<Flamingo<DynamicGated>>(name, cfg, std::move(weights));
    return std::make_unique<Flamingo<DynamicMlp>>(name, cfg, std::move(weights));
}

}  // namespace flamingo::model

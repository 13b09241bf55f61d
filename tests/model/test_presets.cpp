// Static presets: the statically shaped templates compute what the run-time
// ones do, refuse checkpoints of other sizes, and load_model picks them by config.
#include "parity_util.hpp"

#include <flamingo/io/config.hpp>

using namespace flamingo;

namespace {
// The "mpt" fixture's sizes as a compile-time preset: ViT 32 (MLP 64), MPT 48 (FFN 96).
using TinyMpt = model::Shape<32, 64, 48, nn::Mlp<48, 96>>;
using WrongWidth = model::Shape<32, 64, 64, nn::Mlp<64, 128>>;

std::unique_ptr<model::Model> open_as(const std::string& c, bool tiny) {
    auto cfg = io::load_config(fixture::dir(c) / "config.json");
    auto w = std::make_unique<nn::WeightLoader>(io::Checkpoint::open(fixture::dir(c)), nn::WeightType::F32);
    if (tiny) return std::make_unique<model::Flamingo<TinyMpt>>("tiny-mpt", cfg, std::move(w));
    return std::make_unique<model::Flamingo<WrongWidth>>("wrong", cfg, std::move(w));
}
}  // namespace

TEST_CASE("a statically shaped instantiation matches the reference") {
    auto m = open_as("mpt", true);
    auto pixels = fixture::floats("mpt", "pixels.npy");
    auto shape = fixture::shape("mpt", "pixels.npy");
    auto visual = m->encode_media(pixels.data(), shape[0], shape[1]);
    fixture::expect_close(visual.data(), fixture::floats("mpt", "perceiver.npy"), 1e-4, 1e-4, "perceiver");
    fixture::expect_close(fixture::logits(*m, "mpt").data(), fixture::floats("mpt", "logits.npy"), 1e-4, 1e-4, "logits");
}

TEST_CASE("a preset refuses a checkpoint of other sizes, naming the size") {
    CHECK_THROWS_WITH_AS(open_as("mpt", false), doctest::Contains("this preset is compiled for 64, the model has 48"),
                         Error);
}

TEST_CASE("load_model picks presets by config and falls back to the run-time shape") {
    auto config = [](const std::string& vision, const std::string& text) {
        return io::parse_config(R"({"model_type": "flamingo", "vision_config": )" + vision +
                                    R"(, "text_config": )" + text + R"(, "media_token_id": 1, "eoc_token_id": 2})",
                                "config.json");
    };
    const std::string vitl = R"({"image_size": 224, "patch_size": 14, "width": 1024, "layers": 24})";
    const std::string small = R"({"image_size": 28, "patch_size": 14, "width": 32, "layers": 2, "head_width": 16})";
    const std::string mpt1b = R"({"model_type": "mosaic_gpt", "d_model": 2048, "n_heads": 16, "n_layers": 24, "mlp_ratio": 4, "vocab_size": 50282})";
    const std::string mpt7b = R"({"model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32, "expansion_ratio": 4, "vocab_size": 50280})";
    const std::string rpj3b = R"({"model_type": "gpt_neox", "hidden_size": 2560, "num_attention_heads": 32, "num_hidden_layers": 32, "intermediate_size": 10240, "vocab_size": 50432})";
    CHECK(model::select_preset(config(vitl, mpt1b)) == "openflamingo-3b");
    CHECK(model::select_preset(config(vitl, rpj3b)) == "openflamingo-4b");
    CHECK(model::select_preset(config(vitl, mpt7b)) == "openflamingo-9b");
    CHECK(model::select_preset(config(small, mpt1b)) == "dynamic");
    CHECK(model::load_model(fixture::dir("mpt"))->preset() == "dynamic");
}

#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "flamingo/model/config.hpp"
#include "../io/io_test_util.hpp"

namespace test_config {  // own names: the area compiles as one translation unit

using namespace flamingo::io;
using namespace flamingo::model;
using namespace io_test;

// Expected values below follow the upstream configuration classes
// (transformers' LlamaConfig / GPTNeoXConfig, MosaicML's MPTConfig and
// MosaicGPTConfig, OpenFlamingo's and open_clip's constructor defaults).

TEST_CASE("config: OpenFlamingo-3B (MPT-1B, mosaic_gpt)") {
    auto c = load_config(data_dir() / "configs" / "of3b_mosaic_gpt.json");
    CHECK(c.vision.image_size == 224);
    CHECK(c.vision.patch_size == 14);
    CHECK(c.vision.width == 1024);
    CHECK(c.vision.layers == 24);
    CHECK(c.vision.heads() == 16);
    CHECK(c.vision.grid_size() == 16);
    CHECK(c.vision.num_patches() == 256);
    CHECK(c.vision.mlp_width == 4096);
    CHECK(c.vision.quick_gelu);
    CHECK_FALSE(c.vision.tokens_ln_post);
    CHECK(c.vision.image_mean[1] == 0.4578275f);
    CHECK(c.vision.image_std[2] == 0.27577711f);
    CHECK(c.perceiver.depth == 6);
    CHECK(c.perceiver.num_latents == 64);
    CHECK_FALSE(c.perceiver.max_num_media.has_value());
    CHECK(c.cross_attn.every_n_layers == 1);
    CHECK(c.cross_attn.only_attend_immediate_media);

    const TextConfig& t = c.text;
    CHECK(t.family == Family::Mpt);
    CHECK(t.model_type == "mosaic_gpt");
    CHECK(t.hidden_size == 2048);
    CHECK(t.num_heads == 16);
    CHECK(t.num_kv_heads == 16);
    CHECK(t.head_dim == 128);
    CHECK(t.num_layers == 24);
    CHECK(t.intermediate_size == 8192);  // mlp_ratio 4
    CHECK(t.vocab_size == 50432);
    CHECK(t.max_positions == 2048);
    CHECK(t.alibi);
    CHECK(t.alibi_bias_max == 8.0f);
    CHECK_FALSE(t.learned_pos_emb);
    CHECK(t.qk_ln);
    CHECK_FALSE(t.clip_qkv.has_value());
    CHECK_FALSE(t.softmax_scale.has_value());
    CHECK_FALSE(t.logit_scale.has_value());
    CHECK(t.no_bias);
    CHECK_FALSE(t.attention_bias);
    CHECK_FALSE(t.mlp_bias);
    CHECK_FALSE(t.norm_bias);
    CHECK(t.norm == NormType::LayerNorm);
    CHECK(t.norm_eps == 1e-5f);
    CHECK(t.hidden_act == "gelu");
    CHECK(t.tie_word_embeddings);
    CHECK_FALSE(t.uses_rope());
    CHECK(t.rotary_dim == 0);
    CHECK(c.media_token_id == 50281);
    CHECK(c.eoc_token_id == 50280);
    CHECK(c.text_config_raw["tokenizer_name"] == "EleutherAI/gpt-neox-20b");
}

TEST_CASE("config: OpenFlamingo-4B (RedPajama-INCITE-3B, gpt_neox), defaults for the rest") {
    auto c = load_config(data_dir() / "configs" / "of4b_gpt_neox.json");
    // Perceiver and vision extras absent: OpenFlamingo / OpenAI CLIP defaults.
    CHECK(c.perceiver.depth == 6);
    CHECK(c.perceiver.heads == 8);
    CHECK(c.perceiver.dim_head == 64);
    CHECK(c.perceiver.num_latents == 64);
    CHECK(c.perceiver.ff_mult == 4);
    CHECK(c.cross_attn.every_n_layers == 2);
    CHECK(c.cross_attn.heads == 8);
    CHECK(c.cross_attn.dim_head == 64);
    CHECK(c.cross_attn.ff_mult == 4);
    CHECK(c.cross_attn.only_attend_immediate_media);
    CHECK_FALSE(c.cross_attn.has_cross_attn(0));
    CHECK(c.cross_attn.has_cross_attn(1));
    CHECK(c.vision.head_width == 64);
    CHECK(c.vision.mlp_ratio == 4.0f);
    CHECK(c.vision.quick_gelu);
    CHECK(c.vision.image_mean[0] == 0.48145466f);

    const TextConfig& t = c.text;
    CHECK(t.family == Family::GptNeox);
    CHECK(t.hidden_size == 2560);
    CHECK(t.num_heads == 32);
    CHECK(t.num_kv_heads == 32);
    CHECK(t.head_dim == 80);
    CHECK(t.intermediate_size == 10240);
    CHECK(t.rotary_pct == 1.0f);
    CHECK(t.rotary_dim == 80);
    CHECK(t.rope_theta == 10000.0f);
    CHECK_FALSE(t.use_parallel_residual);
    CHECK(t.norm == NormType::LayerNorm);
    CHECK(t.norm_bias);
    CHECK(t.attention_bias);
    CHECK(t.mlp_bias);
    CHECK_FALSE(t.tie_word_embeddings);
    CHECK(t.hidden_act == "gelu");
}

TEST_CASE("config: OpenFlamingo-9B (MPT-7B, mpt)") {
    auto c = load_config(data_dir() / "configs" / "of9b_mpt.json");
    CHECK(c.vision.image_size == 224);  // given as [224, 224]
    CHECK(c.cross_attn.every_n_layers == 4);
    const TextConfig& t = c.text;
    CHECK(t.family == Family::Mpt);
    CHECK(t.model_type == "mpt");
    CHECK(t.hidden_size == 4096);
    CHECK(t.num_layers == 32);
    CHECK(t.intermediate_size == 16384);  // expansion_ratio 4
    CHECK(t.alibi);
    CHECK_FALSE(t.learned_pos_emb);  // MPTConfig turns it off under ALiBi
    CHECK_FALSE(t.qk_ln);
    CHECK(t.no_bias);
    CHECK(t.tie_word_embeddings);
    CHECK(t.num_kv_heads == 32);
}

TEST_CASE("config: LLaMA-7B") {
    auto c = load_config(data_dir() / "configs" / "llama7b.json");
    const TextConfig& t = c.text;
    CHECK(t.family == Family::Llama);
    CHECK(t.num_kv_heads == 32);  // num_key_value_heads defaults to num_attention_heads
    CHECK(t.head_dim == 128);
    CHECK(t.rotary_dim == 128);
    CHECK(t.rope_theta == 10000.0f);
    CHECK(t.norm == NormType::RMSNorm);
    CHECK(t.norm_eps == 1e-6f);
    CHECK_FALSE(t.norm_bias);
    CHECK_FALSE(t.attention_bias);
    CHECK_FALSE(t.mlp_bias);
    CHECK_FALSE(t.tie_word_embeddings);
    CHECK(t.hidden_act == "silu");
    CHECK(t.intermediate_size == 11008);
    CHECK(t.max_positions == 2048);
    CHECK(c.media_token_id == 32001);
}

namespace {

json minimal() {
    return json::parse(R"({
      "model_type": "flamingo",
      "vision_config": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
      "text_config": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4,
                      "num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 100},
      "media_token_id": 98, "eoc_token_id": 99})");
}

json minimal_neox() {
    json j = minimal();
    j["text_config"] = json::parse(R"({"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": 256, "vocab_size": 100})");
    return j;
}

json minimal_mpt() {
    json j = minimal();
    j["text_config"] = json::parse(R"({"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 4, "vocab_size": 100})");
    return j;
}

Config parse(const json& j) { return parse_config(j.dump(), "config.json"); }

}  // namespace

TEST_CASE("config: family defaults from upstream") {
    SUBCASE("llama") {
        auto t = parse(minimal()).text;
        CHECK(t.max_positions == 2048);
        CHECK(t.norm_eps == 1e-6f);
        CHECK(t.hidden_act == "silu");
        CHECK(t.num_kv_heads == 4);
        CHECK(t.head_dim == 16);
        CHECK_FALSE(t.tie_word_embeddings);
    }
    SUBCASE("llama: GQA, rope_theta, head_dim, newer rope_parameters") {
        json j = minimal();
        j["text_config"]["num_key_value_heads"] = 2;
        j["text_config"]["rope_theta"] = 500000.0;
        j["text_config"]["rope_scaling"] = nullptr;
        j["text_config"]["attention_bias"] = true;
        j["text_config"]["tie_word_embeddings"] = true;
        auto t = parse(j).text;
        CHECK(t.num_kv_heads == 2);
        CHECK(t.rope_theta == 500000.0f);
        CHECK(t.attention_bias);
        CHECK(t.tie_word_embeddings);
        j["text_config"]["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
        CHECK(parse(j).text.rope_theta == 1e6f);
        j["text_config"]["head_dim"] = 32;
        CHECK(parse(j).text.head_dim == 32);
    }
    SUBCASE("gpt_neox") {
        auto t = parse(minimal_neox()).text;
        CHECK(t.rotary_pct == 0.25f);
        CHECK(t.rotary_dim == 4);  // int(16 * 0.25)
        CHECK(t.rope_theta == 10000.0f);
        CHECK(t.use_parallel_residual);
        CHECK(t.norm_eps == 1e-5f);
        CHECK(t.hidden_act == "gelu");
        CHECK(t.attention_bias);
        CHECK_FALSE(t.tie_word_embeddings);
        CHECK(t.max_positions == 2048);
    }
    SUBCASE("gpt_neox: newer spellings of the rotary settings") {
        json j = minimal_neox();
        j["text_config"]["rope_theta"] = 20000;
        j["text_config"]["partial_rotary_factor"] = 0.5;
        auto t = parse(j).text;
        CHECK(t.rope_theta == 20000.0f);
        CHECK(t.rotary_dim == 8);
        j["text_config"]["rope_parameters"] = {{"rope_theta", 30000}, {"partial_rotary_factor", 1.0}};
        t = parse(j).text;
        CHECK(t.rope_theta == 30000.0f);
        CHECK(t.rotary_dim == 16);
    }
    SUBCASE("gpt_neox: rotary_dim truncates in double precision, as Python does") {
        json j = minimal_neox();
        j["text_config"]["hidden_size"] = 80;  // head_dim 20
        j["text_config"]["rotary_pct"] = 0.7;  // 20 * 0.7 = 14.000000000000002 -> 14 (in float: 13.9999990 -> 13)
        CHECK(parse(j).text.rotary_dim == 14);
    }
    SUBCASE("mpt") {
        auto t = parse(minimal_mpt()).text;
        CHECK(t.intermediate_size == 256);  // expansion_ratio 4
        CHECK(t.max_positions == 2048);
        CHECK_FALSE(t.alibi);
        CHECK(t.learned_pos_emb);
        CHECK_FALSE(t.no_bias);
        CHECK(t.attention_bias);
        CHECK(t.norm_bias);
        CHECK(t.tie_word_embeddings);
        CHECK(t.norm == NormType::LayerNorm);
        CHECK(t.num_kv_heads == 4);
    }
    SUBCASE("mpt: attention variants, logit scale, clip, rmsnorm") {
        json j = minimal_mpt();
        j["text_config"]["attn_config"] = {{"attn_type", "grouped_query_attention"}, {"kv_n_heads", 2},
                                           {"clip_qkv", 6}, {"qk_ln", true}, {"softmax_scale", 0.5}};
        j["text_config"]["logit_scale"] = "inv_sqrt_d_model";
        j["text_config"]["norm_type"] = "rmsnorm";
        j["text_config"]["expansion_ratio"] = 2.5;
        auto t = parse(j).text;
        CHECK(t.num_kv_heads == 2);
        CHECK(t.clip_qkv == 6.0f);
        CHECK(t.qk_ln);
        CHECK(t.softmax_scale == 0.5f);
        CHECK(t.logit_scale == doctest::Approx(0.125));
        CHECK(t.norm == NormType::RMSNorm);
        CHECK(t.intermediate_size == 160);
        j["text_config"]["attn_config"] = {{"attn_type", "multiquery_attention"}};
        j["text_config"]["logit_scale"] = 2;
        t = parse(j).text;
        CHECK(t.num_kv_heads == 1);
        CHECK(t.logit_scale == 2.0f);
        j["text_config"]["ffn_config"] = {{"ffn_type", "mptmlp"}, {"ffn_hidden_size", 96}};
        CHECK(parse(j).text.intermediate_size == 96);
    }
    SUBCASE("mosaic_gpt") {
        json j = minimal_mpt();
        j["text_config"]["model_type"] = "mosaic_gpt";
        j["text_config"]["mlp_ratio"] = 2;
        j["text_config"]["attn_clip_qkv"] = 8;
        auto t = parse(j).text;
        CHECK(t.intermediate_size == 128);
        CHECK(t.clip_qkv == 8.0f);
        CHECK(t.learned_pos_emb);
        CHECK_FALSE(t.alibi);
    }
    SUBCASE("perceiver media / frame limits") {
        json j = minimal();
        j["perceiver_config"] = {{"max_num_media", 5}, {"max_num_frames", 3}};
        auto p = parse(j).perceiver;
        CHECK(p.max_num_media == 5);
        CHECK(p.max_num_frames == 3);
    }
}

#define CHECK_CONFIG_ERROR(j, ...) CHECK_ERROR(parse(j), "config.json: ", __VA_ARGS__)

TEST_CASE("config: missing required fields") {
    CHECK(parse(minimal()).text.num_layers == 4);  // the baseline is valid
    for (const char* k : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
                          "model_type"}) {
        json j = minimal();
        j["text_config"].erase(k);
        CHECK_CONFIG_ERROR(j, (std::string("text_config.") + k + ": required field missing").c_str());
    }
    for (const char* k : {"d_model", "n_heads", "n_layers", "vocab_size"}) {
        json j = minimal_mpt();
        j["text_config"].erase(k);
        CHECK_CONFIG_ERROR(j, (std::string("text_config.") + k + ": required field missing").c_str());
    }
    for (const char* k : {"image_size", "patch_size", "width", "layers"}) {
        json j = minimal();
        j["vision_config"].erase(k);
        CHECK_CONFIG_ERROR(j, (std::string("vision_config.") + k + ": required field missing").c_str());
    }
    for (const char* k : {"model_type", "vision_config", "text_config", "media_token_id", "eoc_token_id"}) {
        json j = minimal();
        j.erase(k);
        CHECK_CONFIG_ERROR(j, (std::string(k) + ": required field missing").c_str());
    }
    json j = minimal();
    j["text_config"]["hidden_size"] = nullptr;  // null counts as absent
    CHECK_CONFIG_ERROR(j, "text_config.hidden_size: required field missing");
}

TEST_CASE("config: unknown model types") {
    json j = minimal();
    j["model_type"] = "llava";
    CHECK_CONFIG_ERROR(j, "model_type: unknown model type \"llava\"");
    j = minimal();
    j["text_config"]["model_type"] = "gpt2";
    CHECK_CONFIG_ERROR(j, "text_config.model_type: unknown model type \"gpt2\"");
}

TEST_CASE("config: wrong JSON types") {
    json j = minimal();
    j["text_config"]["hidden_size"] = "64";
    CHECK_CONFIG_ERROR(j, "text_config.hidden_size: must be an integer, found string");
    j = minimal();
    j["text_config"]["hidden_size"] = 64.0;
    CHECK_CONFIG_ERROR(j, "text_config.hidden_size: must be an integer, found number");
    j = minimal();
    j["text_config"]["tie_word_embeddings"] = 1;
    CHECK_CONFIG_ERROR(j, "text_config.tie_word_embeddings: must be true or false");
    j = minimal();
    j["text_config"]["rms_norm_eps"] = "small";
    CHECK_CONFIG_ERROR(j, "text_config.rms_norm_eps: must be a number");
    j = minimal();
    j["vision_config"] = 3;
    CHECK_CONFIG_ERROR(j, "vision_config: must be an object");
    j = minimal();
    j["vision_config"]["image_mean"] = {0.5, 0.5};
    CHECK_CONFIG_ERROR(j, "vision_config.image_mean: must be a list of 3 numbers");
    j = minimal();
    j["vision_config"]["layers"] = {3, 4, 6, 3};
    CHECK_CONFIG_ERROR(j, "vision_config.layers: must be an integer");
    j = minimal_mpt();
    j["text_config"]["attn_config"] = "alibi";
    CHECK_CONFIG_ERROR(j, "text_config.attn_config: must be an object");
    j = minimal_mpt();
    j["text_config"]["attn_config"] = {{"alibi", "yes"}};
    CHECK_CONFIG_ERROR(j, "text_config.attn_config.alibi: must be true or false");
    j = minimal();
    j["media_token_id"] = -1;
    CHECK_CONFIG_ERROR(j, "media_token_id: must be at least 0");
    CHECK_ERROR(parse_config("[]", "config.json"), "config.json: config must be a JSON object");
    CHECK_ERROR(parse_config(R"({"model_type": -1e999})", "config.json"), "config.json: invalid JSON", "overflow");
    CHECK_ERROR(parse_config("{\"model_type\": \"flamingo\",", "config.json"), "config.json: invalid JSON");
    CHECK_ERROR(parse_config(R"({"model_type": "flamingo", "model_type": "flamingo"})", "config.json"),
                "duplicate key \"model_type\"");
}

TEST_CASE("config: values that cannot describe a model") {
    auto with = [](json j, const char* section, const char* key, json value) {
        j[section][key] = std::move(value);
        return j;
    };
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "hidden_size", 0), "text_config.hidden_size: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "num_hidden_layers", -3), "text_config.num_hidden_layers: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "num_attention_heads", 3),
                       "text_config.num_attention_heads: (3) does not divide hidden_size (64)");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "num_attention_heads", 128), "num_attention_heads", "exceeds");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "num_key_value_heads", 3),
                       "text_config.num_key_value_heads: (3) does not divide num_attention_heads (4)");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "hidden_size", 1 << 20), "text_config.hidden_size: is too large");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "num_hidden_layers", 100000), "num_hidden_layers: is too large");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "vocab_size", std::int64_t(1) << 40), "vocab_size: is too large");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "vocab_size", json(std::uint64_t(1) << 63)), "vocab_size: is too large");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "max_position_embeddings", 0), "max_position_embeddings: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "rms_norm_eps", 0), "rms_norm_eps: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "rope_theta", -1), "rope_theta: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "head_dim", 15), "head_dim", "even");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "hidden_act", "swiglu"), "hidden_act: unknown activation \"swiglu\"");
    CHECK_CONFIG_ERROR(with(minimal(), "text_config", "rope_scaling", json{{"type", "linear"}, {"factor", 2}}),
                       "rope_scaling: RoPE scaling \"linear\" is not supported");
    CHECK_CONFIG_ERROR(with(minimal_neox(), "text_config", "rotary_pct", 0), "rotary_pct: must be positive");
    CHECK_CONFIG_ERROR(with(minimal_neox(), "text_config", "rotary_pct", 1.5), "rotary_pct: is too large");
    CHECK_CONFIG_ERROR(with(minimal_neox(), "text_config", "rotary_pct", 0.0625), "rotary_pct", "gives 1 rotary dimensions");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "n_heads", 5), "text_config.n_heads: (5) does not divide d_model (64)");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "expansion_ratio", 0.001), "expansion_ratio", "not an integer");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "logit_scale", "huge"), "logit_scale: unknown value \"huge\"");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "norm_type", "batchnorm"), "norm_type: unknown norm type");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "attn_config", json{{"attn_type", "linear_attention"}}),
                       "text_config.attn_config.attn_type: unknown attention type");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "attn_config", json{{"prefix_lm", true}}),
                       "attn_config.prefix_lm: prefix LM attention is not supported");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "attn_config",
                            json{{"attn_type", "grouped_query_attention"}, {"kv_n_heads", 3}}),
                       "attn_config.kv_n_heads: (3) does not divide n_heads (4)");
    CHECK_CONFIG_ERROR(with(minimal_mpt(), "text_config", "ffn_config", json{{"ffn_type", "te_ln_mlp"}}),
                       "ffn_config.ffn_type: \"te_ln_mlp\" is not supported");

    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "width", 0), "vision_config.width: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "head_width", 24), "vision_config.head_width: (24) does not divide width (64)");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "patch_size", 7), "vision_config.patch_size", "not a multiple");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "patch_size", 64), "vision_config.patch_size", "larger than image_size");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "image_size", json{32, 48}), "vision_config.image_size", "non-square");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "image_size", 100000), "vision_config.image_size: is too large");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "mlp_ratio", -4), "vision_config.mlp_ratio: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "mlp_ratio", 0.001), "vision_config.mlp_ratio", "MLP width of 0");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "image_std", json{0.5, 0, 0.5}), "vision_config.image_std: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "ls_init_value", 0.1), "vision_config.ls_init_value");
    CHECK_CONFIG_ERROR(with(minimal(), "vision_config", "attentional_pool", true), "vision_config.attentional_pool: true is not supported");

    CHECK_CONFIG_ERROR(with(minimal(), "perceiver_config", "depth", 0), "perceiver_config.depth: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "perceiver_config", "num_latents", -1), "perceiver_config.num_latents: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "perceiver_config", "heads", 4096), "perceiver_config.heads", "exceeds");
    CHECK_CONFIG_ERROR(with(minimal(), "perceiver_config", "max_num_media", 0), "perceiver_config.max_num_media: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "cross_attn_config", "every_n_layers", 0), "cross_attn_config.every_n_layers: must be positive");
    CHECK_CONFIG_ERROR(with(minimal(), "cross_attn_config", "every_n_layers", 5), "cross_attn_config.every_n_layers", "exceeds");
    CHECK_CONFIG_ERROR(with(minimal(), "cross_attn_config", "ff_mult", 1000), "cross_attn_config.ff_mult: is too large");

    json j = minimal();
    j["eoc_token_id"] = 98;
    CHECK_CONFIG_ERROR(j, "eoc_token_id: equals media_token_id");
    j = minimal();
    j["media_token_id"] = 1 << 25;
    CHECK_CONFIG_ERROR(j, "media_token_id: is too large");
}

TEST_CASE("config: file errors name the file") {
    TempDir dir;
    CHECK_ERROR(load_config(dir / "config.json"), "config.json", "No such file");
    write_file(dir / "config.json", "");
    CHECK_ERROR(load_config(dir / "config.json"), (dir / "config.json").string().c_str(), "invalid JSON");
    write_file(dir / "config.json", minimal().dump());
    CHECK(load_config(dir / "config.json").text.hidden_size == 64);
}

TEST_CASE("config: chat template, given or the default") {
    json j = minimal();
    auto d = parse_config(j.dump(), "config.json");
    CHECK_FALSE(d.chat_template.from_config);
    CHECK(d.chat_template.user == "User: {content}<|endofchunk|>");
    CHECK(d.chat_template.assistant == "Assistant: {content}<|endofchunk|>");
    CHECK(d.chat_template.generation_prompt == "Assistant:");
    CHECK(d.chat_template.stop == std::vector<std::string>{"<|endofchunk|>"});

    j["chat_template"] = {{"user", "Q: {content}\n"}, {"generation_prompt", "A:"}, {"stop", {"\n", "<|endofchunk|>"}}};
    auto c = parse_config(j.dump(), "config.json");
    CHECK(c.chat_template.from_config);
    CHECK(c.chat_template.user == "Q: {content}\n");
    CHECK(c.chat_template.system == "{content}\n");  // fields not given keep the default
    CHECK(c.chat_template.generation_prompt == "A:");
    CHECK(c.chat_template.stop == std::vector<std::string>{"\n", "<|endofchunk|>"});

    j = minimal();
    j["chat_template"] = "User: {content}";
    CHECK_CONFIG_ERROR(j, "chat_template: must be an object");
    j = minimal();
    j["chat_template"] = {{"user", 3}};
    CHECK_CONFIG_ERROR(j, "chat_template.user: must be a string, found integer");
    j = minimal();
    j["chat_template"] = {{"assistant", "Assistant:"}};
    CHECK_CONFIG_ERROR(j, "chat_template.assistant: must contain {content}");
    j = minimal();
    j["chat_template"] = {{"stop", "<|endofchunk|>"}};
    CHECK_CONFIG_ERROR(j, "chat_template.stop: must be a list of strings, found string");
    j = minimal();
    j["chat_template"] = {{"stop", {"a", 1}}};
    CHECK_CONFIG_ERROR(j, "chat_template.stop: must be a list of strings, found an element of type integer");
    j = minimal();
    j["chat_template"] = {{"stop", {""}}};
    CHECK_CONFIG_ERROR(j, "chat_template.stop: contains an empty string");
}

}  // namespace test_config

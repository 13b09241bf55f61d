#pragma once
// config.json of a model directory (SPEC.md section 1), read into one
// normalised struct so the model never needs to know how a decoder family
// spells its fields.
//
// Two families of config.json are read: OpenFlamingo's as SPEC.md section 1
// lays it out, and IDEFICS's as Hugging Face releases it (model_type
// "idefics", read by read_idefics below into the same struct).
//
// Required fields of a "flamingo" config (everything else has a default):
//   model_type                         "flamingo"
//   vision_config.{image_size, patch_size, width, layers}
//   text_config.model_type             "llama", "gpt_neox", "mpt" or "mosaic_gpt"
//     llama, gpt_neox: hidden_size, num_hidden_layers, num_attention_heads,
//                      intermediate_size, vocab_size
//     mpt, mosaic_gpt: d_model, n_heads, n_layers, vocab_size
//   media_token_id, eoc_token_id
// perceiver_config and cross_attn_config may be left out entirely.
//
// Defaults are upstream's: OpenFlamingo's for the Perceiver (depth 6, 8 heads
// of 64, 64 latents, ff_mult 4) and the cross-attention (every layer, 8 heads
// of 64, ff_mult 4, attend to the immediate image only); open_clip's ViT-L-14
// as OpenFlamingo loads it (OpenAI weights: QuickGELU, OpenAI mean/std,
// head_width 64, mlp_ratio 4); and each decoder family's Hugging Face (or
// MosaicML) configuration class for its fields. A JSON null counts as absent.
//
// Sizes are sanity-capped (widths <= 65536, layers <= 1024, vocabulary and
// positions <= 2^24, ...) so that a hostile file cannot request absurd
// allocations; values that describe no working model (zero sizes, heads not
// dividing the width, ...) are errors naming the file and field path.
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/io/json.hpp"
#include "flamingo/io/mmap.hpp"

namespace flamingo::model {

using io::json;
using io::json_type_name;
using io::parse_json;
using io::MappedFile;

enum class Family { Llama, Mpt, GptNeox };
// Which model the config describes: OpenFlamingo's Flamingo or IDEFICS
// (model/idefics.hpp has what the latter does differently).
enum class Arch { OpenFlamingo, Idefics };
enum class NormType { LayerNorm, RMSNorm };

inline constexpr std::string_view family_name(Family f) {
    switch (f) {
        case Family::Llama: return "llama";
        case Family::Mpt: return "mpt";
        case Family::GptNeox: return "gpt_neox";
    }
    return "?";
}

// open_clip VisionTransformer.
struct VisionConfig {
    int image_size = 0, patch_size = 0, width = 0, layers = 0, head_width = 64;
    float mlp_ratio = 4.0f;
    int mlp_width = 0;            // int(width * mlp_ratio), computed as open_clip does (in double)
    bool quick_gelu = true;       // OpenAI CLIP weights (what OpenFlamingo uses)
    bool tokens_ln_post = false;  // ln_post on the patch tokens handed to the Perceiver
    std::array<float, 3> image_mean{0.48145466f, 0.4578275f, 0.40821073f};
    std::array<float, 3> image_std{0.26862954f, 0.26130258f, 0.27577711f};
    // IDEFICS: Hugging Face CLIP names, the class token handed on with the
    // patches (no ln_post), and the image resized to image_size without a crop.
    bool hf_clip = false;
    float layer_norm_eps = 1e-5f;

    int heads() const { return width / head_width; }
    int grid_size() const { return image_size / patch_size; }
    int num_patches() const { return grid_size() * grid_size(); }
    int num_tokens() const { return num_patches() + (hf_clip ? 1 : 0); }  // tokens handed to the Perceiver
};

// OpenFlamingo PerceiverResampler; works at the vision width.
struct PerceiverConfig {
    int depth = 6, heads = 8, dim_head = 64, num_latents = 64, ff_mult = 4;
    std::optional<int> max_num_media, max_num_frames;  // media_time_embs / frame_embs rows, when present
    // IDEFICS: its names, separate k/v projections, a ReLU MLP, and with
    // qk_layer_norms (qk_layer_norms_perceiver) LayerNorms of each head's q and k.
    bool idefics = false, qk_layer_norms = false;
    int inner_dim() const { return heads * dim_head; }
};

// OpenFlamingo GatedCrossAttentionBlock.
struct CrossAttnConfig {
    int every_n_layers = 1, heads = 8, dim_head = 64, ff_mult = 4;
    bool only_attend_immediate_media = true;
    // IDEFICS: blocks before layers 0, n, 2n, ... (not n-1, 2n-1, ...), their
    // gates tanh(alpha) per channel (alpha_type "vector") or one float, and
    // RMSNorms of each head's q and k (qk_layer_norms).
    bool before_multiples = false, alpha_vector = false, qk_layer_norms = false;
    int inner_dim() const { return heads * dim_head; }
    // Decoder layer i (0-based) has a cross-attention block before it.
    bool has_cross_attn(int layer) const {
        return before_multiples ? layer % every_n_layers == 0 : (layer + 1) % every_n_layers == 0;
    }
};

// The language model, whatever its family.
struct TextConfig {
    Family family = Family::Llama;
    std::string model_type;  // as written: "llama", "gpt_neox", "mpt" or "mosaic_gpt"
    int hidden_size = 0, num_layers = 0, num_heads = 0;
    int num_kv_heads = 0;  // LLaMA num_key_value_heads, MPT multi-query/grouped-query; else num_heads
    int head_dim = 0;      // LLaMA may set it; else hidden_size / num_heads
    int intermediate_size = 0;  // MLP width (MPT: expansion_ratio * d_model)
    int vocab_size = 0;         // as configured; the weights' shapes are authoritative
    int max_positions = 0;      // max_position_embeddings / max_seq_len: the context limit

    NormType norm = NormType::LayerNorm;
    float norm_eps = 1e-5f;
    bool norm_bias = true;  // LayerNorm has a bias (MPT no_bias removes it)
    std::string hidden_act;  // Hugging Face activation name: "silu", "gelu", ...
    bool attention_bias = false, mlp_bias = false;
    bool tie_word_embeddings = false;  // output head is the token embedding

    // Rotary embeddings (LLaMA, GPT-NeoX).
    float rope_theta = 10000.0f;
    float rotary_pct = 1.0f;  // GPT-NeoX rotates the first rotary_pct of each head
    int rotary_dim = 0;       // rotated dimensions per head: int(head_dim * rotary_pct) as upstream, 0 for MPT
    bool uses_rope() const { return family != Family::Mpt; }

    // GPT-NeoX.
    bool use_parallel_residual = false;

    // MPT / mosaic_gpt.
    bool alibi = false;
    float alibi_bias_max = 8.0f;
    bool learned_pos_emb = false;  // wpe, when alibi is off
    std::optional<float> clip_qkv;
    bool qk_ln = false;
    std::optional<float> softmax_scale;  // else 1/sqrt(head_dim)
    std::optional<float> logit_scale;    // logits multiplied by it
    bool no_bias = false;
};

// How a conversation becomes an interleaved prompt (config.json "chat_template",
// SPEC section 5): each message is its role's string with {content} replaced by
// the message's text (images as <image> in place); the prompt ends with
// generation_prompt; generation stops at any stop string's token or at
// eoc_token_id. A model without one gets these defaults.
struct ChatTemplate {
    std::string system = "{content}\n";
    std::string user = "User: {content}<|endofchunk|>";
    std::string assistant = "Assistant: {content}<|endofchunk|>";
    std::string generation_prompt = "Assistant:";
    std::vector<std::string> stop = {"<|endofchunk|>"};
    bool from_config = false;  // false: the defaults above
};

struct Config {
    Arch arch = Arch::OpenFlamingo;
    int additional_vocab_size = 0;  // IDEFICS: rows of additional_embedding / additional_fc after the vocabulary
    VisionConfig vision;
    PerceiverConfig perceiver;
    CrossAttnConfig cross_attn;
    TextConfig text;
    int media_token_id = 0, eoc_token_id = 0;  // IDEFICS: <image> as its tokenizer.json has it (set at load), eos_token_id
    // IDEFICS: </s> (eos_token_id): its processor cuts the text after one off
    // from the images until the next <image> (idefics::cut_after_doc_end). -1: none.
    int doc_end_token_id = -1;
    ChatTemplate chat_template;
    json text_config_raw;  // text_config as written
};

namespace detail {

inline constexpr std::int64_t kMaxWidth = 65536;
inline constexpr std::int64_t kMaxFF = 1 << 20;
inline constexpr std::int64_t kMaxLayers = 1024;
inline constexpr std::int64_t kMaxHeads = 4096;
inline constexpr std::int64_t kMaxVocab = 1 << 24;
inline constexpr std::int64_t kMaxPositions = 1 << 24;
inline constexpr std::int64_t kMaxImageSize = 8192;

// Typed access to one JSON object's fields, with errors "SOURCE: PATH.FIELD: problem".
class Fields {
public:
    Fields(const json* obj, std::string source, std::string path)
        : obj_(obj), source_(std::move(source)), path_(std::move(path)) {}

    template <class... Parts>
    [[noreturn]] void bad(std::string_view key, Parts&&... parts) const {
        fail(ErrorKind::Config, source_, ": ", where(key), ": ", std::forward<Parts>(parts)...);
    }
    std::string where(std::string_view key) const { return path_.empty() ? std::string(key) : path_ + "." + std::string(key); }

    // The value, or nullptr when absent or null.
    const json* get(std::string_view key) const {
        if (!obj_) return nullptr;
        auto it = obj_->find(key);
        if (it == obj_->end() || it->is_null()) return nullptr;
        return &*it;
    }
    const json& need(std::string_view key) const {
        const json* v = get(key);
        if (!v) bad(key, "required field missing");
        return *v;
    }

    // A nested object; absent or null gives an empty one.
    Fields object(std::string_view key) const {
        const json* v = get(key);
        if (v && !v->is_object()) bad(key, "must be an object, found ", json_type_name(*v));
        return Fields(v, source_, where(key));
    }
    bool has(std::string_view key) const { return get(key) != nullptr; }

    int integer(std::string_view key, const json& v, std::int64_t lo, std::int64_t hi) const {
        if (!v.is_number_integer()) bad(key, "must be an integer, found ", json_type_name(v));
        if (v.is_number_unsigned() && v.get<std::uint64_t>() > std::uint64_t(hi))
            bad(key, "is too large (", v.get<std::uint64_t>(), "; the limit is ", hi, ")");
        std::int64_t x = v.get<std::int64_t>();
        if (x < lo) {
            if (lo == 1) bad(key, "must be positive, found ", x);
            bad(key, "must be at least ", lo, ", found ", x);
        }
        if (x > hi) bad(key, "is too large (", x, "; the limit is ", hi, ")");
        return int(x);
    }
    int req_int(std::string_view key, std::int64_t lo, std::int64_t hi) const { return integer(key, need(key), lo, hi); }
    int opt_int(std::string_view key, int def, std::int64_t lo, std::int64_t hi) const {
        const json* v = get(key);
        return v ? integer(key, *v, lo, hi) : def;
    }
    std::optional<int> nullable_int(std::string_view key, std::int64_t lo, std::int64_t hi) const {
        const json* v = get(key);
        if (!v) return std::nullopt;
        return integer(key, *v, lo, hi);
    }

    double number(std::string_view key, const json& v) const {
        if (!v.is_number()) bad(key, "must be a number, found ", json_type_name(v));
        double x = v.get<double>();
        if (!std::isfinite(x)) bad(key, "must be finite");
        return x;
    }
    // A number in (0, hi].
    double opt_positive(std::string_view key, double def, double hi = 1e30) const {
        const json* v = get(key);
        if (!v) return def;
        double x = number(key, *v);
        if (!(x > 0)) bad(key, "must be positive, found ", x);
        if (x > hi) bad(key, "is too large (", x, "; the limit is ", hi, ")");
        return x;
    }
    std::optional<float> nullable_positive(std::string_view key) const {
        if (!has(key)) return std::nullopt;
        return float(opt_positive(key, 0));
    }

    bool opt_bool(std::string_view key, bool def) const {
        const json* v = get(key);
        if (!v) return def;
        if (!v->is_boolean()) bad(key, "must be true or false, found ", json_type_name(*v));
        return v->get<bool>();
    }
    std::string opt_str(std::string_view key, std::string def) const {
        const json* v = get(key);
        if (!v) return def;
        if (!v->is_string()) bad(key, "must be a string, found ", json_type_name(*v));
        return v->get<std::string>();
    }
    std::string req_str(std::string_view key) const {
        const json& v = need(key);
        if (!v.is_string()) bad(key, "must be a string, found ", json_type_name(v));
        return v.get<std::string>();
    }

    // image_size / patch_size: an integer, or [h, w] with h == w (square only).
    int square(std::string_view key, bool required, int def, std::int64_t hi) const {
        const json* v = get(key);
        if (!v) {
            if (required) bad(key, "required field missing");
            return def;
        }
        if (v->is_array()) {
            if (v->size() != 2) bad(key, "must be an integer or [height, width]");
            int h = integer(key, (*v)[0], 1, hi), w = integer(key, (*v)[1], 1, hi);
            if (h != w) bad(key, "non-square sizes are not supported (", h, " x ", w, ")");
            return h;
        }
        return integer(key, *v, 1, hi);
    }

    std::array<float, 3> triple(std::string_view key, std::array<float, 3> def, bool positive) const {
        const json* v = get(key);
        if (!v) return def;
        if (!v->is_array() || v->size() != 3) bad(key, "must be a list of 3 numbers (R, G, B)");
        std::array<float, 3> r{};
        for (int i = 0; i < 3; ++i) {
            double x = number(key, (*v)[i]);
            if (positive && !(x > 0)) bad(key, "must be positive, found ", x);
            r[i] = float(x);
        }
        return r;
    }

private:
    const json* obj_;
    std::string source_, path_;
};

inline VisionConfig read_vision(const Fields& f) {
    VisionConfig v;
    v.image_size = f.square("image_size", true, 0, kMaxImageSize);
    v.patch_size = f.square("patch_size", true, 0, kMaxImageSize);
    if (v.patch_size > v.image_size)
        f.bad("patch_size", "(", v.patch_size, ") is larger than image_size (", v.image_size, ")");
    if (v.image_size % v.patch_size != 0)
        f.bad("patch_size", "image_size (", v.image_size, ") is not a multiple of patch_size (", v.patch_size, ")");
    v.width = f.req_int("width", 1, kMaxWidth);
    if (f.has("layers") && !f.need("layers").is_number_integer())
        f.bad("layers", "must be an integer (only ViT towers are supported), found ", json_type_name(f.need("layers")));
    v.layers = f.req_int("layers", 1, kMaxLayers);
    v.head_width = f.opt_int("head_width", 64, 1, kMaxWidth);
    if (v.width % v.head_width != 0)
        f.bad("head_width", "(", v.head_width, ") does not divide width (", v.width, ")");
    const double ratio = f.opt_positive("mlp_ratio", 4.0, 256.0);
    v.mlp_ratio = float(ratio);
    v.mlp_width = int(double(v.width) * ratio);
    if (v.mlp_width < 1 || v.mlp_width > kMaxFF)
        f.bad("mlp_ratio", "gives an MLP width of ", v.mlp_width, ", outside [1, ", kMaxFF, "]");
    v.quick_gelu = f.opt_bool("quick_gelu", true);
    v.tokens_ln_post = f.opt_bool("tokens_ln_post", false);
    v.image_mean = f.triple("image_mean", v.image_mean, false);
    v.image_std = f.triple("image_std", v.image_std, true);

    // open_clip options that change what the tower computes and that we do not implement.
    for (const char* k : {"input_patchnorm", "global_average_pool", "attentional_pool", "no_ln_pre", "final_ln_after_pool"})
        if (f.opt_bool(k, false)) f.bad(k, "true is not supported");
    if (f.has("ls_init_value")) f.bad("ls_init_value", "layer scale is not supported (must be null)");
    if (f.has("timm_model_name")) f.bad("timm_model_name", "timm towers are not supported (must be null)");
    if (auto p = f.opt_str("pool_type", "tok"); p != "tok") f.bad("pool_type", "\"", p, "\" is not supported (only \"tok\")");
    if (auto p = f.opt_str("pos_embed_type", "learnable"); p != "learnable")
        f.bad("pos_embed_type", "\"", p, "\" is not supported (only \"learnable\")");
    return v;
}

inline PerceiverConfig read_perceiver(const Fields& f) {
    PerceiverConfig p;
    p.depth = f.opt_int("depth", p.depth, 1, kMaxLayers);
    p.heads = f.opt_int("heads", p.heads, 1, kMaxHeads);
    p.dim_head = f.opt_int("dim_head", p.dim_head, 1, kMaxWidth);
    if (std::int64_t(p.heads) * p.dim_head > kMaxWidth)
        f.bad("heads", "heads x dim_head (", std::int64_t(p.heads) * p.dim_head, ") exceeds ", kMaxWidth);
    p.num_latents = f.opt_int("num_latents", p.num_latents, 1, kMaxWidth);
    p.ff_mult = f.opt_int("ff_mult", p.ff_mult, 1, 64);
    p.max_num_media = f.nullable_int("max_num_media", 1, kMaxWidth);
    p.max_num_frames = f.nullable_int("max_num_frames", 1, kMaxWidth);
    return p;
}

inline CrossAttnConfig read_cross_attn(const Fields& f) {
    CrossAttnConfig c;
    c.every_n_layers = f.opt_int("every_n_layers", c.every_n_layers, 1, kMaxLayers);
    c.heads = f.opt_int("heads", c.heads, 1, kMaxHeads);
    c.dim_head = f.opt_int("dim_head", c.dim_head, 1, kMaxWidth);
    if (std::int64_t(c.heads) * c.dim_head > kMaxWidth)
        f.bad("heads", "heads x dim_head (", std::int64_t(c.heads) * c.dim_head, ") exceeds ", kMaxWidth);
    c.ff_mult = f.opt_int("ff_mult", c.ff_mult, 1, 64);
    c.only_attend_immediate_media = f.opt_bool("only_attend_immediate_media", true);
    return c;
}

// Hugging Face activation names we know of; the model rejects those it does not implement.
inline void check_activation(const Fields& f, std::string_view key, const std::string& act) {
    for (const char* known : {"silu", "swish", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu"})
        if (act == known) return;
    f.bad(key, "unknown activation \"", act, "\"");
}

// rope_scaling / rope_parameters: only plain RoPE is implemented.
inline void check_rope_type(const Fields& f, std::string_view key) {
    if (!f.has(key)) return;
    Fields r = f.object(key);
    std::string type = r.opt_str("rope_type", r.opt_str("type", "default"));
    if (type != "default") f.bad(key, "RoPE scaling \"", type, "\" is not supported");
}

inline void read_heads(TextConfig& t, const Fields& f, std::string_view heads_key, std::string_view width_key) {
    if (t.num_heads > t.hidden_size) f.bad(heads_key, "(", t.num_heads, ") exceeds ", width_key, " (", t.hidden_size, ")");
    if (t.hidden_size % t.num_heads != 0)
        f.bad(heads_key, "(", t.num_heads, ") does not divide ", width_key, " (", t.hidden_size, ")");
    t.head_dim = t.hidden_size / t.num_heads;
}

inline void read_llama(TextConfig& t, const Fields& f) {
    t.hidden_size = f.req_int("hidden_size", 1, kMaxWidth);
    t.num_layers = f.req_int("num_hidden_layers", 1, kMaxLayers);
    t.num_heads = f.req_int("num_attention_heads", 1, kMaxHeads);
    read_heads(t, f, "num_attention_heads", "hidden_size");
    t.num_kv_heads = f.opt_int("num_key_value_heads", t.num_heads, 1, kMaxHeads);
    if (t.num_heads % t.num_kv_heads != 0)
        f.bad("num_key_value_heads", "(", t.num_kv_heads, ") does not divide num_attention_heads (", t.num_heads, ")");
    t.head_dim = f.opt_int("head_dim", t.head_dim, 1, kMaxWidth);
    if (std::int64_t(t.head_dim) * t.num_heads > 4 * kMaxWidth)
        f.bad("head_dim", "head_dim x num_attention_heads is too large");
    t.intermediate_size = f.req_int("intermediate_size", 1, kMaxFF);
    t.vocab_size = f.req_int("vocab_size", 1, kMaxVocab);
    t.max_positions = f.opt_int("max_position_embeddings", 2048, 1, kMaxPositions);
    t.norm = NormType::RMSNorm;
    t.norm_eps = f.opt_positive("rms_norm_eps", 1e-6, 1.0);
    t.norm_bias = false;
    t.hidden_act = f.opt_str("hidden_act", "silu");
    check_activation(f, "hidden_act", t.hidden_act);
    t.attention_bias = f.opt_bool("attention_bias", false);
    t.mlp_bias = f.opt_bool("mlp_bias", false);
    t.tie_word_embeddings = f.opt_bool("tie_word_embeddings", false);
    check_rope_type(f, "rope_scaling");
    check_rope_type(f, "rope_parameters");
    t.rope_theta = f.object("rope_parameters").opt_positive("rope_theta", f.opt_positive("rope_theta", 10000.0));
    t.rotary_pct = 1.0f;
    t.rotary_dim = t.head_dim;
    if (t.rotary_dim % 2 != 0) f.bad("head_dim", "rotary embeddings need an even head dimension, found ", t.head_dim);
}

inline void read_gpt_neox(TextConfig& t, const Fields& f) {
    t.hidden_size = f.req_int("hidden_size", 1, kMaxWidth);
    t.num_layers = f.req_int("num_hidden_layers", 1, kMaxLayers);
    t.num_heads = f.req_int("num_attention_heads", 1, kMaxHeads);
    read_heads(t, f, "num_attention_heads", "hidden_size");
    t.num_kv_heads = t.num_heads;
    t.intermediate_size = f.req_int("intermediate_size", 1, kMaxFF);
    t.vocab_size = f.req_int("vocab_size", 1, kMaxVocab);
    t.max_positions = f.opt_int("max_position_embeddings", 2048, 1, kMaxPositions);
    t.norm = NormType::LayerNorm;
    t.norm_eps = f.opt_positive("layer_norm_eps", 1e-5, 1.0);
    t.norm_bias = true;
    t.hidden_act = f.opt_str("hidden_act", "gelu");
    check_activation(f, "hidden_act", t.hidden_act);
    t.attention_bias = f.opt_bool("attention_bias", true);
    t.mlp_bias = true;
    t.tie_word_embeddings = f.opt_bool("tie_word_embeddings", false);
    t.use_parallel_residual = f.opt_bool("use_parallel_residual", true);
    check_rope_type(f, "rope_scaling");
    check_rope_type(f, "rope_parameters");
    // Older files say rotary_emb_base / rotary_pct; newer ones rope_theta /
    // partial_rotary_factor, possibly inside rope_parameters (which wins).
    Fields rp = f.object("rope_parameters");
    float theta = f.opt_positive("rotary_emb_base", 10000.0);
    theta = f.opt_positive("rope_theta", theta);
    t.rope_theta = rp.opt_positive("rope_theta", theta);
    double pct = f.opt_positive("rotary_pct", 0.25, 1.0);
    pct = f.opt_positive("partial_rotary_factor", pct, 1.0);
    pct = rp.opt_positive("partial_rotary_factor", pct, 1.0);
    t.rotary_pct = float(pct);
    t.rotary_dim = int(double(t.head_dim) * pct);  // Python's int(head_size * rotary_pct), in double
    if (t.rotary_dim < 2 || t.rotary_dim % 2 != 0)
        f.bad("rotary_pct", "(", pct, ") gives ", t.rotary_dim, " rotary dimensions of the ", t.head_dim,
              " per head; RoPE needs an even number, at least 2");
}

// MosaicML's MPT (model_type "mpt", attention options in attn_config) and its
// predecessor MosaicGPT (model_type "mosaic_gpt", as in MPT-1B-RedPajama:
// the same options at the top level with attn_ prefixes, mlp_ratio for
// expansion_ratio). Both tie the output head to wte.
inline void read_mpt(TextConfig& t, const Fields& f, bool mosaic_gpt) {
    t.hidden_size = f.req_int("d_model", 1, kMaxWidth);
    t.num_heads = f.req_int("n_heads", 1, kMaxHeads);
    t.num_layers = f.req_int("n_layers", 1, kMaxLayers);
    read_heads(t, f, "n_heads", "d_model");
    t.vocab_size = f.req_int("vocab_size", 1, kMaxVocab);
    t.max_positions = f.opt_int("max_seq_len", 2048, 1, kMaxPositions);
    t.no_bias = f.opt_bool("no_bias", false);
    t.attention_bias = t.mlp_bias = t.norm_bias = !t.no_bias;
    t.hidden_act = "gelu";  // nn.GELU(approximate="none")
    t.tie_word_embeddings = f.opt_bool("tie_word_embeddings", true);
    t.norm_eps = f.opt_positive("norm_eps", 1e-5, 1.0);
    t.num_kv_heads = t.num_heads;

    const char* ratio_key = mosaic_gpt ? "mlp_ratio" : "expansion_ratio";
    double ratio = f.opt_positive(ratio_key, 4.0, double(kMaxFF));
    double ff = double(t.hidden_size) * ratio;
    Fields ffn = f.object("ffn_config");
    if (auto type = ffn.opt_str("ffn_type", "mptmlp"); type != "mptmlp")
        ffn.bad("ffn_type", "\"", type, "\" is not supported (only \"mptmlp\")");
    if (ffn.has("ffn_act_fn")) ffn.bad("ffn_act_fn", "custom activations are not supported");
    if (ffn.has("ffn_hidden_size")) {
        t.intermediate_size = ffn.req_int("ffn_hidden_size", 1, kMaxFF);
    } else {
        if (ff != std::floor(ff)) f.bad(ratio_key, "d_model x ", ratio_key, " (", ff, ") is not an integer");
        if (ff < 1 || ff > double(kMaxFF)) f.bad(ratio_key, "gives an MLP width of ", ff, ", outside [1, ", kMaxFF, "]");
        t.intermediate_size = int(ff);
    }

    if (mosaic_gpt) {
        t.norm = NormType::LayerNorm;  // low_precision_layernorm only changes the compute dtype
        t.alibi = f.opt_bool("alibi", false);
        t.alibi_bias_max = f.opt_positive("alibi_bias_max", 8.0);
        t.clip_qkv = f.nullable_positive("attn_clip_qkv");
        t.qk_ln = f.opt_bool("attn_qk_ln", false);
        t.softmax_scale = f.nullable_positive("softmax_scale");
        if (f.opt_bool("prefix_lm", false)) f.bad("prefix_lm", "prefix LM attention is not supported");
        t.learned_pos_emb = !t.alibi;
    } else {
        std::string norm = f.opt_str("norm_type", "low_precision_layernorm");
        if (norm == "low_precision_layernorm" || norm == "layernorm") {
            t.norm = NormType::LayerNorm;
        } else if (norm == "rmsnorm" || norm == "low_precision_rmsnorm") {
            t.norm = NormType::RMSNorm;
        } else {
            f.bad("norm_type", "unknown norm type \"", norm, "\"");
        }
        Fields a = f.object("attn_config");
        t.alibi = a.opt_bool("alibi", false);
        t.alibi_bias_max = a.opt_positive("alibi_bias_max", 8.0);
        t.clip_qkv = a.nullable_positive("clip_qkv");
        t.qk_ln = a.opt_bool("qk_ln", false);
        t.softmax_scale = a.nullable_positive("softmax_scale");
        if (a.opt_bool("prefix_lm", false)) a.bad("prefix_lm", "prefix LM attention is not supported");
        if (a.opt_bool("rope", false)) a.bad("rope", "RoPE in MPT is not supported");
        if (a.has("sliding_window_size") && a.opt_int("sliding_window_size", -1, -1, kMaxPositions) != -1)
            a.bad("sliding_window_size", "sliding-window attention is not supported");
        std::string type = a.opt_str("attn_type", "multihead_attention");
        if (type == "multiquery_attention") {
            t.num_kv_heads = 1;
        } else if (type == "grouped_query_attention") {
            t.num_kv_heads = a.opt_int("kv_n_heads", 1, 1, kMaxHeads);
            if (t.num_heads % t.num_kv_heads != 0)
                a.bad("kv_n_heads", "(", t.num_kv_heads, ") does not divide n_heads (", t.num_heads, ")");
        } else if (type != "multihead_attention") {
            a.bad("attn_type", "unknown attention type \"", type, "\"");
        }
        // MPTConfig turns learned positions off when ALiBi is on.
        t.learned_pos_emb = f.opt_bool("learned_pos_emb", true) && !t.alibi;
    }

    // logit_scale: a number, or "inv_sqrt_d_model" for 1/sqrt(d_model).
    if (const json* ls = f.get("logit_scale")) {
        if (ls->is_string()) {
            if (ls->get_ref<const std::string&>() != "inv_sqrt_d_model")
                f.bad("logit_scale", "unknown value \"", ls->get_ref<const std::string&>(),
                      "\" (a number or \"inv_sqrt_d_model\")");
            t.logit_scale = float(1.0 / std::sqrt(double(t.hidden_size)));
        } else {
            double x = f.number("logit_scale", *ls);
            if (x == 0 || std::abs(x) > 1e30) f.bad("logit_scale", "must be non-zero and at most 1e30 in magnitude");
            t.logit_scale = float(x);
        }
    }
    t.rotary_pct = 0.0f;
    t.rotary_dim = 0;
}

inline ChatTemplate read_chat_template(const Fields& f) {
    ChatTemplate t;
    t.from_config = true;
    auto role = [&](const char* key, std::string& out) {
        out = f.opt_str(key, out);
        if (std::string_view(key) != "generation_prompt" && out.find("{content}") == std::string::npos)
            f.bad(key, "must contain {content}");
    };
    role("system", t.system);
    role("user", t.user);
    role("assistant", t.assistant);
    role("generation_prompt", t.generation_prompt);
    if (const json* v = f.get("stop")) {
        if (!v->is_array()) f.bad("stop", "must be a list of strings, found ", json_type_name(*v));
        t.stop.clear();
        for (const json& s : *v) {
            if (!s.is_string()) f.bad("stop", "must be a list of strings, found an element of type ", json_type_name(s));
            if (s.get_ref<const std::string&>().empty()) f.bad("stop", "contains an empty string");
            t.stop.push_back(s.get<std::string>());
        }
    }
    return t;
}

// IDEFICS as Hugging Face releases it (configuration_idefics.py): the LLaMA
// decoder's fields at the top level with additional_vocab_size,
// cross_layer_interval, alpha_type, qk_layer_norms and use_resampler;
// vision_config {embed_dim, image_size, patch_size, intermediate_size,
// num_hidden_layers, num_attention_heads, hidden_act, layer_norm_eps};
// perceiver_config {resampler_n_latents, resampler_depth, resampler_n_heads,
// resampler_head_dim, qk_layer_norms_perceiver}. Defaults are the config
// class's. The token ids are not in the file: media_token_id is resolved from
// tokenizer.json when the model loads.
inline void read_idefics(Config& c, const Fields& top) {
    c.arch = Arch::Idefics;
    Fields v = top.object("vision_config");
    VisionConfig& vc = c.vision;
    vc.hf_clip = true;
    vc.width = v.opt_int("embed_dim", v.opt_int("hidden_size", 768, 1, kMaxWidth), 1, kMaxWidth);
    vc.image_size = v.opt_int("image_size", 224, 1, kMaxImageSize);
    vc.patch_size = v.opt_int("patch_size", 14, 1, kMaxImageSize);
    if (vc.patch_size > vc.image_size || vc.image_size % vc.patch_size != 0)
        v.bad("patch_size", "image_size (", vc.image_size, ") is not a multiple of patch_size (", vc.patch_size, ")");
    vc.layers = v.opt_int("num_hidden_layers", 32, 1, kMaxLayers);
    const int vheads = v.opt_int("num_attention_heads", 16, 1, kMaxHeads);
    if (vc.width % vheads != 0)
        v.bad("num_attention_heads", "(", vheads, ") does not divide embed_dim (", vc.width, ")");
    vc.head_width = vc.width / vheads;
    vc.mlp_width = v.opt_int("intermediate_size", 5120, 1, kMaxFF);
    vc.mlp_ratio = float(vc.mlp_width) / float(vc.width);
    const std::string act = v.opt_str("hidden_act", "gelu");
    if (act != "gelu" && act != "quick_gelu") v.bad("hidden_act", "\"", act, "\" is not supported (gelu or quick_gelu)");
    vc.quick_gelu = act == "quick_gelu";
    vc.layer_norm_eps = float(v.opt_positive("layer_norm_eps", 1e-5, 1.0));
    if (v.opt_int("num_channels", 3, 1, 16) != 3) v.bad("num_channels", "only 3 (RGB) is supported");

    if (!top.opt_bool("use_resampler", false))
        top.bad("use_resampler", "IDEFICS without its Perceiver Resampler is not supported (every release has one)");
    Fields p = top.object("perceiver_config");
    PerceiverConfig& pc = c.perceiver;
    pc.depth = p.opt_int("resampler_depth", 6, 1, kMaxLayers);
    pc.heads = p.opt_int("resampler_n_heads", 16, 1, kMaxHeads);
    pc.dim_head = p.opt_int("resampler_head_dim", 96, 1, kMaxWidth);
    if (std::int64_t(pc.heads) * pc.dim_head > kMaxWidth) p.bad("resampler_n_heads", "heads x head_dim is too large");
    pc.num_latents = p.opt_int("resampler_n_latents", 64, 1, kMaxWidth);
    pc.idefics = true;
    pc.qk_layer_norms = p.opt_bool("qk_layer_norms_perceiver", false);
    pc.ff_mult = 4;  // its MLP is 4 x vision_embed_dim wide
    if (top.opt_int("vision_embed_dim", vc.width, 1, kMaxWidth) != vc.width)
        top.bad("vision_embed_dim", "(", top.opt_int("vision_embed_dim", 0, 1, kMaxWidth),
                ") differs from vision_config.embed_dim (", vc.width, ")");

    TextConfig& t = c.text;
    t.family = Family::Llama;
    t.model_type = "llama";
    read_llama(t, top);
    t.rope_theta = 10000.0f;  // IdeficsEmbedding's base, whatever the file says
    if (t.num_kv_heads != t.num_heads) top.bad("num_key_value_heads", "IDEFICS has no grouped-query attention");
    if (t.tie_word_embeddings) top.bad("tie_word_embeddings", "true is not supported (no release ties them)");
    c.additional_vocab_size = top.opt_int("additional_vocab_size", 0, 0, kMaxVocab);

    CrossAttnConfig& x = c.cross_attn;
    x.before_multiples = true;
    x.every_n_layers = top.opt_int("cross_layer_interval", 1, 1, kMaxLayers);
    if (t.num_layers % x.every_n_layers != 0)
        top.bad("cross_layer_interval", "(", x.every_n_layers, ") does not divide num_hidden_layers (", t.num_layers,
                "): the model would have no block for its last cross-attention layer");
    x.heads = t.num_heads, x.dim_head = t.head_dim;
    x.only_attend_immediate_media = true;  // the processor's image_attention_mask: the latest image
    const std::string alpha = top.opt_str("alpha_type", "float");
    if (alpha != "float" && alpha != "vector") top.bad("alpha_type", "unknown value \"", alpha, "\" (float or vector)");
    x.alpha_vector = alpha == "vector";
    x.qk_layer_norms = top.opt_bool("qk_layer_norms", false);

    c.media_token_id = -1;
    c.eoc_token_id = top.opt_int("eos_token_id", 2, 0, kMaxVocab - 1);
    c.doc_end_token_id = c.eoc_token_id;
    // Without a chat_template of its own, the instruct models' dialogue
    // (their model cards' prompts), stopping at <end_of_utterance>.
    c.chat_template.system = "{content}\n";
    c.chat_template.user = "User:{content}<end_of_utterance>\n";
    c.chat_template.assistant = "Assistant:{content}<end_of_utterance>\n";
    c.chat_template.generation_prompt = "Assistant:";
    c.chat_template.stop = {"<end_of_utterance>"};
    c.text_config_raw = json::object();
}

}  // namespace detail

// Parses config.json text; `source_name` (usually the file's path) starts every error message.
inline Config parse_config(std::string_view json_text, const std::string& source_name) {
    using detail::Fields;
    json root = parse_json(json_text, source_name);
    if (!root.is_object()) fail(ErrorKind::Format, source_name, ": config must be a JSON object, found ", json_type_name(root));
    Fields top(&root, source_name, "");

    std::string type = top.req_str("model_type");
    if (type == "idefics") {
        Config c;
        detail::read_idefics(c, top);
        if (top.has("chat_template")) c.chat_template = detail::read_chat_template(top.object("chat_template"));
        return c;
    }
    if (type != "flamingo")
        top.bad("model_type", "unknown model type \"", type, "\" (expected \"flamingo\" or \"idefics\")");

    Config c;
    if (!top.has("vision_config")) top.bad("vision_config", "required field missing");
    c.vision = detail::read_vision(top.object("vision_config"));
    c.perceiver = detail::read_perceiver(top.object("perceiver_config"));
    c.cross_attn = detail::read_cross_attn(top.object("cross_attn_config"));

    if (!top.has("text_config")) top.bad("text_config", "required field missing");
    Fields text = top.object("text_config");
    TextConfig& t = c.text;
    t.model_type = text.req_str("model_type");
    if (t.model_type == "llama") {
        t.family = Family::Llama;
        detail::read_llama(t, text);
    } else if (t.model_type == "gpt_neox") {
        t.family = Family::GptNeox;
        detail::read_gpt_neox(t, text);
    } else if (t.model_type == "mpt" || t.model_type == "mosaic_gpt") {
        t.family = Family::Mpt;
        detail::read_mpt(t, text, t.model_type == "mosaic_gpt");
    } else {
        text.bad("model_type", "unknown model type \"", t.model_type, "\" (expected llama, gpt_neox, mpt or mosaic_gpt)");
    }
    if (c.cross_attn.every_n_layers > t.num_layers)
        fail(ErrorKind::Config, source_name, ": cross_attn_config.every_n_layers (", c.cross_attn.every_n_layers,
             ") exceeds the decoder's ", t.num_layers, " layers: no layer would see the images");
    c.text_config_raw = root["text_config"];

    c.media_token_id = top.req_int("media_token_id", 0, detail::kMaxVocab - 1);
    c.eoc_token_id = top.req_int("eoc_token_id", 0, detail::kMaxVocab - 1);
    if (c.media_token_id == c.eoc_token_id)
        top.bad("eoc_token_id", "equals media_token_id (", c.media_token_id, ")");
    if (top.has("chat_template")) c.chat_template = detail::read_chat_template(top.object("chat_template"));
    return c;
}

// Reads and parses a config.json file.
inline Config load_config(const std::filesystem::path& config_json) {
    MappedFile f = MappedFile::open(config_json);
    if (f.size() > (64u << 20)) fail(ErrorKind::Limit, config_json.string(), ": ", f.size(), " bytes is too large for a config file");
    return parse_config(f.text(), config_json.string());
}

}  // namespace flamingo::model

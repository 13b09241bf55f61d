// End-to-end benchmark at OpenFlamingo-3B shape (ViT-L/14, Perceiver, MPT-1B
// with cross-attention on all 24 layers; ~2.6 B parameters), with random
// weights: speed does not depend on the values, so no real checkpoint is needed.
// Also at IDEFICS-9B shape (--make-idefics, --idefics: see usage()): decoding
// with bf16, q8 and q4 weights on a one-image prompt.
//
//   bench_e2e --make-model /tmp/flamingo-e2e     writes of3b-f32/ and of3b-bf16/ there (~15.4 GB)
//   bench_e2e [--dir /tmp/flamingo-e2e] [--only f32|bf16|q8|q4] [--threads 2] [--new-tokens 32] [--reps 2]
//             [--save-logits]
// (--only q8|q4: of3b-bf16 quantised at load; not run without --only.)
//
// The directory may also come from FLAMINGO_E2E_DIR. For each weight type the
// measurement runs in a child process of its own (so its peak RSS is its own):
//   - image encoding (ViT + Perceiver) of 1 and of 5 images;
//   - prompt reading of a 4-shot prompt (5 <image> + 128 other tokens, laid out
//     as "<image>caption<|endofchunk|>" x 4 + "<image>query"): projection of the
//     visual tokens for every cross-attention layer, then the prompt's forward
//     pass with the logits of its last position;
//   - greedy decoding of --new-tokens tokens (stop token ignored), ms/token;
//   - the machine's read bandwidth (all threads, streaming sum over 1 GiB), and
//     decoding as a fraction of it: weight bytes read per token / time per token;
//   - peak RSS (VmHWM, mapped weights included) next to weights + KV caches.
// Every timed figure is the best of --reps runs after a warm-up run. The table
// is printed with the load average seen during each run: the 2 cores are shared.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <xsimd/xsimd.hpp>

#include <flamingo/core/dtype.hpp>
#include <flamingo/core/executor.hpp>
#include <flamingo/generate/session.hpp>
#include <flamingo/io/json.hpp>
#include <flamingo/io/npy.hpp>
#include <flamingo/io/safetensors.hpp>
#include <flamingo/model/flamingo.hpp>

namespace fs = std::filesystem;
using flamingo::check;
using flamingo::fail;

namespace {

// ---------------------------------------------------------------------------
// Random numbers: splitmix64, counter-based so that chunks fill in parallel
// and the result does not depend on the thread count.
// ---------------------------------------------------------------------------

inline std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
inline std::uint64_t random_u64(std::uint64_t seed, std::uint64_t i) {
    return mix64(seed + (i + 1) * 0x9e3779b97f4a7c15ULL);
}
// Approximately N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), centred
// and scaled to unit variance. Cheap, and close enough for weights.
inline float approx_normal(std::uint64_t seed, std::uint64_t i) {
    const std::uint64_t r = random_u64(seed, i);
    const float s = float((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    return (s - 131070.0f) * (1.0f / 37837.23f);  // mean 4 * 32767.5, std 65536 / sqrt(3)
}

// ---------------------------------------------------------------------------
// The random-weight model directories
// ---------------------------------------------------------------------------

enum class Init { Normal, Ones, Zeros, Gate };

struct Spec {
    std::string name;
    std::vector<std::size_t> shape;
    Init init;
    std::size_t numel() const {
        std::size_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
};

struct GenSizes {
    std::size_t vision_layers = 24, text_layers = 24, vocab = 50282;
    bool vision_layers_given = false, text_layers_given = false;
    std::size_t cross_interval = 0;  // --make-idefics: 0 keeps the config's cross_layer_interval
};

constexpr float kWeightStd = 0.02f;  // N(0, 0.02) like the LM's init_std; LayerNorms at 1, gates tanh(0.5)
constexpr float kGate = 0.5f;
constexpr std::size_t kEoc = 50280, kMedia = 50281;  // <|endofchunk|>, <image>

// Tensor names and shapes of an OpenFlamingo-3B model directory (SPEC.md section 1).
std::vector<Spec> of3b_specs(const GenSizes& g) {
    std::vector<Spec> t;
    auto add = [&](std::string name, std::vector<std::size_t> shape, Init init = Init::Normal) {
        t.push_back({std::move(name), std::move(shape), init});
    };
    auto ln = [&](const std::string& p, std::size_t d, bool bias) {
        add(p + ".weight", {d}, Init::Ones);
        if (bias) add(p + ".bias", {d}, Init::Zeros);
    };
    const std::size_t W = 1024, M = 4096, D = 2048, F = 8192, E = 768, P = 14, G = 224 / 14;
    const std::string v = "vision_encoder.";
    add(v + "conv1.weight", {W, 3, P, P});
    add(v + "class_embedding", {W});
    add(v + "positional_embedding", {G * G + 1, W});
    ln(v + "ln_pre", W, true);
    for (std::size_t i = 0; i < g.vision_layers; ++i) {
        const std::string r = v + "transformer.resblocks." + std::to_string(i) + ".";
        ln(r + "ln_1", W, true);
        add(r + "attn.in_proj_weight", {3 * W, W});
        add(r + "attn.in_proj_bias", {3 * W}, Init::Zeros);
        add(r + "attn.out_proj.weight", {W, W});
        add(r + "attn.out_proj.bias", {W}, Init::Zeros);
        ln(r + "ln_2", W, true);
        add(r + "mlp.c_fc.weight", {M, W});
        add(r + "mlp.c_fc.bias", {M}, Init::Zeros);
        add(r + "mlp.c_proj.weight", {W, M});
        add(r + "mlp.c_proj.bias", {W}, Init::Zeros);
    }
    ln(v + "ln_post", W, true);
    add(v + "proj", {W, E});

    add("perceiver.latents", {64, W});
    for (std::size_t i = 0; i < 6; ++i) {
        const std::string p = "perceiver.layers." + std::to_string(i) + ".";
        ln(p + "0.norm_media", W, true);
        ln(p + "0.norm_latents", W, true);
        add(p + "0.to_q.weight", {512, W});
        add(p + "0.to_kv.weight", {1024, W});
        add(p + "0.to_out.weight", {W, 512});
        ln(p + "1.0", W, true);
        add(p + "1.1.weight", {4 * W, W});
        add(p + "1.3.weight", {W, 4 * W});
    }
    ln("perceiver.norm", W, true);

    add("lang_encoder.transformer.wte.weight", {g.vocab, D});
    for (std::size_t i = 0; i < g.text_layers; ++i) {
        const std::string b = "lang_encoder.transformer.blocks." + std::to_string(i) + ".";
        const std::string x = b + "gated_cross_attn_layer.";
        ln(x + "attn.norm", D, true);
        add(x + "attn.to_q.weight", {512, D});
        add(x + "attn.to_kv.weight", {1024, W});
        add(x + "attn.to_out.weight", {D, 512});
        add(x + "attn_gate", {1}, Init::Gate);
        ln(x + "ff.0", D, true);
        add(x + "ff.1.weight", {F, D});
        add(x + "ff.3.weight", {D, F});
        add(x + "ff_gate", {1}, Init::Gate);
        const std::string d = b + "decoder_layer.";  // MosaicGPT block, no_bias, attn_qk_ln
        ln(d + "ln_1", D, false);
        add(d + "attn.Wqkv.weight", {3 * D, D});
        ln(d + "attn.q_ln", D, false);
        ln(d + "attn.k_ln", D, false);
        add(d + "attn.out_proj.weight", {D, D});
        ln(d + "ln_2", D, false);
        add(d + "mlp.mlp_up.weight", {F, D});
        add(d + "mlp.mlp_down.weight", {D, F});
    }
    ln("lang_encoder.transformer.ln_f", D, false);
    return t;
}

flamingo::io::json of3b_config(const GenSizes& g) {
    using flamingo::io::json;
    json c = {
        {"model_type", "flamingo"},
        {"vision_config",
         {{"image_size", 224}, {"patch_size", 14}, {"width", 1024}, {"layers", g.vision_layers},
          {"head_width", 64}, {"mlp_ratio", 4.0}, {"quick_gelu", true}, {"tokens_ln_post", false},
          {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
          {"image_std", {0.26862954, 0.26130258, 0.27577711}}}},
        {"perceiver_config",
         {{"depth", 6}, {"heads", 8}, {"dim_head", 64}, {"num_latents", 64}, {"ff_mult", 4},
          {"max_num_media", nullptr}, {"max_num_frames", nullptr}}},
        {"cross_attn_config",
         {{"every_n_layers", 1}, {"heads", 8}, {"dim_head", 64}, {"ff_mult", 4},
          {"only_attend_immediate_media", true}}},
        // MPT-1B-RedPajama's own config (mosaic_gpt), with the enlarged vocabulary.
        {"text_config",
         {{"model_type", "mosaic_gpt"}, {"architectures", {"MosaicGPT"}}, {"d_model", 2048}, {"n_heads", 16},
          {"n_layers", g.text_layers}, {"mlp_ratio", 4}, {"max_seq_len", 2048}, {"vocab_size", g.vocab},
          {"alibi", true}, {"alibi_bias_max", 8}, {"attn_qk_ln", true}, {"attn_clip_qkv", nullptr},
          {"softmax_scale", nullptr}, {"no_bias", true}, {"logit_scale", nullptr}, {"low_precision_layernorm", true},
          {"prefix_lm", false}, {"attn_impl", "torch"}, {"attn_uses_sequence_id", false}, {"emb_pdrop", 0},
          {"resid_pdrop", 0}, {"attn_pdrop", 0}, {"embedding_fraction", 1.0}, {"init_std", 0.02},
          {"use_cache", false}, {"tokenizer_name", "EleutherAI/gpt-neox-20b"}}},
        {"media_token_id", kMedia},
        {"eoc_token_id", kEoc},
    };
    return c;
}

// GPT-2's reversible map of bytes to printable characters, as UTF-8 strings.
std::vector<std::string> byte_symbols() {
    std::vector<int> bs, cs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    cs = bs;
    for (int b = 0, n = 0; b < 256; ++b)
        if (std::find(bs.begin(), bs.end(), b) == bs.end()) bs.push_back(b), cs.push_back(256 + n++);
    std::vector<std::string> out(256);
    for (std::size_t i = 0; i < bs.size(); ++i) {
        const int c = cs[i];
        std::string s;
        if (c < 0x80) {
            s += char(c);
        } else {
            s += char(0xC0 | (c >> 6));
            s += char(0x80 | (c & 0x3F));
        }
        out[std::size_t(bs[i])] = s;
    }
    return out;
}

// A small but complete byte-level BPE tokenizer.json (GPT-NeoX style): the
// model's vocabulary has 50280 entries (<|endoftext|>, the 256 byte symbols, a
// few merges, then unreachable fillers), so the added <|endofchunk|> and
// <image> get ids 50280 and 50281 as in the model's config.
flamingo::io::json small_tokenizer() {
    using flamingo::io::json;
    const auto sym = byte_symbols();
    json vocab = json::object();
    std::size_t next = 0;
    vocab["<|endoftext|>"] = next++;
    for (const auto& s : sym) vocab[s] = next++;
    const std::string sp = sym[' '];
    const std::vector<std::pair<std::string, std::string>> merges = {
        {sp, "t"}, {"h", "e"}, {sp + "t", "he"}, {sp, "a"}, {"i", "n"}, {"e", "r"}, {"o", "n"},
        {sp, "c"}, {"a", "t"}, {sp + "c", "at"}, {sp, "d"}, {"o", "g"}, {sp + "d", "og"}};
    json merge_list = json::array();
    for (const auto& [a, b] : merges) {
        if (!vocab.contains(a + b)) vocab[a + b] = next++;
        merge_list.push_back(a + " " + b);
    }
    for (; next < kEoc; ++next) vocab["<|filler_" + std::to_string(next) + "|>"] = next;
    auto added = [](std::size_t id, const char* content) {
        return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                    {"rstrip", false}, {"normalized", false}, {"special", true}};
    };
    const json bl = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", {added(0, "<|endoftext|>"), added(kEoc, "<|endofchunk|>"), added(kMedia, "<image>")}},
            {"normalizer", {{"type", "NFC"}}},
            {"pre_tokenizer", bl},
            {"post_processor", bl},
            {"decoder", bl},
            {"model",
             {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
              {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
              {"merges", merge_list}}}};
}

void write_text(const fs::path& p, const std::string& s) {
    std::ofstream f(p, std::ios::binary);
    f << s;
    check(bool(f), p.string(), ": cannot write");
}

struct File {
    std::FILE* f = nullptr;
    fs::path path;
    explicit File(const fs::path& p) : f(std::fopen(p.c_str(), "wb")), path(p) {
        check(f != nullptr, p.string(), ": cannot open for writing: ", std::strerror(errno));
        std::setvbuf(f, nullptr, _IOFBF, 1 << 22);
    }
    ~File() {
        if (f) std::fclose(f);
    }
    void write(const void* p, std::size_t n) {
        check(std::fwrite(p, 1, n, f) == n, path.string(), ": write failed: ", std::strerror(errno));
    }
    void close() {
        check(std::fclose(f) == 0, path.string(), ": close failed: ", std::strerror(errno));
        f = nullptr;
    }
};

// The safetensors header; padded with spaces so the data starts 64-byte aligned.
std::string safetensors_header(const std::vector<Spec>& specs, std::size_t elem_bytes, const char* dtype) {
    using flamingo::io::json;
    json h = json::object();
    h["__metadata__"] = {{"format", "pt"}};
    std::size_t off = 0;
    for (const Spec& s : specs) {
        const std::size_t n = s.numel() * elem_bytes;
        h[s.name] = {{"dtype", dtype}, {"shape", s.shape}, {"data_offsets", {off, off + n}}};
        off += n;
    }
    std::string text = h.dump();
    while ((8 + text.size()) % 64 != 0) text += ' ';
    std::string out(8, '\0');
    std::uint64_t len = text.size();
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((len >> (8 * i)) & 0xff);
    return out + text;
}

// Writes the tensors' random values, in order, as f32 to *f32 (if given) and
// as bf16 (rounded to nearest even) to f16, a chunk at a time: a model far
// larger than memory streams through.
void write_tensors(const std::vector<Spec>& specs, File* f32, File& f16) {
    std::size_t total = 0;
    for (const Spec& s : specs) total += s.numel();
    const std::size_t chunk = std::size_t(1) << 24;
    std::vector<float> a(chunk);
    std::vector<flamingo::bf16> b(chunk);
    std::size_t done = 0, shown = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t k = 0; k < specs.size(); ++k) {
        const Spec& s = specs[k];
        const std::uint64_t seed = mix64(0x5eed0000ULL + k);
        for (std::size_t i0 = 0; i0 < s.numel(); i0 += chunk) {
            const std::size_t n = std::min(chunk, s.numel() - i0);
            flamingo::parallel_for(n, [&](std::size_t lo, std::size_t hi) {
                for (std::size_t i = lo; i < hi; ++i) {
                    float x = 0;
                    switch (s.init) {
                        case Init::Normal: x = kWeightStd * approx_normal(seed, i0 + i); break;
                        case Init::Ones: x = 1.0f; break;
                        case Init::Zeros: x = 0.0f; break;
                        case Init::Gate: x = kGate; break;
                    }
                    a[i] = x;
                    b[i] = flamingo::bf16(x);
                }
            });
            if (f32) f32->write(a.data(), n * sizeof(float));
            f16.write(b.data(), n * sizeof(flamingo::bf16));
            done += n;
            if (done - shown > total / 20) {
                shown = done;
                const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
                std::fprintf(stderr, "  %3.0f%%  %.0f s\n", 100.0 * double(done) / double(total), sec);
            }
        }
    }
}

// Writes <out>/of3b-f32 and <out>/of3b-bf16 in one pass (the bf16 values are
// the f32 ones rounded to nearest even).
void make_model(const fs::path& out, const GenSizes& g) {
    std::vector<Spec> specs = of3b_specs(g);
    // Tensors whose bytes are a multiple of 64 first, so that every matrix is 64-byte aligned.
    std::stable_partition(specs.begin(), specs.end(), [](const Spec& s) { return s.numel() % 32 == 0; });
    std::size_t total = 0;
    for (const Spec& s : specs) total += s.numel();
    const fs::path d32 = out / "of3b-f32", d16 = out / "of3b-bf16";
    fs::create_directories(d32);
    fs::create_directories(d16);
    std::fprintf(stderr, "writing %zu tensors, %.3f B parameters: %s (%.2f GB) and %s (%.2f GB)\n", specs.size(),
                 double(total) / 1e9, d32.c_str(), 4.0 * double(total) / 1e9, d16.c_str(), 2.0 * double(total) / 1e9);
    const std::string config = of3b_config(g).dump(2) + "\n", tokenizer = small_tokenizer().dump(1) + "\n";
    for (const fs::path& d : {d32, d16}) {
        write_text(d / "config.json", config);
        write_text(d / "tokenizer.json", tokenizer);
    }
    File f32(d32 / "model.safetensors"), f16(d16 / "model.safetensors");
    const std::string h32 = safetensors_header(specs, 4, "F32"), h16 = safetensors_header(specs, 2, "BF16");
    f32.write(h32.data(), h32.size());
    f16.write(h16.data(), h16.size());

    write_tensors(specs, &f32, f16);
    f32.close();
    f16.close();
    // What the benchmark will see: both directories load, every tensor used.
    for (auto [dir, type] : {std::pair{d32, flamingo::model::WeightType::F32}, std::pair{d16, flamingo::model::WeightType::BF16}}) {
        auto m = flamingo::model::load_flamingo(dir, type);
        if (!m->unused_tensors().empty()) fail(dir.string(), ": unused tensor ", m->unused_tensors().front());
        std::fprintf(stderr, "%s: loads, vocabulary %zu, %zu layers\n", dir.c_str(), m->vocab_size(), m->num_layers());
    }
}

// ---------------------------------------------------------------------------
// IDEFICS-9B shape (--make-idefics): one bf16 directory under Hugging Face's
// names, from the committed release config; `flamingo quantize` makes its q8
// and q4 directories.
// ---------------------------------------------------------------------------

flamingo::io::json read_json(const fs::path& p) {
    const flamingo::io::MappedFile f = flamingo::io::MappedFile::open(p);
    return flamingo::io::parse_json(f.text(), p.string());
}

// Tensor names and shapes of an IDEFICS model directory of config c (as
// modeling_idefics.py names them; see tools/make_idefics_fixtures.py).
std::vector<Spec> idefics_specs(const flamingo::io::json& c) {
    std::vector<Spec> t;
    auto add = [&](std::string name, std::vector<std::size_t> shape, Init init = Init::Normal) {
        t.push_back({std::move(name), std::move(shape), init});
    };
    auto ln = [&](const std::string& p, std::size_t d, bool bias) {
        add(p + ".weight", {d}, Init::Ones);
        if (bias) add(p + ".bias", {d}, Init::Zeros);
    };
    auto lin = [&](const std::string& p, std::size_t out, std::size_t in, bool bias) {
        add(p + ".weight", {out, in});
        if (bias) add(p + ".bias", {out}, Init::Zeros);
    };
    const auto& v = c["vision_config"];
    const auto& pc = c["perceiver_config"];
    const auto z = [](const flamingo::io::json& j, const char* k) { return j[k].get<std::size_t>(); };
    const std::size_t W = z(v, "embed_dim"), Fv = z(v, "intermediate_size"), P = z(v, "patch_size");
    const std::size_t G = z(v, "image_size") / P;
    const std::size_t D = z(c, "hidden_size"), F = z(c, "intermediate_size"), L = z(c, "num_hidden_layers");
    const std::size_t V = z(c, "vocab_size"), A = z(c, "additional_vocab_size"), every = z(c, "cross_layer_interval");
    const std::size_t inner = z(pc, "resampler_n_heads") * z(pc, "resampler_head_dim");
    const std::string m = "model.vision_model.";
    add(m + "embeddings.class_embedding", {W});
    add(m + "embeddings.patch_embedding.weight", {W, 3, P, P});
    add(m + "embeddings.position_embedding.weight", {G * G + 1, W});
    ln(m + "pre_layrnorm", W, true);
    for (std::size_t i = 0; i < z(v, "num_hidden_layers"); ++i) {
        const std::string r = m + "encoder.layers." + std::to_string(i) + ".";
        ln(r + "layer_norm1", W, true);
        for (const char* x : {"q_proj", "k_proj", "v_proj", "out_proj"}) lin(r + "self_attn." + x, W, W, true);
        ln(r + "layer_norm2", W, true);
        lin(r + "mlp.fc1", Fv, W, true);
        lin(r + "mlp.fc2", W, Fv, true);
    }
    ln(m + "post_layernorm", W, true);
    const std::string pr = "model.perceiver_resampler.";
    add(pr + "latents", {z(pc, "resampler_n_latents"), W});
    for (std::size_t i = 0; i < z(pc, "resampler_depth"); ++i) {
        const std::string b = pr + "blocks." + std::to_string(i) + ".";
        ln(b + "0.context_layer_norm", W, true);
        ln(b + "0.latents_layer_norm", W, true);
        for (const char* x : {"q_proj", "k_proj", "v_proj"}) lin(b + "0." + x, inner, W, false);
        lin(b + "0.output_proj", W, inner, false);
        ln(b + "1.ln", W, true);
        lin(b + "1.fc", 4 * W, W, false);
        lin(b + "1.c_proj", W, 4 * W, false);
    }
    ln(pr + "layer_norm", W, true);
    add("model.embed_tokens.weight", {V, D});
    add("model.embed_tokens.additional_embedding.weight", {A, D});
    for (std::size_t i = 0; i < L; ++i) {
        const std::string b = "model.layers." + std::to_string(i) + ".";
        ln(b + "input_layernorm", D, false);
        for (const char* x : {"q_proj", "k_proj", "v_proj", "o_proj"}) lin(b + "self_attn." + x, D, D, false);
        ln(b + "post_attention_layernorm", D, false);
        lin(b + "mlp.gate_proj", F, D, false);
        lin(b + "mlp.up_proj", F, D, false);
        lin(b + "mlp.down_proj", D, F, false);
    }
    for (std::size_t i = 0; i < L / every; ++i) {  // alpha_type "float", no q/k norms (the 9B config)
        const std::string b = "model.gated_cross_attn_layers." + std::to_string(i) + ".";
        ln(b + "input_layernorm", D, false);
        lin(b + "cross_attn.q_proj", D, D, false);
        lin(b + "cross_attn.k_proj", D, W, false);
        lin(b + "cross_attn.v_proj", D, W, false);
        lin(b + "cross_attn.o_proj", D, D, false);
        ln(b + "post_attention_layernorm", D, false);
        lin(b + "mlp.gate_proj", F, D, false);
        lin(b + "mlp.up_proj", F, D, false);
        lin(b + "mlp.down_proj", D, F, false);
        add(b + "alpha_cross_attn", {1}, Init::Gate);
        add(b + "alpha_dense", {1}, Init::Gate);
    }
    ln("model.norm", D, false);
    add("lm_head.weight", {V, D});
    add("lm_head.additional_fc.weight", {A, D});
    return t;
}

// The IDEFICS fixtures' LLaMA tokenizer, its vocabulary filled up to
// vocab_size with unreachable entries so that <fake_token_around_image> and
// <image> get the additional ids vocab_size and vocab_size + 1.
flamingo::io::json idefics_tokenizer(std::size_t vocab_size) {
    using flamingo::io::json;
    json tok = read_json(fs::path(FLAMINGO_SOURCE_DIR) / "tests/data/model/idefics/tokenizer.json");
    const std::string extra[] = {"<fake_token_around_image>", "<image>"};
    json& vocab = tok["model"]["vocab"];
    for (const auto& e : extra) vocab.erase(e);
    std::size_t next = vocab.size();
    check(next <= vocab_size, "the fixture tokenizer has more entries than ", vocab_size);
    for (; next < vocab_size; ++next) vocab["<|filler_" + std::to_string(next) + "|>"] = next;
    json added = json::array();
    for (json a : tok["added_tokens"]) {
        for (std::size_t k = 0; k < 2; ++k)
            if (a["content"] == extra[k]) a["id"] = vocab_size + k, vocab[extra[k]] = vocab_size + k;
        added.push_back(a);
    }
    tok["added_tokens"] = added;
    return tok;
}

// Writes <out>/bf16: IDEFICS-9B's shape (tests/data/model/idefics_released/
// idefics-9b.json), --text-layers / --vision-layers / --tiny for a quick try;
// --cross-layer-interval N for fewer gated cross-attention blocks (N = 32: one,
// a decoder of LLaMA-7B's shape for bench/ggml_compare.sh's comparison).
void make_idefics(const fs::path& out, const GenSizes& g, bool tiny) {
    using flamingo::io::json;
    json c = read_json(fs::path(FLAMINGO_SOURCE_DIR) / "tests/data/model/idefics_released/idefics-9b.json");
    if (g.text_layers_given) c["num_hidden_layers"] = g.text_layers;
    if (g.vision_layers_given) c["vision_config"]["num_hidden_layers"] = g.vision_layers;
    if (g.cross_interval) c["cross_layer_interval"] = g.cross_interval;  // 32: one block, LLaMA-7B's shape + 2.6%
    if (tiny) {  // same layout, small widths
        c["hidden_size"] = 256, c["intermediate_size"] = 512, c["num_attention_heads"] = 4;
        c["vision_embed_dim"] = 128, c["vision_config"]["embed_dim"] = 128;
        c["vision_config"]["intermediate_size"] = 256, c["vision_config"]["num_attention_heads"] = 2;
        c["perceiver_config"]["resampler_n_heads"] = 2, c["perceiver_config"]["resampler_head_dim"] = 32;
    }
    std::vector<Spec> specs = idefics_specs(c);
    std::stable_partition(specs.begin(), specs.end(), [](const Spec& s) { return s.numel() % 32 == 0; });
    std::size_t total = 0;
    for (const Spec& s : specs) total += s.numel();
    const fs::path d = out / "bf16";
    fs::create_directories(d);
    std::fprintf(stderr, "writing %zu tensors, %.3f B parameters: %s (%.2f GB)\n", specs.size(), double(total) / 1e9,
                 d.c_str(), 2.0 * double(total) / 1e9);
    write_text(d / "config.json", c.dump(2) + "\n");
    write_text(d / "tokenizer.json", idefics_tokenizer(c["vocab_size"].get<std::size_t>()).dump(1) + "\n");
    File f16(d / "model.safetensors");
    const std::string h16 = safetensors_header(specs, 2, "BF16");
    f16.write(h16.data(), h16.size());
    write_tensors(specs, nullptr, f16);
    f16.close();
    auto m = flamingo::model::load_flamingo(d, flamingo::model::WeightType::BF16);
    if (!m->unused_tensors().empty()) fail(d.string(), ": unused tensor ", m->unused_tensors().front());
    check(flamingo::model::idefics::parameter_count(m->config()) == total, d.string(), ": ", total,
          " parameters written, the config counts ", flamingo::model::idefics::parameter_count(m->config()));
    std::fprintf(stderr, "%s: loads, vocabulary %zu, %zu layers\n", d.c_str(), m->vocab_size(), m->num_layers());
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

using Clock = std::chrono::steady_clock;

double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// Wall and CPU time of one call.
struct Timing {
    double wall = std::numeric_limits<double>::infinity(), cpu = 0;
    void keep_best(double w, double c) {
        if (w < wall) wall = w, cpu = c;
    }
};
template <class F>
void time_best(Timing& t, F&& f) {
    const double c0 = cpu_seconds();
    const auto t0 = Clock::now();
    f();
    t.keep_best(std::chrono::duration<double>(Clock::now() - t0).count(), cpu_seconds() - c0);
}

std::size_t status_kb(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    const std::size_t n = std::strlen(key);
    while (std::getline(f, line))
        if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::stoull(line.substr(n + 1));
    return 0;
}
// Resets VmHWM to the current RSS (Linux >= 4.0).
bool reset_peak_rss() {
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
    f.flush();
    return bool(f);
}

double load_average() {
    double l[1] = {0};
    return getloadavg(l, 1) == 1 ? l[0] : -1;
}

// Streaming read bandwidth (bytes/s): every thread sums its part of a buffer
// much larger than the caches; best of several passes.
double read_bandwidth(std::size_t bytes) {
    using vf = xsimd::batch<float>;
    constexpr std::size_t W = vf::size;
    const std::size_t n = bytes / sizeof(float) / (4 * W) * (4 * W);
    std::unique_ptr<float[]> buf(new float[n]);
    flamingo::parallel_for(n, [&](std::size_t b, std::size_t e) { std::fill(buf.get() + b, buf.get() + e, 1.0f); }, 4 * W);
    std::atomic<double> sink{0};
    double best = std::numeric_limits<double>::infinity();
    for (int rep = 0; rep < 10; ++rep) {
        const auto t0 = Clock::now();
        flamingo::parallel_for(
            n,
            [&](std::size_t b, std::size_t e) {
                vf s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
                const float* p = buf.get();
                for (std::size_t i = b; i < e; i += 4 * W) {
                    s0 += vf::load_aligned(p + i);
                    s1 += vf::load_aligned(p + i + W);
                    s2 += vf::load_aligned(p + i + 2 * W);
                    s3 += vf::load_aligned(p + i + 3 * W);
                }
                sink.fetch_add(double(xsimd::hadd((s0 + s1) + (s2 + s3))));
            },
            4 * W);
        best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
    }
    check(sink.load() == 10.0 * double(n), "bandwidth: wrong sum");
    return double(n * sizeof(float)) / best;
}

// A 4-shot prompt: "<image>caption<|endofchunk|>" x 4, then "<image>query";
// 5 <image> and 128 other tokens (27 caption tokens + <|endofchunk|> per shot,
// 16 query tokens). Text ids are random ordinary tokens.
std::vector<std::int32_t> four_shot_prompt(std::int32_t media, std::int32_t eoc) {
    std::vector<std::int32_t> ids;
    std::uint64_t k = 0;
    auto text = [&](int n) {
        for (int i = 0; i < n; ++i) ids.push_back(std::int32_t(300 + random_u64(42, k++) % 49000));
    };
    for (int shot = 0; shot < 4; ++shot) {
        ids.push_back(media);
        text(27);
        ids.push_back(eoc);
    }
    ids.push_back(media);
    text(16);
    return ids;
}

// IDEFICS: "<s><fake><image><fake>" then 16 random ordinary tokens of the
// text vocabulary: a short prompt about one image.
std::vector<std::int32_t> idefics_prompt(std::int32_t image, std::int32_t fake, int vocab) {
    std::vector<std::int32_t> ids = {1, fake, image, fake};
    for (std::uint64_t k = 0; k < 16; ++k) ids.push_back(std::int32_t(3 + random_u64(43, k) % std::uint64_t(vocab - 3)));
    return ids;
}

std::int32_t argmax(std::span<const float> v) {
    return std::int32_t(std::max_element(v.begin(), v.end()) - v.begin());
}

// What one child process measures (sent to the parent through a pipe).
struct Result {
    bool ok = false;
    char error[512] = {};
    double load_s = 0;
    Timing img1, img5, project, prompt;
    double decode_wall = 0, decode_cpu = 0;  // per token
    std::size_t prompt_tokens = 0, new_tokens = 0, images = 0;
    double bandwidth = 0;  // bytes/s
    std::size_t params = 0, weight_bytes = 0, copied_bytes = 0, decode_bytes = 0;
    std::size_t kv_bytes = 0, media_kv_bytes = 0;
    std::size_t peak_rss = 0;  // bytes
    std::int32_t first_tokens[8] = {};  // greedy: the prompt's next token, then the steps'

    bool peak_reset = false;
    double load_min = 1e9, load_max = 0;
};

struct Options {
    fs::path dir;
    int threads = 2, reps = 2;
    std::size_t new_tokens = 32;
    bool run_f32 = true, run_bf16 = true, save_logits = false;
    std::optional<flamingo::model::WeightType> quantized;  // OpenFlamingo-3B with --only q8|q4
    // --idefics: the IDEFICS directories DIR/{bf16,q8,q4} (those asked for by --only)
    std::optional<fs::path> idefics;
    std::vector<std::string> idefics_types = {"q4", "q8", "bf16"};
};

void run_one(const fs::path& model_dir, flamingo::model::WeightType type, const Options& o, Result& r) {
    auto note_load = [&] {
        const double l = load_average();
        r.load_min = std::min(r.load_min, l), r.load_max = std::max(r.load_max, l);
    };
    flamingo::Executor executor(o.threads);
    flamingo::Executor::Scope use(executor);
    note_load();

    // Weight bytes as the model holds them: matrices in the weight type, the rest as float.
    // (q8 8.5 and q4 5 bits per weight with their f16 scales and offsets)
    using flamingo::model::WeightType;
    const double wsize = type == WeightType::F32 ? 4 : type == WeightType::Q8 ? 1.0625 : type == WeightType::Q4 ? 0.625 : 2;
    const bool idefics = o.idefics.has_value();
    const auto tensors = flamingo::io::list_tensors(model_dir);
    // A directory written by `flamingo quantize` (its matrices have `.scales`) is
    // counted in its own bytes like IDEFICS's: its q4 matrices' element counts are
    // packed bytes, not weights.
    const bool stored = idefics || std::any_of(tensors.begin(), tensors.end(),
                                               [](const auto& t) { return t.name.ends_with(".scales"); });
    for (const auto& t : tensors) {
        // Stored: the file's own bytes (a quantised directory's blocks, scales
        // and offsets as stored); rows of the few 1-D tensors are read as float.
        const std::size_t bytes =
            stored && t.rank() >= 2 ? t.nbytes : std::size_t(double(t.numel()) * (t.rank() >= 2 ? wsize : 4));
        // Parameters: a q4 matrix's U8 bytes hold two each; scales and offsets are none.
        if (!(stored && (t.name.ends_with(".scales") || t.name.ends_with(".offsets"))))
            r.params += t.numel() * (stored && t.file_dtype == flamingo::io::FileDType::U8 ? 2 : 1);
        r.weight_bytes += bytes;
        // The tied output head (wte) of a quantised directory is stored as in the
        // source and quantised at load: it is read per token in the weight type.
        const bool tied_head = stored && !idefics && t.name == "lang_encoder.transformer.wte.weight";
        // Read once per decoded token: the decoder and its cross-attention (the
        // visual keys/values are projected once per prompt; wte is read whole as
        // the output head, its embedding lookup is one row). IDEFICS: its
        // decoder layers, gated cross-attention blocks but their k/v
        // projections, final norm and output head (lm_head and additional_fc).
        if (idefics ? (t.name.starts_with("model.layers.") || t.name.starts_with("lm_head.") ||
                       t.name.starts_with("model.norm.") ||
                       (t.name.starts_with("model.gated_cross_attn_layers.") &&
                        t.name.find(".k_proj.") == std::string::npos && t.name.find(".v_proj.") == std::string::npos))
                    : (t.name.starts_with("lang_encoder.") && t.name.find(".to_kv.") == std::string::npos))
            r.decode_bytes += tied_head ? std::size_t(double(t.numel()) * wsize) : bytes;
    }

    auto t0 = Clock::now();
    auto model = flamingo::model::load_flamingo(model_dir, type);
    r.load_s = std::chrono::duration<double>(Clock::now() - t0).count();
    r.copied_bytes = model->copied_weight_bytes();
    if (stored) r.weight_bytes += r.copied_bytes;  // converted copies beside the mapped file
    if (idefics) r.params = flamingo::model::idefics::parameter_count(model->config());  // not the q4 bytes' count
    const auto& cfg = model->config();
    // IDEFICS: one image (the short prompt below); OpenFlamingo: the 4-shot prompt's 5.
    const std::size_t n_img = idefics ? 1 : 5;
    r.images = n_img;

    // Images: normalised pixels, random in about [-2, 2].
    const std::size_t S = model->image_size(), per = 3 * S * S;
    std::vector<float> pixels(5 * per);
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = 0.5f * approx_normal(7, i);
    flamingo::generate::Session s(*model);
    s.set_media(pixels.data(), 1, 1);  // warm-up: maps the vision weights in
    for (int rep = 0; rep < o.reps; ++rep) {
        note_load();
        time_best(r.img1, [&] { s.set_media(pixels.data(), 1, 1); });
        if (!idefics) time_best(r.img5, [&] { s.set_media(pixels.data(), 5, 1); });
    }
    const flamingo::Tensor<float, flamingo::dextents<2>> visual = s.visual();

    // Prompt reading.
    const auto ids = idefics ? idefics_prompt(cfg.media_token_id,
                                              flamingo::model::idefics::token_id(
                                                  model_dir / "tokenizer.json", flamingo::model::idefics::kFakeToken),
                                              cfg.text.vocab_size)
                             : four_shot_prompt(cfg.media_token_id, cfg.eoc_token_id);
    r.prompt_tokens = ids.size();
    s.set_visual(visual, n_img);
    const auto tt = s.prompt_text_time(ids);
    s.prepare(1, ids.size() + o.new_tokens, ids.size());
    const auto first = s.run(0, ids, tt, 0, false);  // warm-up
    if (o.save_logits)  // for pytorch_e2e.py to compare with its own
        flamingo::io::write_npy(o.dir / ("bench_e2e-logits-" + std::string(flamingo::model::weight_type_name(type)) + ".npy"),
                                first.data(), {first.size()});
    for (int rep = 0; rep < o.reps; ++rep) {
        note_load();
        auto v = visual;
        time_best(r.project, [&] { s.set_visual(std::move(v), n_img); });
        time_best(r.prompt, [&] { s.run(0, ids, tt, 0, false); });
    }
    r.kv_bytes = 2 * model->num_layers() * (ids.size() + o.new_tokens) * model->kv_width() * sizeof(float);
    for (std::size_t l = 0; l < model->num_layers(); ++l)
        if (cfg.cross_attn.has_cross_attn(int(l)))
            r.media_kv_bytes += n_img * model->num_latents() * 2 * std::size_t(cfg.cross_attn.inner_dim()) * sizeof(float);

    // Bandwidth, with its buffer kept out of the peak RSS when the kernel lets us.
    const std::size_t hwm_before = status_kb("VmHWM");
    note_load();
    r.bandwidth = read_bandwidth(std::size_t(1) << 30);
    r.peak_reset = reset_peak_rss();

    // Greedy decoding from a freshly read prompt.
    note_load();
    auto logits = s.run(0, ids, tt, 0, false);
    std::int32_t next = argmax(logits);
    r.first_tokens[0] = next;
    const std::size_t seq = 0;
    const double c0 = cpu_seconds();
    t0 = Clock::now();
    for (std::size_t k = 0; k < o.new_tokens; ++k) {
        next = argmax(s.step({&next, 1}, {&seq, 1}));
        if (k + 1 < 8) r.first_tokens[k + 1] = next;
    }
    r.decode_wall = std::chrono::duration<double>(Clock::now() - t0).count() / double(o.new_tokens);
    r.decode_cpu = (cpu_seconds() - c0) / double(o.new_tokens);
    r.new_tokens = o.new_tokens;
    note_load();
    r.peak_rss = 1024 * (r.peak_reset ? std::max(hwm_before, status_kb("VmHWM")) : status_kb("VmHWM"));
    r.ok = true;
}

// Runs one weight type in a child process; its result comes back through a pipe.
Result run_child(const fs::path& dir, flamingo::model::WeightType type, const Options& o) {
    Result r;
    int fd[2];
    check(pipe(fd) == 0, "pipe failed");
    std::fflush(nullptr);
    const pid_t pid = fork();
    check(pid >= 0, "fork failed");
    if (pid == 0) {
        close(fd[0]);
        Result c;
        try {
            run_one(dir, type, o, c);
        } catch (const std::exception& e) {
            std::snprintf(c.error, sizeof c.error, "%s", e.what());
        }
        const char* p = reinterpret_cast<const char*>(&c);
        for (std::size_t n = 0; n < sizeof c;) {
            const ssize_t w = write(fd[1], p + n, sizeof c - n);
            if (w <= 0) break;
            n += std::size_t(w);
        }
        _exit(0);
    }
    close(fd[1]);
    char* p = reinterpret_cast<char*>(&r);
    std::size_t n = 0;
    while (n < sizeof r) {
        const ssize_t got = read(fd[0], p + n, sizeof r - n);
        if (got <= 0) break;
        n += std::size_t(got);
    }
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (n != sizeof r) {
        r = Result{};
        std::snprintf(r.error, sizeof r.error, "the measuring process died (%s %d)%s",
                      WIFSIGNALED(status) ? "signal" : "exit status",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                      WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? ": out of memory?" : "");
    }
    return r;
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

std::string fmt(const char* f, double x) {
    char b[64];
    std::snprintf(b, sizeof b, f, x);
    return b;
}
std::string gb(double bytes) { return fmt("%.2f GB", bytes / 1e9); }
std::string cores(const Timing& t) { return fmt(" (%.1f cores)", t.cpu / t.wall); }

void print_table(const Options& o, const std::vector<std::pair<std::string, Result>>& cols) {
    const bool idefics = o.idefics.has_value();
    std::printf("\nflamingo end-to-end, %s shape (random weights), %d threads, best of %d runs\n",
                idefics ? "IDEFICS-9B" : "OpenFlamingo-3B", o.threads, o.reps);
    std::printf("model directory: %s\n\n", (idefics ? *o.idefics : o.dir).c_str());
    auto row = [&](const std::string& label, auto cell) {
        std::printf("%-42s", label.c_str());
        for (const auto& [name, r] : cols) std::printf(" %-30s", r.ok ? cell(r).c_str() : "-");
        std::printf("\n");
    };
    std::printf("%-42s", "");
    for (const auto& [name, r] : cols) std::printf(" %-30s", name.c_str());
    std::printf("\n");
    row("parameters", [](const Result& r) { return fmt("%.3f B", double(r.params) / 1e9); });
    row("weights in memory", [](const Result& r) { return gb(double(r.weight_bytes)); });
    row("  of which copied out of the mapping", [](const Result& r) { return gb(double(r.copied_bytes)); });
    row("load (mmap, views)", [](const Result& r) { return fmt("%.2f s", r.load_s); });
    row("image encoding, 1 image", [](const Result& r) { return fmt("%.2f s", r.img1.wall) + cores(r.img1); });
    if (!idefics) {
        row("image encoding, 5 images", [](const Result& r) { return fmt("%.2f s", r.img5.wall) + cores(r.img5); });
        row("  per image (5 images)", [](const Result& r) { return fmt("%.2f s", r.img5.wall / 5); });
    }
    row(idefics ? "visual K/V projection, every block" : "visual K/V projection, 24 layers",
        [](const Result& r) { return fmt("%.3f s", r.project.wall); });
    row(idefics ? "prompt forward (1 img, 20 tokens)" : "prompt forward (5 img + 128 tokens)",
        [](const Result& r) { return fmt("%.2f s", r.prompt.wall) + cores(r.prompt); });
    row("prompt reading (projection + forward)", [](const Result& r) {
        return fmt("%.1f tokens/s", double(r.prompt_tokens) / (r.project.wall + r.prompt.wall));
    });
    row("decoding, greedy", [](const Result& r) {
        return fmt("%.1f ms/token", 1e3 * r.decode_wall) + fmt(" (%.1f cores)", r.decode_cpu / r.decode_wall);
    });
    row("  tokens/s", [](const Result& r) { return fmt("%.2f", 1.0 / r.decode_wall); });
    row("weight bytes read per token", [](const Result& r) { return gb(double(r.decode_bytes)); });
    row("read bandwidth, measured (1 GiB sum)", [](const Result& r) { return fmt("%.1f GB/s", r.bandwidth / 1e9); });
    row("decoding: weight bytes / time per token", [](const Result& r) {
        const double bw = double(r.decode_bytes) / r.decode_wall;
        return fmt("%.1f GB/s", bw / 1e9) + fmt(" = %.0f%% of measured", 100.0 * bw / r.bandwidth);
    });
    row("KV cache (" + std::to_string(cols.empty() ? 0 : cols[0].second.prompt_tokens + o.new_tokens) +
            " positions) + visual K/V",
        [](const Result& r) { return fmt("%.0f MB", double(r.kv_bytes) / 1e6) + fmt(" + %.0f MB", double(r.media_kv_bytes) / 1e6); });
    row("peak RSS (VmHWM)", [](const Result& r) {
        const double base = double(r.weight_bytes + r.kv_bytes + r.media_kv_bytes);
        return gb(double(r.peak_rss)) + fmt(" = %.3f x (weights+KV)", double(r.peak_rss) / base);
    });
    row("first generated tokens", [](const Result& r) {
        std::string t;
        for (std::size_t i = 0; i < std::min<std::size_t>(6, r.new_tokens + 1); ++i)
            t += (i ? " " : "") + std::to_string(r.first_tokens[i]);
        return t;
    });
    row("load average during the run", [](const Result& r) { return fmt("%.1f", r.load_min) + fmt(" - %.1f", r.load_max); });
    for (const auto& [name, r] : cols) {
        if (!r.ok) std::printf("%s: FAILED: %s\n", name.c_str(), r.error);
        else if (!r.peak_reset)
            std::printf("%s: note: could not reset VmHWM; the peak includes the 1 GiB bandwidth buffer\n", name.c_str());
    }
}

[[noreturn]] void usage(int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: bench_e2e [--dir DIR] [--only f32|bf16|q8|q4] [--threads N] [--new-tokens N] [--reps N] [--save-logits]\n"
                 "       bench_e2e --make-model DIR [--text-layers N] [--vision-layers N]\n"
                 "       bench_e2e --make-idefics DIR [--text-layers N] [--vision-layers N] [--cross-layer-interval N] [--tiny]\n"
                 "       bench_e2e --idefics DIR [--only bf16|q8|q4] [--threads N] [--new-tokens N] [--reps N]\n"
                 "\n"
                 "DIR (default $FLAMINGO_E2E_DIR, else /tmp/flamingo-e2e) holds of3b-f32/ and of3b-bf16/,\n"
                 "random-weight OpenFlamingo-3B model directories. Make them once with\n"
                 "  bench_e2e --make-model /tmp/flamingo-e2e     (~15.4 GB of disk, a few minutes)\n"
                 "and delete the directory when done. --text-layers / --vision-layers make smaller\n"
                 "models of the same widths for a quick try. --save-logits writes the prompt's\n"
                 "last-position logits to DIR/bench_e2e-logits-{f32,bf16}.npy, which pytorch_e2e.py\n"
                 "compares with its own. --only q8|q4 loads of3b-bf16 quantised (only when asked for).\n"
                 "\n"
                 "--make-idefics writes DIR/bf16, a random-weight model of IDEFICS-9B's shape\n"
                 "(tests/data/model/idefics_released/idefics-9b.json; ~17.9 GB); make DIR/q8 and DIR/q4\n"
                 "from it with `flamingo quantize`. --idefics measures those present (q4, q8, bf16)\n"
                 "on a prompt of one image and 16 tokens. --tiny: the same layout at small widths.\n");
    std::exit(code);
}

}  // namespace

int main(int argc, char** argv) try {
    Options o;
    const char* env = std::getenv("FLAMINGO_E2E_DIR");
    o.dir = env && *env ? env : "/tmp/flamingo-e2e";
    bool dir_given = env && *env;
    std::optional<fs::path> make, make_idef;
    bool tiny = false;
    std::string only;
    GenSizes g;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(2);
            return argv[++i];
        };
        auto number = [&]() {
            const std::string v = value();
            char* end = nullptr;
            const long x = std::strtol(v.c_str(), &end, 10);
            if (*end || x < 1 || x > 100000) {
                std::fprintf(stderr, "%s: expected a positive integer, got '%s'\n", a.c_str(), v.c_str());
                std::exit(2);
            }
            return std::size_t(x);
        };
        if (a == "--dir") o.dir = value(), dir_given = true;
        else if (a == "--make-model") make = value();
        else if (a == "--make-idefics") make_idef = value();
        else if (a == "--tiny") tiny = true;
        else if (a == "--idefics") o.idefics = value();
        else if (a == "--threads") o.threads = int(number());
        else if (a == "--reps") o.reps = int(number());
        else if (a == "--new-tokens") o.new_tokens = number();
        else if (a == "--save-logits") o.save_logits = true;
        else if (a == "--text-layers") g.text_layers = number(), g.text_layers_given = true;
        else if (a == "--vision-layers") g.vision_layers = number(), g.vision_layers_given = true;
        else if (a == "--cross-layer-interval") g.cross_interval = number();
        else if (a == "--only") {
            only = value();
            if (only != "f32" && only != "bf16" && only != "q8" && only != "q4") usage(2);
            o.run_f32 = only == "f32", o.run_bf16 = only == "bf16";
            if (only == "q8") o.quantized = flamingo::model::WeightType::Q8;
            if (only == "q4") o.quantized = flamingo::model::WeightType::Q4;
        } else if (a == "-h" || a == "--help") usage(0);
        else {
            std::fprintf(stderr, "unknown option '%s'\n", a.c_str());
            usage(2);
        }
    }
    if (make) {
        make_model(*make, g);
        return 0;
    }
    if (make_idef) {
        make_idefics(*make_idef, g, tiny);
        return 0;
    }
    if (o.idefics) {
        if (!only.empty()) {
            if (only == "f32") usage(2);
            o.idefics_types = {only};
        }
        std::vector<std::pair<std::string, Result>> cols;
        for (const std::string& t : o.idefics_types) {
            const fs::path d = *o.idefics / t;
            if (!fs::exists(d / "model.safetensors")) {
                std::fprintf(stderr, "%s: no model there (bench_e2e --make-idefics %s writes bf16/; "
                                     "flamingo quantize --model %s --weights %s --out %s the others)\n",
                             d.c_str(), o.idefics->c_str(), (*o.idefics / "bf16").c_str(), t.c_str(), d.c_str());
                return 1;
            }
            const auto type = t == "q4" ? flamingo::model::WeightType::Q4
                              : t == "q8" ? flamingo::model::WeightType::Q8
                                          : flamingo::model::WeightType::BF16;
            std::fprintf(stderr, "%s weights (%s)...\n", t.c_str(), d.c_str());
            cols.emplace_back(t + " weights", run_child(d, type, o));
        }
        print_table(o, cols);
        for (const auto& [name, r] : cols)
            if (!r.ok) return 1;
        return 0;
    }
    const fs::path d32 = o.dir / "of3b-f32", d16 = o.dir / "of3b-bf16";
    for (const auto& [want, d] : {std::pair{o.run_f32, d32}, std::pair{o.run_bf16 || o.quantized.has_value(), d16}})
        if (want && !fs::exists(d / "model.safetensors")) {
            std::fprintf(stderr, "%s: no model there. Make the random-weight models first (~15.4 GB):\n"
                                 "  bench_e2e --make-model %s\n(or point --dir / FLAMINGO_E2E_DIR at them)\n",
                         d.c_str(), o.dir.c_str());
            // Run without arguments (tools/run.sh bench runs every benchmark): skip, not fail.
            if (!dir_given) std::fprintf(stderr, "bench_e2e: skipped\n");
            return dir_given ? 1 : 0;
        }
    std::vector<std::pair<std::string, Result>> cols;
    if (o.run_f32) {
        std::fprintf(stderr, "f32 weights (%s)...\n", d32.c_str());
        cols.emplace_back("f32 weights", run_child(d32, flamingo::model::WeightType::F32, o));
    }
    if (o.run_bf16) {
        std::fprintf(stderr, "bf16 weights (%s)...\n", d16.c_str());
        cols.emplace_back("bf16 weights", run_child(d16, flamingo::model::WeightType::BF16, o));
    }
    if (o.quantized) {  // the bf16 model quantised at load
        const std::string name(flamingo::model::weight_type_name(*o.quantized));
        std::fprintf(stderr, "%s weights (%s, quantised at load)...\n", name.c_str(), d16.c_str());
        cols.emplace_back(name + " weights", run_child(d16, *o.quantized, o));
    }
    print_table(o, cols);
    for (const auto& [name, r] : cols)
        if (!r.ok) return 1;
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_e2e: %s\n", e.what());
    return 1;
}

// Fuzz target: config.json text. Any input must either give a config whose
// sizes are within the documented caps or raise flamingo::Error.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "flamingo/model/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        auto c = flamingo::model::parse_config(text, "fuzz/config.json");
        const auto& t = c.text;
        bool sane = t.hidden_size > 0 && t.num_heads > 0 && t.hidden_size % t.num_heads == 0 &&
                    t.num_kv_heads > 0 && t.num_heads % t.num_kv_heads == 0 && t.num_layers > 0 &&
                    t.intermediate_size > 0 && t.vocab_size > 0 && c.vision.width % c.vision.head_width == 0 &&
                    c.vision.image_size % c.vision.patch_size == 0 && c.cross_attn.every_n_layers >= 1 &&
                    c.perceiver.depth >= 1 && c.vision.mlp_width >= 1;
        if (!sane) __builtin_trap();
    } catch (const flamingo::Error&) {
    }
    return 0;
}

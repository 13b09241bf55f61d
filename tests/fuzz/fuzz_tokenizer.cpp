// Fuzzes tokenizer.json loading and encoding/decoding.
// First byte even: the rest is text for two fixed small tokenizers (byte-level with
// added tokens and NFC; LLaMA-style byte fallback), with round-trip invariants.
// First byte odd: the rest is "<tokenizer.json>\0<text>".
// Bad input must end in flamingo::Error; anything else (crash, other exception,
// broken invariant) is a finding.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "flamingo/text/tokenizer.hpp"

namespace {

std::string byte_level_json() {
    // Every byte-alphabet character plus a few merges, added tokens of every kind.
    std::string vocab;
    const auto& alphabet = flamingo::text::ByteAlphabet::get();
    int id = 0;
    for (int b = 0; b < 256; ++b) vocab += nlohmann::json(alphabet.chars[b]).dump() + ": " + std::to_string(id++) + ", ";
    vocab += R"("Ġt": 256, "he": 257, "Ġthe": 258, "in": 259, "Ġa": 260, "er": 261, "ĠĠ": 262, "ĠĠĠĠ": 263, "ing": 264)";
    return R"({"version": "1.0", "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {"type": "Sequence", "processors": [{"type": "ByteLevel", "trim_offsets": false},
        {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<eos>", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<eos>": {"id": "<eos>", "ids": [265], "tokens": ["<eos>"]}}}]},
      "decoder": {"type": "ByteLevel"},
      "added_tokens": [
        {"id": 265, "content": "<eos>", "special": true, "normalized": false},
        {"id": 266, "content": "<image>", "special": true, "normalized": false},
        {"id": 267, "content": "<m>", "special": true, "normalized": false, "lstrip": true},
        {"id": 268, "content": "<r>", "special": true, "normalized": false, "rstrip": true},
        {"id": 269, "content": "word", "special": false, "normalized": false, "single_word": true},
        {"id": 270, "content": "é!", "special": false, "normalized": true}],
      "model": {"type": "BPE", "vocab": {)" + vocab + R"(},
        "merges": ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ Ġ", "ĠĠ ĠĠ", "in g"]}})";
}

std::string llama_json() {
    std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2, )";
    int id = 3;
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) vocab += std::string("\"<0x") + hex[b >> 4] + hex[b & 15] + ">\": " + std::to_string(id++) + ", ";
    vocab += R"("▁": 259, "t": 260, "h": 261, "e": 262, "▁t": 263, "he": 264, "▁the": 265, "a": 266, "▁a": 267, "▁▁": 268)";
    return R"({"version": "1.0",
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                     {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
      "pre_tokenizer": null,
      "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
         "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
      "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                  {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
      "added_tokens": [{"id": 0, "content": "<unk>", "special": true, "normalized": false},
                       {"id": 1, "content": "<s>", "special": true, "normalized": false},
                       {"id": 2, "content": "</s>", "special": true, "normalized": false},
                       {"id": 269, "content": "<image>", "special": true, "normalized": false}],
      "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true, "vocab": {)" + vocab + R"(},
        "merges": [["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "a"], ["▁", "▁"]]}})";
}

void exercise(const flamingo::Tokenizer& t, std::string_view text) {
    for (bool special : {true, false}) {
        const auto ids = t.encode(text, special);
        (void)t.decode(ids, false);
        (void)t.decode(ids, true);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
    if ((data[0] & 1) == 0) {
        static const flamingo::Tokenizer byte_level = flamingo::Tokenizer::from_json(byte_level_json(), "fuzz-byte-level");
        static const flamingo::Tokenizer llama = flamingo::Tokenizer::from_json(llama_json(), "fuzz-llama");
        if (flamingo::utf8::first_invalid(input) != flamingo::utf8::npos) {
            try {
                byte_level.encode(input);
                std::abort();  // invalid UTF-8 must be rejected
            } catch (const flamingo::Error&) {
            }
            return 0;
        }
        exercise(byte_level, input);
        exercise(llama, input);
        // Invariants upstream guarantees for text without added tokens: byte-level BPE is
        // lossless up to NFC; LLaMA's decoder undoes its normalizer (unless the text has "▁").
        const std::string normalized = flamingo::unicode::nfc(input);
        if (normalized.find('<') == std::string::npos && normalized.find("é!") == std::string::npos &&
            byte_level.decode(byte_level.encode(input, false)) != normalized)
            std::abort();
        if (input.find('<') == std::string_view::npos && input.find("▁") == std::string_view::npos &&
            llama.decode(llama.encode(input, false)) != input)
            std::abort();
        return 0;
    }
    const std::size_t split = input.find('\0');
    const std::string_view json = input.substr(0, split);
    const std::string_view text = split == std::string_view::npos ? std::string_view("Hello world <image> 123") : input.substr(split + 1);
    try {
        const flamingo::Tokenizer t = flamingo::Tokenizer::from_json(json, "fuzz.json");
        (void)t.vocab_size();
        exercise(t, text);
    } catch (const flamingo::Error&) {
    }
    return 0;
}

#pragma once
// Hugging Face tokenizer.json (BPE models): byte-level BPE as in GPT-2 / GPT-NeoX /
// MPT, and the byte-fallback "▁" BPE of LLaMA. encode() follows tokenizers' order:
// added tokens are matched in the raw text first, then the normalizer, the
// pre-tokenizer, the BPE model and (with add_special_tokens) the post-processor.
#include <algorithm>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/text/bpe.hpp"
#include "flamingo/text/components.hpp"
#include "flamingo/text/unicode.hpp"
#include "flamingo/text/utf8.hpp"

namespace flamingo {

namespace text {

// Byte trie over added-token patterns with leftmost-longest search (what upstream's
// Aho-Corasick automaton with MatchKind::LeftmostLongest yields).
class TokenTrie {
public:
    bool empty() const { return nodes_.size() <= 1; }

    // Returns false when the pattern is already present.
    bool insert(std::string_view pattern, std::int32_t value) {
        if (nodes_.empty()) nodes_.emplace_back();
        std::size_t node = 0;
        for (unsigned char c : pattern) {
            std::int32_t child = find_child(node, c);
            if (child < 0) {
                child = static_cast<std::int32_t>(nodes_.size());
                nodes_[node].edges.emplace_back(c, child);
                nodes_.emplace_back();
            }
            node = static_cast<std::size_t>(child);
        }
        if (nodes_[node].value >= 0) return false;
        nodes_[node].value = value;
        first_.set(static_cast<unsigned char>(pattern[0]));
        return true;
    }

    // Leftmost-longest match starting at or after `from`.
    bool find(std::string_view s, std::size_t from, std::size_t& start, std::size_t& end, std::int32_t& value) const {
        if (empty()) return false;
        for (std::size_t i = from; i < s.size(); ++i) {
            if (!first_.test(static_cast<unsigned char>(s[i]))) continue;
            std::size_t node = 0, best_end = 0;
            std::int32_t best = -1;
            for (std::size_t j = i; j < s.size(); ++j) {
                const std::int32_t child = find_child(node, static_cast<unsigned char>(s[j]));
                if (child < 0) break;
                node = static_cast<std::size_t>(child);
                if (nodes_[node].value >= 0) {
                    best = nodes_[node].value;
                    best_end = j + 1;
                }
            }
            if (best >= 0) {
                start = i;
                end = best_end;
                value = best;
                return true;
            }
        }
        return false;
    }

private:
    struct Node {
        std::vector<std::pair<unsigned char, std::int32_t>> edges;
        std::int32_t value = -1;
    };
    std::int32_t find_child(std::size_t node, unsigned char c) const {
        for (const auto& [k, child] : nodes_[node].edges)
            if (k == c) return child;
        return -1;
    }
    std::vector<Node> nodes_;
    std::bitset<256> first_;
};

struct AddedToken {
    std::string content;
    bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
    bool operator==(const AddedToken&) const = default;
};

// Limits that keep a hostile file from allocating or looping without bound.
inline constexpr std::size_t max_tokenizer_file_bytes = std::size_t{64} << 20;
inline constexpr int max_json_depth = 64;
inline constexpr std::size_t max_vocab_entries = std::size_t{1} << 22;
inline constexpr std::size_t max_added_token_bytes = 1024;

}  // namespace text

// Immutable after loading; copies share the pipeline, and encode/decode may run
// concurrently (the BPE word cache is guarded by a mutex).
class Tokenizer {
public:
    static Tokenizer load(const std::filesystem::path& tokenizer_json) {
        const std::string name = tokenizer_json.string();
        std::error_code ec;
        check(std::filesystem::is_regular_file(tokenizer_json, ec), ErrorKind::File, name, ": not a readable file");
        const auto size = std::filesystem::file_size(tokenizer_json, ec);
        check(!ec, ErrorKind::File, name, ": cannot read the file size");
        check(size <= text::max_tokenizer_file_bytes, ErrorKind::Limit, name, ": ", size, " bytes is larger than the limit of ",
              text::max_tokenizer_file_bytes, " bytes for a tokenizer.json");
        std::ifstream in(tokenizer_json, std::ios::binary);
        check(static_cast<bool>(in), ErrorKind::File, name, ": cannot open");
        std::string data(static_cast<std::size_t>(size), '\0');
        in.read(data.data(), static_cast<std::streamsize>(size));
        check(in.gcount() == static_cast<std::streamsize>(size), ErrorKind::File, name, ": short read");
        return from_json(data, name);
    }

    static Tokenizer from_json(std::string_view json, const std::string& source_name) {
        Tokenizer t;
        t.source_ = source_name;
        t.parse(json);
        return t;
    }

    // As Hugging Face `tokenizer.encode(text, add_special_tokens=...)`. text must be valid UTF-8.
    std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
        if (const std::size_t bad = utf8::first_invalid(text); bad != utf8::npos)
            fail(source_, ": text to encode is not valid UTF-8 (byte ", bad, ")");
        std::vector<std::int32_t> ids;
        text::BpeScratch scratch;
        std::vector<Piece> raw_pieces, pieces;
        split_added(raw_trie_, text, true, raw_pieces);
        std::string normalized;
        for (const Piece& raw : raw_pieces) {
            if (raw.id >= 0) {
                ids.push_back(raw.id);
                continue;
            }
            std::string_view piece = raw.text;
            if (normalizer_) {
                normalized.assign(piece);
                normalizer_->apply(normalized);
                piece = normalized;
            }
            pieces.clear();
            split_added(normalized_trie_, piece, raw.at_origin, pieces);
            for (const Piece& p : pieces) {
                if (p.id >= 0) {
                    ids.push_back(p.id);
                    continue;
                }
                text::pre_tokenize(pre_tokenizer_, 0, p.text, false, p.at_origin, [&](std::string_view word, bool raw_bytes) {
                    if (raw_bytes) model_.tokenize_bytes(word, text::ByteAlphabet::get().chars, ids, scratch);
                    else model_.tokenize(word, ids, scratch);
                });
            }
        }
        if (post_processor_) ids = post_processor_->apply(std::move(ids), add_special_tokens);
        return ids;
    }

    // As Hugging Face tokenizers' decode: ids without a token are skipped.
    std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (std::int32_t id : ids) {
            const std::string* token = added_token_string(id);
            if (!token) token = model_.id_to_token(id);
            if (!token) continue;
            if (skip_special_tokens && special_.count(*token)) continue;
            tokens.push_back(*token);
        }
        if (decoder_) {
            std::string out;
            for (const auto& s : decoder_->decode_chain(std::move(tokens))) out += s;
            return out;
        }
        std::string out;
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (i) out += ' ';
            out += tokens[i];
        }
        return out;
    }

    std::optional<std::int32_t> token_to_id(std::string_view token) const {
        if (const auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
        return model_.token_to_id(token);
    }

    std::string id_to_token(std::int32_t id) const {
        if (const std::string* t = added_token_string(id)) return *t;
        if (const std::string* t = model_.id_to_token(id)) return *t;
        fail(source_, ": token id ", id, " is not in the vocabulary");
    }

    // Vocabulary size including added tokens (those not already in the model's vocabulary).
    std::size_t vocab_size() const {
        std::size_t n = model_.size();
        for (const auto& [content, id] : added_ids_)
            if (!model_.token_to_id(content)) ++n;
        return n;
    }

    // The largest token id encode() can produce.
    std::int32_t max_id() const {
        std::int32_t m = model_.max_id();
        for (const auto& [content, id] : added_ids_) m = std::max(m, id);
        return m;
    }

    // Empties the per-word cache of the BPE model (bounded anyway; for measurements).
    void clear_cache() const { model_.clear_cache(); }

    // transformers' clean_up_tokenization (what decode() does there when the
    // tokenizer's clean_up_tokenization_spaces is set).
    static std::string clean_up_tokenization(std::string_view s) {
        std::string out(s);
        for (const auto& [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
                                       {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
            out = text::replace_all(out, from, to);
        return out;
    }

private:
    using json = nlohmann::json;

    struct Piece {
        std::string_view text;
        std::int32_t id = -1;  // an added token's id, or -1
        bool at_origin = false;
    };

    // Splits out added tokens as upstream's AddedVocabulary::find_matches does,
    // including its single_word, lstrip and rstrip handling.
    void split_added(const text::TokenTrie& trie, std::string_view s, bool at_origin, std::vector<Piece>& out) const {
        if (s.empty()) return;
        std::size_t start_offset = 0, from = 0, start = 0, stop = 0;
        std::int32_t id = -1;
        const auto push = [&](std::size_t a, std::size_t b, std::int32_t tid) {
            if (b > a) out.push_back({s.substr(a, b - a), tid, at_origin && a == 0});
        };
        while (trie.find(s, from, start, stop, id)) {
            from = stop;
            const text::AddedToken& token = added_.at(id);
            if (token.single_word) {
                const bool start_space = start == 0 || !unicode::is_word(last_code_point(s.substr(0, start)));
                const bool stop_space = stop == s.size() || !unicode::is_word(first_code_point(s.substr(stop)));
                if (!start_space || !stop_space) continue;
            }
            if (token.lstrip) {
                std::size_t new_start = start;
                while (new_start > 0) {
                    std::size_t i = new_start - 1;
                    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
                    std::size_t j = i;
                    if (!unicode::is_whitespace(utf8::next(s, j))) break;
                    new_start = i;
                }
                start = std::max(new_start, start_offset);
            }
            if (token.rstrip) {
                while (stop < s.size()) {
                    std::size_t j = stop;
                    if (!unicode::is_whitespace(utf8::next(s, j))) break;
                    stop = j;
                }
            }
            if (start_offset < start) push(start_offset, start, -1);
            push(start, stop, id);
            start_offset = stop;
        }
        if (start_offset < s.size()) push(start_offset, s.size(), -1);
    }

    static char32_t first_code_point(std::string_view s) {
        std::size_t i = 0;
        return utf8::next(s, i);
    }
    static char32_t last_code_point(std::string_view s) {
        std::size_t i = s.size() - 1;
        while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
        return utf8::next(s, i);
    }

    const std::string* added_token_string(std::int32_t id) const {
        if (const auto it = added_normalized_.find(id); it != added_normalized_.end()) return &it->second;
        if (const auto it = added_.find(id); it != added_.end()) return &it->second.content;
        return nullptr;
    }

    // ---- tokenizer.json --------------------------------------------------

    [[noreturn]] void bad(const std::string& where, const std::string& problem) const {
        fail(ErrorKind::Format, source_, ": ", where, ": ", problem);
    }
    static std::string type_name(const json& j) { return j.type_name(); }

    const json& field(const json& obj, const char* key, const std::string& where) const {
        const auto it = obj.find(key);
        if (it == obj.end()) bad(where, std::string("missing field \"") + key + "\"");
        return *it;
    }
    // Optional field: absent and null both mean "not given".
    const json* optional(const json& obj, const char* key) const {
        const auto it = obj.find(key);
        return it == obj.end() || it->is_null() ? nullptr : &*it;
    }
    const json& object(const json& j, const std::string& where) const {
        if (!j.is_object()) bad(where, "expected an object, found " + type_name(j));
        return j;
    }
    const json& array(const json& j, const std::string& where) const {
        if (!j.is_array()) bad(where, "expected an array, found " + type_name(j));
        return j;
    }
    std::string string(const json& j, const std::string& where) const {
        if (!j.is_string()) bad(where, "expected a string, found " + type_name(j));
        std::string s = j.get<std::string>();
        if (utf8::first_invalid(s) != utf8::npos) bad(where, "string is not valid UTF-8");
        return s;
    }
    bool boolean(const json& obj, const char* key, bool fallback, const std::string& where) const {
        const json* j = optional(obj, key);
        if (!j) return fallback;
        if (!j->is_boolean()) bad(where + "." + key, "expected a boolean, found " + type_name(*j));
        return j->get<bool>();
    }
    std::int64_t integer(const json& j, std::int64_t max, const std::string& where) const {
        if (!j.is_number_integer()) bad(where, "expected an integer, found " + type_name(j));
        if (j.is_number_unsigned() ? j.get<std::uint64_t>() > static_cast<std::uint64_t>(max) : j.get<std::int64_t>() < 0 ||
                                                                                                  j.get<std::int64_t>() > max)
            bad(where, "integer " + j.dump() + " is out of range [0, " + std::to_string(max) + "]");
        return j.get<std::int64_t>();
    }
    std::int32_t token_id(const json& j, const std::string& where) const {
        return static_cast<std::int32_t>(integer(j, 0x7FFFFFFF, where));
    }
    std::string one_char(const json& j, const std::string& where) const {
        std::string s = string(j, where);
        std::size_t i = 0;
        if (s.empty() || (utf8::next(s, i), i != s.size())) bad(where, "expected a single character, found \"" + s + "\"");
        return s;
    }
    text::PrependScheme prepend_scheme(const json& obj, const std::string& where) const {
        text::PrependScheme scheme = text::PrependScheme::Always;
        if (const json* j = optional(obj, "prepend_scheme")) {
            const std::string s = string(*j, where + ".prepend_scheme");
            if (s == "always") scheme = text::PrependScheme::Always;
            else if (s == "first") scheme = text::PrependScheme::First;
            else if (s == "never") scheme = text::PrependScheme::Never;
            else bad(where + ".prepend_scheme", "unknown value \"" + s + "\" (expected always, first or never)");
        }
        if (const json* j = optional(obj, "add_prefix_space")) {  // older files
            if (!j->is_boolean()) bad(where + ".add_prefix_space", "expected a boolean, found " + type_name(*j));
            if (!j->get<bool>()) {
                if (scheme != text::PrependScheme::Never && optional(obj, "prepend_scheme"))
                    bad(where, "add_prefix_space does not match declared prepend_scheme");
                scheme = text::PrependScheme::Never;
            }
        }
        return scheme;
    }
    std::string type_of(const json& obj, const std::string& where) const {
        object(obj, where);
        return string(field(obj, "type", where), where + ".type");
    }

    void parse(std::string_view data) {
        check(data.size() <= text::max_tokenizer_file_bytes, ErrorKind::Limit, source_, ": ", data.size(), " bytes is larger than the limit of ",
              text::max_tokenizer_file_bytes, " bytes for a tokenizer.json");
        json root;
        try {
            // The callback bounds nesting so that a hostile file cannot exhaust the stack later.
            root = json::parse(data.begin(), data.end(), [this](int depth, json::parse_event_t, json&) {
                if (depth > text::max_json_depth)
                    fail(ErrorKind::Format, source_, ": JSON nested deeper than ", text::max_json_depth, " levels");
                return true;
            });
        } catch (const json::exception& e) {
            fail(ErrorKind::Format, source_, ": malformed JSON: ", e.what());
        }
        object(root, "top level");
        if (const json* v = optional(root, "version")) {
            const std::string version = string(*v, "version");
            if (version != "1.0") bad("version", "unknown tokenizer version \"" + version + "\"");
        }
        if (const json* n = optional(root, "normalizer")) normalizer_ = std::make_shared<const text::Normalizer>(parse_normalizer(*n, "normalizer"));
        if (const json* p = optional(root, "pre_tokenizer")) parse_pre_tokenizer(*p, "pre_tokenizer", pre_tokenizer_);
        parse_model(field(root, "model", "top level"));
        bool byte_level = false;
        for (const auto& step : pre_tokenizer_) byte_level = byte_level || step.kind == text::PreTokenizerStep::Kind::ByteLevel;
        if (byte_level) model_.prepare_byte_level(text::ByteAlphabet::get().chars);
        if (const json* a = optional(root, "added_tokens")) parse_added_tokens(*a);
        if (const json* p = optional(root, "post_processor"))
            post_processor_ = std::make_shared<const text::PostProcessor>(parse_post_processor(*p, "post_processor"));
        if (const json* d = optional(root, "decoder")) decoder_ = std::make_shared<const text::Decoder>(parse_decoder(*d, "decoder"));
        // truncation and padding are ignored: transformers turns them off unless asked.
    }

    text::Normalizer parse_normalizer(const json& j, const std::string& where) const {
        using K = text::Normalizer::Kind;
        const std::string type = type_of(j, where);
        text::Normalizer n;
        if (type == "Sequence") {
            n.kind = K::Sequence;
            const json& list = array(field(j, "normalizers", where), where + ".normalizers");
            for (std::size_t i = 0; i < list.size(); ++i)
                n.children.push_back(parse_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]"));
        } else if (type == "Prepend") {
            n.kind = K::Prepend;
            n.a = string(field(j, "prepend", where), where + ".prepend");
        } else if (type == "Replace") {
            n.kind = K::Replace;
            n.a = string_pattern(field(j, "pattern", where), where + ".pattern");
            n.b = string(field(j, "content", where), where + ".content");
        } else if (type == "NFC") {
            n.kind = K::NFC;
        } else if (type == "NFD") {
            n.kind = K::NFD;
        } else if (type == "Strip") {
            n.kind = K::Strip;
            n.left = boolean(j, "strip_left", true, where);
            n.right = boolean(j, "strip_right", true, where);
        } else {
            bad(where + ".type", "unsupported normalizer \"" + type + "\" (supported: Sequence, Prepend, Replace, NFC, NFD, Strip)");
        }
        return n;
    }

    // Replace patterns: {"String": s}; regex patterns need a regex engine we do not carry.
    std::string string_pattern(const json& j, const std::string& where) const {
        object(j, where);
        if (const json* s = optional(j, "String")) {
            std::string p = string(*s, where + ".String");
            if (p.empty()) bad(where + ".String", "empty pattern");
            return p;
        }
        if (optional(j, "Regex")) bad(where, "regex patterns are not supported (only {\"String\": ...})");
        bad(where, "expected {\"String\": ...}");
    }

    void parse_pre_tokenizer(const json& j, const std::string& where, std::vector<text::PreTokenizerStep>& steps) const {
        const std::string type = type_of(j, where);
        if (type == "Sequence") {
            const json& list = array(field(j, "pretokenizers", where), where + ".pretokenizers");
            for (std::size_t i = 0; i < list.size(); ++i)
                parse_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]", steps);
            return;
        }
        text::PreTokenizerStep step;
        if (type == "ByteLevel") {
            step.kind = text::PreTokenizerStep::Kind::ByteLevel;
            step.add_prefix_space = boolean(j, "add_prefix_space", true, where);
            step.use_regex = boolean(j, "use_regex", true, where);
        } else if (type == "Metaspace") {
            step.kind = text::PreTokenizerStep::Kind::Metaspace;
            step.replacement = one_char(field(j, "replacement", where), where + ".replacement");
            step.prepend_scheme = prepend_scheme(j, where);
            step.split = boolean(j, "split", true, where);
        } else if (type == "Split") {
            // Only the form newer conversions of GPT-2-style tokenizers use: GPT-2's regex, Isolated.
            static constexpr std::string_view gpt2_regex =
                R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
            const json& pattern = object(field(j, "pattern", where), where + ".pattern");
            const json* regex = optional(pattern, "Regex");
            const std::string behavior = string(field(j, "behavior", where), where + ".behavior");
            if (!regex || string(*regex, where + ".pattern.Regex") != gpt2_regex || behavior != "Isolated" ||
                boolean(j, "invert", false, where))
                bad(where, "unsupported Split pre-tokenizer (only GPT-2's regex with behavior Isolated is supported)");
            step.kind = text::PreTokenizerStep::Kind::Gpt2Split;
        } else {
            bad(where + ".type", "unsupported pre-tokenizer \"" + type + "\" (supported: ByteLevel, Metaspace, Split with GPT-2's regex, Sequence)");
        }
        if (steps.size() >= 64) bad(where, "too many pre-tokenizers");
        steps.push_back(step);
    }

    void parse_model(const json& j) {
        const std::string where = "model";
        object(j, where);
        if (const json* t = optional(j, "type")) {
            const std::string type = string(*t, "model.type");
            if (type != "BPE")
                bad("model.type", "unsupported model type \"" + type + "\" (only BPE is supported)");
        } else if (!j.contains("merges")) {
            bad(where, "no \"type\" and no \"merges\": not a BPE model (only BPE is supported)");
        }
        text::BpeConfig config;
        if (const json* d = optional(j, "dropout")) {
            if (!d->is_number()) bad("model.dropout", "expected a number, found " + type_name(*d));
            const double p = d->get<double>();
            if (!(p >= 0.0 && p <= 1.0)) bad("model.dropout", "must be in [0, 1]");
            if (p > 0.0) bad("model.dropout", "BPE dropout is random; only 0 or null is supported");
        }
        if (const json* u = optional(j, "unk_token")) config.unk_token = string(*u, "model.unk_token");
        if (const json* p = optional(j, "continuing_subword_prefix"))
            config.continuing_subword_prefix = string(*p, "model.continuing_subword_prefix");
        if (const json* s = optional(j, "end_of_word_suffix")) config.end_of_word_suffix = string(*s, "model.end_of_word_suffix");
        config.fuse_unk = boolean(j, "fuse_unk", false, where);
        config.byte_fallback = boolean(j, "byte_fallback", false, where);
        config.ignore_merges = boolean(j, "ignore_merges", false, where);

        const json& vocab = object(field(j, "vocab", where), "model.vocab");
        if (vocab.size() > text::max_vocab_entries) bad("model.vocab", "more than " + std::to_string(text::max_vocab_entries) + " entries");
        config.vocab.reserve(vocab.size());
        for (const auto& [token, id] : vocab.items()) {
            if (utf8::first_invalid(token) != utf8::npos) bad("model.vocab", "a token is not valid UTF-8");
            config.vocab[token] = token_id(id, "model.vocab[\"" + token + "\"]");
        }

        const json& merges = array(field(j, "merges", where), "model.merges");
        if (merges.size() > text::max_vocab_entries) bad("model.merges", "more than " + std::to_string(text::max_vocab_entries) + " merges");
        config.merges.reserve(merges.size());
        const bool pairs = !merges.empty() && merges[0].is_array();
        for (std::size_t i = 0; i < merges.size(); ++i) {
            const std::string at = "model.merges[" + std::to_string(i) + "]";
            if (pairs) {
                const json& m = array(merges[i], at);
                if (m.size() != 2) bad(at, "expected a pair of tokens");
                config.merges.emplace_back(string(m[0], at + "[0]"), string(m[1], at + "[1]"));
            } else {
                const std::string line = string(merges[i], at);
                if (line.rfind("#version", 0) == 0) continue;
                const std::size_t space = line.find(' ');
                if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
                    bad(at, "expected \"a b\" (two tokens separated by one space), found \"" + line + "\"");
                config.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
            }
        }
        model_ = text::BpeModel(std::move(config), source_);
    }

    // Mirrors upstream's AddedVocabulary::add_tokens: a token keeps the id of an
    // existing token with the same content, otherwise takes the next free id after
    // the model's vocabulary (the id written in the file is not authoritative).
    void parse_added_tokens(const json& list) {
        array(list, "added_tokens");
        if (list.size() > text::max_vocab_entries) bad("added_tokens", "too many entries");
        auto next_id = static_cast<std::int64_t>(model_.size());
        for (std::size_t i = 0; i < list.size(); ++i) {
            const std::string where = "added_tokens[" + std::to_string(i) + "]";
            const json& j = object(list[i], where);
            text::AddedToken t;
            t.content = string(field(j, "content", where), where + ".content");
            token_id(field(j, "id", where), where + ".id");  // validated, not used (see above)
            if (t.content.empty()) bad(where + ".content", "empty added token");
            if (t.content.size() > text::max_added_token_bytes)
                bad(where + ".content", "longer than " + std::to_string(text::max_added_token_bytes) + " bytes");
            t.special = boolean(j, "special", false, where);
            t.single_word = boolean(j, "single_word", false, where);
            t.lstrip = boolean(j, "lstrip", false, where);
            t.rstrip = boolean(j, "rstrip", false, where);
            t.normalized = boolean(j, "normalized", !t.special, where);
            if (const auto it = added_ids_.find(t.content); it != added_ids_.end() && added_.at(it->second) == t) continue;
            std::int32_t id;
            if (const auto existing = token_to_id(t.content)) {
                id = *existing;
            } else {
                if (next_id > 0x7FFFFFFF) bad(where, "token id overflow");
                id = static_cast<std::int32_t>(next_id++);
            }
            if (t.normalized && normalizer_) {
                std::string normed = t.content;
                normalizer_->apply(normed);
                if (normed != t.content) added_normalized_[id] = normed;
            }
            added_ids_[t.content] = id;
            if (t.special) special_.insert(t.content);
            added_[id] = t;
        }
        for (const auto& [id, t] : added_) {
            const auto it = added_normalized_.find(id);
            const std::string& pattern = t.normalized && it != added_normalized_.end() ? it->second : t.content;
            if (pattern.empty()) bad("added_tokens", "token \"" + t.content + "\" normalizes to an empty string");
            if (!(t.normalized ? normalized_trie_ : raw_trie_).insert(pattern, id))
                bad("added_tokens", "two added tokens match the same text \"" + pattern + "\"");
        }
    }

    text::PostProcessor parse_post_processor(const json& j, const std::string& where) const {
        using K = text::PostProcessor::Kind;
        const std::string type = type_of(j, where);
        text::PostProcessor p;
        if (type == "Sequence") {
            p.kind = K::Sequence;
            const json& list = array(field(j, "processors", where), where + ".processors");
            if (list.size() > 64) bad(where, "too many processors");
            for (std::size_t i = 0; i < list.size(); ++i)
                p.children.push_back(parse_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]"));
        } else if (type == "ByteLevel") {
            p.kind = K::ByteLevel;
        } else if (type == "TemplateProcessing") {
            p.kind = K::Template;
            parse_template(j, where, p);
        } else if (type == "RobertaProcessing" || type == "BertProcessing") {
            p.kind = K::Wrap;
            const auto token = [&](const char* key) {
                const json& pair = array(field(j, key, where), where + "." + key);
                if (pair.size() != 2) bad(where + "." + key, "expected [token, id]");
                string(pair[0], where + "." + key + "[0]");
                return token_id(pair[1], where + "." + key + "[1]");
            };
            p.cls = token("cls");
            p.sep = token("sep");
        } else {
            bad(where + ".type", "unsupported post-processor \"" + type +
                                     "\" (supported: ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing, Sequence)");
        }
        return p;
    }

    void parse_template(const json& j, const std::string& where, text::PostProcessor& p) const {
        std::map<std::string, std::vector<std::int32_t>> specials;
        const json& tokens = object(field(j, "special_tokens", where), where + ".special_tokens");
        for (const auto& [name, value] : tokens.items()) {
            const std::string at = where + ".special_tokens[\"" + name + "\"]";
            object(value, at);
            const json& ids = array(field(value, "ids", at), at + ".ids");
            const json& strings = array(field(value, "tokens", at), at + ".tokens");
            if (ids.size() != strings.size()) bad(at, "ids and tokens must have the same length");
            std::vector<std::int32_t> list;
            for (std::size_t i = 0; i < ids.size(); ++i) list.push_back(token_id(ids[i], at + ".ids[" + std::to_string(i) + "]"));
            specials[name] = std::move(list);
        }
        array(field(j, "pair", where), where + ".pair");
        const json& single = array(field(j, "single", where), where + ".single");
        for (std::size_t i = 0; i < single.size(); ++i) {
            const std::string at = where + ".single[" + std::to_string(i) + "]";
            const json& piece = object(single[i], at);
            if (const json* s = optional(piece, "Sequence")) {
                const std::string id = string(field(object(*s, at + ".Sequence"), "id", at + ".Sequence"), at + ".Sequence.id");
                if (id != "A") bad(at + ".Sequence.id", "the single-sequence template can only use sequence A, found \"" + id + "\"");
                p.pieces.emplace_back();
            } else if (const json* t = optional(piece, "SpecialToken")) {
                const std::string id = string(field(object(*t, at + ".SpecialToken"), "id", at + ".SpecialToken"), at + ".SpecialToken.id");
                const auto it = specials.find(id);
                if (it == specials.end()) bad(at, "special token \"" + id + "\" is not in special_tokens");
                if (it->second.empty()) continue;  // adds nothing
                p.pieces.push_back(it->second);
            } else {
                bad(at, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
        }
    }

    text::Decoder parse_decoder(const json& j, const std::string& where) const {
        using K = text::Decoder::Kind;
        const std::string type = type_of(j, where);
        text::Decoder d;
        if (type == "Sequence") {
            d.kind = K::Sequence;
            const json& list = array(field(j, "decoders", where), where + ".decoders");
            if (list.size() > 64) bad(where, "too many decoders");
            for (std::size_t i = 0; i < list.size(); ++i)
                d.children.push_back(parse_decoder(list[i], where + ".decoders[" + std::to_string(i) + "]"));
        } else if (type == "ByteLevel") {
            d.kind = K::ByteLevel;
        } else if (type == "Replace") {
            d.kind = K::Replace;
            d.a = string_pattern(field(j, "pattern", where), where + ".pattern");
            d.b = string(field(j, "content", where), where + ".content");
        } else if (type == "ByteFallback") {
            d.kind = K::ByteFallback;
        } else if (type == "Fuse") {
            d.kind = K::Fuse;
        } else if (type == "Strip") {
            d.kind = K::Strip;
            d.a = one_char(field(j, "content", where), where + ".content");
            d.start = static_cast<std::size_t>(integer(field(j, "start", where), 0x7FFFFFFF, where + ".start"));
            d.stop = static_cast<std::size_t>(integer(field(j, "stop", where), 0x7FFFFFFF, where + ".stop"));
        } else if (type == "Metaspace") {
            d.kind = K::Metaspace;
            d.a = one_char(field(j, "replacement", where), where + ".replacement");
            d.prepend_scheme = prepend_scheme(j, where);
        } else if (type == "BPEDecoder") {
            d.kind = K::BPE;
            d.a = "</w>";
            if (const json* s = optional(j, "suffix")) d.a = string(*s, where + ".suffix");
        } else {
            bad(where + ".type", "unsupported decoder \"" + type +
                                     "\" (supported: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPEDecoder, Sequence)");
        }
        return d;
    }

    std::string source_;
    std::shared_ptr<const text::Normalizer> normalizer_;
    std::vector<text::PreTokenizerStep> pre_tokenizer_;
    text::BpeModel model_;
    std::shared_ptr<const text::PostProcessor> post_processor_;
    std::shared_ptr<const text::Decoder> decoder_;
    std::map<std::int32_t, text::AddedToken> added_;               // id -> token
    std::map<std::int32_t, std::string> added_normalized_;         // id -> normalized content, when it differs
    std::map<std::string, std::int32_t, std::less<>> added_ids_;   // content -> id
    std::set<std::string, std::less<>> special_;
    text::TokenTrie raw_trie_, normalized_trie_;
};

}  // namespace flamingo

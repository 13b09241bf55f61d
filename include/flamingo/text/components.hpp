#pragma once
// The pieces of a Hugging Face tokenizer pipeline that the supported tokenizer.json
// files use: normalizers, pre-tokenizers, post-processors and decoders. Each does
// what the upstream Rust component of the same name does (tokenizers 0.2x).
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "flamingo/text/unicode.hpp"
#include "flamingo/text/utf8.hpp"

namespace flamingo::text {

// ---------------------------------------------------------------------------
// GPT-2's byte-to-unicode alphabet: printable Latin-1 bytes map to themselves,
// the other 68 bytes to U+0100.. in byte order.

struct ByteAlphabet {
    std::array<std::string, 256> chars;   // UTF-8 of each byte's character
    std::array<std::int16_t, 512> bytes;  // byte of each character below U+0200, or -1
    ByteAlphabet() {
        bytes.fill(-1);
        char32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
            utf8::append(chars[b], cp);
            bytes[cp] = static_cast<std::int16_t>(b);
        }
    }
    static const ByteAlphabet& get() {
        static const ByteAlphabet alphabet;
        return alphabet;
    }
};

// Replaces every non-overlapping occurrence of `from` (non-empty), left to right.
inline std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (true) {
        const std::size_t j = s.find(from, i);
        if (j == std::string_view::npos) break;
        out.append(s.substr(i, j - i));
        out.append(to);
        i = j + from.size();
    }
    out.append(s.substr(i));
    return out;
}

// ---------------------------------------------------------------------------
// GPT-2's pre-tokenizer regex, hand-compiled:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// The alternatives are tried in order at each position as Oniguruma does, with
// the backtracking of \s+(?!\S) made explicit. Calls emit(begin, end) per match;
// the matches tile the whole (valid UTF-8) input.

template <class Emit>
void gpt2_split(std::string_view s, Emit&& emit) {
    using unicode::CharClass;
    const std::size_t n = s.size();
    const auto class_at = [&](std::size_t i, std::size_t& next) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            next = i + 1;
            return unicode::char_class(c);
        }
        next = i;
        return unicode::char_class(utf8::next(s, next));
    };
    std::size_t pos = 0;
    while (pos < n) {
        const char c = s[pos];
        if (c == '\'' && pos + 1 < n) {
            const char d = s[pos + 1];
            std::size_t len = 0;
            if (d == 's' || d == 't' || d == 'm' || d == 'd') len = 2;
            else if (pos + 2 < n && ((d == 'r' && s[pos + 2] == 'e') || (d == 'v' && s[pos + 2] == 'e') ||
                                     (d == 'l' && s[pos + 2] == 'l')))
                len = 3;
            if (len) {
                emit(pos, pos + len);
                pos += len;
                continue;
            }
        }
        std::size_t after;
        CharClass cls = class_at(pos, after);
        std::size_t run = pos;  // where the run of one class starts
        if (c == ' ' && after < n) {
            std::size_t after2;
            const CharClass next_cls = class_at(after, after2);
            if (next_cls != CharClass::Space) {  // " ?" then a letter, number or other run
                cls = next_cls;
                run = after;
            }
        }
        if (cls != CharClass::Space) {
            std::size_t end = run, next;
            while (end < n && class_at(end, next) == cls) end = next;
            emit(pos, end);
            pos = end;
            continue;
        }
        // Whitespace: \s+(?!\S) keeps the last space for the next word unless at the end.
        std::size_t end = pos, last = pos, count = 0, next;
        while (end < n && class_at(end, next) == CharClass::Space) {
            last = end;
            end = next;
            ++count;
        }
        if (end < n && count > 1) end = last;
        emit(pos, end);
        pos = end;
    }
}

// ---------------------------------------------------------------------------
// Normalizers

struct Normalizer {
    enum class Kind { Sequence, Prepend, Replace, NFC, NFD, Strip } kind = Kind::Sequence;
    std::vector<Normalizer> children;  // Sequence
    std::string a, b;                  // Prepend: a; Replace: a -> b
    bool left = false, right = false;  // Strip

    void apply(std::string& s) const {
        switch (kind) {
            case Kind::Sequence:
                for (const auto& n : children) n.apply(s);
                break;
            case Kind::Prepend:
                if (!s.empty()) s.insert(0, a);
                break;
            case Kind::Replace:
                if (s.find(a) != std::string::npos) s = replace_all(s, a, b);
                break;
            case Kind::NFC: s = unicode::nfc(s); break;
            case Kind::NFD: s = unicode::nfd(s); break;
            case Kind::Strip: s = strip(s); break;
        }
    }

private:
    std::string strip(std::string_view s) const {
        std::size_t begin = 0, end = s.size();
        if (left)
            while (begin < end) {
                std::size_t i = begin;
                if (!unicode::is_whitespace(utf8::next(s, i))) break;
                begin = i;
            }
        if (right)
            while (end > begin) {
                std::size_t i = end - 1;
                while (i > begin && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
                std::size_t j = i;
                if (!unicode::is_whitespace(utf8::next(s, j))) break;
                end = i;
            }
        return std::string(s.substr(begin, end - begin));
    }
};

// ---------------------------------------------------------------------------
// Pre-tokenizers (a Sequence is flattened into a list of steps at load time).

enum class PrependScheme { Always, First, Never };

struct PreTokenizerStep {
    // Gpt2Split: a Split pre-tokenizer whose regex is GPT-2's pattern (Isolated, not inverted).
    enum class Kind { ByteLevel, Metaspace, Gpt2Split } kind = Kind::ByteLevel;
    bool add_prefix_space = false;  // ByteLevel
    bool use_regex = true;          // ByteLevel
    std::string replacement;        // Metaspace: one character
    PrependScheme prepend_scheme = PrependScheme::Always;
    bool split = true;              // Metaspace
};

// Runs steps[index..] over one piece of text and calls emit(word, raw_bytes) per
// resulting word; raw_bytes means the model must see the word's bytes through the
// byte-level alphabet (left unmapped so the BPE model can take a faster path).
// at_origin: the piece starts at offset 0 of the original input (Metaspace "first").
template <class Emit>
void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::size_t index, std::string_view word, bool raw,
                  bool at_origin, Emit&& emit) {
    if (index == steps.size()) {
        emit(word, raw);
        return;
    }
    std::string mapped;
    if (raw) {  // a later step sees the mapped characters, as upstream's ByteLevel leaves them
        const auto& alphabet = ByteAlphabet::get();
        for (unsigned char b : word) mapped += alphabet.chars[b];
        word = mapped;
    }
    const PreTokenizerStep& step = steps[index];
    if (step.kind == PreTokenizerStep::Kind::Gpt2Split) {
        gpt2_split(word, [&](std::size_t begin, std::size_t end) {
            pre_tokenize(steps, index + 1, word.substr(begin, end - begin), false, at_origin && begin == 0, emit);
        });
        return;
    }
    if (step.kind == PreTokenizerStep::Kind::ByteLevel) {
        std::string prefixed;
        if (step.add_prefix_space && (word.empty() || word[0] != ' ')) {
            prefixed.reserve(word.size() + 1);
            prefixed += ' ';
            prefixed += word;
            word = prefixed;
        }
        if (!step.use_regex) {
            pre_tokenize(steps, index + 1, word, true, at_origin, emit);
            return;
        }
        gpt2_split(word, [&](std::size_t begin, std::size_t end) {
            pre_tokenize(steps, index + 1, word.substr(begin, end - begin), true, at_origin && begin == 0, emit);
        });
        return;
    }
    // Metaspace: spaces become the replacement, which may be prepended, then split before each one.
    std::string text = replace_all(word, " ", step.replacement);
    const bool starts = text.compare(0, step.replacement.size(), step.replacement) == 0;
    if (!starts && (step.prepend_scheme == PrependScheme::Always ||
                    (step.prepend_scheme == PrependScheme::First && at_origin)))
        text.insert(0, step.replacement);
    if (!step.split) {
        pre_tokenize(steps, index + 1, text, false, at_origin, emit);
        return;
    }
    const std::string_view t = text;
    std::size_t begin = 0;
    while (begin < t.size()) {
        std::size_t end = t.find(step.replacement, begin + 1);
        if (end == std::string_view::npos) end = t.size();
        pre_tokenize(steps, index + 1, t.substr(begin, end - begin), false, at_origin && begin == 0, emit);
        begin = end;
    }
}

// ---------------------------------------------------------------------------
// Post-processors (for a single sequence: only the token ids matter here).

struct PostProcessor {
    enum class Kind { Sequence, ByteLevel, Template, Wrap } kind = Kind::Sequence;
    std::vector<PostProcessor> children;  // Sequence
    // Template: the single-sequence template; an empty ids list marks the sequence itself.
    std::vector<std::vector<std::int32_t>> pieces;
    std::int32_t cls = 0, sep = 0;  // Wrap (RobertaProcessing / BertProcessing): cls A sep

    std::vector<std::int32_t> apply(std::vector<std::int32_t> ids, bool add_special_tokens) const {
        switch (kind) {
            case Kind::Sequence:
                for (const auto& p : children) ids = p.apply(std::move(ids), add_special_tokens);
                return ids;
            case Kind::ByteLevel: return ids;  // only trims offsets upstream
            case Kind::Template: {
                std::vector<std::int32_t> out;
                out.reserve(ids.size() + 8);
                for (const auto& piece : pieces) {
                    if (piece.empty()) out.insert(out.end(), ids.begin(), ids.end());
                    else if (add_special_tokens) out.insert(out.end(), piece.begin(), piece.end());
                }
                return out;
            }
            case Kind::Wrap: {
                if (!add_special_tokens) return ids;
                ids.insert(ids.begin(), cls);
                ids.push_back(sep);
                return ids;
            }
        }
        return ids;
    }
};

// ---------------------------------------------------------------------------
// Decoders: each maps a list of token strings to a list of strings; the result
// is their concatenation.

struct Decoder {
    enum class Kind { Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace, BPE } kind = Kind::Sequence;
    std::vector<Decoder> children;  // Sequence
    std::string a, b;               // Replace: a -> b; Strip: a the character; Metaspace: a the replacement; BPE: a the suffix
    std::size_t start = 0, stop = 0;  // Strip
    PrependScheme prepend_scheme = PrependScheme::Always;  // Metaspace

    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const {
        switch (kind) {
            case Kind::Sequence:
                for (const auto& d : children) tokens = d.decode_chain(std::move(tokens));
                return tokens;
            case Kind::ByteLevel: return {byte_level(tokens)};
            case Kind::Replace:
                for (auto& t : tokens) t = replace_all(t, a, b);
                return tokens;
            case Kind::ByteFallback: return byte_fallback(tokens);
            case Kind::Fuse: {
                std::string all;
                for (const auto& t : tokens) all += t;
                return {all};
            }
            case Kind::Strip:
                for (auto& t : tokens) t = strip(t);
                return tokens;
            case Kind::Metaspace:
                for (std::size_t i = 0; i < tokens.size(); ++i)
                    tokens[i] = replace_all(tokens[i], a, i == 0 && prepend_scheme != PrependScheme::Never ? "" : " ");
                return tokens;
            case Kind::BPE:
                for (std::size_t i = 0; i < tokens.size(); ++i) {
                    if (!a.empty()) tokens[i] = replace_all(tokens[i], a, i + 1 == tokens.size() ? "" : " ");
                }
                return tokens;
        }
        return tokens;
    }

private:
    // Tokens written wholly in the byte alphabet become those bytes; others stay as they are.
    static std::string byte_level(const std::vector<std::string>& tokens) {
        const auto& alphabet = ByteAlphabet::get();
        std::string bytes;
        for (const auto& t : tokens) {
            const std::size_t mark = bytes.size();
            bool all = true;
            for (std::size_t i = 0; i < t.size() && all;) {
                const char32_t cp = utf8::next(t, i);
                if (cp < 512 && alphabet.bytes[cp] >= 0) bytes += static_cast<char>(alphabet.bytes[cp]);
                else all = false;
            }
            if (!all) {
                bytes.resize(mark);
                bytes += t;
            }
        }
        return utf8::lossy(bytes);
    }

    // Runs of <0xXX> tokens become the bytes' UTF-8 text, or one U+FFFD per byte when invalid.
    static std::vector<std::string> byte_fallback(const std::vector<std::string>& tokens) {
        std::vector<std::string> out;
        std::string pending;
        const auto flush = [&] {
            if (pending.empty()) return;
            if (utf8::first_invalid(pending) == utf8::npos) {
                out.push_back(pending);
            } else {
                for (std::size_t i = 0; i < pending.size(); ++i) out.emplace_back(utf8::replacement_character);
            }
            pending.clear();
        };
        for (const auto& t : tokens) {
            int value = -1;
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') value = parse_hex_byte(t[3], t[4]);
            if (value >= 0) {
                pending += static_cast<char>(value);
            } else {
                flush();
                out.push_back(t);
            }
        }
        flush();
        return out;
    }
    // Two characters as Rust's u8::from_str_radix(_, 16) reads them (a leading '+' is allowed).
    static int parse_hex_byte(char hi, char lo) {
        const auto digit = [](char c) {
            if (c >= '0' && c <= '9') return c - '0';
            if (c >= 'a' && c <= 'f') return c - 'a' + 10;
            if (c >= 'A' && c <= 'F') return c - 'A' + 10;
            return -1;
        };
        if (hi == '+') return digit(lo);
        const int h = digit(hi), l = digit(lo);
        return h < 0 || l < 0 ? -1 : h * 16 + l;
    }

    std::string strip(const std::string& t) const {
        std::vector<std::size_t> starts;  // byte offset of each character
        for (std::size_t i = 0; i < t.size();) {
            starts.push_back(i);
            utf8::next(t, i);
        }
        const std::size_t n = starts.size();
        const auto char_at = [&](std::size_t k) {
            const std::size_t e = k + 1 < n ? starts[k + 1] : t.size();
            return std::string_view(t).substr(starts[k], e - starts[k]);
        };
        std::size_t start_cut = 0, stop_cut = n;
        for (std::size_t k = 0; k < start && k < n && char_at(k) == a; ++k) start_cut = k + 1;
        for (std::size_t k = 0; k < stop && k < n && char_at(n - k - 1) == a; ++k) stop_cut = n - k - 1;
        if (start_cut >= stop_cut) return {};
        const std::size_t b0 = start_cut < n ? starts[start_cut] : t.size();
        const std::size_t b1 = stop_cut < n ? starts[stop_cut] : t.size();
        return t.substr(b0, b1 - b0);
    }
};

}  // namespace flamingo::text

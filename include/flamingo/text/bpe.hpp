#pragma once
// The BPE model of Hugging Face tokenizers: a word's characters become vocabulary
// symbols (or byte-fallback <0xXX> tokens, or <unk>), then the pair with the lowest
// merge rank is merged, leftmost first, until no merge applies. The merge loop is
// the same priority-queue walk as upstream's, so ties and quirks come out the same.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "flamingo/core/error.hpp"
#include "flamingo/text/utf8.hpp"

namespace flamingo::text {

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using Vocab = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;

// Open-addressing map from a 64-bit key (never ~0) to a 64-bit value: the merge
// table is probed several times per merge, so it is kept flat.
class U64Map {
public:
    void reserve(std::size_t n) {
        std::size_t cap = 16;
        while (cap < 2 * n) cap *= 2;
        keys_.assign(cap, empty);
        values_.assign(cap, 0);
        mask_ = cap - 1;
        size_ = 0;
    }
    void insert_or_assign(std::uint64_t key, std::uint64_t value) {
        if (2 * (size_ + 1) > keys_.size()) grow();
        std::size_t i = slot(key);
        if (keys_[i] == empty) {
            keys_[i] = key;
            ++size_;
        }
        values_[i] = value;
    }
    const std::uint64_t* find(std::uint64_t key) const {
        if (keys_.empty()) return nullptr;
        const std::size_t i = slot(key);
        return keys_[i] == key ? &values_[i] : nullptr;
    }
    std::size_t size() const { return size_; }

private:
    static constexpr std::uint64_t empty = ~std::uint64_t{0};
    static std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
        x ^= x >> 30;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 27;
        x *= 0x94D049BB133111EBull;
        return x ^ (x >> 31);
    }
    std::size_t slot(std::uint64_t key) const {
        std::size_t i = static_cast<std::size_t>(mix(key)) & mask_;
        while (keys_[i] != empty && keys_[i] != key) i = (i + 1) & mask_;
        return i;
    }
    void grow() {
        std::vector<std::uint64_t> keys = std::move(keys_), values = std::move(values_);
        reserve(std::max<std::size_t>(16, keys.size()));
        for (std::size_t i = 0; i < keys.size(); ++i)
            if (keys[i] != empty) insert_or_assign(keys[i], values[i]);
    }
    std::vector<std::uint64_t> keys_, values_;
    std::size_t mask_ = 0, size_ = 0;
};

inline std::uint64_t pair_key(std::uint32_t a, std::uint32_t b) { return (std::uint64_t{a} << 32) | b; }

struct BpeConfig {
    Vocab vocab;
    std::vector<std::pair<std::string, std::string>> merges;  // in rank order
    std::optional<std::string> unk_token;
    std::string continuing_subword_prefix;
    std::string end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
};

// Scratch buffers reused across the words of one encode call.
struct BpeScratch {
    struct Symbol {
        std::int32_t id;
        std::int32_t prev, next;
        std::uint32_t len;
    };
    struct Merge {
        std::uint32_t rank, pos;
        std::int32_t new_id;
    };
    std::vector<Symbol> symbols;
    std::vector<Merge> queue;
    std::vector<std::int32_t> ids;
    std::string text;
};

class BpeModel {
public:
    // Words at least this long are neither cached (as upstream) nor merged whole:
    // they are cut where no merge can ever join across (see chunk_end).
    static constexpr std::size_t max_cached_length = 256;
    static constexpr std::size_t cache_capacity = 10000;

    BpeModel() = default;
    BpeModel(const BpeModel& other)
        : vocab_(other.vocab_), id_to_token_(other.id_to_token_), merges_(other.merges_), joinable_(other.joinable_),
          single_char_(other.single_char_), byte_tokens_(other.byte_tokens_), byte_chars_(other.byte_chars_),
          byte_level_ready_(other.byte_level_ready_), unk_token_(other.unk_token_), unk_id_(other.unk_id_),
          prefix_(other.prefix_), suffix_(other.suffix_), fuse_unk_(other.fuse_unk_),
          byte_fallback_(other.byte_fallback_), ignore_merges_(other.ignore_merges_), source_(other.source_) {}
    BpeModel(BpeModel&& other) noexcept { swap(other); }
    BpeModel& operator=(BpeModel other) noexcept {
        swap(other);
        return *this;
    }

    // Validates as upstream's BpeBuilder does: every merge's parts and result must be
    // in the vocabulary. `source` names the file in error messages.
    BpeModel(BpeConfig config, std::string source) : source_(std::move(source)) {
        vocab_ = std::move(config.vocab);
        for (const auto& [token, id] : vocab_) {
            auto [it, inserted] = id_to_token_.emplace(id, token);
            if (!inserted && token < it->second) it->second = token;  // duplicate ids: deterministic choice
        }
        merges_.reserve(config.merges.size());
        for (std::size_t rank = 0; rank < config.merges.size(); ++rank) {
            const auto& [a, b] = config.merges[rank];
            const auto ia = vocab_.find(a), ib = vocab_.find(b);
            check(ia != vocab_.end(), ErrorKind::Format, source_, ": model.merges[", rank, "]: token \"", a, "\" is not in the vocabulary");
            check(ib != vocab_.end(), ErrorKind::Format, source_, ": model.merges[", rank, "]: token \"", b, "\" is not in the vocabulary");
            const std::string& prefix = config.continuing_subword_prefix;
            check(b.compare(0, prefix.size(), prefix) == 0, ErrorKind::Format, source_, ": model.merges[", rank, "]: \"", b,
                  "\" does not start with the continuing_subword_prefix");
            std::string merged = a + b.substr(config.continuing_subword_prefix.size());
            const auto im = vocab_.find(merged);
            check(im != vocab_.end(), ErrorKind::Format, source_, ": model.merges[", rank, "]: merged token \"", merged,
                  "\" is not in the vocabulary");
            // A later duplicate pair overrides an earlier one, as upstream's map collection does.
            merges_.insert_or_assign(pair_key(static_cast<std::uint32_t>(ia->second), static_cast<std::uint32_t>(ib->second)),
                                     pair_key(static_cast<std::uint32_t>(rank), static_cast<std::uint32_t>(im->second)));
            joinable_.insert_or_assign(pair_key(last_code_point(a), first_code_point(b)), 1);
        }
        unk_token_ = std::move(config.unk_token);
        if (unk_token_) {
            const auto it = vocab_.find(*unk_token_);
            if (it != vocab_.end()) unk_id_ = it->second;
        }
        prefix_ = std::move(config.continuing_subword_prefix);
        suffix_ = std::move(config.end_of_word_suffix);
        fuse_unk_ = config.fuse_unk;
        byte_fallback_ = config.byte_fallback;
        ignore_merges_ = config.ignore_merges;
        byte_tokens_.fill(-1);
        static const char* hex = "0123456789ABCDEF";
        for (int b = 0; b < 256; ++b) {
            const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
            if (const auto it = vocab_.find(name); it != vocab_.end()) byte_tokens_[b] = it->second;
        }
        single_char_.assign(65536 / 64, 0);
        for (const auto& [token, id] : vocab_) {
            std::size_t i = 0;
            if (token.empty()) continue;
            const char32_t cp = utf8::next(token, i);
            if (i == token.size() && cp < 65536) single_char_[cp / 64] |= std::uint64_t{1} << (cp % 64);
        }
    }

    // Byte-level models see each input byte as one character of GPT-2's byte-to-unicode
    // alphabet; `chars` gives that character's UTF-8 for each byte.
    void prepare_byte_level(const std::array<std::string, 256>& chars) {
        byte_level_ready_ = prefix_.empty() && suffix_.empty() && !ignore_merges_;
        for (int b = 0; b < 256; ++b) {
            const auto it = vocab_.find(chars[b]);
            byte_chars_[b] = {it == vocab_.end() ? -1 : it->second, static_cast<std::uint32_t>(chars[b].size())};
            byte_level_ready_ = byte_level_ready_ && it != vocab_.end();
        }
    }

    const Vocab& vocab() const { return vocab_; }
    std::size_t size() const { return vocab_.size(); }
    std::optional<std::int32_t> token_to_id(std::string_view token) const {
        const auto it = vocab_.find(token);
        if (it == vocab_.end()) return std::nullopt;
        return it->second;
    }
    const std::string* id_to_token(std::int32_t id) const {
        const auto it = id_to_token_.find(id);
        return it == id_to_token_.end() ? nullptr : &it->second;
    }
    // The largest id in the vocabulary (-1 when empty).
    std::int32_t max_id() const {
        std::int32_t m = -1;
        for (const auto& [id, token] : id_to_token_) m = std::max(m, id);
        return m;
    }

    // Words in the per-word caches (bounded by cache_capacity each).
    std::size_t cached_words() const {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        return std::max(cache_.size(), byte_cache_.size());
    }

    void clear_cache() const {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        cache_.clear();
        byte_cache_.clear();
    }

    // Tokenizes one word (the string the model sees) and appends its ids.
    void tokenize(std::string_view word, std::vector<std::int32_t>& out, BpeScratch& scratch) const {
        if (word.empty()) return;
        if (ignore_merges_) {
            if (const auto it = vocab_.find(word); it != vocab_.end()) {
                out.push_back(it->second);
                return;
            }
        }
        if (word.size() < max_cached_length || !prefix_.empty() || !suffix_.empty()) {
            tokenize_cached(word, out, scratch);
            return;
        }
        for (std::size_t begin = 0; begin < word.size();) {
            const std::size_t end = chunk_end(word, begin);
            tokenize_cached(word.substr(begin, end - begin), out, scratch);
            begin = end;
        }
    }

    // Tokenizes raw bytes as a byte-level word (each byte one alphabet character).
    void tokenize_bytes(std::string_view raw, const std::array<std::string, 256>& chars, std::vector<std::int32_t>& out,
                        BpeScratch& scratch) const {
        if (raw.empty()) return;
        if (!byte_level_ready_ || raw.size() >= max_cached_length) {
            std::string mapped;
            mapped.reserve(raw.size() * 2);
            for (unsigned char b : raw) mapped += chars[b];
            tokenize(mapped, out, scratch);
            return;
        }
        if (lookup(byte_cache_, raw, out)) return;
        auto& symbols = scratch.symbols;
        symbols.clear();
        for (unsigned char b : raw) add_symbol(symbols, byte_chars_[b].first, byte_chars_[b].second);
        merge_all(scratch);
        const std::size_t start = out.size();
        for (const auto& s : symbols)
            if (s.len != 0) out.push_back(s.id);
        store(byte_cache_, raw, out, start);
    }

private:
    using Symbol = BpeScratch::Symbol;
    using Cache = std::unordered_map<std::string, std::vector<std::int32_t>, StringHash, std::equal_to<>>;

    static char32_t first_code_point(std::string_view s) {
        std::size_t i = 0;
        return s.empty() ? 0 : utf8::next(s, i);
    }
    static char32_t last_code_point(std::string_view s) {
        if (s.empty()) return 0;
        std::size_t i = s.size() - 1;
        while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
        return utf8::next(s, i);
    }
    bool is_single_char_token(char32_t cp) const {
        return cp < 65536 && (single_char_[cp / 64] >> (cp % 64) & 1) != 0;
    }

    // End of the chunk starting at `begin`: the first boundary between two characters
    // that are both vocabulary symbols and that no merge joins (no merge (a, b) has a
    // ending with the left character and b starting with the right one). No merge can
    // ever cross such a boundary, so the chunks merge independently, exactly as the
    // whole word would. Only used without a continuing_subword_prefix / end_of_word_suffix.
    std::size_t chunk_end(std::string_view word, std::size_t begin) const {
        std::size_t i = begin;
        char32_t prev = utf8::next(word, i);
        bool prev_plain = is_single_char_token(prev);
        while (i < word.size()) {
            const std::size_t at = i;
            const char32_t cp = utf8::next(word, i);
            const bool plain = is_single_char_token(cp);
            if (prev_plain && plain && !joinable_.find(pair_key(prev, cp))) return at;
            prev = cp;
            prev_plain = plain;
        }
        return word.size();
    }

    bool lookup(Cache& cache, std::string_view key, std::vector<std::int32_t>& out) const {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        const auto it = cache.find(key);
        if (it == cache.end()) return false;
        out.insert(out.end(), it->second.begin(), it->second.end());
        return true;
    }
    void store(Cache& cache, std::string_view key, const std::vector<std::int32_t>& out, std::size_t start) const {
        if (key.size() >= max_cached_length) return;
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache.size() >= cache_capacity) cache.clear();  // bounded: start over rather than grow
        cache.emplace(std::string(key), std::vector<std::int32_t>(out.begin() + static_cast<std::ptrdiff_t>(start), out.end()));
    }

    void tokenize_cached(std::string_view word, std::vector<std::int32_t>& out, BpeScratch& scratch) const {
        if (lookup(cache_, word, out)) return;
        const std::size_t start = out.size();
        merge_word(word, scratch);
        for (const auto& s : scratch.symbols)
            if (s.len != 0) out.push_back(s.id);
        store(cache_, word, out, start);
    }

    static void add_symbol(std::vector<Symbol>& symbols, std::int32_t id, std::uint32_t len) {
        const auto n = static_cast<std::int32_t>(symbols.size());
        if (n > 0) symbols.back().next = n;
        symbols.push_back({id, n - 1, -1, len});
    }

    std::int32_t unk_id() const {
        if (!unk_id_) fail(ErrorKind::Format, source_, ": model.unk_token \"", *unk_token_, "\" is not in the vocabulary");
        return *unk_id_;
    }

    // Upstream's merge_word: characters to symbols (with byte fallback and unknown
    // handling, quirks included), then merge_all.
    void merge_word(std::string_view w, BpeScratch& scratch) const {
        auto& symbols = scratch.symbols;
        symbols.clear();
        bool unk = false;  // a pending unknown symbol (unk_len bytes)
        std::uint32_t unk_len = 0;
        std::string& s = scratch.text;
        for (std::size_t i = 0; i < w.size();) {
            const std::size_t start = i;
            utf8::next(w, i);
            const auto byte_len = static_cast<std::uint32_t>(i - start);
            std::string_view piece = w.substr(start, byte_len);
            if ((start != 0 && !prefix_.empty()) || (i == w.size() && !suffix_.empty())) {
                s.clear();
                if (start != 0) s += prefix_;
                s += piece;
                if (i == w.size()) s += suffix_;
                piece = s;
            }
            if (const auto it = vocab_.find(piece); it != vocab_.end()) {
                if (unk) {
                    add_symbol(symbols, unk_id(), unk_len);
                    unk = false;
                }
                add_symbol(symbols, it->second, byte_len);
                continue;
            }
            if (byte_fallback_) {
                bool all = true;
                for (unsigned char b : piece) all = all && byte_tokens_[b] >= 0;
                if (all) {
                    // Upstream leaves a pending unknown pending here (it lands after these bytes).
                    for (unsigned char b : piece) add_symbol(symbols, byte_tokens_[b], 1);
                    continue;
                }
            }
            if (unk_token_) {
                if (unk && fuse_unk_) {
                    unk_len += byte_len;
                } else {
                    if (unk) add_symbol(symbols, unk_id(), unk_len);
                    unk_id();  // fails when the unk_token is not in the vocabulary
                    unk = true;
                    unk_len = byte_len;
                }
            }
            // Without an unk_token the character is dropped, as upstream does.
        }
        if (unk) add_symbol(symbols, unk_id(), unk_len);
        merge_all(scratch);
    }

    void merge_all(BpeScratch& scratch) const {
        auto& symbols = scratch.symbols;
        auto& queue = scratch.queue;
        queue.clear();
        // Min-heap on (rank, position).
        const auto later = [](const BpeScratch::Merge& a, const BpeScratch::Merge& b) {
            return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
        };
        const auto push = [&](std::size_t pos) {
            const Symbol& left = symbols[pos];
            if (left.next < 0) return;
            const std::uint64_t* m = merges_.find(pair_key(static_cast<std::uint32_t>(left.id),
                                                           static_cast<std::uint32_t>(symbols[static_cast<std::size_t>(left.next)].id)));
            if (!m) return;
            queue.push_back({static_cast<std::uint32_t>(*m >> 32), static_cast<std::uint32_t>(pos),
                             static_cast<std::int32_t>(*m & 0xFFFFFFFFu)});
            std::push_heap(queue.begin(), queue.end(), later);
        };
        for (std::size_t i = 0; i + 1 < symbols.size(); ++i) push(i);
        while (!queue.empty()) {
            std::pop_heap(queue.begin(), queue.end(), later);
            const BpeScratch::Merge top = queue.back();
            queue.pop_back();
            Symbol& cur = symbols[top.pos];
            if (cur.len == 0 || cur.next < 0) continue;
            const auto next_pos = static_cast<std::size_t>(cur.next);
            const Symbol right = symbols[next_pos];
            // Skip entries made stale by earlier merges (upstream compares the result id only).
            const std::uint64_t* m = merges_.find(pair_key(static_cast<std::uint32_t>(cur.id), static_cast<std::uint32_t>(right.id)));
            if (!m || static_cast<std::int32_t>(*m & 0xFFFFFFFFu) != top.new_id) continue;
            cur.id = top.new_id;
            cur.len += right.len;
            cur.next = right.next;
            symbols[next_pos].len = 0;
            if (right.next >= 0) symbols[static_cast<std::size_t>(right.next)].prev = static_cast<std::int32_t>(top.pos);
            if (cur.prev >= 0) push(static_cast<std::size_t>(cur.prev));
            push(top.pos);
        }
    }

    void swap(BpeModel& o) noexcept {
        std::swap(vocab_, o.vocab_);
        std::swap(id_to_token_, o.id_to_token_);
        std::swap(merges_, o.merges_);
        std::swap(joinable_, o.joinable_);
        std::swap(single_char_, o.single_char_);
        std::swap(byte_tokens_, o.byte_tokens_);
        std::swap(byte_chars_, o.byte_chars_);
        std::swap(byte_level_ready_, o.byte_level_ready_);
        std::swap(unk_token_, o.unk_token_);
        std::swap(unk_id_, o.unk_id_);
        std::swap(prefix_, o.prefix_);
        std::swap(suffix_, o.suffix_);
        std::swap(fuse_unk_, o.fuse_unk_);
        std::swap(byte_fallback_, o.byte_fallback_);
        std::swap(ignore_merges_, o.ignore_merges_);
        std::swap(source_, o.source_);
        std::lock(cache_mutex_, o.cache_mutex_);
        std::lock_guard<std::mutex> a(cache_mutex_, std::adopt_lock), b(o.cache_mutex_, std::adopt_lock);
        std::swap(cache_, o.cache_);
        std::swap(byte_cache_, o.byte_cache_);
    }

    Vocab vocab_;
    std::unordered_map<std::int32_t, std::string> id_to_token_;
    U64Map merges_;    // (left id, right id) -> (rank, merged id)
    U64Map joinable_;  // (last code point of a merge's left part, first of its right part)
    std::vector<std::uint64_t> single_char_;  // bitmap over the BMP: the character alone is a token
    std::array<std::int32_t, 256> byte_tokens_{};
    std::array<std::pair<std::int32_t, std::uint32_t>, 256> byte_chars_{};
    bool byte_level_ready_ = false;
    std::optional<std::string> unk_token_;
    std::optional<std::int32_t> unk_id_;
    std::string prefix_, suffix_;
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    std::string source_;
    mutable std::mutex cache_mutex_;
    mutable Cache cache_, byte_cache_;
};

}  // namespace flamingo::text

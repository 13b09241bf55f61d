#pragma once
// A prefix cache shared by the sessions (contexts) of one model. Requests that
// begin alike -- the same few-shot examples with the same images, the same
// system message -- take the keys/values of the positions they share from it
// instead of computing them again, and media seen before take their visual
// tokens from it instead of running the vision encoder again.
//
// Keys. A medium is known by a digest of its content: its preprocessed pixels,
// or its visual tokens when those are given already encoded. A prefix entry
// holds the token ids of a prompt that was read, the digests of the media it
// was read with, and the decoder's self-attention keys/values of every
// position, in blocks of up to 16 positions: an entry stored after another
// that serves its beginning shares that one's blocks of the common positions
// (reference-counted) and copies only the rest. The gated cross-attention
// keeps nothing per position: its keys/values are projected from the visual
// tokens, once per prompt.
//
// Validity. Position i's keys/values depend on the tokens at or before it and,
// through cross-attention, on the media its text time selects: with
// only_attend_immediate_media, the last <image> at or before it (none before
// the first); otherwise every <image> at or before it, and text before the
// first <image> attends to every medium of the prompt. So an entry's first n
// positions serve a prompt when its first n tokens are the same and so are the
// media those positions attend to. The prompt's last token is always read
// again, for its logits.
//
// Bounds. Prefixes and media share one budget of bytes; the least recently
// used go first. A block counts once, while some entry holds it. An entry a
// longer one makes redundant (a prefix of it, on the same media) is dropped
// when the longer one comes in.
//
// Concurrency. One mutex guards the index and the blocks' counts of entries.
// Entries and the keys/values of blocks are immutable and handed out as
// shared_ptrs: keys/values are copied in and out with the lock released, and
// an entry evicted meanwhile lives until its reader lets go of it.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../model/flamingo.hpp"
#include "../nn/attention.hpp"
#include "session.hpp"

namespace flamingo::generate {

// 128 bits of a medium's content.
struct Digest {
    std::uint64_t a = 0, b = 0;
    bool operator==(const Digest&) const = default;
};

class PrefixCache {
public:
    using Visual = Tensor<float, dextents<2>>;

    // budget: bytes the entries may hold together (keys/values, visual tokens, token ids).
    explicit PrefixCache(std::size_t budget_bytes) : budget_(budget_bytes) {
        // A random key per cache: digests an outsider cannot predict, so a
        // request cannot be crafted to collide with another's media.
        std::random_device rd;
        key_a_ = (std::uint64_t(rd()) << 32) ^ rd(), key_b_ = (std::uint64_t(rd()) << 32) ^ rd();
    }
    PrefixCache(const PrefixCache&) = delete;
    PrefixCache& operator=(const PrefixCache&) = delete;

    struct Stats {
        std::uint64_t hits = 0, misses = 0;  // prompt lookups that found a usable prefix, or none
        std::uint64_t tokens_reused = 0;     // prompt positions taken from the cache
        std::uint64_t media_hits = 0, media_misses = 0;
        std::uint64_t evictions = 0;
        std::size_t bytes = 0, budget = 0, prefixes = 0, media = 0;
    };
    Stats stats() const {
        std::lock_guard lock(mu_);
        Stats s = stats_;
        s.bytes = bytes_, s.budget = budget_, s.prefixes = lru_.size() - media_index_.size(), s.media = media_index_.size();
        return s;
    }

    // The cache holds one model's keys/values: the first model it serves is its
    // model, and another is refused.
    void bind(const model::Flamingo& m) {
        std::lock_guard lock(mu_);
        check(model_ == nullptr || model_ == &m, "this prefix cache already serves another model");
        model_ = &m;
    }

    // Digest of a medium's bytes. `kind` tells apart what the bytes are
    // (pixels of some frames, visual tokens): equal bytes of different kinds differ.
    Digest digest(const void* data, std::size_t bytes, std::uint64_t kind) const {
        std::uint64_t a = key_a_ ^ mix(kind + 1), b = key_b_ + mix(bytes ^ kind);
        const unsigned char* p = static_cast<const unsigned char*>(data);
        std::size_t i = 0;
        for (; i + 8 <= bytes; i += 8) {
            std::uint64_t w;
            std::memcpy(&w, p + i, 8);
            a = rotl(a ^ (w * 0x87c37b91114253d5ULL), 31) * 0x9e3779b97f4a7c15ULL;
            b = rotl(b + (w * 0x4cf5ad432745937fULL), 29) * 0xc2b2ae3d27d4eb4fULL + a;
        }
        std::uint64_t tail = 0;
        if (bytes > i) std::memcpy(&tail, p + i, bytes - i);
        a = mix(a ^ tail ^ bytes), b = mix(b + tail + a);
        return {a, mix(b ^ a)};
    }

    // Visual tokens [num_latents, width] of the medium with this digest, or null.
    std::shared_ptr<const Visual> find_media(const Digest& d) {
        std::lock_guard lock(mu_);
        const auto it = media_index_.find(d);
        if (it == media_index_.end()) {
            ++stats_.media_misses;
            return nullptr;
        }
        ++stats_.media_hits;
        lru_.splice(lru_.begin(), lru_, it->second);
        return it->second->media;
    }
    void put_media(const Digest& d, Visual visual) {
        auto v = std::make_shared<const Visual>(std::move(visual));
        const std::size_t bytes = v->size() * sizeof(float) + kOverhead;
        std::lock_guard lock(mu_);
        if (bytes > budget_) return;
        if (const auto it = media_index_.find(d); it != media_index_.end()) {
            lru_.splice(lru_.begin(), lru_, it->second);
            return;
        }
        lru_.push_front(Item{nullptr, v, d, bytes});
        media_index_[d] = lru_.begin();
        bytes_ += bytes;
        evict();
    }

    // Copies into sequence 0 of `s` the longest cached prefix of `prompt`
    // (at most all but its last token) whose media are `media`, after preparing
    // `s` as generate()/score() will (`sequences` caches of `capacity`
    // positions); returns its length, to pass on as their `cached`. Only a
    // prefix longer than `at_least` is taken (0 is returned otherwise, and `s`
    // is left alone): one that sequence 0 already holds (a conversation's).
    std::size_t restore(Session& s, std::span<const std::int32_t> prompt, std::span<const Digest> media,
                        std::size_t sequences, std::size_t capacity, std::size_t at_least = 0) {
        if (prompt.size() < 2) return 0;
        std::shared_ptr<const Prefix> best;
        std::size_t n = 0;
        {
            std::lock_guard lock(mu_);
            check_model(s.model());
            auto at = lru_.end();
            for (auto it = lru_.begin(); it != lru_.end(); ++it) {
                if (!it->prefix) continue;
                const std::size_t k = usable(it->prefix->tokens, it->prefix->media, prompt, media, prompt.size() - 1);
                if (k > n) n = k, at = it;
            }
            if (n <= at_least) {
                ++stats_.misses;
                return 0;
            }
            ++stats_.hits, stats_.tokens_reused += n;
            best = at->prefix;
            lru_.splice(lru_.begin(), lru_, at);
        }
        s.prepare(sequences, capacity, 1);
        nn::KVCache& kv = s.cache(0);
        std::size_t pos = 0;
        for (const auto& b : best->blocks) {
            if (pos == n) break;
            const std::size_t count = std::min(b->positions, n - pos);
            b->copy_to(kv, pos, count);
            pos += count;
        }
        kv.set_length(n);
        s.mutable_stats().reused_tokens += n;
        return n;
    }

    // Keeps the keys/values of `prompt` (the first prompt.size() positions of
    // sequence 0 of `s`, read with media `media`), unless an entry holds them
    // already. The blocks of the longest entry that serves its beginning are
    // shared, not copied: only the positions after them are.
    void store(const Session& s, std::span<const std::int32_t> prompt, std::span<const Digest> media) {
        const std::size_t n = prompt.size();
        if (n == 0 || s.num_caches() == 0 || s.cache(0).length() < n) return;
        const model::Flamingo& m = s.model();
        std::shared_ptr<const Prefix> base;
        std::size_t k = 0;  // positions of `base` that serve `prompt`
        {
            std::lock_guard lock(mu_);
            check_model(m);
            for (auto it = lru_.begin(); it != lru_.end(); ++it) {
                if (!it->prefix) continue;
                const std::size_t u = usable(it->prefix->tokens, it->prefix->media, prompt, media, n);
                if (u == n) {  // held already
                    lru_.splice(lru_.begin(), lru_, it);
                    return;
                }
                if (u > k) k = u, base = it->prefix;
            }
        }
        // the copy is made outside the lock; another thread may store the same meanwhile
        auto p = std::make_shared<Prefix>();
        p->tokens.assign(prompt.begin(), prompt.end());
        p->media.assign(media.begin(), media.end());
        std::size_t pos = 0, bytes = own_bytes(*p);
        if (base)
            for (const auto& b : base->blocks) {
                if (pos + b->positions > k) break;
                p->blocks.push_back(b), pos += b->positions, bytes += b->bytes;
            }
        for (std::size_t q = pos; q < n; q += kBlockPositions) bytes += block_bytes(m, std::min(kBlockPositions, n - q));
        if (bytes > budget_) return;
        for (; pos < n; pos += kBlockPositions)
            p->blocks.push_back(Block::copy_of(s.cache(0), m.num_layers(), pos, std::min(kBlockPositions, n - pos)));

        std::lock_guard lock(mu_);
        for (const Item& it : lru_)
            if (it.prefix && usable(it.prefix->tokens, it.prefix->media, prompt, media, n) == n) return;
        // entries the new one holds all of are redundant
        for (auto it = lru_.begin(); it != lru_.end();) {
            if (it->prefix && usable(prompt, media, it->prefix->tokens, it->prefix->media, n) == it->prefix->tokens.size())
                it = drop(it);
            else
                ++it;
        }
        // shared blocks are counted once, while some entry holds them
        for (const auto& b : p->blocks)
            if (b->users++ == 0) bytes_ += b->bytes;
        bytes_ += own_bytes(*p);
        lru_.push_front(Item{std::move(p), nullptr, {}, 0});
        evict();
    }

    // How many leading positions of prompt `a` (read with media `am`) serve
    // prompt `b` (with media `bm`): at most `limit`. Needs the cache bound.
    std::size_t usable(std::span<const std::int32_t> a, std::span<const Digest> am, std::span<const std::int32_t> b,
                       std::span<const Digest> bm, std::size_t limit) const {
        const std::int32_t image = model_->config().media_token_id;
        const bool immediate = model_->config().cross_attn.only_attend_immediate_media;
        const std::size_t n = std::min({a.size(), b.size(), limit});
        std::size_t same = 0;  // leading media alike
        while (same < am.size() && same < bm.size() && am[same] == bm[same]) ++same;
        const bool all_same = same == am.size() && same == bm.size();
        std::size_t i = 0, images = 0;
        for (; i < n && a[i] == b[i]; ++i) {
            if (a[i] == image) {
                if (images == same) break;  // this <image> is a medium that differs
                ++images;
            } else if (images == 0 && !immediate && !all_same) {
                break;  // text before the first image attends to every medium
            }
        }
        return i;
    }

private:
    // Keys/values of consecutive positions of a prompt, in every layer. Entries
    // whose prompts begin alike share the blocks of the positions they share.
    struct Block {
        std::size_t positions = 0, width = 0, layers = 0, bytes = 0;
        std::unique_ptr<float[]> kv;  // keys [layers][positions][width], then values alike
        std::vector<std::uint8_t> marks;
        std::size_t users = 0;  // entries in the index holding it (under the lock)

        const float* k(std::size_t layer) const { return kv.get() + layer * positions * width; }
        const float* v(std::size_t layer) const { return k(layers + layer); }

        // Positions [pos0, pos0 + count) of `src`.
        static std::shared_ptr<Block> copy_of(const nn::KVCache& src, std::size_t layers, std::size_t pos0,
                                              std::size_t count) {
            auto b = std::make_shared<Block>();
            b->positions = count, b->width = src.width(), b->layers = layers;
            b->bytes = bytes_of(layers, count, b->width);
            // not zeroed first: every value is written here
            b->kv = std::make_unique_for_overwrite<float[]>(2 * layers * count * b->width);
            const std::size_t row = count * b->width * sizeof(float);
            for (std::size_t l = 0; l < layers; ++l) {
                std::memcpy(b->kv.get() + l * count * b->width, src.k(l, pos0), row);
                std::memcpy(b->kv.get() + (layers + l) * count * b->width, src.v(l, pos0), row);
            }
            for (std::size_t i = 0; i < count; ++i) b->marks.push_back(src.mark(pos0 + i));
            return b;
        }
        // Its first `count` positions into positions [pos0, pos0 + count) of `dst`.
        void copy_to(nn::KVCache& dst, std::size_t pos0, std::size_t count) const {
            check(dst.width() == width && pos0 + count <= dst.capacity(), ErrorKind::Shape,
                  "prefix cache: cannot copy ", count, " positions into a KV cache of another shape");
            for (std::size_t l = 0; l < layers; ++l) {
                std::memcpy(dst.k(l, pos0), k(l), count * width * sizeof(float));
                std::memcpy(dst.v(l, pos0), v(l), count * width * sizeof(float));
            }
            for (std::size_t i = 0; i < count; ++i) dst.set_mark(pos0 + i, marks[i]);
        }
        static std::size_t bytes_of(std::size_t layers, std::size_t positions, std::size_t width) {
            return positions * (2 * layers * width * sizeof(float) + 1) + kOverhead;
        }
    };
    struct Prefix {
        std::vector<std::int32_t> tokens;
        std::vector<Digest> media;
        std::vector<std::shared_ptr<Block>> blocks;  // tokens.size() positions, in order
    };
    struct Item {
        std::shared_ptr<const Prefix> prefix;  // a prefix, or
        std::shared_ptr<const Visual> media;   // a medium's visual tokens
        Digest key;                            // (the medium's)
        std::size_t bytes = 0;                 // a medium's; a prefix's are its own_bytes and its blocks'
    };
    struct DigestHash {
        std::size_t operator()(const Digest& d) const { return std::size_t(d.a ^ (d.b * 0x9e3779b97f4a7c15ULL)); }
    };
    static constexpr std::size_t kOverhead = 256;  // an entry's bookkeeping, roughly
    static constexpr std::size_t kBlockPositions = 16;

    static std::size_t own_bytes(const Prefix& p) {
        return p.tokens.size() * sizeof(std::int32_t) + p.media.size() * sizeof(Digest) + kOverhead;
    }
    static std::size_t block_bytes(const model::Flamingo& m, std::size_t positions) {
        return Block::bytes_of(m.num_layers(), positions, m.kv_width());
    }

    static std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
    static std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
        x ^= x >> 30, x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 27, x *= 0x94d049bb133111ebULL;
        return x ^ (x >> 31);
    }

    // Under the lock.
    void check_model(const model::Flamingo& m) const {
        check(model_ != nullptr, "the prefix cache was not bound to a model (PrefixCache::bind)");
        check(model_ == &m, "this prefix cache serves another model");
    }

    // Under the lock: least recently used out until the entries fit.
    void evict() {
        while (bytes_ > budget_ && !lru_.empty()) {
            drop(std::prev(lru_.end()));
            ++stats_.evictions;
        }
    }
    // Under the lock: an entry out of the index; the blocks no other entry
    // holds stop counting (they live on while a reader holds them).
    std::list<Item>::iterator drop(std::list<Item>::iterator it) {
        if (it->media) {
            media_index_.erase(it->key);
            bytes_ -= it->bytes;
        } else {
            for (const auto& b : it->prefix->blocks)
                if (--b->users == 0) bytes_ -= b->bytes;
            bytes_ -= own_bytes(*it->prefix);
        }
        return lru_.erase(it);
    }

    mutable std::mutex mu_;
    const model::Flamingo* model_ = nullptr;
    std::size_t budget_ = 0, bytes_ = 0;
    std::uint64_t key_a_ = 0, key_b_ = 0;
    std::list<Item> lru_;  // most recently used first
    std::unordered_map<Digest, std::list<Item>::iterator, DigestHash> media_index_;
    Stats stats_;
};

}  // namespace flamingo::generate

#pragma once
// Conversations: messages become an interleaved prompt through the model's
// chat template (config.json "chat_template", or the default of
// model::ChatTemplate), and each turn reads only what is new.
//
//   flamingo::Conversation chat(model);
//   chat.add_user("What is in the picture?", {"a.png"});
//   std::cout << chat.reply().text;                  // reads the whole prompt
//   chat.add_user("And its colour?");
//   std::cout << chat.reply().text;                  // reads only the new message
//
// The conversation keeps its context's KV cache and encoded images between
// turns. Each turn renders the whole conversation, tokenizes it, and reads
// from the first token where it differs from what the cache holds (the
// previous prompt and the reply's tokens); images are encoded once. A turn
// therefore gives exactly what a fresh context gives for the whole prompt and
// all images, while reading only the new tokens whenever the earlier text
// tokenizes the same (with the default template it does: every message ends
// with the added token <|endofchunk|>, which tokenization never merges across).
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flamingo.hpp"

namespace flamingo {

struct ChatMessage {
    std::string role;     // "system", "user" or "assistant"
    std::string content;  // the text, with <image> where each of its images goes
    std::size_t images = 0;
};

class Conversation {
public:
    explicit Conversation(std::shared_ptr<const Model> model, const ContextOptions& opt = {})
        : ctx_(std::move(model), opt), template_(ctx_.model().config().chat_template) {
        const Model& m = ctx_.model();
        for (const std::string& s : template_.stop) {
            const auto ids = m.tokenizer().encode(s, false);
            check(ids.size() == 1, ErrorKind::Config, m.directory().string(), "/config.json: chat_template.stop: \"", s,
                  "\" is ", ids.size(), " tokens; a stop string must be one token");
            stop_tokens_.push_back(ids[0]);
        }
    }

    Context& context() { return ctx_; }
    const Model& model() const { return ctx_.model(); }
    const model::ChatTemplate& chat_template() const { return template_; }
    const std::vector<ChatMessage>& messages() const { return messages_; }
    const generate::Session::Stats& stats() const { return ctx_.stats(); }
    // Token ids the context's cache holds for the conversation so far.
    const std::vector<std::int32_t>& cached_tokens() const { return cached_; }

    void add_system(std::string_view text) { messages_.push_back({"system", std::string(text), 0}); }
    // A user message; its images (files, see Model::load_media) go before its
    // text, one <image> each. A bad image throws and adds nothing.
    void add_user(std::string_view text, const std::vector<std::string>& images = {}) {
        add_user(text, ctx_.model().load_media(images, 1));
    }
    void add_user(std::string_view text, const Pixels& images) {
        check(images.extent(0) == 0 || images.extent(1) == 1, "conversation images are single frames, got ",
              images.extent(1), " frames");
        std::string content;
        for (std::size_t i = 0; i < images.extent(0); ++i) content += "<image>";
        content += text;
        check(!content.empty(), "the message is empty");
        messages_.push_back({"user", std::move(content), images.extent(0)});
        if (images.extent(0)) pixels_.push_back({next_serial_, images}), next_serial_ += images.extent(0);
    }
    // An assistant message given rather than generated (e.g. few-shot examples).
    void add_assistant(std::string_view text) { messages_.push_back({"assistant", std::string(text), 0}); }
    // Removes the last message (e.g. one whose reply failed).
    void pop() {
        check(!messages_.empty(), "the conversation has no messages");
        if (messages_.back().images) pixels_.pop_back();
        messages_.pop_back();
    }
    // Starts over: no messages, no images, an empty cache.
    void reset() {
        messages_.clear(), pixels_.clear(), cached_.clear(), encoded_.clear();
        ctx_.session().keep_media(0);
    }

    // The whole conversation as a prompt, ending with the generation prompt.
    std::string prompt() const {
        std::string p;
        for (const ChatMessage& m : messages_) p += render(m);
        return p + template_.generation_prompt;
    }
    std::size_t num_images() const {
        std::size_t n = 0;
        for (const ChatMessage& m : messages_) n += m.images;
        return n;
    }

    // The assistant's next message, generated from the conversation (stopping
    // at eoc_token_id or a template stop token) and added to it; leading
    // whitespace of the reply is not kept in the message.
    Generation reply(generate::GenerateOptions opt = {}) {
        const Model& m = ctx_.model();
        const auto ids = m.tokenize(prompt());
        const std::int32_t media_id = m.config().media_token_id;
        generate::Session& s = ctx_.session();

        // The images the session holds that are still the conversation's, in order.
        std::vector<std::uint64_t> serials;
        for (const auto& im : pixels_)
            for (std::size_t i = 0; i < im.px.extent(0); ++i) serials.push_back(im.serial + i);
        std::size_t valid = 0;
        while (valid < serials.size() && valid < encoded_.size() && serials[valid] == encoded_[valid]) ++valid;
        // The longest prefix the cache holds whose images are those.
        std::size_t keep = 0, keep_images = 0;
        while (keep < ids.size() && keep < cached_.size() && ids[keep] == cached_[keep] &&
               !(ids[keep] == media_id && keep_images == valid))
            keep_images += ids[keep++] == media_id;
        if (keep == ids.size()) --keep;  // nothing new: read the last token again for its logits
        // Without only_attend_immediate_media, text before the first image
        // attends to every image of the prompt, later ones too: unless the
        // images are those the cache was read with, the prompt is read again.
        const bool same_images = valid == cached_media_ && serials.size() == cached_media_;
        if (!m.config().cross_attn.only_attend_immediate_media && !same_images && keep > 0 && ids[0] != media_id)
            keep = 0;

        // The prefix cache shared with other contexts, if any: images are known
        // there by their digests. Not with media-time embeddings: a
        // conversation encodes each message's images alone, at other places.
        PrefixCache* shared = m.config().perceiver.max_num_media ? nullptr : ctx_.prefix_cache().get();
        std::vector<generate::Digest> keys;
        for (const auto& im : pixels_)
            if (shared) {
                const auto k = ctx_.media_keys(im.px.data(), im.px.extent(0), 1);
                keys.insert(keys.end(), k.begin(), k.end());
            }

        Executor::Scope use(ctx_.executor());
        cached_.clear();  // until the cache is consistent again
        s.keep_media(valid);  // still the conversation's, whatever the cache keeps
        encoded_.resize(valid);
        // Encode the images past those kept, one message's at a time.
        std::size_t first = 0;
        for (const auto& im : pixels_) {
            const std::size_t n = im.px.extent(0);
            if (first + n > encoded_.size()) {
                const std::size_t skip = encoded_.size() - first, per = im.px.size() / n;
                if (shared)
                    s.add_visual(ctx_.encode_media(im.px.data() + skip * per, n - skip, 1,
                                                   std::span(keys).subspan(first + skip, n - skip)),
                                 n - skip);
                else
                    s.add_media(im.px.data() + skip * per, n - skip, 1);
                for (std::size_t i = skip; i < n; ++i) encoded_.push_back(im.serial + i);
            }
            first += n;
        }

        opt.stop_tokens.insert(opt.stop_tokens.end(), stop_tokens_.begin(), stop_tokens_.end());
        // Another context may have read more of this prompt (an earlier request of the same conversation).
        if (shared && opt.num_beams >= 1 && ids.size() + opt.max_new_tokens <= m.max_positions())
            if (const std::size_t n = shared->restore(s, ids, keys, opt.num_beams, ids.size() + opt.max_new_tokens, keep))
                keep = n;
        const auto r = ctx_.generate_tokens(ids, opt, keep);
        if (shared) shared->store(s, ids, keys);
        cached_ = ids, cached_media_ = serials.size();
        // Greedy search and sampling leave every generated token but the last
        // in the cache; beam search leaves the prompt.
        if (opt.num_beams == 1 && !r.tokens.empty()) cached_.insert(cached_.end(), r.tokens.begin(), r.tokens.end() - 1);

        Generation g;
        g.tokens = r.tokens, g.stopped = r.stopped, g.score = r.score;
        std::span<const std::int32_t> shown(r.tokens);
        if (r.stopped) shown = shown.first(shown.size() - 1);
        g.text = m.decode(shown);
        const std::size_t start = g.text.find_first_not_of(" \t\n");
        add_assistant(start == std::string::npos ? std::string() : g.text.substr(start));
        return g;
    }

private:
    std::string render(const ChatMessage& m) const {
        const std::string& role = m.role == "system" ? template_.system
                                  : m.role == "user" ? template_.user
                                                     : template_.assistant;
        std::string out = role;
        const std::string key = "{content}";
        if (const auto at = out.find(key); at != std::string::npos) out.replace(at, key.size(), m.content);
        return out;
    }

    Context ctx_;
    model::ChatTemplate template_;
    std::vector<std::int32_t> stop_tokens_;
    std::vector<ChatMessage> messages_;
    struct Images {
        std::uint64_t serial;  // of the first; each image added has its own
        Pixels px;
    };
    std::vector<Images> pixels_;  // the images of each user message that has some, in order
    std::uint64_t next_serial_ = 0;
    std::vector<std::uint64_t> encoded_;  // serials of the images the session holds, in order
    std::vector<std::int32_t> cached_;
    std::size_t cached_media_ = 0;  // the images (the first encoded_) the cached tokens were read with
};

}  // namespace flamingo

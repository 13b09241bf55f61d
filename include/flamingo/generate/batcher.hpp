#pragma once
// Continuous batching: the decoding steps of several requests, each on its own
// Session, run as one forward pass. Decoding one token is memory-bound (every
// weight is read for one row), so n sequences stepped together cost far less
// than n steps alone: the weights are read once for all of them.
//
//   Batcher batcher(model, 8, executor);            // one decoding loop, its own thread
//   // on each request's thread, with its own session:
//   auto r = batcher.generate(session, prompt, options);
//
// A request reads its prompt on its own thread, with its own executor, while
// the loop steps the others: a long prompt never holds up their tokens (it
// only competes with them for cores), and a request whose first token ends it
// never joins. It then joins the loop, which, between steps, admits waiting
// requests (up to max_batch sequences) and lets finished ones go. Each step
// is one row per sequence: segment i is sequence i's row, on its session's KV
// cache, reading its session's media keys/values (model::Batch). Choosing a
// token (no-repeat n-grams, argmax or the request's own sampler, on_token)
// runs on the loop's thread in the order generate() uses, so a request gets
// the tokens it gets alone; only the float rounding of a product's rows may
// differ with the batch's row count (as for beams), which a near-tie could
// turn into another token. An on_token that throws (a client gone) ends that
// request alone, at its next token; generate() rethrows it.
//
// Beam search stays on generate()'s own path (its beams are already one batch).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "../core/executor.hpp"
#include "generate.hpp"

namespace flamingo::generate {

class Batcher {
public:
    // max_batch: sequences per step; the loop's parallel kernels run on `executor`.
    Batcher(const model::Flamingo& m, std::size_t max_batch, std::shared_ptr<Executor> executor)
        : model_(m), max_(max_batch), ex_(std::move(executor)) {
        check(max_batch >= 1, "a batch holds at least one sequence");
        check(ex_ != nullptr, "a batcher needs an executor");
        const std::size_t V = m.vocab_size();
        tokens_.resize(max_), text_time_.resize(max_), rows_.resize(max_), segments_.resize(max_);
        media_.resize(max_), logits_.resize(max_ * V);
        ws_.reserve(m.forward_workspace(max_, max_));
        sizes_.assign(max_ + 1, 0);
        thread_ = std::thread([this] { loop(); });
    }
    // Every generate() must have returned.
    ~Batcher() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    Batcher(const Batcher&) = delete;
    Batcher& operator=(const Batcher&) = delete;

    const model::Flamingo& model() const { return model_; }
    std::size_t max_batch() const { return max_; }

    // generate::generate()'s answer; greedy search and sampling decode in the
    // shared loop, beam search alone. The caller's executor reads the prompt.
    GenerateResult generate(Session& s, std::span<const std::int32_t> prompt, const GenerateOptions& o,
                            std::size_t cached = 0) {
        check(&s.model() == &model_, "the session runs on another model than the batcher");
        if (o.num_beams != 1) return generate::generate(s, prompt, o, cached);
        detail::check_options(o);
        const std::size_t P = prompt.size();
        check(P + o.max_new_tokens <= model_.max_positions(), ErrorKind::Limit, "the prompt (", P, " tokens) plus ",
              o.max_new_tokens, " new tokens exceeds the model's context of ", model_.max_positions(), " positions");
        Member m(s, o, prompt);
        m.scores = detail::read_prompt(s, prompt, 1, o.max_new_tokens, cached);
        if (choose(m)) return std::move(m.r);
        {
            std::lock_guard lock(mu_);
            waiting_.push_back(&m);
        }
        cv_.notify_all();
        std::unique_lock lock(mu_);
        done_cv_.wait(lock, [&] { return m.done; });
        if (m.error) std::rethrow_exception(m.error);
        return std::move(m.r);
    }

    struct Stats {
        std::size_t active = 0, waiting = 0;  // sequences in the loop, and waiting to join it
        std::uint64_t steps = 0, rows = 0;    // decoding steps run, and sequences stepped in them
        std::vector<std::uint64_t> sizes;     // sizes[n]: steps of n sequences
    };
    Stats stats() const {
        std::lock_guard lock(mu_);
        return {active_count_, waiting_.size(), steps_, rows_total_, sizes_};
    }

private:
    // One request in the loop; lives on its caller's stack until done.
    struct Member {
        Member(Session& s, const GenerateOptions& o, std::span<const std::int32_t> prompt)
            : s(s), o(o), is_stop{o.eos.value_or(s.model().config().eoc_token_id), o.stop_tokens},
              sampling(o.temperature && *o.temperature > 0.0f),
              sample({sampling ? *o.temperature : 1.0f, o.top_k, o.top_p}, o.seed), seq(prompt.begin(), prompt.end()) {
            sample.reserve(s.vocab_size());
            seq.reserve(prompt.size() + o.max_new_tokens);
            r.tokens.reserve(o.max_new_tokens);
        }
        Session& s;
        const GenerateOptions& o;
        detail::StopSet is_stop;
        bool sampling;
        Sampler sample;
        std::vector<std::int32_t> seq;  // prompt and tokens so far (for no_repeat_ngram_size)
        std::vector<float> scores;      // the next token's logits
        GenerateResult r;
        bool done = false;  // guarded by mu_
        std::exception_ptr error;
    };

    // The member's next token from its scores, as generate()'s greedy/sampling
    // loop picks it; true when that token ends the request.
    static bool choose(Member& m) {
        ban_repeated_ngrams(m.seq, m.o.no_repeat_ngram_size, m.scores);
        const std::int32_t tok = m.sampling ? m.sample(m.scores) : std::int32_t(argmax(m.scores));
        m.seq.push_back(tok);
        m.r.tokens.push_back(tok);
        if (m.o.on_token) m.o.on_token(tok);
        if (m.is_stop(tok)) return m.r.stopped = true;
        return m.r.tokens.size() == m.o.max_new_tokens;
    }

    void loop() {
        Executor::Scope use(*ex_);
        std::vector<Member*> active, finished;
        active.reserve(max_), finished.reserve(max_);
        for (;;) {
            {
                std::unique_lock lock(mu_);
                // between steps: the finished leave, the waiting join
                for (Member* m : finished) m->done = true;
                if (!finished.empty()) done_cv_.notify_all();
                finished.clear();
                active_count_ = active.size();
                cv_.wait(lock, [&] { return stopping_ || !active.empty() || !waiting_.empty(); });
                while (!waiting_.empty() && active.size() < max_) active.push_back(waiting_.front()), waiting_.pop_front();
                active_count_ = active.size();
                if (active.empty()) return;  // stopping, nobody left
                ++steps_, rows_total_ += active.size(), ++sizes_[active.size()];
            }
            step(active);
            std::size_t kept = 0;
            for (Member* m : active) {
                if (m->error || ended(*m)) finished.push_back(m);
                else active[kept++] = m;  // the others keep their order
            }
            active.resize(kept);
        }
    }

    static bool ended(const Member& m) { return m.r.stopped || m.r.tokens.size() == m.o.max_new_tokens; }

    // One decoding step of every active member: its last token, one row each,
    // then each member's next token from its row of logits.
    void step(std::span<Member* const> active) {
        const std::size_t n = active.size(), V = model_.vocab_size();
        for (std::size_t i = 0; i < n; ++i) {
            Session& s = active[i]->s;
            nn::KVCache& c = s.cache(0);
            tokens_[i] = active[i]->r.tokens.back();
            text_time_[i] = std::uint32_t(s.num_media());  // generated tokens see the whole prompt's media
            rows_[i] = i;
            segments_[i] = {i, 1, c.length(), &c};
            media_[i] = &s.media_kv();
        }
        const auto t0 = std::chrono::steady_clock::now();
        try {
            model_.forward({{tokens_.data(), n}, {text_time_.data(), n}, {segments_.data(), n}, {media_.data(), n}},
                           {rows_.data(), n}, nn::act(logits_.data(), n, V), ws_);
        } catch (...) {  // fails every request of the step
            for (Member* m : active) m->error = std::current_exception();
            return;
        }
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        for (std::size_t i = 0; i < n; ++i) {
            Member& m = *active[i];
            m.s.cache(0).set_length(segments_[i].pos0 + 1);
            auto& st = m.s.mutable_stats();
            st.step_seconds += dt, ++st.steps;
            std::copy_n(logits_.data() + i * V, V, m.scores.data());
            try {
                choose(m);
            } catch (...) {  // this request alone ends
                m.error = std::current_exception();
            }
        }
    }

    const model::Flamingo& model_;
    const std::size_t max_;
    std::shared_ptr<Executor> ex_;
    // the loop's buffers, sized once
    nn::Workspace ws_;
    std::vector<std::int32_t> tokens_;
    std::vector<std::uint32_t> text_time_;
    std::vector<std::size_t> rows_;
    std::vector<nn::Segment> segments_;
    std::vector<const model::MediaKV*> media_;
    std::vector<float> logits_;

    mutable std::mutex mu_;
    std::condition_variable cv_, done_cv_;
    std::deque<Member*> waiting_;
    bool stopping_ = false;
    std::size_t active_count_ = 0;
    std::uint64_t steps_ = 0, rows_total_ = 0;
    std::vector<std::uint64_t> sizes_;
    std::thread thread_;  // last: starts once the rest is built
};

}  // namespace flamingo::generate

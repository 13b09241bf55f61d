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
// requests in their order while their rows fit in max_batch, and lets
// finished ones go. A greedy or sampling request is one row, a beam search
// one row per beam: each step runs one row per sequence, segment i being
// sequence i's row on its KV cache (a beam's: the cache slot BeamSearch gives
// it), reading its session's media keys/values (model::Batch). A beam search
// with more beams than max_batch still runs: it joins once the loop is empty
// and has it to itself (the others wait behind it), so a serving user's
// request runs whatever its num_beams, as it does without a batcher.
//
// Choosing tokens (no-repeat n-grams, argmax or the request's own sampler,
// on_token; a beam search's BeamSearch::advance, the same code generate()
// runs) happens on the loop's thread in the order generate() uses, so a
// request gets the tokens it gets alone; only the float rounding of a
// product's rows may differ with the batch's row count, which a near-tie
// could turn into another token (and a beam score's last bits). An on_token
// or on_step that throws (a client gone) ends that request alone, at its next
// token or before its next step; generate() rethrows it.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "../core/executor.hpp"
#include "generate.hpp"

namespace flamingo::generate {

class Batcher {
public:
    // max_batch: rows per step (a beam search takes one per beam); the loop's
    // parallel kernels run on `executor`.
    Batcher(const model::Flamingo& m, std::size_t max_batch, std::shared_ptr<Executor> executor)
        : model_(m), max_(max_batch), ex_(std::move(executor)) {
        check(max_batch >= 1, "a batch holds at least one sequence");
        check(ex_ != nullptr, "a batcher needs an executor");
        fit(max_);
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

    // generate::generate()'s answer, decoded in the shared loop: greedy
    // search, sampling and beam search alike. The caller's executor reads the
    // prompt (and chooses a beam search's first tokens).
    GenerateResult generate(Session& s, std::span<const std::int32_t> prompt, const GenerateOptions& o,
                            std::size_t cached = 0) {
        check(&s.model() == &model_, "the session runs on another model than the batcher");
        detail::check_options(o);
        const std::size_t P = prompt.size();
        check(P + o.max_new_tokens <= model_.max_positions(), ErrorKind::Limit, "the prompt (", P, " tokens) plus ",
              o.max_new_tokens, " new tokens exceeds the model's context of ", model_.max_positions(), " positions");
        Member m(s, o, prompt);
        auto first = detail::read_prompt(s, prompt, o.num_beams, o.max_new_tokens, cached);
        if (o.num_beams == 1) {
            m.scores = std::move(first);
            if (choose(m)) return std::move(m.r);
        } else {
            m.beams.emplace(s, prompt, o, first);
            if (m.beams->finished()) return m.beams->result();
        }
        {
            std::lock_guard lock(mu_);
            waiting_.push_back(&m);
        }
        cv_.notify_all();
        {
            std::unique_lock lock(mu_);
            done_cv_.wait(lock, [&] { return m.done; });
        }
        if (m.error) std::rethrow_exception(m.error);
        return m.beams ? m.beams->result() : std::move(m.r);
    }

    struct Stats {
        std::size_t active = 0, waiting = 0;  // requests in the loop, and waiting to join it
        std::size_t sequences = 0;            // rows of the requests in the loop (one per beam)
        std::uint64_t steps = 0, rows = 0;    // decoding steps run, and rows stepped in them
        std::vector<std::uint64_t> sizes;     // sizes[n]: steps of n rows
    };
    Stats stats() const {
        std::lock_guard lock(mu_);
        return {active_count_, waiting_.size(), active_rows_, steps_, rows_total_, sizes_};
    }

private:
    // One request in the loop; lives on its caller's stack until done.
    struct Member {
        Member(Session& s, const GenerateOptions& o, std::span<const std::int32_t> prompt)
            : s(s), o(o), is_stop{o.eos.value_or(s.model().config().eoc_token_id), o.stop_tokens},
              sampling(o.temperature && *o.temperature > 0.0f),
              sample({sampling ? *o.temperature : 1.0f, o.top_k, o.top_p}, o.seed) {
            if (o.num_beams != 1) return;  // the beam search keeps its own state
            sample.reserve(s.vocab_size());
            seq.assign(prompt.begin(), prompt.end());
            seq.reserve(prompt.size() + o.max_new_tokens);
            r.tokens.reserve(o.max_new_tokens);
        }
        std::size_t rows() const { return beams ? beams->beams() : 1; }
        bool ended() const { return beams ? beams->finished() : r.stopped || r.tokens.size() == o.max_new_tokens; }

        Session& s;
        const GenerateOptions& o;
        // greedy search and sampling
        detail::StopSet is_stop;
        bool sampling;
        Sampler sample;
        std::vector<std::int32_t> seq;  // prompt and tokens so far (for no_repeat_ngram_size)
        std::vector<float> scores;      // the next token's logits
        GenerateResult r;
        std::optional<BeamSearch> beams;  // set: beam search, one row per beam
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

    // Sizes the loop's buffers for steps of `rows` rows.
    void fit(std::size_t rows) {
        if (rows <= tokens_.size()) return;
        tokens_.resize(rows), text_time_.resize(rows), rows_.resize(rows), segments_.resize(rows);
        media_.resize(rows), logits_.resize(rows * model_.vocab_size());
        ws_.reserve(model_.forward_workspace(rows, rows));
    }

    void loop() {
        Executor::Scope use(*ex_);
        std::vector<Member*> active, finished;
        active.reserve(max_), finished.reserve(max_);
        std::size_t rows = 0, ran = 0;  // rows of the active members; rows the last step ran
        for (;;) {
            {
                std::unique_lock lock(mu_);
                if (ran) {
                    if (ran >= sizes_.size()) sizes_.resize(ran + 1, 0);  // a beam search wider than max_batch
                    ++steps_, rows_total_ += ran, ++sizes_[ran];
                }
                // between steps: the finished leave, the waiting join in their
                // order while their rows fit (one wider than the batch once the loop is empty)
                for (Member* m : finished) m->done = true;
                if (!finished.empty()) done_cv_.notify_all();
                finished.clear();
                active_count_ = active.size(), active_rows_ = rows;
                cv_.wait(lock, [&] { return stopping_ || !active.empty() || !waiting_.empty(); });
                while (!waiting_.empty() && (active.empty() || rows + waiting_.front()->rows() <= max_)) {
                    rows += waiting_.front()->rows();
                    active.push_back(waiting_.front()), waiting_.pop_front();
                }
                active_count_ = active.size(), active_rows_ = rows;
                if (active.empty()) return;  // stopping, nobody left
            }
            ran = step(active);
            std::size_t kept = 0;
            for (Member* m : active) {
                if (m->error || m->ended()) finished.push_back(m), rows -= m->rows();
                else active[kept++] = m;  // the others keep their order
            }
            active.resize(kept);
        }
    }

    // One decoding step of every active member: its last token (a beam
    // search: each beam's, on the beam's cache), one row each, then each
    // member's next tokens from its rows of logits. Returns the rows run.
    std::size_t step(std::span<Member* const> active) {
        // a beam search's on_step comes before each of its steps; a throw ends that request alone
        std::size_t n = 0;
        for (Member* m : active) {
            if (m->beams && m->o.on_step) try {
                    m->o.on_step();
                } catch (...) {
                    m->error = std::current_exception();
                }
            if (!m->error) n += m->rows();
        }
        if (n == 0) return 0;
        fit(n);
        std::size_t i = 0;
        auto row = [&](Session& s, std::int32_t token, nn::KVCache& c) {
            tokens_[i] = token;
            text_time_[i] = std::uint32_t(s.num_media());  // generated tokens see the whole prompt's media
            rows_[i] = i;
            segments_[i] = {i, 1, c.length(), &c};
            media_[i] = &s.media_kv();
            ++i;
        };
        for (Member* m : active) {
            if (m->error) continue;
            if (!m->beams) {
                row(m->s, m->r.tokens.back(), m->s.cache(0));
                continue;
            }
            for (std::size_t b = 0; b < m->beams->beams(); ++b)
                row(m->s, m->beams->tokens()[b], m->s.cache(m->beams->slots()[b]));
        }
        const std::size_t V = model_.vocab_size();
        const auto t0 = std::chrono::steady_clock::now();
        try {
            model_.forward({{tokens_.data(), n}, {text_time_.data(), n}, {segments_.data(), n}, {media_.data(), n}},
                           {rows_.data(), n}, nn::act(logits_.data(), n, V), ws_);
        } catch (...) {  // fails every request of the step
            for (Member* m : active)
                if (!m->error) m->error = std::current_exception();
            return n;
        }
        const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        i = 0;
        for (Member* m : active) {
            if (m->error) continue;
            const std::size_t k = m->rows();
            for (std::size_t j = i; j < i + k; ++j) segments_[j].cache->set_length(segments_[j].pos0 + 1);
            auto& st = m->s.mutable_stats();
            st.step_seconds += dt, ++st.steps;
            try {
                if (m->beams) {
                    m->beams->advance({logits_.data() + i * V, k * V});
                } else {
                    std::copy_n(logits_.data() + i * V, V, m->scores.data());
                    choose(*m);
                }
            } catch (...) {  // this request alone ends
                m->error = std::current_exception();
            }
            i += k;
        }
        return n;
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
    std::size_t active_count_ = 0, active_rows_ = 0;
    std::uint64_t steps_ = 0, rows_total_ = 0;
    std::vector<std::uint64_t> sizes_;
    std::thread thread_;  // last: starts once the rest is built
};

}  // namespace flamingo::generate

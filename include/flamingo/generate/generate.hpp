#pragma once
// Few-shot generation and scoring on a Session, with Hugging Face generate()'s
// semantics as OpenFlamingo uses it (transformers 4.28-4.33): greedy search,
// sampling, beam search (BeamSearchScorer: length_penalty, early_stopping,
// no_repeat_ngram_size), stopping at <|endofchunk|>; and OpenFlamingo's
// log-likelihood scoring of candidate continuations.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "logits.hpp"
#include "session.hpp"

namespace flamingo::generate {

enum class EarlyStopping { False, True, Never };

struct GenerateOptions {
    std::size_t max_new_tokens = 20;
    std::size_t num_beams = 1;
    float length_penalty = 1.0f;
    EarlyStopping early_stopping = EarlyStopping::False;
    std::size_t no_repeat_ngram_size = 0;
    std::optional<float> temperature;  // set: sample (greedy when 0)
    std::size_t top_k = 50;
    float top_p = 1.0f;
    std::uint64_t seed = 0;
    std::optional<std::int32_t> eos;  // default: the model's eoc_token_id
    std::vector<std::int32_t> stop_tokens;  // more tokens that end generation (a chat template's stop strings)
    // Called with each new token of greedy search / sampling as it is chosen.
    std::function<void(std::int32_t)> on_token;
    // Called before each forward step of beam search, whose tokens are known
    // only at its end; throwing from it (a client gone) ends the search.
    std::function<void()> on_step;
};

struct GenerateResult {
    std::vector<std::int32_t> tokens;  // generated ids, the stop token included when generation ended on it
    bool stopped = false;              // ended on the stop token
    double score = 0;                  // beam search: the best hypothesis's score
};

namespace detail {

inline void check_options(const GenerateOptions& o) {
    check(o.max_new_tokens >= 1, "max_new_tokens must be at least 1");
    check(o.num_beams >= 1, "num_beams must be at least 1");
    check(!o.temperature || *o.temperature >= 0.0f, "temperature must not be negative");
    check(o.top_p > 0.0f && o.top_p <= 1.0f, "top_p must be in (0, 1], got ", o.top_p);
    check(!(o.temperature && *o.temperature > 0.0f && o.num_beams > 1),
          "sampling with several beams is not supported: choose --num-beams 1 or no --temperature");
}

// Reads the prompt into sequence 0, whose cache already holds its first
// `cached` positions; returns the logits of its last position. Later runs of
// up to `rows` tokens at once fit too.
inline std::vector<float> read_prompt(Session& s, std::span<const std::int32_t> prompt, std::size_t sequences,
                                      std::size_t extra, std::size_t cached = 0, std::size_t rows = 0) {
    check(!prompt.empty(), "the prompt is empty");
    check(cached < prompt.size(), "at least one prompt token must be read (", cached, " of ", prompt.size(),
          " are cached)");
    auto tt = s.prompt_text_time(prompt);
    s.prepare(sequences, prompt.size() + extra, std::max(prompt.size() - cached, rows), cached);
    auto lg = s.run(0, prompt.subspan(cached), std::span<const std::uint32_t>(tt).subspan(cached), cached, false);
    return {lg.begin(), lg.end()};
}

struct StopSet {
    std::int32_t eos;
    std::span<const std::int32_t> more;
    bool operator()(std::int32_t t) const { return t == eos || std::find(more.begin(), more.end(), t) != more.end(); }
};

// Hugging Face BeamHypotheses: the num_beams best finished sequences, in the
// order they were added (ties in the final ranking go to the later one). Its
// storage is sized once: adding a hypothesis copies into a reserved slot.
struct Hypotheses {
    std::size_t num_beams;
    float length_penalty;
    EarlyStopping early;
    std::size_t max_length;
    std::vector<std::pair<double, std::vector<std::int32_t>>> slots;  // num_beams + 1, the first `count` in use
    std::size_t count = 0;
    double worst = 1e9;

    Hypotheses(std::size_t beams, float lp, EarlyStopping e, std::size_t max_len)
        : num_beams(beams), length_penalty(lp), early(e), max_length(max_len), slots(beams + 1) {
        for (auto& s : slots) s.second.reserve(max_len);
    }

    // `stop`: the token that finished the hypothesis (kept after it), or -1.
    void add(std::span<const std::int32_t> hyp, double sum_logprobs, std::int32_t stop = -1) {
        // the length counts the whole sequence, prompt included, without the stop token
        const double score = sum_logprobs / std::pow(double(hyp.size()), double(length_penalty));
        if (count < num_beams || score > worst) {
            slots[count].first = score;
            slots[count].second.assign(hyp.begin(), hyp.end());
            if (stop >= 0) slots[count].second.push_back(stop);
            ++count;
            if (count > num_beams) {  // drop the worst, keeping the others in order
                std::size_t lo = 0;
                for (std::size_t i = 1; i < count; ++i)
                    if (slots[i].first < slots[lo].first) lo = i;
                std::rotate(slots.begin() + std::ptrdiff_t(lo), slots.begin() + std::ptrdiff_t(lo + 1),
                            slots.begin() + std::ptrdiff_t(count));
                --count;
                worst = slots[0].first;
                for (std::size_t i = 0; i < count; ++i) worst = std::min(worst, slots[i].first);
            } else {
                worst = std::min(score, worst);
            }
        }
    }
    bool done(double best_sum_logprobs, std::size_t cur_len) const {
        if (count < num_beams) return false;
        if (early == EarlyStopping::True) return true;
        const double len = (early == EarlyStopping::False || length_penalty <= 0.0f) ? double(cur_len)
                                                                                     : double(max_length);
        return worst >= best_sum_logprobs / std::pow(len, double(length_penalty));
    }
};

}  // namespace detail

// Beam search one step at a time: whoever runs the forward passes (generate()
// alone with Session::step, or a Batcher together with other requests' rows)
// asks for the step's tokens and cache slots and hands its logits back. Its
// state is sized once: a step allocates nothing.
class BeamSearch {
public:
    // After the prompt is read into cache 0, `first` being its last
    // position's logits: every beam starts from the prompt's cache, and the
    // first tokens are chosen.
    BeamSearch(Session& s, std::span<const std::int32_t> prompt, const GenerateOptions& o, std::span<const float> first)
        : s_(s), is_stop_{o.eos.value_or(s.model().config().eoc_token_id), o.stop_tokens}, B_(o.num_beams),
          V_(s.vocab_size()), P_(prompt.size()), max_length_(P_ + o.max_new_tokens), no_repeat_(o.no_repeat_ngram_size),
          hyps_(B_, o.length_penalty, o.early_stopping, max_length_),
          seqs_(B_, std::vector<std::int32_t>(prompt.begin(), prompt.end())), beam_scores_(B_, -1e9),
          logp_(B_ * V_), cand_(B_ * V_), order_(B_ * V_), slot_(B_), new_slot_(B_), taken_(B_), cur_len_(P_) {
        for (std::size_t b = 1; b < B_; ++b) s.cache(b).copy_from(s.cache(0), 0, P_);
        for (auto it = o.stop_tokens.begin(); it != o.stop_tokens.end(); ++it)
            stops_ += *it != is_stop_.eos && std::find(o.stop_tokens.begin(), it, *it) == it;
        beam_scores_[0] = 0;
        for (std::size_t b = 0; b < B_; ++b) {
            std::copy(first.begin(), first.end(), logp_.begin() + std::ptrdiff_t(b * V_));
            slot_[b] = b;  // slot_[b]: the cache of beam b
        }
        next_scores_.reserve(B_), next_tokens_.reserve(B_), next_src_.reserve(B_);
        for (auto& q : seqs_) q.reserve(max_length_);
        new_seqs_ = seqs_;
        for (auto& q : new_seqs_) q.reserve(max_length_);
        select();
    }

    bool finished() const { return finished_; }
    std::size_t beams() const { return B_; }
    // The next step, while not finished: beam b's last token, to run as the
    // next position of the session's cache slots()[b].
    std::span<const std::int32_t> tokens() const { return next_tokens_; }
    std::span<const std::size_t> slots() const { return slot_; }
    // That step's logits [beams, vocab] (row b: beam b); chooses the next tokens.
    void advance(std::span<const float> logits) {
        check(!finished_ && logits.size() == B_ * V_, "beam search: a step's logits must be [beams, vocab]");
        std::copy(logits.begin(), logits.end(), logp_.begin());
        select();
    }
    // Once finished: the best hypothesis.
    GenerateResult result() {
        check(finished_, "beam search: not finished");
        if (!done_)
            for (std::size_t b = 0; b < B_; ++b) hyps_.add(seqs_[b], beam_scores_[b]);
        done_ = true;
        // finalize: stable sort by score, the last of equals wins
        std::stable_sort(hyps_.slots.begin(), hyps_.slots.begin() + std::ptrdiff_t(hyps_.count),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        const auto& best = hyps_.slots[hyps_.count - 1];
        GenerateResult r;
        r.score = best.first;
        // a finished hypothesis ends with its stop token; a live beam never holds one
        r.tokens.assign(best.second.begin() + std::ptrdiff_t(P_), best.second.end());
        r.stopped = !r.tokens.empty() && is_stop_(r.tokens.back());
        return r;
    }

private:
    // Each beam's best continuations from logp_, the finished ones kept, the
    // beams' caches reordered for the next step.
    void select() {
        for (std::size_t b = 0; b < B_; ++b) {
            std::span<float> row(logp_.data() + b * V_, V_);
            log_softmax(row);
            ban_repeated_ngrams(seqs_[b], no_repeat_, row);
            for (std::size_t v = 0; v < V_; ++v) cand_[b * V_ + v] = double(row[v]) + beam_scores_[b];
        }
        // the (1 + stop tokens) * num_beams best (beam, token) pairs, best first (ties
        // keep the lower index, as topk): as transformers with several end tokens, so
        // that num_beams go on even when each beam's best are all stop tokens
        // (2 * num_beams with one, as the reference)
        const std::size_t K = std::min((1 + stops_) * B_, B_ * V_);
        std::iota(order_.begin(), order_.end(), 0);
        std::partial_sort(order_.begin(), order_.begin() + std::ptrdiff_t(K), order_.end(),
                          [&](std::size_t a, std::size_t c) {
                              return cand_[a] > cand_[c] || (cand_[a] == cand_[c] && a < c);
                          });
        next_scores_.clear(), next_tokens_.clear(), next_src_.clear();
        for (std::size_t rank = 0; rank < K && next_tokens_.size() < B_; ++rank) {
            const std::size_t src = order_[rank] / V_;
            const std::int32_t tok = std::int32_t(order_[rank] % V_);
            if (is_stop_(tok)) {
                if (rank >= B_) continue;
                hyps_.add(seqs_[src], cand_[order_[rank]], tok);
            } else {
                next_scores_.push_back(cand_[order_[rank]]);
                next_tokens_.push_back(tok);
                next_src_.push_back(src);
            }
        }
        check(next_tokens_.size() == B_, "beam search: fewer candidates than beams (vocabulary too small)");
        done_ = done_ || hyps_.done(cand_[order_[0]], cur_len_ + 1);
        // Beam b continues from beam next_src_[b]. Its first child takes a parent's
        // cache over; other children get the cache of a beam that had none and
        // copy the parent's generated positions into it.
        std::fill(new_slot_.begin(), new_slot_.end(), B_);
        std::fill(taken_.begin(), taken_.end(), false);
        for (std::size_t b = 0; b < B_; ++b) {
            new_seqs_[b] = seqs_[next_src_[b]];
            new_seqs_[b].push_back(next_tokens_[b]);
            const std::size_t ps = slot_[next_src_[b]];
            if (!taken_[ps]) new_slot_[b] = ps, taken_[ps] = true;
        }
        std::size_t free = 0;
        for (std::size_t b = 0; b < B_; ++b) {
            if (new_slot_[b] != B_) continue;
            while (taken_[free]) ++free;
            taken_[free] = true;
            new_slot_[b] = free;
            s_.cache(free).copy_from(s_.cache(slot_[next_src_[b]]), P_, cur_len_);
        }
        slot_ = new_slot_;
        std::swap(seqs_, new_seqs_);
        beam_scores_ = next_scores_;
        ++cur_len_;
        finished_ = done_ || cur_len_ >= max_length_;
    }

    Session& s_;
    detail::StopSet is_stop_;
    std::size_t B_, V_, P_, max_length_, no_repeat_;
    std::size_t stops_ = 1;  // distinct stop tokens
    detail::Hypotheses hyps_;
    std::vector<std::vector<std::int32_t>> seqs_, new_seqs_;
    std::vector<double> beam_scores_;
    std::vector<float> logp_;
    std::vector<double> cand_;
    std::vector<std::size_t> order_, slot_, new_slot_;
    std::vector<bool> taken_;
    // per-step bookkeeping, reserved once
    std::vector<double> next_scores_;
    std::vector<std::int32_t> next_tokens_;
    std::vector<std::size_t> next_src_;
    std::size_t cur_len_;
    bool done_ = false, finished_ = false;
};

// Greedy search or sampling (num_beams == 1), or beam search. Sequence 0's
// cache may already hold the prompt's first `cached` positions (a
// conversation's earlier turns); only the rest is read.
inline GenerateResult generate(Session& s, std::span<const std::int32_t> prompt, const GenerateOptions& o,
                               std::size_t cached = 0) {
    detail::check_options(o);
    const detail::StopSet is_stop{o.eos.value_or(s.model().config().eoc_token_id), o.stop_tokens};
    const std::size_t V = s.vocab_size(), B = o.num_beams, P = prompt.size();
    check(P + o.max_new_tokens <= s.model().max_positions(), ErrorKind::Limit, "the prompt (", P, " tokens) plus ", o.max_new_tokens,
          " new tokens exceeds the model's context of ", s.model().max_positions(), " positions");
    std::vector<float> first = detail::read_prompt(s, prompt, B, o.max_new_tokens, cached);
    GenerateResult r;

    if (B == 1) {
        const bool sampling = o.temperature && *o.temperature > 0.0f;
        Sampler sample({sampling ? *o.temperature : 1.0f, o.top_k, o.top_p}, o.seed);
        sample.reserve(V);
        std::vector<std::int32_t> seq(prompt.begin(), prompt.end());
        seq.reserve(P + o.max_new_tokens);
        r.tokens.reserve(o.max_new_tokens);
        std::vector<float> scores = std::move(first);
        const std::size_t seq0 = 0;
        for (std::size_t i = 0; i < o.max_new_tokens; ++i) {
            ban_repeated_ngrams(seq, o.no_repeat_ngram_size, scores);
            const std::int32_t tok = sampling ? sample(scores) : std::int32_t(argmax(scores));
            seq.push_back(tok);
            r.tokens.push_back(tok);
            if (o.on_token) o.on_token(tok);
            if (is_stop(tok)) {
                r.stopped = true;
                break;
            }
            if (i + 1 == o.max_new_tokens) break;
            auto lg = s.step({&tok, 1}, {&seq0, 1});
            std::copy(lg.begin(), lg.end(), scores.begin());
        }
        return r;
    }

    BeamSearch search(s, prompt, o, first);
    while (!search.finished()) {
        if (o.on_step) o.on_step();
        search.advance(s.step(search.tokens(), search.slots()));
    }
    return search.result();
}

struct CandidateScore {
    std::vector<std::int32_t> tokens;
    double logprob = 0;       // sum over the candidate's tokens
    double mean_logprob = 0;  // logprob / number of tokens
};

// Log-likelihood of each candidate continuation appended to the prompt (as
// OpenFlamingo's evaluation scores close-ended tasks). The prompt is read once;
// each candidate continues from its cache. Sequence 0's cache may already hold
// the prompt's first `cached` positions (e.g. from a prefix cache).
inline std::vector<CandidateScore> score(Session& s, std::span<const std::int32_t> prompt,
                                         const std::vector<std::vector<std::int32_t>>& candidates,
                                         std::size_t cached = 0) {
    std::size_t longest = 0;
    for (std::size_t i = 0; i < candidates.size(); ++i) {
        check(!candidates[i].empty(), "candidate ", i + 1, " is empty");
        for (std::int32_t id : candidates[i])
            check(id >= 0 && std::size_t(id) < s.vocab_size(), "candidate ", i + 1, ": token id ", id,
                  " is outside the vocabulary of ", s.vocab_size(), " tokens");
        longest = std::max(longest, candidates[i].size());
    }
    check(prompt.size() + longest <= s.model().max_positions(), ErrorKind::Limit, "the prompt (", prompt.size(),
          " tokens) plus a candidate of ", longest, " tokens exceeds the model's context of ",
          s.model().max_positions(), " positions");
    // each candidate but its last token is read at once, after the prompt
    std::vector<float> last = detail::read_prompt(s, prompt, 1, longest, cached, longest - 1);
    log_softmax(last);
    const std::size_t P = prompt.size(), V = s.vocab_size();
    const std::uint32_t media = std::uint32_t(s.num_media());
    std::vector<CandidateScore> out;
    for (const auto& c : candidates) {
        CandidateScore cs;
        cs.tokens = c;
        cs.logprob = last[std::size_t(c[0])];
        if (c.size() > 1) {
            // Feed all but the last candidate token; row i predicts token i + 1.
            std::span<const std::int32_t> feed(c.data(), c.size() - 1);
            std::vector<std::uint32_t> tt(feed.size(), media);
            auto lg = s.run(0, feed, tt, P, true);
            std::vector<float> row(V);
            for (std::size_t i = 0; i < feed.size(); ++i) {
                std::copy_n(lg.data() + i * V, V, row.data());
                log_softmax(row);
                cs.logprob += row[std::size_t(c[i + 1])];
            }
        }
        cs.mean_logprob = cs.logprob / double(c.size());
        out.push_back(std::move(cs));
    }
    return out;
}

}  // namespace flamingo::generate

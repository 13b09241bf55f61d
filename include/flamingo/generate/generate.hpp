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

    // Beam search: every beam starts from the prompt's cache.
    for (std::size_t b = 1; b < B; ++b) s.cache(b).copy_from(s.cache(0), 0, P);
    const std::size_t max_length = P + o.max_new_tokens;
    detail::Hypotheses hyps(B, o.length_penalty, o.early_stopping, max_length);
    std::vector<std::vector<std::int32_t>> seqs(B, std::vector<std::int32_t>(prompt.begin(), prompt.end()));
    std::vector<double> beam_scores(B, -1e9);
    beam_scores[0] = 0;
    std::vector<float> logp(B * V);
    for (std::size_t b = 0; b < B; ++b) std::copy(first.begin(), first.end(), logp.begin() + std::ptrdiff_t(b * V));
    std::vector<std::size_t> order(B * V), slot(B);  // slot[b]: the cache of beam b
    for (std::size_t b = 0; b < B; ++b) slot[b] = b;
    std::vector<double> cand(B * V);
    // Per-step bookkeeping, sized once: a step allocates nothing.
    std::vector<double> next_scores;
    std::vector<std::int32_t> next_tokens;
    std::vector<std::size_t> next_src, new_slot(B);
    std::vector<bool> taken(B);
    next_scores.reserve(B), next_tokens.reserve(B), next_src.reserve(B);
    for (auto& q : seqs) q.reserve(max_length);
    std::vector<std::vector<std::int32_t>> new_seqs = seqs;
    for (auto& q : new_seqs) q.reserve(max_length);
    bool done = false;
    std::size_t cur_len = P;
    while (true) {
        for (std::size_t b = 0; b < B; ++b) {
            std::span<float> row(logp.data() + b * V, V);
            log_softmax(row);
            ban_repeated_ngrams(seqs[b], o.no_repeat_ngram_size, row);
            for (std::size_t v = 0; v < V; ++v) cand[b * V + v] = double(row[v]) + beam_scores[b];
        }
        // the 2 * num_beams best (beam, token) pairs, best first; ties keep the lower index, as topk
        const std::size_t K = std::min(2 * B, B * V);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(K), order.end(),
                          [&](std::size_t a, std::size_t c) { return cand[a] > cand[c] || (cand[a] == cand[c] && a < c); });
        next_scores.clear(), next_tokens.clear(), next_src.clear();
        for (std::size_t rank = 0; rank < K && next_tokens.size() < B; ++rank) {
            const std::size_t src = order[rank] / V;
            const std::int32_t tok = std::int32_t(order[rank] % V);
            if (is_stop(tok)) {
                if (rank >= B) continue;
                hyps.add(seqs[src], cand[order[rank]], tok);
            } else {
                next_scores.push_back(cand[order[rank]]);
                next_tokens.push_back(tok);
                next_src.push_back(src);
            }
        }
        check(next_tokens.size() == B, "beam search: fewer candidates than beams (vocabulary too small)");
        done = done || hyps.done(cand[order[0]], cur_len + 1);
        // Beam b continues from beam next_src[b]. Its first child takes a parent's
        // cache over; other children get the cache of a beam that had none and
        // copy the parent's generated positions into it.
        std::fill(new_slot.begin(), new_slot.end(), B);
        std::fill(taken.begin(), taken.end(), false);
        for (std::size_t b = 0; b < B; ++b) {
            new_seqs[b] = seqs[next_src[b]];
            new_seqs[b].push_back(next_tokens[b]);
            const std::size_t ps = slot[next_src[b]];
            if (!taken[ps]) new_slot[b] = ps, taken[ps] = true;
        }
        std::size_t free = 0;
        for (std::size_t b = 0; b < B; ++b) {
            if (new_slot[b] != B) continue;
            while (taken[free]) ++free;
            taken[free] = true;
            new_slot[b] = free;
            s.cache(free).copy_from(s.cache(slot[next_src[b]]), P, cur_len);
        }
        slot = new_slot;
        std::swap(seqs, new_seqs);
        beam_scores = next_scores;
        ++cur_len;
        if (done || cur_len >= max_length) break;
        if (o.on_step) o.on_step();
        auto lg = s.step(next_tokens, slot);
        std::copy(lg.begin(), lg.end(), logp.begin());
    }
    if (!done)
        for (std::size_t b = 0; b < B; ++b) hyps.add(seqs[b], beam_scores[b]);
    // finalize: stable sort by score, the last of equals wins
    std::stable_sort(hyps.slots.begin(), hyps.slots.begin() + std::ptrdiff_t(hyps.count),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    const auto& best = hyps.slots[hyps.count - 1];
    r.score = best.first;
    // a finished hypothesis ends with its stop token; a live beam never holds one
    r.tokens.assign(best.second.begin() + std::ptrdiff_t(P), best.second.end());
    r.stopped = !r.tokens.empty() && is_stop(r.tokens.back());
    return r;
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

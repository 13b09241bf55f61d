// Greedy search, beam search and candidate scoring against the PyTorch
// reference's Hugging Face generate() semantics (tests/data/model/*/expected).
#include "../model/parity_util.hpp"

#include <flamingo/generate/generate.hpp>

#include <algorithm>
#include <atomic>

using namespace flamingo;

namespace {

struct Fixture {
    std::unique_ptr<model::Flamingo> model;
    std::unique_ptr<generate::Session> session;
    std::vector<std::int32_t> prompt;
};

Fixture open(const std::string& c) {
    Fixture f;
    f.model = model::load_flamingo(fixture::dir(c));
    f.session = std::make_unique<generate::Session>(*f.model);
    auto pixels = fixture::floats(c, "pixels.npy");
    auto s = fixture::shape(c, "pixels.npy");
    f.session->set_media(pixels.data(), s[0], s[1]);
    auto ids = fixture::ints(c, "input_ids.npy");
    f.prompt.assign(ids.begin(), ids.end());
    return f;
}

std::vector<std::int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<std::int32_t>>(); }

generate::EarlyStopping early_of(const nlohmann::json& j) {
    if (j.is_string()) return generate::EarlyStopping::Never;
    return j.get<bool>() ? generate::EarlyStopping::True : generate::EarlyStopping::False;
}

}  // namespace

TEST_CASE("greedy and beam search match Hugging Face generate() on the reference") {
    for (const auto& c : fixture::cases()) {
        CAPTURE(c);
        Fixture f = open(c);
        auto g = fixture::json(c, "generate.json");
        REQUIRE(ids_of(g["prompt_ids"]) == f.prompt);
        for (const auto& e : g["greedy"]) {
            generate::GenerateOptions o;
            o.max_new_tokens = e["max_new_tokens"];
            o.no_repeat_ngram_size = e["no_repeat_ngram_size"];
            auto r = generate::generate(*f.session, f.prompt, o);
            CHECK(r.tokens == ids_of(e["tokens"]));
            CHECK(r.stopped == e["ended_on_eoc"].get<bool>());
        }
        for (const auto& e : g["beam"]) {
            CAPTURE(e.dump());
            generate::GenerateOptions o;
            o.num_beams = e["num_beams"];
            o.length_penalty = e["length_penalty"];
            o.early_stopping = early_of(e["early_stopping"]);
            o.no_repeat_ngram_size = e["no_repeat_ngram_size"];
            o.max_new_tokens = e["max_new_tokens"];
            auto r = generate::generate(*f.session, f.prompt, o);
            CHECK(r.tokens == ids_of(e["tokens"]));
            CHECK(r.score == doctest::Approx(e["score"].get<double>()).epsilon(1e-5));
        }
    }
}

TEST_CASE("candidate scores match OpenFlamingo's log-likelihood evaluation") {
    for (const auto& c : fixture::cases()) {
        CAPTURE(c);
        Fixture f = open(c);
        auto sc = fixture::json(c, "score.json");
        std::vector<std::vector<std::int32_t>> cands;
        for (const auto& e : sc["candidates"]) cands.push_back(ids_of(e["tokens"]));
        auto got = generate::score(*f.session, f.prompt, cands);
        REQUIRE(got.size() == cands.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
            const auto& e = sc["candidates"][i];
            const double lp = e["logprob"], mlp = e["mean_logprob"];
            CHECK(std::fabs(got[i].logprob - lp) <= 1e-4 + 1e-4 * std::fabs(lp));
            CHECK(std::fabs(got[i].mean_logprob - mlp) <= 1e-4 + 1e-4 * std::fabs(mlp));
        }
    }
}

extern std::atomic<std::size_t> g_allocations;  // count_allocations.cpp

// The allocation tests run on one thread: kernels keep per-thread scratch that
// grows the first time a thread runs them, and with several threads which
// thread runs which chunk (and so when its scratch grows) depends on timing.
TEST_CASE("greedy decoding and sampling allocate nothing once the session has taken its first step") {
    Executor one(1);
    Executor::Scope use(one);
    for (std::string c : {"llama", "mpt", "gpt_neox"}) {
        for (bool sampling : {false, true}) {
            CAPTURE(c);
            CAPTURE(sampling);
            Fixture f = open(c);
            generate::GenerateOptions o;
            o.max_new_tokens = 12;
            o.eos = -1;  // never stop early
            if (sampling) o.temperature = 0.8f, o.top_k = 5, o.top_p = 0.9f, o.seed = 3;
            std::size_t after_first_step = 0;
            int seen = 0;
            o.on_token = [&](std::int32_t) {
                if (++seen == 2) after_first_step = g_allocations.load();
            };
            auto r = generate::generate(*f.session, f.prompt, o);
            const std::size_t at_end = g_allocations.load();
            CHECK(r.tokens.size() == 12);
            CHECK(at_end == after_first_step);  // ten decoding steps, no allocation
        }
    }
}

TEST_CASE("beam search allocates nothing per step, finished hypotheses included") {
    // A run's allocations do not depend on how many steps it takes: 3 new
    // tokens cost as many as 15 (the session is sized by a first run). The
    // stop token is the one greedy decoding picks first, so hypotheses finish
    // (and are kept) during the search.
    Executor one(1);
    Executor::Scope use(one);
    for (std::string c : {"llama", "gpt_neox"}) {
        CAPTURE(c);
        Fixture f = open(c);
        generate::GenerateOptions o;
        o.num_beams = 3;
        o.max_new_tokens = 1;
        o.eos = generate::generate(*f.session, f.prompt, o).tokens.at(0);
        o.early_stopping = generate::EarlyStopping::Never;
        o.max_new_tokens = 15;
        generate::generate(*f.session, f.prompt, o);  // sizes the session for 15
        auto allocations = [&](std::size_t steps) {
            o.max_new_tokens = steps;
            const std::size_t before = g_allocations.load();
            auto r = generate::generate(*f.session, f.prompt, o);
            return g_allocations.load() - before;
        };
        const std::size_t few = allocations(3), many = allocations(15);
        CHECK(many == few);
    }
}

TEST_CASE("beam search with several stop tokens keeps num_beams going, as transformers does") {
    // Every token but three stops the search: among a step's 2 * num_beams
    // best candidates fewer than num_beams go on, which threw before; with
    // (1 + stop tokens) * num_beams candidates, as transformers takes with
    // several end tokens, three do. The first step's best three are all
    // stop tokens here, so three hypotheses of one token finish and, with
    // early stopping, the best is greedy's first token.
    Fixture f = open("llama");
    generate::GenerateOptions o;
    o.max_new_tokens = 1;
    const std::int32_t first = generate::generate(*f.session, f.prompt, o).tokens.at(0);
    const std::size_t V = f.session->vocab_size();
    std::vector<std::int32_t> go_on;
    for (std::int32_t t = 0; go_on.size() < 3; ++t)
        if (t != first) go_on.push_back(t);
    for (std::int32_t t = 0; t < std::int32_t(V); ++t)
        if (std::find(go_on.begin(), go_on.end(), t) == go_on.end()) o.stop_tokens.push_back(t);
    o.eos = o.stop_tokens.front();
    o.num_beams = 3, o.max_new_tokens = 4;
    o.early_stopping = generate::EarlyStopping::True;
    const auto r = generate::generate(*f.session, f.prompt, o);
    CHECK(r.stopped);
    CHECK(r.tokens == std::vector<std::int32_t>{first});
}

TEST_CASE("beam search calls on_step before each step, and a throw from it ends the search") {
    Fixture f = open("llama");
    generate::GenerateOptions o;
    o.num_beams = 3, o.max_new_tokens = 6;
    o.early_stopping = generate::EarlyStopping::Never;
    o.eos = -1;  // no hypothesis finishes early: the search takes every step
    std::size_t steps = 0;
    o.on_step = [&] { ++steps; };
    const auto whole = generate::generate(*f.session, f.prompt, o);
    CHECK(whole.tokens.size() == 6);
    CHECK(steps == 5);  // the first token comes from the prompt's logits
    struct Gone {};
    steps = 0;
    o.on_step = [&] {
        if (++steps == 2) throw Gone{};
    };
    CHECK_THROWS_AS(generate::generate(*f.session, f.prompt, o), Gone);
    CHECK(steps == 2);
}

TEST_CASE("every module declares the working memory it takes") {
    // A declaration that falls short still runs (from an overflow block), so
    // only this count shows it: encoding, prompts, beams and candidates of every
    // fixture must fit the plans the session reserved.
    for (const auto& c : fixture::cases()) {
        CAPTURE(c);
        Fixture f = open(c);
        generate::GenerateOptions o;
        o.max_new_tokens = 4;
        generate::generate(*f.session, f.prompt, o);
        o.num_beams = 3;
        generate::generate(*f.session, f.prompt, o);
        generate::score(*f.session, f.prompt, {{3, 4, 5}, {6}});
        auto pixels = fixture::floats(c, "pixels.npy");
        auto s = fixture::shape(c, "pixels.npy");
        f.session->embed(pixels.data(), s[0] * s[1]);
        CHECK(f.session->workspace_overflows() == 0);
    }
}

TEST_CASE("a candidate longer than the prompt scores as one forward over prompt and candidate does") {
    Fixture f = open("llama");
    const std::size_t P = f.prompt.size(), L = P + 7;
    std::vector<std::int32_t> cand(L);
    for (std::size_t i = 0; i < L; ++i) cand[i] = std::int32_t(10 + (i * 37) % 300);  // no <image>, no eoc
    const auto got = generate::score(*f.session, f.prompt, {cand, {cand[0]}});

    // Reference: the whole sequence in one forward, log-softmax in double.
    std::vector<std::int32_t> all(f.prompt);
    all.insert(all.end(), cand.begin(), cand.end());
    generate::Session s(*f.model);
    auto pixels = fixture::floats("llama", "pixels.npy");
    auto shape = fixture::shape("llama", "pixels.npy");
    s.set_media(pixels.data(), shape[0], shape[1]);
    const auto tt = s.prompt_text_time(all);
    s.prepare(1, all.size(), all.size());
    const auto lg = s.run(0, all, tt, 0, true);
    const std::size_t V = f.model->vocab_size();
    double want = 0;
    for (std::size_t i = 0; i < L; ++i) {
        const float* row = lg.data() + (P - 1 + i) * V;
        double mx = row[0], sum = 0;
        for (std::size_t v = 0; v < V; ++v) mx = std::max(mx, double(row[v]));
        for (std::size_t v = 0; v < V; ++v) sum += std::exp(double(row[v]) - mx);
        want += double(row[cand[i]]) - mx - std::log(sum);
    }
    REQUIRE(got.size() == 2);
    CHECK(std::fabs(got[0].logprob - want) <= 1e-3 * (1 + std::fabs(want)));
    CHECK(got[0].tokens.size() == L);
}

TEST_CASE("a candidate token outside the vocabulary is an error, wherever it stands") {
    Fixture f = open("llama");
    const std::int32_t V = std::int32_t(f.model->vocab_size());
    for (auto cand : {std::vector<std::int32_t>{V}, {3, V}, {3, 4, -1}})
        CHECK_THROWS_WITH_AS(generate::score(*f.session, f.prompt, {cand}), doctest::Contains("outside the vocabulary"),
                             Error);
}

TEST_CASE("a prompt whose <image> count differs from the media is refused") {
    Fixture f = open("llama");
    std::vector<std::int32_t> p(f.prompt.begin(), f.prompt.begin() + 5);  // before the first image
    generate::GenerateOptions o;
    CHECK_THROWS_WITH_AS(generate::generate(*f.session, p, o), "the prompt has 0 <image> tokens but 3 images were given",
                         Error);
}

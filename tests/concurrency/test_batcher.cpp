// Continuous batching (generate/batcher.hpp): requests on several threads,
// each on its own session or context, decoded together in one loop, get the
// tokens they get alone, whether they join at once, one after another
// mid-way, wait for room, or leave early. The reference is each request run
// alone (and, for the parity fixtures, the PyTorch reference's tokens). Run
// under ThreadSanitizer in CI.
#include "../model/parity_util.hpp"

#include <atomic>
#include <chrono>
#include <functional>
#include <fstream>
#include <thread>

#include <flamingo/chat.hpp>
#include <flamingo/flamingo.hpp>

namespace test_batcher {  // own names: the area compiles as one translation unit

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
const fs::path kEval = fs::path(FLAMINGO_TEST_DATA) / "world" / "eval";

std::vector<std::int32_t> ids_of(const nlohmann::json& j) { return j.get<std::vector<std::int32_t>>(); }

struct Request {
    std::string prompt;
    std::vector<std::string> images;
    generate::GenerateOptions o;
};

// Evaluation prompts (1-3 shots) with greedy search of different lengths,
// sampling and the no-repeat-n-gram rule, so requests leave at different steps.
std::vector<Request> requests() {
    std::vector<Request> out;
    for (const char* task : {"caption", "vqa"}) {
        std::ifstream in(kEval / (std::string(task) + ".jsonl"));
        std::string line;
        for (int i = 0; i < 3 && std::getline(in, line); ++i) {
            const auto r = nlohmann::json::parse(line);
            Request q;
            q.prompt = r.at("prompt");
            for (const auto& im : r.at("images")) q.images.push_back((kEval / "images" / im.get<std::string>()).string());
            q.o.max_new_tokens = std::size_t(4 + 3 * out.size());
            out.push_back(q);
        }
    }
    out[1].o.temperature = 0.8f, out[1].o.top_p = 0.9f, out[1].o.seed = 7;
    out[3].o.temperature = 1.2f, out[3].o.top_k = 5, out[3].o.seed = 11;
    out[4].o.no_repeat_ngram_size = 2;
    return out;
}

// One thread everywhere: decoding attention splits its arithmetic by thread
// count, so only equal counts promise equal bits.
std::vector<std::int32_t> alone(const std::shared_ptr<const Model>& model, const Request& q) {
    Context ctx(model, {1, nullptr});
    ctx.set_media(q.images);
    return ctx.generate(q.prompt, q.o).tokens;
}

// A request's answer and its decoding steps (Session::Stats::steps).
struct Outcome {
    Generation g;
    std::size_t steps = 0;
};
Outcome run(const std::shared_ptr<const Model>& model, const Request& q,
            const std::shared_ptr<generate::Batcher>& batcher = nullptr) {
    Context ctx(model, {1, nullptr});
    ctx.set_batcher(batcher);
    ctx.set_media(q.images);
    Outcome out;
    out.g = ctx.generate(q.prompt, q.o);
    out.steps = ctx.stats().steps;
    return out;
}

// A beam search's score as the batched run must give it: its log-probabilities
// come from rows multiplied with other rows than alone, whose float rounding
// may differ in the last bits (the tokens do not), so to 1e-5 (relative). 0
// for greedy search and sampling.
doctest::Approx score_of(const Outcome& alone) { return doctest::Approx(alone.g.score).epsilon(1e-5); }

// Beam searches on the evaluation prompts: different widths and lengths, each
// early_stopping mode, a length penalty and the no-repeat-n-gram rule.
std::vector<Request> beam_requests() {
    auto out = requests();
    out.resize(5);
    for (auto& q : out) q.o = {};
    out[0].o.num_beams = 2, out[0].o.max_new_tokens = 6;
    out[1].o.num_beams = 3, out[1].o.max_new_tokens = 10, out[1].o.early_stopping = generate::EarlyStopping::True;
    out[1].o.length_penalty = 0.7f;
    out[2].o.num_beams = 4, out[2].o.max_new_tokens = 8, out[2].o.early_stopping = generate::EarlyStopping::Never;
    out[2].o.no_repeat_ngram_size = 2;
    out[3].o.num_beams = 3, out[3].o.max_new_tokens = 3;  // ends at max_new_tokens, not on a stop token
    // never stopping: the beams' parents cross over many steps, so their caches change hands
    out[4].o.num_beams = 3, out[4].o.max_new_tokens = 14, out[4].o.eos = -1;
    out[4].o.early_stopping = generate::EarlyStopping::Never;
    return out;
}

}  // namespace

TEST_CASE("sessions of the parity fixtures decoded together give the reference's greedy and beam search tokens") {
    // The fixtures' random weights give flat distributions: beams' parents
    // cross often, so each beam's row must run on the cache slot it was given.
    for (const auto& c : fixture::cases()) {
        CAPTURE(c);
        const auto net = model::load_flamingo(fixture::dir(c));
        const auto g = fixture::json(c, "generate.json");
        const auto pixels = fixture::floats(c, "pixels.npy");
        const auto shape = fixture::shape(c, "pixels.npy");
        const auto ids = fixture::ints(c, "input_ids.npy");
        const std::vector<std::int32_t> prompt(ids.begin(), ids.end());
        // every greedy and beam setting twice, all at once
        std::vector<nlohmann::json> runs;
        std::size_t rows = 0;
        for (const char* kind : {"greedy", "beam"})
            for (const auto& e : g[kind]) {
                auto run = e;
                run["num_beams"] = e.value("num_beams", 1);
                runs.push_back(run), runs.push_back(run);
                rows += 2 * run["num_beams"].get<std::size_t>();
            }
        generate::Batcher batcher(*net, rows, std::make_shared<Executor>(1));
        std::vector<generate::GenerateResult> got(runs.size());
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < runs.size(); ++i)
            threads.emplace_back([&, i] {
                Executor ex(1);
                Executor::Scope use(ex);
                generate::Session s(*net);
                s.set_media(pixels.data(), shape[0], shape[1]);
                const auto& e = runs[i];
                generate::GenerateOptions o;
                o.max_new_tokens = e["max_new_tokens"];
                o.no_repeat_ngram_size = e["no_repeat_ngram_size"];
                o.num_beams = e["num_beams"];
                if (o.num_beams > 1) {
                    o.length_penalty = e["length_penalty"];
                    o.early_stopping = e["early_stopping"].is_string() ? generate::EarlyStopping::Never
                                       : e["early_stopping"].get<bool>() ? generate::EarlyStopping::True
                                                                         : generate::EarlyStopping::False;
                }
                got[i] = batcher.generate(s, prompt, o);
            });
        for (auto& t : threads) t.join();
        for (std::size_t i = 0; i < runs.size(); ++i) {
            CAPTURE(runs[i].dump());
            CHECK(got[i].tokens == ids_of(runs[i]["tokens"]));
            if (runs[i]["num_beams"] == 1) CHECK(got[i].stopped == runs[i]["ended_on_eoc"].get<bool>());
            else CHECK(got[i].score == doctest::Approx(runs[i]["score"].get<double>()).epsilon(1e-5));
        }
    }
}

TEST_CASE("requests joining one after another mid-way and leaving early get the tokens they get alone") {
    const auto model = Model::load(kModel);
    auto reqs = requests();
    std::vector<std::vector<std::int32_t>> want;
    for (const auto& q : reqs) want.push_back(alone(model, q));

    // On two threads the loop runs the sequences' attentions across them
    // (nn::for_each_segment), each on one thread as it runs alone here.
    for (int loop_threads : {1, 2}) {
        CAPTURE(loop_threads);
        auto batcher =
            std::make_shared<generate::Batcher>(model->network(), 8, std::make_shared<Executor>(loop_threads));
        const std::size_t n = reqs.size();
        std::vector<std::vector<std::int32_t>> got(n);
        std::vector<std::atomic<bool>> finished(n);
        std::vector<std::thread> threads(n);
        std::atomic<std::size_t> launched{0};  // threads[k] is set once launched > k
        // Request k's second token (chosen in the loop) starts request k + 1 and
        // holds the loop until k + 1 waits to join (or is over): each one joins
        // while the earlier ones are decoding, at a known point of theirs.
        std::function<void(std::size_t)> start = [&](std::size_t k) {
            threads[k] = std::thread([&, k] {
                Context ctx(model, {1, nullptr});
                ctx.set_batcher(batcher);
                ctx.set_media(reqs[k].images);
                generate::GenerateOptions o = reqs[k].o;
                std::size_t count = 0;
                bool next = k + 1 == n;
                o.on_token = [&, k](std::int32_t) {
                    if (++count != 2 || next) return;
                    start(k + 1), next = true;
                    while (batcher->stats().waiting == 0 && !finished[k + 1])
                        std::this_thread::sleep_for(std::chrono::milliseconds(1));
                };
                got[k] = ctx.generate(reqs[k].prompt, o).tokens;
                finished[k] = true;
                if (!next) start(k + 1);  // ended on its first token
            });
            launched = k + 1;
        };
        start(0);
        for (std::size_t k = 0; k < n; ++k) {
            while (launched <= k) std::this_thread::sleep_for(std::chrono::milliseconds(1));
            threads[k].join();
        }
        for (std::size_t k = 0; k < n; ++k) {
            CAPTURE(k);
            CHECK(got[k] == want[k]);
        }
        // the loop did hold several requests at once
        const auto st = batcher->stats();
        std::size_t widest = 0;
        for (std::size_t i = 0; i < st.sizes.size(); ++i)
            if (st.sizes[i]) widest = i;
        CHECK(widest >= 3);
        CHECK(st.active == 0);
        CHECK(st.waiting == 0);
    }
}

TEST_CASE("more requests than the batch holds wait for room, a beam search wider than the batch has the loop alone, "
          "and a cancelled request ends alone") {
    const auto model = Model::load(kModel);
    auto reqs = requests();
    reqs[2].o.num_beams = 3;  // three rows, more than the batch of two holds
    std::vector<Outcome> want;
    for (const auto& q : reqs) want.push_back(run(model, q));

    auto batcher = std::make_shared<generate::Batcher>(model->network(), 2, std::make_shared<Executor>(1));
    const std::size_t n = reqs.size();
    std::vector<Outcome> got(n);
    std::atomic<bool> cancelled_threw{false};
    std::vector<std::thread> threads;
    for (std::size_t k = 0; k <= n; ++k)
        threads.emplace_back([&, k] {
            if (k == n) {  // gives up at its third token, as a client gone away
                struct Gone {};
                Context ctx(model, {1, nullptr});
                ctx.set_batcher(batcher);
                ctx.set_media(reqs[0].images);
                generate::GenerateOptions o;
                o.max_new_tokens = 50;
                std::size_t count = 0;
                o.on_token = [&](std::int32_t) {
                    if (++count == 3) throw Gone{};
                };
                try {
                    ctx.generate(reqs[0].prompt, o);
                } catch (const Gone&) {
                    cancelled_threw = true;
                }
                return;
            }
            got[k] = run(model, reqs[k], batcher);
        });
    for (auto& t : threads) t.join();
    CHECK(cancelled_threw);
    for (std::size_t k = 0; k < n; ++k) {
        CAPTURE(k);
        CHECK(got[k].g.tokens == want[k].g.tokens);
        CHECK(got[k].g.score == score_of(want[k]));
        CHECK(got[k].steps == want[k].steps);
    }
    // Steps of up to two rows, but for the beam search's: every one of its
    // steps (and only those) ran its three rows and nothing else.
    const auto st = batcher->stats();
    REQUIRE(st.sizes.size() == 4);
    CHECK(want[2].steps > 0);
    CHECK(st.sizes[3] == want[2].steps);
    CHECK(st.active == 0);
    CHECK(st.sequences == 0);
    CHECK(st.waiting == 0);
}

TEST_CASE("beam searches decode in the loop together with greedy and sampling requests and each other") {
    // Every request waits to join until all have read their prompts, so they
    // start decoding together; each then gets generate()'s tokens, score and
    // number of steps alone. These prompts keep the beams' choices clear of
    // near-ties, so the batch's other rounding changes none of their tokens.
    const auto model = Model::load(kModel);
    auto reqs = requests();
    for (auto& q : beam_requests()) reqs.push_back(q);
    std::size_t beam_rows = 0;
    for (const auto& q : reqs)
        if (q.o.num_beams > 1) beam_rows += q.o.num_beams;
    std::vector<Outcome> want;
    for (const auto& q : reqs) want.push_back(run(model, q));

    for (int loop_threads : {1, 2}) {
        CAPTURE(loop_threads);
        auto batcher =
            std::make_shared<generate::Batcher>(model->network(), 64, std::make_shared<Executor>(loop_threads));
        const std::size_t n = reqs.size();
        std::vector<Outcome> got(n);
        std::atomic<std::size_t> returned{0};
        std::vector<std::thread> threads;
        // Request 0's second token (the first the loop chooses) starts the
        // others and holds the loop until each waits to join it (or never
        // needed to: its first token ended it).
        std::atomic<bool> go{false};
        std::size_t count = 0;
        Request first = reqs[0];
        first.o.max_new_tokens = 16, first.o.eos = -1;
        first.o.on_token = [&](std::int32_t) {
            if (++count != 2) return;
            go = true;
            while (batcher->stats().waiting + returned < n - 1)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        };
        Request first_plain = first;
        first_plain.o.on_token = nullptr;
        const Outcome first_alone = run(model, first_plain);
        for (std::size_t k = 0; k < n; ++k)
            threads.emplace_back([&, k] {
                while (k > 0 && !go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
                got[k] = run(model, k == 0 ? first : reqs[k], batcher);
                ++returned;
            });
        for (auto& t : threads) t.join();
        CHECK(got[0].g.tokens == first_alone.g.tokens);
        for (std::size_t k = 1; k < n; ++k) {
            CAPTURE(k);
            CHECK(got[k].g.tokens == want[k].g.tokens);
            CHECK(got[k].g.stopped == want[k].g.stopped);
            CHECK(got[k].g.score == score_of(want[k]));
            CHECK(got[k].steps == want[k].steps);
        }
        // the beams did share steps with the others: some step ran all their rows and request 0's
        const auto st = batcher->stats();
        std::size_t widest = 0;
        for (std::size_t i = 0; i < st.sizes.size(); ++i)
            if (st.sizes[i]) widest = i;
        CHECK(widest >= beam_rows + 1);
        CHECK(st.active == 0);
        CHECK(st.sequences == 0);
        CHECK(st.waiting == 0);
    }
}

TEST_CASE("a beam search whose on_step throws ends alone; the others keep decoding") {
    const auto model = Model::load(kModel);
    auto reqs = beam_requests();
    reqs.push_back(requests()[0]);
    std::vector<Outcome> want;
    for (const auto& q : reqs) want.push_back(run(model, q));

    auto batcher = std::make_shared<generate::Batcher>(model->network(), 16, std::make_shared<Executor>(1));
    struct Gone {};
    std::size_t calls = 0;
    std::atomic<bool> gone_threw{false};
    std::vector<Outcome> got(reqs.size());
    std::vector<std::thread> threads;
    for (std::size_t k = 0; k <= reqs.size(); ++k)
        threads.emplace_back([&, k] {
            if (k < reqs.size()) {
                got[k] = run(model, reqs[k], batcher);
                return;
            }
            Request q = reqs[2];  // a client gone before the search's third step
            q.o.eos = -1, q.o.max_new_tokens = 20;
            q.o.on_step = [&] {
                if (++calls == 3) throw Gone{};
            };
            try {
                run(model, q, batcher);
            } catch (const Gone&) {
                gone_threw = true;
            }
        });
    for (auto& t : threads) t.join();
    CHECK(gone_threw);
    CHECK(calls == 3);
    for (std::size_t k = 0; k < reqs.size(); ++k) {
        CAPTURE(k);
        CHECK(got[k].g.tokens == want[k].g.tokens);
        CHECK(got[k].g.score == score_of(want[k]));
    }
    const auto st = batcher->stats();
    CHECK(st.active == 0);
    CHECK(st.sequences == 0);
    CHECK(st.waiting == 0);
}

TEST_CASE("a conversation's replies through the batcher equal its replies alone") {
    const auto model = Model::load(kModel);
    auto turns = [&](std::shared_ptr<generate::Batcher> b) {
        Conversation conv(model, {1, nullptr});
        if (b) conv.context().set_batcher(b);
        std::vector<std::string> out;
        generate::GenerateOptions o;
        o.max_new_tokens = 12;
        conv.add_user("What is this?", {(kEval / "images" / "0000.png").string()});
        out.push_back(conv.reply(o).text);
        conv.add_user("And this?", {(kEval / "images" / "0001.png").string()});
        out.push_back(conv.reply(o).text);
        return out;
    };
    const auto want = turns(nullptr);
    auto batcher = std::make_shared<generate::Batcher>(model->network(), 4, std::make_shared<Executor>(1));
    std::vector<std::vector<std::string>> got(3);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < got.size(); ++i) threads.emplace_back([&, i] { got[i] = turns(batcher); });
    for (auto& t : threads) t.join();
    for (const auto& g : got) CHECK(g == want);
}

TEST_CASE("a batcher refuses what it cannot run") {
    const auto model = Model::load(kModel);
    CHECK_THROWS_WITH(generate::Batcher(model->network(), 0, std::make_shared<Executor>(1)),
                      doctest::Contains("at least one sequence"));
    generate::Batcher b(model->network(), 2, std::make_shared<Executor>(1));
    const auto other = Model::load(kModel);
    Context ctx(other, {1, nullptr});
    CHECK_THROWS_WITH(ctx.set_batcher(std::shared_ptr<generate::Batcher>(&b, [](auto*) {})),
                      doctest::Contains("another model"));
    generate::Session s(model->network());
    const std::vector<std::int32_t> prompt = model->tokenize("A photo of");
    generate::GenerateOptions o;
    o.max_new_tokens = model->max_positions();
    CHECK_THROWS_WITH(b.generate(s, prompt, o), doctest::Contains("exceeds the model's context"));
    o.max_new_tokens = 0;
    CHECK_THROWS_WITH(b.generate(s, prompt, o), doctest::Contains("max_new_tokens"));
}

}  // namespace test_batcher

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

}  // namespace

TEST_CASE("sessions of the parity fixtures decoded together give the reference's greedy tokens") {
    for (const auto& c : fixture::cases()) {
        CAPTURE(c);
        const auto net = model::load_flamingo(fixture::dir(c));
        const auto g = fixture::json(c, "generate.json");
        const auto pixels = fixture::floats(c, "pixels.npy");
        const auto shape = fixture::shape(c, "pixels.npy");
        const auto ids = fixture::ints(c, "input_ids.npy");
        const std::vector<std::int32_t> prompt(ids.begin(), ids.end());
        // every greedy setting twice, all at once
        std::vector<nlohmann::json> runs;
        for (const auto& e : g["greedy"]) runs.push_back(e), runs.push_back(e);
        generate::Batcher batcher(*net, runs.size(), std::make_shared<Executor>(1));
        std::vector<generate::GenerateResult> got(runs.size());
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < runs.size(); ++i)
            threads.emplace_back([&, i] {
                Executor ex(1);
                Executor::Scope use(ex);
                generate::Session s(*net);
                s.set_media(pixels.data(), shape[0], shape[1]);
                generate::GenerateOptions o;
                o.max_new_tokens = runs[i]["max_new_tokens"];
                o.no_repeat_ngram_size = runs[i]["no_repeat_ngram_size"];
                got[i] = batcher.generate(s, prompt, o);
            });
        for (auto& t : threads) t.join();
        for (std::size_t i = 0; i < runs.size(); ++i) {
            CAPTURE(i);
            CHECK(got[i].tokens == ids_of(runs[i]["tokens"]));
            CHECK(got[i].stopped == runs[i]["ended_on_eoc"].get<bool>());
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

TEST_CASE("more requests than the batch holds wait for room; beam search and a cancelled request go their own way") {
    const auto model = Model::load(kModel);
    auto reqs = requests();
    reqs[2].o.num_beams = 3;  // decoded alone, not in the loop
    std::vector<std::vector<std::int32_t>> want;
    for (const auto& q : reqs) want.push_back(alone(model, q));

    auto batcher = std::make_shared<generate::Batcher>(model->network(), 2, std::make_shared<Executor>(1));
    const std::size_t n = reqs.size();
    std::vector<std::vector<std::int32_t>> got(n);
    std::atomic<bool> cancelled_threw{false};
    std::vector<std::thread> threads;
    for (std::size_t k = 0; k <= n; ++k)
        threads.emplace_back([&, k] {
            Context ctx(model, {1, nullptr});
            ctx.set_batcher(batcher);
            if (k == n) {  // gives up at its third token, as a client gone away
                struct Gone {};
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
            ctx.set_media(reqs[k].images);
            got[k] = ctx.generate(reqs[k].prompt, reqs[k].o).tokens;
        });
    for (auto& t : threads) t.join();
    CHECK(cancelled_threw);
    for (std::size_t k = 0; k < n; ++k) {
        CAPTURE(k);
        CHECK(got[k] == want[k]);
    }
    const auto st = batcher->stats();
    CHECK(st.active == 0);
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

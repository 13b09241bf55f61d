// One model, many contexts: contexts running at the same time on one shared
// model, from several threads, each with its own executor or sharing one, give
// exactly the answers they give one at a time. Run under ThreadSanitizer in CI.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/flamingo.hpp>

namespace test_concurrency {  // own names: the area compiles as one translation unit

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
const fs::path kEval = fs::path(FLAMINGO_TEST_DATA) / "world" / "eval";

struct Request {
    std::string prompt;
    std::vector<std::string> images;
    std::size_t beams = 1;
};

struct Answer {
    std::vector<std::int32_t> tokens;
    std::vector<double> scores;
    std::vector<float> last_logits;
    bool operator==(const Answer&) const = default;
};

// A few prompts of the evaluation set, 1-4 shots, greedy and beam search.
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
            q.beams = i % 3 == 2 ? 3 : 1;
            out.push_back(q);
        }
    }
    return out;
}

// generate, score and logits for one request on a context.
Answer answer(Context& ctx, const Request& q) {
    Answer a;
    ctx.set_media(q.images);
    generate::GenerateOptions o;
    o.max_new_tokens = 8;
    o.num_beams = q.beams;
    a.tokens = ctx.generate(q.prompt, o).tokens;
    for (const auto& s : ctx.score(q.prompt, {" red", " two", " A photo"})) a.scores.push_back(s.score.logprob);
    const auto lg = ctx.logits(q.prompt);
    a.last_logits.assign(lg[lg.extent(0) - 1].data(), lg[lg.extent(0) - 1].data() + lg.extent(1));
    return a;
}

}  // namespace

TEST_CASE("contexts on one model in several threads give the single-threaded answers") {
    const auto model = Model::load(kModel);
    const auto reqs = requests();
    REQUIRE(reqs.size() >= 6);

    // The same thread count everywhere: a kernel may split its arithmetic by
    // thread count (decoding attention does), so only equal counts promise
    // equal bits.
    std::vector<Answer> want;
    {
        Context ctx(model, {2, nullptr});
        for (const auto& q : reqs) want.push_back(answer(ctx, q));
    }

    // Four threads, each with its own context; two with their own 2-thread
    // executor, two sharing one. Each thread runs every request, starting at a
    // different one, so that different requests overlap in time.
    const int n_threads = 4;
    auto shared = std::make_shared<Executor>(2);
    std::vector<std::vector<Answer>> got(n_threads, std::vector<Answer>(reqs.size()));
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t)
        threads.emplace_back([&, t] {
            Context ctx(model, t < 2 ? ContextOptions{2, nullptr} : ContextOptions{0, shared});
            for (std::size_t k = 0; k < reqs.size(); ++k) {
                const std::size_t i = (k + std::size_t(t) * 3) % reqs.size();
                got[std::size_t(t)][i] = answer(ctx, reqs[i]);
            }
        });
    for (auto& th : threads) th.join();

    for (int t = 0; t < n_threads; ++t)
        for (std::size_t i = 0; i < reqs.size(); ++i) {
            CAPTURE(t);
            CAPTURE(i);
            CHECK(got[std::size_t(t)][i] == want[i]);
        }
}

TEST_CASE("a context's executor can be replaced between requests") {
    const auto model = Model::load(kModel);
    const auto reqs = requests();
    Context ctx(model, {1, nullptr});
    const Answer one = answer(ctx, reqs[1]);
    ctx.set_executor(std::make_shared<Executor>(3));
    CHECK(ctx.executor().threads() == 3);
    CHECK(answer(ctx, reqs[1]).tokens == one.tokens);
}

}  // namespace test_concurrency

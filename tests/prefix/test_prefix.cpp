// The prefix cache: answers with it are those of a fresh context without it
// (greedy tokens, beam tokens and scores, candidate log-likelihoods), shared
// few-shot prefixes are reused, different media are not, the budget holds by
// evicting the least recently used. (Contexts in several threads sharing one
// cache: tests/concurrency, which runs under ThreadSanitizer too.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <flamingo/chat.hpp>
#include <flamingo/io/npy.hpp>
#include <nlohmann/json.hpp>

#include "prefix_util.hpp"

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

using namespace prefix_test;

std::size_t count_tokens(const Model& m, const std::string& text) { return m.tokenize(text).size(); }

}  // namespace

TEST_CASE("a shared few-shot prefix is reused and the answers are a fresh context's") {
    const auto model = Model::load(kModel);
    auto cache = std::make_shared<PrefixCache>(std::size_t(64) << 20);
    Context ctx(model, {1, nullptr}, cache);
    const std::vector<Request> reqs = {query("0000.png", "A photo of"), query("0005.png", "A photo of"),
                                       query("0010.png", ""), query("0005.png", "A photo of four")};
    // the prefix every query shares: the examples, up to the query's <image>
    const std::size_t shots = count_tokens(*model, kShots);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
        CAPTURE(i);
        const auto before = ctx.stats();
        const Answer got = answer(ctx, reqs[i]);
        const auto after = ctx.stats();
        expect_same(got, fresh(model, reqs[i]));
        const std::size_t T = count_tokens(*model, reqs[i].prompt);
        // generate twice and score once: the second and third reuse all but the last token
        CHECK(after.reused_tokens - before.reused_tokens >= (i == 0 ? 2 : 3) * std::min(shots, T - 1));
        CHECK(after.reused_tokens - before.reused_tokens + after.read_tokens - before.read_tokens >= 3 * T);
        // the examples' images are encoded once, by the first request
        CHECK(after.media_encoded - before.media_encoded == (i == 0 ? 4 : i == 3 ? 0 : 1));
    }
    const auto s = cache->stats();
    CHECK(s.hits >= 3 * reqs.size() - 1);
    CHECK(s.tokens_reused > 0);
    CHECK(s.bytes > 0);
    CHECK(s.bytes <= s.budget);
}

TEST_CASE("different images with the same text are not reused") {
    const auto model = Model::load(kModel);
    auto cache = std::make_shared<PrefixCache>(std::size_t(64) << 20);
    Context ctx(model, {1, nullptr}, cache);
    const std::string prompt = "<image>A photo of three striped yellow circles.<|endofchunk|><image>A photo of";
    generate::GenerateOptions o;
    o.max_new_tokens = 6;
    ctx.set_media({image("0001.png"), image("0000.png")});
    ctx.generate(prompt, o);

    // another first image: nothing of the prompt is valid
    Request other{prompt, {image("0002.png"), image("0000.png")}};
    auto before = ctx.stats();
    ctx.set_media(other.images);
    const auto g = ctx.generate(prompt, o);
    CHECK(ctx.stats().reused_tokens == before.reused_tokens);
    Context plain(model, {1, nullptr});
    plain.set_media(other.images);
    CHECK(g.tokens == plain.generate(prompt, o).tokens);

    // the same first image, another second: reused up to the second <image>
    const std::vector<std::string> second = {image("0001.png"), image("0005.png")};
    before = ctx.stats();
    ctx.set_media(second);
    const auto g2 = ctx.generate(prompt, o);
    const std::size_t upto = count_tokens(*model, "<image>A photo of three striped yellow circles.<|endofchunk|>");
    CHECK(ctx.stats().reused_tokens - before.reused_tokens == upto);
    plain.set_media(second);
    CHECK(g2.tokens == plain.generate(prompt, o).tokens);
}

TEST_CASE("the cache keeps to its budget, evicting the least recently used") {
    const auto model = Model::load(kModel);
    generate::GenerateOptions o;
    o.max_new_tokens = 3;
    // three prompts that share no first token
    const std::string a = "Three striped yellow circles.", b = "Four orange crosses.", c = "One red circle and more.";
    // each prompt's entry alone, measured
    auto bytes_of = [&](const std::string& p) {
        auto probe = std::make_shared<PrefixCache>(std::size_t(16) << 20);
        Context ctx(model, {1, nullptr}, probe);
        ctx.generate(p, o);
        return probe->stats().bytes;
    };
    const std::size_t ba = bytes_of(a), bb = bytes_of(b), bc = bytes_of(c);
    REQUIRE(ba > 0);
    const std::size_t budget = ba + bb + bc - 1;  // room for two, not three
    auto cache = std::make_shared<PrefixCache>(budget);
    Context ctx(model, {1, nullptr}, cache);
    auto reused = [&](const std::string& p) {
        const auto before = ctx.stats().reused_tokens;
        const auto g = ctx.generate(p, o);
        Context plain(model, {1, nullptr});
        CHECK(g.tokens == plain.generate(p, o).tokens);
        return ctx.stats().reused_tokens - before;
    };
    CHECK(reused(a) == 0);
    CHECK(reused(b) == 0);
    CHECK(reused(a) == count_tokens(*model, a) - 1);  // a is now the most recently used
    CHECK(reused(c) == 0);                            // c comes in, b (least recently used) goes
    auto s = cache->stats();
    CHECK(s.evictions == 1);
    CHECK(s.prefixes == 2);
    CHECK(s.bytes == ba + bc);
    CHECK(s.bytes <= budget);
    CHECK(reused(a) == count_tokens(*model, a) - 1);
    CHECK(reused(c) == count_tokens(*model, c) - 1);
    CHECK(reused(b) == 0);

    // an entry larger than the whole budget is not kept
    auto tiny = std::make_shared<PrefixCache>(ba / 2);
    Context small(model, {1, nullptr}, tiny);
    small.generate(a, o);
    CHECK(tiny->stats().bytes == 0);
    CHECK(tiny->stats().prefixes == 0);
}

TEST_CASE("prompts that begin alike share the memory of their common positions, which outlives its first holder") {
    const auto model = Model::load(kModel);
    generate::GenerateOptions o;
    o.max_new_tokens = 3;
    const std::string shared =
        "A photo of three striped yellow circles. A photo of four orange crosses. A photo of four orange circles. A photo of";
    const std::string a = shared + " two", b = shared + " one red", c = shared + " five";
    // a's leading tokens that b or c have too
    auto alike = [&](const std::string& x, const std::string& y) {
        const auto tx = model->tokenize(x), ty = model->tokenize(y);
        return std::size_t(std::mismatch(tx.begin(), tx.end(), ty.begin(), ty.end()).first - tx.begin());
    };
    const std::size_t common = std::max(alike(a, b), alike(a, c));
    REQUIRE(common >= 20);  // longer than a block of keys/values (16 positions): there is something to share
    // bytes of a cache given these prompts in turn, each by a context of its own, gone before the next comes
    auto bytes_after = [&](std::vector<std::string> prompts) {
        auto cache = std::make_shared<PrefixCache>(std::size_t(16) << 20);
        for (const auto& p : prompts) {
            Context ctx(model, {1, nullptr}, cache);
            ctx.generate(p, o);
        }
        return cache->stats().bytes;
    };
    const std::size_t ab = bytes_after({a, b}), abc = bytes_after({a, b, c});
    CHECK(ab < bytes_after({a}) + bytes_after({b}));  // b took a's blocks of the common positions

    // a budget one byte short of all three: c comes in, a (least recently used) goes, and the
    // blocks b shares with it stay and count as if a had never been
    auto cache = std::make_shared<PrefixCache>(abc - 1);
    for (const auto& p : {a, b, c}) {
        Context ctx(model, {1, nullptr}, cache);
        ctx.generate(p, o);
    }
    const auto s = cache->stats();
    CHECK(s.evictions == 1);
    CHECK(s.prefixes == 2);
    CHECK(s.bytes == bytes_after({b, c}));

    // b and c are whole, a's beginning is still there (in b's blocks); answers are a fresh context's
    Context ctx(model, {1, nullptr}, cache);
    for (const auto& [p, reused] : {std::pair{b, count_tokens(*model, b) - 1}, {c, count_tokens(*model, c) - 1},
                                    {a, common}}) {
        CAPTURE(p);
        const auto before = ctx.stats().reused_tokens;
        const auto g = ctx.generate(p, o);
        CHECK(ctx.stats().reused_tokens - before == reused);
        Context plain(model, {1, nullptr});
        CHECK(g.tokens == plain.generate(p, o).tokens);
    }
}

TEST_CASE("text-only prompts and an extended prompt reuse the whole of an earlier one") {
    const auto model = Model::load(kModel);
    auto cache = std::make_shared<PrefixCache>(std::size_t(16) << 20);
    Context ctx(model, {1, nullptr}, cache);
    generate::GenerateOptions o;
    o.max_new_tokens = 5;
    const std::string p1 = "A photo of three striped yellow circles.", p2 = p1 + " A photo of four";
    ctx.generate(p1, o);
    const auto before = ctx.stats();
    const auto g = ctx.generate(p2, o);
    CHECK(ctx.stats().reused_tokens - before.reused_tokens == count_tokens(*model, p1));
    Context plain(model, {1, nullptr});
    CHECK(g.tokens == plain.generate(p2, o).tokens);
}

TEST_CASE("a cache serves one model") {
    const auto a = Model::load(kModel), b = Model::load(kModel);
    auto cache = std::make_shared<PrefixCache>(1 << 20);
    Context ca(a, {1, nullptr}, cache);
    CHECK_THROWS_WITH_AS(Context(b, {1, nullptr}, cache), "this prefix cache already serves another model", Error);
}

TEST_CASE("fixture models: answers with the cache are a fresh context's") {
    for (const char* c : {"llama", "all_media", "mpt", "video"}) {
        CAPTURE(c);
        const fs::path dir = fs::path(FLAMINGO_TEST_DATA) / "model" / c;
        const auto model = Model::load(dir);
        std::ifstream in(dir / "expected" / "prompt.json");
        const std::string prompt = nlohmann::json::parse(in).at("text");
        const auto npy = io::read_npy(dir / "expected" / "pixels.npy");
        const auto data = npy.as_float();
        Pixels px(npy.shape[0], npy.shape[1], npy.shape[2], npy.shape[3], npy.shape[4]);
        std::copy(data.begin(), data.end(), px.data());
        // the last medium replaced by the first: the same text, other media
        Pixels other = px;
        const std::size_t per = px.size() / px.extent(0);
        std::copy_n(px.data(), per, other.data() + (px.extent(0) - 1) * per);

        auto run = [&](Context& ctx, const Pixels& media, const std::string& p) {
            ctx.set_media(media);
            Answer a;
            generate::GenerateOptions o;
            o.max_new_tokens = 6;
            a.greedy = ctx.generate(p, o).tokens;
            o.num_beams = 2;
            const auto b = ctx.generate(p, o);
            a.beam = b.tokens, a.beam_score = b.score;
            for (const auto& s : ctx.score(p, {" a cat", " the"})) a.logprobs.push_back(s.score.logprob);
            return a;
        };
        auto cache = std::make_shared<PrefixCache>(std::size_t(64) << 20);
        Context ctx(model, {1, nullptr}, cache);
        for (const std::string& p : {prompt, prompt + " a", prompt}) {
            for (const Pixels* m : {&px, &other}) {
                CAPTURE(p);
                Context plain(model, {1, nullptr});
                expect_same(run(ctx, *m, p), run(plain, *m, p));
            }
        }
        CHECK(ctx.stats().reused_tokens > 0);
        // all_media's text before the first image attends to every medium: other media, no reuse of it
        {
            auto fresh_cache = std::make_shared<PrefixCache>(std::size_t(64) << 20);
            Context c2(model, {1, nullptr}, fresh_cache);
            generate::GenerateOptions o;
            o.max_new_tokens = 2;
            c2.set_media(px);
            c2.generate(prompt, o);
            const auto before = c2.stats();
            c2.set_media(other);
            c2.generate(prompt, o);
            const std::size_t reused = c2.stats().reused_tokens - before.reused_tokens;
            if (std::string(c) == "all_media")
                CHECK(reused == 0);
            else  // up to the last <image>
                CHECK(reused == model->tokenize(prompt.substr(0, prompt.rfind("<image>"))).size());
        }
    }
}

TEST_CASE("a conversation continued in another context reuses its earlier turns through the shared cache") {
    const auto model = Model::load(kModel);
    auto cache = std::make_shared<PrefixCache>(std::size_t(64) << 20);
    const fs::path examples = kModel / "examples";
    const std::string red = (examples / "two_red_circles.png").string(), star = (examples / "one_striped_blue_star.png").string();
    generate::GenerateOptions o;
    o.max_new_tokens = 8;

    // the first request: one turn
    Conversation first(model, {1, nullptr});
    first.context().set_prefix_cache(cache);
    first.add_user("What is this?", {red});
    const std::size_t T1 = model->tokenize(first.prompt()).size();
    const std::string reply = first.reply(o).text;

    // the next request, on another context: the history sent again, and a new turn
    Conversation later(model, {1, nullptr});
    later.context().set_prefix_cache(cache);
    later.add_user("What is this?", {red});
    later.add_assistant(first.messages().back().content);
    later.add_user("And this one?", {star});
    const std::string prompt = later.prompt();
    const auto before = later.stats();
    const Generation got = later.reply(o);
    const auto after = later.stats();

    // the first request's whole prompt was reused (on this template its last
    // token does not merge with the reply's first), its image not encoded again
    CHECK(after.reused_tokens - before.reused_tokens == T1);
    CHECK(after.media_encoded - before.media_encoded == 1);
    CHECK(after.media_reused - before.media_reused == 1);

    // a fresh context without a cache, on the whole prompt and both images
    Context plain(model, {1, nullptr});
    generate::GenerateOptions po = o;
    for (const std::string& s : later.chat_template().stop) po.stop_tokens.push_back(model->tokenizer().encode(s, false).at(0));
    const Generation want = plain.generate(prompt, {red, star}, po);
    CHECK(got.tokens == want.tokens);
    CHECK(!reply.empty());
}

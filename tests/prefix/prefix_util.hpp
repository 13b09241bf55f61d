#pragma once
// Shared by the prefix cache's tests (tests/prefix, tests/concurrency): few-shot
// requests on the bundled model, their answers, and how closely answers with
// the cache must equal those without.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <flamingo/flamingo.hpp>

namespace prefix_test {

using namespace flamingo;
namespace fs = std::filesystem;

inline const fs::path kModel = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
inline const fs::path kImages = fs::path(FLAMINGO_TEST_DATA) / "world" / "eval" / "images";

inline std::string image(const char* name) { return (kImages / name).string(); }

// Three captioned examples (three images) before every query.
inline const std::string kShots =
    "<image>A photo of three striped yellow circles.<|endofchunk|><image>A photo of four orange crosses.<|endofchunk|>"
    "<image>A photo of four orange circles.<|endofchunk|>";
inline const std::vector<std::string> kShotImages = {image("0001.png"), image("0002.png"), image("0003.png")};

struct Request {
    std::string prompt;
    std::vector<std::string> images;
};

// The few-shot prompt with a query: its image and text.
inline Request query(const char* img, const std::string& text) {
    Request r{kShots + "<image>" + text, kShotImages};
    r.images.push_back(image(img));
    return r;
}

struct Answer {
    std::vector<std::int32_t> greedy, beam;
    double beam_score = 0;
    std::vector<double> logprobs;
};

inline Answer answer(Context& ctx, const Request& q) {
    Answer a;
    ctx.set_media(q.images);
    generate::GenerateOptions o;
    o.max_new_tokens = 8;
    a.greedy = ctx.generate(q.prompt, o).tokens;
    o.num_beams = 3;
    const auto b = ctx.generate(q.prompt, o);
    a.beam = b.tokens, a.beam_score = b.score;
    for (const auto& s : ctx.score(q.prompt, {" red", " two circles", "A photo of"})) a.logprobs.push_back(s.score.logprob);
    return a;
}

// Reading a prompt's rest after a reused prefix multiplies fewer rows at a
// time than reading it whole, and the GEMM takes another path for few rows
// (kernels/gemm.hpp: kSmallM), which adds in another order: scores agree to
// float rounding, not to the bit (the largest difference seen: 4.3e-6 on a
// log-likelihood of about -16), within the tolerances of the parity tests
// (tests/generate). Tokens must be the same. (Reading at least 9 rows after
// the prefix, past the small-M path, still differs in the last bits: the GEMM
// panels and attention blocks group rows differently too.)
inline void expect_same(const Answer& got, const Answer& want) {
    CHECK(got.greedy == want.greedy);
    CHECK(got.beam == want.beam);
    CHECK(std::fabs(got.beam_score - want.beam_score) <= 1e-5 * (1 + std::fabs(want.beam_score)));
    REQUIRE(got.logprobs.size() == want.logprobs.size());
    for (std::size_t i = 0; i < want.logprobs.size(); ++i)
        CHECK(std::fabs(got.logprobs[i] - want.logprobs[i]) <= 1e-4 * (1 + std::fabs(want.logprobs[i])));
}

// What a fresh context without a cache answers.
inline Answer fresh(const std::shared_ptr<const Model>& model, const Request& q, int threads = 1) {
    Context ctx(model, {threads, nullptr});
    return answer(ctx, q);
}

}  // namespace prefix_test

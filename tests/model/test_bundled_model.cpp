// The bundled model (models/shapes-flamingo) against the PyTorch reference on
// a subset of the world's evaluation prompts (tests/data/world/agreement.json,
// written by tools/world/evaluate.py --agreement): the same prompt tokens, the
// same greedy continuation token for token, the same candidate log-likelihoods,
// hence the same judgement of every prompt.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include <flamingo/flamingo.hpp>

namespace test_bundled_model {  // own names: the area compiles as one translation unit

namespace fs = std::filesystem;
using namespace flamingo;

namespace {
std::string strip(std::string s) {
    s.erase(0, s.find_first_not_of(" \t\n"));
    s.erase(s.find_last_not_of(" \t\n") + 1);
    return s;
}
}  // namespace

TEST_CASE("the bundled model agrees with the PyTorch reference on evaluation prompts") {
    const fs::path model = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    const fs::path world = fs::path(FLAMINGO_TEST_DATA) / "world";
    std::ifstream in(world / "agreement.json");
    REQUIRE(in);
    const auto fixture = nlohmann::json::parse(in);
    REQUIRE(fixture.at("cases").size() >= 8);

    const auto m = Model::load(model);
    Context p(m);
    std::size_t generated = 0, scored = 0;
    for (const auto& c : fixture.at("cases")) {
        const std::string id = c.at("id"), prompt = c.at("prompt"), answer = c.at("answer");
        INFO("case ", id);
        CHECK(m->tokenize(prompt) == c.at("prompt_ids").get<std::vector<std::int32_t>>());
        std::vector<std::string> images;
        for (const auto& im : c.at("images")) images.push_back((world / "eval" / "images" / im.get<std::string>()).string());
        p.set_media(images);
        bool correct = false;
        if (c.at("judge") == "score") {
            const auto cands = c.at("candidates").get<std::vector<std::string>>();
            const auto ref = c.at("logprobs").get<std::vector<double>>();
            const auto s = p.score(prompt, cands);
            REQUIRE(s.size() == ref.size());
            std::size_t best = 0;
            for (std::size_t i = 0; i < s.size(); ++i) {
                INFO("candidate ", cands[i]);
                CHECK(s[i].score.logprob == doctest::Approx(ref[i]).epsilon(1e-4).scale(10));  // 1e-3 absolute
                if (s[i].score.logprob > s[best].score.logprob) best = i;
            }
            correct = cands[best] == answer;
            ++scored;
        } else {
            generate::GenerateOptions o;
            o.max_new_tokens = c.at("max_new_tokens");
            const auto g = p.generate(prompt, o);
            CHECK(g.tokens == c.at("generated_ids").get<std::vector<std::int32_t>>());
            CHECK(strip(g.text) == strip(c.at("generated_text").get<std::string>()));
            correct = strip(g.text) == strip(answer);
            ++generated;
        }
        CHECK(correct == c.at("correct").get<bool>());
    }
    CHECK(generated > 0);
    CHECK(scored > 0);
}

}  // namespace test_bundled_model

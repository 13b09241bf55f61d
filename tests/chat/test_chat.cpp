// Conversations: every turn's answer equals what a fresh context gives for the
// whole conversation's prompt and all its images (the independent check that
// reading turn by turn is right), and a turn reads only its new tokens and
// encodes only its new images.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/chat.hpp>

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

const fs::path kModel = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
const fs::path kImages = kModel / "examples";

std::string image(const char* name) { return (kImages / name).string(); }

struct Turn {
    std::string text;
    std::vector<std::string> images;
    std::size_t beams = 1;
};

// What a fresh context answers for the conversation's current prompt.
Generation fresh(const std::shared_ptr<const Model>& model, const Conversation& conv,
                 const std::vector<std::string>& images, generate::GenerateOptions opt) {
    Context ctx(model, {1, nullptr});
    for (const std::string& s : conv.chat_template().stop)
        opt.stop_tokens.push_back(model->tokenizer().encode(s, false).at(0));
    return ctx.generate(conv.prompt(), images, opt);
}

// Runs the turns, checking each against a fresh context; returns the answers.
// `earlier`: the files of the images the conversation already has.
std::vector<std::string> converse(const std::shared_ptr<const Model>& model, Conversation& conv,
                                  const std::vector<Turn>& turns, bool expect_incremental,
                                  std::vector<std::string> earlier = {}, std::size_t max_new_tokens = 12) {
    std::vector<std::string> all_images = std::move(earlier), answers;
    REQUIRE(conv.num_images() == all_images.size());
    std::size_t last_reply = 0;  // tokens the previous reply generated
    for (std::size_t i = 0; i < turns.size(); ++i) {
        CAPTURE(i);
        const Turn& t = turns[i];
        conv.add_user(t.text, t.images);
        all_images.insert(all_images.end(), t.images.begin(), t.images.end());
        generate::GenerateOptions opt;
        opt.max_new_tokens = max_new_tokens;
        opt.num_beams = t.beams;
        const auto expected = fresh(model, conv, all_images, opt);

        const auto ids = model->tokenize(conv.prompt());
        const std::vector<std::int32_t> cached = conv.cached_tokens();
        const auto before = conv.stats();
        const auto got = conv.reply(opt);
        const auto after = conv.stats();
        CHECK(got.tokens == expected.tokens);
        CHECK(got.text == expected.text);
        CHECK(got.stopped == expected.stopped);
        CHECK(after.media_encoded - before.media_encoded == t.images.size());
        CHECK(conv.context().num_media() == all_images.size());
        if (expect_incremental) {
            // The cache holds a prefix of this prompt up to the last reply at least
            // (its generated tokens need not be how its text tokenizes, e.g. " ar"
            // " are" where the text reads ":" "ar"): only the rest is read.
            REQUIRE(cached.size() < ids.size());
            std::size_t common = 0;
            while (common < cached.size() && cached[common] == ids[common]) ++common;
            CHECK(common + last_reply >= cached.size());
            CHECK(after.read_tokens - before.read_tokens == ids.size() - common);
        }
        last_reply = got.tokens.size();
        answers.push_back(got.text);
    }
    return answers;
}

// A copy of a model directory whose config.json is changed by `edit`.
fs::path model_copy(const fs::path& src, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dir = fs::temp_directory_path() / ("flamingo_chat_test_" + std::to_string(::getpid())) / name;
    fs::create_directories(dir);
    for (const char* f : {"model.safetensors", "tokenizer.json"}) {
        fs::remove(dir / f);
        fs::create_symlink(fs::absolute(src / f), dir / f);
    }
    std::ifstream in(src / "config.json");
    nlohmann::json c = nlohmann::json::parse(in);
    edit(c);
    std::ofstream(dir / "config.json") << c.dump(2);
    return dir;
}

}  // namespace

TEST_CASE("chat: each turn equals a fresh context on the whole conversation, reading only what is new") {
    auto model = Model::load(kModel);
    Conversation conv(model, {1, nullptr});
    // The bundled model ships the template its conversations were trained in: the default one.
    const model::ChatTemplate& t = model->config().chat_template;
    CHECK(t.from_config);
    const model::ChatTemplate d;
    CHECK((t.system == d.system && t.user == d.user && t.assistant == d.assistant &&
           t.generation_prompt == d.generation_prompt && t.stop == d.stop));
    const std::vector<Turn> turns = {
        {"A photo of", {image("two_red_circles.png")}},
        {"Question: How many shapes are there? Answer:", {image("four_dotted_orange_squares.png")}},
        {"What colour are the shapes?", {}},
        {"A photo of", {image("three_green_triangles.png"), image("yellow_diamond.png")}, 2},  // beam search
        {"And this one?", {image("one_striped_blue_star.png")}},                              // after beams
    };
    const auto answers = converse(model, conv, turns, true);
    CHECK(conv.messages().size() == 2 * turns.size());
    CHECK(conv.messages()[1].role == "assistant");
    CHECK(conv.num_images() == 5);

    SUBCASE("reset starts over: the first turn again, read whole") {
        conv.reset();
        CHECK(conv.messages().empty());
        CHECK(conv.context().num_media() == 0);
        const auto again = converse(model, conv, {turns[0]}, true);
        CHECK(again[0] == answers[0]);
    }
    SUBCASE("a replaced message with another image is not taken from the cache") {
        conv.pop();  // the last reply
        conv.pop();  // the last question, and its image
        CHECK(conv.num_images() == 4);
        converse(model, conv, {{"And this one?", {image("purple_heart_a.png")}}}, false,
                 {turns[0].images[0], turns[1].images[0], turns[3].images[0], turns[3].images[1]});
    }
    SUBCASE("a system message first") {
        Conversation c2(model, {1, nullptr});
        c2.add_system("You describe pictures.");
        converse(model, c2, {turns[0], turns[2]}, true);
    }
}

TEST_CASE("chat: text before the first image, without only_attend_immediate_media, is read again for new images") {
    // In this mode text before the first image attends to every image of the
    // prompt, so a new image changes what came before it.
    const fs::path src = fs::path(FLAMINGO_TEST_DATA) / "model" / "all_media";
    auto model = Model::load(src);
    REQUIRE_FALSE(model->config().cross_attn.only_attend_immediate_media);
    Conversation conv(model, {1, nullptr});
    const fs::path im = src / "expected" / "images";
    converse(model, conv,
             {{"Before any image there is text.", {}},
              {"Output:", {(im / "media0_frame0.png").string()}},
              {"Output:", {(im / "media1_frame0.png").string(), (im / "media2_frame0.png").string()}}},
             false, {}, 4);
}

TEST_CASE("chat: a template's stop strings end the reply") {
    const fs::path dir = model_copy(kModel, "dot_stop", [](nlohmann::json& c) {
        c["chat_template"] = {{"user", "{content}"}, {"assistant", " {content}.<|endofchunk|>"},
                              {"generation_prompt", ""}, {"stop", {"."}}};
    });
    auto model = Model::load(dir);
    Conversation conv(model, {1, nullptr});
    const std::int32_t dot = model->tokenizer().encode(".", false).at(0);
    conv.add_user("A photo of", {image("three_green_triangles.png")});
    generate::GenerateOptions opt;
    opt.max_new_tokens = 16;
    const auto first = conv.reply(opt);
    CHECK(first.stopped);
    CHECK(first.tokens.back() == dot);
    CHECK(first.text.find('.') == std::string::npos);
    CHECK(conv.prompt() == "<image>A photo of" + std::string(" ") + conv.messages()[1].content + ".<|endofchunk|>");
    // the next turn still equals a fresh context
    converse(model, conv, {{"A photo of", {image("two_red_circles.png")}}}, false, {image("three_green_triangles.png")});
    // beam search stops at the template's stop token too, and keeps it last
    conv.add_user("A photo of", {image("four_dotted_orange_squares.png")});
    opt.num_beams = 3;
    const auto beams = conv.reply(opt);
    CHECK(beams.stopped);
    CHECK(beams.tokens.back() == dot);
    CHECK(beams.text.find('.') == std::string::npos);

    const fs::path bad = model_copy(kModel, "long_stop", [](nlohmann::json& c) {
        c["chat_template"] = {{"stop", {"A photo of"}}};
    });
    auto m2 = Model::load(bad);
    try {
        Conversation c(m2, {1, nullptr});
        FAIL("a stop string of several tokens was accepted");
    } catch (const Error& e) {
        CHECK(e.kind() == ErrorKind::Config);
        CHECK(std::string(e.what()).find("chat_template.stop: \"A photo of\" is") != std::string::npos);
    }
}

TEST_CASE("chat: a bad image adds nothing; a mismatched <image> in the text fails the turn, not the conversation") {
    auto model = Model::load(kModel);
    Conversation conv(model, {1, nullptr});
    CHECK_THROWS_AS(conv.add_user("A photo of", {(kImages / "missing.png").string()}), Error);
    CHECK(conv.messages().empty());
    conv.add_user("<image>A photo of", {image("two_red_circles.png")});  // two <image>, one image
    CHECK_THROWS_AS(conv.reply(), Error);
    conv.pop();
    converse(model, conv, {{"A photo of", {image("two_red_circles.png")}}}, false);
}

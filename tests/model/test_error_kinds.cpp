// Errors carry a category a caller can act on without parsing the message.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <flamingo/flamingo.hpp>

namespace test_error_kinds {  // own names: the area compiles as one translation unit

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

const fs::path kCase = fs::path(FLAMINGO_TEST_DATA) / "model" / "llama";

// The category of the error `f` throws (fails the test when it throws none).
template <class F>
ErrorKind kind_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        INFO(e.what());
        return e.kind();
    }
    FAIL("no error thrown");
    return ErrorKind::Input;
}

// A copy of the fixture with `file`'s first `from` replaced by `to`.
fs::path patched(const std::string& file, const std::string& from, const std::string& to) {
    const fs::path d = fs::temp_directory_path() / ("flamingo_kinds_" + std::to_string(std::hash<std::string>{}(file + from)));
    fs::remove_all(d);
    fs::create_directories(d);
    for (const char* f : {"config.json", "tokenizer.json", "model.safetensors"}) fs::copy_file(kCase / f, d / f);
    std::ifstream in(d / file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    in.close();
    std::ofstream(d / file, std::ios::binary | std::ios::trunc) << s;
    return d;
}

}  // namespace

TEST_CASE("error categories") {
    CHECK(kind_of([] { Model::load("/nonexistent/model"); }) == ErrorKind::File);
    CHECK(kind_of([] { Model::load(patched("config.json", "\"llama\"", "\"llamo\"")); }) == ErrorKind::Config);
    CHECK(kind_of([] { Model::load(patched("config.json", "{", "[")); }) == ErrorKind::Format);
    CHECK(kind_of([] { Model::load(patched("tokenizer.json", "\"BPE\"", "\"XYZ\"")); }) == ErrorKind::Format);
    CHECK(kind_of([] { Model::load(patched("model.safetensors", "\"F32\"", "\"Q32\"")); }) == ErrorKind::Format);
    CHECK(kind_of([] {
              Model::load(patched("model.safetensors", "vision_encoder.ln_post.weight", "vision_encoder.ln_post.weighX"));
          }) == ErrorKind::Shape);

    const auto m = Model::load(kCase);
    Context ctx(m, {1, nullptr});
    CHECK(kind_of([&] { ctx.generate(""); }) == ErrorKind::Input);
    CHECK(kind_of([&] { ctx.generate("<image>x"); }) == ErrorKind::Input);  // no image given
    CHECK(kind_of([&] { ctx.generate(std::string(2000, 'x')); }) == ErrorKind::Limit);
    CHECK(kind_of([&] { ctx.set_media({"/nonexistent.png"}); }) == ErrorKind::File);
    CHECK(kind_of([&] { ctx.set_media({(kCase / "config.json").string()}); }) == ErrorKind::Format);
    CHECK(kind_of([&] { ctx.set_media({(kCase / "expected" / "images" / "media0_frame0.png").string()}, 2); }) ==
          ErrorKind::Input);  // one frame where two are asked for
}

}  // namespace test_error_kinds

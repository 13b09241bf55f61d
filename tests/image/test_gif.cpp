// Animated GIF frames against Pillow 9.4's seek(k) + convert("RGB"), frame
// sampling, and the frame memory limit.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <sstream>
#include <string>

#include "flamingo/io/image.hpp"
#include "image_fixtures.hpp"

using namespace image_test;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const flamingo::Error& e) {
        return e.what();
    }
    return "(no error)";
}

// The one error for a medium with fewer frames than asked for:
// "'x.gif' has 3 frames, fewer than the 8 asked for".
std::string too_few(const std::filesystem::path& medium, std::size_t available, std::size_t wanted) {
    std::ostringstream s;
    s << "'" << medium.string() << "' has " << available << (available == 1 ? " frame" : " frames")
      << ", fewer than the " << wanted << " asked for";
    return s.str();
}

}  // namespace

TEST_CASE("animated GIF frames are composited as Pillow does") {
    const auto& cases = manifest().at("gif");
    REQUIRE(cases.size() >= 8);
    for (const auto& c : cases) {
        const std::string file = c.at("file");
        CAPTURE(file);
        const auto frames = flamingo::load_frames(data_dir() / file);
        REQUIRE(frames.size() == c.at("frames").get<std::size_t>());
        const auto expected = read_bytes(data_dir() / c.at("expected").get<std::string>());
        const std::size_t frame_bytes = expected.size() / frames.size();
        for (std::size_t k = 0; k < frames.size(); ++k) {
            CAPTURE(k);
            REQUIRE(frames[k].width == c.at("width").get<int>());
            REQUIRE(frames[k].height == c.at("height").get<int>());
            const std::vector<std::uint8_t> want(expected.begin() + k * frame_bytes,
                                                 expected.begin() + (k + 1) * frame_bytes);
            const long at = first_difference(frames[k].rgb, want);
            CAPTURE(at);
            CHECK(at == -1);
        }
        CHECK(flamingo::load_image(data_dir() / file).rgb == frames[0].rgb);

        // As a medium: one frame is the first; more are sampled, keeping exactly
        // the chosen frames; more than the GIF has is an error.
        const auto first = flamingo::load_media_frames(data_dir() / file, 1);
        REQUIRE(first.size() == 1);
        CHECK(first[0].rgb == frames[0].rgb);
        for (std::size_t wanted = 2; wanted <= frames.size(); ++wanted) {
            CAPTURE(wanted);
            const auto sampled = flamingo::load_media_frames(data_dir() / file, wanted);
            const auto pick = flamingo::sample_frame_indices(frames.size(), wanted);
            REQUIRE(sampled.size() == wanted);
            for (std::size_t k = 0; k < wanted; ++k) CHECK(sampled[k].rgb == frames[pick[k]].rgb);
        }
        CHECK(error_of([&] { flamingo::load_media_frames(data_dir() / file, frames.size() + 1); }) ==
              too_few(data_dir() / file, frames.size(), frames.size() + 1));
    }
}

TEST_CASE("sample_frame_indices takes the middle of equal segments") {
    using V = std::vector<std::size_t>;
    CHECK(flamingo::sample_frame_indices(10, 3) == V{1, 5, 8});
    CHECK(flamingo::sample_frame_indices(7, 1) == V{3});
    CHECK(flamingo::sample_frame_indices(5, 5) == V{0, 1, 2, 3, 4});
    CHECK(flamingo::sample_frame_indices(2, 4) == V{0, 0, 1, 1});
    CHECK(flamingo::sample_frame_indices(1, 3) == V{0, 0, 0});
    CHECK(flamingo::sample_frame_indices(100, 4) == V{12, 37, 62, 87});
    CHECK(flamingo::sample_frame_indices(0, 0).empty());
    CHECK(flamingo::sample_frame_indices(9, 0).empty());
    const std::size_t big = ~std::size_t{0};
    CHECK(flamingo::sample_frame_indices(big, 2) == V{big / 4, big / 4 * 3 + 2});  // no overflow
    CHECK_THROWS_AS(flamingo::sample_frame_indices(0, 3), flamingo::Error);
}

TEST_CASE("frames beyond the memory limit are refused") {
    flamingo::ImageLimits lim;
    lim.max_total_bytes = 40 * 30 * 3 * 2;  // two frames of anim_d0.gif
    const auto msg = error_of([&] { flamingo::load_frames(data_dir() / "anim_d0.gif", lim); });
    CHECK(msg.find("anim_d0.gif") != std::string::npos);
    CHECK(msg.find("limit") != std::string::npos);
    CHECK(flamingo::load_media_frames(data_dir() / "anim_d0.gif", 2, lim).size() == 2);
}

TEST_CASE("a directory of frame images follows the same rule as a GIF") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / ("flamingo_frames_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
    // Named so that name order differs from the order of creation.
    const char* sources[] = {"rgb.png", "grey.png", "palette.png"};
    const char* names[] = {"frame_2.png", "frame_0.png", "frame_1.png"};
    for (int i = 0; i < 3; ++i) fs::copy_file(data_dir() / sources[i], dir / names[i]);
    const auto by_name = [&](int k) {  // frame k in name order
        const int source = k == 0 ? 1 : k == 1 ? 2 : 0;
        return flamingo::load_image(data_dir() / sources[source]).rgb;
    };

    const auto all = flamingo::load_media_frames(dir, 3);
    REQUIRE(all.size() == 3);
    for (int k = 0; k < 3; ++k) CHECK(all[k].rgb == by_name(k));
    const auto two = flamingo::load_media_frames(dir, 2);  // sample_frame_indices(3, 2) = {0, 2}
    REQUIRE(two.size() == 2);
    CHECK(two[0].rgb == by_name(0));
    CHECK(two[1].rgb == by_name(2));
    const auto one = flamingo::load_media_frames(dir, 1);  // the middle one
    REQUIRE(one.size() == 1);
    CHECK(one[0].rgb == by_name(1));
    CHECK(error_of([&] { flamingo::load_media_frames(dir, 8); }) == too_few(dir, 3, 8));

    fs::create_directories(dir / "empty");
    CHECK(error_of([&] { flamingo::load_media_frames(dir / "empty", 2); }) == too_few(dir / "empty", 0, 2));
    fs::remove_all(dir);
}

TEST_CASE("a still image is one frame") {
    const auto file = data_dir() / "rgb.png";
    CHECK(flamingo::load_media_frames(file, 1).at(0).rgb == flamingo::load_image(file).rgb);
    CHECK(error_of([&] { flamingo::load_media_frames(file, 2); }) == too_few(file, 1, 2));
    // A file that is no image says that, not how many frames it has.
    const auto junk = error_of([&] { flamingo::load_media_frames(data_dir() / "manifest.json", 2); });
    CHECK(junk.find("manifest.json") != std::string::npos);
    CHECK(junk.find("frame") == std::string::npos);
    CHECK(error_of([&] { flamingo::load_media_frames(file, 0); }).find("no frames asked for") != std::string::npos);
}

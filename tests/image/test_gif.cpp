// Animated GIF frames against Pillow 9.4's seek(k) + convert("RGB"), frame
// sampling, and the frame memory limit.
#include <doctest/doctest.h>

#include <functional>
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

        // Sampled decoding keeps exactly the chosen frames.
        for (std::size_t wanted : {std::size_t{1}, std::size_t{3}, frames.size() + 2}) {
            const auto sampled = flamingo::load_frames_sampled(data_dir() / file, wanted);
            const auto pick = flamingo::sample_frame_indices(frames.size(), wanted);
            REQUIRE(sampled.size() == wanted);
            for (std::size_t k = 0; k < wanted; ++k) CHECK(sampled[k].rgb == frames[pick[k]].rgb);
        }
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
    CHECK(flamingo::load_frames_sampled(data_dir() / "anim_d0.gif", 2, lim).size() == 2);
}

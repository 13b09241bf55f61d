// Bicubic resize against Pillow 9.4's Image.resize(..., BICUBIC): every byte.
#include <doctest/doctest.h>

#include "image_fixtures.hpp"

using namespace image_test;

TEST_CASE("resize_bicubic matches Pillow byte for byte") {
    const auto& cases = manifest().at("resize");
    REQUIRE(cases.size() >= 20);
    for (const auto& c : cases) {
        const auto in = synthetic_image(c.at("pattern"), c.at("seed"), c.at("width"), c.at("height"));
        const int ow = c.at("out_width"), oh = c.at("out_height");
        CAPTURE(in.width);
        CAPTURE(in.height);
        CAPTURE(ow);
        CAPTURE(oh);
        const auto out = flamingo::resize_bicubic(in, ow, oh);
        REQUIRE(out.width == ow);
        REQUIRE(out.height == oh);
        if (c.contains("expected")) {
            const auto expected = read_bytes(data_dir() / c.at("expected").get<std::string>());
            const long at = first_difference(out.rgb, expected);
            CAPTURE(at);
            CHECK(at == -1);
        }
        CHECK(fnv1a64(out.rgb) == c.at("expected_fnv1a64").get<std::string>());
    }
}

TEST_CASE("resize_bicubic windows agree with the full resize") {
    // clip_preprocess resizes only the crop window; each window must be a crop of the whole.
    const auto in = synthetic_image("noise", 99, 53, 41);
    const auto full = flamingo::resize_bicubic(in, 29, 67);
    const int x0 = 5, y0 = 11, w = 17, h = 40;
    const auto win = flamingo::detail::resize_bicubic_window(in, 29, 67, x0, y0, w, h);
    REQUIRE(win.rgb.size() == static_cast<std::size_t>(w * h * 3));
    bool same = true;
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w * 3; ++x)
            same &= win.rgb[(y * w) * 3 + x] == full.rgb[((y + y0) * 29 + x0) * 3 + x];
    CHECK(same);
}

TEST_CASE("resize_bicubic rejects bad arguments") {
    const auto in = synthetic_image("noise", 1, 4, 4);
    CHECK_THROWS_AS(flamingo::resize_bicubic(in, 0, 4), flamingo::Error);
    CHECK_THROWS_AS(flamingo::resize_bicubic(in, 4, -1), flamingo::Error);
    flamingo::Image bad = in;
    bad.rgb.pop_back();
    CHECK_THROWS_AS(flamingo::resize_bicubic(bad, 2, 2), flamingo::Error);
    CHECK_THROWS_AS(flamingo::resize_bicubic(flamingo::Image{}, 2, 2), flamingo::Error);
}

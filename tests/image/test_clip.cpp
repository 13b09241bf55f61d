// open_clip's eval transform against torchvision 0.14 on Pillow 9.4.
#include <doctest/doctest.h>

#include <array>
#include <cstring>

#include "image_fixtures.hpp"

using namespace image_test;

namespace {

bool same_bits(float a, float b) {
    std::uint32_t x, y;
    std::memcpy(&x, &a, 4);
    std::memcpy(&y, &b, 4);
    return x == y;
}

}  // namespace

TEST_CASE("clip_preprocess matches torchvision's Resize + CenterCrop + ToTensor + Normalize") {
    const auto& cases = manifest().at("clip");
    REQUIRE(cases.size() >= 20);
    for (const auto& c : cases) {
        const auto in = synthetic_image(c.at("pattern"), c.at("seed"), c.at("width"), c.at("height"));
        flamingo::ClipPreprocess cfg;
        cfg.image_size = c.at("size");
        for (int i = 0; i < 3; ++i) {
            cfg.mean[i] = static_cast<float>(c.at("mean")[i].get<double>());
            cfg.std[i] = static_cast<float>(c.at("std")[i].get<double>());
        }
        CAPTURE(in.width);
        CAPTURE(in.height);
        CAPTURE(cfg.image_size);
        const int S = cfg.image_size;
        const std::size_t plane = static_cast<std::size_t>(S) * S;
        const auto out = flamingo::clip_preprocess(in, cfg);
        REQUIRE(out.size() == 3 * plane);

        // Each output value must be torch's value of some 8-bit level; recover the crop through it.
        const auto levels = read_floats(data_dir() / c.at("levels").get<std::string>());
        REQUIRE(levels.size() == 3 * 256);
        std::vector<std::uint8_t> crop(plane * 3);
        std::size_t unmatched = 0;
        for (int ch = 0; ch < 3; ++ch)
            for (std::size_t i = 0; i < plane; ++i) {
                int found = -1;
                for (int v = 0; v < 256 && found < 0; ++v)
                    if (same_bits(levels[ch * 256 + v], out[ch * plane + i])) found = v;
                unmatched += found < 0;
                crop[i * 3 + ch] = static_cast<std::uint8_t>(found);
            }
        CHECK(unmatched == 0);
        CHECK(fnv1a64(crop) == c.at("crop_fnv1a64").get<std::string>());
        if (c.contains("crop")) {
            const long at = first_difference(crop, read_bytes(data_dir() / c.at("crop").get<std::string>()));
            CAPTURE(at);
            CHECK(at == -1);
        }
        if (c.contains("tensor")) {  // torchvision's tensor itself, compared bit for bit
            const auto expected = read_floats(data_dir() / c.at("tensor").get<std::string>());
            REQUIRE(expected.size() == out.size());
            std::size_t differ = 0;
            for (std::size_t i = 0; i < out.size(); ++i) differ += !same_bits(out[i], expected[i]);
            CHECK(differ == 0);
        }
    }
}

TEST_CASE("clip_resize_size follows torchvision's shorter-side rule") {
    using flamingo::clip_resize_size;
    CHECK(clip_resize_size(640, 480, 224) == std::array<int, 2>{298, 224});  // int(224 * 640 / 480) = 298
    CHECK(clip_resize_size(480, 640, 224) == std::array<int, 2>{224, 298});
    CHECK(clip_resize_size(224, 224, 224) == std::array<int, 2>{224, 224});
    CHECK(clip_resize_size(1, 1, 224) == std::array<int, 2>{224, 224});
    CHECK(clip_resize_size(3, 5, 224) == std::array<int, 2>{224, 373});  // 373.33 truncated
    CHECK(clip_resize_size(7, 300, 30) == std::array<int, 2>{30, 1285});  // 1285.71 truncated
}

TEST_CASE("clip_preprocess rejects bad arguments") {
    flamingo::ClipPreprocess cfg;
    cfg.image_size = 0;
    CHECK_THROWS_AS(flamingo::clip_preprocess(synthetic_image("noise", 1, 4, 4), cfg), flamingo::Error);
    cfg.image_size = 224;
    CHECK_THROWS_AS(flamingo::clip_preprocess(flamingo::Image{}, cfg), flamingo::Error);
}

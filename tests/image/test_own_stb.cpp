// A program that uses stb_image itself next to flamingo's image decoding: this
// file compiles a complete stb_image of its own (external linkage, stdio and all
// formats) and includes flamingo's image header too; the other files of this
// test program decode through flamingo. It must link, and both must decode.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <doctest/doctest.h>

#include "flamingo/io/image.hpp"
#include "image_fixtures.hpp"

using namespace image_test;

TEST_CASE("a program's own stb_image and flamingo's image decoding live side by side") {
    const auto file = data_dir() / "rgb.png";
    const auto expected = read_bytes(data_dir() / "rgb.png.rgb");
    int w = 0, h = 0, channels = 0;
    stbi_uc* pixels = stbi_load(file.c_str(), &w, &h, &channels, 3);
    REQUIRE(pixels != nullptr);
    const std::vector<std::uint8_t> own(pixels, pixels + static_cast<std::size_t>(w) * h * 3);
    stbi_image_free(pixels);
    CHECK(own == expected);
    CHECK(flamingo::load_image(file).rgb == expected);
    // With flamingo's mending before its stb_image (a short palette, as Pillow fills it).
    const auto palette = read_bytes(data_dir() / "short_palette.png.rgb");
    CHECK(flamingo::load_image(data_dir() / "short_palette.png").rgb == palette);
}

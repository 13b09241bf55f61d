// The program's own stb_image, complete and with external linkage.
#include <cstdint>
#include <string>
#include <vector>

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

std::vector<std::uint8_t> own_decode(const std::string& file) {
    int w = 0, h = 0, channels = 0;
    stbi_uc* pixels = stbi_load(file.c_str(), &w, &h, &channels, 3);
    if (!pixels) return {};
    std::vector<std::uint8_t> rgb(pixels, pixels + static_cast<std::size_t>(w) * h * 3);
    stbi_image_free(pixels);
    return rgb;
}

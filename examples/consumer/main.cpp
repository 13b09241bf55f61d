// Uses the library as a downstream project would: its headers and one target,
// including the compiled part (image decoding).
#include <cstdint>
#include <cstdio>
#include <vector>

#include <flamingo/io/image.hpp>
#include <flamingo/tensor.hpp>

int main() {
    flamingo::Tensor<float, flamingo::extents<2, 3>> a;
    for (int i = 0; i < 6; ++i) a.data()[i] = float(i);
    flamingo::Tensor<float, flamingo::extents<2, 3>> b(a * 2.0f + 1.0f);
    float total = 0;
    for (float r : {flamingo::sum(b)(0), flamingo::sum(b)(1)}) total += r;

    const char ppm[] = "P6 2 1 255\n\x01\x02\x03\xFA\xFB\xFC";  // a 2x1 binary PPM
    const std::vector<std::uint8_t> bytes(ppm, ppm + sizeof ppm - 1);
    const flamingo::Image im = flamingo::decode_image(bytes, "tiny.ppm");
    const bool image_ok = im.width == 2 && im.height == 1 && im.rgb == std::vector<std::uint8_t>{1, 2, 3, 250, 251, 252};

    std::printf("%g %s\n", total, image_ok ? "image ok" : "image wrong");
    return total == 36.0f && image_ok ? 0 : 1;
}

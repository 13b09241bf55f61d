// Uses the library as a downstream project would: its headers and one target,
// including the compiled part (image decoding). With a model directory as
// argument it also loads the model and asks it.
#include <cstdint>
#include <cstdio>
#include <vector>

#include <flamingo/flamingo.hpp>

int main(int argc, char** argv) try {
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
    if (total != 36.0f || !image_ok) return 1;
    if (argc < 2) return 0;

    auto model = flamingo::Model::load(argv[1]);
    flamingo::Context ctx(model, {1, nullptr});
    auto logits = ctx.logits("A photo of");  // [tokens, vocab]
    std::printf("%zu x %zu logits\n", logits.extent(0), logits.extent(1));
    return logits.extent(1) == model->vocab_size() ? 0 : 1;
} catch (const flamingo::Error& e) {
    std::fprintf(stderr, "consumer: %s (%s)\n", e.what(), std::string(flamingo::error_kind_name(e.kind())).c_str());
    return 1;
}

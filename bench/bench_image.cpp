// Image decoding and CLIP preprocessing figures. Inputs are synthesised and
// encoded in memory (stb_image_write), so the benchmark needs no files.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "flamingo/io/image.hpp"

#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace {

// A photo-like test image: smooth gradients plus some texture.
flamingo::Image make_image(int w, int h) {
    flamingo::Image im;
    im.width = w;
    im.height = h;
    im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
    std::uint32_t state = 12345;
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x) {
            state = state * 1664525u + 1013904223u;
            const int noise = static_cast<int>(state >> 28);
            std::uint8_t* p = &im.rgb[(static_cast<std::size_t>(y) * w + x) * 3];
            p[0] = static_cast<std::uint8_t>((x * 255 / w + noise) & 255);
            p[1] = static_cast<std::uint8_t>((y * 255 / h + noise) & 255);
            p[2] = static_cast<std::uint8_t>(((x + y) * 127 / (w + h) + 64 + noise) & 255);
        }
    return im;
}

std::vector<std::uint8_t> encode(const flamingo::Image& im, bool jpeg) {
    std::vector<std::uint8_t> out;
    auto sink = [](void* ctx, void* data, int size) {
        auto* v = static_cast<std::vector<std::uint8_t>*>(ctx);
        v->insert(v->end(), static_cast<std::uint8_t*>(data), static_cast<std::uint8_t*>(data) + size);
    };
    if (jpeg) stbi_write_jpg_to_func(sink, &out, im.width, im.height, 3, im.rgb.data(), 90);
    else stbi_write_png_to_func(sink, &out, im.width, im.height, 3, im.rgb.data(), im.width * 3);
    return out;
}

void BM_clip_preprocess(benchmark::State& state) {
    const auto im = make_image(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
    flamingo::ClipPreprocess cfg;
    cfg.image_size = 224;
    for (auto _ : state) benchmark::DoNotOptimize(flamingo::clip_preprocess(im, cfg));
    state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_clip_preprocess)->Args({640, 480})->Args({1920, 1080})->Args({224, 224})->Args({100, 80})
    ->Unit(benchmark::kMillisecond);

void BM_resize_bicubic(benchmark::State& state) {
    const auto im = make_image(640, 480);
    const int w = static_cast<int>(state.range(0)), h = static_cast<int>(state.range(1));
    for (auto _ : state) benchmark::DoNotOptimize(flamingo::resize_bicubic(im, w, h));
}
BENCHMARK(BM_resize_bicubic)->Args({298, 224})->Args({298, 480})->Args({640, 224})->Args({1280, 960})
    ->Unit(benchmark::kMillisecond);

void BM_decode(benchmark::State& state) {
    const bool jpeg = state.range(0) != 0;
    const auto bytes = encode(make_image(640, 480), jpeg);
    for (auto _ : state) benchmark::DoNotOptimize(flamingo::decode_image(bytes, jpeg ? "bench.jpg" : "bench.png"));
    state.SetLabel(jpeg ? "640x480 JPEG q90" : "640x480 PNG");
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK(BM_decode)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();

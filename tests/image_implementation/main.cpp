// Decodes one PNG with the program's own stb_image and with flamingo, and a
// short-palette PNG with flamingo (which mends it before its stb_image sees it);
// each against Pillow's pixels. Argument: tests/data/image.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <flamingo/io/image.hpp>

std::vector<std::uint8_t> own_decode(const std::string& file);

static std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: test_image_implementation DATA_DIR\n");
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    const auto rgb = read_bytes(dir / "rgb.png.rgb"), palette = read_bytes(dir / "short_palette.png.rgb");
    int failures = 0;
    auto expect = [&](bool ok, const char* what) {
        std::printf("%s: %s\n", ok ? "ok" : "FAILED", what);
        failures += !ok;
    };
    expect(!rgb.empty() && own_decode((dir / "rgb.png").string()) == rgb, "the program's stb_image decodes rgb.png");
    expect(!rgb.empty() && flamingo::load_image(dir / "rgb.png").rgb == rgb, "flamingo decodes rgb.png");
    expect(!palette.empty() && flamingo::load_image(dir / "short_palette.png").rgb == palette,
           "flamingo decodes short_palette.png as Pillow does");
    return failures == 0 ? 0 : 1;
}

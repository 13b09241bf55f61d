#pragma once
// Shared helpers for the image tests: the synthetic images of
// tools/make_image_fixtures.py, its manifest, and file reading.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flamingo/io/image_preprocess.hpp"

namespace image_test {

inline std::filesystem::path data_dir() { return std::filesystem::path(FLAMINGO_TEST_DATA) / "image"; }

inline std::vector<std::uint8_t> read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open fixture " + p.string());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::vector<float> read_floats(const std::filesystem::path& p) {
    const auto b = read_bytes(p);
    std::vector<float> f(b.size() / 4);
    std::memcpy(f.data(), b.data(), f.size() * 4);
    return f;
}

inline const nlohmann::json& manifest() {
    static const nlohmann::json m = [] {
        std::ifstream in(data_dir() / "manifest.json");
        if (!in) throw std::runtime_error("missing tests/data/image/manifest.json (tools/make_image_fixtures.py)");
        return nlohmann::json::parse(in);
    }();
    return m;
}

// The hash-based test pattern of make_image_fixtures.py's synth().
inline flamingo::Image synthetic_image(const std::string& pattern, std::uint32_t seed, int w, int h) {
    flamingo::Image im;
    im.width = w;
    im.height = h;
    im.rgb.resize(static_cast<std::size_t>(w) * h * 3);
    const bool blocks = pattern == "blocks";
    for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
            for (std::uint32_t c = 0; c < 3; ++c) {
                const std::uint32_t xx = blocks ? x / 7 : x, yy = blocks ? y / 5 : y;
                std::uint32_t v = seed * 0x9E3779B1u + xx * 0x85EBCA77u + yy * 0xC2B2AE3Du + c * 0x27D4EB2Fu;
                v ^= v >> 15;
                v *= 0x2C1B3C6Du;
                v ^= v >> 12;
                v *= 0x297A2D39u;
                v ^= v >> 15;
                im.rgb[(static_cast<std::size_t>(y) * w + x) * 3 + c] =
                    static_cast<std::uint8_t>(blocks ? ((v >> 8) & 1) * 255 : v & 0xFF);
            }
    return im;
}

inline std::string fnv1a64(const std::vector<std::uint8_t>& data) {
    std::uint64_t h = 0xCBF29CE484222325ull;
    for (std::uint8_t b : data) h = (h ^ b) * 0x100000001B3ull;
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

// Index and value of the first differing byte, or -1.
inline long first_difference(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
    if (a.size() != b.size()) return 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i] != b[i]) return static_cast<long>(i);
    return -1;
}

}  // namespace image_test

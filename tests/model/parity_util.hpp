#pragma once
// Helpers for comparing the model with the PyTorch reference fixtures in
// tests/data/model/<case>/ (see tools/make_model_fixtures.py).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <flamingo/io/npy.hpp>
#include <flamingo/flamingo.hpp>
#include <flamingo/io/safetensors.hpp>
#include <nlohmann/json.hpp>

namespace fixture {

inline std::filesystem::path dir(const std::string& c) { return std::filesystem::path(FLAMINGO_TEST_DATA) / "model" / c; }

inline std::vector<float> floats(const std::string& c, const std::string& name) {
    return flamingo::io::read_npy(dir(c) / "expected" / name).as_float();
}
inline std::vector<std::int64_t> ints(const std::string& c, const std::string& name) {
    return flamingo::io::read_npy(dir(c) / "expected" / name).as_int64();
}
inline std::vector<std::size_t> shape(const std::string& c, const std::string& name) {
    return flamingo::io::read_npy(dir(c) / "expected" / name).shape;
}
inline nlohmann::json json(const std::string& c, const std::string& name) {
    std::ifstream in(dir(c) / "expected" / name);
    return nlohmann::json::parse(in);
}

// |got - want| <= atol + rtol * |want| everywhere; reports the worst element.
inline void expect_close(const float* got, const std::vector<float>& want, double atol, double rtol,
                         const std::string& what) {
    double worst = 0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        double excess = std::fabs(double(got[i]) - want[i]) - (atol + rtol * std::fabs(double(want[i])));
        if (!(excess <= worst)) worst = std::isnan(excess) ? INFINITY : excess, at = i;
    }
    INFO(what << ": worst element " << at << " got " << got[at] << " want " << want[at]);
    CHECK(worst <= 0.0);
}

// OpenFlamingo's text time: <image> tokens at or before each position.
inline std::vector<std::uint32_t> text_time(const std::vector<std::int32_t>& ids, std::int32_t media_token) {
    std::vector<std::uint32_t> tt(ids.size());
    std::uint32_t n = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) tt[i] = n += (ids[i] == media_token);
    return tt;
}

// Teacher-forced logits [T, vocab] of a case's prompt and media on model m.
inline std::vector<float> logits(const flamingo::model::Flamingo& m, const std::string& c) {
    using namespace flamingo;
    generate::Session s(m);
    auto pixels = floats(c, "pixels.npy");
    auto sh = shape(c, "pixels.npy");
    s.set_media(pixels.data(), sh[0], sh[1]);
    auto ids64 = ints(c, "input_ids.npy");
    std::vector<std::int32_t> ids(ids64.begin(), ids64.end());
    s.prepare(1, ids.size(), ids.size());
    auto lg = s.run(0, ids, s.prompt_text_time(ids), 0, true);
    return {lg.begin(), lg.end()};
}

inline const std::vector<std::string>& cases() {
    static const std::vector<std::string> c = {"llama", "mpt", "mosaic_gpt", "gpt_neox", "all_media",
                                               "video", "ln_post_tokens"};
    return c;
}

}  // namespace fixture

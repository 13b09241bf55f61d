// Decoding against Pillow 9.4's Image.open(f).convert("RGB"), and bad files.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>

#include "flamingo/io/image.hpp"
#include "image_fixtures.hpp"

using namespace image_test;

namespace {

std::string extension(const std::string& f) { return f.substr(f.rfind('.') + 1); }

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const flamingo::Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("lossless formats decode exactly as Pillow converts them to RGB") {
    const auto& cases = manifest().at("decode");
    REQUIRE(cases.size() >= 30);
    for (const auto& c : cases) {
        const std::string file = c.at("file");
        CAPTURE(file);
        const auto im = flamingo::load_image(data_dir() / file);
        REQUIRE(im.width == c.at("width").get<int>());
        REQUIRE(im.height == c.at("height").get<int>());
        const long at = first_difference(im.rgb, read_bytes(data_dir() / c.at("expected").get<std::string>()));
        CAPTURE(at);
        CHECK(at == -1);
    }
}

TEST_CASE("JPEG decodes within a few levels of Pillow's libjpeg") {
    // stb_image's IDCT, upsampling and colour conversion round differently from
    // libjpeg-turbo's; the bounds are what the fixtures measure, so a decoder
    // change shows. One known stb_image defect: with 2x1 chroma subsampling
    // (4:2:2) the last chroma sample's left output pixel is interpolated with the
    // weights swapped, so that one column can be far off; it is bounded apart
    // (its largest error in q90_422.jpg is 31 levels).
    for (const auto& c : manifest().at("jpeg")) {
        const std::string file = c.at("file");
        CAPTURE(file);
        const auto im = flamingo::load_image(data_dir() / file);
        REQUIRE(im.width == c.at("width").get<int>());  // EXIF orientation is not applied
        REQUIRE(im.height == c.at("height").get<int>());
        const auto expected = read_bytes(data_dir() / c.at("expected").get<std::string>());
        REQUIRE(expected.size() == im.rgb.size());
        const int odd_column = file == "q90_422.jpg" ? (im.width + 1) / 2 * 2 - 2 : -1;
        int max_diff = 0, column_max = 0;
        double sum = 0;
        std::size_t exact = 0, counted = 0;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            const int d = std::abs(int(im.rgb[i]) - int(expected[i]));
            if (static_cast<int>(i / 3 % im.width) == odd_column) {
                column_max = std::max(column_max, d);
                continue;
            }
            max_diff = std::max(max_diff, d);
            sum += d;
            exact += d == 0;
            ++counted;
        }
        const double mean = sum / counted;
        MESSAGE(file << ": max |diff| " << max_diff << ", mean " << mean << ", exact " << 100.0 * exact / counted
                     << "%" << (odd_column >= 0 ? ", column " + std::to_string(odd_column) + " max |diff| " +
                                                      std::to_string(column_max)
                                                : std::string()));
        CHECK(max_diff <= 3);
        CHECK(mean <= 0.25);
        CHECK(column_max <= 31);
    }
}

TEST_CASE("still images are one frame") {
    const auto frames = flamingo::load_frames(data_dir() / "rgb.png");
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].rgb == flamingo::load_image(data_dir() / "rgb.png").rgb);
    const std::filesystem::path list[] = {data_dir() / "rgb.png", data_dir() / "grey.png"};
    const auto files = flamingo::load_frame_files(list);
    REQUIRE(files.size() == 2);
    CHECK(files[1].rgb == flamingo::load_image(data_dir() / "grey.png").rgb);
}

TEST_CASE("every truncation of a fixture is refused or decodes to the same pixels") {
    // JPEG, BMP and PNM must refuse every cut. PNG may lose only IEND's CRC (never
    // read), TGA its footer; a GIF cut between frames is a shorter animation.
    std::vector<std::string> files;
    for (const char* kind : {"decode", "jpeg", "gif"})
        for (const auto& c : manifest().at(kind)) files.push_back(c.at("file"));
    for (const auto& file : files) {
        CAPTURE(file);
        const auto bytes = read_bytes(data_dir() / file);
        const auto full = flamingo::decode_frames(bytes, file);
        const std::string ext = extension(file);
        std::size_t must_fail_below = bytes.size();
        if (ext == "png") must_fail_below = bytes.size() - 4;
        if (ext == "tga") must_fail_below = bytes.size() - 26;
        if (ext == "gif") must_fail_below = 0;
        const std::size_t step = std::max<std::size_t>(1, bytes.size() / 300);
        std::size_t refused = 0, tried = 0;
        for (std::size_t cut = 0; cut < bytes.size(); cut += (cut + step < bytes.size() ? step : 1)) {
            CAPTURE(cut);
            ++tried;
            std::vector<flamingo::Image> got;
            try {
                got = flamingo::decode_frames(std::span(bytes.data(), cut), file);
            } catch (const flamingo::Error& e) {
                ++refused;
                CHECK(std::string(e.what()).find(file) != std::string::npos);
                continue;
            }
            CHECK(cut >= must_fail_below);
            REQUIRE(got.size() <= full.size());
            REQUIRE(!got.empty());
            for (std::size_t k = 0; k < got.size(); ++k) CHECK(got[k].rgb == full[k].rgb);
        }
        CHECK(refused > 0);
        MESSAGE(file << ": " << refused << " of " << tried << " truncations refused");
    }
}

TEST_CASE("bad files are errors that name the file") {
    const auto dir = data_dir();
    CHECK(error_of([&] { flamingo::load_image(dir / "no_such_file.png"); }).find("no_such_file.png: no such file") ==
          std::string::npos);  // message format: image '<path>': no such file
    CHECK(error_of([&] { flamingo::load_image(dir / "no_such_file.png"); }).find("no such file") != std::string::npos);
    CHECK(error_of([&] { flamingo::load_image(dir); }).find("directory") != std::string::npos);
    CHECK(error_of([&] { flamingo::load_image(dir / "manifest.json"); }).find("manifest.json") != std::string::npos);
    const std::vector<std::uint8_t> empty;
    CHECK(error_of([&] { flamingo::decode_image(empty, "empty.png"); }).find("empty.png") != std::string::npos);
    const std::string text = "hello, this is not an image at all, just some text.";
    const std::vector<std::uint8_t> junk(text.begin(), text.end());
    CHECK(error_of([&] { flamingo::decode_image(junk, "junk.jpg"); }).find("junk.jpg") != std::string::npos);
    const std::string plain = "P3\n1 1\n255\n1 2 3\n";
    CHECK(error_of([&] { flamingo::decode_image(std::vector<std::uint8_t>(plain.begin(), plain.end()), "p.ppm"); })
              .find("plain") != std::string::npos);
}

TEST_CASE("the size limit is checked before decoding") {
    flamingo::ImageLimits small;
    small.max_width = 16;
    small.max_height = 16;
    for (const char* file : {"rgb.png", "grey16.png", "rgb.bmp", "rgb.tga", "rgb.ppm", "palette.gif", "q90_420.jpg"}) {
        CAPTURE(file);
        const auto msg = error_of([&] { flamingo::load_image(data_dir() / file, small); });
        CHECK(msg.find(file) != std::string::npos);
        CHECK(msg.find("exceeds the size limit 16x16") != std::string::npos);
    }
    // Headers that promise huge images with no data behind: refused for the size, not the missing data.
    auto be32 = [](std::vector<std::uint8_t>& v, std::uint32_t x) {
        for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<std::uint8_t>(x >> s));
    };
    std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    be32(png, 100000);
    be32(png, 3);
    for (std::uint8_t b : {8, 2, 0, 0, 0, 0, 0, 0, 0}) png.push_back(b);  // depth, colour type, ..., CRC (unchecked)
    CHECK(error_of([&] { flamingo::decode_image(png, "huge.png"); }).find("100000x3 exceeds") != std::string::npos);
    const std::vector<std::uint8_t> gif = {'G', 'I', 'F', '8', '9', 'a', 0x60, 0xEA, 2, 0, 0, 0, 0,
                                           0x2C, 0, 0, 0, 0, 0x60, 0xEA, 2, 0, 0, 2, 2, 0x4C, 1, 0};
    CHECK(error_of([&] { flamingo::decode_image(gif, "huge.gif"); }).find("60000x2 exceeds") != std::string::npos);
    const std::string pnm = "P6 9000 9000 255\n";
    CHECK(error_of([&] { flamingo::decode_image(std::vector<std::uint8_t>(pnm.begin(), pnm.end()), "huge.ppm"); })
              .find("9000x9000 exceeds") != std::string::npos);
}

TEST_CASE("zero-sized images are refused") {
    const std::vector<std::uint8_t> gif = {'G', 'I', 'F', '8', '9', 'a', 0, 0, 0, 0, 0, 0, 0,
                                           0x2C, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3B};
    CHECK(error_of([&] { flamingo::decode_image(gif, "zero.gif"); }).find("no pixels") != std::string::npos);
    const std::string pnm = "P5 0 4 255\n";
    CHECK(error_of([&] { flamingo::decode_image(std::vector<std::uint8_t>(pnm.begin(), pnm.end()), "zero.pgm"); })
              .find("no pixels") != std::string::npos);
    auto png = read_bytes(data_dir() / "rgb.png");
    png[16] = png[17] = png[18] = png[19] = 0;  // IHDR width = 0
    CHECK(error_of([&] { flamingo::decode_image(png, "zero.png"); }).find("zero.png") != std::string::npos);
}

TEST_CASE("JPEG Huffman tables with more than 256 codes are refused before stb_image reads them") {
    auto jpg = read_bytes(data_dir() / "q90_420.jpg");
    std::size_t dht = 2;
    while (dht + 1 < jpg.size() && !(jpg[dht] == 0xFF && jpg[dht + 1] == 0xC4)) ++dht;
    REQUIRE(dht + 21 < jpg.size());
    for (int i = 0; i < 16; ++i) jpg[dht + 5 + i] = 0x20;  // 16 x 32 = 512 codes
    CHECK(error_of([&] { flamingo::decode_image(jpg, "bad_dht.jpg"); }).find("Huffman table") != std::string::npos);
}

TEST_CASE("only what Pillow opens as a JPEG is decoded as one") {
    // stb_image also takes FF FF D8 as a start of image; Pillow wants FF D8 FF.
    auto jpg = read_bytes(data_dir() / "q90_420.jpg");
    jpg.insert(jpg.begin(), 0xFF);
    CHECK(error_of([&] { flamingo::decode_image(jpg, "padded.jpg"); }).find("not an image") != std::string::npos);
}

TEST_CASE("empty IDAT chunks change nothing") {
    auto png = read_bytes(data_dir() / "palette.png");
    std::size_t at = 8;
    while (std::memcmp(&png[at + 4], "IDAT", 4) != 0) at += 12 + ((png[at] << 24) | (png[at + 1] << 16) | (png[at + 2] << 8) | png[at + 3]);
    const std::uint8_t empty_idat[] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
    png.insert(png.begin() + at, std::begin(empty_idat), std::end(empty_idat));
    CHECK(flamingo::decode_image(png, "empty_idat.png").rgb == flamingo::load_image(data_dir() / "palette.png").rgb);
}


#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "flamingo/io/npy.hpp"
#include "flamingo/io/safetensors.hpp"
#include "io_test_util.hpp"

using namespace flamingo::io;
using namespace io_test;

namespace {

// Same value, NaN equal to NaN, -0 distinct from +0.
bool same_float(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    return std::memcmp(&a, &b, 4) == 0;
}

// Compares read_as_float() with the values torch produced (saved by numpy).
void check_values(const TensorInfo& t, const char* npy) {
    auto want = read_npy(data_dir() / npy);
    REQUIRE(want.shape == t.shape);
    auto got = read_as_float(t);
    auto ref = want.as_float();
    REQUIRE(got.size() == ref.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        CHECK_MESSAGE(same_float(got[i], ref[i]), t.name << "[" << i << "]: " << got[i] << " vs " << ref[i]);
}

void check_mixed(const SafeTensorsFile& f) {
    CHECK(f.tensors().size() == 8);
    CHECK(f.metadata().at("format") == "pt");
    CHECK(f.metadata().at("note") == "io fixture");

    const TensorInfo& bf = f.get("layer.bf16");
    CHECK(bf.file_dtype == FileDType::BF16);
    CHECK(bf.dtype() == flamingo::DType::BF16);
    CHECK(bf.shape == std::vector<std::size_t>{4, 10});
    CHECK(bf.numel() == 40);
    CHECK(bf.nbytes == 80);
    check_values(bf, "mixed.bf16.npy");
    check_values(f.get("zz.f16"), "mixed.f16.npy");
    check_values(f.get("f32"), "mixed.f32.npy");

    const TensorInfo& ids = f.get("ids");
    CHECK(ids.dtype() == flamingo::DType::I64);
    auto want_ids = read_npy(data_dir() / "mixed.ids.npy").as_int64();
    REQUIRE(ids.nbytes == want_ids.size() * 8);
    std::vector<std::int64_t> got_ids(want_ids.size());
    std::memcpy(got_ids.data(), ids.data, ids.nbytes);
    CHECK(got_ids == want_ids);
    CHECK_ERROR(read_as_float(ids), "tensor 'ids'", "I64", "cannot be read as floats");

    const TensorInfo& empty = f.get("empty");
    CHECK(empty.shape == std::vector<std::size_t>{0, 4});
    CHECK(empty.numel() == 0);
    CHECK(read_as_float(empty).empty());

    const TensorInfo& scalar = f.get("scalar");
    CHECK(scalar.shape.empty());
    CHECK(read_as_float(scalar) == std::vector<float>{42.5f});

    const TensorInfo& bytes = f.get("bytes");
    CHECK(bytes.file_dtype == FileDType::U8);
    CHECK(std::to_integer<int>(bytes.data[2]) == 255);
    CHECK_ERROR(bytes.dtype(), "tensor 'bytes'", "U8", "not supported");
    CHECK_ERROR(read_as_float(f.get("doubles")), "tensor 'doubles'", "F64");

    // tensors() is in data order, which the fixture chose to differ from name order.
    CHECK(f.tensors().front().name == "doubles");
    CHECK(f.tensors().back().name == "bytes");
    CHECK(f.find("nope") == nullptr);
    CHECK_ERROR(f.get("nope"), "tensor 'nope' not found");
}

}  // namespace

TEST_CASE("safetensors: a Python-written file reads back value by value") {
    auto f = SafeTensorsFile::open(data_dir() / "mixed.safetensors");
    check_mixed(f);
    for (const auto& t : f.tensors()) {
        CHECK(t.file == (data_dir() / "mixed.safetensors").string());
        CHECK(is_aligned(t));  // the writer pads the header to 8 bytes
    }
}

TEST_CASE("safetensors: misaligned data is still read correctly") {
    auto f = SafeTensorsFile::open(data_dir() / "unaligned.safetensors");
    CHECK_FALSE(is_aligned(f.get("layer.bf16")));
    CHECK_FALSE(is_aligned(f.get("f32")));
    check_mixed(f);
}

TEST_CASE("safetensors: moving the file keeps the views valid") {
    auto a = SafeTensorsFile::open(data_dir() / "mixed.safetensors");
    const std::byte* p = a.get("f32").data;
    SafeTensorsFile b = std::move(a);
    CHECK(b.get("f32").data == p);
    check_values(b.get("f32"), "mixed.f32.npy");
}

TEST_CASE("safetensors: check_shape names tensor, expected and found shape") {
    auto f = SafeTensorsFile::open(data_dir() / "mixed.safetensors");
    check_shape(f.get("f32"), {2, 3});
    CHECK_ERROR(check_shape(f.get("f32"), {3, 2}), "mixed.safetensors", "tensor 'f32'", "expected shape [3, 2]",
                "found [2, 3]");
}

TEST_CASE("safetensors: from_memory, empty header and upstream's own example") {
    // An empty file with padding, as the reference writer produces for no tensors.
    std::string img = st_image("{}      ", "");
    auto f = SafeTensorsFile::from_memory(reinterpret_cast<const std::byte*>(img.data()), img.size(), "mem");
    CHECK(f.tensors().empty());
    CHECK(f.metadata().empty());

    // 2x2 I32 zeros.
    img = st_image(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})", std::string(16, '\0'));
    auto g = SafeTensorsFile::from_memory(reinterpret_cast<const std::byte*>(img.data()), img.size(), "mem");
    CHECK(g.get("test").file_dtype == FileDType::I32);
    CHECK(g.get("test").data == reinterpret_cast<const std::byte*>(img.data()) + 8 + img.size() - 8 - 16);
}

namespace {

std::string st_error(const std::string& image) {
    return error_of([&] {
        SafeTensorsFile::from_memory(reinterpret_cast<const std::byte*>(image.data()), image.size(), "bad.st");
    });
}

#define CHECK_ST_ERROR(image, ...)                                                            \
    do {                                                                                      \
        const std::string m_ = st_error(image);                                               \
        for (const std::string& w_ : std::initializer_list<std::string>{"bad.st", __VA_ARGS__}) \
            CHECK_MESSAGE(m_.find(w_) != std::string::npos, "expected \"" << w_ << "\" in: " << m_); \
    } while (0)

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, std::size_t b,
                  std::size_t e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
}

}  // namespace

TEST_CASE("safetensors: hostile files, one per rule") {
    const std::string d8(8, '\0');
    // Sanity: the baseline is valid.
    CHECK(st_error(st_image("{" + entry("a", "F32", "[2]", 0, 8) + "}", d8)) == "<no error>");

    SUBCASE("too small for the length") { CHECK_ST_ERROR(std::string(5, '\0'), "too small"); }
    SUBCASE("header length above the limit") {
        CHECK_ST_ERROR(u64le(200'000'000) + "{}", "exceeds the limit");
        CHECK_ST_ERROR(u64le(~std::uint64_t(0)) + "{}", "exceeds the limit");
    }
    SUBCASE("header length beyond the file") { CHECK_ST_ERROR(u64le(100) + "{}", "runs past the end of the file"); }
    SUBCASE("header not JSON") {
        CHECK_ST_ERROR(st_image("{\"a\":", ""), "invalid JSON");
        CHECK_ST_ERROR(st_image("", ""), "invalid JSON");
        CHECK_ST_ERROR(st_image("{}\xff", ""), "invalid JSON");
        CHECK_ST_ERROR(st_image("{\"\xff\":1}", ""), "invalid JSON");  // not UTF-8
        CHECK_ST_ERROR(st_image("{\"a\":1e400}", ""), "invalid JSON", "number overflow");  // found by fuzzing
    }
    SUBCASE("header not an object") {
        CHECK_ST_ERROR(st_image("[1,2]", ""), "not a JSON object");
        CHECK_ST_ERROR(st_image("7", ""), "not a JSON object");
    }
    SUBCASE("deep nesting") { CHECK_ST_ERROR(st_image(std::string(5000, '[') + std::string(5000, ']'), ""), "nested"); }
    SUBCASE("entry not an object") { CHECK_ST_ERROR(st_image("{\"a\":[1]}", ""), "tensor 'a'", "must be an object"); }
    SUBCASE("missing and unexpected fields") {
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","shape":[2]}})", d8), "tensor 'a'", "missing field \"data_offsets\"");
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8), "tensor 'a'",
                       "unexpected field \"x\"");
    }
    SUBCASE("unknown dtype") {
        CHECK_ST_ERROR(st_image("{" + entry("w", "F33", "[2]", 0, 8) + "}", d8), "tensor 'w'", "unknown dtype \"F33\"");
        CHECK_ST_ERROR(st_image(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", d8), "tensor 'w'",
                       "dtype must be a string");
    }
    SUBCASE("bad shapes") {
        CHECK_ST_ERROR(st_image("{" + entry("s", "F32", "[-2]", 0, 8) + "}", d8), "tensor 's'", "shape[0]", "negative");
        CHECK_ST_ERROR(st_image("{" + entry("s", "F32", "[2.0]", 0, 8) + "}", d8), "tensor 's'", "shape[0]",
                       "non-negative integer");
        CHECK_ST_ERROR(st_image("{" + entry("s", "F32", "2", 0, 8) + "}", d8), "tensor 's'", "list of integers");
        CHECK_ST_ERROR(st_image("{" + entry("s", "F32", "[\"2\"]", 0, 8) + "}", d8), "tensor 's'", "shape[0]");
        CHECK_ST_ERROR(st_image("{" + entry("s", "F32", "[18446744073709551616]", 0, 8) + "}", d8), "tensor 's'",
                       "shape[0]");
    }
    SUBCASE("shape product overflows") {
        CHECK_ST_ERROR(st_image("{" + entry("o", "F32", "[4294967296,4294967296]", 0, 8) + "}", d8), "tensor 'o'",
                       "overflows");
        // numel fits, numel * dtype size does not.
        CHECK_ST_ERROR(st_image("{" + entry("o", "F64", "[4611686018427387904]", 0, 8) + "}", d8), "tensor 'o'",
                       "overflows");
        // A zero dimension does not rescue an earlier overflow.
        CHECK_ST_ERROR(st_image("{" + entry("o", "F32", "[4294967296,4294967296,0]", 0, 0) + "}", ""), "overflows");
    }
    SUBCASE("bad data_offsets") {
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", d8), "tensor 'a'",
                       "two integers");
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":{"b":0}}})", d8), "two integers");
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", d8), "data_offsets[1]",
                       "negative");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[0]", 8, 0) + "}", d8), "tensor 'a'", "end before they begin");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[2]", 0, 8) + "}", std::string(4, '\0')), "tensor 'a'",
                       "run past the data section");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[2]", 0, 4) + "}", d8), "tensor 'a'", "hold 4 bytes",
                       "F32 [2] needs 8");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[2]", 0, 16) + "}", std::string(16, '\0')), "hold 16 bytes");
    }
    SUBCASE("overlapping tensors") {
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) + "}", d8),
                       "tensor 'b'", "overlap tensor 'a'");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 0, 8) + "}", d8),
                       "overlap");
    }
    SUBCASE("gaps and trailing bytes") {
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[1]", 4, 8) + "}", d8), "tensor 'a'", "gap of 4 bytes");
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[1]", 0, 4) + "}", d8), "4 bytes after the last tensor");
    }
    SUBCASE("duplicate names") {
        CHECK_ST_ERROR(st_image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", d8),
                       "duplicate key \"a\"");
        // Duplicates inside an entry, and in __metadata__, are caught too.
        CHECK_ST_ERROR(st_image(R"({"a":{"dtype":"F32","dtype":"F16","shape":[2],"data_offsets":[0,8]}})", d8),
                       "duplicate key \"dtype\"");
        CHECK_ST_ERROR(st_image(R"({"__metadata__":{"k":"1","k":"2"}})", ""), "duplicate key \"k\"");
    }
    SUBCASE("metadata values must be strings") {
        CHECK_ST_ERROR(st_image(R"({"__metadata__":{"total_size":8}})", ""), "__metadata__[\"total_size\"]",
                       "must be a string");
        CHECK_ST_ERROR(st_image(R"({"__metadata__":["x"]})", ""), "__metadata__ must be an object");
    }
}

TEST_CASE("safetensors: files that are not safetensors files") {
    TempDir dir;
    CHECK_ERROR(SafeTensorsFile::open(dir / "none.safetensors"), "none.safetensors", "No such file");
    CHECK_ERROR(SafeTensorsFile::open(dir.path), "is a directory");
    write_file(dir / "empty.safetensors", "");
    CHECK_ERROR(SafeTensorsFile::open(dir / "empty.safetensors"), "empty.safetensors", "too small");
    write_file(dir / "text.safetensors", "this is not a safetensors file at all");
    CHECK_ERROR(SafeTensorsFile::open(dir / "text.safetensors"), "text.safetensors", "header length");
    // Truncated in the data section.
    write_file(dir / "trunc.safetensors", st_image("{" + entry("a", "F32", "[4]", 0, 16) + "}", std::string(10, 'x')));
    CHECK_ERROR(SafeTensorsFile::open(dir / "trunc.safetensors"), "trunc.safetensors", "tensor 'a'",
                "run past the data section");
}

TEST_CASE("checkpoint: a directory with model.safetensors") {
    auto c = Checkpoint::open(data_dir() / "model_single");
    CHECK(c.names() == std::vector<std::string>{"a.weight", "b.bias"});
    CHECK(read_as_float(c.get("a.weight")) == std::vector<float>{0, 1, 2, 3, 4, 5});
    CHECK(read_as_float(c.get("b.bias")) == std::vector<float>{0.5f, -0.5f});
    CHECK(c.get("a.weight").file.ends_with("model.safetensors"));
    CHECK_ERROR(c.get("c.weight"), "model_single", "tensor 'c.weight' not found");

    // A file path works too.
    auto f = Checkpoint::open(data_dir() / "model_single" / "model.safetensors");
    CHECK(f.size() == 2);
}

TEST_CASE("checkpoint: an index and two shards") {
    auto c = Checkpoint::open(data_dir() / "model_sharded");
    CHECK(c.names() == std::vector<std::string>{"a.weight", "b.bias", "c.weight"});
    CHECK(c.files().size() == 2);
    CHECK(read_as_float(c.get("a.weight")) == std::vector<float>{0, 1, 2, 3});
    CHECK(read_as_float(c.get("b.bias")) == std::vector<float>{1, 2, 3});
    CHECK(read_as_float(c.get("c.weight")) == std::vector<float>{0.25f, -4.0f, 8.0f, 1.5f, 0.0f, -0.125f});
    CHECK(c.get("c.weight").file.ends_with("model-00002-of-00002.safetensors"));
    CHECK(c.get("a.weight").file.ends_with("model-00001-of-00002.safetensors"));

    // Moving the checkpoint keeps the views.
    const std::byte* p = c.get("c.weight").data;
    Checkpoint d = std::move(c);
    CHECK(d.get("c.weight").data == p);

    // The listing API.
    auto list = list_tensors(data_dir() / "model_sharded");
    REQUIRE(list.size() == 3);
    CHECK(list[2].name == "c.weight");
    CHECK(list[2].file_dtype == FileDType::F16);
    CHECK(list[2].shape == std::vector<std::size_t>{2, 3});
    CHECK(list[2].data == nullptr);
    CHECK(list_tensors(data_dir() / "mixed.safetensors").size() == 8);
}

TEST_CASE("checkpoint: hostile directories") {
    TempDir dir;
    const std::string shard = st_image("{" + entry("a", "F32", "[1]", 0, 4) + "}", std::string(4, '\0'));
    auto index = [&](const std::string& weight_map) {
        write_file(dir / "model.safetensors.index.json", R"({"metadata":{"total_size":4},"weight_map":)" + weight_map + "}");
    };

    CHECK_ERROR(Checkpoint::open(dir.path), "no model.safetensors or model.safetensors.index.json");
    CHECK_ERROR(Checkpoint::open(dir / "nothing_here"), "nothing_here");

    write_file(dir / "s1.safetensors", shard);
    index(R"({"a":"s1.safetensors"})");
    CHECK(Checkpoint::open(dir.path).size() == 1);

    index(R"({"a":"../s1.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "model.safetensors.index.json", "weight_map[\"a\"]", "../s1.safetensors",
                "not a plain file name");
    index(R"({"a":"/etc/passwd"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "/etc/passwd", "not a plain file name");
    index(R"({"a":".."})");
    CHECK_ERROR(Checkpoint::open(dir.path), "not a plain file name");
    index(R"({"a":"sub\\s1.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "not a plain file name");
    index(R"({"a":""})");
    CHECK_ERROR(Checkpoint::open(dir.path), "empty shard file name");
    index(R"({"a":3})");
    CHECK_ERROR(Checkpoint::open(dir.path), "weight_map[\"a\"]", "must be a file name");

    index(R"({"a":"s1.safetensors","b":"s2.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "shard s2.safetensors", "'b'", "does not exist");

    index(R"({"a":"s1.safetensors","zz":"s1.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "tensor 'zz'", "s1.safetensors", "does not contain it");

    index(R"({"a":"s1.safetensors","a":"s1.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "duplicate key \"a\"");

    write_file(dir / "model.safetensors.index.json", R"({"metadata":{}})");
    CHECK_ERROR(Checkpoint::open(dir.path), "missing field \"weight_map\"");
    write_file(dir / "model.safetensors.index.json", R"({"weight_map":[]})");
    CHECK_ERROR(Checkpoint::open(dir.path), "weight_map must be an object");
    write_file(dir / "model.safetensors.index.json", R"({"metadata":3,"weight_map":{}})");
    CHECK_ERROR(Checkpoint::open(dir.path), "metadata must be an object");
    write_file(dir / "model.safetensors.index.json", "[");
    CHECK_ERROR(Checkpoint::open(dir.path), "model.safetensors.index.json", "invalid JSON");

    // A broken shard is reported with the shard's name.
    write_file(dir / "s1.safetensors", "garbage!");
    index(R"({"a":"s1.safetensors"})");
    CHECK_ERROR(Checkpoint::open(dir.path), "s1.safetensors", "header length");
}

TEST_CASE("safetensors: read_as_float on tensors large enough to be split across threads") {
    // Every 16-bit pattern once (plus a tail), as BF16 and as F16, starting one byte into the
    // data section so every element is misaligned; checked against the scalar conversions.
    const std::size_t n = 65536 + 7;
    std::string data(1 + 4 * n, '\0');
    for (std::size_t i = 0; i < 2 * n; ++i) {
        std::uint16_t bits = std::uint16_t(i * 40503u);  // odd multiplier: a permutation of the patterns
        std::memcpy(&data[1 + 2 * i], &bits, 2);
    }
    const std::string header = "{" + entry("pad", "U8", "[1]", 0, 1) + "," +
                               entry("b", "BF16", "[" + std::to_string(n) + "]", 1, 1 + 2 * n) + "," +
                               entry("h", "F16", "[" + std::to_string(n) + "]", 1 + 2 * n, 1 + 4 * n) + "}";
    const std::string img = st_image(header, data);
    auto f = SafeTensorsFile::from_memory(reinterpret_cast<const std::byte*>(img.data()), img.size(), "mem");
    auto b = read_as_float(f.get("b"));
    auto h = read_as_float(f.get("h"));
    std::size_t bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t bb, hb;
        std::memcpy(&bb, &data[1 + 2 * i], 2);
        std::memcpy(&hb, &data[1 + 2 * n + 2 * i], 2);
        bad += !same_float(b[i], float(flamingo::bf16::from_bits(bb)));
        bad += !same_float(h[i], flamingo::f16::to_float(hb));
    }
    CHECK(bad == 0);
}

TEST_CASE("safetensors: write_safetensors reads back, tensors aligned in the order given, bad entries refused") {
    const std::filesystem::path p = std::filesystem::temp_directory_path() /
                                    ("flamingo_write_" + std::to_string(::getpid()) + ".safetensors");
    const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
    const std::vector<std::uint8_t> u = {1, 2, 3};
    const std::vector<std::uint16_t> h = {0x3f80, 0xc000};
    write_safetensors(p,
                      {{"f", FileDType::F32, {2, 3}, f.data(), 24},
                       {"h", FileDType::BF16, {2}, h.data(), 4},
                       {"u", FileDType::U8, {3}, u.data(), 3}},
                      {{"k", "v"}});
    {
        const auto file = SafeTensorsFile::open(p);
        CHECK(file.metadata().at("k") == "v");
        REQUIRE(file.tensors().size() == 3);
        CHECK(file.tensors()[0].name == "f");  // data order is the order given
        CHECK(file.tensors()[2].name == "u");
        CHECK(reinterpret_cast<std::uintptr_t>(file.get("f").data) % 64 == 0);
        CHECK(read_as_float(file.get("f")) == f);
        CHECK(read_as_float(file.get("h")) == std::vector<float>{1.0f, -2.0f});
        CHECK(std::memcmp(file.get("u").data, u.data(), 3) == 0);
        CHECK(file.get("u").shape == std::vector<std::size_t>{3});
    }
    CHECK_THROWS_WITH_AS(write_safetensors(p, {{"a", FileDType::F32, {2}, f.data(), 4}}),
                         doctest::Contains("F32 [2] needs 8 bytes, given 4"), flamingo::Error);
    CHECK_THROWS_WITH_AS(write_safetensors(p, {{"a", FileDType::U8, {1}, u.data(), 1}, {"a", FileDType::U8, {1}, u.data(), 1}}),
                         doctest::Contains("used twice"), flamingo::Error);
    CHECK_THROWS_WITH_AS(write_safetensors("/nonexistent-dir/x.safetensors", {}), doctest::Contains("cannot write"),
                         flamingo::Error);
    std::filesystem::remove(p);
}

// Quantised model directories (`flamingo quantize`): what quantize_model
// writes loads as views into the mapping and gives, bit for bit, what
// quantising at load gives; inconsistent quantised tensors are one-line errors
// naming the file and the tensor.
#include "parity_util.hpp"

#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <unistd.h>

#include <flamingo/model/quantize.hpp>

namespace test_quantized_files {  // own names: the area compiles as one translation unit

using namespace flamingo;
namespace fs = std::filesystem;

namespace {

fs::path scratch(const std::string& name) {
    const fs::path d = fs::temp_directory_path() / ("flamingo_qfiles_" + std::to_string(::getpid())) / name;
    fs::remove_all(d);
    fs::create_directories(d.parent_path());
    return d;
}

const fs::path kBundled = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";

struct Run {
    std::vector<float> logits;
    std::vector<std::int32_t> tokens;
};

Run run(const std::shared_ptr<const Model>& m) {
    const fs::path ex = kBundled / "examples";
    Context c(m, {1, nullptr});
    c.set_media({(ex / "two_red_circles.png").string(), (ex / "yellow_diamond.png").string()});
    const std::string prompt = "<image>An image of two red circles.<|endofchunk|><image>An image of";
    Run r;
    const auto lg = c.logits(prompt);
    r.logits.assign(lg.data(), lg.data() + lg.size());
    generate::GenerateOptions o;
    o.max_new_tokens = 8;
    r.tokens = c.generate(prompt, o).tokens;
    return r;
}

// Expects loading `dir` to fail with a one-line error of `kind` containing every part.
void expect_load_error(const fs::path& dir, ErrorKind kind, const std::vector<std::string>& parts,
                       std::optional<WeightType> w = std::nullopt) {
    try {
        model::load_flamingo(dir, w);
        FAIL("no error loading ", dir.string());
    } catch (const Error& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(e.kind() == kind);
        CHECK(msg.find('\n') == std::string::npos);
        for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, p);
    }
}

// A copy of the quantised model directory `src` whose model.safetensors has
// its tensors passed through `edit` (which may change, drop or add entries).
fs::path corrupted(const fs::path& src, const std::string& name,
                   const std::function<void(std::vector<io::TensorToWrite>&, std::map<std::string, std::string>&)>& edit) {
    const fs::path d = scratch(name);
    fs::create_directories(d);
    for (const char* f : {"config.json", "tokenizer.json"}) fs::copy_file(src / f, d / f);
    const auto file = io::SafeTensorsFile::open(src / "model.safetensors");
    std::vector<io::TensorToWrite> ts;
    for (const auto& t : file.tensors()) ts.push_back({t.name, t.file_dtype, t.shape, t.data, t.nbytes});
    auto meta = file.metadata();
    edit(ts, meta);
    io::write_safetensors(d / "model.safetensors", ts, meta);
    return d;
}

io::TensorToWrite& entry(std::vector<io::TensorToWrite>& ts, const std::string& name) {
    for (auto& t : ts)
        if (t.name == name) return t;
    FAIL("no tensor ", name);
    return ts.front();
}

}  // namespace

TEST_CASE("quantize: the written directory loads as views and gives the quantise-at-load logits bit for bit") {
    for (WeightType w : {WeightType::Q8, WeightType::Q4}) {
        const std::string fmt(model::weight_type_name(w));
        CAPTURE(fmt);
        const fs::path out = scratch("bundled-" + fmt);
        const auto s = model::quantize_model(kBundled, out, w);
        CHECK(s.matrices == 85);  // every linear layer of the bundled model (its head is not tied)
        CHECK(s.bytes_out < s.bytes_in);
        for (const char* f : {"config.json", "tokenizer.json", "README.md", "examples/demo.json"})
            CHECK_MESSAGE(fs::exists(out / f), f);

        const auto at_load = Model::load(kBundled, {w});
        const auto stored = Model::load(out);  // the format is recognised without asking
        REQUIRE(stored->network().weight_type() == w);
        CHECK(stored->network().unused_tensors().empty());

        // Every quantised matrix is a view into the mapping; only float
        // parameters converted from the stored BF16 are copies.
        const auto& qa = at_load->network().weights().quantized_matrices();
        const auto& qs = stored->network().weights().quantized_matrices();
        CHECK(at_load->network().copied_quantized_bytes() > 0);
        CHECK(stored->network().copied_quantized_bytes() == 0);
        CHECK(stored->network().copied_weight_bytes() ==
              at_load->network().copied_weight_bytes() - at_load->network().copied_quantized_bytes());
        REQUIRE(qa.size() == qs.size());
        for (const auto& [name, a] : qa) {
            const kernels::QMatrix& b = qs.at(name);
            CHECK(b.data == stored->network().weights().checkpoint().get(name).data);
            CHECK(std::memcmp(a.data, b.data, a.rows * a.row_bytes()) == 0);
        }

        const Run ra = run(at_load), rs = run(stored);
        REQUIRE(ra.logits.size() == rs.logits.size());
        CHECK(std::memcmp(ra.logits.data(), rs.logits.data(), ra.logits.size() * sizeof(float)) == 0);
        CHECK(ra.tokens == rs.tokens);

        // Asking for its own format is fine; for another is an error.
        CHECK(Model::load(out, {w})->network().weight_type() == w);
        for (WeightType other : {WeightType::F32, WeightType::BF16, w == WeightType::Q8 ? WeightType::Q4 : WeightType::Q8})
            expect_load_error(out, ErrorKind::Input, {out.string(), "stored quantised to " + fmt}, other);
        fs::remove_all(out);
    }
}

TEST_CASE("quantize: refuses a non-empty output directory and non-quantised formats") {
    const fs::path out = scratch("refuse");
    fs::create_directories(out);
    model::quantize_model(fixture::dir("llama"), out, WeightType::Q8);  // an empty directory is fine
    try {
        model::quantize_model(fixture::dir("llama"), out, WeightType::Q8);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.kind() == ErrorKind::File);
        CHECK(std::string(e.what()).find("not empty") != std::string::npos);
    }
    CHECK_THROWS_AS(model::quantize_model(fixture::dir("llama"), scratch("bf16"), WeightType::BF16), Error);
    CHECK(!fs::exists(scratch("bf16")));
    // A failing source leaves nothing behind.
    CHECK_THROWS_AS(model::quantize_model(scratch("nothing"), scratch("from-nothing"), WeightType::Q8), Error);
    CHECK(!fs::exists(scratch("from-nothing")));
    fs::remove_all(out);
}

TEST_CASE("quantised files: inconsistent tensors are one-line errors naming the file and the tensor") {
    const fs::path q8 = scratch("llama-q8"), q4 = scratch("llama-q4");
    model::quantize_model(fixture::dir("llama"), q8, WeightType::Q8);
    model::quantize_model(fixture::dir("llama"), q4, WeightType::Q4);
    CHECK_NOTHROW(model::load_flamingo(q8));
    CHECK_NOTHROW(model::load_flamingo(q4));
    const auto loaded = model::load_flamingo(q8);
    const auto& names = loaded->weights().quantized_matrices();
    REQUIRE(!names.empty());
    std::string mlp;
    for (const auto& [n, m] : names)
        if (n.ends_with("mlp.down_proj.weight")) mlp = n;
    REQUIRE(!mlp.empty());
    const kernels::QMatrix m = names.at(mlp);
    const std::string file = "model.safetensors";
    std::vector<float> floats(m.rows * (m.blocks() + 1) * 2, 0.5f);
    std::vector<std::uint8_t> bytes(m.rows * m.row_bytes() * 2, 1);

    SUBCASE("scales of the wrong count") {
        const fs::path d = corrupted(q8, "scales-count", [&](auto& ts, auto&) {
            auto& s = entry(ts, mlp + ".scales");
            s.shape = {m.rows, m.blocks() + 1};
            s.data = floats.data(), s.nbytes = m.rows * (m.blocks() + 1) * 2;
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + ".scales'", "expected shape", "found"});
    }
    SUBCASE("BF16 scales") {
        const fs::path d = corrupted(q8, "scales-bf16", [&](auto& ts, auto&) {
            entry(ts, mlp + ".scales").dtype = io::FileDType::BF16;
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + ".scales'", "must be F16 (or F32), found BF16"});
    }
    SUBCASE("F32 scales and offsets, as written before they were f16, load as their f16 values") {
        const auto q4_loaded = model::load_flamingo(q4);
        const kernels::QMatrix m4 = q4_loaded->weights().quantized_matrices().at(mlp);
        std::vector<float> sc(m4.rows * m4.blocks()), of(sc.size());
        for (std::size_t i = 0; i < sc.size(); ++i) sc[i] = float(m4.scales[i]), of[i] = float(m4.offsets[i]);
        const fs::path d = corrupted(q4, "scales-f32", [&](auto& ts, auto&) {
            for (auto [suffix, v] : {std::pair{".scales", &sc}, std::pair{".offsets", &of}}) {
                auto& s = entry(ts, mlp + suffix);
                s.dtype = io::FileDType::F32, s.data = v->data(), s.nbytes = v->size() * sizeof(float);
            }
        });
        const auto old = model::load_flamingo(d);
        const kernels::QMatrix mo = old->weights().quantized_matrices().at(mlp);
        CHECK(std::memcmp(mo.scales, m4.scales, sc.size() * sizeof(f16)) == 0);
        CHECK(std::memcmp(mo.offsets, m4.offsets, sc.size() * sizeof(f16)) == 0);
        CHECK(old->copied_quantized_bytes() == 2 * sc.size() * sizeof(f16));
    }
    SUBCASE("an I16 matrix") {
        const fs::path d = corrupted(q8, "weight-i16", [&](auto& ts, auto&) {
            auto& t = entry(ts, mlp);
            t.dtype = io::FileDType::I16, t.shape = {m.rows, m.row_bytes() / 2};
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + "'", "must be I8, found I16"});
    }
    SUBCASE("a row length that is not a multiple of 32") {
        const fs::path d = corrupted(q8, "in32", [&](auto& ts, auto&) {
            auto& t = entry(ts, mlp);
            t.shape = {m.rows, m.row_bytes() + 8};
            t.data = bytes.data(), t.nbytes = m.rows * (m.row_bytes() + 8);
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + "'", "not a multiple of 32"});
    }
    SUBCASE("a matrix of the wrong packed shape") {
        const fs::path d = corrupted(q8, "packed-shape", [&](auto& ts, auto&) {
            auto& t = entry(ts, mlp);
            t.shape = {m.rows, m.row_bytes() + 32};
            t.data = bytes.data(), t.nbytes = m.rows * (m.row_bytes() + 32);
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + "'", "expected shape"});
    }
    SUBCASE("q4 without offsets") {
        const fs::path d = corrupted(q4, "no-offsets", [&](auto& ts, auto&) {
            std::erase_if(ts, [&](const io::TensorToWrite& t) { return t.name == mlp + ".offsets"; });
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + ".offsets' is missing"});
    }
    SUBCASE("a q4 matrix in a q8 file") {
        const fs::path d = corrupted(q8, "u8-in-q8", [&](auto& ts, auto&) {
            auto& t = entry(ts, mlp);
            t.dtype = io::FileDType::U8, t.shape = {m.rows, m.row_bytes() / 2}, t.nbytes /= 2;
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + mlp + "'", "must be I8, found U8"});
    }
    SUBCASE("scales beside a tensor the model takes as float") {
        const std::string embed = "lang_encoder.model.embed_tokens.weight";
        const fs::path d = corrupted(q8, "float-with-scales", [&](auto& ts, auto&) {
            ts.push_back({embed + ".scales", io::FileDType::F32, {2}, floats.data(), 8});
        });
        expect_load_error(d, ErrorKind::Shape, {file, "'" + embed + "'", "takes it as float"});
    }
    SUBCASE("quantised tensors without the metadata load only when asked for") {
        const fs::path d = corrupted(q8, "no-metadata", [&](auto&, auto& meta) { meta.erase(model::kQuantizationKey); });
        expect_load_error(d, ErrorKind::Shape, {file, "takes it as float", "--weights q8|q4"});
        CHECK(model::load_flamingo(d, WeightType::Q8)->copied_quantized_bytes() == 0);
    }
    SUBCASE("an unknown format in the metadata") {
        const fs::path d = corrupted(q8, "q5", [&](auto&, auto& meta) { meta[model::kQuantizationKey] = "q5"; });
        expect_load_error(d, ErrorKind::Format, {file, model::kQuantizationKey, "\"q5\""});
    }
    fs::remove_all(q8.parent_path());
}

}  // namespace test_quantized_files

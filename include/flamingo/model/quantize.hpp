#pragma once
// Writing a quantised model directory (`flamingo quantize`): the model is
// loaded with q8 or q4 weights, exactly as `--weights q8|q4` loads it, and the
// quantised matrices it holds are written out under the names the README
// documents ("Quantised weights"), so that loading the new directory gives
// the same matrices, bit for bit, as views into its mapping.
//
// The output directory gets one model.safetensors: for every linear layer's
// matrix `<name>`, `<name>` I8 [out, in32] (q8) or U8 [out, in32 / 2] (q4),
// `<name>.scales` F16 [out, in32 / 32] and for q4 `<name>.offsets` F16
// [out, in32 / 32]; every other tensor as stored in the source (same dtype
// and bytes); __metadata__ {"format": "pt", "flamingo.quantization": "q8"|"q4"},
// by which a load recognises the format. Every other file and directory of
// the source (config.json, tokenizer.json, ...) is copied as it is.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../io/safetensors.hpp"
#include "flamingo.hpp"
#include "weights.hpp"

namespace flamingo::model {

struct QuantizeSummary {
    std::size_t matrices = 0;     // linear layers' matrices written quantised
    std::size_t tensors = 0;      // tensors written in all
    std::uint64_t bytes_in = 0;   // the source's tensor bytes
    std::uint64_t bytes_out = 0;  // the output's tensor bytes
};

namespace detail {

inline bool is_weight_file(const std::filesystem::path& p) {
    const std::string n = p.filename().string();
    return n.ends_with(".safetensors") || n == io::Checkpoint::kIndexFile;
}

}  // namespace detail

// Writes the model directory `src` quantised to `type` (q8 or q4) into `out`,
// which must not exist or be an empty directory (nothing is overwritten). On
// an error, what was written is removed again.
inline QuantizeSummary quantize_model(const std::filesystem::path& src, const std::filesystem::path& out,
                                      WeightType type) {
    namespace fs = std::filesystem;
    check(is_quantized(type), ErrorKind::Input, "quantize writes q8 or q4 weights, not ",
          weight_type_name(type));
    std::error_code ec;
    bool created = false;
    if (fs::exists(out, ec)) {
        check(fs::is_directory(out, ec), ErrorKind::File, out.string(), ": exists and is not a directory");
        check(fs::is_empty(out, ec), ErrorKind::File, out.string(),
              ": exists and is not empty (quantize writes a new model directory and overwrites nothing)");
    }

    // Load first: a source that does not load is not written out.
    const std::unique_ptr<Flamingo> net = load_flamingo(src, type);
    const Weights& w = net->weights();
    const io::Checkpoint& ckpt = w.checkpoint();
    const auto& q = w.quantized_matrices();

    QuantizeSummary sum;
    std::vector<io::TensorToWrite> quantised, plain;
    for (const auto& [name, m] : q) {
        const std::size_t blocks = m.rows * m.blocks();
        quantised.push_back({name, m.format == kernels::QFormat::Q8 ? io::FileDType::I8 : io::FileDType::U8,
                             {m.rows, m.row_bytes()}, m.data, m.rows * m.row_bytes()});
        plain.push_back({name + Weights::kScales, io::FileDType::F16, {m.rows, m.blocks()}, m.scales,
                         blocks * sizeof(f16)});
        if (m.format == kernels::QFormat::Q4)
            plain.push_back({name + Weights::kOffsets, io::FileDType::F16, {m.rows, m.blocks()}, m.offsets,
                             blocks * sizeof(f16)});
        ++sum.matrices;
    }
    auto quantised_part = [&](const std::string& n) {
        for (const char* suffix : {Weights::kScales, Weights::kOffsets})
            if (n.ends_with(suffix) && q.count(n.substr(0, n.size() - std::string(suffix).size()))) return true;
        return q.count(n) != 0;
    };
    for (const std::string& n : ckpt.names()) {
        const io::TensorInfo& t = ckpt.get(n);
        sum.bytes_in += t.nbytes;
        if (!quantised_part(n)) plain.push_back({n, t.file_dtype, t.shape, t.data, t.nbytes});
    }
    // Quantised bytes first (each a multiple of 16 bytes), then the rest by
    // falling element size: every tensor lands aligned for its dtype.
    std::stable_sort(plain.begin(), plain.end(), [](const io::TensorToWrite& a, const io::TensorToWrite& b) {
        return io::file_dtype_size(a.dtype) > io::file_dtype_size(b.dtype);
    });
    std::vector<io::TensorToWrite> all = std::move(quantised);
    all.insert(all.end(), plain.begin(), plain.end());
    sum.tensors = all.size();
    for (const auto& t : all) sum.bytes_out += t.nbytes;

    if (!fs::exists(out, ec)) {
        fs::create_directories(out, ec);
        check(!ec, ErrorKind::File, out.string(), ": cannot create the directory: ", ec.message());
        created = true;
    }
    try {
        io::write_safetensors(out / io::Checkpoint::kSingleFile, all,
                              {{"format", "pt"}, {kQuantizationKey, std::string(weight_type_name(type))}});
        for (const fs::directory_entry& e : fs::directory_iterator(src)) {
            if (e.is_regular_file() && detail::is_weight_file(e.path())) continue;
            fs::copy(e.path(), out / e.path().filename(), fs::copy_options::recursive, ec);
            check(!ec, ErrorKind::File, "cannot copy ", e.path().string(), " to ", out.string(), ": ", ec.message());
        }
    } catch (...) {
        std::error_code ignore;
        if (created) {
            fs::remove_all(out, ignore);
        } else {
            for (const fs::directory_entry& e : fs::directory_iterator(out, ignore)) fs::remove_all(e.path(), ignore);
        }
        throw;
    }
    return sum;
}

}  // namespace flamingo::model

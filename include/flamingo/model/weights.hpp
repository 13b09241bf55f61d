#pragma once
// Weights as the model takes them from a checkpoint: dtype-tagged views into
// the memory-mapped files when the stored dtype is the one the model runs
// with (no copy), converted copies otherwise. Every tensor is checked for
// presence and shape as it is taken, with an error naming it; what the model
// never took is reported afterwards. The nn modules are built here, so that
// nn/ knows nothing of files.
#include <cmath>
#include <cstring>
#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../io/safetensors.hpp"
#include "../nn/linear.hpp"
#include "../nn/norm.hpp"

namespace flamingo::model {

// The element type of the large matrices (projections, MLPs, embeddings, head);
// norms, biases and small parameters are always float. Q8 and Q4 hold every
// linear layer's matrix quantised (kernels/quant.hpp) and keep the token
// embedding in f32: a matrix stored quantised (`<name>` with `<name>.scales`,
// as `flamingo quantize` writes it) is viewed in place in the mapping, a float
// one is quantised at load.
enum class WeightType { F32, BF16, Q8, Q4 };

inline std::string_view weight_type_name(WeightType t) {
    switch (t) {
        case WeightType::F32: return "f32";
        case WeightType::BF16: return "bf16";
        case WeightType::Q8: return "q8";
        case WeightType::Q4: return "q4";
    }
    return "?";
}
// "f32", "bf16", "q8" or "q4".
inline std::optional<WeightType> parse_weight_type(std::string_view s) {
    for (WeightType t : {WeightType::F32, WeightType::BF16, WeightType::Q8, WeightType::Q4})
        if (weight_type_name(t) == s) return t;
    return std::nullopt;
}
inline bool is_quantized(WeightType t) { return t == WeightType::Q8 || t == WeightType::Q4; }

// The safetensors __metadata__ key by which a quantised model directory (as
// `flamingo quantize` writes it) states its format: "q8" or "q4".
inline constexpr const char* kQuantizationKey = "flamingo.quantization";

// The format a checkpoint's files state under kQuantizationKey, if any; files
// that disagree, or an unknown value, are an error naming the file.
inline std::optional<WeightType> stored_quantization(const io::Checkpoint& ckpt) {
    std::optional<WeightType> found;
    std::string first;
    for (const io::SafeTensorsFile& f : ckpt.files()) {
        auto it = f.metadata().find(kQuantizationKey);
        if (it == f.metadata().end()) continue;
        auto t = parse_weight_type(it->second);
        if (!t || !is_quantized(*t))
            fail(ErrorKind::Format, f.source(), ": __metadata__[\"", kQuantizationKey, "\"] is \"", it->second,
                 "\" (expected \"q8\" or \"q4\")");
        if (found && *found != *t)
            fail(ErrorKind::Format, f.source(), ": __metadata__[\"", kQuantizationKey, "\"] is \"", it->second,
                 "\" but ", first, " says \"", weight_type_name(*found), "\"");
        found = t, first = f.source();
    }
    return found;
}

// The weight type a load uses: the one asked for, else the stored
// quantisation, else f32. Asking a quantised checkpoint for another type is
// an error (its matrices are not dequantised or requantised).
inline WeightType resolve_weight_type(const io::Checkpoint& ckpt, std::optional<WeightType> asked) {
    const std::optional<WeightType> stored = stored_quantization(ckpt);
    if (stored && asked && *asked != *stored)
        fail(ErrorKind::Input, ckpt.source(), ": the model's weights are stored quantised to ",
             weight_type_name(*stored), " and load only as ", weight_type_name(*stored), ", not as ",
             weight_type_name(*asked), " (leave out --weights, or load the unquantised model)");
    return asked.value_or(stored.value_or(WeightType::F32));
}

// Owns the checkpoint (its mappings) and every converted copy: the model keeps
// it alive as long as it uses the weights.
class Weights {
public:
    // Suffixes of a quantised matrix's scales and (q4) offsets (README, "Quantised weights").
    static constexpr const char* kScales = ".scales";
    static constexpr const char* kOffsets = ".offsets";

    Weights(io::Checkpoint ckpt, WeightType type) : ckpt_(std::move(ckpt)), type_(type) {}
    Weights(const Weights&) = delete;
    Weights& operator=(const Weights&) = delete;

    WeightType type() const { return type_; }
    bool has(const std::string& name) const { return ckpt_.contains(name); }
    // True when the tensor is stored quantised (`name.scales` is present).
    bool stored_quantized(const std::string& name) const { return ckpt_.contains(name + kScales); }
    // The stored shape, when the tensor exists (does not count as taking it).
    std::optional<std::vector<std::size_t>> shape_of(const std::string& name) const {
        if (const io::TensorInfo* t = ckpt_.find(name)) return t->shape;
        return std::nullopt;
    }

    // The tensor, checked against the expected shape.
    const io::TensorInfo& tensor(const std::string& name, std::span<const std::size_t> shape) {
        const io::TensorInfo* t = ckpt_.find(name);
        if (!t)
            fail(ErrorKind::Shape, ckpt_.source(), ": required tensor '", name, "' is missing (expected shape ",
                 io::shape_string(shape), ")");
        if (const io::TensorInfo* s = ckpt_.find(name + kScales))
            fail(ErrorKind::Shape, s->file, ": tensor '", name, "' is stored quantised ('", name, kScales,
                 "' is present) but the model takes it as float (",
                 is_quantized(type_) ? "only linear layers' matrices may be quantised"
                                     : "weights " + std::string(weight_type_name(type_)) + "; load it with --weights q8|q4",
                 ")");
        io::check_shape(*t, shape);
        t->dtype();  // throws for non-float dtypes, naming the tensor
        check(t->is_float(), ErrorKind::Shape, t->file, ": tensor '", name, "' must be F32, F16 or BF16");
        used_.insert(name);
        return *t;
    }

    // A float tensor (any stored dtype), viewed in place when possible.
    const float* floats(const std::string& name, std::initializer_list<std::size_t> shape) {
        return floats(name, std::span<const std::size_t>(shape.begin(), shape.size()));
    }
    const float* floats(const std::string& name, std::span<const std::size_t> shape) {
        const io::TensorInfo& t = tensor(name, shape);
        if (t.file_dtype == io::FileDType::F32 && io::is_aligned(t)) return reinterpret_cast<const float*>(t.data);
        auto& buf = owned_f32_.emplace_back(t.numel());
        io::read_as_float(t, buf.data());
        return buf.data();
    }

    // A large matrix [rows, cols] in the model's float weight type (f32 when quantised).
    AnyView matrix(const std::string& name, std::size_t rows, std::size_t cols) {
        const std::size_t shape[2] = {rows, cols};
        return matrix(name, shape, rows, cols);
    }
    // A tensor of the given stored shape read as a [rows, cols] matrix (a conv kernel as a linear map).
    AnyView matrix(const std::string& name, std::span<const std::size_t> shape, std::size_t rows, std::size_t cols) {
        const io::TensorInfo& t = tensor(name, shape);
        check(t.numel() == rows * cols, ErrorKind::Shape, name, ": cannot view ", io::shape_string(shape), " as [",
              rows, ", ", cols, "]");
        if (type_ != WeightType::BF16) {
            if (t.file_dtype == io::FileDType::F32 && io::is_aligned(t)) return {DType::F32, t.data, {rows, cols}};
            auto& buf = owned_f32_.emplace_back(t.numel());
            io::read_as_float(t, buf.data());
            return {DType::F32, buf.data(), {rows, cols}};
        }
        if (t.file_dtype == io::FileDType::BF16 && io::is_aligned(t)) return {DType::BF16, t.data, {rows, cols}};
        std::vector<float> tmp(t.numel());
        io::read_as_float(t, tmp.data());
        auto& buf = owned_b16_.emplace_back(t.numel());
        for (std::size_t i = 0; i < tmp.size(); ++i) buf[i] = bf16(tmp[i]);
        return {DType::BF16, buf.data(), {rows, cols}};
    }

    // The weights of a linear layer [rows, cols] (no bias): the model's weight
    // type, quantised at load for q8/q4.
    nn::Linear projection(const std::string& name, std::size_t rows, std::size_t cols) {
        const std::size_t shape[2] = {rows, cols};
        return projection(name, shape, rows, cols);
    }
    nn::Linear projection(const std::string& name, std::span<const std::size_t> shape, std::size_t rows,
                          std::size_t cols) {
        if (!is_quantized(type_)) {
            nn::Linear l;
            l.w = matrix(name, shape, rows, cols);
            return l;
        }
        if (stored_quantized(name)) return mapped_quantized(name, rows, cols);
        const io::TensorInfo& t = tensor(name, shape);
        check(t.numel() == rows * cols, ErrorKind::Shape, name, ": cannot view ", io::shape_string(shape), " as [",
              rows, ", ", cols, "]");
        const float* f = nullptr;
        std::vector<float> tmp;
        if (t.file_dtype == io::FileDType::F32 && io::is_aligned(t)) {
            f = reinterpret_cast<const float*>(t.data);
        } else {
            tmp.resize(t.numel());
            io::read_as_float(t, tmp.data());
            f = tmp.data();
        }
        return quantized(f, rows, cols, t.file, name);
    }
    // A linear layer sharing a float matrix of the model (a tied output head):
    // the same view, or a quantised copy for q8/q4.
    nn::Linear projection_of(const AnyView& m) {
        if (!is_quantized(type_)) {
            nn::Linear l;
            l.w = m;
            return l;
        }
        return quantized(m.as<float, 2>().data(), m.extent(0), m.extent(1), source(), "(tied output head)", false);
    }

    nn::Linear linear(const std::string& prefix, std::size_t out, std::size_t in, bool bias) {
        nn::Linear l = projection(prefix + ".weight", out, in);
        if (bias) l.bias = floats(prefix + ".bias", {out});
        return l;
    }
    nn::Norm layer_norm(const std::string& prefix, std::size_t n, float eps, bool bias = true) {
        nn::Norm r;
        r.n = n, r.eps = eps;
        r.weight = floats(prefix + ".weight", {n});
        if (bias) r.bias = floats(prefix + ".bias", {n});
        return r;
    }
    nn::Norm rms_norm(const std::string& prefix, std::size_t n, float eps) {
        nn::Norm r;
        r.kind = nn::Norm::Kind::RMSNorm;
        r.n = n, r.eps = eps;
        r.weight = floats(prefix + ".weight", {n});
        return r;
    }

    // Tensors the model did not take, except the duplicates PyTorch lists.
    std::vector<std::string> unused() const {
        std::vector<std::string> out;
        for (const auto& n : ckpt_.names()) {
            if (used_.count(n)) continue;
            if (n.starts_with("lang_encoder.old_decoder_blocks.") ||
                n.starts_with("lang_encoder.gated_cross_attn_layers."))
                continue;
            out.push_back(n);
        }
        return out;
    }

    // Bytes of weights copied out of the mapping (converted or realigned).
    std::size_t copied_bytes() const {
        std::size_t n = 0;
        for (auto& b : owned_f32_) n += b.size() * sizeof(float);
        for (auto& b : owned_b16_) n += b.size() * sizeof(bf16);
        for (auto& b : owned_f16_) n += b.size() * sizeof(f16);
        for (auto& b : owned_q_) n += b.data.size() + (b.scales.size() + b.offsets.size()) * sizeof(f16);
        return n;
    }
    // Of those, the bytes of quantised matrices (quantised at load, or their
    // scales realigned): 0 when every quantised matrix is a view into the mapping.
    std::size_t copied_quantized_bytes() const {
        std::size_t n = copied_scale_bytes_;
        for (auto& b : owned_q_) n += b.data.size() + (b.scales.size() + b.offsets.size()) * sizeof(f16);
        return n;
    }

    // The quantised matrices of named linear layers, by tensor name (for
    // writing them out; the tied output head has no name of its own).
    const std::map<std::string, kernels::QMatrix>& quantized_matrices() const { return quantized_; }
    const io::Checkpoint& checkpoint() const { return ckpt_; }

    const std::string& source() const { return ckpt_.source(); }

private:
    io::Checkpoint ckpt_;
    WeightType type_;
    std::set<std::string> used_;
    // Deques keep element addresses stable as buffers are added.
    std::deque<std::vector<float>> owned_f32_;
    std::deque<std::vector<bf16>> owned_b16_;
    std::deque<std::vector<f16>> owned_f16_;  // quantised matrices' scales, realigned or from F32
    std::deque<kernels::QBuffer> owned_q_;
    std::map<std::string, kernels::QMatrix> quantized_;
    std::size_t copied_scale_bytes_ = 0;

    kernels::QFormat qformat() const { return type_ == WeightType::Q8 ? kernels::QFormat::Q8 : kernels::QFormat::Q4; }

    // An F16 [rows, blocks] companion of a stored quantised matrix, in place
    // when aligned (a copy otherwise). F32, as directories written before
    // scales were f16 hold, is rounded to f16 (a copy).
    const f16* block_halves(const std::string& name, const std::string& what, const kernels::QMatrix& m,
                            const std::string& matrix_file) {
        const io::TensorInfo* t = ckpt_.find(name);
        if (!t)
            fail(ErrorKind::Shape, matrix_file, ": tensor '", name, "' is missing (", what, " of the ",
                 kernels::qformat_name(m.format), " matrix '", name.substr(0, name.rfind('.')), "', F16 [", m.rows,
                 ", ", m.blocks(), "])");
        if (t->file_dtype != io::FileDType::F16 && t->file_dtype != io::FileDType::F32)
            fail(ErrorKind::Shape, t->file, ": tensor '", name, "': ", what, " must be F16 (or F32), found ",
                 io::file_dtype_name(t->file_dtype));
        const std::size_t want[2] = {m.rows, m.blocks()};
        if (!std::equal(t->shape.begin(), t->shape.end(), want, want + 2))
            fail(ErrorKind::Shape, t->file, ": tensor '", name, "': expected shape ", io::shape_string(want), " (",
                 what, ": one per block of 32 inputs of each of ", m.rows, " rows of ", m.cols, " inputs), found ",
                 io::shape_string(t->shape));
        used_.insert(name);
        if (t->file_dtype == io::FileDType::F16 && io::is_aligned(*t)) return reinterpret_cast<const f16*>(t->data);
        std::vector<float> tmp(t->numel());
        io::read_as_float(*t, tmp.data());
        auto& buf = owned_f16_.emplace_back(tmp.size());
        for (std::size_t i = 0; i < tmp.size(); ++i) buf[i] = f16(tmp[i]);
        copied_scale_bytes_ += buf.size() * sizeof(f16);
        return buf.data();
    }

    // A linear layer's matrix [rows, cols] stored quantised: `name` I8 [rows,
    // in32] (q8) or U8 [rows, in32 / 2] (q4), `name.scales` F16 [rows, in32 /
    // 32], for q4 `name.offsets` likewise; in32 is cols rounded up to a
    // multiple of 32. Viewed in place: nothing is copied.
    nn::Linear mapped_quantized(const std::string& name, std::size_t rows, std::size_t cols) {
        const kernels::QFormat fmt = qformat();
        const io::FileDType want = fmt == kernels::QFormat::Q8 ? io::FileDType::I8 : io::FileDType::U8;
        const io::TensorInfo* t = ckpt_.find(name);
        if (!t)
            fail(ErrorKind::Shape, ckpt_.source(), ": tensor '", name, kScales, "' is present but the matrix '", name,
                 "' is missing");
        if (t->file_dtype != want)
            fail(ErrorKind::Shape, t->file, ": tensor '", name, "': a ", kernels::qformat_name(fmt),
                 " matrix must be ", io::file_dtype_name(want), ", found ", io::file_dtype_name(t->file_dtype),
                 " (it has '", name, kScales, "')");
        kernels::QMatrix m{fmt, rows, cols};
        const std::size_t per_byte = fmt == kernels::QFormat::Q8 ? 1 : 2;
        if (t->rank() == 2 && (t->shape[1] * per_byte) % kernels::kQBlock != 0)
            fail(ErrorKind::Shape, t->file, ": tensor '", name, "': ", io::file_dtype_name(want), " ",
                 io::shape_string(t->shape), " holds ", t->shape[1] * per_byte, " inputs per row, not a multiple of ",
                 kernels::kQBlock);
        const std::size_t want_shape[2] = {rows, m.row_bytes()};
        if (!std::equal(t->shape.begin(), t->shape.end(), want_shape, want_shape + 2))
            fail(ErrorKind::Shape, t->file, ": tensor '", name, "': expected shape ", io::shape_string(want_shape),
                 " (", kernels::qformat_name(fmt), " of [", rows, ", ", cols, "]), found ", io::shape_string(t->shape));
        used_.insert(name);
        m.data = t->data;
        m.scales = block_halves(name + kScales, "scales", m, t->file);
        if (fmt == kernels::QFormat::Q4) m.offsets = block_halves(name + kOffsets, "offsets", m, t->file);
        quantized_[name] = m;
        nn::Linear l;
        l.q = m;
        return l;
    }

    // A NaN or infinity would spread over its whole block (through the scale),
    // and a weight beyond f16's range has no scale: refused, naming the tensor
    // and the element.
    // `named`: the matrix is the checkpoint tensor `name` (not the tied head).
    nn::Linear quantized(const float* f, std::size_t rows, std::size_t cols, const std::string& file,
                         const std::string& name, bool named = true) {
        for (std::size_t i = 0; i < rows * cols; ++i)
            if (!std::isfinite(f[i]))
                fail(ErrorKind::Format, file, ": tensor '", name, "' has a non-finite value at [", i / cols, ", ",
                     i % cols, "] and cannot be quantised to ", weight_type_name(type_));
        const auto fmt = qformat();
        kernels::QBuffer q;
        try {
            q = kernels::quantize(fmt, f, rows, cols, cols);
        } catch (const Error& e) {  // a weight beyond f16 scales' range: name the tensor
            fail(ErrorKind::Format, file, ": tensor '", name, "': ", e.what());
        }
        auto& buf = owned_q_.emplace_back(std::move(q));
        nn::Linear l;
        l.q = buf.view(fmt, rows, cols);
        if (named) quantized_[name] = l.q;
        return l;
    }
};

}  // namespace flamingo::model

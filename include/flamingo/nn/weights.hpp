#pragma once
// Weights as the model sees them: views into the memory-mapped checkpoint when
// the stored dtype is the one the model runs with (no copy), converted copies
// otherwise. Every tensor is checked for presence and shape as it is taken,
// with an error naming it; what the model never took is reported afterwards.
#include <cstring>
#include <deque>
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

namespace flamingo::nn {

// The element type of the large matrices (projections, MLPs, embeddings, head);
// norms, biases and small parameters are always float.
enum class WeightType { F32, BF16 };

// A [rows, cols] row-major matrix stored as float or bf16.
struct Matrix {
    const float* f32 = nullptr;
    const bf16* b16 = nullptr;
    std::size_t rows = 0, cols = 0;

    bool empty() const { return !f32 && !b16; }
    std::size_t bytes() const { return rows * cols * (f32 ? 4 : 2); }
    // Row r converted to float.
    void row(std::size_t r, float* out) const {
        if (f32) {
            std::memcpy(out, f32 + r * cols, cols * sizeof(float));
        } else {
            const bf16* p = b16 + r * cols;
            for (std::size_t i = 0; i < cols; ++i) out[i] = float(p[i]);
        }
    }
};

// Owns the checkpoint (its mappings) and every converted copy, so the model
// keeps it alive as long as it uses the weights.
class WeightLoader {
public:
    WeightLoader(io::Checkpoint ckpt, WeightType type) : ckpt_(std::move(ckpt)), type_(type) {}
    WeightLoader(const WeightLoader&) = delete;
    WeightLoader& operator=(const WeightLoader&) = delete;

    WeightType type() const { return type_; }
    bool has(const std::string& name) const { return ckpt_.contains(name); }
    // The stored shape, when the tensor exists (does not count as taking it).
    std::optional<std::vector<std::size_t>> shape_of(const std::string& name) const {
        if (const io::TensorInfo* t = ckpt_.find(name)) return t->shape;
        return std::nullopt;
    }

    // The tensor, checked against the expected shape.
    const io::TensorInfo& tensor(const std::string& name, std::span<const std::size_t> shape) {
        const io::TensorInfo* t = ckpt_.find(name);
        if (!t) fail(ckpt_.source(), ": required tensor '", name, "' is missing (expected shape ",
                     io::shape_string(shape), ")");
        io::check_shape(*t, shape);
        t->dtype();  // throws for non-float dtypes, naming the tensor
        check(t->is_float(), t->file, ": tensor '", name, "' must be F32, F16 or BF16");
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
    const float* floats_or_null(const std::string& name, std::initializer_list<std::size_t> shape) {
        return has(name) ? floats(name, shape) : nullptr;
    }

    // A large matrix in the model's weight type.
    Matrix matrix(const std::string& name, std::size_t rows, std::size_t cols) {
        const std::size_t shape[2] = {rows, cols};
        return matrix(name, shape, rows, cols);
    }
    // A tensor of the given stored shape read as a [rows, cols] matrix (a conv kernel as a linear map).
    Matrix matrix(const std::string& name, std::span<const std::size_t> shape, std::size_t rows, std::size_t cols) {
        const io::TensorInfo& t = tensor(name, shape);
        check(t.numel() == rows * cols, name, ": cannot view ", io::shape_string(shape), " as [", rows, ", ", cols, "]");
        Matrix m;
        m.rows = rows, m.cols = cols;
        if (type_ == WeightType::F32) {
            m.f32 = (t.file_dtype == io::FileDType::F32 && io::is_aligned(t)) ? reinterpret_cast<const float*>(t.data)
                                                                               : convert_f32(t);
        } else if (t.file_dtype == io::FileDType::BF16 && io::is_aligned(t)) {
            m.b16 = reinterpret_cast<const bf16*>(t.data);
        } else {
            std::vector<float> tmp(t.numel());
            io::read_as_float(t, tmp.data());
            auto& buf = owned_b16_.emplace_back(t.numel());
            for (std::size_t i = 0; i < tmp.size(); ++i) buf[i] = bf16(tmp[i]);
            m.b16 = buf.data();
        }
        return m;
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
        return n;
    }

    const std::string& source() const { return ckpt_.source(); }

private:
    const float* convert_f32(const io::TensorInfo& t) {
        auto& buf = owned_f32_.emplace_back(t.numel());
        io::read_as_float(t, buf.data());
        return buf.data();
    }

    io::Checkpoint ckpt_;
    WeightType type_;
    std::set<std::string> used_;
    // Deques keep element addresses stable as buffers are added.
    std::deque<std::vector<float>> owned_f32_;
    std::deque<std::vector<bf16>> owned_b16_;
};

}  // namespace flamingo::nn

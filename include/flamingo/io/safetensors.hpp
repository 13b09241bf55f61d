#pragma once
// safetensors files: a single file, or a model directory with one file or
// several shards. Tensors are handed out as views into the memory-mapped
// files; nothing is copied at load. write_safetensors (at the end) writes one file.
//
// The format: an 8-byte little-endian u64 N, N bytes of JSON header
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}
// then the data section; offsets are relative to its start, data is
// little-endian and in C order.
//
// Everything in the header is checked against the format's rules before a
// view is handed out (see SafeTensorsFile::parse); as the reference
// implementation does, we require the tensors to tile the data section
// exactly: no overlaps, no gaps, no trailing bytes.
//
// Alignment: the format does not promise that a tensor's bytes are aligned
// for its dtype (writers usually pad the header to 8 bytes, so they are in
// practice). TensorInfo::data may therefore be misaligned: use
// is_aligned(info) before reading it in place as float/uint16_t, or convert
// with read_as_float(), which works on any alignment.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "flamingo/core/dtype.hpp"
#include "flamingo/core/error.hpp"
#include "flamingo/core/executor.hpp"
#include "flamingo/io/json.hpp"
#include "flamingo/io/mmap.hpp"

namespace flamingo::io {

// Every element type the safetensors format knows (sizes in bytes). Only
// F32, F16 and BF16 are readable as floats; I64 maps to DType::I64; the
// others can be listed and their raw bytes reached, nothing more.
enum class FileDType { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

inline constexpr std::size_t file_dtype_size(FileDType t) {
    switch (t) {
        case FileDType::BOOL: case FileDType::U8: case FileDType::I8:
        case FileDType::F8_E5M2: case FileDType::F8_E4M3: return 1;
        case FileDType::I16: case FileDType::U16: case FileDType::F16: case FileDType::BF16: return 2;
        case FileDType::I32: case FileDType::U32: case FileDType::F32: return 4;
        case FileDType::F64: case FileDType::I64: case FileDType::U64: return 8;
    }
    return 0;
}

inline constexpr std::string_view file_dtype_name(FileDType t) {
    switch (t) {
        case FileDType::BOOL: return "BOOL";
        case FileDType::U8: return "U8";
        case FileDType::I8: return "I8";
        case FileDType::F8_E5M2: return "F8_E5M2";
        case FileDType::F8_E4M3: return "F8_E4M3";
        case FileDType::I16: return "I16";
        case FileDType::U16: return "U16";
        case FileDType::F16: return "F16";
        case FileDType::BF16: return "BF16";
        case FileDType::I32: return "I32";
        case FileDType::U32: return "U32";
        case FileDType::F32: return "F32";
        case FileDType::F64: return "F64";
        case FileDType::I64: return "I64";
        case FileDType::U64: return "U64";
    }
    return "?";
}

inline std::optional<FileDType> parse_file_dtype(std::string_view s) {
    for (int i = 0; i <= int(FileDType::U64); ++i)
        if (file_dtype_name(FileDType(i)) == s) return FileDType(i);
    return std::nullopt;
}

inline std::string shape_string(std::span<const std::size_t> shape) {
    std::ostringstream os;
    os << '[';
    for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << ']';
    return os.str();
}

struct TensorInfo {
    std::string name;
    FileDType file_dtype = FileDType::F32;
    std::vector<std::size_t> shape;
    const std::byte* data = nullptr;  // into the mapping; may be misaligned (see top of file)
    std::size_t nbytes = 0;
    std::string file;  // the file holding it, for messages

    std::size_t numel() const {
        std::size_t n = 1;
        for (auto d : shape) n *= d;  // cannot overflow: checked when the header was read
        return n;
    }
    std::size_t rank() const { return shape.size(); }
    bool is_float() const {
        return file_dtype == FileDType::F32 || file_dtype == FileDType::F16 || file_dtype == FileDType::BF16;
    }
    // The element type as the tensor library knows it (F32, F16, BF16, I64);
    // throws naming the tensor for the other dtypes.
    DType dtype() const {
        switch (file_dtype) {
            case FileDType::F32: return DType::F32;
            case FileDType::F16: return DType::F16;
            case FileDType::BF16: return DType::BF16;
            case FileDType::I64: return DType::I64;
            default:
                fail(ErrorKind::Format, file, ": tensor '", name, "': dtype ", file_dtype_name(file_dtype),
                     " is not supported (expected F32, F16 or BF16)");
        }
    }
    std::string describe() const {  // "'name' (BF16 [2, 3]) in file"
        return "'" + name + "' (" + std::string(file_dtype_name(file_dtype)) + " " + shape_string(shape) +
               ") in " + file;
    }
};

// True when the tensor's bytes can be read in place as its element type.
inline bool is_aligned(const TensorInfo& t) {
    return reinterpret_cast<std::uintptr_t>(t.data) % file_dtype_size(t.file_dtype) == 0;
}

// Throws "FILE: tensor 'NAME': expected shape [..], found [..]" unless the shapes agree.
inline void check_shape(const TensorInfo& t, std::span<const std::size_t> expected) {
    if (!std::equal(t.shape.begin(), t.shape.end(), expected.begin(), expected.end()))
        fail(ErrorKind::Shape, t.file, ": tensor '", t.name, "': expected shape ", shape_string(expected), ", found ",
             shape_string(t.shape));
}
inline void check_shape(const TensorInfo& t, std::initializer_list<std::size_t> expected) {
    check_shape(t, std::span<const std::size_t>(expected.begin(), expected.size()));
}

// Converts a F32, F16 or BF16 tensor to float (any alignment); `out` holds numel() floats.
// Other dtypes are an error naming the tensor.
inline void read_as_float(const TensorInfo& t, float* out) {
    if (!t.is_float())
        fail(ErrorKind::Format, t.file, ": tensor '", t.name, "': dtype ", file_dtype_name(t.file_dtype),
             " cannot be read as floats (F32, F16 and BF16 can)");
    const std::size_t n = t.numel();
    const std::byte* src = t.data;
    const FileDType dt = t.file_dtype;
    parallel_for(n, [&](std::size_t begin, std::size_t end) {
        if (dt == FileDType::F32) {
            std::memcpy(out + begin, src + 4 * begin, 4 * (end - begin));
        } else if (dt == FileDType::BF16) {  // separate loops so each vectorises
            for (std::size_t i = begin; i < end; ++i) {
                std::uint16_t bits;
                std::memcpy(&bits, src + 2 * i, 2);
                out[i] = std::bit_cast<float>(std::uint32_t(bits) << 16);
            }
        } else {
            for (std::size_t i = begin; i < end; ++i) {
                std::uint16_t bits;
                std::memcpy(&bits, src + 2 * i, 2);
                out[i] = f16::to_float(bits);
            }
        }
    }, 1024);
}
inline std::vector<float> read_as_float(const TensorInfo& t) {
    std::vector<float> v(t.is_float() ? t.numel() : 0);
    read_as_float(t, v.data());
    return v;
}

// Headers above this are rejected, as the reference implementation does.
inline constexpr std::uint64_t kMaxSafetensorsHeader = 100'000'000;

class SafeTensorsFile {
public:
    // Maps and validates the file; errors name the file (and tensor).
    static SafeTensorsFile open(const std::filesystem::path& path) {
        SafeTensorsFile f;
        f.file_ = std::make_unique<MappedFile>(MappedFile::open(path));
        f.parse(f.file_->data(), f.file_->size(), path.string());
        return f;
    }

    // Validates a safetensors image held in memory, without copying it: the
    // views point into `bytes`, which must outlive the returned object.
    static SafeTensorsFile from_memory(const std::byte* bytes, std::size_t size, const std::string& source_name) {
        SafeTensorsFile f;
        f.parse(bytes, size, source_name);
        return f;
    }

    const TensorInfo* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &tensors_[it->second];
    }
    const TensorInfo& get(std::string_view name) const {
        if (auto* t = find(name)) return *t;
        fail(ErrorKind::Shape, source_, ": tensor '", name, "' not found");
    }
    // In data order (by offset).
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    const std::string& source() const { return source_; }

private:
    void parse(const std::byte* bytes, std::size_t size, const std::string& source);

    std::unique_ptr<MappedFile> file_;  // empty for from_memory
    std::string source_;
    std::vector<TensorInfo> tensors_;
    std::map<std::string, std::size_t, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

namespace detail {

// A non-negative JSON integer as size_t, else an error naming what it is.
inline std::size_t st_index(const json& v, const std::string& where) {
    if (!v.is_number_unsigned()) {
        if (v.is_number_integer()) fail(ErrorKind::Format, where, " is negative (", v.get<std::int64_t>(), ")");
        fail(ErrorKind::Format, where, " must be a non-negative integer, found ", json_type_name(v));
    }
    return v.get<std::size_t>();
}

}  // namespace detail

inline void SafeTensorsFile::parse(const std::byte* bytes, std::size_t size, const std::string& source) {
    source_ = source;
    const std::string& src = source_;
    if (size < 8) fail(ErrorKind::Format, src, ": not a safetensors file: ", size, " bytes, too small to hold the 8-byte header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint64_t(std::to_integer<unsigned>(bytes[i]));
    if (n > kMaxSafetensorsHeader)
        fail(ErrorKind::Limit, src, ": header length ", n, " exceeds the limit of ", kMaxSafetensorsHeader, " bytes");
    if (n > size - 8)
        fail(ErrorKind::Format, src, ": header length ", n, " runs past the end of the file (", size, " bytes)");
    const std::string_view text(reinterpret_cast<const char*>(bytes + 8), std::size_t(n));
    const std::byte* data = bytes + 8 + n;
    const std::size_t data_size = size - 8 - std::size_t(n);

    json header = parse_json(text, src + ": safetensors header");
    if (!header.is_object()) fail(ErrorKind::Format, src, ": safetensors header is not a JSON object (found ", json_type_name(header), ")");

    struct Span {
        std::size_t begin, end, index;
    };
    std::vector<Span> spans;
    for (auto& [name, entry] : header.items()) {
        if (name == "__metadata__") {
            if (!entry.is_object())
                fail(ErrorKind::Format, src, ": __metadata__ must be an object of strings, found ", json_type_name(entry));
            for (auto& [k, v] : entry.items()) {
                if (!v.is_string())
                    fail(ErrorKind::Format, src, ": __metadata__[\"", k, "\"] must be a string, found ", json_type_name(v));
                metadata_.emplace(k, v.get<std::string>());
            }
            continue;
        }
        const std::string where = src + ": tensor '" + name + "'";
        if (!entry.is_object()) fail(ErrorKind::Format, where, ": entry must be an object, found ", json_type_name(entry));
        for (auto& [k, v] : entry.items())
            if (k != "dtype" && k != "shape" && k != "data_offsets") fail(ErrorKind::Format, where, ": unexpected field \"", k, "\"");
        for (const char* k : {"dtype", "shape", "data_offsets"})
            if (!entry.contains(k)) fail(ErrorKind::Format, where, ": missing field \"", k, "\"");

        TensorInfo t;
        t.name = name;
        t.file = src;
        const json& dt = entry["dtype"];
        if (!dt.is_string()) fail(ErrorKind::Format, where, ": dtype must be a string, found ", json_type_name(dt));
        auto fd = parse_file_dtype(dt.get_ref<const std::string&>());
        if (!fd) fail(ErrorKind::Format, where, ": unknown dtype \"", dt.get_ref<const std::string&>(), "\"");
        t.file_dtype = *fd;

        const json& shape = entry["shape"];
        if (!shape.is_array()) fail(ErrorKind::Format, where, ": shape must be a list of integers, found ", json_type_name(shape));
        std::size_t numel = 1;
        for (std::size_t i = 0; i < shape.size(); ++i) {
            std::size_t d = detail::st_index(shape[i], where + ": shape[" + std::to_string(i) + "]");
            t.shape.push_back(d);
            if (__builtin_mul_overflow(numel, d, &numel)) fail(ErrorKind::Format, where, ": shape ", shape.dump(), " overflows");
        }
        std::size_t expected_bytes;
        if (__builtin_mul_overflow(numel, file_dtype_size(t.file_dtype), &expected_bytes))
            fail(ErrorKind::Format, where, ": shape ", shape.dump(), " overflows");

        const json& off = entry["data_offsets"];
        if (!off.is_array() || off.size() != 2)
            fail(ErrorKind::Format, where, ": data_offsets must be a list of two integers [begin, end]");
        std::size_t begin = detail::st_index(off[0], where + ": data_offsets[0]");
        std::size_t end = detail::st_index(off[1], where + ": data_offsets[1]");
        if (begin > end) fail(ErrorKind::Format, where, ": data_offsets [", begin, ", ", end, "] end before they begin");
        if (end > data_size)
            fail(ErrorKind::Format, where, ": data_offsets [", begin, ", ", end, "] run past the data section (", data_size, " bytes)");
        if (end - begin != expected_bytes)
            fail(ErrorKind::Format, where, ": data_offsets [", begin, ", ", end, "] hold ", end - begin, " bytes, but ",
                 file_dtype_name(t.file_dtype), " ", shape_string(t.shape), " needs ", expected_bytes);
        t.data = data + begin;
        t.nbytes = expected_bytes;
        spans.push_back({begin, end, tensors_.size()});
        tensors_.push_back(std::move(t));
    }

    // The tensors must tile the data section: sorted by offset, each begins where the last ended.
    std::sort(spans.begin(), spans.end(),
              [](const Span& a, const Span& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
    std::size_t pos = 0;
    for (std::size_t i = 0; i < spans.size(); ++i) {
        const Span& s = spans[i];
        const std::string& name = tensors_[s.index].name;
        if (s.begin < pos)
            fail(ErrorKind::Format, src, ": tensor '", name, "': data_offsets [", s.begin, ", ", s.end, "] overlap tensor '",
                 tensors_[spans[i - 1].index].name, "'");
        if (s.begin > pos)
            fail(ErrorKind::Format, src, ": tensor '", name, "': data_offsets [", s.begin, ", ", s.end, "] leave a gap of ",
                 s.begin - pos, " bytes before them");
        pos = s.end;
    }
    if (pos != data_size)
        fail(ErrorKind::Format, src, ": data section has ", data_size - pos, " bytes after the last tensor (", data_size,
             " bytes, tensors cover ", pos, ")");

    // Data order for tensors(), and the name index.
    std::vector<TensorInfo> ordered;
    ordered.reserve(tensors_.size());
    for (const Span& s : spans) ordered.push_back(std::move(tensors_[s.index]));
    tensors_ = std::move(ordered);
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

// A model's weights: a directory holding model.safetensors, or
// model.safetensors.index.json and its shards; or a single .safetensors file.
class Checkpoint {
public:
    static constexpr const char* kSingleFile = "model.safetensors";
    static constexpr const char* kIndexFile = "model.safetensors.index.json";

    static Checkpoint open(const std::filesystem::path& path);

    const TensorInfo* find(std::string_view name) const {
        auto it = index_.find(name);
        return it == index_.end() ? nullptr : &files_[it->second.first].tensors()[it->second.second];
    }
    // Throws naming the tensor and the checkpoint when it is absent.
    const TensorInfo& get(std::string_view name) const {
        if (auto* t = find(name)) return *t;
        fail(ErrorKind::Shape, source_, ": tensor '", name, "' not found in the checkpoint");
    }
    bool contains(std::string_view name) const { return index_.count(name) != 0; }
    // Sorted.
    std::vector<std::string> names() const {
        std::vector<std::string> v;
        v.reserve(index_.size());
        for (auto& [k, _] : index_) v.push_back(k);
        return v;
    }
    std::size_t size() const { return index_.size(); }
    const std::vector<SafeTensorsFile>& files() const { return files_; }
    const std::string& source() const { return source_; }

private:
    void add_file(SafeTensorsFile f, const std::vector<std::string>* only);

    std::string source_;  // the directory or file it was opened from
    std::vector<SafeTensorsFile> files_;
    std::map<std::string, std::pair<std::size_t, std::size_t>, std::less<>> index_;  // -> (file, tensor)
};

// The shard index: {"metadata": {...}, "weight_map": {"tensor": "shard file name"}}.
// Returns tensor -> shard file name, each name checked to stay inside the model
// directory (no path separators, not "." or "..").
inline std::map<std::string, std::string> parse_shard_index(std::string_view text, const std::string& source) {
    json j = parse_json(text, source);
    if (!j.is_object()) fail(ErrorKind::Format, source, ": shard index is not a JSON object (found ", json_type_name(j), ")");
    if (j.contains("metadata") && !j["metadata"].is_object() && !j["metadata"].is_null())
        fail(ErrorKind::Format, source, ": metadata must be an object, found ", json_type_name(j["metadata"]));
    if (!j.contains("weight_map")) fail(ErrorKind::Format, source, ": missing field \"weight_map\"");
    const json& wm = j["weight_map"];
    if (!wm.is_object()) fail(ErrorKind::Format, source, ": weight_map must be an object, found ", json_type_name(wm));
    std::map<std::string, std::string> out;
    for (auto& [tensor, shard] : wm.items()) {
        if (!shard.is_string())
            fail(ErrorKind::Format, source, ": weight_map[\"", tensor, "\"] must be a file name, found ", json_type_name(shard));
        const std::string& s = shard.get_ref<const std::string&>();
        if (s.empty()) fail(ErrorKind::Format, source, ": weight_map[\"", tensor, "\"]: empty shard file name");
        if (s.find('/') != std::string::npos || s.find('\\') != std::string::npos || s == "." || s == ".." ||
            s.find('\0') != std::string::npos)
            fail(ErrorKind::Format, source, ": weight_map[\"", tensor, "\"]: shard \"", s,
                 "\" is not a plain file name inside the model directory");
        out.emplace(tensor, s);
    }
    return out;
}

inline void Checkpoint::add_file(SafeTensorsFile f, const std::vector<std::string>* only) {
    const std::size_t fi = files_.size();
    if (only) {
        for (const std::string& name : *only) {
            const TensorInfo* t = f.find(name);
            if (!t)
                fail(ErrorKind::Format, source_, ": tensor '", name, "' is mapped to shard ", f.source(),
                     " by the index, but that shard does not contain it");
            index_.emplace(name, std::pair{fi, std::size_t(t - f.tensors().data())});
        }
    } else {
        for (std::size_t i = 0; i < f.tensors().size(); ++i) index_.emplace(f.tensors()[i].name, std::pair{fi, i});
    }
    files_.push_back(std::move(f));
}

inline Checkpoint Checkpoint::open(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    Checkpoint c;
    c.source_ = path.string();
    std::error_code ec;
    const bool is_dir = fs::is_directory(path, ec);
    fs::path index_path;
    if (is_dir) {
        if (fs::exists(path / kSingleFile, ec)) {
            c.add_file(SafeTensorsFile::open(path / kSingleFile), nullptr);
            return c;
        }
        index_path = path / kIndexFile;
        if (!fs::exists(index_path, ec))
            fail(ErrorKind::File, c.source_, ": no ", kSingleFile, " or ", kIndexFile, " in the model directory");
    } else if (path.filename().string().ends_with(".index.json")) {
        index_path = path;
    } else {
        c.add_file(SafeTensorsFile::open(path), nullptr);
        return c;
    }

    MappedFile index_file = MappedFile::open(index_path);
    auto weight_map = parse_shard_index(index_file.text(), index_path.string());
    // Group tensors by shard; open each shard once.
    std::map<std::string, std::vector<std::string>> by_shard;
    for (auto& [tensor, shard] : weight_map) by_shard[shard].push_back(tensor);
    const fs::path dir = index_path.parent_path();
    for (auto& [shard, tensors] : by_shard) {
        const fs::path shard_path = dir / shard;
        if (!fs::exists(shard_path, ec))
            fail(ErrorKind::File, index_path.string(), ": shard ", shard, " (holding '", tensors.front(), "' and ",
                 tensors.size() - 1, " more) does not exist in ", dir.string());
        c.add_file(SafeTensorsFile::open(shard_path), &tensors);
    }
    return c;
}

// Lists the tensors of a .safetensors file, a shard index or a model
// directory (name, dtype, shape, size, file). The files are closed on
// return, so `data` is nullptr in the listing.
inline std::vector<TensorInfo> list_tensors(const std::filesystem::path& file_or_dir) {
    Checkpoint c = Checkpoint::open(file_or_dir);
    std::vector<TensorInfo> out;
    out.reserve(c.size());
    for (const std::string& name : c.names()) {
        TensorInfo t = c.get(name);
        t.data = nullptr;
        out.push_back(std::move(t));
    }
    return out;
}

// ---- writing -----------------------------------------------------------------

// One tensor to write: its bytes (little-endian, C order) are not copied.
struct TensorToWrite {
    std::string name;
    FileDType dtype = FileDType::F32;
    std::vector<std::size_t> shape;
    const void* data = nullptr;
    std::size_t nbytes = 0;
};

// Writes a safetensors file holding `tensors` in the order given (the data
// section is theirs back to back, so a tensor is aligned for its dtype when
// those before it fill whole elements of it: order them by falling element
// size) and `metadata` as __metadata__. The header is padded with spaces so
// the data section starts 64-byte aligned. Sizes and names are checked
// first; errors name the file and the tensor.
inline void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");
    const std::string file = path.string();
    json h = json::object();
    if (!metadata.empty()) {
        json m = json::object();
        for (const auto& [k, v] : metadata) m[k] = v;
        h["__metadata__"] = std::move(m);
    }
    std::size_t off = 0;
    for (const TensorToWrite& t : tensors) {
        if (t.name == "__metadata__" || h.contains(t.name))
            fail(ErrorKind::Input, file, ": cannot write tensor '", t.name, "': ",
                 t.name == "__metadata__" ? "the name is reserved" : "the name is used twice");
        std::size_t n = file_dtype_size(t.dtype);
        for (auto d : t.shape)
            if (__builtin_mul_overflow(n, d, &n)) fail(ErrorKind::Limit, file, ": tensor '", t.name, "': shape overflows");
        if (n != t.nbytes)
            fail(ErrorKind::Input, file, ": cannot write tensor '", t.name, "': ", file_dtype_name(t.dtype), " ",
                 shape_string(t.shape), " needs ", n, " bytes, given ", t.nbytes);
        h[t.name] = {{"dtype", std::string(file_dtype_name(t.dtype))}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
        off += n;
    }
    std::string text = h.dump();
    while ((8 + text.size()) % 64 != 0) text += ' ';
    std::string head(8, '\0');
    for (int i = 0; i < 8; ++i) head[std::size_t(i)] = char((std::uint64_t(text.size()) >> (8 * i)) & 0xff);
    head += text;

    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) fail(ErrorKind::File, "cannot write '", file, "': ", std::strerror(errno));
    std::setvbuf(f, nullptr, _IOFBF, 1 << 22);
    bool ok = std::fwrite(head.data(), 1, head.size(), f) == head.size();
    for (const TensorToWrite& t : tensors)
        if (ok && t.nbytes) ok = std::fwrite(t.data, 1, t.nbytes, f) == t.nbytes;
    const int err = ok ? 0 : errno;
    if (std::fclose(f) != 0 && ok) ok = false;
    if (!ok) fail(ErrorKind::File, "cannot write '", file, "': ", std::strerror(err ? err : errno));
}

}  // namespace flamingo::io

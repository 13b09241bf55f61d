#pragma once
// `flamingo eval`: accuracy of a model on an evaluation set of few-shot
// prompts (the format tools/world/evalset.py writes): one JSONL file per task,
// each line {"id", "task", "shots", "prompt", "images": [file names in
// <data>/images], "judge": "generate" | "score", "answer", "candidates",
// "max_new_tokens"}.
//   generate: greedy generation up to <|endofchunk|>; the stripped text must equal the answer;
//   score:    the candidate with the highest summed log-probability must be the answer.
//
// A query record has "query" (the query chunk's text before its answer) and
// "pool" in place of "prompt", and "images" holds only the query picture: its
// `shots` examples come from a support pool (`Support`, --support DIR), picked
// at random or by RICES (`Examples`), and become the prompt
//   <image>text<|endofchunk|> per example, then <image>query.
//
// A dialogue record has "turns" in place of "prompt": [{"user", "images",
// "answer"}], a conversation judged turn by turn through `flamingo chat`'s code
// path (Conversation): each turn's reply is generated greedily after the
// earlier turns with their expected answers, and must equal its answer.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <functional>
#include <map>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/chat.hpp>
#include <flamingo/flamingo.hpp>
#include <flamingo/io/safetensors.hpp>

namespace flamingo::fewshot {

inline std::string strip(std::string s) {
    const char* ws = " \t\n\r";
    s.erase(0, s.find_first_not_of(ws));
    s.erase(s.find_last_not_of(ws) + 1);
    return s;
}

struct Outcome {
    std::string id, task;
    int shots = 0;
    bool correct = false;
    std::string prediction;
    bool held_out = false;              // the record's "held_out_pair"
    std::vector<std::size_t> examples;  // query records: the pool entries picked, in prompt order
    std::uint64_t seed = 0;             // random examples: the seed they were drawn with
};

// The records `run` evaluates, in its order: every record of every
// <task>.jsonl in `data` (files by name; with limit > 0, the first `limit`
// records of each task and shot count of a file). A record without "task"
// gets its file's name there, so that each record stands on its own.
inline std::vector<nlohmann::json> records(const std::filesystem::path& data, std::size_t limit) {
    namespace fs = std::filesystem;
    check(fs::is_directory(data), ErrorKind::File, data.string(), ": evaluation data directory does not exist");
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(data))
        if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    check(!files.empty(), ErrorKind::File, data.string(), ": no .jsonl files");
    std::vector<nlohmann::json> out;
    for (const auto& file : files) {
        std::ifstream in(file);
        std::string line;
        std::size_t lineno = 0;
        std::map<std::pair<std::string, int>, std::size_t> taken;  // (task, shots) -> records taken
        while (std::getline(in, line)) {
            ++lineno;
            if (strip(line).empty()) continue;
            nlohmann::json r;
            try {
                r = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
                fail(ErrorKind::Format, file.string(), ":", lineno, ": not JSON: ", e.what());
            }
            if (!r.contains("task")) r["task"] = file.stem().string();
            if (limit && taken[{r.value("task", ""), r.value("shots", 0)}]++ >= limit) continue;
            out.push_back(std::move(r));
        }
    }
    return out;
}

// One record's outcome on `p`; its images are files in <data>/images, media
// videos of the record's "frames" (default `frames`).
inline Outcome evaluate_one(Context& p, const std::filesystem::path& data, const nlohmann::json& r,
                            std::size_t frames) {
    Outcome o;
    o.id = r.value("id", ""), o.task = r.value("task", ""), o.shots = r.value("shots", 0);
    o.held_out = r.value("held_out_pair", false);
    if (r.contains("examples")) o.examples = r.at("examples").get<std::vector<std::size_t>>();
    check(!r.contains("turns"), ErrorKind::Input, "record ", o.id,
          " is a dialogue record: its turns are judged one by one (flamingo eval, fewshot::run), not as one prompt");
    check(r.contains("prompt"), ErrorKind::Input, "record ", o.id,
          " is a query record (no \"prompt\"): its examples come from a support pool, give --support DIR");
    // names under <data>/images; a support pool's pictures come as absolute paths, which `/` keeps
    std::vector<std::string> images;
    for (const auto& im : r.at("images")) images.push_back((data / "images" / im.get<std::string>()).string());
    p.set_media(images, r.value("frames", frames));
    const std::string prompt = r.at("prompt"), answer = r.at("answer");
    if (r.value("judge", "generate") == "score") {
        auto scores = p.score(prompt, r.at("candidates").get<std::vector<std::string>>());
        auto best = std::max_element(scores.begin(), scores.end(), [](const auto& a, const auto& b) {
            return a.score.logprob < b.score.logprob;
        });
        o.prediction = best->candidate;
        o.correct = o.prediction == answer;
    } else {
        generate::GenerateOptions g;
        g.max_new_tokens = r.value("max_new_tokens", 20);
        o.prediction = strip(p.generate(prompt, g).text);
        o.correct = o.prediction == strip(answer);
    }
    return o;
}

// The outcomes of a dialogue record, one per turn, on a conversation that
// shares `p`'s model and threads. A turn's row in the table is its kind (the
// first question, a follow-up about the same picture, or a new picture) and
// its shot count the number of earlier turns.
inline std::vector<Outcome> evaluate_dialogue(Context& p, const std::filesystem::path& data, const nlohmann::json& r) {
    const std::string id = r.value("id", "");
    check(r.at("turns").is_array() && !r.at("turns").empty(), ErrorKind::Input, "record ", id,
          ": \"turns\" must be a non-empty array");
    Conversation chat(p.shared_model(), {0, p.shared_executor()});
    std::vector<Outcome> out;
    for (std::size_t t = 0; t < r.at("turns").size(); ++t) {
        const nlohmann::json& turn = r.at("turns")[t];
        const auto is_string = [&](const char* key) { return turn.contains(key) && turn[key].is_string(); };
        check(turn.is_object() && is_string("user") && is_string("answer") &&
                  (!turn.contains("images") || turn["images"].is_array()),
              ErrorKind::Input, "record ", id, " turn ", t + 1,
              ": needs strings \"user\" and \"answer\" (and \"images\", if given, a list of file names)");
        std::vector<std::string> images;
        for (const auto& im : turn.value("images", nlohmann::json::array())) {
            check(im.is_string(), ErrorKind::Input, "record ", id, " turn ", t + 1, ": \"images\" must list file names");
            images.push_back((data / "images" / im.get<std::string>()).string());
        }
        chat.add_user(turn.at("user").get<std::string>(), images);
        generate::GenerateOptions g;
        g.max_new_tokens = turn.value("max_new_tokens", r.value("max_new_tokens", 10));
        Outcome o;
        o.id = id + "-turn" + std::to_string(t + 1);
        o.task = r.value("task", "dialogue") + (t == 0 ? ": first question" : images.empty() ? ": follow-up" : ": new picture");
        o.shots = int(t);
        o.held_out = turn.value("held_out_pair", r.value("held_out_pair", false));
        o.prediction = strip(chat.reply(g).text);
        const std::string answer = turn.at("answer");
        o.correct = o.prediction == strip(answer);
        chat.pop();  // the expected answer stands in the conversation, not the prediction
        chat.add_assistant(answer);
        out.push_back(std::move(o));
    }
    return out;
}

// ---- examples from a support pool: seeded random picks and RICES -----------------------

inline std::uint64_t fnv1a64(const void* data, std::size_t n, std::uint64_t h = 0xcbf29ce484222325ull) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
inline std::uint64_t fnv1a64(std::string_view s, std::uint64_t h = 0xcbf29ce484222325ull) {
    return fnv1a64(s.data(), s.size(), h);
}
inline std::string hex16(std::uint64_t h) {
    std::ostringstream os;
    os << std::hex << std::setw(16) << std::setfill('0') << h;
    return os.str();
}

// `--shots random`: k distinct positions among n candidates, a partial
// Fisher-Yates shuffle driven by SplitMix64 seeded with FNV-1a of
// "<seed>:<record id>", so a record's examples do not depend on which other
// records run; the i-th drawn is the prompt's i-th example. (The modulo's bias,
// below 1e-15 for pools of thousands, is part of the definition;
// tools/world/evaluate.py draws the same.)
inline std::vector<std::size_t> random_pick(const std::string& record_id, std::uint64_t seed, std::size_t n,
                                            std::size_t k) {
    std::uint64_t state = fnv1a64(std::to_string(seed) + ":" + record_id);
    std::vector<std::size_t> idx(n);
    std::iota(idx.begin(), idx.end(), std::size_t(0));
    for (std::size_t i = 0; i < k; ++i) {
        state += 0x9e3779b97f4a7c15ull;
        std::uint64_t z = state;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        std::swap(idx[i], idx[i + std::size_t(z % (n - i))]);
    }
    idx.resize(k);
    return idx;
}

inline std::vector<double> normalised(const float* e, std::size_t dim) {
    double ss = 0;
    for (std::size_t i = 0; i < dim; ++i) ss += double(e[i]) * e[i];
    const double inv = ss > 0 ? 1 / std::sqrt(ss) : 0;
    std::vector<double> out(dim);
    for (std::size_t i = 0; i < dim; ++i) out[i] = e[i] * inv;
    return out;
}

// `--shots rices`, as OpenFlamingo's RICES: cosine similarity of the
// L2-normalised CLIP image embeddings (in double), the k most similar
// candidates, put in the prompt least similar first so that the most similar
// example comes right before the query. An exact tie goes to the earlier
// candidate (pool file order), which then sits nearer the query.
inline std::vector<std::size_t> rices_pick(const std::vector<double>& query,
                                           const std::vector<std::vector<double>>& candidates, std::size_t k) {
    std::vector<double> sim(candidates.size());
    for (std::size_t c = 0; c < candidates.size(); ++c)
        sim[c] = std::inner_product(query.begin(), query.end(), candidates[c].begin(), 0.0);
    std::vector<std::size_t> order(candidates.size());
    std::iota(order.begin(), order.end(), std::size_t(0));
    std::partial_sort(order.begin(), order.begin() + std::ptrdiff_t(k), order.end(),
                      [&](std::size_t a, std::size_t b) { return sim[a] != sim[b] ? sim[a] > sim[b] : a < b; });
    order.resize(k);
    std::reverse(order.begin(), order.end());
    return order;
}

// The identity of the embeddings a model computes: FNV-1a of config.json's
// vision_config, of every vision_encoder.* tensor's name, dtype, shape and
// bytes, and of the weight format it runs in (q8/q4 quantise the ViT too).
inline std::string vision_identity(const Model& m) {
    const auto cfg_path = m.directory() / "config.json";
    std::ifstream in(cfg_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json cfg;
    try {
        cfg = nlohmann::json::parse(ss.str());
    } catch (const nlohmann::json::exception& e) {
        fail(ErrorKind::Format, cfg_path.string(), ": not JSON: ", e.what());
    }
    std::uint64_t h = fnv1a64(cfg.value("vision_config", nlohmann::json::object()).dump());
    h = fnv1a64(model::weight_type_name(m.network().weight_type()), h);
    const io::Checkpoint ck = io::Checkpoint::open(m.directory());
    for (const std::string& name : ck.names()) {
        if (!name.starts_with("vision_encoder.")) continue;
        const io::TensorInfo& t = ck.get(name);
        h = fnv1a64(name + " " + std::string(io::file_dtype_name(t.file_dtype)) + " " + io::shape_string(t.shape), h);
        h = fnv1a64(t.data, t.nbytes, h);
    }
    return hex16(h);
}

// A support pool: <dir>/pool.jsonl, one example per line
// {"pool": name, "image": file in <dir>/images, "text": the chunk's text}; a
// query record draws from the entries whose "pool" equals its own. The CLIP
// embeddings of its pictures (RICES) are cached in
// <dir>/embeddings-<vision identity>.bin: "FLRICES1", the header's length
// (u64 little-endian), a JSON header {"model", "pool", "dim", "images",
// "data"}, then images x dim float32 (sorted picture names, as the model's
// embed gives them). "pool" is FNV-1a of pool.jsonl and of every picture's
// name and bytes, so editing the pool makes the file stale: it is then
// computed again and rewritten. "data" is FNV-1a of the embeddings' bytes. A
// file that breaks this layout or its digest is an error (delete it to
// recompute), never read as embeddings.
class Support {
public:
    struct Entry {
        std::string pool, image, text;
    };

    explicit Support(const std::filesystem::path& dir) : dir_(dir) {
        namespace fs = std::filesystem;
        check(fs::is_directory(dir), ErrorKind::File, dir.string(), ": support pool directory does not exist");
        const fs::path file = dir / "pool.jsonl";
        std::ifstream in(file);
        check(bool(in), ErrorKind::File, file.string(), ": cannot read the support pool (pool.jsonl)");
        std::string line;
        std::size_t lineno = 0;
        std::map<std::string, std::size_t> image_index;
        while (std::getline(in, line)) {
            ++lineno;
            if (strip(line).empty()) continue;
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
                fail(ErrorKind::Format, file.string(), ":", lineno, ": not JSON: ", e.what());
            }
            auto text_field = [&](const char* key) {
                check(j.is_object() && j.contains(key) && j[key].is_string() && !j[key].get<std::string>().empty(),
                      ErrorKind::Format, file.string(), ":", lineno, ": needs a non-empty string \"", key, "\"");
                return j[key].get<std::string>();
            };
            Entry e{text_field("pool"), text_field("image"), text_field("text")};
            check(fs::is_regular_file(dir / "images" / e.image), ErrorKind::File, file.string(), ":", lineno,
                  ": image ", (dir / "images" / e.image).string(), " does not exist");
            by_pool_[e.pool].push_back(entries_.size());
            entries_.push_back(std::move(e));
        }
        check(!entries_.empty(), ErrorKind::Format, file.string(), ": the support pool is empty");
        std::set<std::string> names;
        for (const Entry& e : entries_) names.insert(e.image);
        images_.assign(names.begin(), names.end());
        for (std::size_t i = 0; i < images_.size(); ++i) image_index[images_[i]] = i;
        for (const Entry& e : entries_) image_of_.push_back(image_index[e.image]);
    }

    const std::filesystem::path& dir() const { return dir_; }
    const std::vector<Entry>& entries() const { return entries_; }
    std::string image_path(std::size_t entry) const {
        return std::filesystem::absolute(dir_ / "images" / entries_[entry].image).string();
    }
    // The entries of a pool, in file order; an error naming `who` when there are none.
    const std::vector<std::size_t>& candidates(const std::string& pool, const std::string& who) const {
        auto it = by_pool_.find(pool);
        check(it != by_pool_.end(), ErrorKind::Input, who, ": no example of pool '", pool, "' in ",
              (dir_ / "pool.jsonl").string());
        return it->second;
    }
    std::filesystem::path cache_file(const Model& m) const { return dir_ / ("embeddings-" + vision_identity(m) + ".bin"); }

    // The pictures' embeddings, from the cache file or computed (and the file written).
    void embed(Context& ctx, const Model& m, bool verbose) {
        namespace fs = std::filesystem;
        const fs::path file = cache_file(m);
        const std::string model_id = file.stem().string().substr(std::strlen("embeddings-"));
        const std::string pool_id = pool_digest();
        if (fs::exists(file) && read_cache(file, model_id, pool_id)) {
            if (verbose) std::cerr << "rices: embeddings of " << images_.size() << " pool images from " << file.string() << "\n";
            return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        emb_.clear();
        for (std::size_t b = 0; b < images_.size(); b += 64) {
            std::vector<std::string> paths;
            for (std::size_t i = b; i < std::min(images_.size(), b + 64); ++i)
                paths.push_back((dir_ / "images" / images_[i]).string());
            auto e = ctx.embed(paths);
            dim_ = e.extent(1);
            emb_.insert(emb_.end(), e.data(), e.data() + e.extent(0) * e.extent(1));
        }
        write_cache(file, model_id, pool_id);
        if (verbose)
            std::cerr << "rices: embedded " << images_.size() << " pool images in "
                      << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s\n";
    }
    bool embedded() const { return dim_ != 0; }
    std::size_t dim() const { return dim_; }
    const float* embedding(std::size_t entry) const { return emb_.data() + image_of_[entry] * dim_; }

private:
    std::string pool_digest() const {
        std::ifstream in(dir_ / "pool.jsonl", std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        std::uint64_t h = fnv1a64(ss.str());
        for (const std::string& name : images_) {
            std::ifstream im(dir_ / "images" / name, std::ios::binary);
            std::stringstream bytes;
            bytes << im.rdbuf();
            h = fnv1a64(name + '\0', h);
            h = fnv1a64(bytes.str(), h);
        }
        return hex16(h);
    }

    // True when the file holds this model's embeddings of this pool; false
    // when it is stale (another pool or model); an error when it is corrupt.
    bool read_cache(const std::filesystem::path& file, const std::string& model_id, const std::string& pool_id) {
        std::ifstream in(file, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string bytes = ss.str();
        auto corrupt = [&](const auto&... why) {
            fail(ErrorKind::Format, file.string(), ": corrupt embedding cache (", why...,
                 "); delete it and it is computed again");
        };
        if (bytes.size() < 16 || bytes.compare(0, 8, "FLRICES1") != 0) corrupt("no FLRICES1 header");
        std::uint64_t hlen = 0;
        for (int i = 7; i >= 0; --i) hlen = hlen << 8 | std::uint8_t(bytes[8 + std::size_t(i)]);
        if (hlen > bytes.size() - 16) corrupt("header of ", hlen, " bytes in a file of ", bytes.size());
        nlohmann::json h;
        try {
            h = nlohmann::json::parse(bytes.substr(16, std::size_t(hlen)));
        } catch (const nlohmann::json::exception&) {
            corrupt("header is not JSON");
        }
        if (!h.is_object() || !h.contains("model") || !h.contains("pool") || !h.contains("dim") ||
            !h.contains("images") || !h["dim"].is_number_unsigned() || !h["images"].is_array())
            corrupt("header lacks model, pool, dim or images");
        if (h["model"] != model_id || h["pool"] != pool_id || h["images"] != nlohmann::json(images_)) return false;
        const std::size_t dim = h["dim"].get<std::size_t>();
        const std::size_t want = 16 + std::size_t(hlen) + images_.size() * dim * sizeof(float);
        if (dim == 0 || dim > (1u << 20) || bytes.size() != want)
            corrupt(bytes.size(), " bytes where ", images_.size(), " embeddings of ", dim, " floats take ", want);
        if (!h.contains("data") || h["data"] != hex16(fnv1a64(bytes.data() + 16 + hlen, want - 16 - hlen)))
            corrupt("the embeddings do not match their digest");
        dim_ = dim;
        emb_.resize(images_.size() * dim);
        std::memcpy(emb_.data(), bytes.data() + 16 + hlen, emb_.size() * sizeof(float));
        return true;
    }

    // Written to a temporary file and renamed, so a reader never sees half a
    // file; a pool directory that cannot be written only loses the cache.
    void write_cache(const std::filesystem::path& file, const std::string& model_id, const std::string& pool_id) const {
        const std::string header =
            nlohmann::json({{"model", model_id}, {"pool", pool_id}, {"dim", dim_}, {"images", images_},
                            {"data", hex16(fnv1a64(emb_.data(), emb_.size() * sizeof(float)))}}).dump();
        const std::filesystem::path tmp = file.string() + ".tmp" + std::to_string(::getpid());
        {
            std::ofstream out(tmp, std::ios::binary);
            out.write("FLRICES1", 8);
            std::uint64_t n = header.size();
            for (int i = 0; i < 8; ++i) out.put(char(n >> (8 * i) & 0xff));
            out.write(header.data(), std::streamsize(header.size()));
            out.write(reinterpret_cast<const char*>(emb_.data()), std::streamsize(emb_.size() * sizeof(float)));
            if (!out) {
                std::cerr << "warning: cannot write the embedding cache " << file.string() << "\n";
                std::error_code ec;
                std::filesystem::remove(tmp, ec);
                return;
            }
        }
        std::error_code ec;
        std::filesystem::rename(tmp, file, ec);
        if (ec) std::cerr << "warning: cannot write the embedding cache " << file.string() << ": " << ec.message() << "\n";
    }

    std::filesystem::path dir_;
    std::vector<Entry> entries_;
    std::map<std::string, std::vector<std::size_t>> by_pool_;
    std::vector<std::string> images_;      // distinct picture names, sorted
    std::vector<std::size_t> image_of_;    // entry -> its picture in images_
    std::vector<float> emb_;               // images_ x dim_, as the model's embed gives them
    std::size_t dim_ = 0;
};

enum class ShotRule { Random, Rices };

// Turns query records into full records with examples from a support pool.
class Examples {
public:
    Examples(Support& support, ShotRule rule, std::uint64_t seed) : s_(support), rule_(rule), seed_(seed) {}

    // `r` unchanged when it has a prompt; else the record with "prompt",
    // "images" (the examples' as absolute paths, then the query's name) and
    // "examples" (the pool entries picked, in prompt order).
    nlohmann::json complete(const nlohmann::json& r, const std::filesystem::path& data, Context& ctx,
                            const Model& m, bool verbose) {
        if (r.contains("prompt")) return r;
        const std::string id = r.value("id", "?");
        check(r.contains("query") && r["query"].is_string() && r.contains("pool") && r["pool"].is_string() &&
                  r.contains("images") && r["images"].is_array() && r["images"].size() == 1 &&
                  r["images"][0].is_string(),
              ErrorKind::Format, "record ", id, ": a query record needs \"query\", \"pool\" and one image");
        const int shots = r.value("shots", 0);
        check(shots >= 0, ErrorKind::Format, "record ", id, ": shots ", shots, " is negative");
        const std::size_t k = std::size_t(shots);
        const auto& cands = s_.candidates(r["pool"], "record " + id);
        check(k <= cands.size(), ErrorKind::Input, "record ", id, ": ", k, " shots, but pool '",
              r["pool"].get<std::string>(), "' has ", cands.size(), " examples");
        std::vector<std::size_t> picks;
        if (k && rule_ == ShotRule::Random) {
            for (std::size_t i : random_pick(id, seed_, cands.size(), k)) picks.push_back(cands[i]);
        } else if (k) {
            if (!s_.embedded()) s_.embed(ctx, m, verbose);
            const std::string query = (data / "images" / r["images"][0].get<std::string>()).string();
            auto it = queries_.find(query);
            if (it == queries_.end()) {
                auto e = ctx.embed(std::vector<std::string>{query});
                it = queries_.emplace(query, normalised(e.data(), e.extent(1))).first;
            }
            std::vector<std::vector<double>> c;
            c.reserve(cands.size());
            for (std::size_t i : cands) c.push_back(normalised(s_.embedding(i), s_.dim()));
            for (std::size_t i : rices_pick(it->second, c, k)) picks.push_back(cands[i]);
        }
        nlohmann::json out = r;
        std::string prompt;
        nlohmann::json images = nlohmann::json::array();
        for (std::size_t i : picks) {
            prompt += "<image>" + s_.entries()[i].text + "<|endofchunk|>";
            images.push_back(s_.image_path(i));
        }
        out["prompt"] = prompt + "<image>" + r["query"].get<std::string>();
        images.push_back(r["images"][0]);
        out["images"] = images;
        out["examples"] = picks;
        return out;
    }

private:
    Support& s_;
    ShotRule rule_;
    std::uint64_t seed_;
    std::map<std::string, std::vector<double>> queries_;  // query picture -> normalised embedding
};

// Runs every record of `records(data, limit)`, query records completed by
// `examples` (when given); `progress` is called after each.
inline std::vector<Outcome> run(Context& p, const std::filesystem::path& data, std::size_t limit, std::size_t frames,
                                const std::function<void(std::size_t)>& progress = {}, Examples* examples = nullptr,
                                bool verbose = false) {
    std::vector<Outcome> out;
    for (const auto& r : records(data, limit)) {
        if (r.contains("turns")) {
            for (auto& o : evaluate_dialogue(p, data, r)) out.push_back(std::move(o));
        } else {
            out.push_back(evaluate_one(p, data, examples ? examples->complete(r, data, p, p.model(), verbose) : r, frames));
        }
        if (progress) progress(out.size());
    }
    return out;
}

// Accuracy (%) per task and shot count as a Markdown table.
inline std::string table(const std::vector<Outcome>& outcomes) {
    std::map<std::string, std::map<int, std::pair<int, int>>> acc;  // task -> shots -> (correct, total)
    std::set<int> shots;
    for (const auto& o : outcomes) {
        auto& a = acc[o.task][o.shots];
        a.first += o.correct, a.second += 1;
        shots.insert(o.shots);
    }
    std::ostringstream os;
    os << "| task |";
    for (int s : shots) os << " " << s << "-shot |";
    os << "\n|---|";
    for (std::size_t i = 0; i < shots.size(); ++i) os << "---:|";
    os << "\n";
    for (const auto& [task, by] : acc) {
        os << "| " << task << " |";
        for (int s : shots) {
            auto it = by.find(s);
            if (it == by.end()) os << " - |";
            else os << " " << std::fixed << std::setprecision(1) << 100.0 * it->second.first / it->second.second
                    << " (n=" << it->second.second << ") |";
        }
        os << "\n";
    }
    return os.str();
}

}  // namespace flamingo::fewshot

#pragma once
// `flamingo batch`: JSON Lines of tasks in, one JSON line of result or error
// out per task, in input order (SPEC section 5). Each input line is
// {"id", "task": "generate" | "score" | "embed" | "tokenize", ...} with the
// fields of the matching HTTP body; `images` are files (relative to the input
// file's directory) or data:image/...;base64 URIs. Workers each have a context
// of their own on the one shared model; results are written as soon as every
// earlier line's is, so an interrupted run keeps what it finished (--resume).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/flamingo.hpp>

namespace flamingo::batch {

using nlohmann::json;
using ojson = nlohmann::ordered_json;  // output objects keep their fields in the order written

// Standard base64 (padding optional, no whitespace) to bytes.
inline std::vector<std::uint8_t> base64(std::string_view s, std::size_t index) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    while (!s.empty() && s.back() == '=') s.remove_suffix(1);
    std::vector<std::uint8_t> out;
    out.reserve(s.size() * 3 / 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : s) {
        const int v = value(c);
        check(v >= 0, "images[", index, "]: invalid base64");
        acc = (acc << 6) | std::uint32_t(v), bits += 6;
        if (bits >= 8) bits -= 8, out.push_back(std::uint8_t(acc >> bits));
    }
    check(bits < 6, "images[", index, "]: invalid base64 length");
    return out;
}

// One task's fields, with errors that name the field.
class Body {
public:
    Body(const json& j, std::set<std::string> allowed) : j_(j) {
        allowed.insert({"id", "task"});
        for (const auto& [k, v] : j.items())
            check(allowed.count(k), "unknown field \"", k, "\" for task ", j["task"].get<std::string>());
    }
    bool has(const char* k) const { return j_.contains(k) && !j_[k].is_null(); }
    std::string text(const char* k) const {
        check(has(k), "missing field \"", k, "\"");
        check(j_[k].is_string(), "\"", k, "\" must be a string");
        return j_[k].get<std::string>();
    }
    long long integer(const char* k, long long fallback, long long lo, long long hi) const {
        if (!has(k)) return fallback;
        const json& v = j_[k];
        check(v.is_number_integer(), "\"", k, "\" must be an integer");
        check(!v.is_number_unsigned() || v.get<std::uint64_t>() <= std::uint64_t(hi), "\"", k, "\" must be between ",
              lo, " and ", hi);
        const long long x = v.get<long long>();
        check(x >= lo && x <= hi, "\"", k, "\" must be between ", lo, " and ", hi, ", got ", x);
        return x;
    }
    double number(const char* k, double fallback) const {
        if (!has(k)) return fallback;
        check(j_[k].is_number(), "\"", k, "\" must be a number");
        return j_[k].get<double>();
    }
    std::vector<std::string> strings(const char* k) const {
        if (!has(k)) return {};
        const json& v = j_[k];
        check(v.is_array(), "\"", k, "\" must be a list of strings");
        std::vector<std::string> out;
        for (const json& e : v) {
            check(e.is_string(), "\"", k, "\" must be a list of strings");
            out.push_back(e.get<std::string>());
        }
        return out;
    }

private:
    const json& j_;
};

// Where a task's images may come from and what a task may ask; batch and serve
// share the tasks and differ here.
struct TaskHooks {
    // Images may name files relative to this directory (batch); nullptr: only
    // base64, bare or as a data URI (serve: a server never opens a path).
    const std::filesystem::path* files = nullptr;
    std::size_t max_images = std::numeric_limits<std::size_t>::max();
    // Decoded pixels of one call's images together: they are all held before any is resized, so
    // without a bound 16 small files declaring 8192x8192 would hold 3 GB.
    std::uint64_t max_decoded_bytes = std::numeric_limits<std::uint64_t>::max();
    std::function<void(std::int32_t)> on_token;  // generate: each new token as it is chosen
    std::function<void()> on_step;               // generate: before each beam search step
};

// Bytes of a data:image/...;base64,... URI or (without files) of bare base64.
inline std::vector<std::uint8_t> inline_image(const std::string& s, std::size_t i) {
    if (s.rfind("data:", 0) == 0) {
        const auto comma = s.find(',');
        check(comma != std::string::npos && s.substr(0, comma).ends_with(";base64"), "images[", i,
              "]: a data URI must be data:image/...;base64,...");
        return base64(std::string_view(s).substr(comma + 1), i);
    }
    check(!s.empty(), "images[", i, "] is empty");
    return base64(s, i);
}

// The images of a task as pixels: files relative to hooks.files, or base64.
inline Pixels media(const Model& model, const std::vector<std::string>& images, std::size_t frames,
                    const TaskHooks& hooks) {
    check(images.size() <= hooks.max_images, "a request takes at most ", hooks.max_images, " images, got ",
          images.size());
    std::vector<std::vector<Image>> media;
    std::uint64_t decoded = 0;
    for (std::size_t i = 0; i < images.size(); ++i) {
        const std::string& s = images[i];
        const std::string name = "images[" + std::to_string(i) + "]";
        if (s.rfind("data:", 0) == 0 || !hooks.files) {
            media.push_back(decode_media_frames(inline_image(s, i), name, frames, model.image_limits()));
        } else {
            check(!s.empty(), "images[", i, "] is empty");
            std::filesystem::path p(s);
            if (p.is_relative()) p = *hooks.files / p;
            media.push_back(load_media_frames(p, frames, model.image_limits()));
        }
        for (const Image& im : media.back()) decoded += im.rgb.size();
        check(decoded <= hooks.max_decoded_bytes, ErrorKind::Limit, "images[0..", i, "] decode to ", decoded,
              " bytes of pixels, over the limit of ", hooks.max_decoded_bytes, " for one request");
    }
    return model.preprocess(media);
}

inline generate::GenerateOptions generate_options(const Body& b) {
    generate::GenerateOptions go;
    go.max_new_tokens = std::size_t(b.integer("max_new_tokens", 20, 1, 1 << 20));
    go.num_beams = std::size_t(b.integer("num_beams", 1, 1, 1024));
    go.length_penalty = float(b.number("length_penalty", 1.0));
    // Floats past float's range would become infinities inside the search and the sampler.
    check(std::isfinite(go.length_penalty), "\"length_penalty\" must be a number within float's range");
    go.no_repeat_ngram_size = std::size_t(b.integer("no_repeat_ngram_size", 0, 0, 1 << 20));
    for (const char* k : {"top_k", "top_p", "seed"})
        check(!b.has(k) || b.has("temperature"), "\"", k, "\" needs \"temperature\" (without it generation is greedy)");
    if (b.has("temperature")) {
        const double t = b.number("temperature", 1.0);
        check(t >= 0, "\"temperature\" must not be negative, got ", t);
        check(std::isfinite(float(t)), "\"temperature\" must be a number within float's range, got ", t);
        go.temperature = float(t);
    }
    go.top_k = std::size_t(b.integer("top_k", 50, 0, 1ll << 30));
    const double p = b.number("top_p", 1.0);
    check(p > 0.0 && p <= 1.0, "\"top_p\" must be in (0, 1], got ", p);
    go.top_p = float(p);
    go.seed = std::uint64_t(b.integer("seed", 0, 0, std::numeric_limits<long long>::max()));
    check(!(go.temperature && *go.temperature > 0 && go.num_beams > 1),
          "sampling (\"temperature\") with \"num_beams\" > 1 is not supported");
    return go;
}

// Runs one task on `ctx`; returns the HTTP answer's object, or throws.
inline ojson run_task(Context& ctx, const json& task, const TaskHooks& hooks) {
    const Model& model = ctx.model();
    check(task.is_object(), "a line must be a JSON object");
    check(task.contains("task"), "missing field \"task\"");
    check(task["task"].is_string(), "\"task\" must be a string");
    const std::string kind = task["task"].get<std::string>();
    const std::set<std::string> media_fields = {"prompt", "images", "frames"};
    if (kind == "tokenize") {
        Body b(task, {"prompt"});
        return {{"tokens", model.tokenize(b.text("prompt"))}};
    }
    if (kind == "embed") {
        Body b(task, {"images"});
        const auto images = b.strings("images");
        check(!images.empty(), "embed needs at least one image in \"images\"");
        const auto e = ctx.embed(media(model, images, 1, hooks));
        ojson out = ojson::array();
        for (std::size_t i = 0; i < e.extent(0); ++i)
            out.push_back(std::vector<float>(e.data() + i * e.extent(1), e.data() + (i + 1) * e.extent(1)));
        return {{"embeddings", std::move(out)}};
    }
    if (kind == "generate") {
        Body b(task, {"prompt", "images", "frames", "max_new_tokens", "num_beams", "length_penalty",
                      "no_repeat_ngram_size", "temperature", "top_k", "top_p", "seed"});
        const std::string prompt = b.text("prompt");
        auto go = generate_options(b);
        go.on_token = hooks.on_token, go.on_step = hooks.on_step;
        const std::size_t frames = std::size_t(b.integer("frames", 1, 1, 4096));
        const std::size_t prompt_tokens = model.tokenize(prompt).size();
        ctx.set_media(media(model, b.strings("images"), frames, hooks));
        const auto g = ctx.generate(prompt, go);
        return {{"text", g.text},
                {"tokens", g.tokens},
                {"stopped", g.stopped},
                {"usage", {{"prompt_tokens", prompt_tokens}, {"completion_tokens", g.tokens.size()}}}};
    }
    if (kind == "score") {
        Body b(task, {"prompt", "images", "frames", "candidates"});
        const std::string prompt = b.text("prompt");
        check(b.has("candidates"), "missing field \"candidates\"");
        const auto candidates = b.strings("candidates");
        const std::size_t frames = std::size_t(b.integer("frames", 1, 1, 4096));
        ctx.set_media(media(model, b.strings("images"), frames, hooks));
        ojson scores = ojson::array();
        for (const auto& c : ctx.score(prompt, candidates))
            scores.push_back({{"candidate", c.candidate}, {"logprob", c.score.logprob},
                              {"mean_logprob", c.score.mean_logprob}, {"tokens", c.score.tokens}});
        return {{"scores", std::move(scores)}};
    }
    fail("unknown task \"", kind, "\" (generate, score, embed or tokenize)");
}

// One input line, parsed (a line that is not JSON keeps its error for its answer).
struct Item {
    json task;
    json id;
    std::string parse_error;
};

inline Item parse_line(const std::string& line) {
    Item it;
    try {
        it.task = json::parse(line);
        if (it.task.is_object() && it.task.contains("id")) it.id = it.task["id"];
    } catch (const json::exception& e) {
        it.parse_error = std::string("malformed JSON: ") + e.what();
    }
    return it;
}

// The output line (without its newline) for one item: {"id", "result"} or
// {"id", "error"}; `failed` tells which. `ctx` is null when the worker's
// context could not be made, and `setup_error` then says why. The command's
// workers and the Python module's Model.batch_line both answer through here.
inline std::string answer_line(Context* ctx, const Item& it, const TaskHooks& hooks, const std::string& setup_error,
                               bool& failed) {
    ojson line;
    try {
        check(setup_error.empty() && ctx, setup_error);
        check(it.parse_error.empty(), it.parse_error);
        line = {{"id", ojson(it.id)}, {"result", run_task(*ctx, it.task, hooks)}};
    } catch (const std::bad_alloc&) {
        line = {{"id", ojson(it.id)}, {"error", {{"message", "out of memory"}}}};
    } catch (const std::exception& e) {
        line = {{"id", ojson(it.id)}, {"error", {{"message", e.what()}}}};
    }
    failed = line.contains("error");
    return line.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

struct Options {
    std::optional<std::filesystem::path> in, out;
    std::size_t parallel = 1;
    int threads = 1;  // all workers together
    bool resume = false;
    bool progress = false;
    std::size_t prefix_cache_mb = 256;  // prompt prefixes and media the workers share (0: no cache)
    std::size_t batch = 0;  // >0: the workers' greedy/sampled decoding steps run together, up to this many rows
};

// The ids (as JSON text) of the lines already in `out`; drops a last line cut short.
inline std::set<std::string> finished_ids(const std::filesystem::path& out) {
    std::set<std::string> ids;
    std::ifstream in(out, std::ios::binary);
    if (!in) return ids;
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    if (!all.empty() && all.back() != '\n') {  // an interrupted write: keep the whole lines
        all.erase(all.find_last_of('\n') == std::string::npos ? 0 : all.find_last_of('\n') + 1);
        std::ofstream rewrite(out, std::ios::binary | std::ios::trunc);
        rewrite << all;
        check(bool(rewrite), ErrorKind::File, "cannot write ", out.string());
    }
    std::istringstream lines(all);
    for (std::string line; std::getline(lines, line);) {
        json j = json::parse(line, nullptr, false);
        if (j.is_object() && j.contains("id")) ids.insert(j["id"].dump());
    }
    return ids;
}

// Runs every line; returns the process's exit status (0: all succeeded, 3: some failed).
inline int run(const std::shared_ptr<const Model>& model, const Options& o) {
    std::vector<std::string> lines;
    {
        std::ifstream file;
        if (o.in) {
            file.open(*o.in, std::ios::binary);
            check(bool(file), ErrorKind::File, "cannot open ", o.in->string());
        }
        std::istream& in = o.in ? file : std::cin;
        for (std::string line; std::getline(in, line);) {
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.find_first_not_of(" \t") != std::string::npos) lines.push_back(std::move(line));
        }
    }
    const std::filesystem::path base = o.in ? std::filesystem::absolute(*o.in).parent_path()
                                            : std::filesystem::current_path();

    // Parse every line first; lines whose id is already done are skipped.
    std::set<std::string> done;
    if (o.resume && o.out) done = finished_ids(*o.out);
    std::vector<Item> items;
    for (const std::string& line : lines) {
        Item it = parse_line(line);
        if (o.resume && done.count(it.id.dump()) && it.parse_error.empty() && !it.id.is_null()) continue;
        items.push_back(std::move(it));
    }

    std::ofstream file;
    if (o.out) {
        file.open(*o.out, std::ios::binary | (o.resume ? std::ios::app : std::ios::trunc));
        check(bool(file), ErrorKind::File, "cannot write ", o.out->string());
    }
    std::ostream& out = o.out ? file : std::cout;

    std::mutex mu;
    std::condition_variable ready;
    std::vector<std::optional<std::string>> results(items.size());
    std::atomic<std::size_t> next{0};
    std::atomic<bool> any_failed{false};
    const std::size_t workers = std::max<std::size_t>(1, std::min(o.parallel, items.size()));
    const int per_worker = std::max(1, o.threads / int(workers));

    TaskHooks hooks;
    hooks.files = &base;
    const auto cache = o.prefix_cache_mb ? std::make_shared<PrefixCache>(o.prefix_cache_mb << 20) : nullptr;
    // The loop steps every worker's sequences on all the threads; a worker's
    // own threads read its prompts meanwhile.
    const auto batcher = o.batch ? std::make_shared<generate::Batcher>(
                                       model->network(), o.batch, std::make_shared<Executor>(std::max(1, o.threads)))
                                 : nullptr;
    auto work = [&] {
        std::optional<Context> ctx;
        std::string setup_error;
        try {
            ctx.emplace(model, ContextOptions{per_worker, nullptr}, cache);
            ctx->set_batcher(batcher);
        } catch (const std::exception& e) {
            setup_error = e.what();
        }
        for (std::size_t i; (i = next++) < items.size();) {
            bool failed = false;
            std::string text = answer_line(ctx ? &*ctx : nullptr, items[i], hooks, setup_error, failed);
            if (failed) any_failed = true;
            {
                std::lock_guard lock(mu);
                results[i] = std::move(text);
            }
            ready.notify_all();
        }
    };
    std::vector<std::thread> pool;
    for (std::size_t w = 0; w < workers; ++w) pool.emplace_back(work);

    const auto t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < items.size(); ++i) {
        std::string text;
        {
            std::unique_lock lock(mu);
            ready.wait(lock, [&] { return results[i].has_value(); });
            text = std::move(*results[i]);
            results[i].reset();
        }
        out << text << "\n" << std::flush;
        if (o.progress) {
            const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double rate = double(i + 1) / std::max(el, 1e-9);
            std::cerr << "\33[2K" << i + 1 << "/" << items.size() << " lines, " << rate << " lines/s, "
                      << std::size_t(double(items.size() - i - 1) / rate) << " s left\r" << std::flush;
        }
    }
    for (auto& t : pool) t.join();
    if (o.progress) std::cerr << "\33[2K" << std::flush;
    check(bool(out), ErrorKind::File, "cannot write the results");
    return any_failed ? 3 : 0;
}

}  // namespace flamingo::batch

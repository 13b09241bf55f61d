// The `flamingo` command: few-shot generation, scoring, logits, tokenization
// and CLIP embeddings from a model directory (see the README and SPEC).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/io/npy.hpp>
#include <flamingo/pipeline.hpp>

#include "eval.hpp"

namespace {

using flamingo::Error;
using flamingo::fail;
using clock_type = std::chrono::steady_clock;

constexpr const char* kUsage = R"(usage: flamingo <command> --model DIR [options]

commands:
  generate --prompt TEXT [--max-new-tokens N] [--num-beams B] [--length-penalty L]
           [--no-repeat-ngram-size K] [--early-stopping true|false|never]
           [--temperature T --top-k K --top-p P --seed S] [--json]
  score    --prompt TEXT --candidate TEXT [--candidate TEXT ...]
  logits   --prompt TEXT --out FILE.npy
  tokenize --prompt TEXT
  embed    --out FILE.npy            (images only)
  eval     --data DIR [--limit N] [--out TABLE.md] [--predictions FILE.jsonl]
           accuracy per task and shot count on an evaluation set

common options:
  --model DIR      model directory (config.json, tokenizer.json, *.safetensors)
  --image PATH     an image per <image> in the prompt, in order (repeatable); with
                   --frames F > 1, an animated GIF or a directory of frames
  --frames F       frames per medium (video), sampled evenly (default 1)
  --threads N      threads (default: all cores)
  --bf16           run the large matrices in bf16 (half the memory traffic)
  --verbose        timings on stderr
)";

struct Args {
    std::string command;
    std::map<std::string, std::vector<std::string>> values;
    bool has(const std::string& k) const { return values.count(k) != 0; }
    const std::string* get(const std::string& k) const {
        auto it = values.find(k);
        return it == values.end() ? nullptr : &it->second.back();
    }
};

// GNU-style long options: --name value, --name=value; flags take no value.
Args parse(int argc, char** argv) {
    static const std::map<std::string, bool> known = {  // name -> takes a value
        {"model", true}, {"image", true}, {"frames", true}, {"threads", true}, {"prompt", true},
        {"max-new-tokens", true}, {"num-beams", true}, {"length-penalty", true}, {"no-repeat-ngram-size", true},
        {"early-stopping", true}, {"temperature", true}, {"top-k", true}, {"top-p", true}, {"seed", true},
        {"candidate", true}, {"out", true}, {"data", true}, {"limit", true}, {"predictions", true}, {"json", false}, {"verbose", false}, {"bf16", false}, {"help", false}};
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) != 0) {
            if (!a.command.empty()) fail("unexpected argument '", s, "'");
            a.command = s;
            continue;
        }
        std::string name = s.substr(2), value;
        bool inline_value = false;
        if (auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1), name = name.substr(0, eq), inline_value = true;
        }
        auto k = known.find(name);
        if (k == known.end()) fail("unknown option --", name);
        if (k->second && !inline_value) {
            if (i + 1 >= argc) fail("option --", name, " needs a value");
            value = argv[++i];
        } else if (!k->second && inline_value) {
            fail("option --", name, " takes no value");
        }
        a.values[name].push_back(value);
    }
    return a;
}

long long integer(const Args& a, const std::string& k, long long fallback, long long lo, long long hi) {
    const std::string* v = a.get(k);
    if (!v) return fallback;
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v->c_str(), &end, 10);
    if (v->empty() || *end || errno) fail("--", k, ": '", *v, "' is not an integer");
    if (x < lo || x > hi) fail("--", k, " must be between ", lo, " and ", hi, ", got ", x);
    return x;
}

double number(const Args& a, const std::string& k, double fallback) {
    const std::string* v = a.get(k);
    if (!v) return fallback;
    char* end = nullptr;
    double x = std::strtod(v->c_str(), &end);
    if (v->empty() || *end || !std::isfinite(x)) fail("--", k, ": '", *v, "' is not a number");
    return x;
}

const std::string& required(const Args& a, const std::string& k) {
    const std::string* v = a.get(k);
    if (!v) fail(a.command, " needs --", k);
    return *v;
}

std::vector<std::string> list(const Args& a, const std::string& k) {
    auto it = a.values.find(k);
    return it == a.values.end() ? std::vector<std::string>{} : it->second;
}

double since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

int run(int argc, char** argv) {
    Args a = parse(argc, argv);
    if (a.has("help") || a.command.empty()) {
        std::cout << kUsage;
        return a.command.empty() && !a.has("help") ? 2 : 0;
    }
    const std::string& cmd = a.command;
    if (cmd != "generate" && cmd != "score" && cmd != "logits" && cmd != "tokenize" && cmd != "embed" && cmd != "eval")
        fail("unknown command '", cmd, "' (generate, score, logits, tokenize, embed, eval)");
    const bool verbose = a.has("verbose");
    const bool progress = isatty(2);
    const std::string model_dir = required(a, "model");
    flamingo::set_num_threads(int(integer(a, "threads", flamingo::num_threads(), 1, 1024)));
    const std::size_t frames = std::size_t(integer(a, "frames", 1, 1, 4096));
    const std::vector<std::string> images = list(a, "image");

    // Validate the options before the (slow) load.
    flamingo::generate::GenerateOptions go;
    if (cmd == "generate") {
        go.max_new_tokens = std::size_t(integer(a, "max-new-tokens", 20, 1, 1 << 20));
        go.num_beams = std::size_t(integer(a, "num-beams", 1, 1, 1024));
        go.length_penalty = float(number(a, "length-penalty", 1.0));
        go.no_repeat_ngram_size = std::size_t(integer(a, "no-repeat-ngram-size", 0, 0, 1 << 20));
        if (const std::string* e = a.get("early-stopping")) {
            if (*e == "true") go.early_stopping = flamingo::generate::EarlyStopping::True;
            else if (*e == "false") go.early_stopping = flamingo::generate::EarlyStopping::False;
            else if (*e == "never") go.early_stopping = flamingo::generate::EarlyStopping::Never;
            else fail("--early-stopping must be true, false or never, got '", *e, "'");
        }
        if (a.has("temperature")) {
            double t = number(a, "temperature", 1.0);
            if (t < 0) fail("--temperature must not be negative, got ", t);
            go.temperature = float(t);
        }
        go.top_k = std::size_t(integer(a, "top-k", 50, 0, 1ll << 30));
        double p = number(a, "top-p", 1.0);
        if (!(p > 0.0 && p <= 1.0)) fail("--top-p must be in (0, 1], got ", p);
        go.top_p = float(p);
        go.seed = std::uint64_t(integer(a, "seed", 0, 0, std::numeric_limits<long long>::max()));
        if (go.temperature && *go.temperature > 0 && go.num_beams > 1)
            fail("sampling (--temperature) with --num-beams > 1 is not supported");
    }
    if (cmd == "embed" && images.empty()) fail("embed needs at least one --image");
    if ((cmd == "logits" || cmd == "embed")) required(a, "out");
    if (cmd == "score" && list(a, "candidate").empty()) fail("score needs at least one --candidate");
    for (const auto& c : list(a, "candidate"))
        if (c.empty()) fail("a --candidate is empty");

    auto t0 = clock_type::now();
    if (progress) std::cerr << "loading " << model_dir << "...\r" << std::flush;
    flamingo::model::LoadOptions lo;
    if (a.has("bf16")) lo.weights = flamingo::nn::WeightType::BF16;
    flamingo::Pipeline p(model_dir, lo);
    if (progress) std::cerr << "\33[2K" << std::flush;
    if (verbose) {
        std::cerr << "load: " << since(t0) << " s (preset " << p.model().preset() << ", " << flamingo::num_threads()
                  << " threads)\n";
        for (const auto& n : p.model().unused_tensors()) std::cerr << "warning: unused tensor " << n << "\n";
    } else if (!p.model().unused_tensors().empty()) {
        std::cerr << "warning: " << p.model().unused_tensors().size() << " tensors in the checkpoint are not used"
                  << " (e.g. " << p.model().unused_tensors()[0] << "; --verbose lists them)\n";
    }

    if (cmd == "tokenize") {
        std::cout << nlohmann::json(p.tokenize(required(a, "prompt"))).dump() << "\n";
        return 0;
    }
    if (cmd == "eval") {
        const std::size_t limit = std::size_t(integer(a, "limit", 0, 0, 1ll << 40));
        t0 = clock_type::now();
        auto outcomes = flamingo::fewshot::run(p, required(a, "data"), limit, [&](std::size_t n) {
            if (progress) std::cerr << "\33[2Kevaluated " << n << " prompts\r" << std::flush;
        });
        if (progress) std::cerr << "\33[2K" << std::flush;
        if (verbose) std::cerr << "eval: " << outcomes.size() << " prompts in " << since(t0) << " s\n";
        const std::string t = flamingo::fewshot::table(outcomes);
        std::cout << t;
        if (const std::string* out = a.get("out")) {
            std::ofstream f(*out);
            f << t;
            if (!f) fail("cannot write ", *out);
        }
        if (const std::string* pred = a.get("predictions")) {
            std::ofstream f(*pred);
            for (const auto& o : outcomes)
                f << nlohmann::json({{"id", o.id}, {"task", o.task}, {"shots", o.shots}, {"prediction", o.prediction},
                                     {"correct", o.correct}}).dump() << "\n";
            if (!f) fail("cannot write ", *pred);
        }
        return 0;
    }
    if (cmd == "embed") {
        t0 = clock_type::now();
        auto e = p.embed(images);
        if (verbose) std::cerr << "encode images: " << since(t0) << " s for " << images.size() << "\n";
        flamingo::io::write_npy(required(a, "out"), e.data(), {images.size(), p.model().embed_dim()});
        return 0;
    }

    const std::string& prompt = required(a, "prompt");
    auto ids = p.tokenize(prompt);
    std::size_t n_image_tokens = 0;
    for (auto id : ids) n_image_tokens += id == p.model().config().media_token_id;
    if (n_image_tokens != images.size())
        fail("the prompt has ", n_image_tokens, " <image> token", n_image_tokens == 1 ? "" : "s", " but ",
             images.size(), " --image", images.size() == 1 ? " was" : "s were", " given");
    if (progress && !images.empty()) std::cerr << "encoding " << images.size() << " media...\r" << std::flush;
    p.set_media(images, frames);
    if (progress) std::cerr << "\33[2K" << std::flush;
    auto& st = p.session().stats();
    if (verbose) std::cerr << "encode images: " << st.media_seconds << " s for " << images.size() << " media\n";

    if (cmd == "generate") {
        std::size_t produced = 0;
        if (progress)
            go.on_token = [&](std::int32_t) {
                std::cerr << "\33[2Kgenerating: " << ++produced << "/" << go.max_new_tokens << " tokens\r" << std::flush;
            };
        auto g = p.generate(prompt, go);
        if (progress) std::cerr << "\33[2K" << std::flush;
        if (verbose) {
            std::cerr << "read prompt: " << st.read_tokens << " tokens in " << st.read_seconds << " s ("
                      << double(st.read_tokens) / st.read_seconds << " tokens/s)\n";
            std::cerr << "generate: " << st.steps << " steps in " << st.step_seconds << " s ("
                      << (st.steps ? double(st.steps) / st.step_seconds : 0.0) << " tokens/s)\n";
        }
        if (a.has("json")) std::cout << nlohmann::json({{"text", g.text}, {"tokens", g.tokens}}).dump() << "\n";
        else std::cout << g.text << "\n";
        return 0;
    }
    if (cmd == "score") {
        auto s = p.score(prompt, list(a, "candidate"));
        nlohmann::json out = nlohmann::json::array();
        for (const auto& c : s)
            out.push_back({{"candidate", c.candidate}, {"logprob", c.score.logprob},
                           {"mean_logprob", c.score.mean_logprob}, {"tokens", c.score.tokens}});
        if (verbose)
            std::cerr << "read: " << st.read_tokens << " tokens in " << st.read_seconds << " s ("
                      << double(st.read_tokens) / st.read_seconds << " tokens/s)\n";
        std::cout << out.dump(2) << "\n";
        return 0;
    }
    // logits
    std::size_t T = 0;
    auto lg = p.logits(prompt, &T);
    if (verbose)
        std::cerr << "read prompt: " << T << " tokens in " << st.read_seconds << " s ("
                  << double(T) / st.read_seconds << " tokens/s)\n";
    flamingo::io::write_npy(required(a, "out"), lg.data(), {T, p.model().vocab_size()});
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const Error& e) {
        std::cerr << "flamingo: error: " << e.what() << "\n";
    } catch (const nlohmann::json::exception& e) {
        std::cerr << "flamingo: error: " << e.what() << "\n";
    } catch (const std::bad_alloc&) {
        std::cerr << "flamingo: error: out of memory\n";
    } catch (const std::exception& e) {
        std::cerr << "flamingo: error: " << e.what() << "\n";
    }
    return 1;
}

// The `flamingo` command: few-shot generation, scoring, logits, tokenization,
// CLIP embeddings and evaluation from a model directory (see the README and SPEC).
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/flamingo.hpp>
#include <flamingo/io/npy.hpp>
#include <flamingo/model/quantize.hpp>

#include "batch.hpp"
#include "chat.hpp"
#include "eval.hpp"
#ifdef FLAMINGO_SERVE
#include "serve.hpp"
#endif

namespace {

using flamingo::Error;
using flamingo::ErrorKind;
using flamingo::fail;
using clock_type = std::chrono::steady_clock;

struct Command {
    const char* name;
    const char* synopsis;  // its own options, for the usage text
    const char* what;
};

const Command kCommands[] = {
    {"generate",
     "--prompt TEXT [--max-new-tokens N] [--num-beams B] [--length-penalty L]\n"
     "           [--no-repeat-ngram-size K] [--early-stopping true|false|never]\n"
     "           [--temperature T [--top-k K] [--top-p P] [--seed S]] [--json]",
     "few-shot generation from an interleaved prompt (greedy unless --num-beams or --temperature)"},
    {"score", "--prompt TEXT --candidate TEXT [--candidate TEXT ...]",
     "log-likelihood of each candidate continuation, as JSON"},
    {"logits", "--prompt TEXT --out FILE.npy", "teacher-forced logits [tokens, vocab] as float32 .npy"},
    {"tokenize", "--prompt TEXT", "the prompt's token ids, as JSON (no images needed)"},
    {"embed", "--out FILE.npy", "CLIP embeddings [images, dim] of the --image files as float32 .npy"},
    {"eval", "--data DIR [--limit N] [--out TABLE.md] [--predictions FILE.jsonl] [--held-out]\n"
             "           [--support DIR [--shots random|rices] [--seed S] [--trials N]]",
     "few-shot accuracy per task and shot count on an evaluation set; query records take\n"
     "           their examples from the --support pool, at random or by CLIP similarity (RICES);\n"
     "           random: N draws (seeds S..S+N-1), each cell over all of them"},
    {"chat", "[--image PATH ...] [generation options of generate]",
     "a conversation on stdin, one message per line (/image PATH, /reset, /quit)"},
    {"batch", "[--in FILE.jsonl] [--out FILE.jsonl] [--parallel N] [--resume] [--prefix-cache MB] [--batch N]",
     "JSON Lines of generate/score/embed/tokenize tasks, one result line each, in order"},
    {"serve", "[--host 127.0.0.1] [--port 8080] [--parallel N] [--queue N] [--api-key KEY]\n"
              "           [--prefix-cache MB] [--body-timeout SEC] [--batch N]",
     "HTTP server: /v1/generate, score, embed, tokenize, chat/completions, /health, /metrics"
#ifndef FLAMINGO_SERVE
     "\n           (not in this build: it needs cpp-httplib)"
#endif
    },
    {"quantize", "--weights q8|q4 --out DIR",
     "writes the model quantised into a new model directory, which then loads as q8/q4 without --weights"},
};

// Every option, once: the parser, the checks and the usage text read this list.
struct Option {
    const char* name;
    const char* value;     // placeholder of its value; nullptr: a flag
    const char* commands;  // the commands that take it, space-separated; "*": all
    const char* help;      // nullptr: documented in the command's synopsis only
};

const Option kOptions[] = {
    {"model", "DIR", "*", "model directory (config.json, tokenizer.json, *.safetensors)"},
    {"image", "PATH", "generate score logits embed chat",
     "an image per <image> in the prompt, in order (repeatable); with\n"
     "                      --frames F > 1, an animated GIF or a directory of frames"},
    {"frames", "F", "generate score logits eval",
     "frames per medium (video), sampled evenly (default 1; eval: records may say)"},
    {"threads", "N", "*", "threads (default: all cores)"},
    {"weights", "f32|bf16|q8|q4", "*",
     "the format the large matrices are held and multiplied in (default: as stored,\n"
     "                      f32 unless the directory was written by quantize; q8/q4 quantise at load)"},
    {"bf16", nullptr, "*", "same as --weights bf16"},
    {"verbose", nullptr, "*", "timings on stderr"},
    {"help", nullptr, "*", "this text"},
    {"prompt", "TEXT", "generate score logits tokenize", nullptr},
    {"max-new-tokens", "N", "generate chat", nullptr},
    {"num-beams", "B", "generate chat", nullptr},
    {"length-penalty", "L", "generate chat", nullptr},
    {"no-repeat-ngram-size", "K", "generate chat", nullptr},
    {"early-stopping", "true|false|never", "generate chat", nullptr},
    {"temperature", "T", "generate chat", nullptr},
    {"top-k", "K", "generate chat", nullptr},
    {"top-p", "P", "generate chat", nullptr},
    {"seed", "S", "generate chat eval", nullptr},
    {"json", nullptr, "generate", nullptr},
    {"candidate", "TEXT", "score", nullptr},
    {"out", "FILE", "logits embed eval batch quantize", nullptr},
    {"in", "FILE", "batch", nullptr},
    {"parallel", "N", "batch serve", nullptr},
    {"host", "ADDR", "serve", nullptr},
    {"port", "N", "serve", nullptr},
    {"queue", "N", "serve", nullptr},
    {"batch", "N", "batch serve",
     "decode the workers' generations together, up to N sequences (a beam\n"
     "                      search: one per beam) per step, reading the weights once for all (default 0: off)"},
    {"api-key", "KEY", "serve", nullptr},
    {"body-timeout", "SEC", "serve", "seconds a request's body may take to arrive (default 30); past them 408"},
    {"resume", nullptr, "batch", nullptr},
    {"prefix-cache", "MB", "batch serve",
     "memory for prompt prefixes (keys/values) and encoded images that the\n"
     "                      workers share and reuse across requests (default 256; 0: off)"},
    {"data", "DIR", "eval", nullptr},
    {"limit", "N", "eval", nullptr},
    {"predictions", "FILE", "eval", nullptr},
    {"support", "DIR", "eval", nullptr},
    {"shots", "random|rices", "eval", nullptr},
    {"trials", "N", "eval", nullptr},
    {"held-out", nullptr, "eval", nullptr},
};

const Option* find_option(const std::string& name) {
    for (const Option& o : kOptions)
        if (name == o.name) return &o;
    return nullptr;
}

bool applies(const Option& o, const std::string& command) {
    if (std::string(o.commands) == "*") return true;
    std::istringstream is(o.commands);
    for (std::string c; is >> c;)
        if (c == command) return true;
    return false;
}

std::string usage() {
    std::ostringstream os;
    os << "usage: flamingo <command> --model DIR [options]\n\ncommands:\n";
    for (const Command& c : kCommands) os << "  " << c.name << std::string(9 - std::string(c.name).size(), ' ') << c.synopsis << "\n           " << c.what << "\n";
    os << "\ncommon options:\n";
    for (const Option& o : kOptions) {
        if (!o.help) continue;
        std::string head = std::string("--") + o.name + (o.value ? std::string(" ") + o.value : "");
        os << "  " << head << std::string(head.size() < 20 ? 20 - head.size() : 1, ' ') << o.help << "\n";
    }
    return os.str();
}

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
        const Option* o = find_option(name);
        if (!o) fail("unknown option --", name, " (flamingo --help lists them)");
        if (o->value && !inline_value) {
            if (i + 1 >= argc) fail("option --", name, " needs a value");
            value = argv[++i];
        } else if (!o->value && inline_value) {
            fail("option --", name, " takes no value");
        }
        a.values[name].push_back(value);
    }
    if (a.has("help")) return a;
    if (a.command.empty())
        fail("no command given (generate, score, logits, tokenize, embed, eval, chat, batch, serve, quantize; flamingo --help)");
    bool known = false;
    for (const Command& c : kCommands) known = known || a.command == c.name;
    if (!known)
        fail("unknown command '", a.command, "' (generate, score, logits, tokenize, embed, eval, chat, batch, serve, quantize)");
    for (const auto& [name, v] : a.values)
        if (!applies(*find_option(name), a.command)) fail("option --", name, " does not apply to ", a.command);
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

flamingo::generate::GenerateOptions generate_options(const Args& a) {
    flamingo::generate::GenerateOptions go;
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
    // Sampling is on with --temperature; its other options mean nothing without it.
    for (const char* k : {"top-k", "top-p", "seed"})
        if (a.has(k) && !a.has("temperature"))
            fail("--", k, " needs --temperature (it shapes sampling; without --temperature generation is greedy)");
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
    return go;
}

int run(int argc, char** argv) {
    Args a = parse(argc, argv);
    if (a.has("help")) {
        std::cout << usage();
        return 0;
    }
    const std::string& cmd = a.command;
    const bool verbose = a.has("verbose");
    const bool progress = isatty(2);
    const std::string model_dir = required(a, "model");
    const int threads = int(integer(a, "threads", flamingo::Executor::hardware_threads(), 1, 1024));
    const std::size_t frames = std::size_t(integer(a, "frames", 1, 1, 4096));
    const std::vector<std::string> images = list(a, "image");
    flamingo::LoadOptions lo;
    if (const std::string* w = a.get("weights")) {
        if (auto t = flamingo::model::parse_weight_type(*w)) lo.weights = *t;
        else fail("--weights must be f32, bf16, q8 or q4, got '", *w, "'");
    }
    if (a.has("bf16")) {
        if (a.has("weights") && lo.weights != flamingo::WeightType::BF16) fail("--bf16 contradicts --weights");
        lo.weights = flamingo::WeightType::BF16;
    }

    // Validate the options before the (slow) load.
    flamingo::generate::GenerateOptions go;
    if (cmd == "generate" || cmd == "chat") go = generate_options(a);
    const std::size_t parallel = std::size_t(integer(a, "parallel", 1, 1, 256));
    if (a.has("resume") && !a.has("out")) fail("--resume needs --out (the file whose ids are skipped)");
    if (cmd == "embed" && images.empty()) fail("embed needs at least one --image");
    if (cmd == "logits" || cmd == "embed") required(a, "out");
    if (cmd == "score" && list(a, "candidate").empty()) fail("score needs at least one --candidate");
    for (const auto& c : list(a, "candidate"))
        if (c.empty()) fail("a --candidate is empty");
    if (cmd == "eval") required(a, "data");
    if (cmd == "eval" && a.has("seed") && !a.has("support")) fail("--seed needs --support (it seeds the random examples)");
    if (a.has("shots") && !a.has("support")) fail("--shots needs --support (the pool the examples come from)");
    if (const std::string* s = a.get("shots"); s && *s != "random" && *s != "rices")
        fail("--shots must be random or rices, not '", *s, "'");
    const auto trials = std::uint64_t(integer(a, "trials", 1, 1, 1000));
    if (a.has("trials") && (!a.has("support") || (a.has("shots") && *a.get("shots") == "rices")))
        fail("--trials needs --support and random examples (RICES picks the same examples every time)");
    std::optional<flamingo::fewshot::Support> support;  // read (and checked) before the model loads
    if (const std::string* dir = a.get("support"); dir && cmd == "eval") support.emplace(*dir);
    [[maybe_unused]] const int port = int(integer(a, "port", 8080, 0, 65535));
    [[maybe_unused]] const std::size_t queue = std::size_t(integer(a, "queue", 8, 0, 1024));
    [[maybe_unused]] const int body_timeout = int(integer(a, "body-timeout", 30, 1, 3600));
    const std::size_t batch = std::size_t(integer(a, "batch", 0, 0, 256));
    const std::size_t prefix_cache_mb = std::size_t(integer(a, "prefix-cache", 256, 0, 1 << 20));
    if (const std::string* k = a.get("api-key"); k && k->empty()) fail("--api-key is empty");
#ifndef FLAMINGO_SERVE
    if (cmd == "serve") fail("this flamingo was built without serve (it needs cpp-httplib: libcpp-httplib-dev)");
#endif

    if (cmd == "quantize") {
        const std::string& out = required(a, "out");
        if (!lo.weights || !flamingo::model::is_quantized(*lo.weights))
            fail("quantize needs --weights q8 or --weights q4");
        auto t0 = clock_type::now();
        flamingo::Executor ex(threads);  // quantising runs its rows on --threads threads
        flamingo::Executor::Scope use(ex);
        const auto s = flamingo::model::quantize_model(model_dir, out, *lo.weights);
        std::cout << "wrote " << out << ": " << s.matrices << " matrices quantised to "
                  << flamingo::model::weight_type_name(*lo.weights) << ", " << s.tensors << " tensors, "
                  << double(s.bytes_out) / 1e6 << " MB (from " << double(s.bytes_in) / 1e6 << " MB)\n";
        if (verbose) std::cerr << "quantize: " << since(t0) << " s\n";
        return 0;
    }

    auto t0 = clock_type::now();
    if (progress) std::cerr << "loading " << model_dir << "...\r" << std::flush;
    const auto model = [&] {  // quantising at load (--weights q8|q4) runs its rows on --threads threads
        flamingo::Executor ex(threads);
        flamingo::Executor::Scope use(ex);
        return flamingo::Model::load(model_dir, lo);
    }();
    // chat, batch and serve run on contexts of their own
    flamingo::Context ctx(model, {cmd == "chat" || cmd == "batch" || cmd == "serve" ? 1 : threads, nullptr});
    if (progress) std::cerr << "\33[2K" << std::flush;
    const auto& net = model->network();
    if (verbose) {
        std::cerr << "load: " << since(t0) << " s (weights " << flamingo::model::weight_type_name(net.weight_type()) << ", "
                  << threads << " threads)\n";
        std::cerr << "kernels: " << flamingo::kernels::kernel_set() << "\n";
        if (net.weight_type() == flamingo::WeightType::BF16)
            std::cerr << "bf16 GEMM (9+ rows; FLAMINGO_BF16_GEMM=widen forces widening): "
                      << flamingo::kernels::bf16_gemm_kind() << "\n";
        for (const auto& n : net.unused_tensors()) std::cerr << "warning: unused tensor " << n << "\n";
    } else if (!net.unused_tensors().empty()) {
        std::cerr << "warning: " << net.unused_tensors().size() << " tensors in the checkpoint are not used"
                  << " (e.g. " << net.unused_tensors()[0] << "; --verbose lists them)\n";
    }

    if (cmd == "chat") {
        flamingo::chat::Options co;
        co.threads = threads, co.images = images, co.generate = go, co.verbose = verbose;
        return flamingo::chat::run(model, co);
    }
    if (cmd == "batch") {
        flamingo::batch::Options bo;
        if (const std::string* in = a.get("in")) bo.in = *in;
        if (const std::string* out = a.get("out")) bo.out = *out;
        bo.parallel = parallel, bo.threads = threads, bo.resume = a.has("resume"), bo.progress = progress;
        bo.prefix_cache_mb = prefix_cache_mb, bo.batch = batch;
        return flamingo::batch::run(model, bo);
    }
#ifdef FLAMINGO_SERVE
    if (cmd == "serve") {
        flamingo::serve::Options so;
        if (const std::string* h = a.get("host")) so.host = *h;
        if (const std::string* k = a.get("api-key")) so.api_key = *k;
        so.port = port, so.parallel = parallel, so.threads = threads, so.queue = queue, so.batch = batch;
        so.prefix_cache_mb = prefix_cache_mb, so.body_timeout = body_timeout;
        return flamingo::serve::run(model, so);
    }
#endif
    if (cmd == "tokenize") {
        std::cout << nlohmann::json(model->tokenize(required(a, "prompt"))).dump() << "\n";
        return 0;
    }
    if (cmd == "eval") {
        const std::size_t limit = std::size_t(integer(a, "limit", 0, 0, 1ll << 40));
        t0 = clock_type::now();
        const bool rices = a.has("shots") && *a.get("shots") == "rices";
        const auto seed = std::uint64_t(integer(a, "seed", 0, 0, std::numeric_limits<long long>::max()));
        // Random examples are one draw of many: --trials runs the records once
        // per seed (OpenFlamingo's --num_trials) and the table pools them.
        std::vector<flamingo::fewshot::Outcome> outcomes;
        for (std::uint64_t t = 0; t < trials; ++t) {
            std::optional<flamingo::fewshot::Examples> examples;
            if (support)
                examples.emplace(*support, rices ? flamingo::fewshot::ShotRule::Rices
                                                 : flamingo::fewshot::ShotRule::Random, seed + t);
            const std::size_t before = outcomes.size();
            auto trial = flamingo::fewshot::run(
                ctx, required(a, "data"), limit, frames,
                [&](std::size_t n) {
                    if (progress) std::cerr << "\33[2Kevaluated " << before + n << " prompts\r" << std::flush;
                },
                examples ? &*examples : nullptr, verbose);
            for (auto& o : trial) o.seed = seed + t;
            outcomes.insert(outcomes.end(), std::make_move_iterator(trial.begin()), std::make_move_iterator(trial.end()));
        }
        if (progress) std::cerr << "\33[2K" << std::flush;
        if (verbose) std::cerr << "eval: " << outcomes.size() << " prompts in " << since(t0) << " s\n";
        std::string t = flamingo::fewshot::table(outcomes);
        if (a.has("held-out")) {
            std::vector<flamingo::fewshot::Outcome> held;
            for (const auto& o : outcomes)
                if (o.held_out) held.push_back(o);
            t += "\nqueries whose (shape, colour) pair was held out of training:\n\n" + flamingo::fewshot::table(held);
        }
        std::cout << t;
        if (const std::string* out = a.get("out")) {
            std::ofstream f(*out);
            f << t;
            if (!f) fail(ErrorKind::File, "cannot write ", *out);
        }
        if (const std::string* pred = a.get("predictions")) {
            std::ofstream f(*pred);
            for (const auto& o : outcomes) {
                nlohmann::json line = {{"id", o.id}, {"task", o.task}, {"shots", o.shots}, {"prediction", o.prediction},
                                       {"correct", o.correct}};
                if (support) line["examples"] = o.examples;
                if (trials > 1) line["seed"] = o.seed;
                f << line.dump() << "\n";
            }
            if (!f) fail(ErrorKind::File, "cannot write ", *pred);
        }
        return 0;
    }
    if (cmd == "embed") {
        t0 = clock_type::now();
        auto e = ctx.embed(images);
        if (verbose) std::cerr << "encode images: " << since(t0) << " s for " << images.size() << "\n";
        flamingo::io::write_npy(required(a, "out"), e.data(), {e.extent(0), e.extent(1)});
        return 0;
    }

    const std::string& prompt = required(a, "prompt");
    auto ids = model->tokenize(prompt);
    std::size_t n_image_tokens = 0;
    for (auto id : ids) n_image_tokens += id == model->config().media_token_id;
    if (n_image_tokens != images.size())
        fail("the prompt has ", n_image_tokens, " <image> token", n_image_tokens == 1 ? "" : "s", " but ",
             images.size(), " --image", images.size() == 1 ? " was" : "s were", " given");
    if (progress && !images.empty()) std::cerr << "encoding " << images.size() << " media...\r" << std::flush;
    ctx.set_media(images, frames);
    if (progress) std::cerr << "\33[2K" << std::flush;
    const auto& st = ctx.stats();
    if (verbose) std::cerr << "encode images: " << st.media_seconds << " s for " << images.size() << " media\n";

    if (cmd == "generate") {
        std::size_t produced = 0;
        if (progress)
            go.on_token = [&](std::int32_t) {
                std::cerr << "\33[2Kgenerating: " << ++produced << "/" << go.max_new_tokens << " tokens\r" << std::flush;
            };
        auto g = ctx.generate(prompt, go);
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
        auto s = ctx.score(prompt, list(a, "candidate"));
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
    auto lg = ctx.logits(prompt);
    if (verbose)
        std::cerr << "read prompt: " << lg.extent(0) << " tokens in " << st.read_seconds << " s ("
                  << double(lg.extent(0)) / st.read_seconds << " tokens/s)\n";
    flamingo::io::write_npy(required(a, "out"), lg.data(), {lg.extent(0), lg.extent(1)});
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

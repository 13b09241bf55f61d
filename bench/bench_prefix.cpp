// The prefix cache on a few-shot workload: one prompt of K captioned
// examples (K images, 3 by default) and a query image, asked again and again with other
// query images and texts, as an evaluation or a server sees it. Times each
// request on a context without a cache and on one with a cache, and checks
// that both give the same tokens.
//
//   bench_prefix [--model DIR] [--weights f32|bf16|q8|q4] [--threads N] [--shots K] [--queries Q] [--tokens T] [--reps R]
//
// Each request's time is the median over R runs (a fresh context and cache each),
// the runs without and with the cache alternating, so that other load on the
// machine falls on both alike.
// DIR defaults to the bundled model; for a large model use the random-weight
// OpenFlamingo-3B directory that `bench_e2e --make-model` writes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <flamingo/flamingo.hpp>

#include "bench_common.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Options {
    fs::path model = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    flamingo::WeightType weights = flamingo::WeightType::F32;
    int threads = 2;
    std::size_t shots = 3, queries = 5, tokens = 8, reps = 3;
};

// Pixels of image k: a fixed pattern of its own.
void fill(float* px, std::size_t n, int k) {
    for (std::size_t i = 0; i < n; ++i) px[i] = float((i * 7 + std::size_t(k) * 13) % 17) / 8.0f - 1.0f;
}

const char* kShots[] = {"<image>A photo of three striped yellow circles.<|endofchunk|>",
                        "<image>A photo of four orange crosses.<|endofchunk|>",
                        "<image>A photo of two dotted green stars.<|endofchunk|>",
                        "<image>A photo of one large blue square.<|endofchunk|>"};
const char* kQueries[] = {"A photo of", "Question: what is in the picture? Answer:", "A photo of two",
                          "Describe the image:", "A picture of"};

struct Run {
    std::vector<double> seconds;
    // Of the later requests' time (summed): encoding images, reading prompt
    // tokens, decoding steps (the rest is matching the cache, copying from it,
    // tokenizing and choosing tokens).
    double media = 0, read = 0, steps = 0, total = 0;
    std::vector<std::vector<std::int32_t>> tokens;
    std::size_t read_tokens = 0, reused = 0, encoded = 0;
};

Run run(const std::shared_ptr<const flamingo::Model>& model, const Options& o,
        std::shared_ptr<flamingo::PrefixCache> cache) {
    flamingo::Context ctx(model, {o.threads, nullptr}, cache);
    const std::size_t S = model->image_size(), per = 3 * S * S;
    const std::size_t K = o.shots;
    flamingo::Pixels px(K + 1, std::size_t(1), std::size_t(3), S, S);
    std::string shots;
    for (std::size_t k = 0; k < K; ++k) fill(px.data() + k * per, per, int(k)), shots += kShots[k];
    flamingo::generate::GenerateOptions g;
    g.max_new_tokens = o.tokens;
    g.eos = -1;  // no stop: every request decodes the same number of tokens
    Run r;
    for (std::size_t q = 0; q < o.queries; ++q) {
        fill(px.data() + K * per, per, int(100 + q));  // another query image each time
        const std::string prompt = shots + "<image>" + kQueries[q % std::size(kQueries)];
        const auto before = ctx.stats();
        const auto t0 = Clock::now();
        ctx.set_media(px);
        r.tokens.push_back(ctx.generate(prompt, g).tokens);
        r.seconds.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        if (q > 0) {
            const auto& after = ctx.stats();
            r.media += after.media_seconds - before.media_seconds;
            r.read += after.read_seconds - before.read_seconds;
            r.steps += after.step_seconds - before.step_seconds;
            r.total += r.seconds.back();
        }
    }
    r.read_tokens = ctx.stats().read_tokens, r.reused = ctx.stats().reused_tokens, r.encoded = ctx.stats().media_encoded;
    return r;
}

double mean_after_first(const std::vector<double>& v) {
    double s = 0;
    for (std::size_t i = 1; i < v.size(); ++i) s += v[i];
    return v.size() > 1 ? s / double(v.size() - 1) : 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--model" && v) o.model = v, ++i;
        else if (a == "--weights" && v) o.weights = bench::weights_arg("bench_prefix", v), ++i;
        else if (a == "--threads" && v) o.threads = std::atoi(v), ++i;
        else if (a == "--shots" && v) o.shots = std::size_t(std::clamp(std::atoi(v), 1, 4)), ++i;
        else if (a == "--queries" && v) o.queries = std::size_t(std::atoi(v)), ++i;
        else if (a == "--tokens" && v) o.tokens = std::size_t(std::atoi(v)), ++i;
        else if (a == "--reps" && v) o.reps = std::size_t(std::atoi(v)), ++i;
        else {
            std::fprintf(stderr, "usage: bench_prefix [--model DIR] [--weights f32|bf16|q8|q4] [--threads N] [--shots K] [--queries Q] [--tokens T] [--reps R]\n");
            return 2;
        }
    }
    if (o.queries < 2 || o.threads < 1 || o.tokens < 1 || o.reps < 1) {
        std::fprintf(stderr, "bench_prefix: --queries must be at least 2, --threads, --tokens and --reps at least 1\n");
        return 2;
    }
    const auto model = flamingo::Model::load(o.model, {o.weights});
    std::string shots;
    for (std::size_t k = 0; k < o.shots; ++k) shots += kShots[k];
    const std::size_t T = model->tokenize(shots + "<image>" + kQueries[0]).size();
    std::printf("model %s (%s), %d threads, %zu requests of %zu images and ~%zu prompt tokens, %zu new tokens each, median of %zu runs\n",
                o.model.filename().c_str(), std::string(flamingo::model::weight_type_name(model->network().weight_type())).c_str(),
                o.threads, o.queries, o.shots + 1, T, o.tokens, o.reps);

    {  // warm up: the weights' pages and the executor's threads, outside the timed runs
        Options once = o;
        once.queries = 1, once.tokens = 1;
        run(model, once, nullptr);
    }
    Run off, on;
    std::vector<std::vector<double>> t_off(o.queries), t_on(o.queries);
    std::shared_ptr<flamingo::PrefixCache> cache;
    for (std::size_t r = 0; r < o.reps; ++r) {
        off = run(model, o, nullptr);
        cache = std::make_shared<flamingo::PrefixCache>(std::size_t(1) << 30);
        on = run(model, o, cache);
        for (std::size_t q = 0; q < o.queries; ++q) t_off[q].push_back(off.seconds[q]), t_on[q].push_back(on.seconds[q]);
    }
    for (std::size_t q = 0; q < o.queries; ++q) off.seconds[q] = bench::median(t_off[q]), on.seconds[q] = bench::median(t_on[q]);

    std::printf("| | first request | later requests (mean) | prompt tokens read | reused | images encoded |\n|---|---|---|---|---|---|\n");
    std::printf("| without cache | %.3f s | %.3f s | %zu | %zu | %zu |\n", off.seconds[0], mean_after_first(off.seconds),
                off.read_tokens, off.reused, off.encoded);
    std::printf("| with cache | %.3f s | %.3f s | %zu | %zu | %zu |\n", on.seconds[0], mean_after_first(on.seconds),
                on.read_tokens, on.reused, on.encoded);
    const double later = double(o.queries - 1);
    for (const auto* x : {&off, &on})
        std::printf("later requests %s the cache, mean (last run): images %.3f s, prompt %.3f s, steps %.3f s, other %.3f s\n",
                    x == &off ? "without" : "with", x->media / later, x->read / later, x->steps / later,
                    (x->total - x->media - x->read - x->steps) / later);
    std::printf("later requests: %.2fx faster; tokens equal: %s; cache holds %.1f MB\n",
                mean_after_first(off.seconds) / mean_after_first(on.seconds), on.tokens == off.tokens ? "yes" : "NO",
                double(cache->stats().bytes) / 1e6);
    return on.tokens == off.tokens ? 0 : 1;
}

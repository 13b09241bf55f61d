// Continuous batching (generate/batcher.hpp): N concurrent greedy generations,
// each on its own context and thread, decoded together in one batcher loop,
// against the same N decoding alone at the same time (as `serve --parallel N`
// without --batch). Aggregate tokens/s of the decoding (prompts are read
// first, then all start together), side by side in one run, for each N, and
// the mean time of one decoding step (what N rows cost against one). The
// two modes alternate going first from row to row.
//
//   bench_batching [--model DIR] [--weights f32|bf16|q8|q4] [--threads T] [--tokens K] [--reps R] [--counts 1,2,4,8]
//
// Alone, each context gets max(1, T / N) threads (serve's split); batched, the
// loop gets T and each context max(1, T / N) for its prompt. DIR defaults to
// the bundled model; for a figure that means something at scale use the
// random-weight OpenFlamingo-3B directory `bench_e2e --make-model` writes
// (e.g. --model /tmp/flamingo-e2e/of3b-bf16 --weights bf16).
#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <flamingo/flamingo.hpp>

#include "bench_common.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Options {
    fs::path model = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    flamingo::WeightType weights = flamingo::WeightType::F32;
    int threads = 2, reps = 3;
    std::size_t tokens = 32;
    std::vector<int> counts = {1, 2, 4, 8};
};

// A prompt of one image and some text; pixels are a fixed pattern per request.
struct Request {
    flamingo::Pixels pixels;
    std::string prompt;
};

Request request(const flamingo::Model& m, int k) {
    const std::size_t S = m.image_size();
    Request r{flamingo::Pixels(std::size_t(1), std::size_t(1), std::size_t(3), S, S), ""};
    for (std::size_t i = 0; i < r.pixels.size(); ++i)
        r.pixels.data()[i] = float((i * 7 + std::size_t(k) * 13) % 17) / 8.0f - 1.0f;
    r.prompt = "<image>";
    for (int i = 0; i < 6 + k; ++i) r.prompt += " a photo of two red circles";
    return r;
}

struct Run {
    double tokens_per_s = 0;
    double step_ms = 0;  // mean time of one decoding step (one row alone, N rows batched)
    std::vector<std::vector<std::int32_t>> tokens;  // each request's, to check batched == alone
};

// N requests on N threads, each reading its prompt, then (all at once)
// decoding `tokens` greedy tokens without stopping; best of reps.
Run run(const std::shared_ptr<const flamingo::Model>& model, const Options& o, int n,
        const std::shared_ptr<flamingo::generate::Batcher>& batcher) {
    std::vector<Request> reqs;
    std::vector<std::unique_ptr<flamingo::Context>> ctxs;
    for (int k = 0; k < n; ++k) {
        reqs.push_back(request(*model, k));
        ctxs.push_back(std::make_unique<flamingo::Context>(model, flamingo::ContextOptions{std::max(1, o.threads / n), nullptr}));
        ctxs.back()->set_batcher(batcher);
    }
    Run best;
    best.tokens.resize(std::size_t(n));
    for (int rep = 0; rep < o.reps; ++rep) {
        std::barrier start(n);
        std::vector<Clock::time_point> t0(static_cast<std::size_t>(n)), t1(static_cast<std::size_t>(n));
        std::vector<std::thread> th;
        for (int k = 0; k < n; ++k)
            th.emplace_back([&, k] {
                auto& ctx = *ctxs[std::size_t(k)];
                ctx.set_media(reqs[std::size_t(k)].pixels);
                flamingo::generate::GenerateOptions go;
                go.max_new_tokens = o.tokens + 1;
                go.eos = -1;
                go.on_token = [&](std::int32_t) {
                    if (t0[std::size_t(k)] == Clock::time_point{}) {  // the prompt is read: start together
                        start.arrive_and_wait();
                        t0[std::size_t(k)] = Clock::now();
                    }
                };
                best.tokens[std::size_t(k)] = ctx.generate(reqs[std::size_t(k)].prompt, go).tokens;
                t1[std::size_t(k)] = Clock::now();
            });
        for (auto& t : th) t.join();
        const double wall =
            std::chrono::duration<double>(*std::max_element(t1.begin(), t1.end()) - *std::min_element(t0.begin(), t0.end()))
                .count();
        best.tokens_per_s = std::max(best.tokens_per_s, double(std::size_t(n) * o.tokens) / wall);
    }
    const auto& st = ctxs[0]->stats();
    best.step_ms = st.steps ? 1e3 * st.step_seconds / double(st.steps) : 0;
    return best;
}

}  // namespace

int main(int argc, char** argv) try {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--model") o.model = value();
        else if (a == "--weights") o.weights = bench::weights_arg("bench_batching", value());
        else if (a == "--threads") o.threads = std::max(1, std::atoi(value().c_str()));
        else if (a == "--tokens") o.tokens = std::size_t(std::max(1, std::atoi(value().c_str())));
        else if (a == "--reps") o.reps = std::max(1, std::atoi(value().c_str()));
        else if (a == "--counts") {
            o.counts.clear();
            std::istringstream in(value());
            for (std::string c; std::getline(in, c, ',');) o.counts.push_back(std::max(1, std::atoi(c.c_str())));
        } else {
            throw std::runtime_error("unknown option " + a);
        }
    }
    const auto model = flamingo::Model::load(o.model, {o.weights});
    std::printf("model %s (%s), %d threads, %zu greedy tokens per request, best of %d\n", o.model.c_str(),
                std::string(flamingo::model::weight_type_name(o.weights)).c_str(), o.threads, o.tokens, o.reps);
    std::printf("| concurrent | alone, tokens/s | batched, tokens/s | batched / alone | batched / one alone | ms/step alone, batched | same tokens |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---|\n");
    // Warm-up, both modes: the first pass over memory-mapped weights pages them
    // in, and a mode's first run in a process was seen to be faster than its
    // later ones (alone first: 185-198 ms/step, then 240-292 ms), which would
    // flatter whichever mode a row times first.
    {
        auto warm = std::make_shared<flamingo::generate::Batcher>(model->network(), std::size_t(1),
                                                                  std::make_shared<flamingo::Executor>(o.threads));
        Options w = o;
        w.reps = 1;
        run(model, w, 1, nullptr);
        run(model, w, 1, warm);
    }
    double one_alone = 0;
    for (std::size_t row = 0; row < o.counts.size(); ++row) {
        const int n = o.counts[row];
        auto batcher = std::make_shared<flamingo::generate::Batcher>(model->network(), std::size_t(n),
                                                                     std::make_shared<flamingo::Executor>(o.threads));
        // The modes take turns at going first, so that neither always gets the warmer (or quieter) slot.
        Run alone, batched;
        if (row % 2 == 0) alone = run(model, o, n, nullptr), batched = run(model, o, n, batcher);
        else batched = run(model, o, n, batcher), alone = run(model, o, n, nullptr);
        if (row == 0) one_alone = alone.tokens_per_s / n;
        std::printf("| %d | %.2f | %.2f | %.2fx | %.2fx | %.1f, %.1f | %s |\n", n, alone.tokens_per_s,
                    batched.tokens_per_s, batched.tokens_per_s / alone.tokens_per_s, batched.tokens_per_s / one_alone,
                    alone.step_ms, batched.step_ms, alone.tokens == batched.tokens ? "yes" : "no");
        std::fflush(stdout);
    }
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_batching: %s\n", e.what());
    return 1;
}

// Many contexts on one model: N threads in one process, each decoding its own
// request on its own context (one thread each) over one shared, memory-mapped
// model, against N separate processes each loading the model and doing the
// same. Aggregate tokens/s and peak RSS, side by side in one run.
//
//   bench_contexts [--model DIR] [--weights f32|bf16|q8|q4] [--contexts N] [--tokens T] [--reps R]
//
// DIR defaults to the bundled model; for a figure that means something about
// serving a large model use the random-weight OpenFlamingo-3B directory that
// `bench_e2e --make-model` writes (e.g. --model /tmp/flamingo-e2e/of3b-bf16).
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
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
    int contexts = 2, reps = 3;
    std::size_t tokens = 32;
};

// A prompt of one image and some text; pixels are a fixed pattern.
struct Request {
    flamingo::Pixels pixels;
    std::string prompt;
};

Request request(const flamingo::Model& m, int k) {
    const std::size_t S = m.image_size();
    Request r{flamingo::Pixels(std::size_t(1), std::size_t(1), std::size_t(3), S, S), ""};
    for (std::size_t i = 0; i < r.pixels.size(); ++i) r.pixels.data()[i] = float((i * 7 + std::size_t(k) * 13) % 17) / 8.0f - 1.0f;
    r.prompt = "<image>";
    for (int i = 0; i < 12; ++i) r.prompt += " a photo of two red circles";
    return r;
}

// Reads the request's prompt, then (after `ready`) decodes `tokens` greedy
// tokens without stopping. Returns the decode time.
double decode(flamingo::Context& ctx, const Request& r, std::size_t tokens, const std::function<void()>& ready) {
    ctx.set_media(r.pixels);
    flamingo::generate::GenerateOptions o;
    o.max_new_tokens = tokens + 1;
    o.eos = -1;
    Clock::time_point t0;
    o.on_token = [&](std::int32_t) {
        if (t0 == Clock::time_point{}) {  // the prompt is read: start together
            ready();
            t0 = Clock::now();
        }
    };
    ctx.generate(r.prompt, o);
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::size_t peak_rss_kb() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return std::size_t(u.ru_maxrss);
}

struct Result {
    double tokens_per_s = 0;
    std::size_t rss_kb = 0;  // the one process / the sum over processes
};

Result threads_in_one_process(const Options& o) {
    const auto model = flamingo::Model::load(o.model, {o.weights});
    std::vector<Request> reqs;
    for (int k = 0; k < o.contexts; ++k) reqs.push_back(request(*model, k));
    std::vector<std::unique_ptr<flamingo::Context>> ctxs;
    for (int k = 0; k < o.contexts; ++k) ctxs.push_back(std::make_unique<flamingo::Context>(model, flamingo::ContextOptions{1, nullptr}));
    Result best;
    for (int rep = 0; rep < o.reps; ++rep) {
        std::barrier start(o.contexts);
        std::vector<double> secs(std::size_t(o.contexts));
        std::vector<std::thread> th;
        for (int k = 0; k < o.contexts; ++k)
            th.emplace_back([&, k] { secs[std::size_t(k)] = decode(*ctxs[std::size_t(k)], reqs[std::size_t(k)], o.tokens, [&] { start.arrive_and_wait(); }); });
        for (auto& t : th) t.join();
        const double wall = *std::max_element(secs.begin(), secs.end());
        best.tokens_per_s = std::max(best.tokens_per_s, double(o.contexts * o.tokens) / wall);
    }
    best.rss_kb = peak_rss_kb();
    return best;
}

Result separate_processes(const Options& o) {
    Result best;
    for (int rep = 0; rep < o.reps; ++rep) {
        int ready[2], go[2], out[2];
        if (pipe(ready) || pipe(go) || pipe(out)) std::exit(1);
        std::vector<pid_t> kids;
        for (int k = 0; k < o.contexts; ++k) {
            const pid_t pid = fork();
            if (pid == 0) {
                close(ready[0]), close(go[1]), close(out[0]);
                const auto model = flamingo::Model::load(o.model, {o.weights});
                flamingo::Context ctx(model, {1, nullptr});
                const Request r = request(*model, k);
                const double s = decode(ctx, r, o.tokens, [&] {
                    char c = 'R';
                    if (write(ready[1], &c, 1) != 1 || read(go[0], &c, 1) != 1) _exit(1);
                });
                const double msg[2] = {s, double(peak_rss_kb())};
                if (write(out[1], msg, sizeof msg) != sizeof msg) _exit(1);
                _exit(0);
            }
            kids.push_back(pid);
        }
        close(ready[1]), close(go[0]), close(out[1]);
        char c;
        for (int k = 0; k < o.contexts; ++k)
            if (read(ready[0], &c, 1) != 1) std::exit(1);
        for (int k = 0; k < o.contexts; ++k)
            if (write(go[1], "G", 1) != 1) std::exit(1);
        double wall = 0, rss = 0;
        for (int k = 0; k < o.contexts; ++k) {
            double msg[2];
            if (read(out[0], msg, sizeof msg) != sizeof msg) std::exit(1);
            wall = std::max(wall, msg[0]), rss += msg[1];
        }
        for (pid_t p : kids) waitpid(p, nullptr, 0);
        close(ready[0]), close(go[1]), close(out[0]);
        best.tokens_per_s = std::max(best.tokens_per_s, double(o.contexts * o.tokens) / wall);
        best.rss_kb = std::size_t(rss);
    }
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
        else if (a == "--weights") o.weights = bench::weights_arg("bench_contexts", value());
        else if (a == "--contexts") o.contexts = std::max(1, std::atoi(value().c_str()));
        else if (a == "--tokens") o.tokens = std::size_t(std::max(1, std::atoi(value().c_str())));
        else if (a == "--reps") o.reps = std::max(1, std::atoi(value().c_str()));
        else throw std::runtime_error("unknown option " + a);
    }
    // Processes first: the threads' measurement then runs in this process, whose RSS it reports.
    const Result procs = separate_processes(o);
    const Result threads = threads_in_one_process(o);
    std::printf("model %s (%s), %d contexts x %zu tokens, one thread each, best of %d\n", o.model.c_str(),
                std::string(flamingo::model::weight_type_name(o.weights)).c_str(), o.contexts, o.tokens, o.reps);
    std::printf("%-44s %12s %14s\n", "", "tokens/s", "peak RSS");
    std::printf("%-44s %12.1f %11.0f MB\n", "contexts on one model, threads of one process", threads.tokens_per_s,
                double(threads.rss_kb) / 1024);
    std::printf("%-44s %12.1f %11.0f MB\n", "separate processes, one model each", procs.tokens_per_s,
                double(procs.rss_kb) / 1024);
    std::printf("threads / processes: %.2fx tokens/s, %.2fx memory\n", threads.tokens_per_s / procs.tokens_per_s,
                double(threads.rss_kb) / double(procs.rss_kb));
    return 0;
} catch (const std::exception& e) {
    std::fprintf(stderr, "bench_contexts: %s\n", e.what());
    return 1;
}

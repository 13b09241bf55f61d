// A conversation's later turns: does the tenth turn cost only its own tokens?
// One flamingo::Conversation (as `flamingo chat` and the server's
// conversations use it) runs T turns: an image and a question, then short
// follow-ups, each answered with N tokens. Each turn's time is split into
// prompt tokens read (and how many), images encoded and decoding steps. The
// last turn is then asked again on a fresh conversation given the same
// history (what a stateless client-server round trip without the cache
// costs: the whole history read again).
//
//   bench_chat [--model DIR] [--weights f32|bf16|q8|q4] [--threads N] [--turns T] [--tokens N] [--reps R]
//
// Figures are medians over R conversations. DIR defaults to the bundled model;
// for a large model use the random-weight OpenFlamingo-3B directory that
// `bench_e2e --make-model` writes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <flamingo/chat.hpp>

#include "bench_common.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

struct Options {
    fs::path model = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    flamingo::WeightType weights = flamingo::WeightType::F32;
    int threads = 2;
    std::size_t turns = 10, tokens = 8, reps = 3;
};

const char* kFollowUps[] = {"How many are there?", "What colour are they?", "And the other one?",
                            "Is it bigger than the first?", "What shape is it?", "Are they striped?",
                            "Which one is on the left?", "Say that again, shorter.", "Anything else in it?"};

struct Turn {
    double seconds = 0, read = 0, steps = 0, media = 0;
    std::size_t read_tokens = 0, history = 0;  // tokens read this turn; the cache's tokens before it
};

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// One turn: the user's message (with `px` if it has images), then the reply.
Turn turn(flamingo::Conversation& c, const std::string& text, const flamingo::Pixels* px,
          const flamingo::generate::GenerateOptions& g) {
    Turn t;
    t.history = c.cached_tokens().size();
    const auto before = c.stats();
    const auto t0 = Clock::now();
    if (px) c.add_user(text, *px);
    else c.add_user(text);
    c.reply(g);
    t.seconds = seconds_since(t0);
    const auto& after = c.stats();
    t.read = after.read_seconds - before.read_seconds, t.steps = after.step_seconds - before.step_seconds;
    t.media = after.media_seconds - before.media_seconds, t.read_tokens = after.read_tokens - before.read_tokens;
    return t;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (a == "--model" && v) o.model = v, ++i;
        else if (a == "--weights" && v) o.weights = bench::weights_arg("bench_chat", v), ++i;
        else if (a == "--threads" && v) o.threads = std::atoi(v), ++i;
        else if (a == "--turns" && v) o.turns = std::size_t(std::atoi(v)), ++i;
        else if (a == "--tokens" && v) o.tokens = std::size_t(std::atoi(v)), ++i;
        else if (a == "--reps" && v) o.reps = std::size_t(std::atoi(v)), ++i;
        else {
            std::fprintf(stderr, "usage: bench_chat [--model DIR] [--weights f32|bf16|q8|q4] [--threads N] [--turns T] [--tokens N] [--reps R]\n");
            return 2;
        }
    }
    if (o.turns < 2 || o.turns > std::size(kFollowUps) + 1 || o.threads < 1 || o.tokens < 1 || o.reps < 1) {
        std::fprintf(stderr, "bench_chat: --turns 2..%zu; --threads, --tokens and --reps at least 1\n",
                     std::size(kFollowUps) + 1);
        return 2;
    }
    const auto model = flamingo::Model::load(o.model, {o.weights});
    const std::size_t S = model->image_size();
    flamingo::Pixels px(std::size_t(1), std::size_t(1), std::size_t(3), S, S);
    for (std::size_t i = 0; i < px.size(); ++i) px.data()[i] = float((i * 7) % 17) / 8.0f - 1.0f;
    flamingo::generate::GenerateOptions g;
    g.max_new_tokens = o.tokens;
    g.eos = -1;  // every reply has N tokens unless the template's stop token comes first
    const flamingo::ContextOptions copt{o.threads, nullptr};
    std::printf("model %s (%s), %d threads, %zu turns of %zu new tokens each, median of %zu conversations\n",
                o.model.filename().c_str(),
                std::string(flamingo::model::weight_type_name(model->network().weight_type())).c_str(), o.threads,
                o.turns, o.tokens, o.reps);
    {  // warm up: the weights' pages and the executor's threads
        flamingo::Conversation c(model, copt);
        turn(c, "What is in the picture?", &px, g);
    }
    std::vector<std::vector<Turn>> runs;
    std::vector<double> fresh_s, fresh_read;
    std::vector<std::size_t> fresh_tokens;
    for (std::size_t r = 0; r < o.reps; ++r) {
        flamingo::Conversation c(model, copt);
        std::vector<Turn> ts;
        ts.push_back(turn(c, "What is in the picture?", &px, g));
        for (std::size_t k = 1; k < o.turns; ++k) ts.push_back(turn(c, kFollowUps[k - 1], nullptr, g));
        runs.push_back(ts);
        // The last turn again, on a conversation that has to read the whole history.
        flamingo::Conversation f(model, copt);
        const auto& msgs = c.messages();
        for (std::size_t m = 0; m + 2 < msgs.size(); ++m) {
            if (msgs[m].role == "assistant") f.add_assistant(msgs[m].content);
            else if (msgs[m].images) f.add_user(msgs[m].content.substr(msgs[m].images * 7), px);  // drop "<image>"
            else f.add_user(msgs[m].content);
        }
        const Turn t = turn(f, kFollowUps[o.turns - 2], nullptr, g);
        fresh_s.push_back(t.seconds), fresh_read.push_back(t.read), fresh_tokens.push_back(t.read_tokens);
    }
    std::printf("| turn | history, tokens | tokens read | read, s | images, s | steps, s | turn, s |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    std::vector<double> total(o.turns);
    for (std::size_t k = 0; k < o.turns; ++k) {
        std::vector<double> s, rd, md, st;
        for (const auto& ts : runs)
            s.push_back(ts[k].seconds), rd.push_back(ts[k].read), md.push_back(ts[k].media), st.push_back(ts[k].steps);
        total[k] = bench::median(s);
        std::printf("| %zu | %zu | %zu | %.3f | %.3f | %.3f | %.3f |\n", k + 1, runs[0][k].history,
                    runs[0][k].read_tokens, bench::median(rd), bench::median(md), bench::median(st), total[k]);
    }
    std::printf("| %zu, fresh conversation | 0 | %zu | %.3f | | | %.3f |\n", o.turns, fresh_tokens[0],
                bench::median(fresh_read), bench::median(fresh_s));
    std::printf("turn %zu: %.3f s (turn 2: %.3f s) against %.3f s with the history read again: %.2fx\n", o.turns,
                total.back(), total[1], bench::median(fresh_s), bench::median(fresh_s) / total.back());
    return 0;
}

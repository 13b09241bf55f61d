// Tokenizer throughput on English text (the GPL-3 text Debian ships, 35 KB), for the
// GPT-2 byte-level and the LLaMA byte-fallback tokenizers of tests/data/text.
// "warm": repeated encodes, so the per-word cache is filled (steady state of a long
// run); "uncached": the word cache emptied before each encode; "cold": a freshly
// loaded tokenizer per iteration (load time excluded, first touches of its tables not).
// tools/tokenizer_fixtures/bench_js.mjs times the JavaScript port on the same text.
#include <benchmark/benchmark.h>

#include <fstream>
#include <sstream>
#include <string>

#include "flamingo/text/tokenizer.hpp"

namespace {

std::string english_text() {
    std::ifstream in("/usr/share/common-licenses/GPL-3");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.empty())  // not a Debian machine: some English of our own
        for (int i = 0; i < 200; ++i)
            text += "The quick brown fox jumps over the lazy dog. It's a well-known pangram; typists have used it "
                    "since the late 19th century to test typewriters and, later, computer keyboards.\n";
    return text;
}

const std::string& text() {
    static const std::string t = english_text();
    return t;
}

std::string tokenizer_path(const char* name) { return std::string(FLAMINGO_SOURCE_DIR) + "/tests/data/text/" + name; }

void encode_warm(benchmark::State& state, const char* file) {
    const auto tok = flamingo::Tokenizer::load(tokenizer_path(file));
    std::size_t tokens = tok.encode(text()).size();
    for (auto _ : state) benchmark::DoNotOptimize(tok.encode(text()));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text().size()));
    state.counters["tokens"] = static_cast<double>(tokens);
}

void encode_cold(benchmark::State& state, const char* file) {
    for (auto _ : state) {
        state.PauseTiming();
        const auto tok = flamingo::Tokenizer::load(tokenizer_path(file));
        state.ResumeTiming();
        benchmark::DoNotOptimize(tok.encode(text()));
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text().size()));
}

// Empty word cache, but the tokenizer's tables already in use: every word is merged.
void encode_uncached(benchmark::State& state, const char* file) {
    const auto tok = flamingo::Tokenizer::load(tokenizer_path(file));
    for (auto _ : state) {
        state.PauseTiming();
        tok.clear_cache();
        state.ResumeTiming();
        benchmark::DoNotOptimize(tok.encode(text()));
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text().size()));
}

void decode(benchmark::State& state, const char* file) {
    const auto tok = flamingo::Tokenizer::load(tokenizer_path(file));
    const auto ids = tok.encode(text());
    for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids));
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text().size()));
}

void load(benchmark::State& state, const char* file) {
    for (auto _ : state) benchmark::DoNotOptimize(flamingo::Tokenizer::load(tokenizer_path(file)));
}

}  // namespace

BENCHMARK_CAPTURE(encode_warm, gpt2, "gpt2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode_warm, llama, "llama2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode_uncached, gpt2, "gpt2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode_uncached, llama, "llama2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(encode_cold, gpt2, "gpt2.tokenizer.json")->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(encode_cold, llama, "llama2.tokenizer.json")->Unit(benchmark::kMillisecond)->Iterations(5);
BENCHMARK_CAPTURE(decode, gpt2, "gpt2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(decode, llama, "llama2.tokenizer.json")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(load, gpt2, "gpt2.tokenizer.json")->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_CAPTURE(load, llama, "llama2.tokenizer.json")->Unit(benchmark::kMillisecond)->Iterations(3);
BENCHMARK_MAIN();

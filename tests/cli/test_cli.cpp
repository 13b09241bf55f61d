// The `flamingo` command end to end: outputs against the PyTorch reference
// fixtures, and every kind of bad input giving a one-line error and a
// non-zero exit (SPEC section 4).
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <flamingo/io/npy.hpp>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;

namespace {

struct Result {
    int status = -1;
    std::string out, err;
};

std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

fs::path scratch() {
    const fs::path dir = fs::temp_directory_path() / ("flamingo_cli_test_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    return dir;
}

// Runs the command with `input` on its stdin (nothing when absent).
Result run(const std::vector<std::string>& args, const std::string* input = nullptr) {
    static int counter = 0;
    const fs::path dir = scratch();
    const int n = counter++;
    const fs::path out = dir / ("out" + std::to_string(n)), err = dir / ("err" + std::to_string(n));
    fs::path in = "/dev/null";
    if (input) {
        in = dir / ("in" + std::to_string(n));
        std::ofstream(in, std::ios::binary) << *input;
    }
    std::string cmd = quote(FLAMINGO_CLI);
    for (const auto& a : args) cmd.append(" ").append(quote(a));
    cmd.append(" >").append(quote(out.string())).append(" 2>").append(quote(err.string()));
    cmd.append(" <").append(quote(in.string()));
    Result r;
    int s = std::system(cmd.c_str());
    r.status = WIFEXITED(s) ? WEXITSTATUS(s) : -1;
    auto slurp = [](const fs::path& p) {
        std::ifstream in(p, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    };
    r.out = slurp(out), r.err = slurp(err);
    return r;
}

const fs::path kCase = fs::path(FLAMINGO_TEST_DATA) / "model" / "llama";

nlohmann::json expected(const std::string& name) {
    std::ifstream in(kCase / "expected" / name);
    return nlohmann::json::parse(in);
}

std::vector<std::string> with_images(std::vector<std::string> args) {
    const nlohmann::json prompt = expected("prompt.json");
    for (const auto& im : prompt["images"]) {
        args.push_back("--image");
        args.push_back((kCase / "expected" / im.get<std::string>()).string());
    }
    return args;
}

std::string prompt_text() { return expected("prompt.json")["text"]; }

// One line on stderr that mentions `needle`, and a non-zero exit.
void expect_error(const Result& r, const std::string& needle) {
    INFO("stderr: " << r.err);
    CHECK(r.status != 0);
    CHECK(r.status != -1);  // exited, did not crash
    CHECK(r.err.find(needle) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
}

fs::path temp_model(const std::string& name) {
    fs::path d = fs::temp_directory_path() / ("flamingo_cli_model_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    for (const char* f : {"config.json", "tokenizer.json", "model.safetensors"}) fs::copy_file(kCase / f, d / f);
    return d;
}

// Replaces the first occurrence of `from` in a file by `to`.
void patch(const fs::path& file, const std::string& from, const std::string& to) {
    std::string s;
    {
        std::ifstream in(file, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        s = ss.str();
    }
    auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    std::ofstream(file, std::ios::binary | std::ios::trunc) << s;
}

}  // namespace

TEST_CASE("generate: greedy continuation and JSON output as the reference") {
    auto g = expected("generate.json")["greedy"][0];
    auto r = run(with_images({"generate", "--model", kCase.string(), "--prompt", prompt_text(), "--json",
                              "--max-new-tokens", std::to_string(g["max_new_tokens"].get<int>())}));
    REQUIRE(r.status == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["tokens"] == g["tokens"]);
    // beam search through the command line
    auto b = expected("generate.json")["beam"][1];
    r = run(with_images({"generate", "--model", kCase.string(), "--prompt", prompt_text(), "--json", "--num-beams",
                         "3", "--length-penalty=1.0", "--no-repeat-ngram-size", "2", "--max-new-tokens", "10"}));
    REQUIRE(r.status == 0);
    CHECK(nlohmann::json::parse(r.out)["tokens"] == b["tokens"]);
}

TEST_CASE("tokenize, score, logits and embed as the reference") {
    auto r = run({"tokenize", "--model", kCase.string(), "--prompt", prompt_text()});
    REQUIRE(r.status == 0);
    CHECK(nlohmann::json::parse(r.out) == expected("prompt.json")["input_ids"]);

    auto sc = expected("score.json");
    std::vector<std::string> args = with_images({"score", "--model", kCase.string(), "--prompt", prompt_text()});
    for (const auto& c : sc["candidates"]) args.push_back("--candidate"), args.push_back(c["candidate"]);
    r = run(args);
    REQUIRE(r.status == 0);
    auto got = nlohmann::json::parse(r.out);
    REQUIRE(got.size() == sc["candidates"].size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i]["tokens"] == sc["candidates"][i]["tokens"]);
        CHECK(got[i]["logprob"].get<double>() == doctest::Approx(sc["candidates"][i]["logprob"].get<double>()).epsilon(1e-4));
    }

    const fs::path out = fs::temp_directory_path() / ("flamingo_cli_logits_" + std::to_string(::getpid()) + ".npy");
    r = run(with_images({"logits", "--model", kCase.string(), "--prompt", prompt_text(), "--out", out.string()}));
    REQUIRE(r.status == 0);
    auto lg = flamingo::io::read_npy(out);
    auto want = flamingo::io::read_npy(kCase / "expected" / "logits.npy");
    REQUIRE(lg.shape == want.shape);
    auto a = lg.as_float(), w = want.as_float();
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - w[i]) - 1e-4 * (1 + std::fabs(w[i])));
    CHECK(worst <= 0);

    r = run(with_images({"embed", "--model", kCase.string(), "--out", out.string()}));
    REQUIRE(r.status == 0);
    auto e = flamingo::io::read_npy(out), we = flamingo::io::read_npy(kCase / "expected" / "embed.npy");
    CHECK(e.shape == we.shape);
    fs::remove(out);
}

TEST_CASE("bad input: one-line errors, non-zero exits, never a crash") {
    const std::string m = kCase.string();
    const std::string img = (kCase / "expected" / "images" / "media0_frame0.png").string();
    expect_error(run({"generate", "--model", m, "--prompt", "<image>a<image>b", "--image", img}),
                 "the prompt has 2 <image> tokens but 1 --image was given");
    expect_error(run({"generate", "--model", m, "--prompt", "", "--image", img}), "the prompt is empty");
    expect_error(run({"generate", "--model", m, "--prompt", "bad \xff utf8"}), "not valid UTF-8");
    expect_error(run({"generate", "--model", m, "--prompt", std::string(600, 'x') + "<image>", "--image", img}),
                 "more than the model's context");
    expect_error(run({"generate", "--model", m, "--prompt", "<image>x", "--image", (kCase / "config.json").string()}),
                 "config.json");
    expect_error(run({"generate", "--model", m, "--prompt", "<image>x", "--image", kCase.string()}), kCase.string());
    expect_error(run({"generate", "--model", m, "--prompt", "<image>x", "--image", "/nonexistent.png"}),
                 "/nonexistent.png");
    expect_error(run({"score", "--model", m, "--prompt", "x", "--candidate", ""}), "--candidate is empty");
    expect_error(run({"embed", "--model", m, "--out", "/tmp/x.npy"}), "embed needs at least one --image");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--threads", "0"}), "--threads must be between 1");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--max-new-tokens", "0"}), "--max-new-tokens");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--num-beams", "0"}), "--num-beams");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--temperature", "1", "--top-p", "1.5"}), "--top-p must be in (0, 1]");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--temperature", "-1"}), "--temperature must not be negative");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--frobnicate"}), "unknown option --frobnicate");
    expect_error(run({"generate", "--prompt", "x"}), "generate needs --model");
    expect_error(run({"generate", "--model", "/nonexistent/model", "--prompt", "x"}), "does not exist");
    expect_error(run({"explode", "--model", m}), "unknown command 'explode'");
    expect_error(run({"--model", m}), "no command given");
    expect_error(run({}), "no command given");
    // Sampling options without sampling are refused, not ignored.
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--top-k", "5"}), "--top-k needs --temperature");
    expect_error(run({"generate", "--model", m, "--prompt", "x", "--top-p", "0.5"}), "--top-p needs --temperature");
    // Options that mean nothing to a command are refused too.
    expect_error(run({"embed", "--model", m, "--image", img, "--out", "/tmp/x.npy", "--frames", "2"}),
                 "option --frames does not apply to embed");
    expect_error(run({"tokenize", "--model", m, "--prompt", "x", "--candidate", "y"}),
                 "option --candidate does not apply to tokenize");
    expect_error(run({"tokenize", "--model", m, "--prompt", "x", "--weights", "f8"}), "--weights must be");
}

TEST_CASE("usage goes to stdout with --help, and is generated from the option list") {
    auto r = run({"--help"});
    CHECK(r.status == 0);
    for (const char* o : {"--model DIR", "--weights", "--threads N", "--frames F", "generate", "eval"})
        CHECK(r.out.find(o) != std::string::npos);
}

TEST_CASE("bad model directories name the tensor or field at fault") {
    fs::path d = temp_model("missing");
    patch(d / "model.safetensors", "vision_encoder.ln_post.weight", "vision_encoder.ln_post.weighX");
    expect_error(run({"tokenize", "--model", d.string(), "--prompt", "x"}), "vision_encoder.ln_post.weight");

    d = temp_model("family");
    patch(d / "config.json", "\"llama\"", "\"llamo\"");
    expect_error(run({"tokenize", "--model", d.string(), "--prompt", "x"}), "llamo");

    d = temp_model("shape");
    // to_q of the first cross-attention: [32, 48] stored as [48, 32] (same bytes, wrong shape)
    std::ifstream in(d / "model.safetensors", std::ios::binary);
    std::string head(20000, '\0');
    in.read(head.data(), std::streamsize(head.size()));
    const std::string key = "\"lang_encoder.model.layers.1.gated_cross_attn_layer.attn.to_q.weight\":{\"dtype\":\"F32\",\"shape\":[";
    auto at = head.find(key);
    REQUIRE(at != std::string::npos);
    auto end = head.find(']', at + key.size());
    std::string shape = head.substr(at + key.size(), end - at - key.size());
    auto comma = shape.find(',');
    std::string swapped = shape.substr(comma + 1) + "," + shape.substr(0, comma);
    in.close();
    patch(d / "model.safetensors", key + shape + "]", key + swapped + "]");
    expect_error(run({"tokenize", "--model", d.string(), "--prompt", "x"}), "to_q.weight");
    fs::remove_all(d);

    // A tokenizer whose ids run past the token embedding's rows.
    d = temp_model("vocab");
    patch(d / "tokenizer.json", "\"added_tokens\": [",
          "\"added_tokens\": [{\"id\": 331, \"content\": \"<zz>\", \"single_word\": false, \"lstrip\": false, "
          "\"rstrip\": false, \"normalized\": false, \"special\": true},");
    expect_error(run({"tokenize", "--model", d.string(), "--prompt", "x"}), "is outside the model's vocabulary of 331 tokens");
    fs::remove_all(d);
}

// ---- chat and batch on the bundled model ----

namespace {

const fs::path kBundled = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
std::string example(const char* name) { return (kBundled / "examples" / name).string(); }

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::istringstream is(text);
    for (std::string l; std::getline(is, l);) out.push_back(l);
    return out;
}

}  // namespace

TEST_CASE("chat through a pipe: one answer per line; /image, /reset, /quit; a bad line does not end it") {
    const std::string input = "/image " + example("two_red_circles.png") + "\n" +
                              "A photo of\n"
                              "What colour?\n"
                              "/image /no/such/image.png\n"
                              "/frobnicate\n"
                              "/reset\n"
                              "/image " + example("two_red_circles.png") + "\n" +
                              "A photo of\n"
                              "/quit\n"
                              "Never read\n";
    auto r = run({"chat", "--model", kBundled.string(), "--threads", "1", "--max-new-tokens", "8"}, &input);
    INFO("stderr: " << r.err);
    CHECK(r.status == 0);
    const auto answers = lines_of(r.out);
    REQUIRE(answers.size() == 3);
    CHECK(answers[2] == answers[0]);  // after /reset, the same first turn
    const auto errors = lines_of(r.err);
    REQUIRE(errors.size() == 2);
    CHECK(errors[0].find("/no/such/image.png") != std::string::npos);
    CHECK(errors[1].find("unknown chat command /frobnicate") != std::string::npos);

    // --image attaches to the first message; a message with too many <image> fails alone
    const std::string two = "<image>A photo of\nA photo of\n";
    auto r2 = run({"chat", "--model", kBundled.string(), "--threads", "1", "--max-new-tokens", "8", "--image",
                   example("two_red_circles.png")}, &two);
    INFO("stderr: " << r2.err);
    CHECK(r2.status == 0);
    CHECK(lines_of(r2.out) == std::vector<std::string>{answers[0]});  // the image went to the second line
    CHECK(r2.err.find("<image> tokens but 1 image") != std::string::npos);
    expect_error(run({"chat", "--model", kBundled.string(), "--candidate", "x"}), "does not apply to chat");
}

TEST_CASE("batch: mixed good and bad lines in order, the single commands' answers, --parallel, --resume") {
    const fs::path dir = scratch() / "batch";
    fs::create_directories(dir / "img");
    fs::copy_file(example("two_red_circles.png"), dir / "img" / "a.png", fs::copy_options::overwrite_existing);
    fs::copy_file(example("three_green_triangles.png"), dir / "img" / "b.png", fs::copy_options::overwrite_existing);
    const std::string a = (dir / "img" / "a.png").string(), b = (dir / "img" / "b.png").string();
    const std::vector<std::string> in = {
        R"({"id": 1, "task": "generate", "prompt": "<image>A photo of", "images": ["img/a.png"], "max_new_tokens": 8})",
        R"({"id": "two", "task": "score", "prompt": "<image>A photo of", "images": ["img/b.png"], "candidates": [" three green triangles.", " two red circles."]})",
        R"(this is not JSON)",
        R"({"id": 4, "task": "generate", "prompt": "<image>A photo of", "images": ["img/missing.png"]})",
        R"({"id": 5, "task": "generate", "prompt": "<image><image>A photo of", "images": ["img/a.png", "img/b.png"], "num_beams": 3, "max_new_tokens": 10})",
        R"({"id": 6, "task": "dance"})",
        R"({"id": 7, "task": "generate", "prompt": ["<image>"], "images": ["img/a.png"]})",
        R"({"id": 8, "task": "tokenize", "prompt": "<image>A photo of"})",
        R"({"id": 9, "task": "embed", "images": ["img/a.png", "img/b.png"]})",
        R"({"id": 10, "task": "generate", "prompt": "<image>A photo of", "images": ["img/b.png"], "temperature": 0.8, "top_k": 5, "seed": 3})",
        R"({"id": 11, "task": "generate", "prompt": "<image>A photo of", "images": ["img/b.png"], "max_new_tokens": 0})",
    };
    std::string text;
    for (const auto& l : in) text += l + "\n";
    std::ofstream(dir / "in.jsonl") << text;
    const std::vector<std::string> base = {"batch", "--model", kBundled.string(), "--in", (dir / "in.jsonl").string()};

    auto one = run(base);
    INFO("stderr: " << one.err);
    CHECK(one.status == 3);  // some lines failed
    CHECK(one.err.empty());  // no progress when stderr is not a terminal
    const auto out = lines_of(one.out);
    REQUIRE(out.size() == in.size());
    std::vector<nlohmann::json> j;
    for (const auto& l : out) j.push_back(nlohmann::json::parse(l));
    const std::vector<nlohmann::json> ids = {1, "two", nullptr, 4, 5, 6, 7, 8, 9, 10, 11};
    for (std::size_t i = 0; i < in.size(); ++i) CHECK(j[i]["id"] == ids[i]);
    for (std::size_t i : {2, 3, 5, 6, 10}) CHECK(j[i]["error"]["message"].is_string());
    CHECK(j[3]["error"]["message"].get<std::string>().find("missing.png") != std::string::npos);
    CHECK(j[5]["error"]["message"].get<std::string>().find("unknown task") != std::string::npos);
    CHECK(j[6]["error"]["message"] == "\"prompt\" must be a string");

    // the single commands' answers
    auto gen = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"generate", "--model", kBundled.string(), "--json"});
        auto r = run(args);
        REQUIRE(r.status == 0);
        return nlohmann::json::parse(r.out);
    };
    auto g1 = gen({"--prompt", "<image>A photo of", "--image", a, "--max-new-tokens", "8"});
    CHECK(j[0]["result"]["text"] == g1["text"]);
    CHECK(j[0]["result"]["tokens"] == g1["tokens"]);
    CHECK(j[0]["result"]["usage"]["completion_tokens"] == g1["tokens"].size());
    auto g5 = gen({"--prompt", "<image><image>A photo of", "--image", a, "--image", b, "--num-beams", "3",
                   "--max-new-tokens", "10"});
    CHECK(j[4]["result"]["tokens"] == g5["tokens"]);
    auto g10 = gen({"--prompt", "<image>A photo of", "--image", b, "--temperature", "0.8", "--top-k", "5", "--seed", "3"});
    CHECK(j[9]["result"]["tokens"] == g10["tokens"]);
    auto sc = run({"score", "--model", kBundled.string(), "--prompt", "<image>A photo of", "--image", b,
                   "--candidate", " three green triangles.", "--candidate", " two red circles."});
    REQUIRE(sc.status == 0);
    CHECK(j[1]["result"]["scores"] == nlohmann::json::parse(sc.out));
    auto tk = run({"tokenize", "--model", kBundled.string(), "--prompt", "<image>A photo of"});
    CHECK(j[7]["result"]["tokens"] == nlohmann::json::parse(tk.out));
    CHECK(j[8]["result"]["embeddings"].size() == 2);

    // --parallel 2 writes the same lines
    auto base2 = base;
    base2.insert(base2.end(), {"--parallel", "2"});
    auto two = run(base2);
    CHECK(two.status == 3);
    CHECK(two.out == one.out);

    // --batch 4: the generations of 4 workers decoded together, the same lines
    auto base4 = base;
    base4.insert(base4.end(), {"--parallel", "4", "--batch", "4"});
    auto four = run(base4);
    CHECK(four.status == 3);
    CHECK(four.out == one.out);

    // --resume: the ids already in --out are skipped, the rest appended (a cut-off last line is dropped)
    const fs::path partial = dir / "out.jsonl";
    std::ofstream(partial) << out[0] << "\n" << out[1] << "\n" << out[2].substr(0, 10);
    auto base3 = base;
    base3.insert(base3.end(), {"--out", partial.string(), "--resume"});
    auto resumed = run(base3);
    CHECK(resumed.status == 3);
    CHECK(resumed.out.empty());
    std::ifstream pin(partial);
    std::stringstream all;
    all << pin.rdbuf();
    CHECK(all.str() == one.out);  // the null-id line has no id to skip: it is written again

    // all good: exit 0; from stdin, images relative to the current directory
    const std::string good = R"({"id": "t", "task": "tokenize", "prompt": "A photo of"})" "\n";
    auto ok = run({"batch", "--model", kBundled.string()}, &good);
    CHECK(ok.status == 0);
    CHECK(nlohmann::json::parse(ok.out)["result"]["tokens"].is_array());
    expect_error(run({"batch", "--model", kBundled.string(), "--resume"}), "--resume needs --out");
    expect_error(run({"batch", "--model", kBundled.string(), "--parallel", "0"}), "--parallel must be between");
}

TEST_CASE("quantize: the written directory generates as --weights q8|q4 on the original, without --weights") {
    const fs::path bundled = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    const fs::path ex = bundled / "examples";
    const std::vector<std::string> gen = {"generate", "--prompt",
                                          "<image>An image of two red circles.<|endofchunk|><image>An image of",
                                          "--image", (ex / "two_red_circles.png").string(), "--image",
                                          (ex / "yellow_diamond.png").string(), "--json", "--threads", "1"};
    for (const std::string w : {"q8", "q4"}) {
        CAPTURE(w);
        const fs::path out = scratch() / ("quantized-" + w);
        fs::remove_all(out);
        auto r = run({"quantize", "--model", bundled.string(), "--weights", w, "--out", out.string()});
        INFO("stderr: " << r.err);
        REQUIRE(r.status == 0);
        CHECK(r.out.find("85 matrices quantised to " + w) != std::string::npos);
        CHECK(fs::exists(out / "model.safetensors"));
        CHECK(fs::exists(out / "tokenizer.json"));

        auto args = gen;
        args.insert(args.end(), {"--model", bundled.string(), "--weights", w});
        const Result at_load = run(args);
        REQUIRE(at_load.status == 0);
        args = gen;
        args.insert(args.end(), {"--model", out.string()});
        const Result stored = run(args);
        INFO("stderr: " << stored.err);
        REQUIRE(stored.status == 0);
        CHECK(stored.out == at_load.out);
        CHECK(stored.err.empty());  // no unused tensors

        // Not over a non-empty directory; a quantised directory loads only as itself.
        expect_error(run({"quantize", "--model", bundled.string(), "--weights", w, "--out", out.string()}),
                     "is not empty");
        expect_error(run({"tokenize", "--model", out.string(), "--prompt", "x", "--weights", "f32"}),
                     "stored quantised to " + w);
        fs::remove_all(out);
    }
    expect_error(run({"quantize", "--model", bundled.string(), "--out", (scratch() / "q").string()}),
                 "quantize needs --weights q8 or --weights q4");
    expect_error(run({"quantize", "--model", bundled.string(), "--weights", "bf16", "--out", (scratch() / "q").string()}),
                 "quantize needs --weights q8 or --weights q4");
    expect_error(run({"quantize", "--model", bundled.string(), "--weights", "q8"}), "quantize needs --out");
    CHECK(!fs::exists(scratch() / "q"));
}

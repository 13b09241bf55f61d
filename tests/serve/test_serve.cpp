// `flamingo serve` end to end: the test starts the real server on 127.0.0.1
// (a free port it picks itself), talks to it with cpp-httplib's client, and
// stops it with SIGTERM. Answers must equal the `flamingo generate` command's;
// hostile requests get their documented 4xx and the server keeps answering.
#include <algorithm>
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kModel = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
const std::string kKey = "test-key";
constexpr int kSlowBeams = 128;  // of the long request in the 503 test
constexpr int kLongTokens = 400;  // of long_body()'s generation

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string base64(const std::string& bytes) {
    static const char* a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        const unsigned v = (unsigned(std::uint8_t(bytes[i])) << 16) | (unsigned(std::uint8_t(bytes[i + 1])) << 8) |
                           unsigned(std::uint8_t(bytes[i + 2]));
        for (int k = 18; k >= 0; k -= 6) out += a[(v >> k) & 63];
    }
    if (i + 1 == bytes.size()) {
        const unsigned v = unsigned(std::uint8_t(bytes[i])) << 16;
        out += a[(v >> 18) & 63], out += a[(v >> 12) & 63], out += "==";
    } else if (i + 2 == bytes.size()) {
        const unsigned v = (unsigned(std::uint8_t(bytes[i])) << 16) | (unsigned(std::uint8_t(bytes[i + 1])) << 8);
        out += a[(v >> 18) & 63], out += a[(v >> 12) & 63], out += a[(v >> 6) & 63], out += "=";
    }
    return out;
}

fs::path image(const char* name) { return kModel / "examples" / name; }
std::string b64_image(const char* name) { return base64(slurp(image(name))); }

// The command's stdout.
std::string command(const std::vector<std::string>& args) {
    std::string cmd = FLAMINGO_CLI;
    for (const auto& a : args) {
        cmd += " '";
        for (char c : a) cmd += c == '\'' ? std::string("'\\''") : std::string(1, c);
        cmd += "'";
    }
    cmd += " 2>/dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    for (std::size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    REQUIRE(pclose(p) == 0);
    return out;
}

// A server process on a free port of 127.0.0.1 with the options given
// (besides --model and --port); the file's main one is started once, by server().
struct Server {
    pid_t pid = -1;
    int port = 0;
    fs::path log;

    explicit Server(std::vector<std::string> options, const fs::path& model = kModel) {
        static int servers = 0;
        log = fs::temp_directory_path() /
              ("flamingo_serve_test_" + std::to_string(::getpid()) + "_" + std::to_string(servers++) + ".log");
        std::vector<std::string> args = {FLAMINGO_CLI, "serve", "--model", model.string(), "--port", "0"};
        args.insert(args.end(), options.begin(), options.end());
        std::vector<char*> argv;
        for (auto& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
            std::freopen(log.c_str(), "w", stderr);
            std::freopen("/dev/null", "w", stdout);
            execv(FLAMINGO_CLI, argv.data());
            _exit(127);
        }
        // The server names its port on stderr once it listens (bounded wait).
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (std::chrono::steady_clock::now() < deadline) {
            const std::string s = slurp(log);
            if (const auto at = s.find("http://127.0.0.1:"); at != std::string::npos && s.find('\n', at) != std::string::npos) {
                port = std::stoi(s.substr(at + 17));
                break;
            }
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                FAIL("the server exited: " << s);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        REQUIRE(port > 0);
        // Listening starts right after the line: wait for /health.
        httplib::Client c("127.0.0.1", port);
        for (int i = 0; i < 200; ++i) {
            if (auto r = c.Get("/health"); r && r->status == 200) return;
            std::this_thread::sleep_for(std::chrono::milliseconds(25));
        }
        FAIL("the server does not answer /health");
    }
    // SIGTERM, then the exit status (-1 if it had to be killed).
    int stop() {
        if (pid < 0) return -1;
        kill(pid, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        int status = 0;
        while (std::chrono::steady_clock::now() < deadline) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        pid = -1;
        return -1;
    }
    ~Server() {
        stop();
        std::error_code ec;
        fs::remove(log, ec);
    }
};

Server& server() {
    static Server s({"--parallel", "2", "--threads", "2", "--api-key", kKey});
    return s;
}

httplib::Client client(const std::string& key = kKey) {
    httplib::Client c("127.0.0.1", server().port);
    c.set_read_timeout(120, 0);
    c.set_write_timeout(60, 0);
    if (!key.empty()) c.set_default_headers({{"Authorization", "Bearer " + key}});
    return c;
}

struct Reply {
    int status = 0;
    std::string body;
    json j;
};

Reply post(const std::string& path, const std::string& body, const std::string& key = kKey) {
    auto c = client(key);
    auto r = c.Post(path.c_str(), body, "application/json");
    REQUIRE(r);
    Reply out{r->status, r->body, json::parse(r->body, nullptr, false)};
    return out;
}

// SSE blocks: (event name, data).
std::vector<std::pair<std::string, std::string>> events(const std::string& body) {
    std::vector<std::pair<std::string, std::string>> out;
    std::size_t at = 0;
    while (at < body.size()) {
        auto end = body.find("\n\n", at);
        if (end == std::string::npos) end = body.size();
        std::string name, data;
        std::istringstream lines(body.substr(at, end - at));
        for (std::string l; std::getline(lines, l);) {
            if (l.rfind("event: ", 0) == 0) name = l.substr(7);
            if (l.rfind("data: ", 0) == 0) data = l.substr(6);
        }
        if (!data.empty()) out.emplace_back(name, data);
        at = end + 2;
    }
    return out;
}

const std::string kPrompt =
    "<image>A photo of two red circles.<|endofchunk|><image>A photo of one striped blue star.<|endofchunk|><image>";

json generate_body() {
    return {{"prompt", kPrompt},
            {"images", {b64_image("two_red_circles.png"), "data:image/png;base64," + b64_image("one_striped_blue_star.png"),
                        b64_image("three_green_triangles.png")}}};
}

json expected_generate() {
    static const json e = json::parse(command({"generate", "--model", kModel.string(), "--prompt", kPrompt, "--image",
                                               image("two_red_circles.png").string(), "--image",
                                               image("one_striped_blue_star.png").string(), "--image",
                                               image("three_green_triangles.png").string(), "--json", "--threads", "1"}));
    return e;
}

int metric(const std::string& text, const std::string& series) {
    const auto at = text.find("\n" + series + " ");
    return at == std::string::npos ? 0 : std::stoi(text.substr(at + series.size() + 2));
}

// A raw TCP connection to the server, for the clients cpp-httplib's own will not
// play: one that trickles its body, one that vanishes.
struct Raw {
    int fd = -1;
    explicit Raw(int port) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(std::uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    }
    ~Raw() { close(); }
    Raw(const Raw&) = delete;
    void close() {
        if (fd >= 0) ::close(fd), fd = -1;
    }
    bool send(const std::string& s) { return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size()); }
    // Appends what arrives within `ms` to `into`, stopping early at `marker`; false once the
    // server closed the connection.
    bool receive(std::string& into, int ms, const std::string& marker = "") {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        for (;;) {
            if (!marker.empty() && into.find(marker) != std::string::npos) return true;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) return true;
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, int(left.count())) <= 0) return true;
            char buf[4096];
            const ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return false;
            into.append(buf, std::size_t(n));
        }
    }
};

std::string post_head(const std::string& path, std::size_t length) {
    return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(length) + "\r\n\r\n";
}

// A metric of `s` once it reaches `at_least` (bounded wait: counters move when answers are written).
int metric_reaching(Server& s, const std::string& series, int at_least) {
    httplib::Client c("127.0.0.1", s.port);
    c.set_read_timeout(60, 0);
    int v = 0;
    for (int i = 0; i < 600; ++i) {
        auto r = c.Get("/metrics");
        REQUIRE(r);
        if ((v = metric(r->body, series)) >= at_least) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    return v;
}

// A long generation, sampling the whole vocabulary almost uniformly (seed 1 runs to the limit here;
// the test picks a seed that does so on its machine): long enough that a client can leave while it runs.
json long_body(bool stream, int seed) {
    return {{"prompt", "<image>A photo of"}, {"images", {b64_image("yellow_diamond.png")}},
            {"max_new_tokens", kLongTokens}, {"temperature", 100.0}, {"top_k", 0}, {"seed", seed}, {"stream", stream}};
}

}  // namespace

TEST_CASE("health answers without a key") {
    auto c = client("");
    auto r = c.Get("/health");
    REQUIRE(r);
    CHECK(r->status == 200);
    const json j = json::parse(r->body);
    CHECK(j["status"] == "ok");
    CHECK(j["model"] == "shapes-flamingo");
}

TEST_CASE("generate equals the flamingo generate command, streamed or not") {
    const json e = expected_generate();
    CHECK(e["text"] == "A photo of three green triangles.");  // the README's demo answer
    const Reply r = post("/v1/generate", generate_body().dump());
    REQUIRE(r.status == 200);
    CHECK(r.j["text"] == e["text"]);
    CHECK(r.j["tokens"] == e["tokens"]);
    CHECK(r.j["stopped"] == true);
    CHECK(r.j["usage"]["completion_tokens"] == e["tokens"].size());

    json body = generate_body();
    body["stream"] = true;
    const Reply s = post("/v1/generate", body.dump());
    REQUIRE(s.status == 200);
    std::string text;
    json result;
    std::size_t pieces = 0;
    for (const auto& [name, data] : events(s.body)) {
        if (name == "result") result = json::parse(data);
        else text += json::parse(data)["text"].get<std::string>(), ++pieces;
    }
    CHECK(pieces > 1);
    CHECK(text == e["text"].get<std::string>());
    CHECK(result == r.j);
}

TEST_CASE("requests at once on two workers give the single answer") {
    const json e = expected_generate();
    const std::string body = generate_body().dump();
    std::vector<Reply> replies(6);
    std::vector<std::thread> threads;
    for (auto& r : replies)
        threads.emplace_back([&r, &body] {
            httplib::Client c("127.0.0.1", server().port);
            c.set_read_timeout(120, 0);
            c.set_default_headers({{"Authorization", "Bearer " + kKey}});
            if (auto res = c.Post("/v1/generate", body, "application/json")) r = {res->status, res->body, {}};
        });
    for (auto& t : threads) t.join();
    for (const auto& r : replies) {
        INFO(r.body);
        CHECK(r.status == 200);
        const json j = json::parse(r.body, nullptr, false);
        CHECK((j.is_object() && j["tokens"] == e["tokens"]));
    }
}

TEST_CASE("chat completions equal generate on the template's prompt, streamed or not") {
    const std::string prompt = "User: <image>Question: What colour are the shapes? Answer:<|endofchunk|>Assistant:";
    std::string e = command({"generate", "--model", kModel.string(), "--prompt", prompt, "--image",
                             image("four_dotted_orange_squares.png").string(), "--max-new-tokens", "12", "--threads",
                             "1"});
    e.pop_back();  // the newline
    e.erase(0, e.find_first_not_of(" \t\n"));
    REQUIRE(!e.empty());

    json body = {{"model", "shapes-flamingo"},
                 {"max_tokens", 12},
                 {"messages",
                  {{{"role", "user"},
                    {"content",
                     {{{"type", "image_url"},
                       {"image_url", {{"url", "data:image/png;base64," + b64_image("four_dotted_orange_squares.png")}}}},
                      {{"type", "text"}, {"text", "Question: What colour are the shapes? Answer:"}}}}}}}};
    const Reply r = post("/v1/chat/completions", body.dump());
    REQUIRE(r.status == 200);
    CHECK(r.j["object"] == "chat.completion");
    CHECK(r.j["choices"][0]["message"]["role"] == "assistant");
    CHECK(r.j["choices"][0]["message"]["content"] == e);
    CHECK(r.j["choices"][0]["finish_reason"] == "stop");

    body["stream"] = true;
    const Reply s = post("/v1/chat/completions", body.dump());
    REQUIRE(s.status == 200);
    const auto ev = events(s.body);
    REQUIRE(!ev.empty());
    CHECK(ev.back().second == "[DONE]");
    std::string text, finish;
    for (std::size_t i = 0; i + 1 < ev.size(); ++i) {
        const json c = json::parse(ev[i].second);
        CHECK(c["object"] == "chat.completion.chunk");
        const json& ch = c["choices"][0];
        if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
        if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"].get<std::string>();
    }
    CHECK(text == e);
    CHECK(finish == "stop");
}

TEST_CASE("an IDEFICS instruct model as released, q4 weights, answers the chat endpoint as flamingo chat does") {
    // The conversation of tests/cli's chat test (expected/chat.json: the PyTorch
    // reference's answers for the same q4 weights), sent as OpenAI-style
    // messages, the whole history each turn.
    const fs::path dir = fs::path(FLAMINGO_SOURCE_DIR) / "tests" / "data" / "model" / "idefics_instruct";
    const json chat = json::parse(slurp(dir / "expected" / "chat.json"));
    const auto answers = chat["answers"].get<std::vector<std::string>>();
    REQUIRE(chat["turns"].size() == 2);
    REQUIRE(answers.size() == 2);
    const std::string img = chat["turns"][0]["image"].get<std::string>();
    Server s({"--weights", chat["weights"].get<std::string>(), "--threads", "1"}, dir);
    httplib::Client c("127.0.0.1", s.port);
    c.set_read_timeout(60, 0);
    json messages = {{{"role", "user"},
                      {"content",
                       {{{"type", "image_url"},
                         {"image_url", {{"url", "data:image/png;base64," + base64(slurp(dir / "expected" / img))}}}},
                        {{"type", "text"}, {"text", chat["turns"][0]["text"]}}}}}};
    const int max_tokens = chat["max_new_tokens"].get<int>();
    for (std::size_t turn = 0; turn < 2; ++turn) {
        if (turn == 1) {
            messages.push_back({{"role", "assistant"}, {"content", answers[0]}});
            messages.push_back({{"role", "user"}, {"content", chat["turns"][1]["text"]}});
        }
        auto r = c.Post("/v1/chat/completions", json({{"max_tokens", max_tokens}, {"messages", messages}}).dump(),
                        "application/json");
        REQUIRE(r);
        INFO("turn " << turn << ": " << r->body);
        REQUIRE(r->status == 200);
        const json j = json::parse(r->body);
        // chat.json holds the answers as `flamingo chat` prints them, one line each
        std::string text = j["choices"][0]["message"]["content"];
        std::replace_if(text.begin(), text.end(), [](char ch) { return ch == '\n' || ch == '\r'; }, ' ');
        CHECK(text == answers[turn]);
        // <end_of_utterance> ends the first answer; the second runs to max_tokens
        CHECK(j["choices"][0]["finish_reason"] == (chat["stopped"][turn].is_null() ? "length" : "stop"));
    }
    CHECK(s.stop() == 0);
}

TEST_CASE("score, embed and tokenize answer batch's objects") {
    const Reply t = post("/v1/tokenize", R"({"prompt": "<image>A photo of"})");
    REQUIRE(t.status == 200);
    CHECK(t.j["tokens"] == json::parse(command({"tokenize", "--model", kModel.string(), "--prompt", "<image>A photo of"})));

    const Reply e = post("/v1/embed", json({{"images", {b64_image("yellow_diamond.png")}}}).dump());
    REQUIRE(e.status == 200);
    CHECK(e.j["embeddings"].size() == 1);

    const Reply s = post("/v1/score", json({{"prompt", "<image>A photo of"},
                                            {"images", {b64_image("yellow_diamond.png")}},
                                            {"candidates", {" one yellow diamond.", " two red circles."}}})
                                          .dump());
    REQUIRE(s.status == 200);
    REQUIRE(s.j["scores"].size() == 2);
    CHECK(s.j["scores"][0]["logprob"].get<double>() > s.j["scores"][1]["logprob"].get<double>());
}

TEST_CASE("hostile requests get their documented status and the server keeps answering") {
    auto expect = [](const Reply& r, int status, const char* what) {
        INFO(what << ": " << r.body);
        CHECK(r.status == status);
        REQUIRE(r.j.is_object());
        CHECK(r.j["error"]["message"].is_string());
        CHECK(r.j["error"]["type"].is_string());
    };
    const std::string good = generate_body().dump();
    expect(post("/v1/generate", "{\"prompt\": 3"), 400, "malformed JSON");
    expect(post("/v1/generate", good.substr(0, good.size() / 2)), 400, "truncated JSON");
    expect(post("/v1/generate", "[1, 2]"), 400, "not an object");
    expect(post("/v1/generate", R"({"prompt": 3})"), 400, "prompt not a string");
    expect(post("/v1/generate", R"({"prompt": "x", "max_new_tokens": "5"})"), 400, "max_new_tokens a string");
    expect(post("/v1/generate", R"({"prompt": "x", "stream": "yes"})"), 400, "stream not a boolean");
    expect(post("/v1/generate", R"({"prompt": "x", "bogus": 1})"), 400, "unknown field");
    expect(post("/v1/generate", R"({"prompt": "<image>x", "images": ["!!!!"]})"), 400, "bad base64");
    expect(post("/v1/generate", json({{"prompt", "<image>x"}, {"images", {base64("not an image at all")}}}).dump()), 400,
           "base64 of no image");
    expect(post("/v1/generate", R"({"prompt": "<image>x", "images": ["/etc/passwd"]})"), 400, "a path");
    expect(post("/v1/generate", json({{"prompt", "<image><image>x"}, {"images", {b64_image("yellow_diamond.png")}}}).dump()),
           400, "<image> count mismatch");
    std::string long_prompt;
    for (int i = 0; i < 2000; ++i) long_prompt += "circle ";
    expect(post("/v1/generate", json({{"prompt", long_prompt}}).dump()), 400, "prompt too long");
    expect(post("/v1/chat/completions", R"({"messages": "hi"})"), 400, "messages not a list");
    expect(post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": 7}]})"), 400, "content a number");
    expect(post("/v1/chat/completions",
                R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]})"),
           400, "an image URL");
    expect(post("/v1/generate", std::string(17u << 20, ' ')), 413, "body over the limit");
    {
        // curl -d's default type: the body is read as JSON all the same (the handlers read bodies themselves)
        auto c = client();
        auto r = c.Post("/v1/generate", good + std::string(9000, ' '), "application/x-www-form-urlencoded");
        REQUIRE(r);
        CHECK(r->status == 200);
    }
    expect(post("/v1/generate", good, "wrong-key"), 401, "wrong key");
    expect(post("/v1/generate", good, ""), 401, "no key");
    {
        auto c = client();
        auto r = c.Get("/nowhere");
        REQUIRE(r);
        CHECK(r->status == 404);
    }

    // Still answering, and the same answer.
    const Reply r = post("/v1/generate", good);
    REQUIRE(r.status == 200);
    CHECK(r.j["text"] == expected_generate()["text"]);

    auto c = client();
    auto m = c.Get("/metrics");
    REQUIRE(m);
    CHECK(m->status == 200);
    INFO(m->body);
    CHECK(metric(m->body, R"(flamingo_requests_total{endpoint="/v1/generate",status="400"})") >= 12);
    CHECK(metric(m->body, R"(flamingo_requests_total{endpoint="/v1/generate",status="413"})") == 1);
    CHECK(metric(m->body, R"(flamingo_requests_total{endpoint="/v1/generate",status="401"})") == 2);
    CHECK(metric(m->body, R"(flamingo_requests_total{endpoint="/v1/chat/completions",status="400"})") == 3);
    // A request is counted once its answer is written, so the last may not be yet.
    CHECK(metric(m->body, R"(flamingo_requests_total{endpoint="/v1/generate",status="200"})") >= 3);
    CHECK(metric(m->body, "flamingo_generated_tokens_total") > 0);
    CHECK(m->body.find("flamingo_queue_depth ") != std::string::npos);
    CHECK(m->body.find("flamingo_request_duration_seconds_bucket{endpoint=\"/v1/generate\",le=\"+Inf\"}") !=
          std::string::npos);
}

TEST_CASE("past the workers and the queue a request gets 503 with Retry-After, and the server recovers") {
    // One worker and no queue: while one request runs, every other one gets 503.
    Server s({"--parallel", "1", "--queue", "0", "--threads", "1"});
    auto connect = [&s] {
        httplib::Client c("127.0.0.1", s.port);
        c.set_read_timeout(300, 0);
        c.set_write_timeout(60, 0);
        return c;
    };
    auto metrics = [&] {
        auto c = connect();
        auto r = c.Get("/metrics");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        return r->body;
    };
    const json e = expected_generate();
    const std::string body = generate_body().dump();
    // The long request: a beam search of many beams, far longer (about a second) than sending the
    // flood below. Its length is bounded by max_new_tokens, not by when the beams happen to finish:
    // with 400 that took 2.7 s on one model and 10.6 s on the next (minutes under ASan).
    const std::string slow = json({{"prompt", "<image>A photo of"},
                                   {"images", {b64_image("yellow_diamond.png")}},
                                   {"num_beams", kSlowBeams},
                                   {"max_new_tokens", 60}})
                                 .dump();

    struct Answer {
        int status = 0;
        std::string body, retry_after;
    };
    std::vector<Answer> flood;
    int refused = 0;
    // The flood comes once the worker is busy with the long request, so it is refused unless that
    // request is already over; then the round is repeated (a few times at most).
    for (int round = 0; round < 5 && refused == 0; ++round) {
        Answer long_answer;
        std::thread runner([&] {
            auto c = connect();
            if (auto r = c.Post("/v1/generate", slow, "application/json")) long_answer = {r->status, r->body, ""};
        });
        for (int i = 0; i < 2000 && metric(metrics(), "flamingo_workers_busy") == 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::vector<Answer> answers(8);
        std::vector<std::thread> threads;
        for (auto& a : answers)
            threads.emplace_back([&a, &connect, &body] {
                auto c = connect();
                if (auto r = c.Post("/v1/generate", body, "application/json"))
                    a = {r->status, r->body, r->get_header_value("Retry-After")};
            });
        for (auto& t : threads) t.join();
        runner.join();
        CHECK(long_answer.status == 200);
        for (const auto& a : answers) refused += a.status == 503;
        flood.insert(flood.end(), answers.begin(), answers.end());
    }
    CHECK(refused > 0);
    for (const auto& a : flood) {
        INFO(a.status << " " << a.body);
        CHECK((a.status == 200 || a.status == 503));
        const json j = json::parse(a.body, nullptr, false);
        REQUIRE(j.is_object());
        if (a.status == 503) {
            CHECK(a.retry_after == "1");
            CHECK(j["error"]["type"] == "server_busy");
            CHECK(j["error"]["message"].is_string());
        } else {
            CHECK(j["tokens"] == e["tokens"]);
        }
    }

    // Free again: the worker is counted free before its answer is sent, so this is not refused.
    {
        auto c = connect();
        auto h = c.Get("/health");
        REQUIRE(h);
        CHECK(h->status == 200);
        auto r = c.Post("/v1/generate", body, "application/json");
        REQUIRE(r);
        INFO(r->body);
        REQUIRE(r->status == 200);
        CHECK(json::parse(r->body)["tokens"] == e["tokens"]);
    }
    // Every 503 counted (a request is counted once its answer is written: bounded wait).
    const std::string series = R"(flamingo_requests_total{endpoint="/v1/generate",status="503"})";
    std::string m;
    for (int i = 0; i < 400; ++i) {
        m = metrics();
        if (metric(m, series) >= refused) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    INFO(m);
    CHECK(metric(m, series) == refused);
    CHECK(metric(m, "flamingo_workers_busy") == 0);
    CHECK(metric(m, "flamingo_queue_depth") == 0);
    CHECK(s.stop() == 0);
}

namespace {

std::uint32_t crc32(const std::string& bytes) {
    std::uint32_t c = 0xFFFFFFFFu;
    for (char ch : bytes) {
        c ^= std::uint8_t(ch);
        for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

std::string be32(std::uint32_t v) {
    return {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
}

// A PNG of a few dozen bytes whose header declares width x height RGB pixels (its pixel data is
// a stub: a decoder that trusted the header would allocate first and fail later).
std::string png_declaring(std::uint32_t width, std::uint32_t height) {
    auto chunk = [](const std::string& type, const std::string& data) {
        return be32(std::uint32_t(data.size())) + type + data + be32(crc32(type + data));
    };
    const std::string ihdr = be32(width) + be32(height) + std::string{8, 2, 0, 0, 0};
    const std::string idat = {'\x78', '\x9c', '\x63', '\x00', '\x00', '\x00', '\x01', '\x00', '\x01'};
    return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", idat) + chunk("IEND", "");
}

// A real PNG of width x height black pixels in about 13 bits per 258 bytes of pixels: its zlib
// stream is one fixed-Huffman block of a zero and then repeats of it (length 258, distance 1).
std::string black_png(std::uint32_t width, std::uint32_t height) {
    std::string z = {'\x78', '\x01'};  // deflate, 32 KiB window; 0x7801 is a multiple of 31
    std::uint32_t acc = 0;
    int held = 0;
    auto bits = [&](std::uint32_t v, int n) {  // fields go least significant bit first
        acc |= v << held, held += n;
        for (; held >= 8; held -= 8) z += char(acc & 0xFF), acc >>= 8;
    };
    auto code = [&](std::uint32_t c, int n) {  // Huffman codes most significant bit first
        for (int k = n - 1; k >= 0; --k) bits((c >> k) & 1, 1);
    };
    const std::uint64_t total = std::uint64_t(height) * (1 + 3ull * width);  // a filter byte (0) per row
    bits(1, 1), bits(1, 2);  // the last block, fixed codes
    code(0x30, 8);           // literal 0
    std::uint64_t left = total - 1;
    for (; left >= 258; left -= 258) code(0xC5, 8), code(0, 5);  // length code 285 (258), distance code 0 (1)
    for (; left > 0; --left) code(0x30, 8);
    code(0, 7);  // end of block
    if (held) bits(0, 8 - held);
    z += be32(std::uint32_t(total % 65521) << 16 | 1);  // Adler-32 of zeros
    auto chunk = [](const std::string& type, const std::string& data) {
        return be32(std::uint32_t(data.size())) + type + data + be32(crc32(type + data));
    };
    const std::string ihdr = be32(width) + be32(height) + std::string{8, 2, 0, 0, 0};
    return std::string("\x89PNG\r\n\x1a\n", 8) + chunk("IHDR", ihdr) + chunk("IDAT", z) + chunk("IEND", "");
}

long vm_kib(pid_t pid, const std::string& field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
    return -1;
}

}  // namespace

TEST_CASE("hostile sizes: a decompression bomb, thousands of images, huge numbers, deep JSON") {
    Server& s = server();
    auto expect = [](const Reply& r, int status, const std::string& says, const char* what) {
        INFO(what << ": " << r.body);
        CHECK(r.status == status);
        REQUIRE(r.j.is_object());
        CHECK(r.j["error"]["message"].get<std::string>().find(says) != std::string::npos);
    };
    // PNGs of 80 bytes declaring 60000x60000 and 16384x16384 pixels: refused from their headers, before
    // any pixel buffer (10.8 GB, 805 MB) exists. stb_image itself refuses the first (over 2^30 bytes).
    const std::string bomb = base64(png_declaring(60000, 60000)), big = base64(png_declaring(16384, 16384));
    expect(post("/v1/generate", json({{"prompt", "<image>x"}, {"images", {bomb}}}).dump()), 400, "images[0]",
           "a decompression bomb");
    expect(post("/v1/generate", json({{"prompt", "<image>x"}, {"images", {big}}}).dump()), 400,
           "16384x16384 exceeds the size limit 8192x8192", "a decompression bomb within stb_image's limit");
    expect(post("/v1/embed", json({{"images", {"data:image/png;base64," + big}}}).dump()), 400, "exceeds the size limit",
           "a bomb to embed");
    CHECK(vm_kib(s.pid, "VmHWM") < 2l << 20);  // the peak resident set stayed far below the bomb's pixels

    // Real images, each within the size limit, whose pixels together pass a request's 256 MiB (16 of
    // 2400x2400, 17 MB each): refused at the image that crosses it, rather than all held at once.
    const Reply small = post("/v1/embed", json({{"images", {base64(black_png(64, 64))}}}).dump());
    REQUIRE(small.status == 200);  // the generator's PNGs decode
    std::string tags;
    for (int i = 0; i < 16; ++i) tags += "<image>";
    json heavy = {{"prompt", tags}, {"images", json::array()}};
    const std::string large = base64(black_png(2400, 2400));
    for (int i = 0; i < 16; ++i) heavy["images"].push_back(large);
    expect(post("/v1/generate", heavy.dump()), 400, "images[0..15] decode to 276", "16 images of 17 MB of pixels");
#ifndef __SANITIZE_ADDRESS__  // its shadow memory and quarantine add to the resident set
    CHECK(vm_kib(s.pid, "VmHWM") < 1l << 20);
#endif

    // Thousands of images: refused naming the limit, before any is decoded.
    const std::string tiny = b64_image("yellow_diamond.png");
    json many = {{"prompt", "x"}, {"images", json::array()}};
    for (int i = 0; i < 3000; ++i) many["images"].push_back(tiny);
    expect(post("/v1/generate", many.dump()), 400, "at most 16 images, got 3000", "3000 images");
    json parts = json::array();
    for (int i = 0; i < 3000; ++i) parts.push_back({{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + tiny}}}});
    expect(post("/v1/chat/completions", json({{"messages", {{{"role", "user"}, {"content", parts}}}}}).dump()), 400,
           "at most 16 images", "3000 chat images");

    // Numbers past any sensible range: 400 naming the field, never a 5xx or a wrapped-around value.
    const std::string g = R"({"prompt": "<image>x", "images": [")" + tiny + "\"], ";
    for (const char* v : {"1e300", "-1", "0", "18446744073709551616", "18446744073709551615", "9223372036854775808",
                          "-9223372036854775809", "1.5", "NaN", "true", "[]"})
        expect(post("/v1/generate", g + "\"max_new_tokens\": " + v + "}"),  400, "", v);
    for (const char* v : {"1e300", "-1", "18446744073709551616", "2.5"}) {
        expect(post("/v1/generate", g + "\"num_beams\": " + v + "}"), 400, "num_beams", v);
        expect(post("/v1/generate", g + "\"frames\": " + v + "}"), 400, "frames", v);
        expect(post("/v1/chat/completions", std::string(R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": )") + v + "}"),
               400, "max_tokens", v);
        expect(post("/v1/chat/completions", std::string(R"({"messages": [{"role": "user", "content": "hi"}], "temperature": 1, "seed": )") + v + "}"),
               400, "seed", v);
    }
    for (const char* v : {"1e300", "-1e300", "-1", "1e39"})
        expect(post("/v1/generate", g + "\"temperature\": " + v + "}"), 400, "temperature", v);
    for (const char* v : {"1e300", "-1e300", "1e39"})
        expect(post("/v1/generate", g + "\"length_penalty\": " + v + "}"), 400, "length_penalty", v);
    // Deeply nested JSON: parsed without recursion, then refused for its shape.
    expect(post("/v1/generate", std::string(100000, '[') + std::string(100000, ']')), 400, "JSON object", "deep JSON");
    expect(post("/v1/generate", std::string(100000, '[')), 400, "malformed JSON", "deep unclosed JSON");

    // Still answering, with the same answer.
    const Reply r = post("/v1/generate", generate_body().dump());
    CHECK(r.status == 200);
    CHECK(r.j["tokens"] == expected_generate()["tokens"]);
}

TEST_CASE("SIGTERM ends the server cleanly, one log line per request") {
    Server& s = server();
    const fs::path log = s.log;
    CHECK(s.stop() == 0);
    const std::string text = slurp(log);
    CHECK(text.find("POST /v1/generate 200 20+8 tokens") != std::string::npos);
    CHECK(text.find("POST /v1/generate 413") != std::string::npos);
    CHECK(text.find("GET /health 200") != std::string::npos);
}

TEST_CASE("requests sharing a few-shot prefix reuse it through the prefix cache, with the command's answers") {
    Server s({"--parallel", "1", "--threads", "1", "--prefix-cache", "64"});
    httplib::Client c("127.0.0.1", s.port);
    c.set_read_timeout(120, 0);
    auto metrics = [&] {
        auto r = c.Get("/metrics");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        return r->body;
    };
    const std::string shots =
        "<image>A photo of two red circles.<|endofchunk|><image>A photo of one striped blue star.<|endofchunk|>";
    const std::vector<const char*> examples = {"two_red_circles.png", "one_striped_blue_star.png"};
    CHECK(metric(metrics(), "flamingo_prefix_cache_hits_total") == 0);
    std::vector<int> reused;
    for (const char* query : {"three_green_triangles.png", "yellow_diamond.png"}) {
        CAPTURE(query);
        json body = {{"prompt", shots + "<image>A photo of"}, {"images", json::array()}};
        std::vector<std::string> args = {"generate", "--model", kModel.string(), "--prompt", shots + "<image>A photo of",
                                         "--json", "--threads", "1"};
        for (const char* im : examples) body["images"].push_back(b64_image(im)), args.push_back("--image"), args.push_back(image(im).string());
        body["images"].push_back(b64_image(query)), args.push_back("--image"), args.push_back(image(query).string());
        auto r = c.Post("/v1/generate", body.dump(), "application/json");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        const json e = json::parse(command(args));  // a fresh process without a cache
        CHECK(json::parse(r->body)["tokens"] == e["tokens"]);
        reused.push_back(metric(metrics(), "flamingo_prefix_cache_tokens_reused_total"));
    }
    // the first request found nothing; the second took the examples' keys/values and images
    const std::string m = metrics();
    CHECK(reused[0] == 0);
    CHECK(reused[1] > 0);
    CHECK(metric(m, "flamingo_prefix_cache_hits_total") == 1);
    CHECK(metric(m, "flamingo_prefix_cache_misses_total") == 1);
    CHECK(metric(m, "flamingo_prefix_cache_media_hits_total") == 2);
    CHECK(metric(m, "flamingo_prefix_cache_bytes") > 0);
    CHECK(metric(m, "flamingo_prefix_cache_bytes") <= 64 << 20);

    // A conversation's second request sends the first turn again: it is reused.
    const json user1 = {{"role", "user"},
                        {"content", {{{"type", "image_url"}, {"image_url", {{"url", "data:image/png;base64," + b64_image("four_dotted_orange_squares.png")}}}},
                                     {{"type", "text"}, {"text", "Question: What colour are the shapes? Answer:"}}}}};
    auto chat = [](httplib::Client& to, const json& messages) {
        auto r = to.Post("/v1/chat/completions", json({{"max_tokens", 8}, {"messages", messages}}).dump(), "application/json");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        return json::parse(r->body)["choices"][0]["message"]["content"].get<std::string>();
    };
    const std::string reply1 = chat(c, json::array({user1}));
    const json messages2 = json::array({user1, {{"role", "assistant"}, {"content", reply1}},
                                        {{"role", "user"}, {"content", "Question: How many? Answer:"}}});
    const int before = metric(metrics(), "flamingo_prefix_cache_tokens_reused_total");
    const std::string reply2 = chat(c, messages2);
    const std::string after = metrics();
    CHECK(metric(after, "flamingo_prefix_cache_tokens_reused_total") > before);
    CHECK(metric(after, "flamingo_prefix_cache_media_hits_total") == 3);
    CHECK(s.stop() == 0);

    // Without a cache: no cache metrics, and the same answers.
    Server off({"--parallel", "1", "--threads", "1", "--prefix-cache", "0"});
    httplib::Client c2("127.0.0.1", off.port);
    c2.set_read_timeout(120, 0);
    auto r = c2.Get("/metrics");
    REQUIRE(r);
    CHECK(r->body.find("flamingo_prefix_cache_") == std::string::npos);
    CHECK(chat(c2, json::array({user1})) == reply1);
    CHECK(chat(c2, messages2) == reply2);
}

TEST_CASE("a body trickling in a byte a second gets 408 and its connection closed; others are answered meanwhile") {
    Server s({"--parallel", "1", "--threads", "1", "--body-timeout", "2"});
    const std::string body = generate_body().dump();
    Raw slow(s.port);
    REQUIRE(slow.send(post_head("/v1/generate", body.size())));
    std::string answer;
    bool open = true;
    std::size_t sent = 0;
    std::thread trickle([&] {
        // A byte a second, at most 30 of the body's thousands: the server must end it long before.
        for (; sent < 30 && open && answer.empty(); ++sent) {
            if (!slow.send(body.substr(sent, 1))) break;
            open = slow.receive(answer, 1000);
        }
        if (open) open = slow.receive(answer, 10000);  // the rest of the answer, then the close
    });
    // Meanwhile another client is served, with the usual answer.
    const Reply r = [&] {
        httplib::Client c("127.0.0.1", s.port);
        c.set_read_timeout(120, 0);
        auto res = c.Post("/v1/generate", body, "application/json");
        REQUIRE(res);
        return Reply{res->status, res->body, json::parse(res->body, nullptr, false)};
    }();
    trickle.join();
    CHECK(r.status == 200);
    CHECK(r.j["tokens"] == expected_generate()["tokens"]);
    INFO(answer);
    CHECK(sent < 30);
    CHECK(answer.rfind("HTTP/1.1 408", 0) == 0);
    CHECK(answer.find("\"timeout\"") != std::string::npos);
    CHECK(answer.find("--body-timeout") != std::string::npos);
    CHECK(!open);  // the server closed the connection
    CHECK(metric_reaching(s, R"(flamingo_requests_total{endpoint="/v1/generate",status="408"})", 1) == 1);
    CHECK(s.stop() == 0);
}

TEST_CASE("a client that leaves cancels its request, streamed or not, running or queued; the server keeps answering") {
    Server s({"--parallel", "1", "--threads", "1", "--queue", "2"});
    const std::string cancelled = "flamingo_requests_cancelled_total";
    // A seed whose generation runs to its limit when nobody leaves (the first, unless another kernel
    // set's rounding moves a draw).
    int seed = 1;
    for (;; ++seed) {
        REQUIRE(seed <= 10);
        httplib::Client c("127.0.0.1", s.port);
        c.set_read_timeout(300, 0);
        auto r = c.Post("/v1/generate", long_body(false, seed).dump(), "application/json");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        if (json::parse(r->body)["usage"]["completion_tokens"] == kLongTokens) break;
    }
    // Streamed: the client reads the first piece and vanishes.
    {
        const std::string body = long_body(true, seed).dump();
        Raw gone(s.port);
        REQUIRE(gone.send(post_head("/v1/generate", body.size()) + body));
        std::string got;
        gone.receive(got, 60000, "data: ");
        REQUIRE(got.find("data: ") != std::string::npos);
        gone.close();
        CHECK(metric_reaching(s, cancelled, 1) == 1);
    }
    // Not streamed: the client leaves while its request runs.
    {
        const std::string body = long_body(false, seed).dump();
        Raw gone(s.port);
        REQUIRE(gone.send(post_head("/v1/generate", body.size()) + body));
        CHECK(metric_reaching(s, "flamingo_workers_busy", 1) == 1);
        gone.close();
        CHECK(metric_reaching(s, cancelled, 2) == 2);
        CHECK(metric_reaching(s, R"(flamingo_requests_total{endpoint="/v1/generate",status="499"})", 1) == 1);
    }
    // Beam search, whose tokens come only at its end: the client leaves while it runs.
    {
        json beams = long_body(false, seed);
        beams.erase("temperature"), beams.erase("top_k"), beams.erase("seed");
        beams["num_beams"] = 8, beams["length_penalty"] = 50.0;  // longer scores better: it runs to its limit
        const std::string body = beams.dump();
        Raw gone(s.port);
        REQUIRE(gone.send(post_head("/v1/generate", body.size()) + body));
        CHECK(metric_reaching(s, "flamingo_workers_busy", 1) == 1);
        gone.close();
        CHECK(metric_reaching(s, cancelled, 3) == 3);
    }
    // Queued: one runs, a second waits and its client leaves; it never runs.
    {
        const std::string body = long_body(false, seed).dump();
        Raw running(s.port), waiting(s.port);
        REQUIRE(running.send(post_head("/v1/generate", body.size()) + body));
        CHECK(metric_reaching(s, "flamingo_workers_busy", 1) == 1);
        REQUIRE(waiting.send(post_head("/v1/generate", body.size()) + body));
        CHECK(metric_reaching(s, "flamingo_queue_depth", 1) == 1);
        waiting.close();
        running.close();
        CHECK(metric_reaching(s, cancelled, 5) == 5);
    }
    // Still answering, with the same answer.
    httplib::Client c("127.0.0.1", s.port);
    c.set_read_timeout(120, 0);
    auto r = c.Post("/v1/generate", generate_body().dump(), "application/json");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(json::parse(r->body)["tokens"] == expected_generate()["tokens"]);
    const fs::path log = s.log;
    CHECK(s.stop() == 0);
    const std::string text = slurp(log);
    CHECK(text.find("/v1/generate cancelled: the client closed the connection") != std::string::npos);
    CHECK(text.find("POST /v1/generate 499") != std::string::npos);
}

TEST_CASE("32 clients at once: every answer is the single request's, and the resident set does not grow") {
    // Loopback, a fixed number of requests, each client's connection kept alive. Under AddressSanitizer
    // one round only: its quarantine keeps freed memory resident by design, so there is no RSS to compare.
#ifdef __SANITIZE_ADDRESS__
    constexpr int kRounds = 1;
#else
    constexpr int kRounds = 4;
#endif
    constexpr int kClients = 32;
    [[maybe_unused]] constexpr long kGrowthKiB = 32 << 10;  // allowed growth of VmRSS from after the warm-up to after the load
    Server s({"--parallel", "2", "--threads", "2", "--queue", "32"});
    const json e = expected_generate();
    json streamed = generate_body();
    streamed["stream"] = true;
    const std::string bodies[2] = {generate_body().dump(), streamed.dump()};
    // One round: every client sends `rounds` requests, alternately streamed; returns the wrong answers.
    auto round = [&](int rounds) {
        std::atomic<int> answered{0};
        std::mutex mu;
        std::vector<std::string> wrong;
        std::vector<std::thread> clients;
        for (int k = 0; k < kClients; ++k)
            clients.emplace_back([&, k] {
                httplib::Client c("127.0.0.1", s.port);
                c.set_read_timeout(300, 0);
                c.set_keep_alive(true);
                for (int i = 0; i < rounds; ++i) {
                    const bool stream = (k + i) % 2;
                    auto r = c.Post("/v1/generate", bodies[stream], "application/json");
                    bool ok = r && r->status == 200;
                    if (ok && stream) {
                        json result;
                        std::string text;
                        for (const auto& [name, data] : events(r->body))
                            if (name == "result") result = json::parse(data);
                            else text += json::parse(data)["text"].get<std::string>();
                        ok = text == e["text"] && result.is_object() && result["tokens"] == e["tokens"];
                    } else if (ok) {
                        const json j = json::parse(r->body, nullptr, false);
                        ok = j.is_object() && j["tokens"] == e["tokens"];
                    }
                    if (!ok) {
                        std::lock_guard lock(mu);
                        wrong.push_back("client " + std::to_string(k) + " request " + std::to_string(i) + ": " +
                                        (r ? std::to_string(r->status) + " " + r->body : "no answer: " + httplib::to_string(r.error())));
                    }
                    ++answered;
                }
            });
        for (auto& t : clients) t.join();
        CHECK(answered == kClients * rounds);
        for (const auto& w : wrong) MESSAGE(w);
        return wrong.size();
    };
    CHECK(round(1) == 0u);  // warm-up: every connection thread, worker and allocator arena in use once
    const long warm = vm_kib(s.pid, "VmRSS");
    CHECK(round(kRounds) == 0u);
    const long after = vm_kib(s.pid, "VmRSS");
    MESSAGE("VmRSS after the warm-up " << warm << " KiB, after " << kClients * kRounds << " more requests " << after << " KiB");
#ifndef __SANITIZE_ADDRESS__
    CHECK(after - warm < kGrowthKiB);
#endif
    const std::string served = R"(flamingo_requests_total{endpoint="/v1/generate",status="200"})";
    CHECK(metric_reaching(s, served, kClients * (kRounds + 1)) == kClients * (kRounds + 1));
    CHECK(metric_reaching(s, "flamingo_requests_cancelled_total", 0) == 0);
}

TEST_CASE("with --batch, concurrent requests decoded together give their single answers") {
    // One thread, as the references: decoding attention splits its arithmetic by thread count.
    Server s({"--parallel", "4", "--batch", "4", "--threads", "1"});
    auto connect = [&s] {
        httplib::Client c("127.0.0.1", s.port);
        c.set_read_timeout(120, 0);
        c.set_write_timeout(60, 0);
        return c;
    };
    const json e = expected_generate();
    json stream = generate_body();
    stream["stream"] = true;
    json sampled = generate_body();
    sampled["temperature"] = 0.9, sampled["top_p"] = 0.9, sampled["seed"] = 5;
    const json sampled_want = json::parse(command(
        {"generate", "--model", kModel.string(), "--prompt", kPrompt, "--image", image("two_red_circles.png").string(),
         "--image", image("one_striped_blue_star.png").string(), "--image", image("three_green_triangles.png").string(),
         "--temperature", "0.9", "--top-p", "0.9", "--seed", "5", "--json", "--threads", "1"}));
    json beams = generate_body();  // three of the loop's four rows
    beams["num_beams"] = 3;
    const json beams_want = json::parse(command(
        {"generate", "--model", kModel.string(), "--prompt", kPrompt, "--image", image("two_red_circles.png").string(),
         "--image", image("one_striped_blue_star.png").string(), "--image", image("three_green_triangles.png").string(),
         "--num-beams", "3", "--json", "--threads", "1"}));
    const json short_prompt = {{"prompt", "<image>A photo of"}, {"images", {b64_image("yellow_diamond.png")}},
                               {"max_new_tokens", 3}};
    const json short_want = json::parse(command({"generate", "--model", kModel.string(), "--prompt",
                                                 "<image>A photo of", "--image", image("yellow_diamond.png").string(),
                                                 "--max-new-tokens", "3", "--json", "--threads", "1"}));
    const json chat = {{"max_tokens", 5},
                       {"messages", {{{"role", "user"},
                                      {"content", {{{"type", "image_url"},
                                                    {"image_url", {{"url", "data:image/png;base64," +
                                                                                   b64_image("two_red_circles.png")}}}},
                                                   {{"type", "text"}, {"text", "What is in the picture?"}}}}}}}};
    // the chat reference: the same request alone on a server without --batch
    json chat_want;
    {
        Server plain({"--parallel", "1", "--threads", "1"});
        httplib::Client c("127.0.0.1", plain.port);
        c.set_read_timeout(120, 0);
        auto r = c.Post("/v1/chat/completions", chat.dump(), "application/json");
        REQUIRE(r);
        REQUIRE(r->status == 200);
        chat_want = json::parse(r->body);
    }

    const std::vector<std::pair<std::string, json>> sends = {
        {"/v1/generate", generate_body()}, {"/v1/generate", stream},       {"/v1/generate", sampled},
        {"/v1/generate", short_prompt},    {"/v1/chat/completions", chat}, {"/v1/generate", generate_body()},
        {"/v1/generate", sampled},         {"/v1/generate", stream},       {"/v1/generate", beams}};
    std::vector<Reply> replies(sends.size());
    for (int round = 0; round < 2; ++round) {  // twice: the second round finds the loop warm
        std::vector<std::thread> threads;
        for (std::size_t i = 0; i < sends.size(); ++i)
            threads.emplace_back([&, i] {
                auto c = connect();
                if (auto r = c.Post(sends[i].first.c_str(), sends[i].second.dump(), "application/json"))
                    replies[i] = {r->status, r->body, json::parse(r->body, nullptr, false)};
            });
        for (auto& t : threads) t.join();
        for (std::size_t i = 0; i < sends.size(); ++i) {
            CAPTURE(i);
            INFO(replies[i].body);
            REQUIRE(replies[i].status == 200);
            const json& body = sends[i].second;
            if (sends[i].first == "/v1/chat/completions") {
                CHECK(replies[i].j["choices"] == chat_want["choices"]);
                CHECK(replies[i].j["usage"] == chat_want["usage"]);
            } else if (body.contains("stream")) {
                std::string text;
                json result;
                for (const auto& [name, data] : events(replies[i].body)) {
                    if (name == "result") result = json::parse(data);
                    else text += json::parse(data)["text"].get<std::string>();
                }
                CHECK(text == e["text"].get<std::string>());
                CHECK(result["tokens"] == e["tokens"]);
            } else if (body.contains("seed")) {
                CHECK(replies[i].j["tokens"] == sampled_want["tokens"]);
            } else if (body.contains("num_beams")) {
                CHECK(replies[i].j["tokens"] == beams_want["tokens"]);
                CHECK(replies[i].j["text"] == beams_want["text"]);
            } else if (body.contains("max_new_tokens")) {
                CHECK(replies[i].j["tokens"] == short_want["tokens"]);
                CHECK(replies[i].j["stopped"] == false);
            } else {
                CHECK(replies[i].j["tokens"] == e["tokens"]);
            }
        }
    }

    // A streaming client that goes away after its first piece: the server carries on.
    {
        auto c = connect();
        std::size_t got = 0;
        httplib::Request req;
        req.method = "POST", req.path = "/v1/generate", req.body = stream.dump();
        req.set_header("Content-Type", "application/json");
        req.content_receiver = [&](const char*, std::size_t n, std::uint64_t, std::uint64_t) {
            return (got += n) == 0;  // closes the connection at the first bytes
        };
        c.send(req);
        CHECK(got > 0);
    }
    auto c = connect();
    auto r = c.Post("/v1/generate", generate_body().dump(), "application/json");
    REQUIRE(r);
    CHECK(json::parse(r->body)["tokens"] == e["tokens"]);
    std::string m;
    for (int i = 0; i < 400; ++i) {  // the loop empties once every answer is written (bounded wait)
        m = c.Get("/metrics")->body;
        if (metric(m, "flamingo_batch_sequences") == 0 && metric(m, "flamingo_workers_busy") == 0) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    INFO(m);
    CHECK(metric(m, "flamingo_batch_sequences") == 0);
    CHECK(metric(m, "flamingo_batch_waiting") == 0);
    const int steps = metric(m, "flamingo_batch_size_count");
    CHECK(steps > 0);
    CHECK(metric(m, R"(flamingo_batch_size_bucket{le="+Inf"})") == steps);
    CHECK(metric(m, R"(flamingo_batch_size_bucket{le="4"})") == steps);  // never more than --batch
    CHECK(metric(m, "flamingo_batch_size_sum") >= steps);
    CHECK(s.stop() == 0);
}

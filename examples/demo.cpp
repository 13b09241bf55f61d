// The few-shot demo: a bundled Flamingo model answers from a few interleaved
// examples (captioning, a question, names made up inside the prompt, and a
// question about video clips), and holds a conversation. Reads <model>/examples/demo.json:
// [{"title", "prompt", "images", "frames"?, "max_new_tokens", "expected"}] (with
// "frames", each medium is a video: a directory of that many frames), or for a
// conversation [{"title", "turns": [{"user", "images", "expected"}], "max_new_tokens"}].
// Ends with how many answers were as expected; with --check, exits 1 unless all were.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <flamingo/chat.hpp>
#include <flamingo/flamingo.hpp>

namespace {
std::string_view trimmed(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
}
}  // namespace

int main(int argc, char** argv) {
    namespace fs = std::filesystem;
    bool check = false;
    fs::path model = fs::path(FLAMINGO_SOURCE_DIR) / "models" / "shapes-flamingo";
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--check") check = true;
        else model = argv[i];
    }
    int asked = 0, right = 0;
    const auto judge = [&](const std::string& answer, const nlohmann::json& d) {
        if (!d.contains("expected")) return;
        const auto expected = d.at("expected").get<std::string>();
        std::printf("expected: %s\n", expected.c_str());
        ++asked;
        right += trimmed(answer) == trimmed(expected);
    };
    try {
        const auto t0 = std::chrono::steady_clock::now();
        const auto m = flamingo::Model::load(model);
        flamingo::Context p(m);
        const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::ifstream in(model / "examples" / "demo.json");
        if (!in) flamingo::fail(model.string(), "/examples/demo.json: cannot open");
        const nlohmann::json demos = nlohmann::json::parse(in);
        std::printf("model %s (loaded in %.0f ms)\n", model.string().c_str(), load_ms);
        for (const auto& d : demos) {
            flamingo::generate::GenerateOptions o;
            o.max_new_tokens = d.value("max_new_tokens", 20);
            if (d.contains("turns")) {  // the model's chat template, as `flamingo chat`
                std::printf("\n== %s\n", d.at("title").get<std::string>().c_str());
                flamingo::Conversation chat(m);
                for (const auto& turn : d.at("turns")) {
                    std::vector<std::string> images;
                    std::string shown;
                    for (const auto& im : turn.value("images", nlohmann::json::array())) {
                        images.push_back((model / "examples" / im.get<std::string>()).string());
                        shown += "[" + im.get<std::string>() + "] ";
                    }
                    const auto t = std::chrono::steady_clock::now();
                    chat.add_user(turn.at("user").get<std::string>(), images);
                    const auto g = chat.reply(o);
                    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
                    std::printf("user: %s%s\nanswer: %s   (%.0f ms)\n", shown.c_str(),
                                turn.at("user").get<std::string>().c_str(), chat.messages().back().content.c_str(), ms);
                    judge(chat.messages().back().content, turn);
                }
                continue;
            }
            std::vector<std::string> images, shown;
            for (const auto& im : d.at("images")) {
                images.push_back((model / "examples" / im.get<std::string>()).string());
                shown.push_back(im.get<std::string>());
            }
            const auto t = std::chrono::steady_clock::now();
            p.set_media(images, d.value("frames", std::size_t(1)));
            auto g = p.generate(d.at("prompt").get<std::string>(), o);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
            std::printf("\n== %s\n", d.at("title").get<std::string>().c_str());
            std::printf("images: ");
            for (std::size_t i = 0; i < shown.size(); ++i) std::printf("%s%s", i ? ", " : "", shown[i].c_str());
            std::printf("\nprompt: %s\nanswer: %s   (%.0f ms)\n", d.at("prompt").get<std::string>().c_str(),
                        g.text.c_str(), ms);
            judge(g.text, d);
        }
        std::printf("\n%d of %d answers as expected\n", right, asked);
    } catch (const std::exception& e) {
        std::cerr << "demo: error: " << e.what() << "\n";
        return 1;
    }
    return check && right != asked ? 1 : 0;
}

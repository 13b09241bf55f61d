#pragma once
// `flamingo chat`: a conversation on standard input. One user message per
// line, one answer per line on standard output; `/image PATH` attaches an
// image to the next message, `/reset` starts over, `/quit` ends (so does the
// end of the input). A line that fails (a bad image, a prompt too long) is
// reported on stderr and the conversation goes on without it. On a terminal
// a "> " prompt is shown; lines are read as the terminal gives them (no line
// editing or history of our own).
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include <flamingo/chat.hpp>

namespace flamingo::chat {

struct Options {
    int threads = 1;
    std::vector<std::string> images;  // for the first message
    generate::GenerateOptions generate;
    bool verbose = false;
};

inline int run(const std::shared_ptr<const Model>& model, const Options& o) {
    Conversation conv(model, {o.threads, nullptr});
    const bool tty = isatty(0);
    std::vector<std::vector<Image>> pending;  // images for the next message
    for (const auto& im : o.images) pending.push_back(load_media_frames(im, 1, model->image_limits()));
    auto report = [](const std::exception& e) { std::cerr << "flamingo: error: " << e.what() << "\n" << std::flush; };

    for (std::string line;;) {
        if (tty) std::cout << "> " << std::flush;
        if (!std::getline(std::cin, line)) break;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        if (line == "/quit") break;
        if (line == "/reset") {
            conv.reset();
            pending.clear();
            continue;
        }
        if (line.rfind("/image", 0) == 0 && (line.size() == 6 || line[6] == ' ')) {
            std::string path = line.substr(line.size() > 6 ? 7 : 6);
            path.erase(0, path.find_first_not_of(" \t"));
            path.erase(path.find_last_not_of(" \t") + 1);
            try {
                check(!path.empty(), "/image needs a path");
                pending.push_back(load_media_frames(path, 1, model->image_limits()));
            } catch (const Error& e) {
                report(e);
            }
            continue;
        }
        if (line[0] == '/' && line.rfind("//", 0) != 0) {
            std::cerr << "flamingo: error: unknown chat command " << line.substr(0, line.find(' '))
                      << " (/image PATH, /reset, /quit; start a message with // to begin it with /)\n" << std::flush;
            continue;
        }
        if (line.rfind("//", 0) == 0) line.erase(0, 1);
        try {
            conv.add_user(line, model->preprocess(pending));
        } catch (const Error& e) {
            report(e);
            continue;
        }
        const auto before = conv.stats();
        try {
            const auto g = conv.reply(o.generate);
            pending.clear();
            std::string text = conv.messages().back().content;
            for (char& c : text)
                if (c == '\n' || c == '\r') c = ' ';  // one answer, one line
            std::cout << text << "\n" << std::flush;
            if (o.verbose) {
                const auto& st = conv.stats();
                std::cerr << "read " << st.read_tokens - before.read_tokens << " tokens, encoded "
                          << st.media_encoded - before.media_encoded << " images, generated " << g.tokens.size()
                          << " tokens\n";
            }
        } catch (const Error& e) {
            conv.pop();  // the message whose reply failed; its images stay attached for the next
            report(e);
        }
    }
    return 0;
}

}  // namespace flamingo::chat

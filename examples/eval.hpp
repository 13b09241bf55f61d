#pragma once
// `flamingo eval`: accuracy of a model on an evaluation set of few-shot
// prompts (the format tools/world/evalset.py writes): one JSONL file per task,
// each line {"id", "task", "shots", "prompt", "images": [file names in
// <data>/images], "judge": "generate" | "score", "answer", "candidates",
// "max_new_tokens"}.
//   generate: greedy generation up to <|endofchunk|>; the stripped text must equal the answer;
//   score:    the candidate with the highest summed log-probability must be the answer.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <flamingo/flamingo.hpp>

namespace flamingo::fewshot {

inline std::string strip(std::string s) {
    const char* ws = " \t\n\r";
    s.erase(0, s.find_first_not_of(ws));
    s.erase(s.find_last_not_of(ws) + 1);
    return s;
}

struct Outcome {
    std::string id, task;
    int shots = 0;
    bool correct = false;
    std::string prediction;
};

// The records `run` evaluates, in its order: every record of every
// <task>.jsonl in `data` (files by name; with limit > 0, the first `limit`
// records of each task and shot count of a file). A record without "task"
// gets its file's name there, so that each record stands on its own.
inline std::vector<nlohmann::json> records(const std::filesystem::path& data, std::size_t limit) {
    namespace fs = std::filesystem;
    check(fs::is_directory(data), ErrorKind::File, data.string(), ": evaluation data directory does not exist");
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(data))
        if (e.path().extension() == ".jsonl") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    check(!files.empty(), ErrorKind::File, data.string(), ": no .jsonl files");
    std::vector<nlohmann::json> out;
    for (const auto& file : files) {
        std::ifstream in(file);
        std::string line;
        std::size_t lineno = 0;
        std::map<std::pair<std::string, int>, std::size_t> taken;  // (task, shots) -> records taken
        while (std::getline(in, line)) {
            ++lineno;
            if (strip(line).empty()) continue;
            nlohmann::json r;
            try {
                r = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
                fail(ErrorKind::Format, file.string(), ":", lineno, ": not JSON: ", e.what());
            }
            if (!r.contains("task")) r["task"] = file.stem().string();
            if (limit && taken[{r.value("task", ""), r.value("shots", 0)}]++ >= limit) continue;
            out.push_back(std::move(r));
        }
    }
    return out;
}

// One record's outcome on `p`; its images are files in <data>/images, media
// videos of the record's "frames" (default `frames`).
inline Outcome evaluate_one(Context& p, const std::filesystem::path& data, const nlohmann::json& r,
                            std::size_t frames) {
    Outcome o;
    o.id = r.value("id", ""), o.task = r.value("task", ""), o.shots = r.value("shots", 0);
    std::vector<std::string> images;
    for (const auto& im : r.at("images")) images.push_back((data / "images" / im.get<std::string>()).string());
    p.set_media(images, r.value("frames", frames));
    const std::string prompt = r.at("prompt"), answer = r.at("answer");
    if (r.value("judge", "generate") == "score") {
        auto scores = p.score(prompt, r.at("candidates").get<std::vector<std::string>>());
        auto best = std::max_element(scores.begin(), scores.end(), [](const auto& a, const auto& b) {
            return a.score.logprob < b.score.logprob;
        });
        o.prediction = best->candidate;
        o.correct = o.prediction == answer;
    } else {
        generate::GenerateOptions g;
        g.max_new_tokens = r.value("max_new_tokens", 20);
        o.prediction = strip(p.generate(prompt, g).text);
        o.correct = o.prediction == strip(answer);
    }
    return o;
}

// Runs every record of `records(data, limit)`; `progress` is called after each.
inline std::vector<Outcome> run(Context& p, const std::filesystem::path& data, std::size_t limit, std::size_t frames,
                                const std::function<void(std::size_t)>& progress = {}) {
    std::vector<Outcome> out;
    for (const auto& r : records(data, limit)) {
        out.push_back(evaluate_one(p, data, r, frames));
        if (progress) progress(out.size());
    }
    return out;
}

// Accuracy (%) per task and shot count as a Markdown table.
inline std::string table(const std::vector<Outcome>& outcomes) {
    std::map<std::string, std::map<int, std::pair<int, int>>> acc;  // task -> shots -> (correct, total)
    std::set<int> shots;
    for (const auto& o : outcomes) {
        auto& a = acc[o.task][o.shots];
        a.first += o.correct, a.second += 1;
        shots.insert(o.shots);
    }
    std::ostringstream os;
    os << "| task |";
    for (int s : shots) os << " " << s << "-shot |";
    os << "\n|---|";
    for (std::size_t i = 0; i < shots.size(); ++i) os << "---:|";
    os << "\n";
    for (const auto& [task, by] : acc) {
        os << "| " << task << " |";
        for (int s : shots) {
            auto it = by.find(s);
            if (it == by.end()) os << " - |";
            else os << " " << std::fixed << std::setprecision(1) << 100.0 * it->second.first / it->second.second
                    << " (n=" << it->second.second << ") |";
        }
        os << "\n";
    }
    return os.str();
}

}  // namespace flamingo::fewshot

#pragma once
// Strict JSON parsing for files we do not control (safetensors headers,
// config.json, shard indexes).
//
// nlohmann's parser silently keeps one of two duplicate keys, and copying or
// printing a deeply nested value recurses once per level; a parse callback
// lets us reject both while the text is read.
#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "flamingo/core/error.hpp"

namespace flamingo::io {

using json = nlohmann::json;

inline constexpr std::size_t kMaxJsonDepth = 64;

// Parses `text`; errors name `source` and say what is wrong (and where).
inline json parse_json(std::string_view text, const std::string& source,
                       std::size_t max_depth = kMaxJsonDepth) {
    std::vector<std::set<std::string>> keys;  // keys seen so far, per open object
    std::size_t depth = 0;
    auto callback = [&](int, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                if (++depth > max_depth)
                    fail(ErrorKind::Limit, source, ": JSON nested more than ", max_depth, " levels deep");
                if (event == json::parse_event_t::object_start) keys.emplace_back();
                break;
            case json::parse_event_t::object_end:
                --depth;
                keys.pop_back();
                break;
            case json::parse_event_t::array_end:
                --depth;
                break;
            case json::parse_event_t::key: {
                const std::string& k = parsed.get_ref<const std::string&>();
                if (!keys.back().insert(k).second) fail(ErrorKind::Format, source, ": duplicate key \"", k, "\" in a JSON object");
                break;
            }
            case json::parse_event_t::value:
                break;
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), callback);
    } catch (const json::exception& e) {
        // Syntax errors, and numbers out of range ("1e400"): e.what() is
        // "[json.exception.parse_error.101] parse error at line 1, column 2: ..."
        std::string_view msg = e.what();
        if (auto p = msg.find("] "); p != std::string_view::npos) msg.remove_prefix(p + 2);
        fail(ErrorKind::Format, source, ": invalid JSON: ", msg);
    }
}

// "object", "array", "string", "integer", ... for error messages.
inline std::string json_type_name(const json& j) {
    if (j.is_number_integer()) return "integer";
    if (j.is_number_float()) return "number";
    return j.type_name();
}

}  // namespace flamingo::io

#pragma once
// Errors are exceptions that carry their context (file, tensor, shape,
// position) in the message and a category, so that a caller can tell a
// missing file from a bad config without parsing text.
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace flamingo {

enum class ErrorKind {
    Input,   // the caller's request: a prompt, an option value, a mismatched image count (the default)
    File,    // a file or directory missing, unreadable or not what it must be (a directory, a regular file)
    Format,  // a file's contents break its format (safetensors, JSON, tokenizer.json, an image)
    Config,  // config.json parses but cannot describe a model
    Shape,   // a tensor's shape or dtype disagrees with what the model or the other tensors need
    Limit,   // a size limit: context length, image pixels, header size, allocation size
};

inline constexpr std::string_view error_kind_name(ErrorKind k) {
    switch (k) {
        case ErrorKind::Input: return "input";
        case ErrorKind::File: return "file";
        case ErrorKind::Format: return "format";
        case ErrorKind::Config: return "config";
        case ErrorKind::Shape: return "shape";
        case ErrorKind::Limit: return "limit";
    }
    return "input";
}

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& what, ErrorKind kind = ErrorKind::Input)
        : std::runtime_error(what), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

private:
    ErrorKind kind_;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    return os.str();
}
template <class T>
constexpr bool is_kind = std::is_same_v<std::decay_t<T>, ErrorKind>;
}  // namespace detail

// Builds a message from any streamable parts; an ErrorKind first sets the category:
//   fail("tensor ", name, ": expected ", a, ", found ", b);
//   fail(ErrorKind::Shape, "tensor ", name, ...);
template <class First, class... Parts>
[[noreturn]] void fail(First&& first, Parts&&... parts) {
    if constexpr (detail::is_kind<First>)
        throw Error(detail::concat(std::forward<Parts>(parts)...), first);
    else
        throw Error(detail::concat(std::forward<First>(first), std::forward<Parts>(parts)...));
}

template <class... Parts>
void check(bool ok, Parts&&... parts) {
    if (!ok) fail(std::forward<Parts>(parts)...);
}

}  // namespace flamingo

#pragma once
// Errors are exceptions that carry their context (file, tensor, shape, position).
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace flamingo {

class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Builds a message from any streamable parts: fail("tensor ", name, ": expected ", a, ", found ", b).
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
    std::ostringstream os;
    (os << ... << std::forward<Parts>(parts));
    throw Error(os.str());
}

template <class... Parts>
void check(bool ok, Parts&&... parts) {
    if (!ok) fail(std::forward<Parts>(parts)...);
}

}  // namespace flamingo

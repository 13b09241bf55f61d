#pragma once
// Helpers shared by the io tests: temporary directories, raw file writing,
// hand-built safetensors images, and error-message checks.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

#include <unistd.h>

#include "flamingo/core/error.hpp"

namespace io_test {

namespace fs = std::filesystem;

inline fs::path data_dir() { return fs::path(FLAMINGO_TEST_DATA) / "io"; }

// A fresh directory under the system temp dir, removed with everything in it.
struct TempDir {
    fs::path path;
    TempDir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("flamingo_io_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    fs::path operator/(const std::string& name) const { return path / name; }
};

inline void write_file(const fs::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(out.good());
}

inline std::string u64le(std::uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = char((n >> (8 * i)) & 0xff);
    return s;
}

// A safetensors image: u64 header length, header text, data bytes.
inline std::string st_image(std::string_view header, std::string_view data) {
    return u64le(header.size()) + std::string(header) + std::string(data);
}

// The message of the flamingo::Error that f throws, or "<no error>".
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const flamingo::Error& e) {
        return e.what();
    }
    return "<no error>";
}

}  // namespace io_test

// Checks that `expr` throws flamingo::Error whose message contains every one of the given substrings.
#define CHECK_ERROR(expr, ...)                                                                    \
    do {                                                                                          \
        const std::string msg_ = io_test::error_of([&] { (void)(expr); });                        \
        for (const std::string& want_ : std::initializer_list<std::string>{__VA_ARGS__})          \
            CHECK_MESSAGE(msg_.find(want_) != std::string::npos,                                  \
                          "expected \"" << want_ << "\" in: " << msg_);                         \
    } while (0)

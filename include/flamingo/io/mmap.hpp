#pragma once
// A read-only memory-mapped file.
//
// Model weights are used where they lie in the page cache: mapping the file
// costs nothing at load time, and pages are read when first touched. The
// mapping is private and read-only; if another process truncates the file
// while it is mapped, touching the lost pages raises SIGBUS (POSIX offers no
// way around that short of copying the file).
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flamingo/core/error.hpp"

namespace flamingo::io {

class MappedFile {
public:
    MappedFile() = default;

    // Maps the whole file. Throws flamingo::Error naming the file when it is
    // missing, not a regular file (a directory, a FIFO, a device) or unreadable.
    // An empty file maps to data() == nullptr, size() == 0.
    static MappedFile open(const std::filesystem::path& path) {
        MappedFile f;
        f.path_ = path;
        const std::string name = path.string();

        // Look before opening: open(2) on a FIFO would block until a writer appears.
        struct stat st {};
        if (::stat(name.c_str(), &st) != 0) fail_errno(name, errno);
        if (S_ISDIR(st.st_mode)) fail(ErrorKind::File, "cannot open '", name, "': is a directory, expected a file");
        if (!S_ISREG(st.st_mode)) fail(ErrorKind::File, "cannot open '", name, "': not a regular file");

        int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) fail_errno(name, errno);
        // The path may have been replaced between stat and open: check what we opened.
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            int err = errno;
            ::close(fd);
            if (err) fail_errno(name, err);
            fail(ErrorKind::File, "cannot open '", name, "': not a regular file");
        }
        f.size_ = std::size_t(st.st_size);
        if (f.size_ > 0) {
            void* p = ::mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
            int err = errno;
            ::close(fd);
            if (p == MAP_FAILED) {
                f.size_ = 0;
                fail(ErrorKind::File, "cannot map '", name, "' (", std::strerror(err), ")");
            }
            f.data_ = static_cast<const std::byte*>(p);
        } else {
            ::close(fd);
        }
        return f;
    }

    MappedFile(MappedFile&& other) noexcept { swap(other); }
    MappedFile& operator=(MappedFile&& other) noexcept {
        if (this != &other) {
            MappedFile tmp(std::move(other));
            swap(tmp);
        }
        return *this;
    }
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() { unmap(); }

    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    const std::filesystem::path& path() const { return path_; }
    std::string_view text() const { return {reinterpret_cast<const char*>(data_), size_}; }

private:
    [[noreturn]] static void fail_errno(const std::string& name, int err) {
        fail(ErrorKind::File, "cannot open '", name, "': ", std::strerror(err));
    }

    void unmap() {
        if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
        data_ = nullptr;
        size_ = 0;
    }

    void swap(MappedFile& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
        std::swap(path_, o.path_);
    }

    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::filesystem::path path_;
};

}  // namespace flamingo::io

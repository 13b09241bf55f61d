#include <doctest/doctest.h>

#include <sys/stat.h>

#include <utility>

#include "flamingo/io/mmap.hpp"
#include "io_test_util.hpp"

using flamingo::io::MappedFile;
using namespace io_test;

TEST_CASE("mmap: maps a file's bytes") {
    TempDir dir;
    const std::string bytes("hello\0world", 11);
    write_file(dir / "f.bin", bytes);
    MappedFile f = MappedFile::open(dir / "f.bin");
    REQUIRE(f.size() == 11);
    CHECK(f.text() == bytes);
    CHECK(f.path() == dir / "f.bin");
}

TEST_CASE("mmap: empty file") {
    TempDir dir;
    write_file(dir / "empty", "");
    MappedFile f = MappedFile::open(dir / "empty");
    CHECK(f.size() == 0);
    CHECK(f.empty());
    CHECK(f.data() == nullptr);
    CHECK(f.text().empty());
}

TEST_CASE("mmap: move keeps the mapping, the source is left empty") {
    TempDir dir;
    write_file(dir / "f", "abcdef");
    MappedFile a = MappedFile::open(dir / "f");
    const std::byte* p = a.data();
    MappedFile b(std::move(a));
    CHECK(b.data() == p);
    CHECK(b.text() == "abcdef");
    CHECK(a.data() == nullptr);
    CHECK(a.size() == 0);
    MappedFile c;
    c = std::move(b);
    CHECK(c.text() == "abcdef");
    c = MappedFile::open(dir / "f");  // replacing unmaps the old mapping
    CHECK(c.text() == "abcdef");
}

TEST_CASE("mmap: errors name the file and the reason") {
    TempDir dir;
    CHECK_ERROR(MappedFile::open(dir / "missing.bin"), "missing.bin", "No such file");
    CHECK_ERROR(MappedFile::open(dir.path), dir.path.string().c_str(), "is a directory");
    REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
    CHECK_ERROR(MappedFile::open(dir / "fifo"), "fifo", "not a regular file");  // and does not block
    if (::geteuid() != 0) {  // root reads anything
        write_file(dir / "secret", "x");
        ::chmod((dir / "secret").c_str(), 0);
        CHECK_ERROR(MappedFile::open(dir / "secret"), "secret", "Permission denied");
    }
}

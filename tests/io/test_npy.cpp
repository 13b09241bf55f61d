#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "flamingo/io/npy.hpp"
#include "io_test_util.hpp"

using namespace flamingo::io;
using namespace io_test;

// The fixtures are written by numpy (tools/make_io_fixtures.py); the expected
// values are recomputed here from the same formulas.
TEST_CASE("npy: reads numpy-written arrays of every supported dtype") {
    auto f4 = read_npy(data_dir() / "np_f4.npy");
    CHECK(f4.dtype == NpyDType::F4);
    CHECK(f4.shape == std::vector<std::size_t>{2, 3, 4});
    auto v = f4.as_float();
    REQUIRE(v.size() == 24);
    for (int i = 0; i < 24; ++i) CHECK(v[i] == float(i * 0.5 - 3.0));

    auto f8 = read_npy(data_dir() / "np_f8.npy");
    CHECK(f8.dtype == NpyDType::F8);
    auto v8 = f8.as_float();
    for (int i = 0; i < 24; ++i) CHECK(v8[i] == float((i * 0.5 - 3.0) / 3.0));
    CHECK_ERROR(f8.as_int64(), "np_f8.npy", "integer");

    auto i4 = read_npy(data_dir() / "np_i4.npy");
    CHECK(i4.dtype == NpyDType::I4);
    CHECK(i4.shape == std::vector<std::size_t>{1, 3});
    CHECK(i4.as_int64() == std::vector<std::int64_t>{-7, 0, 2147483647});

    auto i8 = read_npy(data_dir() / "np_i8.npy");
    CHECK(i8.as_int64() == std::vector<std::int64_t>{-(std::int64_t(1) << 40), 5, std::int64_t(1) << 62});

    auto b = read_npy(data_dir() / "np_bool.npy");
    CHECK(b.dtype == NpyDType::Bool);
    CHECK(b.as_int64() == std::vector<std::int64_t>{1, 0, 1, 1});
    CHECK(b.as_float() == std::vector<float>{1, 0, 1, 1});

    auto u1 = read_npy(data_dir() / "np_u1.npy");
    CHECK(u1.dtype == NpyDType::U1);
    CHECK(u1.shape == std::vector<std::size_t>{2, 2});
    CHECK(u1.as_int64() == std::vector<std::int64_t>{0, 200, 255, 1});

    auto s = read_npy(data_dir() / "np_scalar.npy");
    CHECK(s.shape.empty());
    CHECK(s.as_float() == std::vector<float>{2.5f});

    auto e = read_npy(data_dir() / "np_empty.npy");
    CHECK(e.shape == std::vector<std::size_t>{0, 3});
    CHECK(e.numel() == 0);
    CHECK(e.as_float().empty());
}

TEST_CASE("npy: layouts and dtypes we do not read are clear errors") {
    CHECK_ERROR(read_npy(data_dir() / "np_fortran.npy"), "np_fortran.npy", "Fortran");
    CHECK_ERROR(read_npy(data_dir() / "np_bigendian.npy"), "np_bigendian.npy", "big-endian");
    CHECK_ERROR(read_npy(data_dir() / "np_complex.npy"), "np_complex.npy", "unsupported .npy dtype '<c8'");
    CHECK_ERROR(read_npy(data_dir() / "missing.npy"), "missing.npy");
}

TEST_CASE("npy: hostile files") {
    TempDir dir;
    auto make = [&](std::string_view header, std::string_view data, int major = 1) {
        std::string s = "\x93NUMPY";
        s += char(major);
        s += char(0);
        s += char(header.size() & 0xff);
        s += char(header.size() >> 8);
        s += header;
        s += data;
        write_file(dir / "x.npy", s);
        return dir / "x.npy";
    };
    const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    CHECK(read_npy(make(ok, std::string(8, '\0'))).numel() == 2);

    write_file(dir / "x.npy", "not numpy");
    CHECK_ERROR(read_npy(dir / "x.npy"), "x.npy", "bad magic");
    write_file(dir / "x.npy", "");
    CHECK_ERROR(read_npy(dir / "x.npy"), "bad magic");
    CHECK_ERROR(read_npy(make(ok, std::string(7, '\0'))), "x.npy", "7 bytes", "needs 8");   // truncated
    CHECK_ERROR(read_npy(make(ok, std::string(9, '\0'))), "9 bytes");                       // trailing
    CHECK_ERROR(read_npy(make(ok, "", 9)), "unsupported .npy version 9");
    {  // header length beyond the file
        std::string s = "\x93NUMPY\x01";
        s += '\0';
        s += "\xff\x7f{}";
        write_file(dir / "x.npy", s);
        CHECK_ERROR(read_npy(dir / "x.npy"), "runs past the end");
    }
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'shape': (2,), }", "")), "missing");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (), }", "")),
                "repeated key 'descr'");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "")),
                "non-negative integer");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "")),
                "overflows");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "")),
                "overflows");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "")), "expected");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2,), }", "")), "True or False");
    CHECK_ERROR(read_npy(make("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } x", "")),
                "text after the dict");
    CHECK_ERROR(read_npy(make("{'descr': '<f4", "")), "unterminated string");
}

TEST_CASE("npy: writer output reads back, header padded to 64 bytes") {
    TempDir dir;
    std::vector<float> f(2 * 3 * 5);
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = float(i) * 0.25f - 1.0f;
    write_npy(dir / "f.npy", f.data(), {2, 3, 5});
    auto a = read_npy(dir / "f.npy");
    CHECK(a.dtype == NpyDType::F4);
    CHECK(a.shape == std::vector<std::size_t>{2, 3, 5});
    CHECK(a.as_float() == f);
    CHECK((std::filesystem::file_size(dir / "f.npy") - f.size() * 4) % 64 == 0);

    std::vector<std::int64_t> ids{5, -3, std::int64_t(1) << 50};
    write_npy(dir / "i.npy", ids.data(), {3});
    auto b = read_npy(dir / "i.npy");
    CHECK(b.dtype == NpyDType::I8);
    CHECK(b.shape == std::vector<std::size_t>{3});
    CHECK(b.as_int64() == ids);

    float one = 7.0f;
    write_npy(dir / "s.npy", &one, {});
    CHECK(read_npy(dir / "s.npy").shape.empty());
    write_npy(dir / "e.npy", static_cast<const float*>(nullptr), {0, 4});
    CHECK(read_npy(dir / "e.npy").shape == std::vector<std::size_t>{0, 4});

    CHECK_ERROR(write_npy(dir / "no_such_dir" / "x.npy", f.data(), {1}), "cannot write", "x.npy");
}

// numpy itself reads what we write (skipped when Debian's python3 with numpy is absent).
TEST_CASE("npy: numpy reads the writer's files") {
    if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
        MESSAGE("numpy not available; skipped");
        return;
    }
    TempDir dir;
    std::vector<float> f{1.5f, -2.0f, 3.25f, 0.0f, 1e-8f, -7.0f};
    write_npy(dir / "f.npy", f.data(), {2, 1, 3});
    std::vector<std::int64_t> ids{-1, 0, std::int64_t(1) << 60};
    write_npy(dir / "i.npy", ids.data(), {3});
    write_npy(dir / "s.npy", f.data(), {});
    const std::string script =
        "import numpy as np, sys; d = sys.argv[1]\n"
        "a = np.load(d + '/f.npy'); assert a.dtype == np.float32 and a.shape == (2, 1, 3), a\n"
        "assert a.ravel().tolist() == [1.5, -2.0, 3.25, 0.0, float(np.float32(1e-8)), -7.0]\n"
        "b = np.load(d + '/i.npy'); assert b.dtype == np.int64 and b.tolist() == [-1, 0, 2**60]\n"
        "c = np.load(d + '/s.npy'); assert c.shape == () and c == 1.5\n";
    write_file(dir / "check.py", script);
    const std::string cmd = "/usr/bin/python3 " + (dir / "check.py").string() + " " + dir.path.string();
    CHECK(std::system(cmd.c_str()) == 0);
}

"""Builds flamingo._flamingo from python/src/module.cpp, the image decoders
(src/image.cpp) and, on x86-64, the kernel tables (src/dispatch.cpp and one
translation unit per instruction set), the sources CMake's
FLAMINGO_BUILD_PYTHON builds.

Needs Debian's g++, python3-dev, pybind11 (python3-pybind11), libxsimd-dev,
libstb-dev and nlohmann-json3-dev. As the CMake build does by default, the
module is compiled for the x86-64 baseline at -O3 (at -O2 decoding measured
up to 2.7x slower, see bench/README.md) and calls the kernel set the CPU
offers, picked at import, so a wheel built here runs on any x86-64 CPU.
FLAMINGO_CXXFLAGS replaces "-O3" (e.g. "-O3 -march=native" to compile
everything for this CPU; the tables are still built and used).
"""
import glob
import os
import platform
import shlex

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
flags = shlex.split(os.environ.get("FLAMINGO_CXXFLAGS", "-O3"))

# Each kernel table is compiled with its own instruction set (as in
# CMakeLists.txt); sse2 first, so that the copy the linker keeps of any shared
# inline function runs on every CPU.
KERNEL_TABLES = [
    ("src/kernels_sse2.cpp", ["-mno-avx"]),
    ("src/kernels_avx2.cpp", ["-mno-avx512f", "-mavx2", "-mfma", "-mf16c"]),
    ("src/kernels_avxvnni.cpp", ["-mno-avx512f", "-mavx2", "-mfma", "-mf16c", "-mavxvnni"]),
    ("src/kernels_avx512.cpp", ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512dq",
                                "-mavx512vl", "-mavx512bf16", "-mavx512vnni"]),
]
dispatch = platform.machine().lower() in ("x86_64", "amd64")


class BuildExt(build_ext):
    """setuptools gives every source the same flags: the kernel tables are
    compiled here first, each with its own, and linked in as objects."""

    def build_extension(self, ext):
        if dispatch:
            objects = []
            for src, isa in KERNEL_TABLES:
                objects += self.compiler.compile(
                    [src], output_dir=self.build_temp, include_dirs=ext.include_dirs,
                    extra_postargs=["-std=c++20", "-fPIC", "-g0"] + flags + isa + ["-Wno-unused-parameter"],
                    depends=ext.depends)
            ext.extra_objects = objects
        super().build_extension(ext)


ext = Pybind11Extension(
    "flamingo._flamingo",
    # Relative paths: setuptools wants sources inside the project.
    ["python/src/module.cpp", "src/image.cpp"] + (["src/dispatch.cpp"] if dispatch else []),
    include_dirs=[os.path.join(here, "include"), os.path.join(here, "examples"), "/usr/include/stb"],
    # setuptools rebuilds only when a source or one of these is newer than the
    # module; without the headers, a second install after editing one would
    # keep the old module (build-setuptools/ persists in the tree).
    depends=sorted(glob.glob("include/flamingo/**/*.hpp", recursive=True))
    + ["examples/batch.hpp", "examples/eval.hpp"],
    cxx_std=20,
    extra_compile_args=flags + ["-Wno-unused-parameter"],
    define_macros=[("FLAMINGO_DISPATCH", None)] if dispatch else [],
)

setup(
    packages=["flamingo"],
    package_dir={"": "python"},
    package_data={"flamingo": ["py.typed", "*.pyi"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
    # Not build/: that is the CMake build directory.
    options={"build": {"build_base": "build-setuptools"}},
    zip_safe=False,
)

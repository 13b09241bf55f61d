"""Builds flamingo._flamingo from python/src/module.cpp and the image decoders
(src/image.cpp), the same sources CMake's FLAMINGO_BUILD_PYTHON builds.

Needs Debian's g++, python3-dev, pybind11 (python3-pybind11), libxsimd-dev,
libstb-dev and nlohmann-json3-dev. The module is compiled for this CPU
(-O3 -march=native, as the CMake build is by default; at -O2 decoding
measured up to 2.7x slower, see bench/README.md): a wheel built here may not
run on an older CPU. FLAMINGO_CXXFLAGS replaces "-O3 -march=native" (e.g.
"-O3" for a portable build).
"""
import glob
import os
import shlex

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

here = os.path.dirname(os.path.abspath(__file__))
flags = shlex.split(os.environ.get("FLAMINGO_CXXFLAGS", "-O3 -march=native"))

ext = Pybind11Extension(
    "flamingo._flamingo",
    # Relative paths: setuptools wants sources inside the project.
    ["python/src/module.cpp", "src/image.cpp"],
    include_dirs=[os.path.join(here, "include"), os.path.join(here, "examples"), "/usr/include/stb"],
    # setuptools rebuilds only when a source or one of these is newer than the
    # module; without the headers, a second install after editing one would
    # keep the old module (build-setuptools/ persists in the tree).
    depends=sorted(glob.glob("include/flamingo/**/*.hpp", recursive=True))
    + ["examples/batch.hpp", "examples/eval.hpp"],
    cxx_std=20,
    extra_compile_args=flags + ["-Wno-unused-parameter"],
)

setup(
    packages=["flamingo"],
    package_dir={"": "python"},
    package_data={"flamingo": ["py.typed", "*.pyi"]},
    ext_modules=[ext],
    cmdclass={"build_ext": build_ext},
    # Not build/: that is the CMake build directory.
    options={"build": {"build_base": "build-setuptools"}},
    zip_safe=False,
)

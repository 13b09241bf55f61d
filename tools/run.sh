#!/usr/bin/env bash
# One entry point for newcomers and CI: installs what is missing (Debian 12),
# builds, and runs.
#   tools/run.sh demo    build the flamingo command and run the few-shot demo
#   tools/run.sh test    build and run the test suite twice: optimised, then
#                        under AddressSanitizer + UndefinedBehaviorSanitizer
#   tools/run.sh bench   build and run the benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-demo}
jobs=$(nproc)

packages="cmake make g++ libxsimd-dev libstb-dev doctest-dev nlohmann-json3-dev libcpp-httplib-dev"
[ "$what" = bench ] && packages="$packages libbenchmark-dev libeigen3-dev"
# The tests also check the PyTorch reference, its fixtures and the converter.
[ "$what" = test ] && packages="$packages python3-torch python3-numpy python3-pil"
# ... and the Python package: its module (pybind11), its tests, and pip in a venv.
[ "$what" = test ] && packages="$packages pybind11-dev python3-pybind11 python3-dev python3-pytest python3-venv python3-setuptools python3-pip python3-distributed"
# ... and serve's chat page in a headless browser: Debian's Chromium, driven from
# Node.js by playwright-core (tests/browser; Node.js taken as found when it has npm);
# and `flamingo serve` from real clients: the OpenAI Node client (tests/serve/node) and curl.
[ "$what" = test ] && packages="$packages chromium curl"
[ "$what" = test ] && ! command -v npm >/dev/null && packages="$packages nodejs npm"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing:$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi

start=$SECONDS
stage() { echo "== [$(( (SECONDS - start) / 60 )) min] $*"; }  # CI logs show where the time goes

# Sanitizer builds at -O1 with line tables only: they compile in much less time
# than -O2 -g and still report file:line.
sanitize_flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")

build() {  # build DIR [cmake options...]
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}

case "$what" in
  demo)
    cmake -S . -B build >/dev/null
    cmake --build build -j"$jobs" --target demo flamingo_cli
    ./build/examples/demo
    ;;
  test)
    stage "npm packages of the browser and client tests"  # the exact versions of their package-lock.json
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
    npm ci --prefix tests/serve/node --no-audit --no-fund --loglevel=error
    # The default build picks its kernels at run time; its ctest also runs the
    # kernel suites with FLAMINGO_ISA=avxvnni, avx2 and sse2, so every set this machine
    # has is tested (and the tensor library's own code is built for the baseline).
    stage "optimised build and tests"
    build build -DFLAMINGO_BUILD_TESTS=ON -DFLAMINGO_NATIVE=OFF  # explicit: an old cache may say ON
    (cd build && ctest --output-on-failure -j"$jobs")
    # The README's install path: pip in a throwaway venv that sees Debian's
    # packages (offline, no build isolation), then an import and a generation.
    stage "pip install in a venv"
    venv=$(mktemp -d) root=$PWD
    /usr/bin/python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q --no-build-isolation --no-index .
    (cd "$venv" && "$venv/bin/python" -c "import flamingo, sys; m = flamingo.Model(sys.argv[1], threads=1); \
print(m.generate('<image>A photo of', [sys.argv[2]], max_new_tokens=8).text)" \
      "$root/models/shapes-flamingo" "$root/models/shapes-flamingo/examples/yellow_diamond.png")
    rm -rf "$venv"
    # Kernels and the tensor library again compiled for this CPU, as a
    # -DFLAMINGO_NATIVE=ON build (or a consumer with -march) calls them inline.
    stage "native kernels"
    cmake -S . -B build-native -DFLAMINGO_BUILD_TESTS=ON -DFLAMINGO_BUILD_EXAMPLES=OFF -DFLAMINGO_NATIVE=ON >/dev/null
    cmake --build build-native -j"$jobs" --target test_core test_linalg test_kernels
    for t in core linalg kernels; do build-native/tests/test_$t; done
    stage "AddressSanitizer + UndefinedBehaviorSanitizer"
    build build-sanitize -DFLAMINGO_BUILD_TESTS=ON -DFLAMINGO_NATIVE=OFF -DFLAMINGO_SANITIZE=ON "${sanitize_flags[@]}"
    (cd build-sanitize && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j"$jobs")
    # Many contexts on one model, and the executors under them, under ThreadSanitizer.
    stage "ThreadSanitizer"
    cmake -S . -B build-tsan -DFLAMINGO_BUILD_TESTS=ON -DFLAMINGO_BUILD_EXAMPLES=OFF -DFLAMINGO_NATIVE=OFF -DFLAMINGO_TSAN=ON \
          "${sanitize_flags[@]}" >/dev/null
    cmake --build build-tsan -j"$jobs" --target test_concurrency test_linalg
    TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_concurrency
    TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_linalg --test-case="*executor*,*user threads*,*parallel_for*,*nested*,*exception*"
    stage "done"
    ;;
  bench)
    build build -DFLAMINGO_BUILD_BENCH=ON
    for b in build/bench/bench_*; do "$b"; done
    ;;
  *)
    echo "usage: tools/run.sh demo|test|bench" >&2
    exit 2
    ;;
esac

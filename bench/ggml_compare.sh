#!/usr/bin/env bash
# Decoding with ggml's q8_0 and q4_0 (llama.cpp at a pinned commit, built
# outside the project tree; never in CI), on a random-weight LLaMA decoder of
# IDEFICS-9B's decoder shape (bench/ggml_llama_gguf.py). llama-bench's
# tokens/s (tg32, 2 threads) against the file's tensor bytes gives ggml's read
# rate, to set beside bench_e2e --idefics (bench/README.md, "ggml"). For equal
# shapes on our side: bench_e2e --make-idefics DIR --cross-layer-interval 32
# (the same LLaMA-7B decoder with one gated cross-attention block, 2.6% more
# weight bytes per token), then `flamingo quantize` to DIR/q8 and DIR/q4.
#   bench/ggml_compare.sh                  # LLAMA_CPP_REPO=URL or path, LLAMA_CPP_DIR, OUT to override
set -euo pipefail
pin=c392e5094deaf2d1a7c18683214f007fad3fe42b
dir=${LLAMA_CPP_DIR:-/tmp/llama.cpp}
repo=${LLAMA_CPP_REPO:-https://github.com/ggerganov/llama.cpp}
out=${OUT:-/tmp/ggml-compare}
here=$(cd "$(dirname "$0")" && pwd)
[ -d "$dir/.git" ] || git clone -q "$repo" "$dir"
git -C "$dir" checkout -q "$pin"
cmake -S "$dir" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$dir/build" --target llama-bench llama-quantize -j"$(nproc)"
mkdir -p "$out"
[ -f "$out/f16.gguf" ] || PYTHONPATH="$dir/gguf-py" /usr/bin/python3 "$here/ggml_llama_gguf.py" "$out/f16.gguf"
for t in q8_0 q4_0; do
  [ -f "$out/$t.gguf" ] || "$dir/build/bin/llama-quantize" "$out/f16.gguf" "$out/$t.gguf" "$t" >/dev/null 2>&1
done
for t in q4_0 q8_0; do
  ls -l "$out/$t.gguf"
  "$dir/build/bin/llama-bench" -m "$out/$t.gguf" -p 0 -n 32 -t 2 -r 3
done

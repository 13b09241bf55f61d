#!/usr/bin/python3
"""PyTorch's matrix products at the shapes of bench_gemm, for ratios in one run.

    /usr/bin/python3 bench/pytorch_gemm.py [--threads 2] [--seconds 1.0]

For each M x N x K: torch.matmul of an [M, K] by a [K, N] float32 matrix (the
system BLAS: OpenBLAS when installed, see below) and the same in bfloat16
(oneDNN with AVX512-BF16 where the CPU has it), and F.linear with a bf16
weight stored [N, K] as the models hold it. Repeated calls for about --seconds
each, after a warm-up; each column gives two GFLOP/s figures, best/mean: the
fastest single call, and all calls over all their time. The mean is Google
Benchmark's statistic (bench_gemm's GFLOP/s); bench_gemm's Linear rows also
report the best call (best_GFLOP/s), so compare best with best, mean with mean.

As bench/pytorch_e2e.py: Debian's torch takes its float32 products from
libblas.so.3, which may be the netlib reference (~25x slower); with Debian's
OpenBLAS installed the script restarts itself with it first on the library
path. OMP_WAIT_POLICY=PASSIVE keeps OpenMP and OpenBLAS threads from spinning
against each other on a 2-core machine.
"""

import os
import sys

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
if os.path.isdir(OPENBLAS) and not os.environ.get("FLAMINGO_GEMM_BLAS"):
    env = dict(os.environ, FLAMINGO_GEMM_BLAS="1")
    env["LD_LIBRARY_PATH"] = OPENBLAS + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import time

import torch
import torch.nn.functional as F

# bench_gemm's kGemmShapes (M x N x K) without the one-row product.
SHAPES = [(64, 2048, 8192), (320, 1024, 1024), (1024, 1024, 1024)]


def rate(fn, flops, seconds):
    """GFLOP/s of the fastest call and over all calls: "best/mean"."""
    for _ in range(3):
        fn()
    best = float("inf")
    spent = 0.0
    calls = 0
    while spent < seconds:
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, calls = min(best, dt), spent + dt, calls + 1
    return f"{flops / best * 1e-9:.1f}/{flops * calls / spent * 1e-9:.1f}"


def blas_name():
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.lower() and ".so" in line}
    return ", ".join(sorted(paths)) or "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"PyTorch {torch.__version__}, {a.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"BLAS: {blas_name()}, oneDNN: {torch.backends.mkldnn.is_available()}")
    print(f"{'M x N x K':<18}{'f32 matmul':>14}{'bf16 matmul':>14}{'bf16 linear':>14}   GFLOP/s, best/mean")
    with torch.no_grad():
        for M, N, K in SHAPES:
            flops = 2.0 * M * N * K
            a32, b32 = torch.randn(M, K), torch.randn(K, N)
            a16, b16 = a32.bfloat16(), b32.bfloat16()
            w16 = b32.t().contiguous().bfloat16()  # [N, K]
            f32 = rate(lambda: torch.matmul(a32, b32), flops, a.seconds)
            bm = rate(lambda: torch.matmul(a16, b16), flops, a.seconds)
            bl = rate(lambda: F.linear(a16, w16), flops, a.seconds)
            print(f"{f'{M}x{N}x{K}':<18}{f32:>14}{bm:>14}{bl:>14}")


if __name__ == "__main__":
    main()

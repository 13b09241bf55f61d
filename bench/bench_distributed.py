"""flamingo.distributed: the bundled model's few-shot evaluation on a
LocalCluster of 1 and of 2 single-threaded worker processes, side by side in
one run, and the per-task costs that bound scaling past one machine.

    PYTHONPATH=build/python:python /usr/bin/python3 bench/bench_distributed.py [--limit N]

Prints a Markdown table for bench/README.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dask.distributed import Client, LocalCluster

import flamingo
import flamingo.distributed as fd

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes-flamingo"
EVAL = ROOT / "tests" / "data" / "world" / "eval"


def noop(x):
    return x


def timed_eval(workers, limit, partition):
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        # Load the model on every worker first: model load is measured on its own.
        t0 = time.perf_counter()
        client.run(lambda: fd._model(fd.ModelSpec(str(MODEL))) and None)
        load = time.perf_counter() - t0
        t0 = time.perf_counter()
        table, outcomes = fd.run_eval(client, MODEL, EVAL, limit=limit, partition=partition)
        run = time.perf_counter() - t0
        # Scheduler round trip per task: many empty tasks, gathered as the runner gathers.
        n = 400
        t0 = time.perf_counter()
        futures = [client.submit(noop, i, pure=False) for i in range(n)]
        client.gather(futures)
        per_task = (time.perf_counter() - t0) / n
        return run, load, per_task, table, len(outcomes)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=0, help="records per task and shot count (0: all)")
    p.add_argument("--partition", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    a = p.parse_args()
    cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True,
                         text=True).stdout.strip()
    results = {1: [], 2: []}
    for _ in range(a.rounds):
        for w in (1, 2):
            results[w].append(timed_eval(w, a.limit, a.partition))
    t1 = min(r[0] for r in results[1])
    t2 = min(r[0] for r in results[2])
    n = results[1][0][4]
    assert results[1][0][3] == results[2][0][3], "1 and 2 workers gave different tables"
    load = statistics.median(r[1] for rs in results.values() for r in rs)
    per_task = statistics.median(r[2] for rs in results.values() for r in rs)
    t0 = time.perf_counter()
    flamingo.Model(str(MODEL))
    load_local = time.perf_counter() - t0
    print(f"CPU: {cpu}; {n} prompts, partitions of {a.partition}, best of {a.rounds} rounds")
    print("| workers | time (s) | prompts/s | speed-up |")
    print("|---|---:|---:|---:|")
    print(f"| 1 | {t1:.2f} | {n / t1:.0f} | 1.00x |")
    print(f"| 2 | {t2:.2f} | {n / t2:.0f} | {t1 / t2:.2f}x |")
    print()
    print(f"per prompt on one worker: {1000 * t1 / n:.2f} ms; scheduler round trip per task: "
          f"{1000 * per_task:.2f} ms; model load per worker (first task, cluster-wide): {load:.2f} s "
          f"(in-process flamingo.Model: {1000 * load_local:.0f} ms)")


if __name__ == "__main__":
    sys.exit(main())

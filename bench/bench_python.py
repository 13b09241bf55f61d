#!/usr/bin/python3
"""Model.generate (Python) against `flamingo generate` (the command) on the
bundled model, model load excluded.

    PYTHONPATH=build/python bench/bench_python.py [--cli build/examples/flamingo] [--runs 40]

Two figures per case, the fastest of --runs (other load on the machine only
ever adds time, and a call here is a few milliseconds), one thread, the same
prompt, images and options, Python calls and command processes interleaved:
- decoding, ms per step: the command's --verbose "generate: N steps in S s"
  against the same timer of the Python call (Generation.timings);
- the whole call, ms per generated token: the wall time of m.generate (files
  read, images encoded, prompt read, tokens generated) against the wall time
  of each command process minus the load time it reports (process start and
  exit count against the command: it cannot do without them).
"""
import argparse
import json
import re
import subprocess
import time
from pathlib import Path

import flamingo

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes-flamingo"
EX = MODEL / "examples"
PROMPT = ("<image>A photo of two red circles.<|endofchunk|><image>A photo of one striped blue star.<|endofchunk|>"
          "<image>A photo of")
IMAGES = [str(EX / "two_red_circles.png"), str(EX / "one_striped_blue_star.png"),
          str(EX / "three_green_triangles.png")]
CASES = [("greedy", {}, []), ("beam search, 3 beams", {"num_beams": 3}, ["--num-beams", "3"])]


def seconds(pattern, text):
    m = re.search(pattern, text, re.M)
    assert m, (pattern, text)
    return float(m.group(1))


def command(cli, extra, threads):
    args = [cli, "generate", "--model", str(MODEL), "--prompt", PROMPT, "--threads", str(threads), "--verbose",
            "--json", "--max-new-tokens", "32", *extra]
    for im in IMAGES:
        args += ["--image", im]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    steps = int(re.search(r"^generate: (\d+) steps", r.stderr, re.M).group(1))
    step_s = seconds(r"^generate: \d+ steps in ([0-9.e-]+) s", r.stderr)
    return wall - seconds(r"^load: ([0-9.e-]+) s", r.stderr), step_s / steps, json.loads(r.stdout)["tokens"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", default=str(ROOT / "build" / "examples" / "flamingo"))
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    print(f"module: {flamingo._flamingo.__file__}")
    m = flamingo.Model(MODEL, threads=a.threads)
    print("| case | tokens | decoding, Python ms/step | decoding, command ms/step | Python / command "
          "| whole call, Python ms/token | whole call, command ms/token |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, kw, extra in CASES:
        m.generate(PROMPT, IMAGES, max_new_tokens=32, **kw)  # warm up the context
        py_step, py_call, cli_step, cli_call = [], [], [], []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            g = m.generate(PROMPT, IMAGES, max_new_tokens=32, **kw)
            py_call.append(time.perf_counter() - t0)
            py_step.append(g.timings["step_seconds"] / g.timings["steps"])
            wall, step, tokens = command(a.cli, extra, a.threads)
            assert tokens == g.tokens, "the command and the module disagree"
            cli_step.append(step), cli_call.append(wall)
        n = len(g.tokens)
        ps, cs = min(py_step) * 1e3, min(cli_step) * 1e3
        pc, cc = min(py_call) / n * 1e3, min(cli_call) / n * 1e3
        print(f"| {name} | {n} | {ps:.3f} | {cs:.3f} | {ps / cs:.2f} | {pc:.3f} | {cc:.3f} |")


if __name__ == "__main__":
    main()

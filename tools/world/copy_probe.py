"""How much a model's answers lean on its examples' content: every
classification query of a query/support split (make_eval.py's `queries` and
`support`) at 1 and 4 shots, its examples all of the query's category
("same") or all of other categories ("other"), drawn from its pool.

RICES can only beat random examples where the examples' answers move the
model's: a model that reads the answer off the query picture alone scores
the same with either kind (EXPERIMENTS.md, "A twin of a blurred query").
Candidates are scored by `flamingo batch` (the C++ runtime):

    /usr/bin/python3 tools/world/copy_probe.py MODEL_DIR --data tests/data/world/eval [--flamingo BIN]

prints, per kind and shot count, the accuracy and the mean log-probability
of the right candidate (normalised over the candidates)."""

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common, tasks as T  # noqa: E402


def probe_records(data, seed=1, shots=(1, 4)):
    """Score records {id, kind, shots, prompt, images, candidates, answer}, two
    draws of each kind per query and shot count."""
    data = os.path.abspath(data)   # flamingo batch resolves relative paths from its input file
    pool = [json.loads(line) for line in open(os.path.join(data, "support", "pool.jsonl"))]
    queries = [json.loads(line) for line in open(os.path.join(data, "queries", "classify.jsonl"))]
    rng = random.Random(seed)
    out = []
    for q in (q for q in queries if q["shots"] == 1):
        entries = [p for p in pool if p["pool"] == q["pool"]]
        right = T.CLASSIFY_PREFIX + q["answer"]
        kinds = {"same": [p for p in entries if p["text"] == right],
                 "other": [p for p in entries if p["text"] != right]}
        for k in shots:
            for draw in range(2):
                for kind, choices in kinds.items():
                    if len(choices) < k:
                        sys.exit(f"{q['id']}: pool {q['pool']} has {len(choices)} entries of kind {kind!r}, "
                                 f"{k} needed")
                    ex = rng.sample(choices, k)
                    out.append({"id": f"{kind}-{k}-{draw}-{q['id']}", "kind": kind, "shots": k,
                                "prompt": "".join(f"{T.IMAGE}{e['text']}{T.EOC}" for e in ex) + T.IMAGE + q["query"],
                                "images": [os.path.join(data, "support", "images", e["image"]) for e in ex]
                                + [os.path.join(data, "queries", "images", q["images"][0])],
                                "candidates": q["candidates"], "answer": q["answer"]})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--data", required=True, help="a directory with queries/ and support/ (make_eval.py)")
    ap.add_argument("--flamingo", default=os.path.join(common.REPO, "build", "examples", "flamingo"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not os.access(args.flamingo, os.X_OK):
        sys.exit(f"{args.flamingo}: no flamingo program there (build the project, or give --flamingo BIN)")
    for part in ("support/pool.jsonl", "queries/classify.jsonl"):
        if not os.path.isfile(os.path.join(args.data, part)):
            sys.exit(f"{args.data}: no {part} (expected a query/support split written by make_eval.py)")
    recs = probe_records(args.data)
    with tempfile.TemporaryDirectory() as d:
        tasks, results = os.path.join(d, "tasks.jsonl"), os.path.join(d, "out.jsonl")
        with open(tasks, "w") as f:
            for r in recs:
                f.write(json.dumps({"id": r["id"], "task": "score", "prompt": r["prompt"], "images": r["images"],
                                    "candidates": r["candidates"]}) + "\n")
        run = subprocess.run([args.flamingo, "batch", "--model", args.model, "--in", tasks, "--out", results,
                              "--threads", str(args.threads)], stderr=subprocess.PIPE, text=True)
        out = [json.loads(line) for line in open(results)] if os.path.exists(results) else []
    failed = next((o for o in out if "error" in o), None)
    if failed:
        sys.exit(f"{failed['id']}: {failed['error']['message']}")
    if run.returncode:
        sys.exit(run.stderr.strip() or f"flamingo batch exited with {run.returncode}")
    scores = {o["id"]: {s["candidate"]: s["logprob"] for s in o["result"]["scores"]} for o in out}
    cells = {}
    for r in recs:
        lp = scores[r["id"]]
        top = max(lp.values())
        norm = top + math.log(sum(math.exp(v - top) for v in lp.values()))
        cell = cells.setdefault((r["kind"], r["shots"]), [0, 0.0, 0])
        cell[0] += max(lp, key=lp.get) == r["answer"]
        cell[1] += lp[r["answer"]] - norm
        cell[2] += 1
    print("| examples | shots | accuracy | mean log-prob of the right answer | n |")
    print("|---|---:|---:|---:|---:|")
    for (kind, k), (right, logp, n) in sorted(cells.items(), key=lambda c: (c[0][1], c[0][0] != "same")):
        print(f"| {kind} | {k} | {100 * right / n:.1f} | {logp / n:.4f} | {n} |")


if __name__ == "__main__":
    main()

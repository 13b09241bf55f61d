"""Write the held-out evaluation set of the synthetic world:
tests/data/world/eval/{caption,vqa,classify,binding}.jsonl and images/*.png.

  /usr/bin/python3 tools/world/make_eval.py [--out tests/data/world/eval] [--per-task 200]

Deterministic: the same arguments give the same files.
"""

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common, evalset  # noqa: E402
from world import tasks as T  # noqa: E402

EVAL_SEED = 20240601


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(common.REPO, "tests", "data", "world", "eval"))
    ap.add_argument("--per-task", type=int, default=200)
    ap.add_argument("--general", type=int, default=500, help="scenes shared by caption, vqa and classify")
    args = ap.parse_args()
    _, eval_names = T.name_split()
    if os.path.isdir(os.path.join(args.out, "images")):
        shutil.rmtree(os.path.join(args.out, "images"))
    eps = evalset.build(EVAL_SEED, args.per_task, args.general, eval_names)
    n = evalset.write(args.out, eps)
    size = sum(os.path.getsize(os.path.join(args.out, "images", f)) for f in os.listdir(os.path.join(args.out, "images")))
    print(f"{args.out}: {n} images ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

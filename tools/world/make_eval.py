"""Write the held-out evaluation set of the synthetic world:

  tests/data/world/eval/{caption,vqa,classify,binding}.jsonl   prompts with fixed examples
  tests/data/world/eval/queries/<task>.jsonl                   the same queries without examples
  tests/data/world/eval/support/pool.jsonl                     the support pool they draw examples from
  tests/data/world/eval/images/*.png                           every picture (queries/ and support/ link to it)
  tests/data/world/eval/dialogue/dialogue.jsonl, images/       conversations, judged turn by turn
  tests/data/world/eval/video/video.jsonl, images/             clips (a directory of frames each), few-shot
  tests/data/world/eval/binding3/binding3.jsonl, images/       fast binding of 3 made-up names, 3 and 6 shots
  tests/data/world/eval/binding3/{queries,support}/           its 6-shot queries drawing examples from their own

  /usr/bin/python3 tools/world/make_eval.py [--out tests/data/world/eval] [--per-task 200]
  /usr/bin/python3 tools/world/make_eval.py --dev --out /tmp/dev   # a development split

Deterministic: the same arguments give the same files. `--dev` draws the
same kinds of prompts from another seed, for decisions made while training
(step counts, data mix, capacity), so that the committed set is used once,
for the published table.
"""

import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common, eval_extra, evalset, video  # noqa: E402
from world import tasks as T  # noqa: E402

EVAL_SEED = 20240601
DEV_SEED = 20240602


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(common.REPO, "tests", "data", "world", "eval"))
    ap.add_argument("--per-task", type=int, default=200)
    ap.add_argument("--general", type=int, default=500, help="scenes shared by caption, vqa and classify")
    ap.add_argument("--dialogues", type=int, default=200, help="conversations of the dialogue set")
    ap.add_argument("--video", type=int, default=200, help="queries per video task")
    ap.add_argument("--binding3", type=int, default=200, help="queries per shot count of 3-way binding")
    ap.add_argument("--dev", action="store_true", help="the development split (another seed)")
    args = ap.parse_args()
    seed = DEV_SEED if args.dev else EVAL_SEED
    _, eval_names = T.name_split()
    if os.path.isdir(os.path.join(args.out, "images")):
        shutil.rmtree(os.path.join(args.out, "images"))
    eps = evalset.build(seed, args.per_task, args.general, eval_names)
    image_name = evalset.write(args.out, eps)
    pool = evalset.write_queries(args.out, seed, evalset.general_scenes(seed, args.general), eps, image_name)
    files = os.listdir(os.path.join(args.out, "images"))
    size = sum(os.path.getsize(os.path.join(args.out, "images", f)) for f in files)
    print(f"{args.out}: {len(files)} images ({size / 1e6:.2f} MB), {pool} support examples")
    write_dialogues(os.path.join(args.out, "dialogue"), seed, args.dialogues)
    write_video(os.path.join(args.out, "video"), seed, args.video)
    write_binding3(os.path.join(args.out, "binding3"), seed, args.binding3, eval_names)


def write_dialogues(out, seed, n):
    """The dialogue set: n conversations about fresh eval-split scenes (held-out
    pairs included), one JSON line each (eval_extra.dialogue_record)."""
    img_dir = os.path.join(out, "images")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    image_name = evalset.image_namer(img_dir)
    with open(os.path.join(out, "dialogue.jsonl"), "w") as f:
        for i, turns in enumerate(eval_extra.dialogues(seed, n)):
            f.write(json.dumps(eval_extra.dialogue_record(i, turns, image_name)) + "\n")
    print(f"{out}: {n} conversations, {len(image_name.names)} images")


def write_video(out, seed, n):
    """The video set: n queries per video task (video.eval_records), the
    clips' frames under images/NNNN/."""
    img_dir = os.path.join(out, "images")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    clip_name = video.clip_namer(img_dir)
    recs = video.eval_records(seed, n, clip_name)
    with open(os.path.join(out, "video.jsonl"), "w") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
    print(f"{out}: {len(recs)} prompts, {len(clip_name.names)} clips")


def write_binding3(out, seed, n, names):
    """3-way fast binding: n queries at 3 and 6 shots, three made-up names
    for three kinds (eval_extra.binding_records), with their own pictures."""
    img_dir = os.path.join(out, "images")
    if os.path.isdir(img_dir):
        shutil.rmtree(img_dir)
    image_name = evalset.image_namer(img_dir)
    recs = [dict(rec, images=[image_name(sc) for sc in rec["images"]])
            for rec in eval_extra.binding_records(seed, n, names, 3, [3, 6])]
    with open(os.path.join(out, "binding3.jsonl"), "w") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
    queries, pool = eval_extra.binding_support(recs, [3, 6])
    evalset.link_images(out)
    for path, lines in (("queries/binding3.jsonl", queries), ("support/pool.jsonl", pool)):
        with open(os.path.join(out, path), "w") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    print(f"{out}: {len(recs)} prompts, {len(image_name.names)} images; "
          f"{len(queries)} query records drawing from {len(pool)} support examples")


if __name__ == "__main__":
    main()

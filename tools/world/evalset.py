"""The held-out evaluation set: prompts at 0, 1, 2 and 4 shots for every task.

Each query comes with four examples; the k-shot prompt uses the first k of
them, so the shot counts differ only in how much context the query gets.
Query and example scenes are fresh renders (another seed than training) in
the eval split, where the held-out (shape, colour) pairs occur; binding uses
only the held-out made-up names.

A prompt is judged
  generate: greedy generation (stop at <|endofchunk|> or max_new_tokens); the
            text before the first <|endofchunk|>, stripped, must equal `answer`;
  score:    every candidate is appended to the prompt (tokenized on its own)
            and scored by the sum of its tokens' log-probabilities; the
            argmax must be `answer` (one of the candidates).
"""

import json
import os
import random

from . import scene as S
from . import tasks as T

SHOTS = [0, 1, 2, 4]
MAX_NEW_TOKENS = {"caption": 16, "vqa": 10, "binding": 8}


class Episode:
    """A query chunk and four example chunks of one task and style."""

    def __init__(self, task, query, examples, meta):
        self.task, self.query, self.examples, self.meta = task, query, examples, meta

    def prompt(self, shots):
        parts = [f"{T.IMAGE}{c.text}{T.EOC}" for c in self.examples[:shots]]
        parts.append(T.IMAGE + self.query.prefix)
        return "".join(parts)

    def scenes(self, shots):
        return [c.scene for c in self.examples[:shots]] + [self.query.scene]


def episodes(task, n, seed, general, names):
    """n episodes of a task. general: list of scenes shared by caption, vqa
    and classify episodes (queries distinct within a task)."""
    rng = random.Random(f"{seed}-{task}")
    out = []
    if task == "binding":
        source = T.random_scene_source("eval")
        for _ in range(n):
            kinds = T.binding_kinds(rng, "eval", 2)
            chosen = rng.sample(names, 2)
            order = [0, 1] if rng.random() < 0.5 else [1, 0]
            order += [0, 1] if rng.random() < 0.5 else [1, 0]
            q = rng.randrange(2)
            chunks = []
            for k in order + [q]:
                shape, colour, texture = kinds[k]
                sc = source(rng, shape=shape, colour=colour, texture=texture, count=1)
                chunks.append(T.Chunk(sc, T.BINDING_PREFIX, chosen[k] + "."))
            out.append(Episode(task, chunks[-1], chunks[:4], {"names": chosen, "query_kind": q}))
        return out
    queries = rng.sample(range(len(general)), n)
    for qi in queries:
        support = rng.sample([i for i in range(len(general)) if i != qi], 4)
        scenes = [general[i] for i in support] + [general[qi]]
        it = iter(scenes)
        doc = T.sample_document(rng, task, 5, lambda _rng, **kw: next(it), names, "eval")
        out.append(Episode(task, doc.chunks[-1], doc.chunks[:4], {"style": doc.style}))
    return out


def general_scenes(seed, n):
    rng = random.Random(f"{seed}-general")
    return [S.sample_scene(rng, "eval") for _ in range(n)]


def items(eps, shots_list=SHOTS, image_name=None):
    """Evaluation records (dicts) for every episode and shot count."""
    out = []
    for e_i, ep in enumerate(eps):
        for shots in shots_list:
            rec = {"id": f"{ep.task}-{e_i:03d}-{shots}shot", "task": ep.task, "shots": shots,
                   "prompt": ep.prompt(shots),
                   "images": [image_name(s) if image_name else s for s in ep.scenes(shots)],
                   "held_out_pair": ep.query.scene.held_out}
            if ep.task == "classify":
                attribute = ep.meta["style"]
                rec["judge"] = "score"
                rec["candidates"] = [" " + c for c in T.classify_candidates(ep.query.scene, attribute)]
                rec["answer"] = " " + ep.query.answer
                rec["attribute"] = attribute
            else:
                rec["judge"] = "generate"
                rec["answer"] = ep.query.answer
                rec["max_new_tokens"] = MAX_NEW_TOKENS[ep.task]
                if ep.task == "vqa":
                    rec["question"] = ep.query.prefix
            out.append(rec)
    return out


def build(seed, n_per_task, n_general, names):
    general = general_scenes(seed, n_general)
    return {task: episodes(task, n_per_task, seed, general, names) for task in T.TASKS}


def write(out_dir, eps_by_task):
    """JSONL per task plus the PNG images they name (each scene stored once)."""
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    names = {}

    def image_name(sc):
        if sc not in names:
            names[sc] = f"{len(names):04d}.png"
            S.save_png(S.render(sc), os.path.join(img_dir, names[sc]))
        return names[sc]

    for task, eps in eps_by_task.items():
        with open(os.path.join(out_dir, f"{task}.jsonl"), "w") as f:
            for rec in items(eps, image_name=image_name):
                f.write(json.dumps(rec) + "\n")
    return len(names)


def read(eval_dir):
    out = {}
    for task in T.TASKS:
        path = os.path.join(eval_dir, f"{task}.jsonl")
        if os.path.exists(path):
            with open(path) as f:
                out[task] = [json.loads(line) for line in f if line.strip()]
    return out

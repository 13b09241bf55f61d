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
        out.append(Episode(task, doc.chunks[-1], doc.chunks[:4], {"style": doc.style, "general": qi}))
    return out


def general_scenes(seed, n):
    rng = random.Random(f"{seed}-general")
    return [S.sample_scene(rng, "eval") for _ in range(n)]


def items(eps, shots_list=SHOTS, image_name=None, first=0):
    """Evaluation records (dicts) for every episode and shot count; episode i
    is query number first + i."""
    out = []
    for e_i, ep in enumerate(eps, start=first):
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
    """{task: episodes}; the general scenes are general_scenes(seed, n_general)."""
    general = general_scenes(seed, n_general)
    return {task: episodes(task, n_per_task, seed, general, names) for task in T.TASKS}


def image_namer(img_dir):
    """image_name(scene) -> "NNNN.png": each scene rendered into img_dir once,
    numbered in the order first asked for (image_name.names: scene -> name)."""
    os.makedirs(img_dir, exist_ok=True)
    names = {}

    def image_name(sc):
        if sc not in names:
            names[sc] = f"{len(names):04d}.png"
            S.save_png(S.render(sc), os.path.join(img_dir, names[sc]))
        return names[sc]
    image_name.names = names
    return image_name


def write(out_dir, eps_by_task):
    """JSONL per task plus the PNG images they name (each scene stored once)."""
    image_name = image_namer(os.path.join(out_dir, "images"))

    for task, eps in eps_by_task.items():
        with open(os.path.join(out_dir, f"{task}.jsonl"), "w") as f:
            for rec in items(eps, image_name=image_name):
                f.write(json.dumps(rec) + "\n")
    return image_name


# ---- query records and the support pool (random and RICES examples) -------------------

EVAL_TASKS = ["caption", "vqa", "classify", "binding"]


def pool_name(task, ep, e_i):
    """The part of the support pool a query draws its examples from. A prompt
    keeps one answer style (classify: one category attribute) and only the
    examples show it, so the style belongs to the task's definition, as a
    dataset's answer format does: a query's examples come from the examples
    written in its style. Binding's names are made up per query, so no shared
    pool can hold them: each binding query draws from its own four examples
    (two of each name)."""
    if task == "binding":
        return f"binding-{e_i:03d}"
    return f"{task}-{ep.meta['style']}"


def query_items(eps, image_name, shots_list=SHOTS):
    """Query records: the fields of `items` with "query" (the query chunk's
    text before the answer) in place of "prompt", "images" holding only the
    query picture, and "pool" naming where its examples come from."""
    out = []
    for e_i, ep in enumerate(eps):
        for rec in items([ep], shots_list, image_name, first=e_i):
            rec["query"] = ep.query.prefix
            rec["pool"] = pool_name(ep.task, ep, e_i)
            rec["images"] = rec["images"][-1:]
            del rec["prompt"]
            out.append(rec)
    return out


def support_pool(seed, general, eps_by_task, image_name):
    """Support entries {"pool", "image", "text"} for every query record.
    caption, vqa, classify: every general scene that is not one of the task's
    queries, once in each style (vqa: one question per scene and style, drawn
    at random), so the pool is disjoint from the queries and shares their
    image files. binding: each query's own four examples."""
    rng = random.Random(f"{seed}-pool")
    out = []
    for task in EVAL_TASKS:
        eps = eps_by_task[task]
        if task == "binding":
            for e_i, ep in enumerate(eps):
                for c in ep.examples:
                    out.append({"pool": pool_name(task, ep, e_i), "image": image_name(c.scene), "text": c.text})
            continue
        queries = {ep.meta["general"] for ep in eps}
        styles = {"caption": range(T.CAPTION_STYLES), "vqa": range(T.VQA_STYLES),
                  "classify": T.CLASSIFY_ATTRIBUTES}[task]
        for style in styles:
            for i, sc in enumerate(general):
                if i in queries:
                    continue
                if task == "caption":
                    text = T.caption(sc, style)
                elif task == "vqa":
                    q = rng.choice(T.QUESTION_TYPES)
                    text = T.vqa_prefix(q) + " " + T.vqa_answer(sc, q, style)
                else:
                    text = T.CLASSIFY_PREFIX + " " + sc.attr(style)
                out.append({"pool": f"{task}-{style}", "image": image_name(sc), "text": text})
    return out


def link_images(out_dir):
    """<out_dir>/queries and <out_dir>/support, each with an `images` link to <out_dir>/images."""
    for sub in ("queries", "support"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
        link = os.path.join(out_dir, sub, "images")
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", "images"), link)


def write_queries(out_dir, seed, general, eps_by_task, image_name):
    """<out_dir>/queries/<task>.jsonl and <out_dir>/support/pool.jsonl; both
    name pictures in <out_dir>/images (each holds an `images` link to it)."""
    link_images(out_dir)
    for task in EVAL_TASKS:
        with open(os.path.join(out_dir, "queries", f"{task}.jsonl"), "w") as f:
            for rec in query_items(eps_by_task[task], image_name):
                f.write(json.dumps(rec) + "\n")
    pool = support_pool(seed, general, eps_by_task, image_name)
    with open(os.path.join(out_dir, "support", "pool.jsonl"), "w") as f:
        for e in pool:
            f.write(json.dumps(e) + "\n")
    return len(pool)


def read_pool(support_dir):
    with open(os.path.join(support_dir, "pool.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def read(eval_dir):
    """{file stem: records} of every .jsonl file in eval_dir, as `flamingo eval --data` reads it."""
    out = {}
    for name in sorted(os.listdir(eval_dir)):
        if name.endswith(".jsonl"):
            with open(os.path.join(eval_dir, name)) as f:
                out[name[:-len(".jsonl")]] = [json.loads(line) for line in f if line.strip()]
    return out

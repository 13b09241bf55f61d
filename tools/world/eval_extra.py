"""Evaluation records beyond tools/world/evalset.py (same record format, so
evaluate.probe_accuracy and `flamingo eval` judge them alike): fast binding
with 2 or 3 made-up names at any number of shots. Used for the development
split while training (development names: tasks.dev_names())."""

import random

from . import tasks as T


def binding_episode(rng, names, kinds_n, shots):
    """shots examples naming kinds_n kinds (each kind at least once when shots
    allow, the rest at random, in random order), then a query of one kind."""
    kinds = T.binding_kinds(rng, "eval", kinds_n)
    chosen = rng.sample(names, kinds_n)
    order = list(range(kinds_n))[:shots] + [rng.randrange(kinds_n) for _ in range(shots - kinds_n)]
    rng.shuffle(order)
    q = rng.randrange(kinds_n) if shots >= kinds_n else rng.choice(order or [0])
    source = T.random_scene_source("eval")
    chunks = []
    for k in order + [q]:
        shape, colour, texture = kinds[k]
        sc = source(rng, shape=shape, colour=colour, texture=texture, count=1)
        chunks.append(T.Chunk(sc, T.BINDING_PREFIX, chosen[k] + "."))
    return chunks


def binding_records(seed, n, names, kinds_n, shots_list):
    """n episodes per shot count; task 'binding' (2 kinds) or 'binding3'."""
    task = "binding" if kinds_n == 2 else f"binding{kinds_n}"
    rng = random.Random(f"{seed}-{task}")
    out = []
    for shots in shots_list:
        for i in range(n):
            chunks = binding_episode(rng, names, kinds_n, shots)
            prompt = "".join(f"{T.IMAGE}{c.text}{T.EOC}" for c in chunks[:-1]) + T.IMAGE + chunks[-1].prefix
            out.append({"id": f"{task}-{i:03d}-{shots}shot", "task": task, "shots": shots, "prompt": prompt,
                        "images": [c.scene for c in chunks], "held_out_pair": chunks[-1].scene.held_out,
                        "judge": "generate", "answer": chunks[-1].answer, "max_new_tokens": 8})
    return out

"""Evaluation records beyond tools/world/evalset.py (same record format, so
evaluate.probe_accuracy and `flamingo eval` judge them alike): fast binding
with 2 or 3 made-up names at any number of shots, and conversations judged
turn by turn. Used for the development split while training (development
names: tasks.dev_names()) and for the dialogue evaluation set."""

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


def binding_support(records, shots_list):
    """Query records and support pool ({"pool", "image", "text"} entries, as
    evalset.write_queries writes them) of a fixed binding set: the queries of
    its prompts with the most shots, each drawing from a pool of its own
    examples (`<task>-NNN`), since the made-up names exist only inside one
    query's prompt; a query record per count in shots_list."""
    most = max(r["shots"] for r in records)
    queries, pool = [], []
    for rec in records:
        if rec["shots"] != most:
            continue
        name = rec["id"].rsplit("-", 1)[0]
        *examples, query = rec["prompt"].split(T.EOC)
        for image, text in zip(rec["images"], examples):
            pool.append({"pool": name, "image": image, "text": text[len(T.IMAGE):]})
        for shots in shots_list:
            q = {k: v for k, v in rec.items() if k != "prompt"}
            q.update(id=f"{name}-{shots}shot", shots=shots, images=rec["images"][-1:],
                     query=query[len(T.IMAGE):], pool=name)
            queries.append(q)
    return queries, pool


DIALOGUE_KINDS = ["first question", "follow-up", "new picture"]


def dialogues(seed, n, split="eval"):
    """n conversations (tasks.sample_dialogue) of fresh scenes."""
    rng = random.Random(f"{seed}-dialogue")
    source = T.random_scene_source(split)
    return [T.sample_dialogue(rng, source) for _ in range(n)]


def dialogue_record(i, turns, image_name=lambda sc: sc):
    """A conversation as `flamingo eval` reads it: {"id", "task", "turns":
    [{"user", "images", "answer", "held_out_pair"}]}, judged turn by turn."""
    return {"id": f"dialogue-{i:03d}", "task": "dialogue", "max_new_tokens": 10,
            "turns": [{"user": user, "images": [image_name(sc)] if sc is not None else [], "answer": answer,
                       "held_out_pair": (sc if sc is not None else turns[0][0]).held_out} for sc, user, answer in turns]}


def turn_records(rec):
    """One generate record per turn of a dialogue record: the conversation so
    far in the chat template, earlier turns with their expected answers, ending
    in the generation prompt, as `flamingo chat` renders it. Task "dialogue:
    <kind>" (DIALOGUE_KINDS), shots = the number of earlier turns."""
    out, history, images = [], "", []
    for t, turn in enumerate(rec["turns"]):
        images += turn["images"]
        history += T.CHAT_USER.format(content=T.IMAGE * len(turn["images"]) + turn["user"])
        kind = DIALOGUE_KINDS[0] if t == 0 else DIALOGUE_KINDS[2] if turn["images"] else DIALOGUE_KINDS[1]
        out.append({"id": f"{rec['id']}-turn{t + 1}", "task": f"{rec['task']}: {kind}", "shots": t,
                    "prompt": history + T.CHAT_GENERATION_PROMPT, "images": list(images),
                    "held_out_pair": turn["held_out_pair"], "judge": "generate", "answer": turn["answer"],
                    "max_new_tokens": rec["max_new_tokens"]})
        history += T.CHAT_ASSISTANT.format(content=turn["answer"])
    return out


def dialogue_records(seed, n, split="eval"):
    """Per-turn records (turn_records) of n fresh conversations, pictures as scenes."""
    return [r for i, turns in enumerate(dialogues(seed, n, split)) for r in turn_records(dialogue_record(i, turns))]

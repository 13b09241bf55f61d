"""Reproduce the bundled model end to end from a seed: tokenizer, contrastive
vision pre-training, language-model pre-training, the Flamingo stage, and the
model directory (bf16 weights).

  /usr/bin/python3 tools/world/train.py [--out models/shapes-flamingo] [--seed 0] [--threads 2]

Intermediate results (image pool, stage checkpoints) go to --work (default
/tmp/world-work); a rerun reuses the finished stages found there unless
--fresh is given. Training runs in bfloat16 autocast (oneDNN); everything the
model directory describes is computed from bf16-rounded frozen weights.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common  # noqa: E402

if __name__ == "__main__":
    common.fast_blas_reexec()

import torch  # noqa: E402

import flamingo_ref as ref  # noqa: E402
from world import data, evalset, evaluate, stages  # noqa: E402
from world import scene as S  # noqa: E402
from world import tasks as T  # noqa: E402

log = stages.log


def probe_set(seed, per_task, names):
    """A small in-memory evaluation (other seed than the shipped set) to follow training."""
    eps = evalset.build(f"probe-{seed}", per_task, 3 * per_task, names)
    recs = []
    for task in T.TASKS:
        recs += evalset.items(eps[task])
    return recs


def format_probe(acc):
    lines = []
    for task in T.TASKS:
        cells = " ".join(f"{s}:{100 * acc[(task, s)]:5.1f}" for s in evalset.SHOTS if (task, s) in acc)
        lines.append(f"    {task:9s} {cells}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "shapes-flamingo"))
    ap.add_argument("--work", default="/tmp/world-work")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: default 1)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished stages in --work")
    ap.add_argument("--pool", type=int, default=40000, help="rendered training images")
    ap.add_argument("--clip-steps", type=int, default=1500)
    ap.add_argument("--lm-steps", type=int, default=2000)
    ap.add_argument("--describe", type=float, default=0.7,
                    help="share of language-model documents that describe their pictures in words")
    ap.add_argument("--lm-binding", type=float, default=0.25, help="share of binding documents in the language-model text")
    ap.add_argument("--flamingo-steps", type=int, default=8000)
    ap.add_argument("--probe-every", type=int, default=500)
    ap.add_argument("--probe-size", type=int, default=50)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    seed = args.seed
    train_names, eval_names = T.training_names(), T.name_split()[1]

    def cached(name, build):
        path = os.path.join(args.work, name)
        if os.path.exists(path) and not args.fresh:
            log(f"reusing {path}")
            return torch.load(path)
        t = time.time()
        obj = build()
        torch.save(obj, path)
        log(f"{name} done in {time.time() - t:.0f}s")
        return obj

    tok = stages.train_tokenizer(seed)
    tok_path = os.path.join(args.work, "tokenizer.json")
    tok.save(tok_path)
    log(f"tokenizer: {len(tok)} tokens, {len(tok.merges)} merges")

    t = time.time()
    pool = data.ImagePool.build(args.pool, seed + 1, processes=args.threads, cache_dir=args.work)
    log(f"image pool: {len(pool.scenes)} scenes ({time.time() - t:.0f}s)")

    def clip():
        vit, _text = stages.train_clip(pool, tok, args.clip_steps, seed + 2)
        stages.round_bf16_(vit)
        return vit.state_dict()

    vit_state = cached(f"vit-{seed}-{args.clip_steps}.pt", clip)

    def lm():
        model = stages.train_lm(tok, train_names, args.lm_steps, seed + 3, describe_share=args.describe,
                                binding_share=args.lm_binding)
        stages.round_bf16_(model)
        return model.state_dict()

    lm_tag = f"{args.lm_steps}-d{args.describe}-b{args.lm_binding}"
    lm_state = cached(f"lm-{seed}-{lm_tag}.pt", lm)

    vit = stages.make_vit()
    vit.load_state_dict(vit_state)
    lang = stages.make_lm(tok)
    lang.load_state_dict(lm_state)
    model = stages.assemble(tok, vit, lang)

    t = time.time()
    feats = cached(f"feats-{seed}-{args.clip_steps}-{args.pool}.pt",
                   lambda: stages.vision_tokens(model.vision_encoder, pool.images))
    log(f"vision tokens {tuple(feats.shape)} ({time.time() - t:.0f}s)")

    probe_recs = probe_set(seed, args.probe_size, eval_names)
    probe_cache = evaluate.ImageCache(model, S.render)

    def probe(m):
        t = time.time()
        acc = evaluate.probe_accuracy(m, tok, probe_recs, probe_cache.tokens)
        log(f"probe ({time.time() - t:.0f}s):\n" + format_probe(acc))

    def flamingo():
        stages.train_flamingo(model, tok, pool, feats, train_names, args.flamingo_steps, seed + 4,
                              probe=(args.probe_every, probe))
        stages.round_bf16_(model)
        return model.state_dict()

    state = cached(f"flamingo-{seed}-{args.clip_steps}-{lm_tag}-{args.flamingo_steps}.pt", flamingo)
    model.load_state_dict(state)
    model.eval()
    probe(model)

    export(model, tok, args.out)
    log(f"total {time.time() - t_start:.0f}s")


# Example pictures shipped beside the model, for the demo (fresh renders, not
# in the training pool). name -> scene
EXAMPLES = {
    "two_red_circles": S.Scene("circle", "red", "solid", "large", 2, "left", seed=101),
    "one_striped_blue_star": S.Scene("star", "blue", "striped", "large", 1, "top", seed=102),
    "three_green_triangles": S.Scene("triangle", "green", "solid", "small", 3, "bottom", seed=103),
    "four_dotted_orange_squares": S.Scene("square", "orange", "dotted", "small", 4, "right", seed=104),
    "purple_heart_a": S.Scene("heart", "purple", "solid", "large", 1, "left", seed=105),
    "yellow_diamond": S.Scene("diamond", "yellow", "striped", "large", 1, "right", seed=106),
    "purple_heart_b": S.Scene("heart", "purple", "solid", "small", 1, "top", seed=107),
}


def demo_prompts():
    """The demo's prompts over the example pictures: captioning, a question and
    fast binding with two held-out made-up names, each with the answer the
    examples call for."""
    E = EXAMPLES
    cap = lambda k: T.caption(E[k], 0)
    q = lambda k, qtype: f"{T.vqa_prefix(qtype)} {T.vqa_answer(E[k], qtype, 0)}"
    held_out = T.name_split()[1]
    dax = held_out[0]
    wug = next(n for n in held_out if n[0] != dax[0] and n[1] != dax[1])
    chunk = lambda text: f"{T.IMAGE}{text}{T.EOC}"
    return [
        {"title": "Captioning, 2 examples",
         "images": ["two_red_circles.png", "one_striped_blue_star.png", "three_green_triangles.png"],
         "prompt": chunk(cap("two_red_circles")) + chunk(cap("one_striped_blue_star")) + T.IMAGE,
         "expected": cap("three_green_triangles"), "max_new_tokens": 16},
        {"title": "Question answering, 2 examples",
         "images": ["two_red_circles.png", "one_striped_blue_star.png", "four_dotted_orange_squares.png"],
         "prompt": chunk(q("two_red_circles", "count")) + chunk(q("one_striped_blue_star", "colour"))
         + f"{T.IMAGE}{T.vqa_prefix('count')}",
         "expected": T.vqa_answer(E["four_dotted_orange_squares"], "count", 0), "max_new_tokens": 8},
        {"title": f"Fast binding: names made up in the prompt ('{dax}', '{wug}')",
         "images": ["purple_heart_a.png", "yellow_diamond.png", "purple_heart_b.png"],
         "prompt": chunk(T.binding_text(dax)) + chunk(T.binding_text(wug)) + f"{T.IMAGE}{T.BINDING_PREFIX}",
         "expected": f"{dax}.", "max_new_tokens": 8},
    ]


def write_examples(out):
    os.makedirs(os.path.join(out, "examples"), exist_ok=True)
    for name, sc in EXAMPLES.items():
        S.save_png(S.render(sc), os.path.join(out, "examples", name + ".png"))
    with open(os.path.join(out, "examples", "demo.json"), "w") as f:
        json.dump(demo_prompts(), f, indent=1)
        f.write("\n")


def export(model, tok, out):
    if os.path.isdir(out):
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    ref.save_model_dir(model, out, tok.to_json(), dtype="bf16")
    write_examples(out)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)))
    log(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

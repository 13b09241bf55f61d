"""What a model's frozen vision encoder shows of a scene, by linear probes
(EXPERIMENTS.md, "What the vision encoder shows"): a softmax regression per
attribute on its patch tokens (their mean beside all 64 flattened: what is
anywhere, and what is where), fitted on train-split
scenes (no held-out (shape, colour) pair) and scored on fresh train-split
scenes and on scenes of the held-out pairs. A probe that holds on the
training pairs and drops on the held-out ones says the encoder's features
tie shape to colour, which no later stage can take apart linearly.

Then what RICES would retrieve: for the same test scenes, the share of their
4 most similar scenes (cosine of the pooled CLIP embeddings) in a pool of
1,500 train-split scenes that share the query's shape, colour, count or
texture. A held-out pair's neighbours can share its shape or its colour,
never both.

    /usr/bin/python3 tools/world/vit_probe.py MODEL_DIR|VIT_FILE [--fit 6000] [--test 1000]

VIT_FILE is a vision-encoder stage file of train.py's --work (vit-*.pt), to
probe a new encoder before any Flamingo stage is trained on it."""

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import flamingo_ref as ref  # noqa: E402
from world import common, scene as S, stages  # noqa: E402


def held_out_scenes(rng, n):
    pairs = sorted(S.HELD_OUT_PAIRS)
    return [S.sample_scene(rng, "eval", **dict(zip(("shape", "colour"), rng.choice(pairs)))) for _ in range(n)]


def tokens(vit, scenes):
    with torch.no_grad():
        t = stages.vision_tokens(vit, np.stack([S.render(s) for s in scenes])).float()
    return torch.cat([t.mean(1), t.flatten(1)], 1)


def probe(x_fit, y_fit, x_test, classes, steps=300, lr=0.01, decay=1e-4):
    """Predicted class indices of x_test after a standardised softmax regression."""
    mu, sd = x_fit.mean(0), x_fit.std(0) + 1e-5
    x_fit, x_test = (x_fit - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(x_fit.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (F.cross_entropy(x_fit @ w + b, y_fit) + decay * (w ** 2).sum()).backward()
        opt.step()
    return (x_test @ w + b).argmax(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a model directory, or a vit-*.pt stage file of train.py's --work")
    ap.add_argument("--fit", type=int, default=6000, help="train-split scenes the probes are fitted on")
    ap.add_argument("--test", type=int, default=1000, help="test scenes of each kind")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if os.path.isfile(args.model):
        vit = stages.make_vit()
        try:
            vit.load_state_dict(torch.load(args.model, weights_only=True))
        except Exception as e:  # noqa: BLE001 - any unreadable or mismatched file is the same error to the user
            # tensors only: a file's pickled code is never run
            sys.exit(f"{args.model}: not a vision-encoder stage file (train.py's vit-*.pt; {type(e).__name__})")
        vit.eval()
    elif os.path.isfile(os.path.join(args.model, "config.json")):
        vit = ref.load_model_dir(args.model, torch.float32).vision_encoder.eval()
    else:
        sys.exit(f"{args.model}: neither a model directory (no config.json) nor a file")
    rng = random.Random(args.seed)
    fit = [S.sample_scene(rng, "train") for _ in range(args.fit)]
    seen = [S.sample_scene(rng, "train") for _ in range(args.test)]
    held = held_out_scenes(rng, args.test)
    x_fit, x_seen, x_held = tokens(vit, fit), tokens(vit, seen), tokens(vit, held)
    print("| attribute | training pairs | held-out pairs |\n|---|---:|---:|")
    for attr in ("shape", "colour", "count", "texture", "size"):
        classes = sorted({s.attr(attr) for s in fit + seen + held}, key=str)
        label = lambda scenes: torch.tensor([classes.index(s.attr(attr)) for s in scenes])  # noqa: E731
        pred = probe(x_fit, label(fit), torch.cat([x_seen, x_held]), len(classes))
        ok = (pred == label(seen + held)).float() * 100
        print(f"| {attr} | {ok[:len(seen)].mean():.1f} | {ok[len(seen):].mean():.1f} |", flush=True)
    neighbours(vit, rng)


def neighbours(vit, rng, pool_size=1500, queries=300, k=4):
    pool = [S.sample_scene(rng, "train") for _ in range(pool_size)]
    seen = [S.sample_scene(rng, "train") for _ in range(queries)]
    held = held_out_scenes(rng, queries)

    def embed(scenes):
        with torch.no_grad():
            return F.normalize(vit(common.preprocess(np.stack([S.render(s) for s in scenes])))[0], dim=-1)

    keys = embed(pool)
    attrs = ("shape", "colour", "count", "texture")
    print(f"\n| RICES's {k} nearest share the query's | " + " | ".join(attrs) + " |\n|---|" + "---:|" * len(attrs))
    for name, q in (("training pairs", seen), ("held-out pairs", held)):
        top = (embed(q) @ keys.t()).topk(k, dim=1).indices.tolist()
        cells = [100 * np.mean([[pool[j].attr(a) == s.attr(a) for j in row] for s, row in zip(q, top)]) for a in attrs]
        print(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Experiment K1/K2 (EXPERIMENTS.md): fast binding through the frozen decoder's
own binding in text. Binding documents in Flamingo's format, with a second
loss beside the one on the repeated names: the decoder's stream on the
picture prompt, at "This is a" and at each name's first token, at the inputs
of decoder layers 1-4 (the matching heads are in layer 4), is pulled towards
its stream on the same document written as text, each picture described by
its kind ("a red circle\\nThis is a dax.\\n"), which a decoder that binds in
text (B2's) answers right. The frozen decoder is its own teacher.
`train.py --flamingo-stream WEIGHT SHARE` is the same loss inside the
Flamingo stage (on the pool's pictures, under the stage's bfloat16 autocast,
beside the other tasks); this script is the run that found it.

Trains the Perceiver and the cross-attention only, on binding documents
alone (a focused phase: the other tasks need the mix afterwards), and
prints the development split's binding rows (50 queries per cell).

    /usr/bin/python3 tools/world/distill_binding.py --model DIR --init DIR --out DIR [--steps N]

--model: a model directory whose decoder binds in text (train.py's export of
a Flamingo stage on B2's decoder; its Perceiver and cross-attention are not
used); --init: the model directory to take the Perceiver, the cross-attention
and the <image> / <|endofchunk|> rows from (the shipped model, or an earlier
run of this script)."""
import argparse
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import flamingo_ref as ref  # noqa: E402
from world import bpe, common, data, eval_extra, evalset, evaluate, scene as S, stages, tasks as T, train  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--init", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--weight", type=float, default=1.0, help="weight of the stream loss")
    ap.add_argument("--seed", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = ref.load_model_dir(args.model, torch.float32)
    tok = bpe.Tokenizer.load(os.path.join(args.model, "tokenizer.json"))
    stages.warm_start(model, tok, ref.load_state_dir(args.init))
    lang = model.lang_encoder

    for p in model.parameters():
        p.requires_grad_(False)
    xattn = [layer.gated_cross_attn_layer for layer in lang.layers if layer.gated_cross_attn_layer is not None]
    for m in [model.perceiver] + xattn:
        m.requires_grad_(True)
    gates = [b.attn_gate for b in xattn] + [b.ff_gate for b in xattn]
    rest = [p for m in [model.perceiver] + xattn for p in m.parameters() if all(p is not g for g in gates)]
    opt = torch.optim.AdamW([{"params": rest, "lr": 1e-3, "weight_decay": 0.1},
                             {"params": gates, "lr": 1e-2, "weight_decay": 0.0}], eps=1e-10)
    stream = []
    hooks = [layer.decoder_layer.register_forward_pre_hook(lambda m, a: stream.append(a[0])) for layer in lang.layers]

    rng = random.Random(args.seed)
    names, source = T.training_names(), T.random_scene_source("train")
    eot, media_id = tok.token_id(T.EOT), tok.token_id(T.IMAGE)
    t0 = time.time()
    for step in range(args.steps):
        docs = [T.sample_document(rng, "binding", rng.randint(2, 5), source, names) for _ in range(args.batch)]
        pairs = [data.binding_pair(tok, d) for d in docs]
        s_ids = torch.as_tensor(data.pad([p[0] for p in pairs], eot))
        t_ids = torch.as_tensor(data.pad([p[1] for p in pairs], eot))
        with torch.no_grad():
            _, vis = model.vision_encoder(common.preprocess(np.stack([S.render(c.scene) for d in docs
                                                                      for c in d.chunks])))
        feats = torch.zeros(len(docs), max(len(d.chunks) for d in docs), *vis.shape[1:])
        k = 0
        for i, d in enumerate(docs):
            feats[i, :len(d.chunks)] = vis[k:k + len(d.chunks)]
            k += len(d.chunks)
        # the teacher: the described text through the decoder alone
        saved = [layer.gated_cross_attn_layer for layer in lang.layers]
        for layer in lang.layers:
            layer.gated_cross_attn_layer = None
        stream.clear()
        with torch.no_grad():
            lang(t_ids, None, None)
        teacher = list(stream)
        for layer, g in zip(lang.layers, saved):
            layer.gated_cross_attn_layer = g
        stream.clear()
        logits = model.forward_media(model.perceiver(feats[:, :, None]), s_ids)
        mask = torch.zeros(s_ids.shape)
        for i, p in enumerate(pairs):
            mask[i, :len(p[0])] = 1
            mask[i, p[4]] = 0
        mask[s_ids == media_id] = 0
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), s_ids[:, 1:].reshape(-1), reduction="none")
        m = mask[:, 1:].reshape(-1)
        names_loss = (ce * m).sum() / m.sum()
        stream_loss = 0
        for layer in stages.STREAM_LAYERS:
            s = torch.cat([stream[layer][i, p[2]] for i, p in enumerate(pairs)])
            t = torch.cat([teacher[layer][i, p[3]] for i, p in enumerate(pairs)])
            stream_loss = stream_loss + ((s - t) ** 2).mean() / (t ** 2).mean()
        loss = names_loss + args.weight * stream_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rest + gates, 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step} names {names_loss.item():.4f} stream {stream_loss.item():.4f} gates "
                  + " ".join(f"{g.item():+.2f}" for g in gates) + f" ({time.time() - t0:.0f}s)", flush=True)
    for h in hooks:
        h.remove()
    model.eval()
    recs = evalset.items(evalset.episodes("binding", 50, "probe-0", None, T.dev_names()))
    recs += eval_extra.binding_records("probe-0", 50, T.dev_names(), 3, [3, 6])
    with torch.no_grad():
        acc = evaluate.probe_accuracy(model, tok, recs, evaluate.ImageCache(model, S.render).tokens)
    print("development split: " + ", ".join(f"{t} {s}-shot {100 * a:.0f}" for (t, s), a in sorted(acc.items())))
    train.export(model, tok, args.out)


if __name__ == "__main__":
    main()

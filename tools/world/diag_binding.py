"""Where fast binding fails (EXPERIMENTS.md, G2-G4), on 2-shot 2-way prompts of
the development split, once as text (each picture described by its kind,
"a red circle", the decoder's own binding) and once with the pictures:
- each decoder head's attention from the query's last token to the first
  token of the right and of the wrong example name (the matching heads);
- a linear probe for the query's shape on the stream at that token, at the
  input of every decoder layer (trained on 2/3 of the prompts, scored on 1/3).

    /usr/bin/python3 tools/world/diag_binding.py MODEL_DIR [PROMPTS]"""
import math
import os
import sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torch
import torch.nn.functional as F
import flamingo_ref as ref
from world import bpe, evalset, evaluate, scene as S, tasks as T
torch.set_num_threads(1)
model_dir = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200
model = ref.load_model_dir(model_dir, torch.float32).eval()
tok = bpe.Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
store = []
orig = ref.LlamaAttention.forward
def fwd(self, x, ctx):
    q = ref._split_heads(self.q_proj(x), self.heads)
    k = ref._split_heads(self.k_proj(x), self.kv_heads)
    q, k = ref._apply_rotary(q, ctx.cos, ctx.sin), ref._apply_rotary(k, ctx.cos, ctx.sin)
    s = ref._causal_fill(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim))
    store.append(s.softmax(-1)[0, :, -1].detach())   # [heads, T] from the last position
    return orig(self, x, ctx)
ref.LlamaAttention.forward = fwd
resid = []
lang = model.lang_encoder
for layer in lang.layers:
    layer.decoder_layer.register_forward_pre_hook(lambda m, a: resid.append(a[0][0, -1].detach()))
eps = evalset.episodes("binding", N, "probe-0", None, T.dev_names())
cache = evaluate.ImageCache(model, S.render)
def name_starts(ids, names):
    """first-token position of each example name in ids"""
    out = {}
    for nm in names:
        p = tok.encode(" " + nm)
        for i in range(len(ids) - len(p)):
            if ids[i:i + len(p)] == p:
                out.setdefault(nm, i)
    return out
def stats(kind):
    per = torch.zeros(len(lang.layers), 8, 2)
    feats, labels = [], []
    for ep in eps:
        shots = 2
        ex = ep.examples[:shots]
        names = [c.answer[:-1] for c in ex]
        if len(set(names)) < 2:
            continue
        right = ep.query.answer[:-1]
        if kind == "text":
            prompt = "".join(f"a {c.scene.colour} {c.scene.shape}\n{T.binding_text(c.answer[:-1])}\n" for c in ex)
            prompt += f"a {ep.query.scene.colour} {ep.query.scene.shape}\n{T.BINDING_PREFIX}"
            ids = tok.encode(prompt)
            store.clear(); resid.clear()
            saved = [l.gated_cross_attn_layer for l in lang.layers]
            for l in lang.layers:
                l.gated_cross_attn_layer = None
            with torch.no_grad():
                lang(torch.tensor([ids]), None, None)
            for l, g in zip(lang.layers, saved):
                l.gated_cross_attn_layer = g
        else:
            ids = tok.encode(ep.prompt(shots))
            store.clear(); resid.clear()
            with torch.no_grad():
                media = model.perceiver(cache.tokens(ep.scenes(shots))[None, :, None])
                model.forward_media(media, torch.tensor([ids]))
        pos = name_starts(ids, names)
        wrong = [n for n in names if n != right][0]
        for l, a in enumerate(store):
            per[l, :, 0] += a[:, pos[right]]
            per[l, :, 1] += a[:, pos[wrong]]
        feats.append(torch.stack(resid)); labels.append(S.SHAPES.index(ep.query.scene.shape))
    return per, torch.stack(feats), torch.tensor(labels)
def linear_probe(X, y):
    n = len(y); tr = slice(0, n * 2 // 3); te = slice(n * 2 // 3, n)
    x = (X - X[tr].mean(0)) / (X[tr].std(0) + 1e-6)
    w = torch.zeros(X.shape[1], len(S.SHAPES), requires_grad=True)
    opt = torch.optim.Adam([w], 1e-2)
    for _ in range(300):
        loss = F.cross_entropy(x[tr] @ w, y[tr]) + 1e-3 * (w ** 2).sum()
        opt.zero_grad(); loss.backward(); opt.step()
    return ((x[te] @ w).argmax(1) == y[te]).float().mean().item()
for kind in ("text", "pictures"):
    per, X, y = stats(kind)
    n = len(y)
    print(f"== {kind}: {n} two-name 2-shot prompts; attention from the last token to the right / wrong name's first token")
    for l in range(per.shape[0]):
        row = " ".join(f"h{h}:{per[l, h, 0] / n:.2f}/{per[l, h, 1] / n:.2f}" for h in range(8))
        print(f"  layer {l}: {row}")
    print("  linear probe for the query's shape at the last token, per layer input: " +
          " ".join(f"{linear_probe(X[:, l], y):.2f}" for l in range(X.shape[1])))

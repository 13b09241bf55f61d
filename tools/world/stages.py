"""The training stages of Flamingo's recipe, at small scale:
  tokenizer   byte-level BPE on the world's text
  clip        contrastive pre-training of the vision encoder with a text encoder
  lm          language-model pre-training of the LLaMA decoder on plain text
  flamingo    both frozen; Perceiver Resampler, gated cross-attention and the
              embeddings of <image> / <|endofchunk|> trained on interleaved
              documents of 1 to 5 images, loss on the text
The vision encoder, Perceiver, cross-attention and decoder are the project's
PyTorch reference modules (tools/flamingo_ref.py), so the trained weights are
exactly what a model directory describes.
"""

import math
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import flamingo_ref as ref

from . import bpe, common, data
from . import scene as S
from . import tasks as T


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def cosine_lr(step, total, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def set_lr(opt, lr):
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def adamw(params_decay, params_no_decay, lr, wd, eps=1e-6):
    groups = [{"params": params_decay, "weight_decay": wd}, {"params": params_no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98), eps=eps)


def split_decay(module):
    """Weight matrices decay; gains, biases, embeddings of positions/classes/frames and latents do not."""
    decay, keep = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        embedding = "embedding" in name or "_embs" in name or "latents" in name
        (decay if p.ndim >= 2 and not embedding else keep).append(p)
    return decay, keep


def autocast(enabled=True):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def float_layernorms(module):
    """CPU autocast in torch 1.13 hands bfloat16 activations to LayerNorm with
    float32 weights, which it refuses; run every LayerNorm in float32."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.register_forward_pre_hook(lambda _m, inputs: tuple(x.float() for x in inputs))
    return module


def round_bf16_(module):
    """Round the weights to bfloat16 values in place (kept as float32), so the
    next stage trains on exactly the frozen weights the model directory ships."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.bfloat16().float())


# ---- tokenizer ------------------------------------------------------------------

def train_tokenizer(seed, vocab_size=1024):
    """BPE on the world's text. Made-up names are left out, so no name owns a
    token: held-out names split into pieces the same way training names do."""
    rng = random.Random(seed)
    source = T.random_scene_source("train")
    texts = []
    for _ in range(4000):
        task = rng.choice(T.TASKS)
        doc = T.sample_document(rng, task, rng.randint(1, 8), source, names=["x", "y", "z"])
        texts.append("".join(c.prefix + " " if task == "binding" else c.text + "\n" for c in doc.chunks))
    for _ in range(4000):
        texts.append(T.clip_caption(S.sample_scene(rng)))
    return bpe.train(texts, vocab_size, special_first=[T.EOT], special_last=[T.EOC, T.IMAGE])


# ---- contrastive pre-training ---------------------------------------------------------

class TextEncoder(nn.Module):
    """CLIP's text tower at small scale: causal transformer, features of the
    last (end-of-text) token after a final LayerNorm, projected."""

    def __init__(self, vocab, width, layers, heads, context, embed_dim):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.register_buffer("causal", torch.triu(torch.full((context, context), float("-inf")), 1))

    def forward(self, ids, lengths):
        t = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:t]
        x = self.transformer(x, mask=self.causal[:t, :t])
        x = self.ln_final(x[torch.arange(ids.shape[0]), lengths - 1])
        return x @ self.text_projection


def make_vit():
    v = common.VISION
    vit = ref.VisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"], v["head_width"],
                                v["mlp_ratio"], common.EMBED_DIM, v["quick_gelu"], v["tokens_ln_post"])
    common.init_vit(vit)
    return vit


class AttributeHeads(nn.Module):
    """Linear classifiers of each scene attribute, on the mean of the patch
    tokens (what the Perceiver reads) and on the pooled embedding (what RICES
    compares). Trained beside the contrastive loss, they ask for one direction
    per attribute value, the same whatever the other attributes are, which the
    whole-caption contrast does not ask for; discarded after training."""

    def __init__(self, width, embed_dim):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.tokens = nn.ModuleDict({a: nn.Linear(width, len(S.ATTRIBUTES[a])) for a in data.VARIED})
        self.pooled = nn.ModuleDict({a: nn.Linear(embed_dim, len(S.ATTRIBUTES[a])) for a in data.VARIED})

    def loss(self, pooled, tokens, scenes):
        mean = self.norm(tokens.float().mean(1))
        total = 0.0
        for a in data.VARIED:
            y = torch.tensor([S.ATTRIBUTES[a].index(sc.attr(a)) for sc in scenes])
            total = total + F.cross_entropy(self.tokens[a](mean), y) + F.cross_entropy(self.pooled[a](pooled), y)
        return total / (2 * len(data.VARIED))


def train_clip(pool, tok, steps, seed, families=64, family_size=4, lr=1e-3, every=50, attribute_weight=0.0):
    """Returns the trained open_clip VisionTransformer (reference module).
    attribute_weight > 0 adds AttributeHeads' loss with that weight."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    vit = make_vit()
    c = common.CLIP_TEXT
    text = TextEncoder(len(tok), c["width"], c["layers"], c["heads"], c["context"], common.EMBED_DIM)
    float_layernorms(vit)
    float_layernorms(text)
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    decay, keep = split_decay(vit)
    d2, k2 = split_decay(text)
    heads = AttributeHeads(common.VISION["width"], common.EMBED_DIM) if attribute_weight else None
    if heads is not None:
        d3, k3 = split_decay(heads)
        decay, keep = decay + d3, keep + k3
    opt = adamw(decay + d2, keep + k2 + [logit_scale], lr, 0.1)
    eot = tok.token_id(T.EOT)
    caption_ids = {}
    t0 = time.time()
    for step in range(steps):
        set_lr(opt, cosine_lr(step, steps, lr, 100))
        ids = data.clip_batch(rng, pool, families, family_size)
        captions = [T.clip_caption(pool.scenes[i]) for i in ids]
        seqs = []
        for cap in captions:
            if cap not in caption_ids:
                caption_ids[cap] = tok.encode(cap) + [eot]
            seqs.append(caption_ids[cap])
        lengths = torch.tensor([len(s) for s in seqs])
        text_ids = torch.as_tensor(data.pad(seqs, eot))
        images = common.preprocess(pool.images[ids])
        # captions that are equal are positives of each other
        same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        with autocast():
            img_emb, tokens = vit(images)
            txt_emb = text(text_ids, lengths)
        attr_loss = heads.loss(img_emb.float(), tokens, [pool.scenes[i] for i in ids]) if heads else None
        img_emb = F.normalize(img_emb.float(), dim=-1)
        txt_emb = F.normalize(txt_emb.float(), dim=-1)
        logits = logit_scale.clamp(max=math.log(100)).exp() * img_emb @ txt_emb.t()
        loss = (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean()) / 2
        if attr_loss is not None:
            loss = loss + attribute_weight * attr_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(vit.parameters()) + list(text.parameters())
                                       + (list(heads.parameters()) if heads else []), 1.0)
        opt.step()
        if step % every == 0 or step == steps - 1:
            with torch.no_grad():
                exact = (same[torch.arange(len(ids)), logits.argmax(1)] > 0).float().mean()
            attr = f" attributes {attr_loss.item():.4f}" if attr_loss is not None else ""
            log(f"clip step {step}/{steps} loss {loss.item():.4f}{attr} i2t-acc {exact.item():.3f} "
                f"scale {logit_scale.exp().item():.1f} ({time.time() - t0:.0f}s)")
    vit.eval()
    text.eval()
    log("clip attribute accuracy: " + " ".join(f"{a} {v:.3f}" for a, v in
                                               clip_attribute_accuracy(vit, text, tok, seed).items()))
    return vit, text


@torch.no_grad()
def clip_attribute_accuracy(vit, text, tok, seed, n=300):
    """On fresh scenes: how often the true caption beats the captions that
    differ from it in one attribute (zero-shot CLIP classification per attribute)."""
    rng = random.Random(f"clip-check-{seed}")
    scenes = [S.sample_scene(rng, "eval") for _ in range(n)]
    img = F.normalize(vit(common.preprocess(np.stack([S.render(s) for s in scenes])))[0], dim=-1)
    eot = tok.token_id(T.EOT)
    out = {}
    for attr in data.VARIED:
        correct = 0
        for i, sc in enumerate(scenes):
            values = S.ATTRIBUTES[attr]
            caps = [T.clip_caption(S.Scene(**{**sc.__dict__, attr: v})) for v in values]
            seqs = [tok.encode(c) + [eot] for c in caps]
            emb = F.normalize(text(torch.as_tensor(data.pad(seqs, eot)), torch.tensor([len(q) for q in seqs])), dim=-1)
            correct += int(values[int((emb @ img[i]).argmax())] == sc.attr(attr))
        out[attr] = correct / n
    return out


# ---- language-model pre-training ------------------------------------------------------

def make_lm(tok, rescaled=True):
    """The LLaMA decoder as the reference builds it (FlamingoLayer-wrapped, so the
    state-dict names are those of the final model), without cross-attention."""
    cfg = common.llama_config(len(tok), tok.token_id(T.EOT), rescaled)
    no_xattn = dict(common.CROSS_ATTN, every_n_layers=cfg["num_hidden_layers"] + 1)
    lm = ref.FlamingoLM(cfg, common.VISION["width"], no_xattn)
    common.init_llama(lm)
    return lm


def lm_loss(logits, ids, mask):
    """Next-token cross-entropy over positions whose target is marked in mask."""
    logits = logits[:, :-1].float()
    target = ids[:, 1:]
    m = mask[:, 1:].float()
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    return (ce * m.reshape(-1)).sum() / (m > 0).sum()


def train_lm(tok, names, steps, seed, batch=48, lr=2e-3, every=50, binding_share=0.25, describe_share=0.0,
             check_every=0, init=None, warmup=100, max_chunks=8, name_weight=0.0,
             copy_share=0.0, on_check=None, short_share=0.0):
    """The decoder from scratch, or with init (the state of a decoder this
    function returned) trained further; returns it rescaled."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    if init is None:
        lm = make_lm(tok, rescaled=False)
    else:
        lm = make_lm(tok, rescaled=True)
        lm.load_state_dict(init)
        rescale_residual_(lm, 1 / common.RESIDUAL_SCALE)   # back to the scale it trained at
        lm.eval()
        log("lm checks at start: " + " ".join(f"{k} {v:.3f}" for k, v in lm_checks(lm, tok, seed).items()))
        lm.train()
    decay, keep = split_decay(lm)
    opt = adamw(decay, keep, lr, 0.1)
    t0 = time.time()
    batches = data.stream(rng, data.lm_items(tok, names, max_chunks=max_chunks, binding_share=binding_share,
                                                 describe_share=describe_share, name_weight=name_weight,
                                                 copy_share=copy_share, short_share=short_share), batch)
    for step in range(steps):
        set_lr(opt, cosine_lr(step, steps, lr, warmup))
        ids, mask = data.lm_collate(tok, next(batches))
        ids, mask = torch.as_tensor(ids), torch.as_tensor(mask)
        with autocast():
            logits = lm(ids, None, None)
        loss = lm_loss(logits, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        if step % every == 0 or step == steps - 1:
            log(f"lm step {step}/{steps} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
        if check_every and (step + 1) % check_every == 0:
            lm.eval()
            log("lm checks: " + " ".join(f"{k} {v:.3f}" for k, v in lm_checks(lm, tok, seed).items()))
            if on_check is not None:
                on_check(step + 1, rescaled_copy(lm))
            lm.train()
    lm.eval()
    if not (check_every and steps % check_every == 0):   # else just done
        log("lm checks: " + " ".join(f"{k} {v:.3f}" for k, v in lm_checks(lm, tok, seed).items()))
    ids = torch.tensor([tok.encode(T.lm_corpus(random.Random(seed), 1, T.training_names())[0])])
    with torch.no_grad():
        before = lm(ids, None, None)
        rescale_residual_(lm, common.RESIDUAL_SCALE)
        change = (lm(ids, None, None) - before).abs().max().item()
    log(f"decoder rescaled by {common.RESIDUAL_SCALE}: largest logit change {change:.2e}")
    return lm


@torch.no_grad()
def rescaled_copy(lm):
    """The state a finished train_lm returns (rescaled, bf16-rounded), of a
    decoder still in training: a checkpoint another run can start from."""
    import copy
    c = copy.deepcopy(lm)
    rescale_residual_(c, common.RESIDUAL_SCALE)
    round_bf16_(c)
    return c.state_dict()


@torch.no_grad()
def rescale_residual_(lm, factor):
    """Scale the decoder's residual stream by `factor` without changing what it
    computes: every block reads the stream through an RMSNorm, so scaling the
    embeddings and every projection that writes to the stream (o_proj,
    down_proj) scales the whole stream and nothing else (up to the norms' eps).
    The norms' eps scales with the square of the factor (make_lm(rescaled=True)
    has it), which makes the rescaled decoder compute exactly the same values;
    a power of two keeps float and bf16 weights exact. The trained decoder's
    stream has a per-dimension RMS of 15-60; at ~1-4 a freshly initialised
    cross-attention block writes at its scale and trains in far fewer steps."""
    for m in lm.modules():
        if isinstance(m, ref.LlamaRMSNorm):
            m.eps = m.eps * factor ** 2
    lm.model.embed_tokens.weight.mul_(factor)
    for layer in lm.layers:
        layer.decoder_layer.self_attn.o_proj.weight.mul_(factor)
        layer.decoder_layer.mlp.down_proj.weight.mul_(factor)


@torch.no_grad()
def lm_checks(lm, tok, seed, n=100):
    """Text-only abilities the Flamingo stage builds on, on the development
    names (never in training). copy: after two lines naming objects with
    made-up words, the greedy next line names one of them; described2/3: two
    or three objects described in words and named, then one of them described
    again: the name must be the one its kind was given (fast binding in text);
    short2: described2 with each object described by its kind alone ("a red circle");
    style: a third caption keeps the style of the first two."""
    rng = random.Random(f"lm-check-{seed}")
    names = T.dev_names()
    source = T.random_scene_source("eval")
    copy = style = short = 0
    described = {2: 0, 3: 0}
    scene = lambda k: source(rng, shape=k[0], colour=k[1], texture=k[2], count=1)
    for _ in range(n):
        a, b = rng.sample(names, 2)
        prompt = f"{T.binding_text(a)}\n{T.binding_text(b)}\n{T.BINDING_PREFIX}"
        out = greedy_text(lm, tok, prompt, 8)
        copy += out.split("\n")[0].strip() in (a + ".", b + ".")
        for k in (2, 3):
            kinds = T.binding_kinds(rng, "eval", k)
            chosen = rng.sample(names, k)
            order = list(range(k)) + [rng.randrange(k) for _ in range(rng.randint(0, 2))]
            rng.shuffle(order)
            q = rng.randrange(k)
            prompt = "".join(f"{T.clip_caption(scene(kinds[i]))}\n{T.binding_text(chosen[i])}\n" for i in order)
            out = greedy_text(lm, tok, prompt + T.clip_caption(scene(kinds[q])) + "\n" + T.BINDING_PREFIX, 8)
            described[k] += out.split("\n")[0].strip() == chosen[q] + "."
        # the same with each picture described by its kind alone (--bind-short's text)
        kinds = T.binding_kinds(rng, "eval", 2)
        chosen = rng.sample(names, 2)
        order = [0, 1] + [rng.randrange(2) for _ in range(rng.randint(0, 2))]
        rng.shuffle(order)
        q = rng.randrange(2)
        kind = lambda i: f"a {kinds[i][1]} {kinds[i][0]}\n"
        prompt = "".join(f"{kind(i)}{T.binding_text(chosen[i])}\n" for i in order) + kind(q) + T.BINDING_PREFIX
        short += greedy_text(lm, tok, prompt, 8).split("\n")[0].strip() == chosen[q] + "."
        st = rng.randrange(T.CAPTION_STYLES)
        caps = [T.caption(source(rng), st) for _ in range(3)]
        ids = tok.encode(caps[0] + "\n" + caps[1] + "\n")
        logits = lm(torch.tensor([ids]), None, None)[0, -1]
        style += int(logits.argmax()) == tok.encode(caps[2])[0]
    return {"copy": copy / n, "described2": described[2] / n, "described3": described[3] / n,
            "short2": short / n, "style": style / n}


def greedy_text(lm, tok, prompt, n):
    ids = tok.encode(prompt)
    start = len(ids)
    for _ in range(n):
        ids.append(int(lm(torch.tensor([ids]), None, None)[0, -1].argmax()))
    return tok.decode(ids[start:])


# ---- the Flamingo stage ---------------------------------------------------------------------

@torch.no_grad()
def vision_tokens(vit, images_uint8, batch=256):
    """Patch tokens of the frozen vision encoder for a pool of images, computed
    in float32 as a model directory would run them; stored as float16."""
    out = []
    for i in range(0, len(images_uint8), batch):
        _, tokens = vit(common.preprocess(images_uint8[i:i + batch]))
        out.append(tokens.half())
    return torch.cat(out)


def assemble(tok, vit, lm):
    """The full reference Flamingo with the pre-trained vision encoder and
    decoder; Perceiver and cross-attention freshly initialised as upstream
    (PyTorch defaults, gates at zero)."""
    config = common.flamingo_config(len(tok), tok.token_id(T.EOT), tok.token_id(T.EOC), tok.token_id(T.IMAGE))
    model = ref.Flamingo(config, embed_dim=common.EMBED_DIM)
    model.vision_encoder.load_state_dict(vit.state_dict())
    missing, unexpected = model.lang_encoder.load_state_dict(lm.state_dict(), strict=False)
    assert not unexpected and all(".gated_cross_attn_layer." in k for k in missing), (missing, unexpected)
    return model


@torch.no_grad()
def warm_start(model, tok, tensors):
    """Perceiver, cross-attention and the rows of <image> / <|endofchunk|>
    from an earlier Flamingo stage's tensors (a stage file or a model
    directory, possibly made with another decoder); the rest of model stays."""
    trained = {k: v.float() for k, v in tensors.items()
               if k.startswith("perceiver.") or ".gated_cross_attn_layer." in k}
    missing, unexpected = model.load_state_dict(trained, strict=False)
    assert not unexpected, unexpected
    if "perceiver.frame_embs" in missing:
        # a model trained on pictures only: the first frame (every picture's)
        # starts at zero so pictures are seen as before; the others apart from it
        model.perceiver.frame_embs.normal_(0.0, 0.5)
        model.perceiver.frame_embs[0] = 0
    rows = [tok.token_id(T.IMAGE), tok.token_id(T.EOC)]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        model.lang_encoder.state_dict()[name][rows] = tensors["lang_encoder." + name][rows].float()


STREAM_LAYERS = (1, 2, 3, 4)   # decoder layer inputs; the matching heads are in layer 4


def stream_step(model, tok, pool, feats, names, rng, batch, weight):
    """The loss on one batch of binding documents with the stream loss
    (train_flamingo's stream): mean squared difference over the teacher's
    mean square, summed over STREAM_LAYERS."""
    lang = model.lang_encoder
    ids, mask, img, t_ids, s_pos, t_pos = data.stream_batch(tok, pool, names, rng, batch)
    seen = []
    hooks = [lang.layers[i].decoder_layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].float()))
             for i in STREAM_LAYERS]
    try:
        saved = [layer.gated_cross_attn_layer for layer in lang.layers]
        for layer in lang.layers:   # the teacher: the described text through the decoder alone
            layer.gated_cross_attn_layer = None
        try:
            with torch.no_grad(), autocast():
                lang(torch.as_tensor(t_ids), None, None)
        finally:
            for layer, g in zip(lang.layers, saved):
                layer.gated_cross_attn_layer = g
        teacher, seen[:] = list(seen), []
        img, ids, mask = torch.as_tensor(img), torch.as_tensor(ids), torch.as_tensor(mask)
        x = (feats[img.clamp(min=0)].float() * (img >= 0)[..., None, None])[:, :, None]
        with autocast():
            logits = model.forward_media(model.perceiver(x), ids)
    finally:
        for h in hooks:
            h.remove()
    loss = lm_loss(logits, ids, mask)
    for s, t in zip(seen, teacher):
        s = torch.cat([s[i, p] for i, p in enumerate(s_pos)])
        t = torch.cat([t[i, p] for i, p in enumerate(t_pos)])
        loss = loss + weight * ((s - t) ** 2).mean() / (t ** 2).mean()
    return loss


def train_flamingo(model, tok, pool, feats, names, steps, seed, batch=32, lr=2e-3, weights=None,
                   every=50, probe=None, gate_lr=1e-2, clip=1.0, latent_std=0.02, warm=False, warmup=200,
                   first_weight=None, question_weights=None, video=None, stream=None, similar=0.0,
                   near=0.0, blur=True):
    """Trains Perceiver, gated cross-attention and the rows of <image> and
    <|endofchunk|> in the input and output embeddings; everything else frozen.
    warm: the model's Perceiver, cross-attention and new rows are already
    trained (by an earlier run of this stage) and go on from there.
    probe: (every N steps, fn(model, steps done)). first_weight: loss weight
    of the first token of a repeated made-up name (data.encode_document).
    question_weights: how often each question type is asked (tasks.pick_question).
    similar: the share of caption, VQA and classification documents whose
    examples look like their last picture (tasks.similar_scenes).
    near: the share of them with a twin of their last picture
    (tasks.near_scenes), shown blurred with blur; feats then holds the
    blurred pool's tokens after the pool's (data.flamingo_items).
    video: (video.ClipPool, {frame count: vision tokens [n, F, v, D]}, share):
    that share of the batches are clips of one frame count, through the
    Perceiver with its frame embeddings as the paper trains video.
    stream: (weight, share): that share of the batches are binding documents
    with a second loss, weighted, beside the one on the names: the decoder's
    stream at the inputs of STREAM_LAYERS, at "This is a" and at each name's
    first token, pulled towards its stream on the same document written as
    text (data.binding_pair). A frozen decoder that binds in text is its own
    teacher; the binding loss alone never makes the picture's kind reach the
    stream where its matching heads look (EXPERIMENTS.md, runs G2 and K1)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    weights = weights or {"caption": 1.0, "vqa": 1.0, "classify": 1.0, "binding": 1.5}
    for p in model.parameters():
        p.requires_grad_(False)
    lang = model.lang_encoder
    new_rows = torch.tensor([tok.token_id(T.IMAGE), tok.token_id(T.EOC)])
    emb, head = lang.model.embed_tokens.weight, lang.lm_head.weight
    if not warm:
        with torch.no_grad():
            # Upstream draws the latents from N(0, 1); then 98% of the Perceiver's
            # output is the latents themselves and the image barely shows through,
            # which costs thousands of steps before the gates open. Small latents
            # make the output image-dependent from the start.
            model.perceiver.latents.normal_(0.0, latent_std)
            if model.perceiver.frame_embs is not None:   # the same reason: small, not N(0, 1)
                model.perceiver.frame_embs.normal_(0.0, latent_std)
            # the new tokens start afresh, as when OpenFlamingo adds them
            emb[new_rows] = torch.randn(len(new_rows), emb.shape[1]) * 0.02
            head[new_rows] = torch.randn(len(new_rows), head.shape[1]) * 0.02
    row_mask = torch.zeros(emb.shape[0], 1)
    row_mask[new_rows] = 1.0
    for w in (emb, head):
        w.requires_grad_(True)
        w.register_hook(lambda g: g * row_mask)
    xattn = [layer.gated_cross_attn_layer for layer in lang.layers if layer.gated_cross_attn_layer is not None]
    trainable = [model.perceiver] + xattn
    for m in trainable:
        m.requires_grad_(True)
        float_layernorms(m)
    decay, keep = [], []
    for m in trainable:
        d, k = split_decay(m)
        decay += d
        keep += k
    gates = [b.attn_gate for b in xattn] + [b.ff_gate for b in xattn]
    # The frame embeddings too: at the base rate they stay ~50x below the
    # vision tokens' scale, and a clip's frames stay an unordered set.
    fast = gates + ([model.perceiver.frame_embs] if video is not None else [])
    keep = [p for p in keep if all(p is not g for g in fast)]
    # Behind nearly closed gates the gradients are tiny (~1e-6): Adam's eps must
    # be well below that or it silently scales the steps down.
    opt = adamw(decay, keep + [emb, head], lr, 0.1, eps=1e-10)
    # The tanh gates start closed; a larger step lets them open as soon as the
    # visual signal is useful, rather than after thousands of steps.
    opt.add_param_group({"params": fast, "weight_decay": 0.0, "lr": gate_lr, "lr_scale": gate_lr / lr})
    params = decay + keep + [emb, head] + fast
    model.train()
    batches = data.stream(rng, data.flamingo_items(tok, pool, names, weights, first_weight=first_weight,
                                                    question_weights=question_weights, similar=similar,
                                                    near=near, blur=blur), batch)
    video_rng = random.Random(f"video-{seed}")
    stream_rng = random.Random(f"stream-{seed}")
    t0 = time.time()
    for step in range(steps):
        set_lr(opt, cosine_lr(step, steps, lr, warmup))
        if stream is not None and stream_rng.random() < stream[1]:
            loss = stream_step(model, tok, pool, feats, names, stream_rng, batch, stream[0])
        elif video is not None and video_rng.random() < video[2]:
            loss = None
            frames = video_rng.choice(sorted(video[1]))
            ids, mask, idx = data.video_batch(tok, video[0], video_rng, frames, batch)
            idx = torch.as_tensor(idx)
            x = video[1][frames][idx.clamp(min=0)].float() * (idx >= 0)[..., None, None, None]
        else:
            loss = None
            ids, mask, img = data.flamingo_collate(tok, next(batches))
            img = torch.as_tensor(img)
            x = (feats[img.clamp(min=0)].float() * (img >= 0)[..., None, None])[:, :, None]
        if loss is None:
            ids, mask = torch.as_tensor(ids), torch.as_tensor(mask)
            with autocast():
                media = model.perceiver(x)
                logits = model.forward_media(media, ids)
            loss = lm_loss(logits, ids, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if step % every == 0 or step == steps - 1:
            gates = " ".join(f"{b.attn_gate.item():+.2f}/{b.ff_gate.item():+.2f}" for b in xattn)
            log(f"flamingo step {step}/{steps} loss {loss.item():.4f} grad {gnorm:.2f} gates {gates} "
                f"({time.time() - t0:.0f}s)")
        if probe is not None and (step + 1) % probe[0] == 0:
            model.eval()
            probe[1](model, step + 1)
            model.train()
    return model.eval()

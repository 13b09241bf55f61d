"""Training data: a pool of rendered scenes with look-ups by attribute, and
batches for the three training stages (contrastive pairs, plain text,
interleaved image-text documents)."""

import hashlib
import os
import random
from multiprocessing import Pool as ProcessPool

import numpy as np

from . import scene as S
from . import tasks as T


def _render_chunk(scenes):
    return np.stack([S.render(s) for s in scenes])


class ImagePool:
    """N rendered train-split scenes; images[i] shows scenes[i]."""

    def __init__(self, scenes, images):
        self.scenes = scenes
        self.images = images
        self.index_of = {s: i for i, s in enumerate(scenes)}
        self._by = {}

    @staticmethod
    def build(n, seed, processes=1, cache_dir=None):
        with open(S.__file__, "rb") as f:   # a changed renderer must not reuse old pictures
            version = hashlib.sha1(f.read()).hexdigest()[:10]
        path = os.path.join(cache_dir, f"pool-{n}-{seed}-{version}.npy") if cache_dir else None
        rng = random.Random(seed)
        # every single-object kind that binding documents ask for is present
        kinds = [(sh, c, tx) for sh in S.SHAPES for c in S.COLOURS for tx in S.TEXTURES
                 if (sh, c) not in S.HELD_OUT_PAIRS]
        per_kind = max(2, n // 1000)
        scenes = [S.sample_scene(rng, "train", shape=sh, colour=c, texture=tx, count=1)
                  for sh, c, tx in kinds for _ in range(per_kind)]
        scenes += [S.sample_scene(rng, "train") for _ in range(n - len(scenes))]
        if path and os.path.exists(path):
            images = np.load(path)
            if images.shape[0] == n:
                return ImagePool(scenes, images)
        chunks = [scenes[i:i + 500] for i in range(0, n, 500)]
        if processes > 1:
            with ProcessPool(processes) as p:
                parts = p.map(_render_chunk, chunks)
        else:
            parts = [_render_chunk(c) for c in chunks]
        images = np.concatenate(parts)
        if path:
            os.makedirs(cache_dir, exist_ok=True)
            np.save(path, images)
        return ImagePool(scenes, images)

    def matching(self, **fixed):
        """Indices of the scenes with the given attribute values."""
        keys = tuple(sorted(fixed))
        table = self._by.get(keys)
        if table is None:
            table = {}
            for i, s in enumerate(self.scenes):
                table.setdefault(tuple(s.attr(k) for k in keys), []).append(i)
            self._by[keys] = table
        return table.get(tuple(fixed[k] for k in keys), [])

    def source(self, rng, **fixed):
        """A random pool scene with the fixed attributes (a document's scene source)."""
        if not fixed:
            return self.scenes[rng.randrange(len(self.scenes))]
        ids = self.matching(**fixed)
        if not ids:
            raise KeyError(f"no pool scene with {fixed}")
        return self.scenes[rng.choice(ids)]


# ---- contrastive pairs --------------------------------------------------------

VARIED = ["shape", "colour", "texture", "size", "count", "position"]


def clip_batch(rng, pool, families, family_size):
    """Pool indices of `families` groups of scenes; the members of a group differ
    from its first scene in one attribute each, so every batch holds hard
    negatives (the same picture but for a colour, a count, a position...)."""
    ids = []
    for _ in range(families):
        base = pool.scenes[rng.randrange(len(pool.scenes))]
        ids.append(pool.index_of[base])
        while len(ids) % family_size:
            attr = rng.choice(VARIED)
            value = rng.choice([v for v in S.ATTRIBUTES[attr] if v != base.attr(attr)])
            fixed = {a: base.attr(a) for a in VARIED}
            fixed[attr] = value
            match = pool.matching(**fixed)
            if match:
                ids.append(rng.choice(match))
    return ids


# ---- token batches ------------------------------------------------------------

def pad(seqs, value):
    n = max(len(s) for s in seqs)
    return np.array([list(s) + [value] * (n - len(s)) for s in seqs], np.int64)


def length_buckets(rng, items, batch, length):
    """Batches of items of similar length (little padding), in random order."""
    items = sorted(items, key=length)
    out = [items[i:i + batch] for i in range(0, len(items), batch)]
    rng.shuffle(out)
    return out


def stream(rng, make, batch, per_refill=16):
    """Endless batches: make(rng, n) gives n items (token list first); items are
    drawn per_refill batches at a time and bucketed by length."""
    while True:
        yield from length_buckets(rng, make(rng, batch * per_refill), batch, lambda it: len(it[0]))


def lm_items(tok, names, max_chunks=8, binding_share=0.25, describe_share=0.0):
    def make(rng, n):
        return [(tok.encode(t),) for t in T.lm_corpus(rng, n, names, max_chunks, binding_share, describe_share)]
    return make


def lm_collate(tok, items):
    """ids [B, T] and the loss mask over targets (1 on real tokens)."""
    seqs = [it[0] for it in items]
    ids = pad(seqs, tok.token_id(T.EOT))
    mask = pad([[1] * len(s) for s in seqs], 0)
    return ids, mask


def task_weights_choice(rng, weights):
    r = rng.random() * sum(weights.values())
    for task, w in weights.items():
        r -= w
        if r < 0:
            return task
    return task


def encode_document(tok, doc, mask_new_names=True, answers_only=True):
    """Token ids of a document in Flamingo's format, and the positions left
    out of the loss: the tokens of every made-up name's first appearance
    (random letters no model can predict), and with answers_only the
    template prefixes ("Question: What colour ...?  Answer:", "This is a").
    The frozen decoder cannot lower their loss (which question comes next is
    chance), so their gradients are noise that swamps Adam's step size for
    the one answer token in each chunk that depends on the image."""
    ids, skip, seen = [], [], set()
    for c in doc.chunks:
        start = len(ids)
        ids += tok.encode(T.IMAGE + c.prefix)
        if answers_only:
            skip += range(start + 1, len(ids))
        if doc.task == "binding":
            name = c.answer[:-1]
            piece = tok.encode(" " + name)
            if mask_new_names and name not in seen:
                skip += range(len(ids), len(ids) + len(piece))
                seen.add(name)
            ids += piece + tok.encode("." + T.EOC)
        else:
            ids += tok.encode((" " if c.prefix else "") + c.answer + T.EOC)
    return ids, skip


def flamingo_items(tok, pool, names, weights, max_images=5, mask_new_names=True):
    """Interleaved documents of 1..max_images images drawn from the pool:
    (ids, pool indices, positions left out of the loss)."""
    def make(rng, n):
        out = []
        for _ in range(n):
            task = task_weights_choice(rng, weights)
            doc = T.sample_document(rng, task, rng.randint(1, max_images), pool.source, names)
            ids, skip = encode_document(tok, doc, mask_new_names)
            out.append((ids, [pool.index_of[c.scene] for c in doc.chunks], skip))
        return out
    return make


def flamingo_collate(tok, items):
    """ids [B, T], the loss mask over targets (text only: never <image>, never
    padding) and pool indices [B, N] (-1 pads)."""
    seqs = [it[0] for it in items]
    ids = pad(seqs, tok.token_id(T.EOT))
    mask = pad([[1] * len(s) for s in seqs], 0)
    mask[ids == tok.token_id(T.IMAGE)] = 0
    for row, it in enumerate(items):
        mask[row, list(it[2])] = 0
    img = pad([it[1] for it in items], -1)
    return ids, mask, img

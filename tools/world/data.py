"""Training data: a pool of rendered scenes with look-ups by attribute, and
batches for the three training stages (contrastive pairs, plain text,
interleaved image-text documents)."""

import hashlib
import os
import random
from multiprocessing import Pool as ProcessPool

import numpy as np
from PIL import Image

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


def encode_lm_document(tok, doc, describe, name_weight, short=False):
    """Token ids of a plain-text document (as Document.plain_text) and a loss
    weight per token. With name_weight, a binding document is weighted only on
    the names that appear again (name_weight each) and the rest of its lines
    is left out: what it teaches is to find the earlier line about the same
    kind and copy its name, and the descriptions' random attributes would
    otherwise make up almost all of its loss."""
    ids, weights, seen = [], [], set()
    for c in doc.chunks:
        # short: a binding document's pictures described by their kind alone
        # ("a red circle"), a curriculum for the match on the full description
        caption = f"a {c.scene.colour} {c.scene.shape}" if short and doc.task == "binding" else T.clip_caption(c.scene)
        lines = ([caption + "\n"] if describe else [])
        if doc.task == "binding" and name_weight:
            name = c.answer[:-1]
            pieces = [(line, 0.0) for line in lines] + [(c.prefix, 0.0),
                      (" " + name + ".", name_weight if name in seen else 0.0), ("\n", 0.0)]
            seen.add(name)
        else:
            pieces = [(line, 1.0) for line in lines] + [(c.text + "\n", 1.0)]
        for text, w in pieces:
            piece = tok.encode(text)
            ids += piece
            weights += [w] * len(piece)
    return ids, weights


def copy_document(tok, rng, names, weight):
    """A line of 2-6 made-up words and the same line again, weighted on the
    repeat only: plain copying of words spelt in several tokens (an induction
    the decoder needs before it can copy a name bound to a kind)."""
    words = names.sample(rng, rng.randint(2, 6))
    line = " ".join(words) + ".\n"
    first, again = tok.encode(line), tok.encode(line)
    return first + again, [0.0] * len(first) + [weight] * len(again)


def lm_items(tok, names, max_chunks=8, binding_share=0.25, describe_share=0.0, name_weight=0.0, copy_share=0.0,
             short_share=0.0):
    """Items (ids, loss weights) of plain-text documents; see T.lm_corpus."""
    source = T.random_scene_source("train")
    others = [t for t in T.TASKS if t != "binding"]

    def make(rng, n):
        if not name_weight:   # the original recipe, token for token
            return [(ids, [1.0] * len(ids)) for ids in
                    (tok.encode(t) for t in T.lm_corpus(rng, n, names, max_chunks, binding_share, describe_share))]
        out = []
        while len(out) < n:
            if rng.random() < copy_share:
                out.append(copy_document(tok, rng, names, name_weight))
                continue
            task = "binding" if rng.random() < binding_share else rng.choice(others)
            doc = T.sample_document(rng, task, rng.randint(1, max_chunks), source, names)
            item = encode_lm_document(tok, doc, rng.random() < describe_share, name_weight,
                                      short_share and rng.random() < short_share)
            # a binding document that names nothing twice has no token in the loss; batches are
            # bucketed by length, so in binding-only text these short ones would fill whole
            # batches whose loss is 0/0 (NaN, and the weights with it)
            if any(item[1]):
                out.append(item)
        return out
    return make


def lm_collate(tok, items):
    """ids [B, T] and the loss weights over targets (0 on padding)."""
    seqs = [it[0] for it in items]
    ids = pad(seqs, tok.token_id(T.EOT))
    n = ids.shape[1]
    mask = np.array([list(it[1]) + [0.0] * (n - len(it[1])) for it in items], np.float32)
    return ids, mask


def task_weights_choice(rng, weights):
    r = rng.random() * sum(weights.values())
    for task, w in weights.items():
        r -= w
        if r < 0:
            return task
    return [t for t, w in weights.items() if w > 0][-1]   # rounding (r may end at 0)


def encode_document(tok, doc, mask_new_names=True, answers_only=True, first_weight=None):
    """Token ids of a document in Flamingo's format, and the positions left
    out of the loss: the tokens of every made-up name's first appearance
    (random letters no model can predict), and with answers_only the
    template prefixes ("Question: What colour ...?  Answer:", "This is a").
    The frozen decoder cannot lower their loss (which question comes next is
    chance), so their gradients are noise that swamps Adam's step size for
    the one answer token in each chunk that depends on the image.
    With first_weight, also {position: first_weight} for the first token of
    every name said again: the one token that needs the picture matched to
    an earlier one (the rest of the name is copying)."""
    ids, skip, seen, weighted = [], [], set(), {}
    for c in doc.chunks:
        start = len(ids)
        ids += tok.encode(T.IMAGE + c.prefix)
        if answers_only:
            skip += range(start + 1, len(ids))
        if doc.task == "binding":
            name = c.answer[:-1]
            piece = tok.encode(" " + name)
            if name not in seen:
                if mask_new_names:
                    skip += range(len(ids), len(ids) + len(piece))
                seen.add(name)
            elif first_weight is not None:
                weighted[len(ids)] = first_weight
            ids += piece + tok.encode("." + T.EOC)
        else:
            ids += tok.encode((" " if c.prefix else "") + c.answer + T.EOC)
    return (ids, skip) if first_weight is None else (ids, skip, weighted)


def encode_dialogue(tok, turns):
    """Token ids of a conversation in the chat template and the positions left
    out of the loss: everything but the assistant's answers (and the
    <|endofchunk|> that ends each), as encode_document's answers_only."""
    ids, skip = [], []
    for sc, user, answer in turns:
        start = len(ids)
        ids += tok.encode(T.CHAT_USER.format(content=(T.IMAGE if sc is not None else "") + user)
                          + T.CHAT_GENERATION_PROMPT)
        skip += range(start, len(ids))
        ids += tok.encode(" " + answer + T.EOC)
    return ids, skip


def blurred(images):
    """The pictures shrunk to 12, 16 or 20 pixels a side (by index) and grown
    back: colour, count, place and size stay, shape and pattern blur."""
    out = np.empty_like(images)
    for i, a in enumerate(images):
        side = (12, 16, 20)[i % 3]
        small = Image.fromarray(a).resize((side, side), Image.BOX)
        out[i] = np.asarray(small.resize(a.shape[:2][::-1], Image.BILINEAR))
    return out


def flamingo_items(tok, pool, names, weights, max_images=5, mask_new_names=True, first_weight=None,
                   question_weights=None, similar=0.0, near=0.0, blur=True):
    """Interleaved documents of 1..max_images images drawn from the pool:
    (ids, pool indices, positions left out of the loss, {position: loss
    weight} where it is not 1); first_weight as encode_document's. With
    blur, a document with a twin of its last picture (tasks.near_scenes)
    shows that picture blurred, index i + len(pool scenes): the vision
    tokens of blurred(pool.images) follow the pool's."""
    def make(rng, n):
        out = []
        for _ in range(n):
            task = task_weights_choice(rng, weights)
            if task == "dialogue":
                turns = T.sample_dialogue(rng, pool.source, question_weights=question_weights)
                ids, skip = encode_dialogue(tok, turns)
                out.append((ids, [pool.index_of[sc] for sc, _, _ in turns if sc is not None], skip, {}))
                continue
            doc = T.sample_document(rng, task, rng.randint(1, max_images), pool.source, names,
                                    question_weights=question_weights, similar=similar, near=near)
            ids, skip, *weighted = encode_document(tok, doc, mask_new_names, first_weight=first_weight)
            idx = [pool.index_of[c.scene] for c in doc.chunks]
            if blur and "twin" in doc.meta:
                idx[-1] += len(pool.scenes)
            out.append((ids, idx, skip, weighted[0] if weighted else {}))
        return out
    return make


def binding_pair(tok, doc):
    """A binding document in Flamingo's format (the student) and written as
    text with each picture described by its kind ("a red circle\\n"), which
    a decoder that binds in text answers right (the teacher): the ids of
    both, the matched positions in each ("This is a" and each name's first
    token) and the student's positions left out of the loss
    (encode_document's)."""
    s_ids, t_ids, s_pos, t_pos, skip, seen = [], [], [], [], [], set()
    for c in doc.chunks:
        s_ids += tok.encode(T.IMAGE + c.prefix)
        prefix = tok.encode(c.prefix)
        s_pos += range(len(s_ids) - len(prefix), len(s_ids))
        skip += range(len(s_ids) - len(prefix), len(s_ids))
        t_ids += tok.encode(f"a {c.scene.colour} {c.scene.shape}\n")
        t_pos += range(len(t_ids), len(t_ids) + len(prefix))
        t_ids += prefix
        name = c.answer[:-1]
        piece = tok.encode(" " + name)
        s_pos.append(len(s_ids))
        t_pos.append(len(t_ids))
        if name not in seen:   # a name's first saying cannot be predicted
            skip += range(len(s_ids), len(s_ids) + len(piece))
            seen.add(name)
        s_ids += piece + tok.encode("." + T.EOC)
        t_ids += piece + tok.encode(".\n")
    return s_ids, t_ids, s_pos, t_pos, skip


def stream_batch(tok, pool, names, rng, batch, max_images=5):
    """A batch of binding documents of 2..max_images pictures from the pool
    for the stream loss: (student ids, loss mask, pool indices) as
    flamingo_collate's, teacher ids, and per row the matched positions of
    the student and of the teacher."""
    docs = [T.sample_document(rng, "binding", rng.randint(2, max_images), pool.source, names)
            for _ in range(batch)]
    pairs = [binding_pair(tok, d) for d in docs]
    items = [(p[0], [pool.index_of[c.scene] for c in d.chunks], p[4]) for p, d in zip(pairs, docs)]
    ids, mask, img = flamingo_collate(tok, items)
    teacher = pad([p[1] for p in pairs], tok.token_id(T.EOT))
    return ids, mask, img, teacher, [p[2] for p in pairs], [p[3] for p in pairs]


def flamingo_collate(tok, items):
    """ids [B, T], the loss weights over targets (text only: never <image>,
    never padding) and pool indices [B, N] (-1 pads)."""
    seqs = [it[0] for it in items]
    ids = pad(seqs, tok.token_id(T.EOT))
    mask = pad([[1] * len(s) for s in seqs], 0).astype(np.float32)
    mask[ids == tok.token_id(T.IMAGE)] = 0
    for row, it in enumerate(items):
        mask[row, list(it[2])] = 0
        for pos, w in (it[3] if len(it) > 3 else {}).items():
            mask[row, pos] = w
    img = pad([it[1] for it in items], -1)
    return ids, mask, img


def video_batch(tok, clips, rng, frames, batch, max_clips=4):
    """A batch of video documents (1..max_clips clips of `frames` frames each,
    video.ClipPool.document) through encode_document: ids, loss weights (the
    answers) and clip indices [B, N] (-1 pads)."""
    items = []
    for _ in range(batch):
        doc = clips.document(rng, frames, rng.randint(1, max_clips))
        ids, skip = encode_document(tok, T.Document("video", 0, [T.Chunk(i, p, a) for i, p, a in doc]))
        items.append((ids, [i for i, _, _ in doc], skip))
    return flamingo_collate(tok, items)

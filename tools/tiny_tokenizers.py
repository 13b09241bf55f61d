"""Tiny Hugging Face tokenizer.json files for test models, and a small
encoder/decoder for exactly the forms written here.

Two forms, as the real language models use them:
  - byte-level BPE (GPT-2 / GPT-NeoX / MPT): NFC normalizer, ByteLevel
    pre-tokenizer (GPT-2 split pattern, no prefix space), ByteLevel
    post-processor and decoder; vocabulary = <|endoftext|>, the 256 byte
    symbols, then merges;
  - LLaMA (sentencepiece converted): normalizer Prepend("▁") + Replace(" ", "▁"),
    no pre-tokenizer, BPE with byte_fallback (<0x00>..<0xFF>), template
    post-processor adding <s>.
OpenFlamingo's tokens <|endofchunk|>, <image> and <PAD> come last as added
special tokens, in the order OpenFlamingo adds them.

The encoder follows Hugging Face `tokenizers` for these files: added tokens
are split off first (matched on the raw text), each remaining piece is
normalized, pre-tokenized and BPE-encoded (merges applied by rank), then the
post-processor runs when add_special_tokens is true. It handles ASCII text
(the GPT-2 pattern's \\p{L} / \\p{N} classes are written for ASCII here) and
refuses anything else.
"""

import re
from collections import Counter

FLAMINGO_TOKENS = ["<|endofchunk|>", "<image>", "<PAD>"]


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}

# GPT-2 split pattern with ASCII classes in place of \p{L} and \p{N}.
GPT2_SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def _added(id_, content):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": False, "special": True}


def _learn_merges(words, num_merges):
    """Plain BPE training: repeatedly merge the most frequent adjacent pair
    (ties broken by the pair itself, so the result is deterministic)."""
    seqs = Counter(tuple(w) for w in words)
    merges = []
    for _ in range(num_merges):
        pairs = Counter()
        for seq, c in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new = Counter()
        for seq, c in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new[tuple(out)] += c
        seqs = new
    return merges


def byte_level_tokenizer(corpus, num_merges=48):
    """GPT-NeoX-style tokenizer.json (as a dict) trained on `corpus` (str)."""
    vocab = {"<|endoftext|>": 0}
    for b in range(256):
        vocab[BYTE_ENCODER[b]] = len(vocab)
    words = ["".join(BYTE_ENCODER[b] for b in w.encode()) for w in GPT2_SPLIT.findall(corpus)]
    merges = _learn_merges(words, num_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [_added(0, "<|endoftext|>")]
    for t in FLAMINGO_TOKENS:
        added.append(_added(len(vocab), t))
        vocab[t] = len(vocab)
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"}, "pre_tokenizer": dict(bl), "post_processor": dict(bl),
        "decoder": dict(bl),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


def llama_tokenizer(corpus, num_merges=40, chars=None):
    """LLaMA-style tokenizer.json (as a dict): byte fallback, ▁ for spaces.
    `chars`: the single characters given their own piece (others fall back
    to bytes)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    text = "▁" + corpus.replace(" ", "▁")
    if chars is None:
        chars = sorted(set(text))
    for c in chars:
        vocab.setdefault(c, len(vocab))
    # learn merges on ▁-prefixed words made of known characters
    words = [w for w in re.findall(r"▁?[^▁]+", text) if all(c in vocab for c in w)]
    merges = _learn_merges(words, num_merges)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [_added(0, "<unk>"), _added(1, "<s>"), _added(2, "</s>")]
    for t in FLAMINGO_TOKENS:
        added.append(_added(len(vocab), t))
        vocab[t] = len(vocab)
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


def _is_llama(tok):
    return tok["model"].get("byte_fallback", False)


def _bpe(symbols, ranks):
    """Apply merges by rank (lowest first, leftmost occurrence first)."""
    parts = list(symbols)
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def encode(tok, text, add_special_tokens=True):
    """Token ids of `text` as Hugging Face's tokenizer(text) gives them."""
    if not text.isascii():
        raise ValueError("the tiny encoder handles ASCII text only")
    vocab = tok["model"]["vocab"]
    ranks = {tuple(m.split(" ")): i for i, m in enumerate(tok["model"]["merges"])}
    added = sorted((a["content"] for a in tok["added_tokens"]), key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(a) for a in added))
    ids, pos = [], 0
    pieces = []
    for m in pattern.finditer(text):
        pieces.append((text[pos:m.start()], False))
        pieces.append((m.group(0), True))
        pos = m.end()
    pieces.append((text[pos:], False))
    for piece, is_added in pieces:
        if is_added:
            ids.append(vocab[piece])
            continue
        if not piece:
            continue
        if _is_llama(tok):
            word = "▁" + piece.replace(" ", "▁")
            for part in _bpe_llama(word, vocab, ranks):
                ids.append(part)
        else:
            for w in GPT2_SPLIT.findall(piece):
                mapped = "".join(BYTE_ENCODER[b] for b in w.encode())
                ids.extend(vocab[p] for p in _bpe(mapped, ranks))
    if add_special_tokens and _is_llama(tok):
        ids = [vocab["<s>"]] + ids
    return ids


def _bpe_llama(word, vocab, ranks):
    # characters without a piece become their UTF-8 bytes (never merged)
    symbols = []
    for c in word:
        if c in vocab:
            symbols.append(c)
        else:
            symbols.extend(f"<0x{b:02X}>" for b in c.encode())
    return [vocab[p] for p in _bpe(symbols, ranks)]


def decode(tok, ids):
    """Text of `ids` (special tokens kept), as the file's decoder gives it."""
    inv = {v: k for k, v in tok["model"]["vocab"].items()}
    added = {a["id"]: a["content"] for a in tok["added_tokens"]}
    if not _is_llama(tok):
        out = bytearray()
        for i in ids:
            if i in added:
                out += added[i].encode()
            else:
                out += bytes(BYTE_DECODER[c] for c in inv[i])
        return out.decode("utf-8", errors="replace")
    pieces = []
    for i in ids:
        p = added.get(i, inv[i]).replace("▁", " ")
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", p)
        pieces.append(bytes([int(m.group(1), 16)]) if m else p.encode())
    text = b"".join(pieces).decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text

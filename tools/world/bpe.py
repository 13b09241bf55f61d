"""A small byte-level BPE: trainer, encoder, decoder, and the Hugging Face
tokenizer.json it is stored as (ByteLevel pre-tokenizer, BPE model with
merges as "a b" strings, ByteLevel decoder, special tokens as added tokens),
the same form as the GPT-2 and GPT-NeoX tokenizer files.

Pre-tokenization follows GPT-2's pattern. Python's `re` has no \\p{L}, so
letters are `[^\\W\\d_]` and numbers `\\d`: identical for ASCII text (all of the
world's text), close elsewhere.
"""

import json
import re
from collections import Counter

# GPT-2's split: contractions, optionally space-prefixed runs of letters, of
# digits, of other symbols, then whitespace (trailing runs keep their last
# space for the following word).
_PATTERN = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def _byte_alphabet():
    """GPT-2's reversible byte -> printable character map: printable Latin-1
    bytes stand for themselves, the others are shifted past 255."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _byte_alphabet()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def pre_tokenize(text):
    """Pieces of text as strings of byte characters."""
    return ["".join(BYTE_TO_CHAR[b] for b in piece.encode("utf-8")) for piece in _PATTERN.findall(text)]


class Tokenizer:
    def __init__(self, vocab, merges, special):
        self.vocab = dict(vocab)                          # token string -> id
        self.merges = list(merges)                        # [(a, b)] in rank order
        self.special = list(special)                      # added tokens, matched before BPE
        self.ranks = {pair: i for i, pair in enumerate(self.merges)}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self._cache = {}
        ordered = sorted(self.special, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(re.escape(s) for s in ordered) + ")") if ordered else None

    def __len__(self):
        return len(self.vocab)

    def token_id(self, token):
        return self.vocab[token]

    def _bpe(self, word):
        if word in self._cache:
            return self._cache[word]
        parts = list(word)
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            a, b = self.merges[best[0]]
            merged, i = [], 0
            while i < len(parts):        # merge every occurrence of the pair, left to right
                if i < len(parts) - 1 and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = [self.vocab[p] for p in parts]
        self._cache[word] = ids
        return ids

    def encode(self, text):
        """Token ids of text: added tokens first, then pre-tokenization and BPE."""
        ids = []
        pieces = self._special_re.split(text) if self._special_re else [text]
        for piece in pieces:
            if not piece:
                continue
            if piece in self.special:
                ids.append(self.vocab[piece])
                continue
            for word in pre_tokenize(piece):
                ids.extend(self._bpe(word))
        return ids

    def decode(self, ids):
        out, buf = [], []
        for i in ids:
            tok = self.id_to_token[i]
            if tok in self.special:
                if buf:
                    out.append(bytes(buf).decode("utf-8", errors="replace"))
                    buf = []
                out.append(tok)
            else:
                buf.extend(CHAR_TO_BYTE[c] for c in tok)
        if buf:
            out.append(bytes(buf).decode("utf-8", errors="replace"))
        return "".join(out)

    # ---- tokenizer.json ----

    def to_json(self):
        added = [{"id": self.vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                  "normalized": False, "special": True} for s in self.special]
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": added,
            "normalizer": None,
            "pre_tokenizer": byte_level,
            "post_processor": dict(byte_level),
            "decoder": dict(byte_level),
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "vocab": dict(sorted(self.vocab.items(), key=lambda kv: kv[1])),
                      "merges": [f"{a} {b}" for a, b in self.merges]},
        }

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
            f.write("\n")

    @staticmethod
    def load(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        model = data["model"]
        if model["type"] != "BPE":
            raise ValueError(f"{path}: model type {model['type']!r} is not BPE")
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        vocab = dict(model["vocab"])
        special = []
        for t in data.get("added_tokens", []):
            vocab[t["content"]] = t["id"]
            special.append(t["content"])
        return Tokenizer(vocab, merges, special)


def train(texts, vocab_size, special_first=(), special_last=(), min_frequency=2):
    """Learn merges on texts (special tokens never merge). Ids: special_first,
    then the 256 byte characters, then merges in order, then special_last.
    Stops at vocab_size tokens or when no pair occurs min_frequency times.
    Ties go to the lexicographically smallest pair, so training is deterministic."""
    specials = list(special_first) + list(special_last)
    split = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None
    words = Counter()
    for text in texts:
        for piece in (split.split(text) if split else [text]):
            if piece and piece not in specials:
                words.update(pre_tokenize(piece))
    corpus = {tuple(w): n for w, n in words.items()}

    vocab = {}
    for s in special_first:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab[BYTE_TO_CHAR[b]] = len(vocab)
    merges = []
    budget = vocab_size - len(vocab) - len(special_last)
    while len(merges) < budget:
        pairs = Counter()
        for w, n in corpus.items():
            for i in range(len(w) - 1):
                pairs[(w[i], w[i + 1])] += n
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < min_frequency:
            break
        a, b = min(p for p, n in pairs.items() if n == best_count)
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        new_corpus = {}
        for w, n in corpus.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_corpus[tuple(out)] = new_corpus.get(tuple(out), 0) + n
        corpus = new_corpus
    for s in special_last:
        vocab[s] = len(vocab)
    return Tokenizer(vocab, merges, specials)

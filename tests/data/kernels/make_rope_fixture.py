#!/usr/bin/python3
"""Writes rope_hf.txt: rotary cos/sin tables computed the way Hugging Face
transformers does (LlamaRotaryEmbedding / GPTNeoXRotaryEmbedding), in float32:

    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    freqs    = torch.outer(positions.float(), inv_freq)
    cos, sin = freqs.cos(), freqs.sin()      # emb = cat(freqs, freqs) repeats them

Run with a python that has torch:  /usr/bin/python3 make_rope_fixture.py
Format, one table per block:
    table <rot_dim> <theta> <n_positions>
    inv_freq <rot_dim/2 floats>
    pos <p> cos <rot_dim/2 floats> sin <rot_dim/2 floats>     (n_positions lines)
Floats are written with 9 significant digits (exact round trip for float32).
"""
import os
import torch

CONFIGS = [(64, 10000.0), (128, 10000.0), (32, 10000.0), (20, 10000.0),
           (128, 500000.0), (96, 10000.0)]
POSITIONS = [0, 1, 2, 17, 255, 1000, 2047, 2048, 3001, 4095]


def fmt(t):
    return " ".join("%.9g" % float(v) for v in t)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rope_hf.txt")
    with open(out, "w") as f:
        for dim, base in CONFIGS:
            inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
            pos = torch.tensor(POSITIONS, dtype=torch.float32)
            freqs = torch.outer(pos, inv_freq)
            cos, sin = freqs.cos(), freqs.sin()
            f.write("table %d %.1f %d\n" % (dim, base, len(POSITIONS)))
            f.write("inv_freq %s\n" % fmt(inv_freq))
            for r, p in enumerate(POSITIONS):
                f.write("pos %d cos %s sin %s\n" % (p, fmt(cos[r]), fmt(sin[r])))


if __name__ == "__main__":
    main()

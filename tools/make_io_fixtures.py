#!/usr/bin/python3
"""Writes the fixtures of the io tests into tests/data/io/.

The safetensors files are written here with plain struct + json (an
implementation independent of the C++ reader), with payloads taken from
torch tensors' raw bytes; the values the reader must produce are saved next
to them as .npy files written by numpy (torch's own bf16/f16 -> f32
conversion). The .npy fixtures for the reader are written by numpy.

Run with Debian's python3 (torch, numpy):  /usr/bin/python3 tools/make_io_fixtures.py
"""
import json
import os
import struct

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "io")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

ST_DTYPE = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
            torch.uint8: "U8", torch.float64: "F64", torch.int32: "I32", torch.bool: "BOOL"}


def raw_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None, pad_to=8, extra_pad=0):
    """tensors: list of (name, torch tensor), stored in that order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    payload = b""
    for name, t in tensors:
        data = raw_bytes(t)
        header[name] = {"dtype": ST_DTYPE[t.dtype], "shape": list(t.shape),
                        "data_offsets": [len(payload), len(payload) + len(data)]}
        payload += data
    text = json.dumps(header).encode()
    if pad_to:
        text += b" " * ((-len(text)) % pad_to)
    text += b" " * extra_pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(payload)


def specials(dtype):
    info = torch.finfo(dtype)
    return torch.tensor([0.0, -0.0, 1.0, -2.5, float("inf"), float("-inf"), float("nan"),
                         info.max, -info.max, info.tiny, info.tiny / 4, 1e-3, 3.14159], dtype=torch.float32).to(dtype)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)

    f32 = torch.randn(2, 3, generator=g)
    bf16 = torch.cat([specials(torch.bfloat16), (torch.randn(27, generator=g) * 100).to(torch.bfloat16)]).reshape(4, 10)
    f16 = torch.cat([specials(torch.float16), (torch.randn(8, generator=g) * 10).to(torch.float16)]).reshape(3, 7)
    i64 = torch.tensor([0, -1, 2**40, -(2**62), 7], dtype=torch.int64)
    # Stored widest dtype first, as the reference writer does, so every tensor is aligned;
    # data order differs from name order.
    tensors = [
        ("doubles", torch.tensor([0.5, -1.25], dtype=torch.float64)),
        ("ids", i64),
        ("f32", f32),
        ("scalar", torch.tensor(42.5)),
        ("empty", torch.zeros(0, 4)),
        ("layer.bf16", bf16),
        ("zz.f16", f16),
        ("bytes", torch.tensor([1, 2, 255], dtype=torch.uint8)),
    ]
    metadata = {"format": "pt", "note": "io fixture"}
    write_safetensors(os.path.join(OUT, "mixed.safetensors"), tensors, metadata=metadata)
    # The same tensors with the data section starting on an odd offset: every view wider than a byte is misaligned.
    write_safetensors(os.path.join(OUT, "unaligned.safetensors"), tensors, metadata=metadata, extra_pad=1)
    np.save(os.path.join(OUT, "mixed.f32.npy"), f32.numpy())
    np.save(os.path.join(OUT, "mixed.bf16.npy"), bf16.float().numpy())
    np.save(os.path.join(OUT, "mixed.f16.npy"), f16.float().numpy())
    np.save(os.path.join(OUT, "mixed.ids.npy"), i64.numpy())

    # A model directory with one file, and one with an index and two shards.
    single = os.path.join(OUT, "model_single")
    os.makedirs(single, exist_ok=True)
    write_safetensors(os.path.join(single, "model.safetensors"),
                      [("a.weight", torch.arange(6, dtype=torch.float32).reshape(2, 3)),
                       ("b.bias", torch.tensor([0.5, -0.5], dtype=torch.bfloat16))])

    sharded = os.path.join(OUT, "model_sharded")
    os.makedirs(sharded, exist_ok=True)
    shard1 = [("a.weight", torch.arange(4, dtype=torch.float32).reshape(2, 2)),
              ("b.bias", torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16))]
    shard2 = [("c.weight", torch.tensor([[0.25, -4.0, 8.0], [1.5, 0.0, -0.125]], dtype=torch.float16))]
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    write_safetensors(os.path.join(sharded, names[0]), shard1)
    write_safetensors(os.path.join(sharded, names[1]), shard2, metadata={"format": "pt"})
    total = sum(len(raw_bytes(t)) for _, t in shard1 + shard2)
    weight_map = {n: names[0] for n, _ in shard1}
    weight_map.update({n: names[1] for n, _ in shard2})
    with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)

    # .npy files written by numpy for the reader: values the test recomputes.
    base = np.arange(24, dtype=np.float64).reshape(2, 3, 4) * 0.5 - 3.0
    np.save(os.path.join(OUT, "np_f4.npy"), base.astype("<f4"))
    np.save(os.path.join(OUT, "np_f8.npy"), (base / 3.0).astype("<f8"))
    np.save(os.path.join(OUT, "np_i4.npy"), np.array([[-7, 0, 2**31 - 1]], dtype="<i4"))
    np.save(os.path.join(OUT, "np_i8.npy"), np.array([-(2**40), 5, 2**62], dtype="<i8"))
    np.save(os.path.join(OUT, "np_bool.npy"), np.array([True, False, True, True]))
    np.save(os.path.join(OUT, "np_u1.npy"), np.array([[0, 200], [255, 1]], dtype=np.uint8))
    np.save(os.path.join(OUT, "np_scalar.npy"), np.float32(2.5))
    np.save(os.path.join(OUT, "np_empty.npy"), np.zeros((0, 3), dtype="<f4"))
    # Layouts the reader must refuse.
    np.save(os.path.join(OUT, "np_fortran.npy"), np.asfortranarray(base.astype("<f4")))
    np.save(os.path.join(OUT, "np_bigendian.npy"), base.astype(">f4"))
    np.save(os.path.join(OUT, "np_complex.npy"), np.array([1 + 2j], dtype="<c8"))


def st_image(header_text, data=b""):
    header_text = header_text.encode() if isinstance(header_text, str) else header_text
    return struct.pack("<Q", len(header_text)) + header_text + data


def write_corpus():
    """Seed inputs for the fuzz targets: the valid fixtures and small variants."""
    st = os.path.join(CORPUS, "safetensors")
    os.makedirs(st, exist_ok=True)
    seeds = {
        "mixed": open(os.path.join(OUT, "mixed.safetensors"), "rb").read(),
        "shard1": open(os.path.join(OUT, "model_sharded", "model-00001-of-00002.safetensors"), "rb").read(),
        "shard2": open(os.path.join(OUT, "model_sharded", "model-00002-of-00002.safetensors"), "rb").read(),
        "empty_header": st_image("{}      "),
        "metadata_only": st_image('{"__metadata__":{"format":"pt"}}'),
        "one_f32": st_image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', bytes(8)),
        "two_bf16": st_image('{"a":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]},'
                             '"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]}}', bytes(range(8))),
        "zero_dim": st_image('{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}'),
        "overlap": st_image('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                            '"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
        "overflow": st_image('{"o":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', bytes(8)),
        "duplicate": st_image('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
                              '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)),
        "huge_length": struct.pack("<Q", 2**63) + b"{}",
    }
    for name, data in seeds.items():
        with open(os.path.join(st, name), "wb") as f:
            f.write(data)

    cfg = os.path.join(CORPUS, "config")
    os.makedirs(cfg, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(OUT, "configs"))):
        with open(os.path.join(OUT, "configs", name)) as f:
            text = json.dumps(json.load(f), separators=(",", ":"))  # compact: the fuzzer's default max_len is 4 KB
        with open(os.path.join(cfg, name.replace(".json", "")), "w") as f:
            f.write(text)
    minimal = {"model_type": "flamingo",
               "vision_config": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
               "media_token_id": 98, "eoc_token_id": 99}
    texts = {
        "llama": {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100, "rope_theta": 5e5,
                  "rope_scaling": None, "head_dim": 16},
        "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                     "intermediate_size": 256, "vocab_size": 100, "rotary_pct": 0.5, "rotary_emb_base": 10000,
                     "rope_parameters": {"rope_theta": 1000, "partial_rotary_factor": 0.25}},
        "mpt": {"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 4, "vocab_size": 100,
                "logit_scale": "inv_sqrt_d_model", "norm_type": "rmsnorm",
                "attn_config": {"attn_type": "grouped_query_attention", "kv_n_heads": 2, "clip_qkv": 6},
                "ffn_config": {"ffn_type": "mptmlp", "ffn_hidden_size": 96}},
        "mosaic_gpt": {"model_type": "mosaic_gpt", "d_model": 64, "n_heads": 4, "n_layers": 4, "vocab_size": 100,
                       "mlp_ratio": 2, "alibi": True, "attn_qk_ln": True},
    }
    for name, text_config in texts.items():
        c = dict(minimal, text_config=text_config,
                 perceiver_config={"max_num_media": 2, "max_num_frames": 1},
                 cross_attn_config={"every_n_layers": 2, "only_attend_immediate_media": False})
        with open(os.path.join(cfg, "minimal_" + name), "w") as f:
            f.write(json.dumps(c, separators=(",", ":")))


if __name__ == "__main__":
    main()
    write_corpus()

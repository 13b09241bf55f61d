#!/usr/bin/python3
"""The end-to-end benchmark of bench_e2e, in PyTorch: the same OpenFlamingo-3B
shaped model (tools/flamingo_ref.py's modules, i.e. OpenFlamingo's, open_clip's
and MosaicGPT's order of operations) on the same random weights, measuring the
same quantities.

    /usr/bin/python3 bench/pytorch_e2e.py [--dir /tmp/flamingo-e2e] [--dtype fp32|bf16|both]
                                          [--threads 2] [--new-tokens 32] [--reps 2]

DIR holds of3b-f32/ and of3b-bf16/ as written by `bench_e2e --make-model DIR`.
fp32 runs the f32 weights; bf16 runs the bf16 weights with the whole model in
bfloat16 (model.to(torch.bfloat16): activations too). Each dtype runs in a
process of its own, so its peak RSS is its own. The weights are used in place
from the memory-mapped file (copy-on-write), as bench_e2e does.

Debian's torch does its float32 matrix products in the system BLAS
(libblas.so.3), which may be the netlib reference implementation (~25x slower).
When Debian's OpenBLAS is installed the script restarts itself with it first on
the library path, and says which BLAS it ran with. Likewise with Debian's
tcmalloc (libtcmalloc-minimal4) preloaded, unless FLAMINGO_E2E_MALLOC=glibc:
on the VM of bench/README.md glibc's malloc returned the large activation
buffers to the kernel after every call, and the page faults of taking them
back made bf16 image encoding ~1.8x slower. OMP_WAIT_POLICY defaults to
PASSIVE: without it this PyTorch build's OpenMP and OpenBLAS threads fight over
the two cores and fp32 runs 1.6-2.8x slower.

The reference recomputes the whole sequence for every new token. For a fair
decoding figure this script adds what Hugging Face's past_key_values does: a
thin KV-cached forward over the reference's own modules (MosaicGPT blocks and
gated cross-attention), which also keeps the visual tokens' keys and values
per prompt instead of projecting them again each step, and computes logits
for the last position only, as bench_e2e does. Before measuring, it checks
that cached decoding gives the reference's logits (recomputed without a cache)
on the small mosaic_gpt test model.
"""

import os
import sys

OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"
TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
if not os.environ.get("FLAMINGO_E2E_BLAS"):
    # The loader reads LD_LIBRARY_PATH and LD_PRELOAD at start-up only: restart with them set.
    env = dict(os.environ, FLAMINGO_E2E_BLAS="1")
    if os.path.isdir(OPENBLAS):
        env["LD_LIBRARY_PATH"] = OPENBLAS + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    if os.path.exists(TCMALLOC) and os.environ.get("FLAMINGO_E2E_MALLOC", "tcmalloc") == "tcmalloc":
        env["LD_PRELOAD"] = TCMALLOC + (" " + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the torch import

import argparse
import contextlib
import json
import subprocess
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import flamingo_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402

IGNORED = ("lang_encoder.old_decoder_blocks.", "lang_encoder.gated_cross_attn_layers.")


# --------------------------------------------------------------------------
# Loading: the reference's modules with the file's tensors mapped in place
# --------------------------------------------------------------------------

@contextlib.contextmanager
def no_init():
    """Skip the modules' random initialisation: every parameter is replaced by
    the file's tensor anyway, and untouched torch.empty memory costs nothing."""
    saved = []
    for cls, attr in ((nn.Linear, "reset_parameters"), (nn.LayerNorm, "reset_parameters"),
                      (nn.Embedding, "reset_parameters"), (nn.Conv2d, "reset_parameters"),
                      (nn.MultiheadAttention, "_reset_parameters")):
        saved.append((cls, attr, getattr(cls, attr)))
        setattr(cls, attr, lambda self: None)
    try:
        yield
    finally:
        for cls, attr, fn in saved:
            setattr(cls, attr, fn)


def load_mapped(model_dir):
    """The reference Flamingo whose parameters are views of the memory-mapped
    model.safetensors (copy-on-write, never written)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    path = os.path.join(model_dir, "model.safetensors")
    header, start = safetensors_io.read_header(path)
    header.pop("__metadata__", None)
    with no_init():
        model = ref.Flamingo(config, embed_dim=header["vision_encoder.proj"]["shape"][1])
    raw = np.memmap(path, dtype=np.uint8, mode="c")
    np_types = {"F32": (np.float32, None), "BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None)}
    params = dict(model.named_parameters())
    for name, info in header.items():
        if name.startswith(IGNORED):
            continue
        if name not in params:
            raise ValueError(f"{path}: tensor {name} is not a parameter of the reference model")
        p = params.pop(name)
        if list(p.shape) != info["shape"]:
            raise ValueError(f"{path}: {name}: shape {info['shape']}, the model expects {list(p.shape)}")
        b, e = info["data_offsets"]
        np_type, view = np_types[info["dtype"]]
        t = torch.from_numpy(raw[start + b:start + e].view(np_type).reshape(info["shape"]))
        p.data = t.view(view) if view is not None else t
    if params:
        raise ValueError(f"{path}: missing tensors {sorted(params)[:5]}")
    return model.eval()


# --------------------------------------------------------------------------
# KV-cached forward over the reference's MosaicGPT language model
# --------------------------------------------------------------------------

class CachedLM:
    """What past_key_values gives a Hugging Face MosaicGPT: each block's keys and
    values are kept and the new positions attend to them; the cross-attention's
    visual keys/values are projected once per prompt. The operations are the
    reference's (MPTAttention, MosaicGPTBlock, MaskedCrossAttention,
    GatedCrossAttentionBlock), step by step."""

    def __init__(self, model):
        self.lm = lm = model.lang_encoder
        if lm.family != "mosaic_gpt":
            raise ValueError(f"the cached forward is written for mosaic_gpt, not {lm.family}")
        self.slopes = ref.alibi_slopes_mosaic_gpt(lm.cfg["n_heads"], lm.alibi_bias_max) if lm.alibi else None
        self.reset()

    def reset(self):
        n = len(self.lm.layers)
        self.k, self.v, self.media_kv = [None] * n, [None] * n, [None] * n
        self.length = 0

    def kv_bytes(self):
        return sum(t.numel() * t.element_size() for t in self.k + self.v if t is not None)

    def media_kv_bytes(self):
        return sum(t.numel() * t.element_size() for kv in self.media_kv if kv is not None for t in kv)

    def block(self, i, blk, x, alibi):
        a = blk.attn
        qkv = a.Wqkv(blk.ln_1(x))
        if a.clip_qkv:
            qkv = qkv.clamp(min=-a.clip_qkv, max=a.clip_qkv)
        q, k, v = qkv.chunk(3, dim=2)
        if a.qk_ln:
            q, k = a.q_ln(q), a.k_ln(k)
        q, k, v = (ref._split_heads(z, a.n_heads) for z in (q, k, v))
        if self.k[i] is not None:
            k, v = torch.cat([self.k[i], k], dim=2), torch.cat([self.v[i], v], dim=2)
        self.k[i], self.v[i] = k, v
        scores = q @ k.transpose(-1, -2) * a.softmax_scale
        if alibi is not None:
            scores = scores + alibi
        scores = ref._causal_fill(scores)  # handles queries after cached keys
        x = x + a.out_proj(ref._merge_heads(scores.softmax(dim=-1) @ v))
        return x + blk.mlp(blk.ln_2(x))

    def cross_attn(self, i, blk, x, media, text_time):
        m = blk.attn
        B, T_img, n = media.shape[:3]
        h = m.heads
        y = m.norm(x)
        q = ref._split_heads(m.to_q(y), h) * m.scale
        if self.media_kv[i] is None:
            k, v = m.to_kv(media.reshape(B, T_img * n, -1)).chunk(2, dim=-1)
            self.media_kv[i] = (ref._split_heads(k, h), ref._split_heads(v, h))
        k, v = self.media_kv[i]
        sim = q @ k.transpose(-1, -2)
        media_time = torch.arange(1, T_img + 1).repeat_interleave(n)
        tt = text_time[:, None, :, None]
        allowed = (tt == media_time) if m.only_attend_immediate_media else (tt >= media_time)
        sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1)
        if m.only_attend_immediate_media:
            attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        x = m.to_out(ref._merge_heads(attn @ v)) * blk.attn_gate.tanh() + x
        return blk.ff(x) * blk.ff_gate.tanh() + x

    def forward(self, ids, media, text_time, last_only=True):
        """ids [1, T] at positions [length, length + T); media [1, T_img, n, D];
        text_time [1, T]. Returns logits [1, 1 or T, V]."""
        lm = self.lm
        x = lm.transformer.wte(ids)
        L = self.length + ids.shape[1]
        if not lm.alibi:
            x = x + lm.transformer.wpe(torch.arange(self.length, L))[None]
        alibi = None
        if self.slopes is not None:  # as the reference: bias of key j = -(L - 1 - j) * slope
            dist = torch.arange(1 - L, 1, dtype=torch.float32)
            alibi = (dist[None, :] * self.slopes[:, None]).to(x.dtype)[None, :, None, :]
        for i, layer in enumerate(lm.layers):
            if layer.gated_cross_attn_layer is not None:
                x = self.cross_attn(i, layer.gated_cross_attn_layer, x, media, text_time)
            x = self.block(i, layer.decoder_layer, x, alibi)
        self.length = L
        if last_only:
            x = x[:, -1:]
        logits = lm.transformer.ln_f(x) @ lm.transformer.wte.weight.t()
        return logits * lm.logit_scale if lm.logit_scale is not None else logits


def cached_greedy(model, lm, media, prompt, new_tokens, on_logits=None):
    """Greedy decoding through CachedLM, stop token ignored: the prompt's
    next token, then new_tokens one-token steps. Returns (ids, seconds and
    process CPU seconds of the steps)."""
    lm.reset()
    ids = torch.tensor([prompt])
    tt = ref.text_time_from_media_locations(ids == model.media_token_id)
    n_media = torch.tensor([[int(tt[0, -1])]])  # new tokens attend as if after the whole prompt
    logits = lm.forward(ids, media, tt)[:, -1]
    if on_logits:
        on_logits(0, logits)
    out = [int(torch.argmax(logits, dim=-1)[0])]
    c0, t0 = time.process_time(), time.perf_counter()
    for step in range(new_tokens):
        logits = lm.forward(torch.tensor([[out[-1]]]), media, n_media)[:, -1]
        if on_logits:
            on_logits(step + 1, logits)
        out.append(int(torch.argmax(logits, dim=-1)[0]))
    return out, time.perf_counter() - t0, time.process_time() - c0


@torch.inference_mode()
def self_check():
    """Cached decoding against the reference's full recomputation, on the
    small mosaic_gpt test model: same logits at every step."""
    model = ref.load_model_dir(os.path.join(HERE, "..", "tests", "data", "model", "mosaic_gpt"))
    cfg = model.config["vision_config"]
    g = torch.Generator().manual_seed(0)
    vision_x = torch.randn(1, 3, 1, 3, cfg["image_size"], cfg["image_size"], generator=g)
    media = model.encode_vision_x(vision_x)
    V = model.lang_encoder.cfg["vocab_size"]
    m, e = model.media_token_id, model.eoc_token_id
    text = lambda n: torch.randint(0, m - 1, (n,), generator=g).tolist()  # noqa: E731
    prompt = text(3) + [m] + text(5) + [e, m] + text(4) + [e, m] + text(2)
    lm = CachedLM(model)
    toks = cached_greedy(model, lm, media, prompt, 11)[0]
    want = ref.greedy_generate(model, None, prompt, 12, eos_token_id=V + 1, media=media)
    worst = 0.0

    def compare(step, logits):  # the reference, recomputing prompt + tokens so far
        nonlocal worst
        seq = torch.tensor([prompt + toks[:step]])
        tt = ref.generation_text_time(seq[:, :len(prompt)], seq.shape[1], m)
        worst = max(worst, float((logits - model.forward_media(media, seq, tt)[:, -1]).abs().max()))

    cached_greedy(model, lm, media, prompt, 11, on_logits=compare)
    if toks != want or worst > 1e-4:
        raise SystemExit(f"self-check failed: cached {toks} vs reference {want}, max logit difference {worst:g}")
    return worst


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------

def blas_library():
    """The libblas.so.3 this process loaded."""
    with open("/proc/self/maps") as f:
        for line in f:
            if "libblas.so" in line or "libopenblas" in line:
                return line.split()[-1]
    return "?"


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# bench_e2e's random numbers (splitmix64, counter based), so that both programs
# see the same prompt and the same pixels.
M64 = (1 << 64) - 1
GAMMA = 0x9e3779b97f4a7c15


def random_u64(seed, i):
    z = (seed + (i + 1) * GAMMA) & M64
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def approx_normal(seed, n):
    """bench_e2e's approx_normal(seed, i) for i < n, bit for bit (float32)."""
    u = np.uint64
    z = u(seed) + (np.arange(n, dtype=u) + u(1)) * u(GAMMA)
    z = (z ^ (z >> u(30))) * u(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> u(27))) * u(0x94d049bb133111eb)
    r = z ^ (z >> u(31))
    s = ((r & u(0xffff)) + ((r >> u(16)) & u(0xffff)) + ((r >> u(32)) & u(0xffff)) + (r >> u(48))).astype(np.float32)
    return (s - np.float32(131070.0)) * (np.float32(1.0) / np.float32(37837.23))


def four_shot_prompt(media, eoc):
    """As bench_e2e: "<image>caption<|endofchunk|>" x 4, "<image>query";
    5 <image> and 128 other tokens (random ordinary ids)."""
    ids, k = [], 0

    def text(n):
        nonlocal k
        for _ in range(n):
            ids.append(300 + random_u64(42, k) % 49000)
            k += 1

    for _ in range(4):
        ids.append(media)
        text(27)
        ids.append(eoc)
    ids.append(media)
    text(16)
    return ids


class Timing:
    def __init__(self):
        self.wall, self.cpu = float("inf"), 0.0

    def run(self, fn):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        w, c = time.perf_counter() - t0, time.process_time() - c0
        if w < self.wall:
            self.wall, self.cpu = w, c
        return out


def load_average():
    return os.getloadavg()[0]


def malloc_library():
    """tcmalloc when preloaded, else glibc's malloc."""
    with open("/proc/self/maps") as f:
        return "tcmalloc" if any("tcmalloc" in line for line in f) else "glibc"


@torch.inference_mode()
def measure(model_dir, dtype, threads, new_tokens, reps):
    torch.set_num_threads(threads)
    loads = [load_average()]
    t0 = time.perf_counter()
    model = load_mapped(model_dir)
    if dtype == "bf16":
        model = model.to(torch.bfloat16)
    load_s = time.perf_counter() - t0
    tdtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    params = dict(model.named_parameters())
    r = {"dtype": dtype, "dir": model_dir, "load_s": load_s, "threads": torch.get_num_threads(),
         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "torch": torch.__version__,
         "blas": blas_library(), "malloc": malloc_library(),
         "params": sum(p.numel() for p in params.values()),
         "weight_bytes": sum(p.numel() * p.element_size() for p in params.values()),
         "decode_bytes": sum(p.numel() * p.element_size() for n, p in params.items()
                             if n.startswith("lang_encoder.") and ".to_kv." not in n)}

    S = model.config["vision_config"]["image_size"]
    pixels = torch.from_numpy(np.float32(0.5) * approx_normal(7, 5 * 3 * S * S)).reshape(1, 5, 1, 3, S, S).to(tdtype)
    model.encode_vision_x(pixels[:, :1])  # warm-up
    img1, img5 = Timing(), Timing()
    for _ in range(reps):
        loads.append(load_average())
        img1.run(lambda: model.encode_vision_x(pixels[:, :1]))
        media = img5.run(lambda: model.encode_vision_x(pixels))

    lm = CachedLM(model)
    prompt = four_shot_prompt(model.media_token_id, model.eoc_token_id)
    ids = torch.tensor([prompt])
    tt = ref.text_time_from_media_locations(ids == model.media_token_id)

    def read_prompt():
        lm.reset()
        return lm.forward(ids, media, tt)

    first = read_prompt()[0, -1].float().numpy()  # warm-up
    theirs = os.path.join(os.path.dirname(model_dir), f"bench_e2e-logits-{'bf16' if dtype == 'bf16' else 'f32'}.npy")
    if os.path.exists(theirs):  # written by bench_e2e --save-logits from the same weights, pixels and prompt
        other = np.load(theirs)
        r["logits_vs_cpp"] = [float(np.abs(other - first).max()), float(first.std()),
                              int(other.argmax()) == int(first.argmax())]
    prompt_t = Timing()
    for _ in range(reps):
        loads.append(load_average())
        prompt_t.run(read_prompt)
    media_kv_bytes = lm.media_kv_bytes()

    hwm_before = status_kb("VmHWM")
    loads.append(load_average())
    buf = torch.ones(1 << 28)  # 1 GiB
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        s = float(buf.sum())
        best = min(best, time.perf_counter() - t0)
    assert s == buf.numel()
    del buf
    peak_reset = reset_peak_rss()

    loads.append(load_average())
    tokens, wall, cpu = cached_greedy(model, lm, media, prompt, new_tokens)
    loads.append(load_average())
    r.update({
        "img1": [img1.wall, img1.cpu], "img5": [img5.wall, img5.cpu],
        "prompt": [prompt_t.wall, prompt_t.cpu], "prompt_tokens": len(prompt),
        "decode_wall": wall / new_tokens, "decode_cpu": cpu / new_tokens,
        "new_tokens": new_tokens, "first_tokens": tokens[:8],
        "bandwidth": 4 * (1 << 28) / best, "kv_bytes": lm.kv_bytes(), "media_kv_bytes": media_kv_bytes,
        "peak_rss": 1024 * (max(hwm_before, status_kb("VmHWM")) if peak_reset else status_kb("VmHWM")),
        "peak_reset": peak_reset, "load_min": min(loads), "load_max": max(loads)})
    return r


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------

def print_table(args, cols):
    print(f"\nPyTorch {torch.__version__} end-to-end, OpenFlamingo-3B shape (random weights), "
          f"{args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}, best of {args.reps} runs")
    print(f"model directory: {args.dir}")
    print(f"BLAS: {', '.join(sorted({r['blas'] for _, r in cols if 'blas' in r}))}; "
          f"malloc: {', '.join(sorted({r['malloc'] for _, r in cols if 'malloc' in r}))}\n")
    gb = lambda x: f"{x / 1e9:.2f} GB"  # noqa: E731
    cores = lambda t: f" ({t[1] / t[0]:.1f} cores)"  # noqa: E731
    rows = [
        ("parameters", lambda r: f"{r['params'] / 1e9:.3f} B"),
        ("weights in memory", lambda r: gb(r["weight_bytes"])),
        ("load (mmap, views)", lambda r: f"{r['load_s']:.2f} s"),
        ("image encoding, 1 image", lambda r: f"{r['img1'][0]:.2f} s" + cores(r["img1"])),
        ("image encoding, 5 images", lambda r: f"{r['img5'][0]:.2f} s" + cores(r["img5"])),
        ("  per image (5 images)", lambda r: f"{r['img5'][0] / 5:.2f} s"),
        ("prompt reading (5 img + 128 tokens)", lambda r: f"{r['prompt'][0]:.2f} s" + cores(r["prompt"])),
        ("  tokens/s", lambda r: f"{r['prompt_tokens'] / r['prompt'][0]:.1f} tokens/s"),
        ("decoding, greedy, KV cache", lambda r: f"{1e3 * r['decode_wall']:.1f} ms/token"
         + f" ({r['decode_cpu'] / r['decode_wall']:.1f} cores)"),
        ("  tokens/s", lambda r: f"{1 / r['decode_wall']:.2f}"),
        ("weight bytes read per token", lambda r: gb(r["decode_bytes"])),
        ("read bandwidth, measured (torch sum)", lambda r: f"{r['bandwidth'] / 1e9:.1f} GB/s"),
        ("decoding: weight bytes / time per token", lambda r: f"{r['decode_bytes'] / r['decode_wall'] / 1e9:.1f} GB/s"
         + f" = {100 * r['decode_bytes'] / r['decode_wall'] / r['bandwidth']:.0f}% of measured"),
        ("KV cache + visual K/V", lambda r: f"{r['kv_bytes'] / 1e6:.0f} MB + {r['media_kv_bytes'] / 1e6:.0f} MB"),
        ("peak RSS (VmHWM)", lambda r: gb(r["peak_rss"])
         + f" = {r['peak_rss'] / (r['weight_bytes'] + r['kv_bytes'] + r['media_kv_bytes']):.3f} x (weights+KV)"),
        ("first generated tokens", lambda r: " ".join(map(str, r["first_tokens"][:6]))),
        ("prompt logits vs bench_e2e's: max |diff|", lambda r: "(no bench_e2e-logits file)" if "logits_vs_cpp" not in r
         else f"{r['logits_vs_cpp'][0]:.2g} (std {r['logits_vs_cpp'][1]:.2g}), argmax "
         + ("same" if r["logits_vs_cpp"][2] else "differs")),
        ("load average during the run", lambda r: f"{r['load_min']:.1f} - {r['load_max']:.1f}"),
    ]
    print(f"{'':42}" + "".join(f" {name:30}" for name, _ in cols))
    for label, cell in rows:
        print(f"{label:42}" + "".join(f" {cell(r) if 'error' not in r else '-':30}" for _, r in cols))
    for name, r in cols:
        if "error" in r:
            print(f"{name}: FAILED: {r['error']}")
        elif not r["peak_reset"]:
            print(f"{name}: note: could not reset VmHWM; the peak includes the 1 GiB bandwidth buffer")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=os.environ.get("FLAMINGO_E2E_DIR") or "/tmp/flamingo-e2e")
    p.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--json-out", help="write the result of one dtype here (used for the child processes)")
    args = p.parse_args()
    sub = {"fp32": "of3b-f32", "bf16": "of3b-bf16"}
    if args.dtype != "both":
        r = measure(os.path.join(args.dir, sub[args.dtype]), args.dtype, args.threads, args.new_tokens, args.reps)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(r, f)
        else:
            print_table(args, [(args.dtype, r)])
        return
    for d in sub.values():
        if not os.path.exists(os.path.join(args.dir, d, "model.safetensors")):
            sys.exit(f"{os.path.join(args.dir, d)}: no model there. Make the random-weight models first:\n"
                     f"  build/bench/bench_e2e --make-model {args.dir}")
    print(f"self-check: cached decoding matches the reference, max logit difference {self_check():.1e}",
          file=sys.stderr)
    cols = []
    for dtype in ("fp32", "bf16"):
        print(f"PyTorch {dtype}...", file=sys.stderr)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, os.path.abspath(__file__), "--dir", args.dir, "--dtype", dtype,
                   "--threads", str(args.threads), "--new-tokens", str(args.new_tokens), "--reps", str(args.reps),
                   "--json-out", out.name]
            proc = subprocess.run(cmd)
            if proc.returncode != 0:
                cols.append((dtype, {"error": f"exit status {proc.returncode}"}))
                continue
            with open(out.name) as f:
                cols.append((dtype, json.load(f)))
    print_table(args, cols)


if __name__ == "__main__":
    main()

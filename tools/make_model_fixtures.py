#!/usr/bin/python3
"""Generate the parity fixtures under tests/data/model/<case>/.

Each case is a small random Flamingo model directory (config.json,
tokenizer.json, model.safetensors) plus expected/ outputs computed by the
PyTorch reference in tools/flamingo_ref.py (float64; decisions checked to be
the same in float32). See tests/data/model/README.md for the file list.

Run from the repository root with Debian's python3-torch:
    /usr/bin/python3 tools/make_model_fixtures.py [case ...]
    /usr/bin/python3 tools/make_model_fixtures.py --check [case ...]
(--check recomputes the committed fixtures with the reference and compares.)
The output is deterministic (fixed seeds, no threading-dependent reductions
that matter at these sizes); rerunning rewrites identical numbers up to the
last float bit at most.
"""

import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flamingo_ref as fr  # noqa: E402
import tiny_tokenizers as tt  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "model")

CORPUS = ("An image of a cat. Output: the cat sat on the mat. Question: what is the dog doing? "
          "Short answer: the dog is running in the park. Output: a photo of two dogs on a red sofa. "
          "Question: how many cats are there? Short answer: two. Output: a man riding a horse 42 times.")

VISION = {"image_size": 28, "patch_size": 14, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0,
          "quick_gelu": True, "tokens_ln_post": False,
          "image_mean": [0.48145466, 0.4578275, 0.40821073],
          "image_std": [0.26862954, 0.26130258, 0.27577711]}
PERCEIVER = {"depth": 2, "heads": 2, "dim_head": 16, "num_latents": 8, "ff_mult": 2,
             "max_num_media": None, "max_num_frames": None}
XATTN = {"every_n_layers": 1, "heads": 2, "dim_head": 16, "ff_mult": 2, "only_attend_immediate_media": True}
EMBED_DIM = 24  # CLIP projection size (proj is [width, 24])

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 48,
         "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
         "hidden_act": "silu", "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 50000.0,
         "rope_scaling": None, "attention_bias": False, "tie_word_embeddings": False,
         "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02}
GPT_NEOX = {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "hidden_size": 48,
            "intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "hidden_act": "gelu",
            "rotary_pct": 0.5, "rotary_emb_base": 10000, "max_position_embeddings": 128,
            "layer_norm_eps": 1e-5, "use_parallel_residual": True, "tie_word_embeddings": False,
            "bos_token_id": 0, "eos_token_id": 0, "initializer_range": 0.02}
MPT = {"model_type": "mpt", "architectures": ["MPTForCausalLM"], "d_model": 48, "n_heads": 6, "n_layers": 4,
       "expansion_ratio": 2, "max_seq_len": 128, "vocab_size": 0, "learned_pos_emb": True, "no_bias": True,
       "norm_type": "low_precision_layernorm", "logit_scale": None, "emb_pdrop": 0,
       "resid_pdrop": 0, "embedding_fraction": 1.0, "init_device": "cpu", "use_cache": False,
       "attn_config": {"attn_type": "multihead_attention", "attn_impl": "torch", "attn_pdrop": 0, "alibi": True,
                       "alibi_bias_max": 8, "qk_ln": True, "clip_qkv": 2.0, "softmax_scale": None,
                       "prefix_lm": False, "attn_uses_sequence_id": False}}
MOSAIC_GPT = {"model_type": "mosaic_gpt", "architectures": ["MosaicGPT"], "d_model": 48, "n_heads": 4,
              "n_layers": 4, "mlp_ratio": 2, "max_seq_len": 128, "attn_impl": "torch", "attn_qk_ln": True,
              "attn_clip_qkv": None, "softmax_scale": None, "alibi": True, "alibi_bias_max": 8,
              "no_bias": True, "logit_scale": 2.0, "low_precision_layernorm": True, "prefix_lm": False,
              "attn_uses_sequence_id": False, "emb_pdrop": 0, "resid_pdrop": 0, "attn_pdrop": 0,
              "embedding_fraction": 1.0, "use_cache": False}

BEAMS = [  # (num_beams, length_penalty, early_stopping, no_repeat_ngram_size, max_new_tokens)
    (3, 0.0, False, 0, 8),     # OpenFlamingo's evaluation settings
    (3, 1.0, False, 2, 10),
    (3, -2.0, True, 0, 6),
    (3, 0.5, "never", 3, 8),
    (2, 2.0, False, 0, 7),
]
GREEDY = [(0, 12), (2, 12)]  # (no_repeat_ngram_size, max_new_tokens)


def write_json(path, obj):
    """An expected/*.json file: indent 1, a final newline."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def case_specs():
    def merge(base, **kw):
        out = json.loads(json.dumps(base))
        out.update(kw)
        return out

    return {
        "llama": dict(
            text=LLAMA, tokenizer="llama", xattn=merge(XATTN, every_n_layers=2),
            prompt="Here are some photos: <image>Output: a cat on the mat.<|endofchunk|><image>Output: the "
                   "dog 7 sat!<|endofchunk|><image>Output:",
            candidates=["a cat", "the dog", "two", "x"]),
        "mpt": dict(
            text=MPT, tokenizer="byte", xattn=XATTN,
            prompt="Look. <image>Question: what is it? Short answer: a cat.<|endofchunk|><image>Question: "
                   "what is it? Short answer:",
            candidates=[" a cat", " the dog", " two"]),
        "mosaic_gpt": dict(
            text=MOSAIC_GPT, tokenizer="byte", xattn=XATTN,
            prompt="An image: <image>Output: a photo of two dogs.<|endofchunk|><image>Output:",
            candidates=[" a cat", " two dogs"]),
        "gpt_neox": dict(
            text=GPT_NEOX, tokenizer="byte", xattn=merge(XATTN, every_n_layers=2),
            prompt="Two pictures. <image>Output: a man riding a horse.<|endofchunk|><image>Output: the cat "
                   "sat.<|endofchunk|><image>Output:",
            candidates=[" the cat", " a horse", " 42"]),
        "all_media": dict(
            text=merge(GPT_NEOX, use_parallel_residual=False, rotary_pct=0.25, hidden_size=64,
                       intermediate_size=128), tokenizer="byte",
            xattn=merge(XATTN, only_attend_immediate_media=False),
            prompt="Before any image there is text. <image>Output: a cat.<|endofchunk|><image>Output: a "
                   "dog.<|endofchunk|><image>Output:",
            candidates=[" a cat", " dogs"]),
        "video": dict(
            text=merge(MPT, attn_config=merge(MPT["attn_config"], alibi=False, qk_ln=False, clip_qkv=None),
                       no_bias=False, logit_scale="inv_sqrt_d_model", n_heads=4),
            tokenizer="byte", xattn=XATTN, frames=2, logit_std=1.5,
            perceiver=merge(PERCEIVER, max_num_frames=3, max_num_media=4),
            prompt="Clips: <image>Output: a dog running.<|endofchunk|><image>Output: a cat.<|endofchunk|>"
                   "<image>Output:",
            candidates=[" a cat", " running"]),
        "ln_post_tokens": dict(
            text=merge(LLAMA, attention_bias=True, num_key_value_heads=4, rope_theta=10000.0),
            tokenizer="llama", xattn=XATTN,
            vision=merge(VISION, tokens_ln_post=True, quick_gelu=False),
            prompt="Photos: <image>Output: two cats.<|endofchunk|><image>Output:",
            candidates=["two cats", "a dog"]),
        "llama_bf16": dict(
            text=LLAMA, tokenizer="llama", xattn=merge(XATTN, every_n_layers=2), dtype="bf16", seed_of="llama",
            prompt="Here are some photos: <image>Output: a cat on the mat.<|endofchunk|><image>Output: the "
                   "dog 7 sat!<|endofchunk|><image>Output:",
            candidates=["a cat", "the dog"]),
    }


# --------------------------------------------------------------------------

def randomize(model, seed, out_std):
    """Random weights with O(1) activations and a visual path that matters:
    linear weights ~ N(0, 1/fan_in), norms ~ 1 + N(0, 0.1), biases N(0, 0.1),
    gates +-U(0.5, 1) (tanh 0.46..0.76), output head N(0, out_std^2/hidden)."""
    g = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float64) * std

    with torch.no_grad():
        for name, p in model.named_parameters():
            short = name.rsplit(".", 1)[-1]
            if name.endswith(("attn_gate", "ff_gate")):
                mag = 0.5 + 0.5 * torch.rand(p.shape, generator=g, dtype=torch.float64)
                sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0).double()
                val = mag * sign
            elif short == "bias" or name.endswith("in_proj_bias"):
                val = normal(p.shape, 0.1)
            elif p.dim() == 1:  # norm weights
                val = 1.0 + normal(p.shape, 0.1)
            elif "class_embedding" in name or "latents" in name:
                val = normal(p.shape, 1.0)
            elif "positional_embedding" in name or "frame_embs" in name or "media_time_embs" in name:
                val = normal(p.shape, 0.5)
            elif name.endswith(("embed_tokens.weight", "embed_in.weight", "wpe.weight")):
                val = normal(p.shape, 1.0)
            elif name.endswith(("lm_head.weight", "embed_out.weight", "wte.weight")):
                val = normal(p.shape, out_std)
            elif name.endswith("conv1.weight"):
                val = normal(p.shape, (p.shape[1] * p.shape[2] * p.shape[3]) ** -0.5)
            elif name.endswith("vision_encoder.proj"):
                val = normal(p.shape, p.shape[0] ** -0.5)
            else:  # Linear [out, in]
                val = normal(p.shape, p.shape[-1] ** -0.5)
            p.copy_(val.to(p.dtype))


def output_head(model):
    lm = model.lang_encoder
    for attr in ("lm_head", "embed_out"):
        if hasattr(lm, attr):
            return getattr(lm, attr).weight
    return lm.input_embeddings().weight


def make_images(rng, n_media, frames, size):
    """Smooth random colour fields plus noise, 8-bit RGB."""
    imgs = []
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    for _ in range(n_media * frames):
        img = np.zeros((size, size, 3))
        for c in range(3):
            a, b, d = rng.uniform(-1, 1, 3)
            img[..., c] = 128 + 90 * np.sin(3 * a * xx + 3 * b * yy + 6 * d)
        img += rng.normal(0, 20, img.shape)
        imgs.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
    return imgs


def pixels_from(imgs, mean, std):
    """open_clip's transform on an image already at image_size: /255, normalise."""
    arr = np.stack(imgs).astype(np.float64) / 255.0
    arr = (arr - np.array(mean)) / np.array(std)
    return arr.transpose(0, 3, 1, 2)  # [N*F, 3, S, S]


STOP_STEPS = (5, 3, 7, 2, 9)


def final_hidden(model, media, ids):
    """The LM's final-norm output [T, hidden] for one sequence."""
    lm = model.lang_encoder
    norm = {"llama": lambda: lm.model.norm, "gpt_neox": lambda: lm.gpt_neox.final_layer_norm,
            "mpt": lambda: lm.transformer.norm_f, "mosaic_gpt": lambda: lm.transformer.ln_f}[lm.family]()
    got = []
    handle = norm.register_forward_hook(lambda mod, inp, out: got.append(out))
    with torch.no_grad():
        model.forward_media(media, torch.tensor([ids]))
    handle.remove()
    return got[0][0]


def greedy_margins(model, media, prompt, tokens):
    """Smallest gap between the chosen and the runner-up score per step."""
    seqs = list(prompt)
    gaps = []
    for tok in tokens:
        logits = fr._next_logits(model, media, torch.tensor([seqs]), len(prompt))[0]
        top = torch.topk(logits, 2).values
        gaps.append(float(top[0] - top[1]))
        seqs.append(tok)
    return min(gaps)


NOISE = 5e-4


def check_noise_robust(name, model, media, ids, result, reps=3):
    """Decisions must not hinge on near-ties: rerun every setting with
    uniform noise of +-NOISE added to the next-token logits."""
    g = torch.Generator().manual_seed(0)
    exact = fr._next_logits

    def noisy(*args):
        logits = exact(*args)
        return logits + (torch.rand(logits.shape, generator=g, dtype=logits.dtype) - 0.5) * (2 * NOISE)

    fr._next_logits = noisy
    try:
        for _ in range(reps):
            for r in result["greedy"]:
                out = fr.greedy_generate(model, None, ids, r["max_new_tokens"], r["no_repeat_ngram_size"],
                                         media=media)
                assert out == r["tokens"], f"{name}: greedy {r} is not robust to logit noise"
            for b in result["beam"]:
                out, _ = fr.beam_generate(model, None, ids, b["max_new_tokens"], b["num_beams"],
                                          b["length_penalty"], b["early_stopping"], b["no_repeat_ngram_size"],
                                          media=media)
                assert out == b["tokens"], f"{name}: beam search {b} is not robust to logit noise"
    finally:
        fr._next_logits = exact


def build_case(name, spec, seed):
    tok_kind = spec["tokenizer"]
    tok = tt.llama_tokenizer(CORPUS) if tok_kind == "llama" else tt.byte_level_tokenizer(CORPUS)
    vocab = tok["model"]["vocab"]
    text_cfg = dict(spec["text"])
    text_cfg["vocab_size"] = len(vocab)
    vision = spec.get("vision", VISION)
    config = {
        "model_type": "flamingo",
        "vision_config": vision,
        "perceiver_config": spec.get("perceiver", PERCEIVER),
        "cross_attn_config": spec["xattn"],
        "text_config": text_cfg,
        "media_token_id": vocab["<image>"],
        "eoc_token_id": vocab["<|endofchunk|>"],
    }
    model = fr.Flamingo(config, embed_dim=EMBED_DIM).double().eval().requires_grad_(False)
    hidden = model.lang_encoder.hidden
    # output rows sized for logits of std ~2.5 (MPT's logit_scale included)
    scale = text_cfg.get("logit_scale") or 1.0
    if scale == "inv_sqrt_d_model":
        scale = hidden ** -0.5
    out_std = spec.get("logit_std", 2.5) * hidden ** -0.5 / float(scale)
    randomize(model, seed, out_std)
    round_weights(model, spec.get("dtype", "f32"))
    return model, tok, config


def write_expected_json(exp, prompt, ids, eoc, result, candidates, cand_tokens, scores):
    """expected/prompt.json (as given), generate.json and score.json of a case."""
    write_json(os.path.join(exp, "prompt.json"), prompt)
    write_json(os.path.join(exp, "generate.json"),
               {"prompt_ids": ids, "eoc_token_id": eoc, "greedy": result["greedy"], "beam": result["beam"]})
    write_json(os.path.join(exp, "score.json"), {"prompt_ids": ids, "candidates": [
        {"candidate": c, "tokens": t, "logprob": s, "mean_logprob": m}
        for c, t, (s, m) in zip(candidates, cand_tokens, scores)]})


def round_weights(model, dtype):
    """Round the float64 weights to the stored dtype, so the expected outputs
    are those of exactly the weights in the file."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(fr._SAFE_DTYPES[dtype]).double())


def run_case(name, spec, seed):
    model, tok, config = build_case(name, spec, seed)
    dtype = spec.get("dtype", "f32")
    frames = spec.get("frames", 1)
    prompt = spec["prompt"]
    ids = tt.encode(tok, prompt)
    media_id, eoc = config["media_token_id"], config["eoc_token_id"]
    n_media = ids.count(media_id)
    assert ids.index(media_id) > 1, f"{name}: the prompt should start with text"
    S = config["vision_config"]["image_size"]
    rng = np.random.RandomState(seed)
    imgs = make_images(rng, n_media, frames, S)
    pixels = pixels_from(imgs, config["vision_config"]["image_mean"], config["vision_config"]["image_std"])
    pixels32 = pixels.astype(np.float32)

    # make the stop token reachable: push its output row towards the final
    # hidden state of a greedy step (away from the earlier ones) until greedy
    # stops (the first step and strength that do, deterministically)
    vision_x = torch.from_numpy(pixels32.astype(np.float64)).reshape(1, n_media, frames, 3, S, S)
    media = model.encode_vision_x(vision_x)
    head = output_head(model)
    base_row = head[eoc].detach().clone()
    first = fr.greedy_generate(model, None, ids, 12, media=media)
    hidden = final_hidden(model, media, ids + first)[len(ids) - 1:]
    chosen = None
    for step in STOP_STEPS:
        d = hidden[step] - hidden[:step].mean(dim=0)
        d = d / d.norm() * base_row.norm()
        for alpha in [0.25 * k for k in range(1, 13)]:
            with torch.no_grad():
                head[eoc] = (base_row + alpha * d).to(fr._SAFE_DTYPES[dtype]).double()
            out = fr.greedy_generate(model, None, ids, 12, media=media)
            if out and out[-1] == eoc and len(out) >= 2:
                chosen = {"step": step, "alpha": alpha}
                break
        if chosen:
            break
    if chosen is None:
        with torch.no_grad():
            head[eoc] = base_row

    # ---- outputs (float64 reference) ----
    with torch.no_grad():
        pooled, tokens = model.vision_features(vision_x)
        media = model.perceiver(tokens)
        logits = model.forward_media(media, torch.tensor([ids]))[0]

    result = {"greedy": [], "beam": []}
    for nrng, mx in GREEDY:
        out = fr.greedy_generate(model, None, ids, mx, no_repeat_ngram_size=nrng, media=media)
        margin = greedy_margins(model, media, ids, out) if nrng == 0 else None
        result["greedy"].append({"num_beams": 1, "max_new_tokens": mx, "no_repeat_ngram_size": nrng,
                                 "tokens": out, "ended_on_eoc": bool(out and out[-1] == eoc),
                                 "text": tt.decode(tok, [t for t in out if t != eoc]),
                                 **({"min_top2_logit_gap": round(margin, 4)} if margin is not None else {})})
    for nb, lp, es, nrng, mx in BEAMS:
        out, score = fr.beam_generate(model, None, ids, mx, nb, length_penalty=lp, early_stopping=es,
                                      no_repeat_ngram_size=nrng, media=media)
        result["beam"].append({"num_beams": nb, "length_penalty": lp, "early_stopping": es,
                               "no_repeat_ngram_size": nrng, "max_new_tokens": mx, "tokens": out,
                               "ended_on_eoc": bool(out and out[-1] == eoc), "score": score,
                               "text": tt.decode(tok, [t for t in out if t != eoc])})

    cands = [tt.encode(tok, c, add_special_tokens=False) for c in spec["candidates"]]
    scores = fr.score_candidates(model, None, ids, cands, media=media)

    # ---- the same decisions in float32 (guards against near-ties) ----
    m32 = fr.Flamingo(config, embed_dim=EMBED_DIM).eval()
    m32.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    media32 = m32.encode_vision_x(vision_x.float())
    for g in result["greedy"]:
        assert fr.greedy_generate(m32, None, ids, g["max_new_tokens"], g["no_repeat_ngram_size"],
                                  media=media32) == g["tokens"], f"{name}: greedy differs in float32"
    for b in result["beam"]:
        out32, _ = fr.beam_generate(m32, None, ids, b["max_new_tokens"], b["num_beams"], b["length_penalty"],
                                    b["early_stopping"], b["no_repeat_ngram_size"], media=media32)
        assert out32 == b["tokens"], f"{name}: beam search differs in float32 ({b})"

    # ---- and under small logit noise (10-100x a float32 implementation's error)
    check_noise_robust(name, model, media, ids, result)

    # ---- write ----
    case_dir = os.path.join(ROOT, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    fr.save_model_dir(model, case_dir, tok, dtype=dtype)
    exp = os.path.join(case_dir, "expected")
    os.makedirs(os.path.join(exp, "images"))
    for k, img in enumerate(imgs):
        Image.fromarray(img, "RGB").save(os.path.join(exp, "images", f"media{k // frames}_frame{k % frames}.png"))
    np.save(os.path.join(exp, "pixels.npy"), pixels32.reshape(n_media, frames, 3, S, S))
    np.save(os.path.join(exp, "input_ids.npy"), np.array(ids, dtype=np.int64))
    np.save(os.path.join(exp, "vision_tokens.npy"), tokens[0].numpy().astype(np.float32))
    np.save(os.path.join(exp, "embed.npy"), pooled[0].reshape(n_media * frames, -1).numpy().astype(np.float32))
    np.save(os.path.join(exp, "perceiver.npy"), media[0].numpy().astype(np.float32))
    np.save(os.path.join(exp, "logits.npy"), logits.numpy().astype(np.float32))

    beam_differs = any(b["tokens"] != result["greedy"][0]["tokens"] for b in result["beam"])
    write_expected_json(exp, {"text": prompt, "input_ids": ids, "num_media": n_media, "frames": frames,
                              "images": [f"images/media{k // frames}_frame{k % frames}.png" for k in range(len(imgs))],
                              "weights_dtype": dtype, "eoc_output_row_shift": chosen},
                        ids, eoc, result, spec["candidates"], cands, scores)
    print(f"{name}: T={len(ids)} media={n_media}x{frames} V={config['text_config']['vocab_size']} "
          f"eoc-shift={chosen} greedy={result['greedy'][0]['tokens']} beam-differs={beam_differs} "
          f"min-gap={result['greedy'][0].get('min_top2_logit_gap')}")


def check_fixtures(names):
    """Recompute every committed case from its model directory with the
    reference and compare with expected/ (keeps fixtures and reference in
    step). Returns the number of mismatches."""
    bad = 0
    for name in names:
        d = os.path.join(ROOT, name)
        exp = os.path.join(d, "expected")
        model = fr.load_model_dir(d, torch.float64)
        with open(os.path.join(exp, "prompt.json")) as f:
            prompt = json.load(f)
        tok = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
        ids = prompt["input_ids"]
        problems = []
        if tt.encode(tok, prompt["text"]) != ids:
            problems.append("input_ids != tokenizer(text)")
        pixels = np.load(os.path.join(exp, "pixels.npy"))
        imgs = [np.asarray(Image.open(os.path.join(exp, p)).convert("RGB")) for p in prompt["images"]]
        vc = model.config["vision_config"]
        if np.abs(pixels_from(imgs, vc["image_mean"], vc["image_std"]).astype(np.float32)
                  - pixels.reshape(-1, *pixels.shape[2:])).max() > 0:
            problems.append("pixels.npy != preprocessed PNGs")
        vision_x = torch.from_numpy(pixels.astype(np.float64))[None]
        with torch.no_grad():
            pooled, tokens = model.vision_features(vision_x)
            media = model.perceiver(tokens)
            logits = model.forward_media(media, torch.tensor([ids]))[0]
        for fname, got in (("vision_tokens", tokens[0]), ("embed", pooled[0].reshape(-1, pooled.shape[-1])),
                           ("perceiver", media[0]), ("logits", logits)):
            want = np.load(os.path.join(exp, fname + ".npy"))
            if got.shape != want.shape or np.abs(got.numpy() - want).max() > 1e-5 * max(1.0, np.abs(want).max()):
                problems.append(fname)
        with open(os.path.join(exp, "generate.json")) as f:
            gen = json.load(f)
        for r in gen["greedy"]:
            if fr.greedy_generate(model, None, ids, r["max_new_tokens"], r["no_repeat_ngram_size"],
                                  media=media) != r["tokens"]:
                problems.append(f"greedy {r['no_repeat_ngram_size']}")
        for b in gen["beam"]:
            out, score = fr.beam_generate(model, None, ids, b["max_new_tokens"], b["num_beams"], b["length_penalty"],
                                          b["early_stopping"], b["no_repeat_ngram_size"], media=media)
            if out != b["tokens"] or abs(score - b["score"]) > 1e-6 * max(1.0, abs(b["score"])):
                problems.append(f"beam {b['length_penalty']}")
        with open(os.path.join(exp, "score.json")) as f:
            sc = json.load(f)
        for c, (s, m) in zip(sc["candidates"], fr.score_candidates(model, None, ids, [c["tokens"] for c in
                                                                                     sc["candidates"]],
                                                                   media=media)):
            if tt.encode(tok, c["candidate"], add_special_tokens=False) != c["tokens"] or \
                    abs(s - c["logprob"]) > 1e-6 or abs(m - c["mean_logprob"]) > 1e-6:
                problems.append(f"score {c['candidate']!r}")
        print(f"{name}: {'ok' if not problems else 'MISMATCH ' + ', '.join(problems)}")
        bad += len(problems)
    return bad


def main(argv):
    torch.set_num_threads(1)  # reductions in a fixed order
    specs = case_specs()
    if argv and argv[0] == "--check":
        return 1 if check_fixtures(argv[1:] or list(specs)) else 0
    names = argv or list(specs)
    seeds = {n: 1000 + i for i, n in enumerate(specs)}
    for name in names:
        spec = specs[name]
        run_case(name, spec, seeds[spec.get("seed_of", name)])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

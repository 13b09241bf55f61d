#!/usr/bin/python3
"""Convert a released OpenFlamingo model into a flamingo model directory.

Inputs (what OpenFlamingo's create_model_and_transforms + load_state_dict use):
  --checkpoint  OpenFlamingo's checkpoint.pt: the trained parts (perceiver.*,
                lang_encoder.<layers>.{i}.gated_cross_attn_layer.*) and the
                language model's resized embeddings; a flat state dict or a
                training checkpoint {"model_state_dict": ...} with "module."
                prefixes.
  --lm          the language model's Hugging Face directory: config.json,
                tokenizer.json (+ tokenizer_config.json / special_tokens_map.json),
                pytorch_model.bin or model.safetensors, or their shards with
                an index.
  --tokenizer   (optional) where tokenizer.json lives when it is not in --lm.
  --clip        open_clip / OpenAI CLIP weights with "visual.*" tensors: OpenAI's
                TorchScript ViT-L-14.pt, open_clip_pytorch_model.bin, or a
                .safetensors file.
Output (SPEC.md section 1): config.json, tokenizer.json (with <|endofchunk|>,
<image> and, when the tokenizer has no pad token, <PAD> added as OpenFlamingo
adds them), model.safetensors or shards with model.safetensors.index.json.

Everything is streamed tensor by tensor, one language-model shard at a time,
so converting OpenFlamingo-9B needs about the largest shard in memory.

Usage:
  /usr/bin/python3 tools/convert_openflamingo.py --checkpoint checkpoint.pt \\
      --lm mpt-1b-redpajama-200b/ --clip ViT-L-14.pt --out OpenFlamingo-3B [--dtype bf16]
"""

import argparse
import json
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

LAYERS_PATH = {"llama": "model.layers", "gpt_neox": "gpt_neox.layers", "mpt": "transformer.blocks",
               "mosaic_gpt": "transformer.blocks"}
INPUT_EMBEDDING = {"llama": "model.embed_tokens.weight", "gpt_neox": "gpt_neox.embed_in.weight",
                   "mpt": "transformer.wte.weight", "mosaic_gpt": "transformer.wte.weight"}
# untied output heads; None: the head is the input embedding (MPT / MosaicGPT)
OUTPUT_EMBEDDING = {"llama": "lm_head.weight", "gpt_neox": "embed_out.weight", "mpt": None, "mosaic_gpt": None}
# HF buffers that some checkpoints carry; not weights
BUFFER_SUFFIXES = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq", ".self_attn.rotary_emb.inv_freq")

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


class ConvertError(RuntimeError):
    pass


def fail(msg):
    raise ConvertError(msg)


# --------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------

def load_checkpoint(path):
    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "model_state_dict" in sd:
        sd = sd["model_state_dict"]
    if not isinstance(sd, dict):
        fail(f"{path}: not a state dict")
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        k = k.replace("module.", "").replace("._checkpoint_wrapped_module", "")
        if k.startswith(("lang_encoder.old_decoder_blocks.", "lang_encoder.gated_cross_attn_layers.",
                         "vision_encoder.")):
            continue  # duplicates (or the frozen CLIP) - the real source is elsewhere
        out[k] = v
    if not any(k.startswith("perceiver.") for k in out):
        fail(f"{path}: no perceiver.* tensors - is this an OpenFlamingo checkpoint?")
    return out


def load_clip_visual(path):
    """The visual.* tensors of a CLIP checkpoint, as {name without 'visual.': tensor}."""
    if path.endswith(".safetensors"):
        sd = safetensors_io.load_file(path)
    else:
        try:  # OpenAI's release is a TorchScript archive
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError:
            sd = torch.load(path, map_location="cpu")
        if isinstance(sd, dict) and "state_dict" in sd:
            sd = sd["state_dict"]
    out = {}
    for k, v in sd.items():
        k = k.replace("module.", "")
        if k.startswith("visual."):
            out[k[len("visual."):]] = v
    if "conv1.weight" not in out or "proj" not in out:
        fail(f"{path}: no visual.conv1.weight / visual.proj - not an open_clip ViT checkpoint")
    if any(k.startswith(("trunk.", "attnpool.", "layer1.")) for k in out):
        fail(f"{path}: only open_clip VisionTransformer towers are supported")
    return out


def lm_weight_files(lm_dir):
    """The LM's weight files in order (shards or a single file)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = os.path.join(lm_dir, index)
        if os.path.exists(p):
            with open(p) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(lm_dir, f) for f in files]
    for single in ("model.safetensors", "pytorch_model.bin"):
        p = os.path.join(lm_dir, single)
        if os.path.exists(p):
            return [p]
    fail(f"{lm_dir}: no model.safetensors, pytorch_model.bin or shard index")


def iter_lm_tensors(files):
    for path in files:
        if path.endswith(".safetensors"):
            header, _ = safetensors_io.read_header(path)
            for name in header:
                if name != "__metadata__":
                    yield name, safetensors_io.load_file(path, names={name})[name]
        else:
            sd = torch.load(path, map_location="cpu")
            for name in list(sd):
                yield name, sd.pop(name)
            del sd


# --------------------------------------------------------------------------
# Tokenizer: OpenFlamingo's added tokens
# --------------------------------------------------------------------------

def _pad_token_of(lm_dir):
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        p = os.path.join(lm_dir, fname)
        if os.path.exists(p):
            with open(p) as f:
                pad = json.load(f).get("pad_token")
            if pad:
                return pad
    return None


def flamingo_tokenizer(lm_dir):
    """tokenizer.json with OpenFlamingo's tokens; returns (json, eoc id, media id, size)."""
    p = os.path.join(lm_dir, "tokenizer.json")
    if not os.path.exists(p):
        fail(f"{lm_dir}: tokenizer.json is required (convert a sentencepiece-only tokenizer with "
             "transformers first)")
    with open(p, encoding="utf-8") as f:
        tok = json.load(f)
    ids = {}
    for name, i in tok["model"]["vocab"].items():
        ids[name] = i
    for a in tok.get("added_tokens", []):
        ids[a["content"]] = a["id"]
    # add_special_tokens({"additional_special_tokens": [...]}) then a pad token
    # when the tokenizer has none; new ids continue after the current ones
    wanted = ["<|endofchunk|>", "<image>"]
    if _pad_token_of(lm_dir) is None:
        wanted.append("<PAD>")
    for content in wanted:
        if content in ids:
            continue
        new_id = max(ids.values()) + 1
        ids[content] = new_id
        tok.setdefault("added_tokens", []).append(
            {"id": new_id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True})
    return tok, ids["<|endofchunk|>"], ids["<image>"], max(ids.values()) + 1


# --------------------------------------------------------------------------
# Config inference
# --------------------------------------------------------------------------

def vision_config(visual, head_width, quick_gelu, tokens_ln_post):
    width, _, patch, _ = visual["conv1.weight"].shape
    grid2 = visual["positional_embedding"].shape[0] - 1
    grid = int(round(grid2 ** 0.5))
    if grid * grid != grid2:
        fail(f"visual.positional_embedding: {grid2 + 1} rows is not a square grid + 1")
    layers = len({int(m.group(1)) for k in visual for m in [re.match(r"transformer\.resblocks\.(\d+)\.", k)] if m})
    if width % head_width:
        fail(f"vision width {width} is not a multiple of head width {head_width}")
    mlp = visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    return {"image_size": grid * patch, "patch_size": patch, "width": width, "layers": layers,
            "head_width": head_width, "mlp_ratio": mlp / width, "quick_gelu": quick_gelu,
            "tokens_ln_post": tokens_ln_post, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}


def perceiver_config(ckpt, dim_head):
    dim = ckpt["perceiver.latents"].shape[1]
    depth = len({int(m.group(1)) for k in ckpt for m in [re.match(r"perceiver\.layers\.(\d+)\.", k)] if m})
    inner = ckpt["perceiver.layers.0.0.to_q.weight"].shape[0]
    if inner % dim_head:
        fail(f"perceiver to_q has {inner} rows, not a multiple of dim_head {dim_head}")
    ff = ckpt["perceiver.layers.0.1.1.weight"].shape[0]
    fe, mt = ckpt.get("perceiver.frame_embs"), ckpt.get("perceiver.media_time_embs")
    return {"depth": depth, "heads": inner // dim_head, "dim_head": dim_head,
            "num_latents": ckpt["perceiver.latents"].shape[0], "ff_mult": ff / dim if ff % dim else ff // dim,
            "max_num_media": None if mt is None else mt.shape[0],
            "max_num_frames": None if fe is None else fe.shape[0]}


def cross_attn_config(ckpt, layers_path, n_layers, hidden, dim_head, every_n, only_immediate):
    prefix = f"lang_encoder.{layers_path}."
    with_xattn = sorted({int(m.group(1)) for k in ckpt
                         for m in [re.match(re.escape(prefix) + r"(\d+)\.gated_cross_attn_layer\.", k)] if m})
    if not with_xattn:
        fail(f"checkpoint: no {prefix}{{i}}.gated_cross_attn_layer.* tensors (wrong language model?)")
    inferred = with_xattn[0] + 1
    every_n = every_n or inferred
    expected = [i for i in range(n_layers) if (i + 1) % every_n == 0]
    if with_xattn != expected:
        fail(f"checkpoint has cross-attention on layers {with_xattn}, but every_n_layers={every_n} "
             f"with {n_layers} layers means {expected}")
    first = f"{prefix}{with_xattn[0]}.gated_cross_attn_layer."
    inner = ckpt[first + "attn.to_q.weight"].shape[0]
    ff = ckpt[first + "ff.1.weight"].shape[0]
    if inner % dim_head:
        fail(f"cross-attention to_q has {inner} rows, not a multiple of dim_head {dim_head}")
    return {"every_n_layers": every_n, "heads": inner // dim_head, "dim_head": dim_head,
            "ff_mult": ff // hidden if ff % hidden == 0 else ff / hidden,
            "only_attend_immediate_media": only_immediate}, set(with_xattn)


def check_visual_width(visual, ckpt, clip_path, ckpt_path, xattn_layer):
    """The CLIP tower's width (its patch tokens' size) must be what the
    checkpoint's Perceiver and cross-attention take in (OpenFlamingo's vis_dim)."""
    width = visual["conv1.weight"].shape[0]
    takes = {"perceiver.latents": ckpt["perceiver.latents"].shape[1],
             xattn_layer + "attn.to_kv.weight": ckpt[xattn_layer + "attn.to_kv.weight"].shape[1]}
    for name, expected in takes.items():
        if expected != width:
            fail(f"{clip_path}: the CLIP vision tower is {width} wide, but {ckpt_path} takes "
                 f"{expected}-wide visual features ({name}); the CLIP weights do not belong to this checkpoint")


def text_dims(cfg):
    family = cfg.get("model_type")
    if family not in LAYERS_PATH:
        fail(f"language model model_type {family!r} is not supported (llama, gpt_neox, mpt, mosaic_gpt)")
    if family in ("mpt", "mosaic_gpt"):
        return family, cfg["n_layers"], cfg["d_model"]
    return family, cfg["num_hidden_layers"], cfg["hidden_size"]


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

def parse_size(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?B?)", s.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r} (e.g. 2GB, 500MB)")
    mult = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9}[m.group(2)]
    return int(float(m.group(1)) * mult)


class ShardedWriter:
    """model.safetensors, or model-0000K-of-0000N.safetensors + index when
    max_shard_size is given and exceeded."""

    def __init__(self, out_dir, max_shard_size=None):
        self.out_dir, self.max = out_dir, max_shard_size
        self.shards, self.weight_map, self.total = [], {}, 0
        self.names = set()
        self._open()

    def _open(self):
        path = os.path.join(self.out_dir, f"shard-{len(self.shards):05d}.tmp")
        self.cur = safetensors_io.StreamWriter(path, metadata={"format": "pt"})
        self.shards.append(path)

    def add(self, name, t):
        if name in self.names:
            fail(f"tensor {name} written twice")
        self.names.add(name)
        nbytes = t.numel() * t.element_size()
        if self.max and self.cur.nbytes and self.cur.nbytes + nbytes > self.max:
            self.cur.close()
            self._open()
        self.cur.add(name, t)
        self.weight_map[name] = len(self.shards) - 1
        self.total += nbytes

    def abort(self):
        self.cur.data.close()
        for path in self.shards:
            for p in (path, path + ".data.tmp"):
                if os.path.exists(p):
                    os.remove(p)

    def close(self):
        self.cur.close()
        n = len(self.shards)
        if n == 1:
            os.replace(self.shards[0], os.path.join(self.out_dir, "model.safetensors"))
            return
        names = [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]
        for tmp, final in zip(self.shards, names):
            os.replace(tmp, os.path.join(self.out_dir, final))
        index = {"metadata": {"total_size": self.total},
                 "weight_map": {k: names[v] for k, v in sorted(self.weight_map.items())}}
        with open(os.path.join(self.out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f, indent=2)
            f.write("\n")


def resize_rows(t, rows, std, gen, name):
    """HF resize_token_embeddings: keep the first rows, initialise new ones
    N(0, initializer_range) (seeded here; upstream draws them at random)."""
    if t.shape[0] == rows:
        return t
    if t.shape[0] > rows:
        return t[:rows]
    print(f"note: {name}: {rows - t.shape[0]} new rows not in the checkpoint, initialised "
          f"N(0, {std}) as Hugging Face's resize does", file=sys.stderr)
    extra = torch.randn(rows - t.shape[0], t.shape[1], generator=gen) * std
    return torch.cat([t.float(), extra]).to(t.dtype)


def convert(args):
    ckpt = load_checkpoint(args.checkpoint)
    visual = load_clip_visual(args.clip)
    with open(os.path.join(args.lm, "config.json")) as f:
        text_cfg = json.load(f)
    family, n_layers, hidden = text_dims(text_cfg)
    layers_path = LAYERS_PATH[family]
    tok, eoc_id, media_id, tok_size = flamingo_tokenizer(args.tokenizer or args.lm)

    emb_name = "lang_encoder." + INPUT_EMBEDDING[family]
    vocab = ckpt[emb_name].shape[0] if emb_name in ckpt else tok_size
    if vocab < tok_size:
        fail(f"checkpoint {emb_name} has {vocab} rows but the tokenizer needs {tok_size} "
             f"(<image> = {media_id}, <|endofchunk|> = {eoc_id})")
    if vocab != tok_size:
        print(f"note: vocabulary {vocab} from {emb_name} (tokenizer: {tok_size})", file=sys.stderr)
    text_cfg["vocab_size"] = vocab  # as resize_token_embeddings records it

    xattn, xattn_layers = cross_attn_config(ckpt, layers_path, n_layers, hidden, args.xattn_dim_head,
                                            args.cross_attn_every_n_layers, not args.all_media)
    check_visual_width(visual, ckpt, args.clip, args.checkpoint,
                       f"lang_encoder.{layers_path}.{min(xattn_layers)}.gated_cross_attn_layer.")
    config = {
        "model_type": "flamingo",
        "vision_config": vision_config(visual, args.vision_head_width, not args.no_quick_gelu,
                                       args.tokens_ln_post),
        "perceiver_config": perceiver_config(ckpt, args.perceiver_dim_head),
        "cross_attn_config": xattn,
        "text_config": text_cfg,
        "media_token_id": media_id,
        "eoc_token_id": eoc_id,
    }

    os.makedirs(args.out, exist_ok=True)
    dtype = DTYPES[args.dtype]
    writer = ShardedWriter(args.out, args.max_shard_size)
    try:
        for k in sorted(visual):
            writer.add("vision_encoder." + k, visual[k].to(dtype).contiguous())
        del visual
        used = set()
        for k in sorted(ckpt):
            if k.startswith("perceiver.") or ".gated_cross_attn_layer." in k:
                writer.add(k, ckpt[k].to(dtype).contiguous())
                used.add(k)

        gen = torch.Generator().manual_seed(0)
        std = text_cfg.get("initializer_range", text_cfg.get("init_std", 0.02))
        layer_re = re.compile(re.escape(layers_path) + r"\.(\d+)\.(.*)")
        out_emb = OUTPUT_EMBEDDING[family]
        seen = set()
        for name, t in iter_lm_tensors(lm_weight_files(args.lm)):
            if name.endswith(BUFFER_SUFFIXES) or not torch.is_floating_point(t):
                continue
            m = layer_re.fullmatch(name)
            if m:
                if int(m.group(1)) >= n_layers:
                    fail(f"{name}: layer index beyond n_layers={n_layers}")
                out = f"lang_encoder.{layers_path}.{m.group(1)}.decoder_layer.{m.group(2)}"
            else:
                out = "lang_encoder." + name
            if out in ckpt:  # trained / resized in OpenFlamingo (the embeddings)
                t = ckpt[out]
                used.add(out)
            elif name in (INPUT_EMBEDDING[family], out_emb):
                t = resize_rows(t, vocab, std, gen, name)
            writer.add(out, t.to(dtype).contiguous())
            seen.add(out)
        for k in sorted(set(ckpt) - used - seen):
            print(f"note: checkpoint tensor {k} is not part of the model; skipped", file=sys.stderr)
        if emb_name not in seen:
            fail(f"{args.lm}: no {INPUT_EMBEDDING[family]} in the language model weights")
        if out_emb and "lang_encoder." + out_emb not in seen and not text_cfg.get("tie_word_embeddings", False):
            fail(f"{args.lm}: no {out_emb} in the language model weights")
    except BaseException:
        writer.abort()
        raise
    writer.close()

    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    print(f"wrote {args.out}: {family}, {n_layers} layers, cross-attention every {xattn['every_n_layers']} "
          f"on {len(xattn_layers)} layers, vocabulary {vocab}, <image> = {media_id}, "
          f"<|endofchunk|> = {eoc_id}, {writer.total / 1e9:.2f} GB {args.dtype}", file=sys.stderr)
    return config


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="OpenFlamingo checkpoint.pt")
    p.add_argument("--lm", required=True, help="the language model's Hugging Face directory")
    p.add_argument("--clip", required=True, help="CLIP weights (ViT-L-14.pt, open_clip_pytorch_model.bin, ...)")
    p.add_argument("--tokenizer", default=None,
                   help="directory with the tokenizer files, when not in --lm (OpenFlamingo's tokenizer_path)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="stored weight type (default f32)")
    p.add_argument("--max-shard-size", type=parse_size, default=None,
                   help="split the weights into shards of at most this size (e.g. 4GB)")
    p.add_argument("--cross-attn-every-n-layers", type=int, default=None,
                   help="OpenFlamingo's --cross_attn_every_n_layers (default: inferred from the checkpoint)")
    p.add_argument("--vision-head-width", type=int, default=64, help="open_clip head_width (ViT-L/14: 64)")
    p.add_argument("--no-quick-gelu", action="store_true",
                   help="the CLIP tower uses exact GELU (non-OpenAI weights)")
    p.add_argument("--tokens-ln-post", action="store_true",
                   help="apply ln_post to the patch tokens (models trained with open_clip >= 2.21)")
    p.add_argument("--perceiver-dim-head", type=int, default=64)
    p.add_argument("--xattn-dim-head", type=int, default=64)
    p.add_argument("--all-media", action="store_true",
                   help="only_attend_immediate_media = false (no released model uses it)")
    args = p.parse_args(argv)
    if args.cross_attn_every_n_layers is not None and args.cross_attn_every_n_layers < 1:
        p.error("--cross-attn-every-n-layers must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        convert(args)
    except (ConvertError, KeyError, OSError) as e:
        print(f"convert_openflamingo: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

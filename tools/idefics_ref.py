"""Independent PyTorch reference of IDEFICS (Hugging Face's Flamingo reproduction).

Written from the semantics of transformers' IDEFICS files, read at these
commits of huggingface/transformers (no code taken from them):
  - src/transformers/models/idefics/modeling_idefics.py   00b676f8f0489b88652a31d70751cc540dd06305
  - src/transformers/models/idefics/vision.py             086ec74cd08a36bfae3c9321d2cc51a2582705f9
  - src/transformers/models/idefics/perceiver.py          1237e7f1d5dc0019e68d129d2b6df54ed331b30c
  - src/transformers/models/idefics/configuration_idefics.py 045e910e889d20cfbef6a6405f02a5a9aef4ce54
  - src/transformers/models/idefics/processing_idefics.py 00174e827cb29e51df85fab01ef0e71f05127efe
  - src/transformers/models/idefics/image_processing_idefics.py 06053b84c14d72e9789fbf27844a75aa89b3ded7

What it models (and where IDEFICS differs from OpenFlamingo, tools/flamingo_ref.py):
  - vision tower: CLIP ViT with Hugging Face names (embeddings.*, pre_layrnorm,
    encoder.layers.*.self_attn.{q,k,v,out}_proj); the visual tokens handed to
    the Perceiver are the whole last hidden state, class token included, with
    no post-layernorm;
  - Perceiver: separate q/k/v projections, optional per-head LayerNorms on q
    and k (qk_layer_norms_perceiver), a ReLU MLP of width 4 x vision_embed_dim;
  - decoder: LLaMA (RMSNorm, rotary with base 10000 regardless of config, SwiGLU);
    a gated cross-attention layer *before* decoder layer i when
    i % cross_layer_interval == 0, itself LLaMA-shaped: RMSNorm, attention of
    text over the visual tokens (k/v from the vision width, optional per-head
    RMSNorms on q and k), SwiGLU MLP, each branch scaled by tanh(alpha)
    (alpha a float or a vector of hidden_size), and the attention branch zeroed
    on rows that attend to no image (cross_attention_gate);
  - decoupled embedding and output head: ids >= vocab_size use
    additional_embedding, the logits are [lm_head | additional_fc];
  - the processor: `<fake_token_around_image><image><fake_token_around_image>`
    per image (an image right after another shares the fake token between
    them), a leading `<s>`, and image_attention_mask: each token attends to the
    latest image at or before it, none before the first image or after `</s>`
    until the next image; generated tokens repeat the last prompt row.

The reference has no KV cache: generation recomputes the whole sequence.
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from . import flamingo_ref as fr
    from . import safetensors_io
except ImportError:  # pragma: no cover
    import flamingo_ref as fr
    import safetensors_io

FAKE, IMAGE, EOU = "<fake_token_around_image>", "<image>", "<end_of_utterance>"


# --------------------------------------------------------------------------
# Vision tower
# --------------------------------------------------------------------------

class VisionEmbeddings(nn.Module):
    def __init__(self, d, image_size, patch):
        super().__init__()
        self.patch = patch
        n = (image_size // patch) ** 2 + 1
        self.class_embedding = nn.Parameter(torch.zeros(d))
        self.patch_embedding = nn.Conv2d(3, d, patch, stride=patch, bias=False)
        self.position_embedding = nn.Embedding(n, d)

    def forward(self, px):
        x = self.patch_embedding(px).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight[None]


class VisionAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        q, k, v = (fr._split_heads(p(x), self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        a = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
        return self.out_proj(fr._merge_heads(a @ v))


class VisionMLP(nn.Module):
    def __init__(self, d, inner, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(d, inner), nn.Linear(inner, d), fr._activation(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["embed_dim"], c["layer_norm_eps"]
        self.self_attn = VisionAttention(d, c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(d, eps=eps)
        self.mlp = VisionMLP(d, c["intermediate_size"], c["hidden_act"])
        self.layer_norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(c) for _ in range(c["num_hidden_layers"]))


class VisionTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["embed_dim"]
        self.embeddings = VisionEmbeddings(d, c["image_size"], c["patch_size"])
        self.pre_layrnorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])
        self.encoder = VisionEncoder(c)
        self.post_layernorm = nn.LayerNorm(d, eps=c["layer_norm_eps"])  # pooled output only: unused here

    def forward(self, px):
        """px [n, 3, S, S] -> last hidden state [n, patches + 1, d]."""
        x = self.pre_layrnorm(self.embeddings(px))
        for layer in self.encoder.layers:
            x = layer(x)
        return x


# --------------------------------------------------------------------------
# Perceiver
# --------------------------------------------------------------------------

class PerceiverAttention(nn.Module):
    def __init__(self, d, heads, head_dim, qk_norms):
        super().__init__()
        self.heads, self.qk_norms = heads, qk_norms
        self.context_layer_norm, self.latents_layer_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        if qk_norms:
            self.q_layer_norm, self.k_layer_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
        self.q_proj = nn.Linear(d, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d, heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d, heads * head_dim, bias=False)
        self.output_proj = nn.Linear(heads * head_dim, d, bias=False)

    def forward(self, context, latents):
        context, latents = self.context_layer_norm(context), self.latents_layer_norm(latents)
        both = torch.cat([context, latents], dim=-2)
        q = fr._split_heads(self.q_proj(latents), self.heads)
        k = fr._split_heads(self.k_proj(both), self.heads)
        v = fr._split_heads(self.v_proj(both), self.heads)
        if self.qk_norms:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)
        a = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), dim=-1)
        return self.output_proj(fr._merge_heads(a @ v))


class PerceiverMLP(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, inner, bias=False)
        self.c_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.fc(self.ln(x))))


class PerceiverResampler(nn.Module):
    def __init__(self, d, p, inner):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(p["resampler_n_latents"], d))
        self.blocks = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(d, p["resampler_n_heads"], p["resampler_head_dim"],
                                              p["qk_layer_norms_perceiver"]), PerceiverMLP(d, inner)])
            for _ in range(p["resampler_depth"]))
        self.layer_norm = nn.LayerNorm(d)

    def forward(self, context):
        """context [n, tokens, d] -> [n, latents, d]."""
        lat = self.latents.expand(context.shape[0], -1, -1)
        for attn, ff in self.blocks:
            lat = attn(context, lat) + lat
            lat = ff(lat) + lat
        return self.layer_norm(lat)


# --------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class MLP(nn.Module):
    def __init__(self, d, inner, act):
        super().__init__()
        self.gate_proj = nn.Linear(d, inner, bias=False)
        self.up_proj = nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)
        self.act = fr._activation(act)

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class Attention(nn.Module):
    """Self-attention (causal, rotary) or, with kv_dim, attention over the visual tokens."""

    def __init__(self, d, heads, eps, kv_dim=None, qk_norms=False):
        super().__init__()
        self.heads, self.head_dim, self.qk_norms = heads, d // heads, qk_norms
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(kv_dim or d, d, bias=False)
        self.v_proj = nn.Linear(kv_dim or d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        if qk_norms:
            self.q_layer_norm, self.k_layer_norm = RMSNorm(self.head_dim, eps), RMSNorm(self.head_dim, eps)

    def forward(self, x, context=None, mask=None):
        """mask: additive [T, N] for cross-attention."""
        src = x if context is None else context
        q = fr._split_heads(self.q_proj(x), self.heads)
        k = fr._split_heads(self.k_proj(src), self.heads)
        v = fr._split_heads(self.v_proj(src), self.heads)
        if context is None:  # rotary with base 10000 (IdeficsEmbedding ignores any rope_theta)
            T = x.shape[1]
            cos, sin = fr._rotary_tables(self.head_dim, torch.arange(T), 10000.0, x.dtype)
            q, k = fr._apply_rotary(q, cos, sin), fr._apply_rotary(k, cos, sin)
        if self.qk_norms:
            q, k = self.q_layer_norm(q), self.k_layer_norm(k)
        s = q @ k.transpose(-1, -2) * self.head_dim ** -0.5
        if context is None:
            s = fr._causal_fill(s)
        else:
            s = s + mask
        return self.o_proj(fr._merge_heads(torch.softmax(s, dim=-1) @ v))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        self.self_attn = Attention(d, c["num_attention_heads"], eps)
        self.mlp = MLP(d, c["intermediate_size"], c["hidden_act"])
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d, eps), RMSNorm(d, eps)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class GatedCrossAttentionLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["rms_norm_eps"]
        self.cross_attn = Attention(d, c["num_attention_heads"], eps, kv_dim=c["vision_config"]["embed_dim"],
                                    qk_norms=c["qk_layer_norms"])
        self.mlp = MLP(d, c["intermediate_size"], c["hidden_act"])
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d, eps), RMSNorm(d, eps)
        shape = (1, 1, d) if c["alpha_type"] == "vector" else (1,)
        if c["alpha_type"] not in ("vector", "float"):
            raise ValueError(f"unknown alpha_type {c['alpha_type']!r}")
        self.alpha_cross_attn = nn.Parameter(torch.zeros(shape))
        self.alpha_dense = nn.Parameter(torch.zeros(shape))

    def forward(self, x, image_states, mask, gate):
        """gate [B, T]: 1 where the row attends to some image, else 0."""
        h = self.cross_attn(self.input_layernorm(x), image_states, mask)
        h = h.masked_fill((gate == 0)[:, :, None], 0.0)
        x = x + torch.tanh(self.alpha_cross_attn) * h
        return x + torch.tanh(self.alpha_dense) * self.mlp(self.post_attention_layernorm(x))


class DecoupledEmbedding(nn.Module):
    def __init__(self, vocab, extra, d):
        super().__init__()
        self.vocab = vocab
        self.weight = nn.Parameter(torch.zeros(vocab, d))
        if extra:
            self.additional_embedding = nn.Embedding(extra, d)

    def forward(self, ids):
        out = self.weight[ids.clamp(max=self.vocab - 1)]
        hi = ids >= self.vocab
        if hi.any():
            out[hi] = self.additional_embedding.weight[ids[hi] - self.vocab]
        return out


class DecoupledLinear(nn.Module):
    def __init__(self, d, vocab, extra):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab, d))
        if extra:
            self.additional_fc = nn.Linear(d, extra, bias=False)

    def forward(self, x):
        out = x @ self.weight.T
        if hasattr(self, "additional_fc"):
            out = torch.cat([out, self.additional_fc(x)], dim=-1)
        return out


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.embed_tokens = DecoupledEmbedding(c["vocab_size"], c["additional_vocab_size"], d)
        self.vision_model = VisionTransformer(c["vision_config"])
        vd = c["vision_config"]["embed_dim"]
        self.perceiver_resampler = PerceiverResampler(vd, c["perceiver_config"], 4 * c.get("vision_embed_dim", vd))
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c["num_hidden_layers"]))
        self.gated_cross_attn_layers = nn.ModuleList(
            GatedCrossAttentionLayer(c) for _ in range(c["num_hidden_layers"] // c["cross_layer_interval"]))
        self.norm = RMSNorm(d, c["rms_norm_eps"])


VISION_DEFAULTS = {"embed_dim": 768, "image_size": 224, "intermediate_size": 5120, "patch_size": 14,
                   "num_hidden_layers": 32, "num_attention_heads": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
PERCEIVER_DEFAULTS = {"resampler_n_latents": 64, "resampler_depth": 6, "resampler_n_heads": 16,
                      "resampler_head_dim": 96, "qk_layer_norms_perceiver": False}
DEFAULTS = {"vocab_size": 32000, "additional_vocab_size": 0, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu", "alpha_type": "float",
            "rms_norm_eps": 1e-6, "cross_layer_interval": 1, "qk_layer_norms": False, "use_resampler": False,
            "eos_token_id": 2, "tie_word_embeddings": False}


def full_config(config):
    """IdeficsConfig's defaults filled in (configuration_idefics.py)."""
    c = dict(DEFAULTS)
    c.update(config)
    c["vision_config"] = {**VISION_DEFAULTS, **config.get("vision_config", {})}
    c["perceiver_config"] = {**PERCEIVER_DEFAULTS, **config.get("perceiver_config", {})}
    if not c["use_resampler"]:
        raise ValueError("the reference models IDEFICS with its Perceiver (use_resampler true), as released")
    if c["tie_word_embeddings"]:
        raise ValueError("tied embeddings are not modelled (no release ties them)")
    return c


class Idefics(nn.Module):
    """IdeficsForVisionText2Text. The generation helpers of flamingo_ref
    (greedy_generate, beam_generate, score_candidates) run on it: it has
    media_token_id, eoc_token_id, encode_vision_x and forward_media."""

    def __init__(self, config, image_token_id, eos_token_id):
        super().__init__()
        self.config = config
        self.c = c = full_config(config)
        self.model = Model(c)
        self.lm_head = DecoupledLinear(c["hidden_size"], c["vocab_size"], c["additional_vocab_size"])
        self.media_token_id, self.eoc_token_id = image_token_id, eos_token_id
        self.doc_end_id = c["eos_token_id"]

    def vision_tokens(self, px):
        """px [n, 3, S, S] -> [n, patches + 1, d]."""
        return self.model.vision_model(px)

    def encode_vision_x(self, vision_x):
        """vision_x [1, N, 1, 3, S, S] (flamingo_ref's layout) -> [1, N, latents, d]."""
        B, N = vision_x.shape[:2]
        lat = self.model.perceiver_resampler(self.vision_tokens(vision_x.reshape(B * N, *vision_x.shape[3:])))
        return lat.reshape(B, N, *lat.shape[1:])

    def forward_media(self, media, ids, text_time=None, image_idx=None):
        """Logits [B, T, V + additional]. The image each position attends to
        is the processor's image_attention_mask for `ids` (image_index)
        unless image_idx [B, T] (-1: none) or text_time (images at or before
        each position, as flamingo_ref's OpenFlamingo generation gives it:
        image text_time - 1) is passed."""
        B, T = ids.shape
        N, L = media.shape[1], media.shape[2]
        if image_idx is not None:
            idx = image_idx
        elif text_time is None:
            idx = torch.stack([image_index(row.tolist(), self.media_token_id, self.doc_end_id) for row in ids])
        else:
            idx = text_time.long() - 1
        allowed = torch.zeros(B, T, N, dtype=torch.bool)
        for b in range(B):
            for t in range(T):
                if 0 <= idx[b, t] < N:
                    allowed[b, t, idx[b, t]] = True
        gate = allowed.any(-1).to(media.dtype)
        allowed = allowed[:, :, :, None].expand(B, T, N, L).reshape(B, 1, T, N * L)
        mask = torch.zeros(allowed.shape, dtype=media.dtype).masked_fill(~allowed, torch.finfo(media.dtype).min)
        states = media.reshape(B, N * L, -1)
        m = self.model
        x = m.embed_tokens(ids)
        interval = self.c["cross_layer_interval"]
        for i, layer in enumerate(m.layers):
            if i % interval == 0:
                x = m.gated_cross_attn_layers[i // interval](x, states, mask, gate)
            x = layer(x)
        return self.lm_head(m.norm(x))

    def next_logits(self, media, seqs, prompt_len):
        """Logits [B, V] of the next token after seqs [B, T] whose first
        prompt_len are the prompt, as IdeficsForVisionText2Text.generate
        computes them: the prompt's rows keep the processor's mask, every
        generated row repeats the prompt's last row (its image, or none after
        a </s> with no image since), whatever was generated. flamingo_ref's
        greedy and beam search call this in place of OpenFlamingo's text time."""
        if (seqs[:, prompt_len:] == self.media_token_id).any():
            raise fr.MediaTokenGenerated("a generated token is the media token")
        idx = image_index(seqs[0, :prompt_len].tolist(), self.media_token_id, self.doc_end_id)
        idx = torch.cat([idx, idx[-1].repeat(seqs.shape[1] - prompt_len)]).expand(seqs.shape[0], -1)
        return self.forward_media(media.expand(seqs.shape[0], -1, -1, -1), seqs, image_idx=idx)[:, -1, :]


# --------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------

def prompt_text(text):
    """The processor's prompt for a text in which the user wrote <image> for
    each image: the pieces between images are text items (stripped of spaces
    as the processor strips them; an empty piece between two images makes
    them consecutive items), each image becomes fake+image+fake, or image+fake
    right after another image; the prompt starts with <s>."""
    pieces = text.split(IMAGE)
    out, last_was_image = "<s>", False
    for k, piece in enumerate(pieces):
        piece = piece.strip(" ")
        if piece:
            out += piece
            last_was_image = False
        if k + 1 < len(pieces):
            out += IMAGE + FAKE if last_was_image else FAKE + IMAGE + FAKE
            last_was_image = True
    return out


def image_index(ids, image_id, eod_id):
    """image_attention_mask_for_packed_input_ids, as indices: the image each
    position attends to (-1: none)."""
    out, count, seen_eod = [], -1, False
    for t in ids:
        if t == image_id:
            count += 1
            seen_eod = False
        out.append(-1 if seen_eod else count)
        if t == eod_id:
            seen_eod = True
    return torch.tensor(out)


def preprocess(img, size, mean, std):
    """IdeficsImageProcessor for inference: RGB (alpha composited on white),
    resize to size x size with PIL bicubic (no crop), /255, normalise; [3, S, S]."""
    import numpy as np
    from PIL import Image
    if img.mode != "RGB":
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img).astype(np.float64) / 255.0
    return ((arr - np.array(mean)) / np.array(std)).transpose(2, 0, 1)


@torch.no_grad()
def quantize_weights(model, fmt):
    """The q8/q4 weights the C++ model holds (flamingo_ref.quantize_dequantize
    of every linear layer's matrix: all nn.Linear, the patch embedding as
    [width, 3*p*p], lm_head); embeddings, norms, biases and alphas stay."""
    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            w = mod.weight
            mod.weight.copy_(fr.quantize_dequantize(w.reshape(w.shape[0], -1), fmt).reshape(w.shape).to(w.dtype))
    w = model.lm_head.weight
    w.copy_(fr.quantize_dequantize(w, fmt).to(w.dtype))


# --------------------------------------------------------------------------
# Model directories
# --------------------------------------------------------------------------

def save_model_dir(model, path, tokenizer_json, shards=2):
    """config.json, tokenizer.json and the weights as `shards` safetensors
    files with model.safetensors.index.json (as releases are stored)."""
    fr.write_config_and_tokenizer(path, model.config, tokenizer_json)
    tensors = {k: v.detach().float().contiguous() for k, v in model.named_parameters()}
    names = sorted(tensors)
    per = math.ceil(len(names) / shards)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        safetensors_io.save_file(part, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(v.numel() * 4 for v in tensors.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
        f.write("\n")


def load_model_dir(path, dtype=torch.float64, eos_token=None):
    """The reference model of a directory; image/eos ids from its tokenizer.json."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(path, "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    model = Idefics(config, vocab[IMAGE], vocab[eos_token] if eos_token else config.get("eos_token_id", 2))
    tensors = fr.load_state_dir(path)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.to(dtype).eval()

"""Independent PyTorch reference of the Flamingo model as OpenFlamingo runs it.

Written to follow, operation by operation, the upstream code the C++ model must
match (see /work/shared/SPEC.md sections 1 and 2):
  - open_flamingo/src/{helpers,flamingo,flamingo_lm}.py (Perceiver Resampler,
    masked gated cross-attention, FlamingoLayer, media-location conditioning,
    cached-media generation),
  - open_clip 2.20 VisionTransformer (patch tokens without ln_post; pooled
    class token after ln_post @ proj),
  - the Hugging Face decoder families of transformers 4.28-4.33: LLaMA and
    GPT-NeoX; MosaicML's MPT (llm-foundry, mid 2023, as shipped with
    mosaicml/mpt-7b) and its predecessor MosaicGPT ("mosaic_gpt", used by
    anas-awadalla/mpt-1b-redpajama-200b),
  - Hugging Face generate() of those versions: greedy search and beam search
    (BeamSearchScorer / BeamHypotheses, NoRepeatNGramLogitsProcessor,
    MinNewTokensLengthLogitsProcessor),
  - OpenFlamingo's evaluation scoring of close-ended candidates.

State-dict names equal those of an OpenFlamingo model (SPEC.md section 1), so a
model directory (config.json + model.safetensors) loads straight into it.

The reference has no KV cache: generation recomputes the whole sequence for
every new token, giving every position the cross-attention mask it had upstream
when it was processed (prompt positions: the prompt's media locations; new
positions: "after the whole prompt").
"""

import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

try:  # imported as tools.flamingo_ref or as a script next to safetensors_io.py
    from . import safetensors_io
except ImportError:  # pragma: no cover
    import safetensors_io


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _gelu_fast(x):
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


# Hugging Face ACT2FN names used by the supported families.
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_fast": _gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported hidden_act {name!r}")
    return ACTIVATIONS[name]


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def _split_heads(x, heads):
    """[B, T, H*D] -> [B, H, T, D]"""
    b, t, _ = x.shape
    return x.reshape(b, t, heads, -1).transpose(1, 2)


def _merge_heads(x):
    """[B, H, T, D] -> [B, T, H*D]"""
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _causal_fill(scores):
    """Mask future keys with finfo.min, as the HF / MPT attention code does."""
    t_q, t_k = scores.shape[-2:]
    future = torch.ones(t_q, t_k, dtype=torch.bool, device=scores.device).triu(t_k - t_q + 1)
    return scores.masked_fill(future, torch.finfo(scores.dtype).min)


# --------------------------------------------------------------------------
# Vision: open_clip VisionTransformer (2.20)
# --------------------------------------------------------------------------

class ResidualAttentionBlock(nn.Module):
    def __init__(self, width, heads, mlp_ratio, quick_gelu):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        # nn.MultiheadAttention gives exactly open_clip's parameter names
        # (in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias).
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x):  # x: [L, N, D] (sequence first, as open_clip)
        y = self.ln_1(x)
        if getattr(self, "round_activations", False):
            x = x + self._attention_rounded(y)
        else:
            x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))

    def _attention_rounded(self, y):
        """self.attn(y, y, y) written out, so that the inputs of both its
        projections can be rounded (ActivationRounding)."""
        a, (L, N, D) = self.attn, y.shape
        H = a.num_heads
        qkv = F.linear(q8_activations(y), a.in_proj_weight, a.in_proj_bias)
        q, k, v = qkv.reshape(L, N, 3, H, D // H).permute(2, 1, 3, 0, 4)  # [N, H, L, D/H] each
        o = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // H), dim=-1) @ v
        return F.linear(q8_activations(o.permute(2, 0, 1, 3).reshape(L, N, D)), a.out_proj.weight, a.out_proj.bias)


class VisionTransformer(nn.Module):
    def __init__(self, image_size, patch_size, width, layers, head_width, mlp_ratio,
                 output_dim, quick_gelu, tokens_ln_post=False):
        super().__init__()
        self.grid = image_size // patch_size
        self.tokens_ln_post = tokens_ln_post
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5  # open_clip's initialisation
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid * self.grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, width // head_width, mlp_ratio, quick_gelu) for _ in range(layers)])
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x):
        """x: [N, 3, S, S] -> (pooled [N, output_dim], tokens [N, grid*grid, width])."""
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)
        for block in self.transformer.resblocks:
            x = block(x)
        x = x.permute(1, 0, 2)
        if self.tokens_ln_post:  # later open_clip: ln_post on every token
            x = self.ln_post(x)
            pooled, tokens = x[:, 0], x[:, 1:]
        else:  # open_clip 2.20 (what OpenFlamingo was trained with)
            pooled, tokens = self.ln_post(x[:, 0]), x[:, 1:]
        return pooled @ self.proj, tokens


# --------------------------------------------------------------------------
# OpenFlamingo helpers: Perceiver Resampler, gated cross-attention
# --------------------------------------------------------------------------

def FeedForward(dim, mult=4):
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class PerceiverAttention(nn.Module):
    def __init__(self, dim, dim_head, heads):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents):
        """x: [b, T, n1, D] media features; latents: [b, T, n2, D]."""
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        b, t, n2, _ = latents.shape
        h = self.heads
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)

        def heads(z):  # b t n (h d) -> b h t n d
            return z.reshape(z.shape[0], z.shape[1], z.shape[2], h, -1).permute(0, 3, 1, 2, 4)

        q, k, v = heads(q) * self.scale, heads(k), heads(v)
        sim = q @ k.transpose(-1, -2)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        out = sim.softmax(dim=-1) @ v  # b h t n d
        out = out.permute(0, 2, 3, 1, 4).reshape(b, t, n2, -1)
        return self.to_out(out)


class PerceiverResampler(nn.Module):
    def __init__(self, dim, depth=6, dim_head=64, heads=8, num_latents=64, max_num_media=None,
                 max_num_frames=None, ff_mult=4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.frame_embs = nn.Parameter(torch.randn(max_num_frames, dim)) if max_num_frames else None
        self.media_time_embs = nn.Parameter(torch.randn(max_num_media, 1, dim)) if max_num_media else None
        self.layers = nn.ModuleList([
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), FeedForward(dim, ff_mult)])
            for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        """x: [b, T, F, v, D] -> [b, T, num_latents, D]."""
        b, T, Fr, v, d = x.shape
        if self.frame_embs is not None:
            x = x + self.frame_embs[:Fr].reshape(1, 1, Fr, 1, d)
        x = x.reshape(b, T, Fr * v, d)
        if self.media_time_embs is not None:
            x = x + self.media_time_embs[:T]
        latents = self.latents.reshape(1, 1, *self.latents.shape).expand(b, T, -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


def text_time_from_media_locations(media_locations, use_cached_media=False, length=None):
    """OpenFlamingo's text time: the number of media tokens at or before each
    position (cumsum), or, in cached-media mode, the total count for every one
    of `length` new positions."""
    if use_cached_media:
        count = torch.count_nonzero(media_locations, dim=1)
        return count[:, None].expand(-1, length)
    return media_locations.long().cumsum(dim=-1)


class MaskedCrossAttention(nn.Module):
    def __init__(self, dim, dim_visual, dim_head=64, heads=8, only_attend_immediate_media=True):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.only_attend_immediate_media = only_attend_immediate_media

    def forward(self, x, media, text_time):
        """x: [B, T_txt, D]; media: [B, T_img, n, D_img]; text_time: [B, T_txt]
        (see text_time_from_media_locations)."""
        B, T_txt, _ = x.shape
        T_img, n = media.shape[1:3]
        h = self.heads
        x = self.norm(x)
        q = _split_heads(self.to_q(x), h) * self.scale
        if T_img == 0:
            # Upstream cannot run without media; no image to attend to gives
            # a zero attention output in either mode here.
            return self.to_out(torch.zeros_like(_merge_heads(q)))
        k, v = self.to_kv(media.reshape(B, T_img * n, -1)).chunk(2, dim=-1)
        k, v = _split_heads(k, h), _split_heads(v, h)
        sim = q @ k.transpose(-1, -2)  # [B, h, T_txt, T_img*n]

        media_time = torch.arange(1, T_img + 1, device=x.device).repeat_interleave(n)
        tt = text_time[:, None, :, None]
        allowed = (tt == media_time) if self.only_attend_immediate_media else (tt >= media_time)
        sim = sim.masked_fill(~allowed, -torch.finfo(sim.dtype).max)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1)
        if self.only_attend_immediate_media:
            # text without a preceding image gets no cross-attention at all
            attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
        return self.to_out(_merge_heads(attn @ v))


class GatedCrossAttentionBlock(nn.Module):
    def __init__(self, dim, dim_visual, dim_head=64, heads=8, ff_mult=4, only_attend_immediate_media=True):
        super().__init__()
        self.attn = MaskedCrossAttention(dim, dim_visual, dim_head, heads, only_attend_immediate_media)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = FeedForward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x, media, text_time):
        x = self.attn(x, media, text_time) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x


class FlamingoLayer(nn.Module):
    """Cross-attention (when present) before the LM's own decoder layer."""

    def __init__(self, gated_cross_attn_layer, decoder_layer):
        super().__init__()
        self.gated_cross_attn_layer = gated_cross_attn_layer
        self.decoder_layer = decoder_layer

    def forward(self, x, media, text_time, ctx):
        if self.gated_cross_attn_layer is not None:
            x = self.gated_cross_attn_layer(x, media, text_time)
        return self.decoder_layer(x, ctx)


# --------------------------------------------------------------------------
# Decoder families
# --------------------------------------------------------------------------

def _rotary_tables(dim, positions, base, dtype, scaling=1.0):
    """cos/sin tables as HF computes them: inv_freq in float32, cat(freqs, freqs)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    t = positions.float() / scaling
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def _apply_rotary(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


class _Ctx:
    """Per-forward state shared by the decoder layers (positions, biases)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


# ---- LLaMA (transformers modeling_llama.py) ----

class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        var = x.to(torch.float32 if dtype != torch.float64 else dtype).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dtype)


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads") or self.heads
        self.head_dim = cfg.get("head_dim") or cfg["hidden_size"] // self.heads
        hidden = cfg["hidden_size"]
        bias = bool(cfg.get("attention_bias", False))
        self.q_proj = nn.Linear(hidden, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, hidden, bias=bias)

    def forward(self, x, ctx):
        q = _split_heads(self.q_proj(x), self.heads)
        k = _split_heads(self.k_proj(x), self.kv_heads)
        v = _split_heads(self.v_proj(x), self.kv_heads)
        q, k = _apply_rotary(q, ctx.cos, ctx.sin), _apply_rotary(k, ctx.cos, ctx.sin)
        rep = self.heads // self.kv_heads  # query head i uses kv head i // rep
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = _causal_fill(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim))
        probs = scores.softmax(dim=-1)
        return self.o_proj(_merge_heads(probs @ v))


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        bias = bool(cfg.get("mlp_bias", False))
        self.gate_proj = nn.Linear(h, i, bias=bias)
        self.up_proj = nn.Linear(h, i, bias=bias)
        self.down_proj = nn.Linear(i, h, bias=bias)
        self.act = _activation(cfg.get("hidden_act", "silu"))

    def forward(self, x):
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = LlamaRMSNorm(cfg["hidden_size"], eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = LlamaRMSNorm(cfg["hidden_size"], eps)
        self.mlp = LlamaMLP(cfg)

    def forward(self, x, ctx):
        x = x + self.self_attn(self.input_layernorm(x), ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---- GPT-NeoX (transformers modeling_gpt_neox.py) ----

class GPTNeoXAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.head_size = hidden // self.heads
        self.rotary_ndims = int(self.head_size * cfg.get("rotary_pct", 0.25))
        bias = bool(cfg.get("attention_bias", True))
        self.query_key_value = nn.Linear(hidden, 3 * hidden, bias=bias)
        self.dense = nn.Linear(hidden, hidden, bias=bias)

    def forward(self, x, ctx):
        b, t, _ = x.shape
        # fused projection, per head [q | k | v] (interleaved by head)
        qkv = self.query_key_value(x).reshape(b, t, self.heads, 3 * self.head_size).permute(0, 2, 1, 3)
        hs, r = self.head_size, self.rotary_ndims
        q, k, v = qkv[..., :hs], qkv[..., hs:2 * hs], qkv[..., 2 * hs:]
        cos, sin = ctx.cos, ctx.sin
        q = torch.cat((_apply_rotary(q[..., :r], cos, sin), q[..., r:]), dim=-1)
        k = torch.cat((_apply_rotary(k[..., :r], cos, sin), k[..., r:]), dim=-1)
        scores = _causal_fill(q @ k.transpose(-1, -2) / math.sqrt(hs))
        return self.dense(_merge_heads(scores.softmax(dim=-1) @ v))


class GPTNeoXMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h = cfg["hidden_size"]
        i = cfg.get("intermediate_size") or 4 * h
        self.dense_h_to_4h = nn.Linear(h, i)
        self.dense_4h_to_h = nn.Linear(i, h)
        self.act = _activation(cfg.get("hidden_act", "gelu"))

    def forward(self, x):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(x)))


class GPTNeoXLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg.get("layer_norm_eps", 1e-5)
        self.use_parallel_residual = cfg.get("use_parallel_residual", True)
        self.input_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=eps)
        self.attention = GPTNeoXAttention(cfg)
        self.mlp = GPTNeoXMLP(cfg)

    def forward(self, x, ctx):
        attn = self.attention(self.input_layernorm(x), ctx)
        if self.use_parallel_residual:  # x + attn(ln1(x)) + mlp(ln2(x))
            return self.mlp(self.post_attention_layernorm(x)) + attn + x
        attn = attn + x
        return self.mlp(self.post_attention_layernorm(attn)) + attn


# ---- MPT (llm-foundry) and MosaicGPT (its predecessor) ----

def _layernorm(dim, bias):
    ln = nn.LayerNorm(dim, eps=1e-5)
    if not bias:  # MPT's no_bias removes every bias, LayerNorms' included
        ln.register_parameter("bias", None)
    return ln


class _RMSNormMPT(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight


def _mpt_norm(norm_type, dim, bias):
    if norm_type in ("layernorm", "low_precision_layernorm"):
        return _layernorm(dim, bias)
    if norm_type in ("rmsnorm", "low_precision_rmsnorm"):
        return _RMSNormMPT(dim)
    raise ValueError(f"unsupported MPT norm_type {norm_type!r}")


def alibi_slopes(n_heads, alibi_bias_max=8):
    """MPT's gen_slopes (llm-foundry). For a power-of-two head count it equals
    the older MosaicGPT formula 1 / 2**(arange(1, n+1) * max / n)."""
    n2 = 2 ** math.ceil(math.log2(n_heads))
    m = torch.arange(1, n2 + 1, dtype=torch.float32) * (alibi_bias_max / n2)
    slopes = 1.0 / torch.pow(2, m)
    if n2 != n_heads:
        slopes = torch.cat([slopes[1::2], slopes[::2]])[:n_heads]
    return slopes


def alibi_slopes_mosaic_gpt(n_heads, alibi_bias_max=8):
    """MosaicGPT (April 2023) slopes: no power-of-two interleaving."""
    m = torch.arange(1, n_heads + 1, dtype=torch.float32) * (alibi_bias_max / n_heads)
    return 1.0 / torch.pow(2, m)


class MPTAttention(nn.Module):
    """Fused Wqkv ([q | k | v] blocks), optional clamp and q/k LayerNorm,
    additive ALiBi bias, causal fill with finfo.min."""

    def __init__(self, d_model, n_heads, clip_qkv, qk_ln, softmax_scale, bias):
        super().__init__()
        self.d_model, self.n_heads = d_model, n_heads
        self.clip_qkv = clip_qkv
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(d_model / n_heads)
        self.Wqkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        if qk_ln:
            self.q_ln = _layernorm(d_model, bias)
            self.k_ln = _layernorm(d_model, bias)
        self.qk_ln = qk_ln
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, ctx):
        qkv = self.Wqkv(x)
        if self.clip_qkv:
            qkv = qkv.clamp(min=-self.clip_qkv, max=self.clip_qkv)
        q, k, v = qkv.chunk(3, dim=2)
        if self.qk_ln:
            q, k = self.q_ln(q), self.k_ln(k)
        q, k, v = (_split_heads(z, self.n_heads) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) * self.softmax_scale
        if ctx.alibi is not None:
            scores = scores + ctx.alibi
        scores = _causal_fill(scores)
        return self.out_proj(_merge_heads(scores.softmax(dim=-1) @ v))


class MPTMLP(nn.Module):
    def __init__(self, d_model, ratio, bias, names):
        super().__init__()
        up, down = names
        setattr(self, up, nn.Linear(d_model, ratio * d_model, bias=bias))
        setattr(self, down, nn.Linear(ratio * d_model, d_model, bias=bias))
        self._names = names

    def forward(self, x):
        up, down = (getattr(self, n) for n in self._names)
        return down(F.gelu(up(x)))


class MPTBlock(nn.Module):
    """llm-foundry MPTBlock: norm_1, attn, norm_2, ffn.{up_proj, down_proj}."""

    def __init__(self, cfg):
        super().__init__()
        a = mpt_attn_config(cfg)
        bias = not cfg.get("no_bias", False)
        d = cfg["d_model"]
        norm = cfg.get("norm_type", "low_precision_layernorm").lower()
        self.norm_1 = _mpt_norm(norm, d, bias)
        self.attn = MPTAttention(d, cfg["n_heads"], a["clip_qkv"], a["qk_ln"], a["softmax_scale"], bias)
        self.norm_2 = _mpt_norm(norm, d, bias)
        self.ffn = MPTMLP(d, cfg.get("expansion_ratio", 4), bias, ("up_proj", "down_proj"))

    def forward(self, x, ctx):
        x = x + self.attn(self.norm_1(x), ctx)
        return x + self.ffn(self.norm_2(x))


class MosaicGPTBlock(nn.Module):
    """MosaicGPT GPTBlock: ln_1, attn, ln_2, mlp.{mlp_up, mlp_down}."""

    def __init__(self, cfg):
        super().__init__()
        bias = not cfg.get("no_bias", False)
        d = cfg["d_model"]
        self.ln_1 = _layernorm(d, bias)
        self.attn = MPTAttention(d, cfg["n_heads"], cfg.get("attn_clip_qkv"), cfg.get("attn_qk_ln", False),
                                 cfg.get("softmax_scale"), bias)
        self.ln_2 = _layernorm(d, bias)
        self.mlp = MPTMLP(d, cfg.get("mlp_ratio", 4), bias, ("mlp_up", "mlp_down"))

    def forward(self, x, ctx):
        x = x + self.attn(self.ln_1(x), ctx)
        return x + self.mlp(self.ln_2(x))


MPT_ATTN_DEFAULTS = {
    "attn_type": "multihead_attention", "attn_pdrop": 0.0, "attn_impl": "triton", "qk_ln": False,
    "clip_qkv": None, "softmax_scale": None, "prefix_lm": False, "attn_uses_sequence_id": False,
    "alibi": False, "alibi_bias_max": 8,
}


def mpt_attn_config(cfg):
    a = dict(MPT_ATTN_DEFAULTS)
    a.update(cfg.get("attn_config") or {})
    if a["attn_type"] != "multihead_attention":
        raise ValueError(f"unsupported MPT attn_type {a['attn_type']!r}")
    if a["prefix_lm"]:
        raise ValueError("MPT prefix_lm is not supported")
    return a


# ---- The language models, each with FlamingoLayer-wrapped decoder layers ----

class _Node(nn.Module):
    """A plain container so that state-dict paths read like the HF models."""


class FlamingoLM(nn.Module):
    """A Hugging Face causal LM (by text_config.model_type) whose decoder
    layers are FlamingoLayers; state-dict names as OpenFlamingo's lang_encoder."""

    LAYERS_PATH = {"llama": "model.layers", "gpt_neox": "gpt_neox.layers",
                   "mpt": "transformer.blocks", "mosaic_gpt": "transformer.blocks"}

    def __init__(self, text_config, vis_dim, xattn):
        super().__init__()
        cfg = dict(text_config)
        self.cfg = cfg
        self.family = cfg.get("model_type")
        if self.family not in self.LAYERS_PATH:
            raise ValueError(f"unsupported text_config.model_type {self.family!r}")
        every = xattn.get("every_n_layers", 1)
        only_immediate = xattn.get("only_attend_immediate_media", True)
        vocab = cfg["vocab_size"]

        if self.family == "llama":
            hidden, n_layers, make = cfg["hidden_size"], cfg["num_hidden_layers"], LlamaDecoderLayer
        elif self.family == "gpt_neox":
            hidden, n_layers, make = cfg["hidden_size"], cfg["num_hidden_layers"], GPTNeoXLayer
        elif self.family == "mpt":
            hidden, n_layers, make = cfg["d_model"], cfg["n_layers"], MPTBlock
        else:
            hidden, n_layers, make = cfg["d_model"], cfg["n_layers"], MosaicGPTBlock
        self.hidden = hidden

        layers = nn.ModuleList()
        for i in range(n_layers):
            xa = None
            if (i + 1) % every == 0:
                xa = GatedCrossAttentionBlock(hidden, vis_dim, xattn.get("dim_head", 64), xattn.get("heads", 8),
                                              xattn.get("ff_mult", 4), only_immediate)
            layers.append(FlamingoLayer(xa, make(cfg)))

        if self.family == "llama":
            self.model = _Node()
            self.model.embed_tokens = nn.Embedding(vocab, hidden)
            self.model.layers = layers
            self.model.norm = LlamaRMSNorm(hidden, cfg.get("rms_norm_eps", 1e-6))
            if not cfg.get("tie_word_embeddings", False):
                self.lm_head = nn.Linear(hidden, vocab, bias=False)
        elif self.family == "gpt_neox":
            self.gpt_neox = _Node()
            self.gpt_neox.embed_in = nn.Embedding(vocab, hidden)
            self.gpt_neox.layers = layers
            self.gpt_neox.final_layer_norm = nn.LayerNorm(hidden, eps=cfg.get("layer_norm_eps", 1e-5))
            if not cfg.get("tie_word_embeddings", False):
                self.embed_out = nn.Linear(hidden, vocab, bias=False)
        else:
            bias = not cfg.get("no_bias", False)
            if self.family == "mpt":
                a = mpt_attn_config(cfg)
                self.alibi, self.alibi_bias_max = a["alibi"], a["alibi_bias_max"]
                if cfg.get("tie_word_embeddings", True) is False:
                    raise ValueError("MPT with untied output embeddings is not supported")
            else:
                self.alibi, self.alibi_bias_max = cfg.get("alibi", False), cfg.get("alibi_bias_max", 8)
            self.transformer = _Node()
            self.transformer.wte = nn.Embedding(vocab, hidden)
            if not self.alibi:
                self.transformer.wpe = nn.Embedding(cfg.get("max_seq_len", 2048), hidden)
            self.transformer.blocks = layers
            if self.family == "mpt":
                self.transformer.norm_f = _mpt_norm(cfg.get("norm_type", "low_precision_layernorm").lower(),
                                                    hidden, bias)
            else:
                self.transformer.ln_f = _layernorm(hidden, bias)
            ls = cfg.get("logit_scale")
            if isinstance(ls, str):
                if ls != "inv_sqrt_d_model":
                    raise ValueError(f"unsupported logit_scale {ls!r}")
                ls = 1.0 / math.sqrt(hidden)
            self.logit_scale = ls

    @property
    def layers(self):
        """The FlamingoLayers (registered once, under the family's path)."""
        node = self
        for part in self.layers_path.split("."):
            node = getattr(node, part)
        return node

    @property
    def layers_path(self):
        return self.LAYERS_PATH[self.family]

    def max_positions(self):
        if self.family in ("mpt", "mosaic_gpt"):
            return self.cfg.get("max_seq_len", 2048)
        return self.cfg.get("max_position_embeddings", 2048)

    def input_embeddings(self):
        return {"llama": lambda: self.model.embed_tokens, "gpt_neox": lambda: self.gpt_neox.embed_in}.get(
            self.family, lambda: self.transformer.wte)()

    def _context(self, T, dtype):
        pos = torch.arange(T)
        cfg = self.cfg
        if self.family == "llama":
            scaling = 1.0
            rs = cfg.get("rope_scaling")
            if rs:
                if rs.get("type", rs.get("rope_type")) != "linear":
                    raise ValueError(f"unsupported rope_scaling {rs!r}")
                scaling = float(rs["factor"])
            head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
            cos, sin = _rotary_tables(head_dim, pos, cfg.get("rope_theta", 10000.0), dtype, scaling)
            return _Ctx(cos=cos, sin=sin)
        if self.family == "gpt_neox":
            hs = cfg["hidden_size"] // cfg["num_attention_heads"]
            r = int(hs * cfg.get("rotary_pct", 0.25))
            cos, sin = _rotary_tables(r, pos, cfg.get("rotary_emb_base", 10000), dtype)
            return _Ctx(cos=cos, sin=sin)
        alibi = None
        if self.alibi:
            n_heads = cfg["n_heads"]
            slopes = (alibi_slopes if self.family == "mpt" else alibi_slopes_mosaic_gpt)(n_heads, self.alibi_bias_max)
            # bias of key j: -(T - 1 - j) * slope, the same for every query
            dist = torch.arange(1 - T, 1, dtype=torch.float32)
            alibi = (dist[None, :] * slopes[:, None]).to(dtype)[None, :, None, :]
        return _Ctx(alibi=alibi)

    def _logits(self, x, w):
        """x times the output head's matrix: w, or its quantised copy
        (quantize_linear_weights) when the head is tied to the embedding, which
        itself stays float; x rounded under ActivationRounding."""
        q = getattr(self, "quantized_head", None)
        if getattr(self, "round_activations", False):
            x = q8_activations(x)
        return x @ (w if q is None else q).t()

    def forward(self, input_ids, media, text_time):
        """input_ids [B, T]; media [B, T_img, n, D_vis]; text_time [B, T] -> logits [B, T, V]."""
        B, T = input_ids.shape
        x = self.input_embeddings()(input_ids)
        if self.family in ("mpt", "mosaic_gpt") and not self.alibi:
            x = x + self.transformer.wpe(torch.arange(T))[None]
        ctx = self._context(T, x.dtype)
        for layer in self.layers:
            x = layer(x, media, text_time, ctx)
        if self.family == "llama":
            x = self.model.norm(x)
            w = self.lm_head.weight if hasattr(self, "lm_head") else self.model.embed_tokens.weight
            return self._logits(x, w)
        if self.family == "gpt_neox":
            x = self.gpt_neox.final_layer_norm(x)
            w = self.embed_out.weight if hasattr(self, "embed_out") else self.gpt_neox.embed_in.weight
            return self._logits(x, w)
        x = (self.transformer.norm_f if self.family == "mpt" else self.transformer.ln_f)(x)
        logits = self._logits(x, self.transformer.wte.weight)
        if self.logit_scale is not None:
            logits = logits * self.logit_scale
        return logits


# --------------------------------------------------------------------------
# The composed model
# --------------------------------------------------------------------------

VISION_DEFAULTS = {"image_size": 224, "patch_size": 14, "width": 1024, "layers": 24, "head_width": 64,
                   "mlp_ratio": 4.0, "quick_gelu": True, "tokens_ln_post": False,
                   "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]}
PERCEIVER_DEFAULTS = {"depth": 6, "heads": 8, "dim_head": 64, "num_latents": 64, "ff_mult": 4,
                      "max_num_media": None, "max_num_frames": None}
XATTN_DEFAULTS = {"every_n_layers": 1, "heads": 8, "dim_head": 64, "ff_mult": 4,
                  "only_attend_immediate_media": True}


def full_config(config):
    """SPEC config with OpenFlamingo's defaults filled in."""
    if config.get("model_type") != "flamingo":
        raise ValueError(f"config model_type must be 'flamingo', got {config.get('model_type')!r}")
    out = dict(config)
    for key, defaults in (("vision_config", VISION_DEFAULTS), ("perceiver_config", PERCEIVER_DEFAULTS),
                          ("cross_attn_config", XATTN_DEFAULTS)):
        merged = dict(defaults)
        merged.update(config.get(key) or {})
        out[key] = merged
    for key in ("text_config", "media_token_id", "eoc_token_id"):
        if key not in config:
            raise ValueError(f"config.json: missing {key}")
    return out


class Flamingo(nn.Module):
    def __init__(self, config, embed_dim=None):
        """config: SPEC config.json as a dict. embed_dim: the CLIP projection
        size (the second dimension of `proj`; not part of config.json) -
        defaults to the vision width."""
        super().__init__()
        self.config = cfg = full_config(config)
        v, p, x = cfg["vision_config"], cfg["perceiver_config"], cfg["cross_attn_config"]
        self.media_token_id = cfg["media_token_id"]
        self.eoc_token_id = cfg["eoc_token_id"]
        self.vision_encoder = VisionTransformer(v["image_size"], v["patch_size"], v["width"], v["layers"],
                                                v["head_width"], v["mlp_ratio"], embed_dim or v["width"],
                                                v["quick_gelu"], v["tokens_ln_post"])
        self.perceiver = PerceiverResampler(dim=v["width"], depth=p["depth"], dim_head=p["dim_head"],
                                            heads=p["heads"], num_latents=p["num_latents"],
                                            max_num_media=p["max_num_media"], max_num_frames=p["max_num_frames"],
                                            ff_mult=p["ff_mult"])
        self.lang_encoder = FlamingoLM(cfg["text_config"], v["width"], x)

    # ---- vision ----
    def vision_features(self, vision_x):
        """vision_x [B, N, F, 3, S, S] -> (pooled [B, N, F, E], tokens [B, N, F, v, D])."""
        B, N, Fr = vision_x.shape[:3]
        pooled, tokens = self.vision_encoder(vision_x.reshape(B * N * Fr, *vision_x.shape[3:]))
        return pooled.reshape(B, N, Fr, -1), tokens.reshape(B, N, Fr, *tokens.shape[1:])

    def encode_vision_x(self, vision_x):
        """vision_x [B, N, F, 3, S, S] -> visual tokens [B, N, num_latents, D]."""
        return self.perceiver(self.vision_features(vision_x)[1])

    # ---- language ----
    def forward_media(self, media, lang_x, text_time=None):
        """Logits [B, T, V] given encoded media. text_time defaults to the
        cumsum of lang_x's media tokens (a plain forward pass)."""
        if text_time is None:
            text_time = text_time_from_media_locations(lang_x == self.media_token_id)
        return self.lang_encoder(lang_x, media, text_time)

    def forward(self, vision_x, lang_x):
        """vision_x [B, N_media, F, 3, S, S], lang_x [B, T] -> logits [B, T, V]."""
        return self.forward_media(self.encode_vision_x(vision_x), lang_x)


# --------------------------------------------------------------------------
# Decoding (Hugging Face generate() semantics, transformers 4.28-4.33)
# --------------------------------------------------------------------------

def generation_text_time(prompt_ids, total_len, media_token_id):
    """text_time for prompt + generated positions, as OpenFlamingo's generate()
    conditions them: prompt positions by the cumsum of the prompt's media
    tokens, every new position by the prompt's media count (use_cached_media)."""
    loc = prompt_ids == media_token_id
    prompt_tt = text_time_from_media_locations(loc)
    new = total_len - prompt_ids.shape[1]
    new_tt = text_time_from_media_locations(loc, use_cached_media=True, length=new)
    return torch.cat([prompt_tt, new_tt], dim=1)


class MediaTokenGenerated(RuntimeError):
    """A generated token is <image>. Upstream then re-conditions the media
    locations on that single token (a quirk the reference does not model)."""


def _next_logits(model, media, seqs, prompt_len):
    if hasattr(model, "next_logits"):  # a model with its own generation-time mask (IDEFICS)
        return model.next_logits(media, seqs, prompt_len)
    prompt = seqs[:, :prompt_len]
    if (seqs[:, prompt_len:] == model.media_token_id).any():
        raise MediaTokenGenerated("a generated token is the media token")
    tt = generation_text_time(prompt, seqs.shape[1], model.media_token_id)
    return model.forward_media(media.expand(seqs.shape[0], -1, -1, -1), seqs, tt)[:, -1, :]


def no_repeat_ngram_banned(seq, n):
    """NoRepeatNGramLogitsProcessor: tokens that would repeat an n-gram of the
    whole sequence (prompt included)."""
    seq = list(seq)
    if n <= 0 or len(seq) + 1 < n:
        return []
    grams = {}
    for i in range(len(seq) - n + 1):
        grams.setdefault(tuple(seq[i:i + n - 1]), []).append(seq[i + n - 1])
    return grams.get(tuple(seq[len(seq) - n + 1:]), []) if n > 1 else grams.get((), [])


def _process(scores, seqs, prompt_len, eos, no_repeat_ngram_size, min_new_tokens):
    scores = scores.clone()
    if min_new_tokens and seqs.shape[1] - prompt_len < min_new_tokens:
        scores[:, eos] = -float("inf")
    if no_repeat_ngram_size:
        for r in range(seqs.shape[0]):
            banned = no_repeat_ngram_banned(seqs[r].tolist(), no_repeat_ngram_size)
            if banned:
                scores[r, banned] = -float("inf")
    return scores


@torch.no_grad()
def greedy_generate(model, vision_x, prompt_ids, max_new_tokens, no_repeat_ngram_size=0, min_new_tokens=0,
                    eos_token_id=None, media=None):
    """Greedy search. vision_x [1, N, F, 3, S, S] (or media, encoded);
    prompt_ids: list of ints. Returns the new token ids, the stop token
    included when generation ended on it."""
    eos = model.eoc_token_id if eos_token_id is None else eos_token_id
    media = model.encode_vision_x(vision_x) if media is None else media
    seqs = torch.tensor([prompt_ids], dtype=torch.long)
    P = seqs.shape[1]
    for _ in range(max_new_tokens):
        logits = _next_logits(model, media, seqs, P)
        scores = _process(logits, seqs, P, eos, no_repeat_ngram_size, min_new_tokens)
        tok = int(torch.argmax(scores, dim=-1)[0])
        seqs = torch.cat([seqs, torch.tensor([[tok]])], dim=1)
        if tok == eos:
            break
    return seqs[0, P:].tolist()


class BeamHypotheses:
    """Finished hypotheses of one batch entry (HF BeamHypotheses)."""

    def __init__(self, num_beams, length_penalty, early_stopping, max_length):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.early_stopping, self.max_length = early_stopping, max_length
        self.beams = []
        self.worst_score = 1e9

    def add(self, hyp, sum_logprobs):
        # the length is the whole sequence (prompt included) without the stop token
        score = sum_logprobs / (len(hyp) ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst_score:
            self.beams.append((score, hyp))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs, cur_len):
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping is False or self.length_penalty <= 0.0:
            best = best_sum_logprobs / cur_len ** self.length_penalty
        else:  # "never" with a positive length penalty
            best = best_sum_logprobs / self.max_length ** self.length_penalty
        return self.worst_score >= best


@torch.no_grad()
def beam_generate(model, vision_x, prompt_ids, max_new_tokens, num_beams, length_penalty=1.0,
                  early_stopping=False, no_repeat_ngram_size=0, min_new_tokens=0, eos_token_id=None, media=None,
                  trace=None):
    """Beam search as HF generate(num_beams=B) for one prompt. Returns
    (new token ids of the best hypothesis, stop token appended when it ended
    on it; its beam score = sum of log-probs / len(prompt+new)**length_penalty).
    `trace`, if a list, receives per-step diagnostics."""
    if num_beams < 2:
        raise ValueError("beam search needs num_beams >= 2 (generate() uses greedy search for 1)")
    eos = model.eoc_token_id if eos_token_id is None else eos_token_id
    media = model.encode_vision_x(vision_x) if media is None else media
    P = len(prompt_ids)
    max_length = P + max_new_tokens
    seqs = torch.tensor([prompt_ids] * num_beams, dtype=torch.long)
    beam_scores = torch.zeros(num_beams, dtype=torch.float64)
    beam_scores[1:] = -1e9
    hyps = BeamHypotheses(num_beams, length_penalty, early_stopping, max_length)
    done = False
    cur_len = P
    while True:
        logits = _next_logits(model, media, seqs, P)
        logp = F.log_softmax(logits.double() if logits.dtype == torch.float64 else logits, dim=-1)
        logp = _process(logp, seqs, P, eos, no_repeat_ngram_size, min_new_tokens)
        scores = (logp + beam_scores.to(logp.dtype)[:, None]).reshape(-1)
        V = logits.shape[-1]
        top_scores, top_ids = torch.topk(scores, 2 * num_beams, largest=True, sorted=True)
        if trace is not None:
            trace.append({"len": cur_len, "top_scores": top_scores.tolist(), "top_ids": top_ids.tolist()})
        next_scores, next_tokens, next_src = [], [], []
        for rank, (s, flat) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            src, tok = flat // V, flat % V
            if tok == eos:
                if rank >= num_beams:
                    continue
                hyps.add(seqs[src].tolist(), s)
            else:
                next_scores.append(s)
                next_tokens.append(tok)
                next_src.append(src)
            if len(next_tokens) == num_beams:
                break
        done = done or hyps.is_done(max(top_scores.tolist()), cur_len + 1)
        beam_scores = torch.tensor(next_scores, dtype=torch.float64)
        seqs = torch.cat([seqs[next_src], torch.tensor(next_tokens)[:, None]], dim=1)
        cur_len += 1
        if done or cur_len >= max_length:
            break
    if not done:
        for b in range(num_beams):
            hyps.add(seqs[b].tolist(), float(beam_scores[b]))
    # finalize(): a stable sort by score, the last entry wins ties
    best_score, best = sorted(hyps.beams, key=lambda sb: sb[0])[-1]
    out = list(best)
    # the stop token is appended to hypotheses that ended on it; those still
    # open at max_length have exactly max_length tokens
    if len(out) < max_length:
        out.append(eos)
    return out[P:], best_score


# --------------------------------------------------------------------------
# Scoring (OpenFlamingo evaluation: classification by log-likelihood)
# --------------------------------------------------------------------------

@torch.no_grad()
def score_candidates(model, vision_x, prompt_ids, candidates, media=None):
    """For each candidate (list of token ids, tokenized alone without special
    tokens) appended to the prompt: (sum, mean) of its tokens' log-probs."""
    media = model.encode_vision_x(vision_x) if media is None else media
    out = []
    for cand in candidates:
        ids = torch.tensor([list(prompt_ids) + list(cand)], dtype=torch.long)
        logits = model.forward_media(media, ids)
        logp = F.log_softmax(logits, dim=-1)[0, len(prompt_ids) - 1: -1]
        tok_lp = logp.gather(1, torch.tensor(cand)[:, None])[:, 0]
        out.append((float(tok_lp.sum()), float(tok_lp.mean())))
    return out


# --------------------------------------------------------------------------
# Quantised weights (README "Quantised weights"): the values the C++ model
# multiplies with under --weights q8|q4, computed here from the float weights
# and dequantised, so the rest of the reference runs unchanged in float32.
# (The C++ GEMV path also rounds one-row activations to int8; that is not
# modelled: the reference stands for "the quantised weights, exactly".)
# --------------------------------------------------------------------------

QBLOCK = 32

# q4's search for each block's scale and offset (kernels/quant.hpp,
# detail::q4_block): min/max first, then for each t of Q4_GRID the levels of
# scale (max - min) / (15 + t) from the minimum refitted by least squares, then
# Q4_REFITS least-squares refits of the best levels so far; a candidate
# replaces the best when its squared error is smaller. Written operation for
# operation as the C++ (float32 levels, float64 sums in order over the block
# of exact products) so that both give the same bytes.
Q4_GRID = (-1.0, -0.5, 0.5, 1.0, 2.0)
Q4_REFITS = 2


def _f16(x):
    """x rounded to float16 (nearest even, as the C++ f16), back in float32: the
    stored scales and offsets are f16."""
    return x.to(torch.float16).float()


def _q4_levels(b, valid, d, m):
    q = torch.where(d > 0, torch.round((b - m) / torch.where(d > 0, d, 1.0)), 0.0).clamp(0, 15)
    return torch.where(valid, q, 0.0)


def _q4_error(b, valid, d, m, q):
    dd, dm = d.double(), m.double()
    acc = torch.zeros(b.shape[:-1] + (1,), dtype=torch.float64)
    for i in range(QBLOCK):  # in order, as the C++ loop
        e = (b[..., i:i + 1].double() - (dd * q[..., i:i + 1].double() + dm)).float().double()
        acc = acc + torch.where(valid[..., i:i + 1], e * e, 0.0)
    return acc


def _q4_fit(b, valid, q):
    n = valid.sum(-1, keepdim=True).double()
    qd = q.double()
    sq, sqq = qd.sum(-1, keepdim=True), (qd * qd).sum(-1, keepdim=True)  # integers: exact in any order
    den = n * sqq - sq * sq
    num, sx = torch.zeros_like(sq), torch.zeros_like(sq)
    for i in range(QBLOCK):
        xi, ok = b[..., i:i + 1].double(), valid[..., i:i + 1]
        num = num + torch.where(ok, (n * qd[..., i:i + 1] - sq) * xi, 0.0)
        sx = sx + torch.where(ok, xi, 0.0)
    d = torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0).float()
    return d, ((sx - d.double() * sq) / n).float()  # d <= 0: no fit


def _q4_search(b, valid, lo, hi):
    d, m = _f16((hi - lo) / torch.tensor(15.0)), _f16(lo)
    q = _q4_levels(b, valid, d, m)
    e = _q4_error(b, valid, d, m, q)

    def consider(d2, m2, d, m, q, e):
        d2, m2 = _f16(d2), _f16(m2)
        q2 = _q4_levels(b, valid, d2, m2)
        e2 = _q4_error(b, valid, d2, m2, q2)
        better = (d2 > 0) & (e2 < e)
        return (torch.where(better, d2, d), torch.where(better, m2, m), torch.where(better, q2, q),
                torch.where(better, e2, e))
    for t in Q4_GRID:
        d2, m2 = _q4_fit(b, valid, _q4_levels(b, valid, (hi - lo) / torch.tensor(15.0 + t), lo))
        d, m, q, e = consider(d2, m2, d, m, q, e)
    for _ in range(Q4_REFITS):
        d2, m2 = _q4_fit(b, valid, q)
        d, m, q, e = consider(d2, m2, d, m, q, e)
    return d, m, q


def quantize_dequantize(w, fmt):
    """w [out, in] (float32) -> the float32 values of its q8/q4 blocks of 32 along `in`."""
    out, n = w.shape
    pad = (-n) % QBLOCK
    b = F.pad(w.float(), (0, pad)).reshape(out, -1, QBLOCK)
    valid = (torch.arange(n + pad) < n).reshape(1, -1, QBLOCK).expand_as(b)  # padding takes no part
    if fmt == "q8":
        d = _f16(b.abs().amax(-1, keepdim=True) / 127.0)
        q = torch.where(d > 0, torch.round(b / torch.where(d > 0, d, 1.0)), 0.0).clamp(-127, 127)
        v = d * q
    elif fmt == "q4":
        big = torch.finfo(torch.float32).max
        lo = torch.where(valid, b, big).amin(-1, keepdim=True)
        hi = torch.where(valid, b, -big).amax(-1, keepdim=True)
        d, m, q = _q4_search(b, valid, lo, hi)
        v = d * q + m
    else:
        raise ValueError(f"unknown quantised format {fmt}")
    return v.reshape(out, -1)[:, :n].contiguous()


def q8_activations(x):
    """x [..., n] rounded as the C++ q8/q4 products round activations: per
    block of 32, scale max|x| / 127 (float32), round to nearest even."""
    n = x.shape[-1]
    b = F.pad(x.float(), (0, (-n) % QBLOCK)).reshape(*x.shape[:-1], -1, QBLOCK)
    d = b.abs().amax(-1, keepdim=True) / 127.0
    q = torch.where(d > 0, torch.round(b / torch.where(d > 0, d, 1.0)), 0.0).clamp(-127, 127)
    return (d * q).reshape(*x.shape[:-1], -1)[..., :n].to(x.dtype)


class ActivationRounding:
    """With quantised weights the C++ products with AVX2 or AVX512-VNNI (the
    kernel sets of every x86-64 machine the tests run on) round every row of
    activations entering a quantised matrix to q8 (kernels/quant.hpp), one
    row or many. Within this context the model does the same: every
    nn.Linear's input, the patch embedding's input patch by patch (each patch
    [3, p, p] flattened, as the C++ reads the convolution as a matrix), the
    vision attention's projections and the output head's input."""

    def __init__(self, model):
        self.model, self.handles, self.flagged = model, [], []

    @staticmethod
    def _patches(mod, inp):
        (x,) = inp
        p = mod.kernel_size[0]
        cols = F.unfold(x, p, stride=p)  # [n, 3 p p, patches]
        cols = q8_activations(cols.transpose(1, 2)).transpose(1, 2)
        return (F.fold(cols, x.shape[-2:], p, stride=p),)

    def __enter__(self):
        for mod in self.model.modules():
            if isinstance(mod, nn.Linear):
                self.handles.append(mod.register_forward_pre_hook(lambda mod, inp: (q8_activations(inp[0]),)))
            elif isinstance(mod, nn.Conv2d):
                self.handles.append(mod.register_forward_pre_hook(self._patches))
            if isinstance(mod, ResidualAttentionBlock) or hasattr(mod, "_logits"):
                mod.round_activations = True
                self.flagged.append(mod)
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for mod in self.flagged:
            mod.round_activations = False


@torch.no_grad()
def quantize_linear_weights(model, fmt):
    """Replace, in place, the matrix of every linear layer (attention and MLP
    projections of every part, the patch embedding read as [width, 3*p*p], the
    output head) by its quantised values; embeddings, norms, biases and other
    parameters stay as they are. A head tied to the embedding gets a quantised
    copy. Returns the names of the replaced parameters."""
    names = []
    for mname, mod in model.named_modules():
        prefix = mname + "." if mname else ""
        if isinstance(mod, nn.Linear):
            mod.weight.copy_(quantize_dequantize(mod.weight, fmt))
            names.append(prefix + "weight")
        elif isinstance(mod, nn.MultiheadAttention):  # out_proj is an nn.Linear, seen above
            mod.in_proj_weight.copy_(quantize_dequantize(mod.in_proj_weight, fmt))
            names.append(prefix + "in_proj_weight")
        elif isinstance(mod, nn.Conv2d):
            w = mod.weight
            mod.weight.copy_(quantize_dequantize(w.reshape(w.shape[0], -1), fmt).reshape(w.shape))
            names.append(prefix + "weight")
    lm = model.lang_encoder
    tied = {"llama": ("lm_head", "model.embed_tokens"), "gpt_neox": ("embed_out", "gpt_neox.embed_in")}.get(
        lm.family, (None, "transformer.wte"))
    if tied[0] is None or not hasattr(lm, tied[0]):
        emb = lm.get_submodule(tied[1]).weight
        lm.quantized_head = quantize_dequantize(emb, fmt).to(emb.dtype)
        names.append("lang_encoder." + tied[1] + ".weight (head copy)")
    return names


# --------------------------------------------------------------------------
# Model directories (SPEC.md section 1)
# --------------------------------------------------------------------------

_SAFE_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def model_state_dict(model):
    """The tensors of a model directory (parameters only; no buffers)."""
    return {k: v.detach() for k, v in model.named_parameters()}


def write_config_and_tokenizer(path, config, tokenizer_json):
    """config.json and tokenizer.json (a dict or a JSON string) of a model
    directory, created if need be."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    with open(os.path.join(path, "tokenizer.json"), "w", encoding="utf-8") as f:
        if isinstance(tokenizer_json, str):
            f.write(tokenizer_json)
        else:
            json.dump(tokenizer_json, f, ensure_ascii=False, indent=1)
            f.write("\n")


def save_model_dir(model, path, tokenizer_json, dtype="f32"):
    """Write config.json, tokenizer.json (a dict or a JSON string) and
    model.safetensors. dtype: f32, bf16 or f16."""
    write_config_and_tokenizer(path, model.config, tokenizer_json)
    tensors = {k: v.to(_SAFE_DTYPES[dtype]).contiguous() for k, v in model_state_dict(model).items()}
    safetensors_io.save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


def load_state_dir(path):
    """All tensors of a model directory (single file or shards)."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(safetensors_io.load_file(os.path.join(path, name)))
    return tensors


def load_model_dir(path, dtype=torch.float32):
    """Build the reference model from a model directory; weights are converted
    to `dtype` (so BF16 files run as their exact values in float32)."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    tensors = load_state_dir(path)
    ignored = ("lang_encoder.old_decoder_blocks.", "lang_encoder.gated_cross_attn_layers.")
    tensors = {k: v for k, v in tensors.items() if not k.startswith(ignored)}
    embed_dim = tensors["vision_encoder.proj"].shape[1]
    # shapes are authoritative: the vocabulary comes from the embedding
    config = json.loads(json.dumps(config))
    model = Flamingo(config, embed_dim=embed_dim)
    emb_name = "lang_encoder." + {"llama": "model.embed_tokens", "gpt_neox": "gpt_neox.embed_in"}.get(
        model.lang_encoder.family, "transformer.wte") + ".weight"
    if emb_name in tensors and tensors[emb_name].shape[0] != config["text_config"]["vocab_size"]:
        config["text_config"]["vocab_size"] = tensors[emb_name].shape[0]
        model = Flamingo(config, embed_dim=embed_dim)
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in tensors.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {unexpected}")
    return model.to(dtype).eval()

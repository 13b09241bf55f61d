"""Shared set-up for the world's scripts: threads and BLAS, seeds, the model
configuration, image preprocessing and weight initialisation."""

import os
import sys

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TOOLS)
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

_OPENBLAS = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


def threads_from_argv(default=1):
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--threads="):
            return int(a.split("=", 1)[1])
    return default


def fast_blas_reexec():
    """Debian's torch calls the system BLAS, and the default one (netlib) is
    ~15x slower than OpenBLAS for the float32 parts (feature caching,
    evaluation). When Debian's libopenblas0-pthread is installed, restart the
    script with it first on the library path. Call before importing torch."""
    if not os.path.isdir(_OPENBLAS) or os.environ.get("WORLD_BLAS_DONE"):
        return
    env = dict(os.environ)
    env["WORLD_BLAS_DONE"] = "1"
    env["LD_LIBRARY_PATH"] = _OPENBLAS + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env.setdefault("OPENBLAS_NUM_THREADS", str(threads_from_argv()))
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def setup_torch(threads, seed=None):
    import torch
    torch.set_num_threads(threads)
    if seed is not None:
        torch.manual_seed(seed)
    return torch


# ---- the model's shape ---------------------------------------------------------

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VISION = {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0,
          "quick_gelu": True, "tokens_ln_post": False, "image_mean": CLIP_MEAN, "image_std": CLIP_STD}
EMBED_DIM = 128          # CLIP embedding (second dimension of vision_encoder.proj)
PERCEIVER = {"depth": 2, "heads": 4, "dim_head": 32, "num_latents": 32, "ff_mult": 4,
             "max_num_media": None, "max_num_frames": 8}   # video: clips of 4 to 8 frames (video.py)
CROSS_ATTN = {"every_n_layers": 2, "heads": 4, "dim_head": 32, "ff_mult": 4, "only_attend_immediate_media": True}
TEXT = {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 6, "num_attention_heads": 8,
        "max_position_embeddings": 512}
CLIP_TEXT = {"width": 128, "layers": 3, "heads": 4, "context": 24}
RMS_NORM_EPS = 1e-6      # while pre-training the decoder
RESIDUAL_SCALE = 1 / 16  # the pre-trained decoder is rescaled by this before the Flamingo stage


def llama_config(vocab_size, eot_id, rescaled=True):
    """rescaled: the config of the decoder after rescale_residual_ (the shipped
    one), whose RMSNorm eps is scaled with the residual stream so that it
    computes exactly what the pre-trained decoder did."""
    """A Hugging Face LLaMA config.json for the world's decoder."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": TEXT["hidden_size"],
        "intermediate_size": TEXT["intermediate_size"],
        "num_hidden_layers": TEXT["num_hidden_layers"],
        "num_attention_heads": TEXT["num_attention_heads"],
        "num_key_value_heads": TEXT["num_attention_heads"],
        "hidden_act": "silu",
        "max_position_embeddings": TEXT["max_position_embeddings"],
        "initializer_range": 0.02,
        "rms_norm_eps": RMS_NORM_EPS * RESIDUAL_SCALE ** 2 if rescaled else RMS_NORM_EPS,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": "bfloat16",
    }


def flamingo_config(vocab_size, eot_id, eoc_id, media_id):
    return {
        "model_type": "flamingo",
        "vision_config": dict(VISION),
        "perceiver_config": dict(PERCEIVER),
        "cross_attn_config": dict(CROSS_ATTN),
        "text_config": llama_config(vocab_size, eot_id),
        "media_token_id": media_id,
        "eoc_token_id": eoc_id,
    }


# ---- images ------------------------------------------------------------------------

def preprocess(images_uint8):
    """[N, 64, 64, 3] uint8 -> [N, 3, 64, 64] float32, CLIP-normalised. The
    images are already at image_size, so open_clip's resize and crop leave
    them untouched."""
    import torch
    x = torch.as_tensor(images_uint8).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


# ---- initialisation ------------------------------------------------------------------

def init_vit(vit):
    """open_clip's initialisation of a VisionTransformer trained from scratch."""
    import torch.nn as nn
    width = vit.conv1.out_channels
    scale = width ** -0.5
    nn.init.normal_(vit.class_embedding, std=scale)
    nn.init.normal_(vit.positional_embedding, std=scale)
    nn.init.normal_(vit.proj, std=scale)
    layers = len(vit.transformer.resblocks)
    proj_std = scale * (2 * layers) ** -0.5
    for block in vit.transformer.resblocks:
        nn.init.normal_(block.attn.in_proj_weight, std=scale)
        nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
        nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def init_llama(lm, std=0.02):
    """Hugging Face LLaMA's initialisation: every Linear and Embedding N(0, std)."""
    import torch.nn as nn
    for m in lm.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

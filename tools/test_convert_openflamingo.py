#!/usr/bin/python3
"""Tests of tools/convert_openflamingo.py on small fake releases.

Each test builds a random reference Flamingo model (the "truth"), splits it
into what an OpenFlamingo release consists of - checkpoint.pt with the
trained parts and the resized embeddings, the language model's Hugging Face
directory with the original vocabulary, a CLIP file with visual.* (and text
tower) tensors - converts them, and checks that the model directory has the
truth's tensor names, shapes and values, a SPEC config and the added tokens,
and that the reference model loaded from it computes the truth's logits.

Run: /usr/bin/python3 tools/test_convert_openflamingo.py
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_openflamingo as conv  # noqa: E402
import flamingo_ref as fr  # noqa: E402
import make_model_fixtures as mf  # noqa: E402
import safetensors_io  # noqa: E402
import tiny_tokenizers as tt  # noqa: E402

torch.set_num_threads(1)

# the fake models' head sizes (released models use the defaults, 64)
SMALL = ["--vision-head-width", "16", "--perceiver-dim-head", "16", "--xattn-dim-head", "16"]


def truth_model(text_cfg, tok, every_n, seed, perceiver=None, vision=None):
    vocab = tok["model"]["vocab"]
    cfg = {"model_type": "flamingo", "vision_config": vision or mf.VISION,
           "perceiver_config": perceiver or mf.PERCEIVER,
           "cross_attn_config": dict(mf.XATTN, every_n_layers=every_n, heads=2, dim_head=16),
           "text_config": dict(text_cfg, vocab_size=len(vocab)),
           "media_token_id": vocab["<image>"], "eoc_token_id": vocab["<|endofchunk|>"]}
    model = fr.Flamingo(cfg, embed_dim=mf.EMBED_DIM).eval().requires_grad_(False)
    mf.randomize(model, seed, 0.3)
    return model


def pad_first(tok):
    """The tokenizer of an LM that has its own pad token: <PAD> precedes
    OpenFlamingo's two tokens."""
    tok = json.loads(json.dumps(tok))
    vocab = tok["model"]["vocab"]
    base = min(vocab[t] for t in tt.FLAMINGO_TOKENS)
    order = ["<PAD>", "<|endofchunk|>", "<image>"]
    for i, t in enumerate(order):
        vocab[t] = base + i
    for a in tok["added_tokens"]:
        if a["content"] in order:
            a["id"] = vocab[a["content"]]
    return tok


def strip_flamingo_tokens(tok, keep_pad):
    """The language model's own tokenizer: without OpenFlamingo's tokens."""
    tok = json.loads(json.dumps(tok))
    drop = {"<|endofchunk|>", "<image>"} | (set() if keep_pad else {"<PAD>"})
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] not in drop]
    for t in drop:
        del tok["model"]["vocab"][t]
    return tok


def write_release(model, tok, tmp, lm_format, ckpt_wrapped, clip_format, pad_in_lm=False,
                  drop_output_head_from_ckpt=False, extra_lm=None):
    """Split the truth model into checkpoint.pt, an LM directory and a CLIP file."""
    lm = model.lang_encoder
    family, layers_path = lm.family, lm.layers_path
    n_added = 2 if pad_in_lm else 3
    sd = model.state_dict()
    v_full = lm.cfg["vocab_size"]
    v0 = v_full - n_added
    emb = "lang_encoder." + conv.INPUT_EMBEDDING[family]
    out_emb = conv.OUTPUT_EMBEDDING[family] and "lang_encoder." + conv.OUTPUT_EMBEDDING[family]

    # CLIP: visual.* plus a text tower that must be ignored
    clip = {"visual." + k[len("vision_encoder."):]: v.clone() for k, v in sd.items()
            if k.startswith("vision_encoder.")}
    clip["token_embedding.weight"] = torch.randn(10, 8)
    clip["logit_scale"] = torch.tensor(4.6)
    clip_path = os.path.join(tmp, "clip" + clip_format)
    if clip_format == ".safetensors":
        safetensors_io.save_file(clip, clip_path)
    else:
        torch.save(clip, clip_path)

    # language model directory, original vocabulary, HF names
    lm_dir = os.path.join(tmp, "lm")
    os.makedirs(lm_dir)
    cfg = dict(lm.cfg, vocab_size=v0)
    with open(os.path.join(lm_dir, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(lm_dir, "tokenizer.json"), "w") as f:
        json.dump(strip_flamingo_tokens(tok, pad_in_lm), f)
    if pad_in_lm:
        with open(os.path.join(lm_dir, "special_tokens_map.json"), "w") as f:
            json.dump({"pad_token": "<PAD>"}, f)
    weights = {}
    for k, v in sd.items():
        if not k.startswith("lang_encoder.") or ".gated_cross_attn_layer." in k:
            continue
        name = k[len("lang_encoder."):].replace(".decoder_layer.", ".")
        weights[name] = v[:v0].clone() if k in (emb, out_emb) else v.clone()
    weights.update(extra_lm or {})
    names = sorted(weights)
    if lm_format == "bin":
        torch.save(weights, os.path.join(lm_dir, "pytorch_model.bin"))
    elif lm_format == "safetensors":
        safetensors_io.save_file(weights, os.path.join(lm_dir, "model.safetensors"))
    else:  # two shards with an index
        ext = "bin" if lm_format == "bin-shards" else "safetensors"
        halves = [names[: len(names) // 2], names[len(names) // 2:]]
        wmap = {}
        for i, part in enumerate(halves):
            fname = f"pytorch_model-0000{i + 1}-of-00002.bin" if ext == "bin" else \
                f"model-0000{i + 1}-of-00002.safetensors"
            chunk = {n: weights[n] for n in part}
            if ext == "bin":
                torch.save(chunk, os.path.join(lm_dir, fname))
            else:
                safetensors_io.save_file(chunk, os.path.join(lm_dir, fname))
            wmap.update({n: fname for n in part})
        index = "pytorch_model.bin.index.json" if ext == "bin" else "model.safetensors.index.json"
        with open(os.path.join(lm_dir, index), "w") as f:
            json.dump({"metadata": {}, "weight_map": wmap}, f)

    # checkpoint.pt: trained parts, resized embeddings, upstream's duplicates
    ckpt = {}
    for k, v in sd.items():
        if k.startswith("perceiver.") or ".gated_cross_attn_layer." in k or k == emb or \
                (k == out_emb and not drop_output_head_from_ckpt):
            ckpt[k] = v.clone()
    for k in list(ckpt):
        if ".gated_cross_attn_layer." in k:  # the duplicate path PyTorch also lists
            i = k[len(f"lang_encoder.{layers_path}."):].split(".")[0]
            rest = k.split(".gated_cross_attn_layer.")[1]
            ckpt[f"lang_encoder.gated_cross_attn_layers.{i}.{rest}"] = torch.full_like(ckpt[k], float("nan"))
    if ckpt_wrapped:
        ckpt = {"epoch": 3, "model_state_dict": {"module." + k: v for k, v in ckpt.items()}}
    ckpt_path = os.path.join(tmp, "checkpoint.pt")
    torch.save(ckpt, ckpt_path)
    return ckpt_path, lm_dir, clip_path


def run_convert(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = conv.main(argv)
    return rc, err.getvalue()


class ConvertTest(unittest.TestCase):
    def convert_and_check(self, spec_name, every_n, lm_format, ckpt_wrapped, clip_format, dtype="f32",
                          shard=None, pad_in_lm=False, drop_output_head=False, extra_lm=None, perceiver=None):
        spec = mf.case_specs()[spec_name]
        tok = tt.llama_tokenizer(mf.CORPUS) if spec["tokenizer"] == "llama" else tt.byte_level_tokenizer(mf.CORPUS)
        if pad_in_lm:
            tok = pad_first(tok)
        truth = truth_model(spec["text"], tok, every_n, seed=7, perceiver=perceiver)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt, lm_dir, clip = write_release(truth, tok, tmp, lm_format, ckpt_wrapped, clip_format,
                                               pad_in_lm, drop_output_head, extra_lm)
            out = os.path.join(tmp, "out")
            argv = ["--checkpoint", ckpt, "--lm", lm_dir, "--clip", clip, "--out", out, "--dtype", dtype] + SMALL
            if shard:
                argv += ["--max-shard-size", shard]
            rc, err = run_convert(argv)
            self.assertEqual(rc, 0, err)

            files = sorted(os.listdir(out))
            if shard:
                self.assertIn("model.safetensors.index.json", files)
                self.assertGreater(len([f for f in files if f.startswith("model-")]), 1)
            else:
                self.assertIn("model.safetensors", files)
            self.assertFalse([f for f in files if f.endswith(".tmp")], files)

            with open(os.path.join(out, "config.json")) as f:
                config = json.load(f)
            vocab = tok["model"]["vocab"]
            self.assertEqual(config["model_type"], "flamingo")
            self.assertEqual(config["media_token_id"], vocab["<image>"])
            self.assertEqual(config["eoc_token_id"], vocab["<|endofchunk|>"])
            self.assertEqual(config["text_config"]["vocab_size"], len(vocab))
            self.assertEqual(config["text_config"]["model_type"], spec["text"]["model_type"])
            self.assertEqual(config["cross_attn_config"],
                             dict(mf.XATTN, every_n_layers=every_n, only_attend_immediate_media=True))
            v = config["vision_config"]
            for key in ("image_size", "patch_size", "width", "layers", "head_width", "mlp_ratio"):
                self.assertEqual(v[key], mf.VISION[key], key)
            self.assertTrue(v["quick_gelu"])
            self.assertFalse(v["tokens_ln_post"])
            self.assertEqual(config["perceiver_config"], perceiver or mf.PERCEIVER)

            with open(os.path.join(out, "tokenizer.json")) as f:
                added = {a["content"]: a["id"] for a in json.load(f)["added_tokens"]}
            for t in ("<|endofchunk|>", "<image>", "<PAD>"):
                self.assertEqual(added.get(t), vocab[t], t)

            stored = fr.load_state_dir(out)
            expected = truth.state_dict()
            self.assertEqual(sorted(stored), sorted(expected))
            want = safetensors_io.DTYPES[{"f32": "F32", "bf16": "BF16", "f16": "F16"}[dtype]]
            head = conv.OUTPUT_EMBEDDING[truth.lang_encoder.family]
            head = head and "lang_encoder." + head
            v0 = len(vocab) - (2 if pad_in_lm else 3)
            for k, t in expected.items():
                got = stored[k]
                self.assertEqual(got.dtype, want, k)
                self.assertEqual(tuple(got.shape), tuple(t.shape), k)
                ref = t.to(want)
                if drop_output_head and k == head:
                    self.assertTrue(torch.equal(got[:v0], ref[:v0]), k)
                    self.assertTrue(torch.isfinite(got[v0:].float()).all())
                    self.assertLess(float(got[v0:].float().std()), 0.1)  # N(0, 0.02)
                else:
                    self.assertTrue(torch.equal(got, ref), k)

            # the converted directory computes the truth's logits
            model = fr.load_model_dir(out)
            g = torch.Generator().manual_seed(1)
            frames = 1 if not perceiver else 2
            vision_x = torch.randn(1, 2, frames, 3, 28, 28, generator=g)
            ids = tt.encode(tok, "A picture: <image>Output: a cat.<|endofchunk|><image>Output: the dog")
            lang_x = torch.tensor([ids])
            with torch.no_grad():
                if dtype != "f32":
                    truth.load_state_dict({k: t.to(want).float() for k, t in expected.items()})
                want_logits = truth(vision_x, lang_x)
                got_logits = model(vision_x, lang_x)
            cols = slice(0, v0) if drop_output_head else slice(None)
            diff = (got_logits[..., cols] - want_logits[..., cols]).abs().max()
            self.assertLess(float(diff), 1e-5)
            return out, err

    def test_mpt_flat_checkpoint_bin_clip(self):
        self.convert_and_check("mpt", 1, "safetensors-shards", False, ".bin")

    def test_mosaic_gpt_wrapped_checkpoint(self):
        self.convert_and_check("mosaic_gpt", 1, "safetensors", True, ".safetensors")

    def test_gpt_neox_sharded_bin_with_buffers(self):
        extra = {f"gpt_neox.layers.{i}.attention.bias": torch.ones(1, 1, 4, 4, dtype=torch.bool) for i in range(4)}
        extra.update({f"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq": torch.ones(3) for i in range(4)})
        extra.update({f"gpt_neox.layers.{i}.attention.masked_bias": torch.tensor(-1e9) for i in range(4)})
        self.convert_and_check("gpt_neox", 2, "bin-shards", True, ".bin", extra_lm=extra)

    def test_llama_output_head_not_in_checkpoint_bf16_sharded(self):
        # OpenFlamingo saves the LLaMA input embeddings but not lm_head: its
        # new rows are initialised as Hugging Face's resize does
        extra = {f"model.layers.{i}.self_attn.rotary_emb.inv_freq": torch.ones(6) for i in range(4)}
        _, err = self.convert_and_check("llama", 2, "bin", True, ".bin", dtype="bf16", shard="150KB",
                                        drop_output_head=True, extra_lm=extra)
        self.assertIn("lm_head.weight: 3 new rows", err)

    def test_pad_token_already_present(self):
        self.convert_and_check("gpt_neox", 4, "safetensors", False, ".bin", pad_in_lm=True)

    def test_video_embeddings(self):
        self.convert_and_check("mpt", 1, "safetensors", False, ".bin",
                               perceiver=dict(mf.PERCEIVER, max_num_frames=3, max_num_media=4))

    def test_errors(self):
        spec = mf.case_specs()["gpt_neox"]
        tok = tt.byte_level_tokenizer(mf.CORPUS)
        truth = truth_model(spec["text"], tok, 2, seed=3)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt, lm_dir, clip = write_release(truth, tok, tmp, "safetensors", False, ".bin")
            out = os.path.join(tmp, "out")
            base = ["--checkpoint", ckpt, "--lm", lm_dir, "--clip", clip, "--out", out] + SMALL

            # CLIP weights of another width than the checkpoint's Perceiver and
            # cross-attention take: refused before anything is written
            wide = truth_model(spec["text"], tok, 2, seed=4, vision=dict(mf.VISION, width=48))
            os.makedirs(os.path.join(tmp, "wide"))
            _, _, wide_clip = write_release(wide, tok, os.path.join(tmp, "wide"), "safetensors", False, ".bin")
            rc, err = run_convert(["--checkpoint", ckpt, "--lm", lm_dir, "--clip", wide_clip, "--out", out] + SMALL)
            self.assertEqual(rc, 1)
            self.assertIn(f"{wide_clip}: the CLIP vision tower is 48 wide, but {ckpt} takes 32-wide visual features",
                          err)
            self.assertEqual(err.count("\n"), 1, err)
            self.assertFalse(os.path.exists(out))

            rc, err = run_convert(base + ["--cross-attn-every-n-layers", "1"])
            self.assertEqual(rc, 1)
            self.assertIn("cross-attention on layers [1, 3]", err)
            self.assertFalse(os.path.exists(os.path.join(out, "model.safetensors")))

            rc, err = run_convert(["--checkpoint", clip, "--lm", lm_dir, "--clip", clip, "--out", out])
            self.assertEqual(rc, 1)
            self.assertIn("no perceiver", err)

            rc, err = run_convert(["--checkpoint", ckpt, "--lm", lm_dir, "--clip", ckpt, "--out", out])
            self.assertEqual(rc, 1)
            self.assertIn("visual.conv1.weight", err)

            with open(os.path.join(lm_dir, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(lm_dir, "config.json"), "w") as f:
                json.dump(dict(cfg, model_type="bloom"), f)
            rc, err = run_convert(base)
            self.assertEqual(rc, 1)
            self.assertIn("'bloom' is not supported", err)

            with open(os.path.join(lm_dir, "config.json"), "w") as f:
                json.dump(cfg, f)
            os.remove(os.path.join(lm_dir, "tokenizer.json"))
            rc, err = run_convert(base)
            self.assertEqual(rc, 1)
            self.assertIn("tokenizer.json is required", err)

        # a failure while writing leaves no partial files behind
        with tempfile.TemporaryDirectory() as tmp:
            extra = {"gpt_neox.layers.9.input_layernorm.weight": torch.ones(48)}
            ckpt, lm_dir, clip = write_release(truth, tok, tmp, "safetensors", False, ".bin", extra_lm=extra)
            out = os.path.join(tmp, "out")
            rc, err = run_convert(["--checkpoint", ckpt, "--lm", lm_dir, "--clip", clip, "--out", out] + SMALL)
            self.assertEqual(rc, 1)
            self.assertIn("gpt_neox.layers.9.input_layernorm.weight: layer index beyond", err)
            self.assertEqual(os.listdir(out), [])


if __name__ == "__main__":
    unittest.main()

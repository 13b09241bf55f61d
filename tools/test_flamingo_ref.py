#!/usr/bin/python3
"""Checks of tools/flamingo_ref.py against independent, deliberately naive
formulations (loops over tokens, heads and keys written from the upstream
definitions), a hand-traced beam search, and known tokenizer splits.

Run: /usr/bin/python3 tools/test_flamingo_ref.py
"""

import math
import os
import sys
import types
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flamingo_ref as fr  # noqa: E402
import make_model_fixtures as mf  # noqa: E402
import tiny_tokenizers as tt  # noqa: E402

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)


def randomize(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 1.0))


def softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def attend(q, keys, values, scale, biases=None):
    """One query over a list of keys, plain Python floats."""
    scores = [scale * sum(a * b for a, b in zip(q, k)) + (biases[j] if biases else 0.0)
              for j, k in enumerate(keys)]
    w = softmax(scores)
    return [sum(w[j] * values[j][d] for j in range(len(keys))) for d in range(len(values[0]))]


def rotate(vec, pos, base, dims):
    """Rotary embedding of the first `dims` entries: pairs (i, i + dims/2)
    rotated by pos * base^(-2i/dims)."""
    out = list(vec)
    half = dims // 2
    for i in range(half):
        theta = pos * base ** (-2.0 * i / dims)
        a, b = vec[i], vec[i + half]
        out[i] = a * math.cos(theta) - b * math.sin(theta)
        out[i + half] = b * math.cos(theta) + a * math.sin(theta)
    return out


class CrossAttentionTest(unittest.TestCase):
    def naive(self, xattn, x, media, ids, media_id, immediate):
        """Per token: the images it may see by OpenFlamingo's rule."""
        T, n = x.shape[1], media.shape[2]
        h = xattn.heads
        xn = xattn.norm(x)[0]
        q = xattn.to_q(xn)
        kv = xattn.to_kv(media[0].reshape(-1, media.shape[-1]))
        k, v = kv.chunk(2, dim=-1)
        dh = q.shape[-1] // h
        out = torch.zeros(T, h * dh)
        seen = 0
        for t in range(T):
            seen += int(ids[t] == media_id)
            if immediate:
                allowed = list(range((seen - 1) * n, seen * n)) if seen else []
            else:
                # before any image every key is masked alike: a uniform softmax
                allowed = list(range(seen * n)) if seen else list(range(k.shape[0]))
            for hh in range(h):
                sl = slice(hh * dh, (hh + 1) * dh)
                if not allowed:
                    continue  # zero output
                if not immediate and not seen:
                    out[t, sl] = v[:, sl].mean(dim=0)
                    continue
                keys = [k[j, sl].tolist() for j in allowed]
                vals = [v[j, sl].tolist() for j in allowed]
                out[t, sl] = torch.tensor(attend(q[t, sl].tolist(), keys, vals, dh ** -0.5))
        return xattn.to_out(out)

    def test_masks(self):
        media_id = 9
        ids = torch.tensor([3, 4, 9, 5, 6, 9, 9, 7, 8])
        for immediate in (True, False):
            xattn = fr.MaskedCrossAttention(dim=12, dim_visual=10, dim_head=4, heads=3,
                                            only_attend_immediate_media=immediate)
            randomize(xattn, 1)
            g = torch.Generator().manual_seed(2)
            x = torch.randn(1, len(ids), 12, generator=g)
            media = torch.randn(1, 3, 5, 10, generator=g)
            tt_ = fr.text_time_from_media_locations((ids == media_id)[None])
            got = xattn(x, media, tt_)[0]
            want = self.naive(xattn, x, media, ids, media_id, immediate)
            self.assertLess(float((got - want).abs().max()), 1e-10, f"immediate={immediate}")
            if immediate:  # text before the first image: exactly zero
                self.assertEqual(float(got[:2].abs().max()), 0.0)

    def test_cached_media_text_time(self):
        loc = torch.tensor([[False, True, False, True, False]])
        self.assertEqual(fr.text_time_from_media_locations(loc).tolist(), [[0, 1, 1, 2, 2]])
        self.assertEqual(fr.text_time_from_media_locations(loc, True, 3).tolist(), [[2, 2, 2]])
        tt_ = fr.generation_text_time(torch.tensor([[5, 9, 6, 9, 7]]), 8, 9)
        self.assertEqual(tt_.tolist(), [[0, 1, 1, 2, 2, 2, 2, 2]])

    def test_gated_block_uses_tanh_gates(self):
        block = fr.GatedCrossAttentionBlock(dim=8, dim_visual=6, dim_head=4, heads=2)
        randomize(block, 3)
        with torch.no_grad():
            block.attn_gate.fill_(0.7)
            block.ff_gate.fill_(-0.4)
        g = torch.Generator().manual_seed(4)
        x, media = torch.randn(1, 4, 8, generator=g), torch.randn(1, 1, 3, 6, generator=g)
        tt_ = torch.tensor([[0, 1, 1, 1]])
        y = block.attn(x, media, tt_) * math.tanh(0.7) + x
        y = block.ff(y) * math.tanh(-0.4) + y
        self.assertLess(float((block(x, media, tt_) - y).abs().max()), 1e-12)


class PerceiverTest(unittest.TestCase):
    def test_frames_and_media_time(self):
        p = fr.PerceiverResampler(dim=8, depth=2, dim_head=4, heads=2, num_latents=3, max_num_media=4,
                                  max_num_frames=3, ff_mult=2)
        randomize(p, 5)
        g = torch.Generator().manual_seed(6)
        x = torch.randn(1, 2, 2, 5, 8, generator=g)  # b, T media, F frames, v tokens, D
        got = p(x)[0]
        for m in range(2):
            feats = torch.cat([x[0, m, f] + p.frame_embs[f] for f in range(2)]) + p.media_time_embs[m, 0]
            lat = p.latents.clone()
            for attn, ff in p.layers:
                xm, ln = attn.norm_media(feats), attn.norm_latents(lat)
                q = attn.to_q(ln)
                kv = attn.to_kv(torch.cat([xm, ln]))
                k, v = kv.chunk(2, dim=-1)
                out = torch.zeros_like(q)
                for i in range(lat.shape[0]):
                    for hh in range(2):
                        sl = slice(hh * 4, hh * 4 + 4)
                        out[i, sl] = torch.tensor(attend(q[i, sl].tolist(), k[:, sl].tolist(), v[:, sl].tolist(),
                                                         0.5))
                lat = attn.to_out(out) + lat
                lat = ff(lat) + lat
            want = p.norm(lat)
            self.assertLess(float((got[m] - want).abs().max()), 1e-10)


class DecoderTest(unittest.TestCase):
    def test_alibi_slopes(self):
        self.assertEqual(fr.alibi_slopes(8).tolist(), [2.0 ** -k for k in range(1, 9)])
        # 6 heads: slopes of 8 heads, odd positions first, then even ones
        s8 = [2.0 ** -k for k in range(1, 9)]
        self.assertEqual(fr.alibi_slopes(6).tolist(), (s8[1::2] + s8[::2])[:6])
        self.assertEqual(fr.alibi_slopes_mosaic_gpt(4).tolist(), [2.0 ** -(2 * k) for k in range(1, 5)])

    def mpt_naive(self, block_attn, x, slopes, n_heads):
        T, d = x.shape[1], x.shape[2]
        qkv = block_attn.Wqkv(x[0])
        if block_attn.clip_qkv:
            qkv = qkv.clamp(-block_attn.clip_qkv, block_attn.clip_qkv)
        q, k, v = qkv[:, :d], qkv[:, d:2 * d], qkv[:, 2 * d:]
        if block_attn.qk_ln:
            q, k = block_attn.q_ln(q), block_attn.k_ln(k)
        dh = d // n_heads
        out = torch.zeros(T, d)
        for t in range(T):
            for h in range(n_heads):
                sl = slice(h * dh, (h + 1) * dh)
                bias = [-(t - j) * float(slopes[h]) for j in range(t + 1)]
                out[t, sl] = torch.tensor(attend(q[t, sl].tolist(), k[:t + 1, sl].tolist(), v[:t + 1, sl].tolist(),
                                                 dh ** -0.5, bias))
        return block_attn.out_proj(out)

    def test_mpt_alibi_attention(self):
        cfg = dict(mf.MPT, vocab_size=20, d_model=12, n_heads=6)
        lm = fr.FlamingoLM(cfg, vis_dim=8, xattn=dict(mf.XATTN, every_n_layers=100))
        randomize(lm, 7)
        attn = lm.layers[0].decoder_layer.attn
        x = torch.randn(1, 7, 12, generator=torch.Generator().manual_seed(8)) * 2
        got = attn(x, lm._context(7, x.dtype))[0]
        want = self.mpt_naive(attn, x, fr.alibi_slopes(6), 6)
        self.assertLess(float((got - want).abs().max()), 1e-10)

    def test_gpt_neox_fused_qkv_partial_rotary(self):
        cfg = dict(mf.GPT_NEOX, vocab_size=20, hidden_size=16, num_attention_heads=2, rotary_pct=0.5,
                   rotary_emb_base=100)
        lm = fr.FlamingoLM(cfg, vis_dim=8, xattn=dict(mf.XATTN, every_n_layers=100))
        randomize(lm, 9)
        attn = lm.layers[0].decoder_layer.attention
        T, hs, r = 6, 8, 4
        x = torch.randn(1, T, 16, generator=torch.Generator().manual_seed(10))
        got = attn(x, lm._context(T, x.dtype))[0]
        qkv = attn.query_key_value(x[0])
        out = torch.zeros(T, 16)
        for h in range(2):
            base = h * 3 * hs  # per head: [q | k | v]
            q = [rotate(qkv[t, base:base + hs].tolist(), t, 100, r) for t in range(T)]
            k = [rotate(qkv[t, base + hs:base + 2 * hs].tolist(), t, 100, r) for t in range(T)]
            v = [qkv[t, base + 2 * hs:base + 3 * hs].tolist() for t in range(T)]
            for t in range(T):
                out[t, h * hs:(h + 1) * hs] = torch.tensor(attend(q[t], k[:t + 1], v[:t + 1], hs ** -0.5))
        want = attn.dense(out)
        self.assertLess(float((got - want).abs().max()), 1e-6)  # float32 rotary tables as HF

    def test_llama_grouped_query_attention(self):
        cfg = dict(mf.LLAMA, vocab_size=20, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
                   rope_theta=500.0)
        lm = fr.FlamingoLM(cfg, vis_dim=8, xattn=dict(mf.XATTN, every_n_layers=100))
        randomize(lm, 11)
        attn = lm.layers[0].decoder_layer.self_attn
        T, hd = 5, 4
        x = torch.randn(1, T, 16, generator=torch.Generator().manual_seed(12))
        got = attn(x, lm._context(T, x.dtype))[0]
        q, k, v = attn.q_proj(x[0]), attn.k_proj(x[0]), attn.v_proj(x[0])
        out = torch.zeros(T, 16)
        for h in range(4):
            kvh = h // 2  # query heads 0,1 share KV head 0; 2,3 share 1
            qs = [rotate(q[t, h * hd:(h + 1) * hd].tolist(), t, 500.0, hd) for t in range(T)]
            ks = [rotate(k[t, kvh * hd:(kvh + 1) * hd].tolist(), t, 500.0, hd) for t in range(T)]
            vs = [v[t, kvh * hd:(kvh + 1) * hd].tolist() for t in range(T)]
            for t in range(T):
                out[t, h * hd:(h + 1) * hd] = torch.tensor(attend(qs[t], ks[:t + 1], vs[:t + 1], hd ** -0.5))
        self.assertLess(float((got - attn.o_proj(out)).abs().max()), 1e-6)

    def test_rms_norm(self):
        n = fr.LlamaRMSNorm(4, 1e-5)
        with torch.no_grad():
            n.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        x = torch.tensor([1.0, -2.0, 3.0, 0.5])
        rms = math.sqrt(sum(v * v for v in x.tolist()) / 4 + 1e-5)
        want = torch.tensor([1.0, 2.0, 0.5, -1.0]) * x / rms
        self.assertLess(float((n(x) - want).abs().max()), 1e-12)


class DecodingTest(unittest.TestCase):
    """A fake model with fixed next-token probabilities; eos = 3."""

    TABLE = {(): [0.5, 0.3, 0.15, 0.05], (0,): [0.1, 0.1, 0.1, 0.7], (1,): [0.6, 0.2, 0.1, 0.1]}
    DEFAULT = [0.4, 0.3, 0.2, 0.1]

    def setUp(self):
        self.saved = fr._next_logits

        def fake(model, media, seqs, prompt_len):
            rows = [self.TABLE.get(tuple(s[prompt_len:].tolist()), self.DEFAULT) for s in seqs]
            return torch.log(torch.tensor(rows))

        fr._next_logits = fake
        self.model = types.SimpleNamespace(eoc_token_id=3, media_token_id=99)
        self.media = torch.zeros(1)

    def tearDown(self):
        fr._next_logits = self.saved

    def test_greedy(self):
        self.assertEqual(fr.greedy_generate(self.model, None, [0, 0], 5, media=self.media), [0, 3])
        self.assertEqual(fr.greedy_generate(self.model, None, [0, 0], 1, media=self.media), [0])

    def test_beam_hand_traced(self):
        # step 1 keeps [0] (-0.693) and [1] (-1.204); step 2 finishes [0]+eos
        # (hypothesis [0,0,0], length 3 with the prompt, sum ln .5 + ln .7) and
        # keeps [1,0], [1,1]; step 3 keeps [1,0,0] (ln .3+ln .6+ln .4) and
        # [1,0,1]; max_length 5 ends the search.
        ln = math.log
        finished = ln(0.5) + ln(0.7)
        open_best = ln(0.3) + ln(0.6) + ln(0.4)
        out, score = fr.beam_generate(self.model, None, [0, 0], 3, 2, length_penalty=1.0, media=self.media)
        self.assertEqual(out, [0, 3])
        self.assertAlmostEqual(score, finished / 3, places=12)
        # a length penalty of 2 prefers the open hypothesis of length 5 (no stop token)
        out, score = fr.beam_generate(self.model, None, [0, 0], 3, 2, length_penalty=2.0, media=self.media)
        self.assertEqual(out, [1, 0, 0])
        self.assertAlmostEqual(score, open_best / 25, places=12)

    def test_no_repeat_ngram(self):
        self.assertEqual(fr.no_repeat_ngram_banned([1, 2, 3, 1, 2], 3), [3])
        self.assertEqual(sorted(fr.no_repeat_ngram_banned([1, 2, 1, 4, 1], 2)), [2, 4])
        self.assertEqual(fr.no_repeat_ngram_banned([1, 2], 3), [])


class ActivationRoundingTest(unittest.TestCase):
    def test_q8_activations_per_block(self):
        # per block of 32 along the last dimension: d = max|x| / 127 in float32, x -> d * round(x / d)
        x = torch.randn(3, 70, generator=torch.Generator().manual_seed(5))
        x[1, 32:64] = 0.0  # an all-zero block stays zero
        got = fr.q8_activations(x)
        for r in range(3):
            for b0 in range(0, 70, 32):
                blk = x[r, b0:b0 + 32].float()
                d = blk.abs().max() / torch.tensor(127.0, dtype=torch.float32)
                for i, v in enumerate(blk):
                    want = 0.0 if d == 0 else float(d * torch.round(v / d))
                    self.assertEqual(float(got[r, b0 + i]), want)

    def test_vision_attention_written_out_is_the_module(self):
        # with rounding made the identity, the written-out attention equals nn.MultiheadAttention
        block = fr.ResidualAttentionBlock(64, 4, 2.0, True)
        randomize(block, 3)
        x = torch.randn(5, 2, 64, generator=torch.Generator().manual_seed(4))
        want = block(x)
        saved, fr.q8_activations = fr.q8_activations, (lambda t: t)
        try:
            block.round_activations = True
            got = block(x)
        finally:
            fr.q8_activations, block.round_activations = saved, False
        self.assertLess(float((got - want).abs().max()), 1e-12)

    def test_context_rounds_linear_inputs_and_restores(self):
        lin = torch.nn.Sequential(torch.nn.Linear(40, 8))
        randomize(lin, 6)
        x = torch.randn(4, 40, generator=torch.Generator().manual_seed(7))
        with fr.ActivationRounding(lin):
            inside = lin(x)
        self.assertTrue(torch.equal(inside, lin(fr.q8_activations(x))))
        self.assertFalse(torch.equal(inside, lin(x)))
        self.assertTrue(torch.equal(lin(x), torch.nn.functional.linear(x, lin[0].weight, lin[0].bias)))


class TokenizerTest(unittest.TestCase):
    def test_gpt2_split(self):
        self.assertEqual(tt.GPT2_SPLIT.findall("Hello world's 42!  ok\n"),
                         ["Hello", " world", "'s", " 42", "!", " ", " ok", "\n"])

    def test_byte_level_round_trip(self):
        tok = tt.byte_level_tokenizer(mf.CORPUS)
        text = "Look: <image>Output: the cat 12!<|endofchunk|>"
        ids = tt.encode(tok, text)
        self.assertEqual(tt.decode(tok, ids), text)
        self.assertIn(tok["model"]["vocab"]["<image>"], ids)

    def test_llama_pieces(self):
        tok = tt.llama_tokenizer(mf.CORPUS)
        vocab = tok["model"]["vocab"]
        inv = {v: k for k, v in vocab.items()}
        ids = tt.encode(tok, "<image>Output: Z")
        # <s>, <image>, then the piece after the added token gets its own "▁"
        self.assertEqual(ids[:2], [1, vocab["<image>"]])
        self.assertEqual("".join(inv[i] for i in ids[2:-1]), "▁Output:▁")
        self.assertEqual(ids[-1], vocab["<0x5A>"])  # "Z" is not a piece: byte fallback
        self.assertEqual(tt.encode(tok, "a cat", add_special_tokens=False)[0], vocab["▁a"])


if __name__ == "__main__":
    unittest.main()

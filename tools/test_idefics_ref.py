#!/usr/bin/python3
"""Checks of tools/idefics_ref.py against hand-worked cases of the upstream
semantics it models (the processor's prompt and image mask, the decoupled
vocabulary, the cross-attention gate)."""

import os
import sys
import unittest

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import idefics_ref as ir  # noqa: E402

F, I = ir.FAKE, ir.IMAGE


class Processor(unittest.TestCase):
    def test_prompt_text(self):
        self.assertEqual(ir.prompt_text("A <image> B"), f"<s>A{F}{I}{F}B")
        # consecutive images share the fake token between them
        self.assertEqual(ir.prompt_text("<image><image>x"), f"<s>{F}{I}{F}{I}{F}x")
        self.assertEqual(ir.prompt_text("a<image> <image>"), f"<s>a{F}{I}{F}{I}{F}")
        self.assertEqual(ir.prompt_text("a<image>b<image>"), f"<s>a{F}{I}{F}b{F}{I}{F}")
        self.assertEqual(ir.prompt_text("no image"), "<s>no image")

    def test_image_index(self):
        # ids: 5 = image, 2 = </s>; the latest image at or before, none before
        # the first image or after </s> until the next image
        ids = [1, 7, 5, 7, 7, 5, 7, 2, 7, 5, 7]
        self.assertEqual(ir.image_index(ids, 5, 2).tolist(), [-1, -1, 0, 0, 0, 1, 1, 1, -1, 2, 2])


class Model(unittest.TestCase):
    def make(self, **kw):
        torch.manual_seed(0)
        cfg = {"vocab_size": 10, "additional_vocab_size": 2, "hidden_size": 8, "intermediate_size": 16,
               "num_hidden_layers": 2, "num_attention_heads": 2, "use_resampler": True, "vision_embed_dim": 8,
               "cross_layer_interval": 1, "alpha_type": "vector",
               "vision_config": {"embed_dim": 8, "image_size": 4, "patch_size": 2, "intermediate_size": 16,
                                 "num_hidden_layers": 1, "num_attention_heads": 2},
               "perceiver_config": {"resampler_n_latents": 3, "resampler_depth": 1, "resampler_n_heads": 2,
                                    "resampler_head_dim": 4}, **kw}
        m = ir.Idefics(cfg, 11, 2).double().eval()
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, dtype=torch.float64))
        return m

    def test_decoupled_vocabulary(self):
        m = self.make()
        ids = torch.tensor([[3, 10, 11, 0]])
        emb = m.model.embed_tokens(ids)[0]
        table = torch.cat([m.model.embed_tokens.weight, m.model.embed_tokens.additional_embedding.weight])
        self.assertTrue(torch.equal(emb, table[ids[0]]))
        x = torch.randn(2, 8, dtype=torch.float64)
        head = torch.cat([m.lm_head.weight, m.lm_head.additional_fc.weight])
        self.assertTrue(torch.allclose(m.lm_head(x), x @ head.T))

    def test_gate_zeroes_text_without_image(self):
        m = self.make()
        layer = m.model.gated_cross_attn_layers[0]
        x = torch.randn(1, 3, 8, dtype=torch.float64)
        states = torch.randn(1, 6, 8, dtype=torch.float64)
        mask = torch.zeros(1, 1, 3, 6, dtype=torch.float64)
        gate = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
        out = layer(x, states, mask, gate)
        no_attn = x + torch.tanh(layer.alpha_dense) * layer.mlp(layer.post_attention_layernorm(x))
        self.assertTrue(torch.allclose(out[0, 0], no_attn[0, 0]))
        self.assertFalse(torch.allclose(out[0, 1], no_attn[0, 1]))

    def test_generated_rows_repeat_the_prompts_last_row(self):
        # generate() hands each new token the prompt's last image_attention_mask
        # row: after a prompt ending past </s> they see no image, and a
        # generated </s> changes nothing
        m = self.make()
        media = torch.randn(1, 2, 3, 8, dtype=torch.float64)
        for prompt, last in (([1, 11, 7, 2, 7], -1), ([1, 11, 7, 2, 11, 7], 1)):
            seqs = torch.tensor([prompt + [2, 7]])
            idx = torch.tensor([ir.image_index(prompt, 11, 2).tolist() + [last, last]])
            want = m.forward_media(media, seqs, image_idx=idx)[:, -1]
            self.assertTrue(torch.equal(m.next_logits(media, seqs, len(prompt)), want))
        # unlike the processor's mask of the whole text, which cuts after the generated </s>
        seqs = torch.tensor([[1, 11, 7, 2, 7]])
        self.assertFalse(torch.allclose(m.next_logits(media, seqs, 3), m.forward_media(media, seqs)[:, -1]))

    def test_cross_layers_before_every_interval(self):
        m = self.make(num_hidden_layers=4, cross_layer_interval=2)
        self.assertEqual(len(m.model.gated_cross_attn_layers), 2)


if __name__ == "__main__":
    unittest.main()

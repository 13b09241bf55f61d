#!/usr/bin/python3
"""Tests of tools/convert_idefics.py: the tiny IDEFICS instruct fixture
(tests/data/model/idefics_instruct, safetensors) is written out as a
.bin-only release (torch.save shards with pytorch_model.bin.index.json, or
one pytorch_model.bin), converted back, and compared tensor by tensor with
the fixture; with --cli, the flamingo command's logits on the fixture's
prompt must be the same from both directories. Bad inputs are one-line
errors naming the file.

Run: /usr/bin/python3 tools/test_convert_idefics.py [--cli build/examples/flamingo]
"""

import argparse
import glob
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_idefics as ci  # noqa: E402
import convert_openflamingo as conv  # noqa: E402
import safetensors_io  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "model", "idefics_instruct")
CLI = None


def fixture_tensors():
    out = {}
    for path in sorted(glob.glob(os.path.join(FIXTURE, "*.safetensors"))):
        out.update(safetensors_io.load_file(path))
    return out


def dir_tensors(d):
    out = {}
    for path in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        out.update(safetensors_io.load_file(path))
    return out


def write_bin_release(d, tensors, shards):
    """A release as Hugging Face's save_pretrained wrote .bin checkpoints."""
    os.makedirs(d, exist_ok=True)
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(os.path.join(FIXTURE, name), os.path.join(d, name))
    names = sorted(tensors)
    if shards == 1:
        torch.save({n: tensors[n] for n in names}, os.path.join(d, "pytorch_model.bin"))
        return
    weight_map = {}
    for k in range(shards):
        part = names[k::shards]
        fname = f"pytorch_model-{k + 1:05d}-of-{shards:05d}.bin"
        torch.save({n: tensors[n] for n in part}, os.path.join(d, fname))
        weight_map.update({n: fname for n in part})
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


class ConvertIdefics(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.truth = fixture_tensors()

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_convert(self, src, out, *extra):
        return ci.main(["--model", src, "--out", out, *extra])

    def check_same(self, out, dtype=None):
        got = dir_tensors(out)
        self.assertEqual(sorted(got), sorted(self.truth))
        for name, t in self.truth.items():
            want = t.to(dtype) if dtype is not None else t
            self.assertEqual(got[name].dtype, want.dtype, name)
            self.assertEqual(tuple(got[name].shape), tuple(want.shape), name)
            self.assertTrue(torch.equal(got[name], want), name)
        for name in ("config.json", "tokenizer.json"):
            with open(os.path.join(FIXTURE, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
                self.assertEqual(a.read(), b.read(), name)
        self.assertFalse(os.path.exists(os.path.join(out, "pytorch_model.bin.index.json")))

    def test_sharded_bin(self):
        src, out = os.path.join(self.tmp, "bin"), os.path.join(self.tmp, "st")
        write_bin_release(src, self.truth, shards=3)
        self.assertEqual(self.run_convert(src, out, "--max-shard-size", "40KB"), 0)
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors.index.json")))
        self.check_same(out)
        if CLI:
            self.check_logits(out)

    def test_single_bin_to_bf16(self):
        src, out = os.path.join(self.tmp, "bin"), os.path.join(self.tmp, "st")
        write_bin_release(src, self.truth, shards=1)
        self.assertEqual(self.run_convert(src, out, "--dtype", "bf16"), 0)
        self.assertTrue(os.path.exists(os.path.join(out, "model.safetensors")))
        self.check_same(out, torch.bfloat16)

    def check_logits(self, out):
        with open(os.path.join(FIXTURE, "expected", "prompt.json")) as f:
            prompt = json.load(f)["text"]
        images = sorted(glob.glob(os.path.join(FIXTURE, "expected", "images", "*.png")))
        logits = []
        for model in (FIXTURE, out):
            path = os.path.join(self.tmp, f"logits{len(logits)}.npy")
            cmd = [CLI, "logits", "--model", model, "--prompt", prompt, "--out", path, "--threads", "1"]
            for im in images:
                cmd += ["--image", im]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            logits.append(np.load(path))
        self.assertGreater(logits[0].size, 0)
        np.testing.assert_array_equal(logits[0], logits[1])

    def expect_error(self, src, needle):
        out = os.path.join(self.tmp, "out")
        with self.assertRaises(conv.ConvertError) as e:
            ci.convert(argparse.Namespace(model=src, out=out, dtype="keep", max_shard_size=None))
        self.assertIn(needle, str(e.exception))
        self.assertEqual(len(str(e.exception).splitlines()), 1)
        self.assertEqual(glob.glob(os.path.join(out, "*.safetensors")), [])

    def test_bad_inputs(self):
        src = os.path.join(self.tmp, "bad")
        write_bin_release(src, self.truth, shards=1)
        binf = os.path.join(src, "pytorch_model.bin")
        # truncated file
        with open(binf, "r+b") as f:
            f.truncate(100)
        self.expect_error(src, binf)
        # a pickle that would run code: refused, not executed
        marker = os.path.join(self.tmp, "ran")

        class Evil:
            def __reduce__(self):
                return (open, (marker, "w"))

        with open(binf, "wb") as f:
            pickle.dump({"w": Evil()}, f)
        self.expect_error(src, binf)
        self.assertFalse(os.path.exists(marker))
        # not tensors
        torch.save({"w": [1, 2]}, binf)
        self.expect_error(src, "w is a list, not a tensor")
        torch.save([torch.zeros(2)], binf)
        self.expect_error(src, "not a state dict")
        # no weights at all / another model type
        os.remove(binf)
        self.expect_error(src, "no pytorch_model.bin")
        with open(os.path.join(src, "config.json"), "w") as f:
            json.dump({"model_type": "llama"}, f)
        self.expect_error(src, "not 'idefics'")


if __name__ == "__main__":
    if "--cli" in sys.argv:
        i = sys.argv.index("--cli")
        CLI = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    torch.set_num_threads(1)
    unittest.main()

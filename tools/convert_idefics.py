#!/usr/bin/python3
"""Turn an IDEFICS release that ships only PyTorch .bin weights into one that
flamingo loads: the same tensors under the same names, in safetensors.

IDEFICS directories (HuggingFaceM4/idefics-9b, -9b-instruct, -80b,
-80b-instruct) load as released when they hold safetensors. A copy with only
pytorch_model.bin, or pytorch_model-0000K-of-0000N.bin shards with
pytorch_model.bin.index.json, goes through this script once:

  /usr/bin/python3 tools/convert_idefics.py --model idefics-9b-instruct --out idefics-9b-instruct-st

The output has config.json, the tokenizer files and every other .json of the
input (except the .bin index), and model.safetensors or shards with
model.safetensors.index.json (--max-shard-size, default 4GB). Tensors keep
their dtype unless --dtype says otherwise. One .bin shard is in memory at a
time, read with torch.load(weights_only=True): tensors only, no code from the
file is run.
"""

import argparse
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_openflamingo as conv  # noqa: E402

DTYPES = {"keep": None, "f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def bin_files(model_dir):
    index = os.path.join(model_dir, "pytorch_model.bin.index.json")
    if os.path.exists(index):
        with open(index) as f:
            try:
                files = sorted(set(json.load(f)["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                conv.fail(f"{index}: not a shard index with a weight_map ({e})")
        return [os.path.join(model_dir, name) for name in files]
    single = os.path.join(model_dir, "pytorch_model.bin")
    if os.path.exists(single):
        return [single]
    conv.fail(f"{model_dir}: no pytorch_model.bin or pytorch_model.bin.index.json")


def convert(args):
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "idefics":
        conv.fail(f"{args.model}/config.json: model_type is {cfg.get('model_type')!r}, not 'idefics'")
    files = bin_files(args.model)
    os.makedirs(args.out, exist_ok=True)
    if any(n.endswith(".safetensors") for n in os.listdir(args.out)):
        conv.fail(f"{args.out}: already holds safetensors files")
    for name in sorted(os.listdir(args.model)):
        if name.endswith(".json") and name != "pytorch_model.bin.index.json":
            shutil.copyfile(os.path.join(args.model, name), os.path.join(args.out, name))
    dtype = DTYPES[args.dtype]
    writer = conv.ShardedWriter(args.out, args.max_shard_size)
    try:
        for path in files:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # a truncated or foreign file: name it
                conv.fail(f"{path}: not a PyTorch state dict ({type(e).__name__}: {e})")
            if not isinstance(sd, dict):
                conv.fail(f"{path}: holds a {type(sd).__name__}, not a state dict")
            for name in list(sd):
                t = sd.pop(name)
                if not isinstance(t, torch.Tensor):
                    conv.fail(f"{path}: {name} is a {type(t).__name__}, not a tensor")
                if dtype is not None and t.is_floating_point():
                    t = t.to(dtype)
                try:
                    writer.add(name, t.contiguous())
                except ValueError as e:  # a dtype safetensors cannot hold
                    conv.fail(f"{path}: {e}")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return len(writer.names), writer.total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the IDEFICS directory with .bin weights")
    p.add_argument("--out", required=True, help="the directory to write")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="keep", help="floating-point tensors' dtype")
    p.add_argument("--max-shard-size", type=conv.parse_size, default="4GB", help="e.g. 4GB, 500MB")
    args = p.parse_args(argv)
    try:
        n, total = convert(args)
    except conv.ConvertError as e:
        print(f"convert_idefics: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {n} tensors, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

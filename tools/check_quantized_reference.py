#!/usr/bin/python3
"""The reference's q8/q4 weights (flamingo_ref.quantize_linear_weights, which
tools/world/evaluate.py --weights uses) against what `flamingo quantize`
writes: the same set of matrices and, dequantised, the same values. Checked
on the bundled model and on parity fixtures (rows that are not a multiple of
32 long, other decoder families), so that a table computed by the reference
with quantised weights stands for the C++ model's weights.

  /usr/bin/python3 tools/check_quantized_reference.py --cli build/examples/flamingo
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flamingo_ref as ref  # noqa: E402
import safetensors_io  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [os.path.join(REPO, "models", "shapes-flamingo")] + [
    os.path.join(REPO, "tests", "data", "model", c) for c in ("mpt", "gpt_neox", "mosaic_gpt")]


def dequantize(t, name, fmt):
    """The float values of the C++ file's quantised matrix `name` ([out, in32])."""
    d = t[name + ".scales"].float()
    out = d.shape[0]
    if fmt == "q8":
        q = t[name].reshape(out, -1, 32).float()
    else:  # byte j of a block: element j in the low nibble, j + 16 in the high one
        b = t[name].reshape(out, -1, 16).to(torch.int32)
        q = torch.cat([b & 15, b >> 4], -1).float()
    v = d[:, :, None] * q
    if fmt == "q4":
        v = v + t[name + ".offsets"].float()[:, :, None]
    return v.reshape(out, -1)


def check(cli, model_dir, fmt, tmp):
    out = os.path.join(tmp, os.path.basename(model_dir) + "-" + fmt)
    subprocess.run([cli, "quantize", "--model", model_dir, "--weights", fmt, "--out", out],
                   check=True, stdout=subprocess.DEVNULL)
    t = safetensors_io.load_file(os.path.join(out, "model.safetensors"))
    written = {k[:-len(".scales")] for k in t if k.endswith(".scales")}
    model = ref.load_model_dir(model_dir, torch.float32)
    mine = set(ref.quantize_linear_weights(model, fmt))
    params = dict(model.named_parameters())
    problems = []
    # A head tied to the embedding is quantised at load, not written.
    if written != {n for n in mine if not n.endswith("(head copy)")}:
        problems.append(f"matrices differ: only C++ {sorted(written - mine)}, only reference {sorted(mine - written)}")
    for name in sorted(written & mine):
        p = params[name].detach()
        w = p.reshape(p.shape[0], -1)
        got = dequantize(t, name, fmt)[:, :w.shape[1]]
        # Both sides' values are computed here, from each side's d, q (and m): equal when those are;
        # the reference repeats q4's search for (d, m) operation for operation.
        tol = 0.0
        err = float((got - w).abs().max())
        if err > tol:
            problems.append(f"{name}: dequantised values differ by {err}")
    print(f"{os.path.relpath(model_dir, REPO)} {fmt}: {len(written)} matrices, "
          + ("as the reference" if not problems else "; ".join(problems)))
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", required=True, help="the flamingo command")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ok = all([check(args.cli, m, fmt, tmp) for m in MODELS for fmt in ("q8", "q4")])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

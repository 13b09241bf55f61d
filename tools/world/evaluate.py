"""PyTorch evaluation of a model directory on the world's evaluation set, as
the C++ evaluator judges it: greedy generation through the reference's
generate (stop at <|endofchunk|>), or candidate scoring through the
reference's scorer. Writes the accuracy table as Markdown.

  /usr/bin/python3 tools/world/evaluate.py --model models/shapes-flamingo \\
      --eval tests/data/world/eval --out results.md [--limit N] [--threads 2]
      [--weights q8|q4] [--cli-table table.md]

`--weights q8|q4` runs the model with its linear layers' matrices quantised
and dequantised as the C++ model's --weights q8|q4 holds them
(flamingo_ref.quantize_linear_weights); `--cli-table` writes the accuracy
table exactly as `flamingo eval --out` does, for comparing the two.

Also `--agreement FILE` writes the fixture the C++ side checks itself against.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common  # noqa: E402  (sets up sys.path for flamingo_ref)

if __name__ == "__main__":
    common.fast_blas_reexec()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import flamingo_ref as ref  # noqa: E402
from world import bpe, evalset  # noqa: E402
from world import tasks as T  # noqa: E402


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


class ImageCache:
    """Patch tokens of the vision encoder per image (they do not depend on the prompt)."""

    def __init__(self, model, loader):
        self.model, self.loader, self.cache = model, loader, {}

    def tokens(self, keys):
        missing = [k for k in keys if k not in self.cache]
        if missing:
            with torch.no_grad():
                _, tok = self.model.vision_encoder(common.preprocess(np.stack([self.loader(k) for k in missing])))
            for k, t in zip(missing, tok):
                self.cache[k] = t
        return torch.stack([self.cache[k] for k in keys])

    def media(self, keys):
        """Visual tokens [1, N, num_latents, D] of the images of one prompt."""
        with torch.no_grad():
            return self.model.perceiver(self.tokens(keys)[None, :, None])


def judge(tok, rec, generated=None, scores=None):
    if rec["judge"] == "score":
        best = int(np.argmax([s[0] for s in scores]))
        return rec["candidates"][best] == rec["answer"], rec["candidates"][best]
    eoc = tok.token_id(T.EOC)
    ids = generated[:generated.index(eoc)] if eoc in generated else generated
    text = tok.decode(ids).strip()
    return text == rec["answer"], text


def run_record(model, tok, images, rec):
    prompt_ids = tok.encode(rec["prompt"])
    media = images.media(rec["images"])
    if rec["judge"] == "score":
        cands = [tok.encode(c) for c in rec["candidates"]]
        scores = ref.score_candidates(model, None, prompt_ids, cands, media=media)
        ok, out = judge(tok, rec, scores=scores)
        return ok, out, {"prompt_ids": prompt_ids, "candidate_ids": cands,
                         "logprobs": [s[0] for s in scores], "mean_logprobs": [s[1] for s in scores]}
    gen = ref.greedy_generate(model, None, prompt_ids, rec["max_new_tokens"], media=media)
    ok, out = judge(tok, rec, generated=gen)
    return ok, out, {"prompt_ids": prompt_ids, "generated_ids": gen}


def table(results, shots=evalset.SHOTS):
    """Markdown: accuracy per task and shot count."""
    lines = ["| task | " + " | ".join(f"{s}-shot" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for task in T.TASKS:
        if task not in results:
            continue
        cells = []
        for s in shots:
            rs = [ok for (shot, ok, _held) in results[task] if shot == s]
            cells.append(f"{100 * np.mean(rs):.1f}% ({len(rs)})" if rs else "-")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cli_table(results):
    """The table as `flamingo eval` prints it (examples/eval.hpp): tasks by
    name, every shot count seen, "accuracy (n=count)" per cell."""
    shots = sorted({shot for rs in results.values() for (shot, _ok, _held) in rs})
    lines = ["| task |" + "".join(f" {s}-shot |" for s in shots), "|---|" + "---:|" * len(shots)]
    for task in sorted(results):
        cells = ""
        for s in shots:
            rs = [ok for (shot, ok, _held) in results[task] if shot == s]
            cells += f" {100.0 * sum(rs) / len(rs):.1f} (n={len(rs)}) |" if rs else " - |"
        lines.append(f"| {task} |" + cells)
    return "\n".join(lines) + "\n"


def held_out_table(results, shots=evalset.SHOTS):
    lines = ["| task, queries with a held-out (shape, colour) pair | " + " | ".join(f"{s}-shot" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for task in T.TASKS:
        if task not in results:
            continue
        cells = []
        for s in shots:
            rs = [ok for (shot, ok, held) in results[task] if shot == s and held]
            cells.append(f"{100 * np.mean(rs):.1f}% ({len(rs)})" if rs else "-")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- fast probe used while training: teacher-forced, batched --------------------------------

def continuation(rec):
    """The text greedy generation must produce (before <|endofchunk|>)."""
    prefix_ends_in_text = not rec["prompt"].endswith(T.IMAGE)
    return (" " + rec["answer"]) if prefix_ends_in_text else rec["answer"]


@torch.no_grad()
def probe_accuracy(model, tok, records, image_tokens, batch=64):
    """Exact-match accuracy without generating: greedy decoding reproduces the
    answer exactly when the teacher-forced argmax is the answer's token at
    every position (its <|endofchunk|> included); scoring as the evaluator.
    image_tokens(list of image keys) -> [N, v, D]. Returns {(task, shots): acc}."""
    eoc, eot = tok.token_id(T.EOC), tok.token_id(T.EOT)
    rows = []  # (record index, ids, start of the scored part, target ids, kind)
    for i, rec in enumerate(records):
        p = tok.encode(rec["prompt"])
        if rec["judge"] == "score":
            for c in rec["candidates"]:
                rows.append((i, p + tok.encode(c), len(p), None, c))
        else:
            cont = tok.encode(continuation(rec)) + [eoc]
            rows.append((i, p + cont, len(p), cont, None))
    ok = {}
    scores = {}
    for b in range(0, len(rows), batch):
        chunk = rows[b:b + batch]
        n = max(len(r[1]) for r in chunk)
        ids = torch.tensor([r[1] + [eot] * (n - len(r[1])) for r in chunk])
        keys = [records[r[0]]["images"] for r in chunk]
        m = max(len(k) for k in keys)
        feats = []
        for k in keys:
            t = image_tokens(k)
            feats.append(torch.cat([t, torch.zeros(m - len(k), *t.shape[1:])]))
        media = model.perceiver(torch.stack(feats)[:, :, None])
        logp = F.log_softmax(model.forward_media(media, ids).float(), dim=-1)
        for j, (i, seq, start, target, cand) in enumerate(chunk):
            if target is not None:
                pred = logp[j, start - 1:start - 1 + len(target)].argmax(-1).tolist()
                ok[i] = pred == target
            else:
                lp = logp[j, start - 1:len(seq) - 1].gather(1, torch.tensor(seq[start:])[:, None]).sum()
                scores.setdefault(i, []).append((float(lp), cand))
    for i, sc in scores.items():
        ok[i] = max(sc)[1] == records[i]["answer"]
    acc = {}
    for i, rec in enumerate(records):
        acc.setdefault((rec["task"], rec["shots"]), []).append(ok[i])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(common.REPO, "models", "shapes-flamingo"))
    ap.add_argument("--eval", default=os.path.join(common.REPO, "tests", "data", "world", "eval"))
    ap.add_argument("--out", help="write the Markdown table here")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N queries per task and shot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", choices=("f32", "q8", "q4"), default="f32",
                    help="quantise the linear layers' matrices as the C++ --weights does")
    ap.add_argument("--cli-table", help="write the table as `flamingo eval --out` writes it here")
    ap.add_argument("--predictions", help="write each record's outcome as JSON Lines, as `flamingo eval` does")
    ap.add_argument("--agreement", help="write the agreement fixture (JSON) here")
    ap.add_argument("--agreement-per-task", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = ref.load_model_dir(args.model, torch.float32)  # bf16 weights, exact, computed in float32
    if args.weights != "f32":
        ref.quantize_linear_weights(model, args.weights)
    tok = bpe.Tokenizer.load(os.path.join(args.model, "tokenizer.json"))
    images = ImageCache(model, lambda name: load_png(os.path.join(args.eval, "images", name)))
    data = evalset.read(args.eval)
    results, outputs = {}, {}
    t0 = time.time()
    for task, recs in data.items():
        seen = {}
        for rec in recs:
            seen[rec["shots"]] = seen.get(rec["shots"], 0) + 1
            if args.limit and seen[rec["shots"]] > args.limit:
                continue
            ok, out, extra = run_record(model, tok, images, rec)
            results.setdefault(task, []).append((rec["shots"], ok, rec.get("held_out_pair", False)))
            outputs[rec["id"]] = (rec, ok, out, extra)
        print(f"{task}: {len(results[task])} prompts ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    what = "bf16 weights" if args.weights == "f32" else f"{args.weights} weights (dequantised)"
    md = (f"Accuracy (PyTorch reference, {what} computed in float32):\n\n" + table(results) + "\n\n"
          + held_out_table(results) + "\n")
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.cli_table:
        with open(args.cli_table, "w") as f:
            f.write(cli_table(results))
    if args.predictions:
        with open(args.predictions, "w") as f:
            for rec, ok, out, _extra in outputs.values():
                f.write(json.dumps({"id": rec["id"], "task": rec["task"], "shots": rec["shots"],
                                    "prediction": out, "correct": bool(ok)}) + "\n")
    if args.agreement:
        write_agreement(args.agreement, data, outputs, args.agreement_per_task)


def write_agreement(path, data, outputs, per_task):
    """A few prompts per task (spread over the shot counts) with the reference's
    token ids, generated ids and candidate log-probabilities."""
    cases = []
    for task, recs in data.items():
        done = [r for r in recs if r["id"] in outputs]
        chosen = []
        for i in range(per_task):  # every shot count, queries spread over the set
            shots = evalset.SHOTS[i % len(evalset.SHOTS)]
            pool = [r for r in done if r["shots"] == shots]
            if pool:
                chosen.append(pool[(i * 37) % len(pool)])
        for rec in chosen:
            _, ok, out, extra = outputs[rec["id"]]
            case = {k: rec[k] for k in ("id", "task", "shots", "prompt", "images", "judge", "answer")}
            case.update(extra)
            if rec["judge"] == "score":
                case["candidates"] = rec["candidates"]
            else:
                case["max_new_tokens"] = rec["max_new_tokens"]
                case["generated_text"] = out
            case["correct"] = bool(ok)
            cases.append(case)
    with open(path, "w") as f:
        json.dump({"note": "PyTorch reference (tools/flamingo_ref.py) on the bundled model, bf16 weights "
                           "computed in float32; images relative to tests/data/world/eval/images",
                   "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()

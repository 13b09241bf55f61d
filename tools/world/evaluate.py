"""PyTorch evaluation of a model directory on the world's evaluation set, as
the C++ evaluator judges it: greedy generation through the reference's
generate (stop at <|endofchunk|>), or candidate scoring through the
reference's scorer. Writes the accuracy table as Markdown.

  /usr/bin/python3 tools/world/evaluate.py --model models/shapes-flamingo \\
      --eval tests/data/world/eval --out results.md [--limit N] [--threads 2]
      [--weights q8|q4] [--cli-table table.md]

`--weights q8|q4` runs the model with its linear layers' matrices quantised
and dequantised as the C++ model's --weights q8|q4 holds them
(flamingo_ref.quantize_linear_weights) and their inputs rounded to q8 as the
C++ AVX2 and AVX-512 kernels round them (flamingo_ref.ActivationRounding);
`--cli-table` writes the accuracy
table exactly as `flamingo eval --out` does, for comparing the two.

Also `--agreement FILE` writes the fixture the C++ side checks itself against.

Examples from a support pool (query records, tests/data/world/eval/queries):

  /usr/bin/python3 tools/world/evaluate.py --eval tests/data/world/eval/queries \\
      --support tests/data/world/eval/support --shots random|rices [--seed 0] --cli-table table.md

picks each query's examples as `flamingo eval --support --shots` does (same
random draws; RICES on this reference's own CLIP embeddings), and
`--selection FILE` writes the picks of both rules (with the similarities) for
the first --limit queries per task and shot count without evaluating them: the
fixture tests/data/world/eval_selection.json that the C++ selection is tested
against.
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
from world import bpe, eval_extra, evalset  # noqa: E402
from world import tasks as T  # noqa: E402


def load_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


# ---- examples from a support pool: seeded random picks and RICES ---------------------------
# The same rules as examples/eval.hpp, written again here from their description.

MASK64 = (1 << 64) - 1


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def random_pick(record_id, seed, n, k):
    """k distinct indices of n candidates: a partial Fisher-Yates shuffle
    driven by SplitMix64, seeded by FNV-1a of "<seed>:<record id>"; index i of
    the prompt's examples is the i-th drawn."""
    state = fnv1a64(f"{seed}:{record_id}".encode())
    idx = list(range(n))
    for i in range(k):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        j = i + z % (n - i)
        idx[i], idx[j] = idx[j], idx[i]
    return idx[:k]


def normalise(e):
    e = np.asarray(e, dtype=np.float64)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def rices_pick(query, candidates, k):
    """OpenFlamingo's RICES: cosine similarity of L2-normalised CLIP image
    embeddings, the k most similar, placed in the prompt least similar first
    (the most similar right before the query). Exact ties go to the earlier
    candidate (pool file order). Returns (positions, their similarities)."""
    sim = normalise(candidates) @ normalise(query)
    order = sorted(range(len(sim)), key=lambda i: (-sim[i], i))[:k]
    order.reverse()
    return order, [float(sim[i]) for i in order]


class Support:
    """A support pool: <dir>/pool.jsonl ({"pool", "image", "text"} per line),
    pictures in <dir>/images."""

    def __init__(self, support_dir):
        self.dir = support_dir
        self.entries = evalset.read_pool(support_dir)
        self.by_pool = {}
        for i, e in enumerate(self.entries):
            self.by_pool.setdefault(e["pool"], []).append(i)

    def path(self, i):
        return os.path.realpath(os.path.join(self.dir, "images", self.entries[i]["image"]))


def embeddings(model, paths):
    """CLIP image embeddings (class token after ln_post, times proj) of image files, float32."""
    out = []
    with torch.no_grad():
        for b in range(0, len(paths), 64):
            px = common.preprocess(np.stack([load_png(p) for p in paths[b:b + 64]]))
            out.append(model.vision_encoder(px)[0].numpy())
    return np.concatenate(out)


def select(rec, support, shots_rule, seed, emb):
    """Pool indices of a query record's examples, in prompt order, and (RICES) their similarities."""
    cands = support.by_pool.get(rec["pool"], [])
    k = rec["shots"]
    if k > len(cands):
        raise ValueError(f"{rec['id']}: needs {k} examples, pool '{rec['pool']}' has {len(cands)}")
    if k == 0:
        return [], []
    if shots_rule == "random":
        return [cands[i] for i in random_pick(rec["id"], seed, len(cands), k)], []
    pos, sims = rices_pick(emb(rec["query_path"]), np.stack([emb(support.path(i)) for i in cands]), k)
    return [cands[i] for i in pos], sims


def with_examples(rec, support, picks):
    """The full record: the examples' chunks, then the query's."""
    r = dict(rec)
    r["prompt"] = "".join(f"{T.IMAGE}{support.entries[i]['text']}{T.EOC}" for i in picks) + T.IMAGE + rec["query"]
    r["image_paths"] = [support.path(i) for i in picks] + [rec["query_path"]]
    r["examples"] = picks
    return r


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

    def media(self, keys, frames=1):
        """Visual tokens [1, N, num_latents, D] of the media of one prompt:
        images, or (frames > 1) videos given as directories of exactly that
        many frames, in name order (flamingo eval also samples longer ones)."""
        if frames == 1:
            with torch.no_grad():
                return self.model.perceiver(self.tokens(keys)[None, :, None])
        paths = []
        for k in keys:
            names = sorted(os.listdir(k))
            if len(names) != frames:
                raise SystemExit(f"{k}: {len(names)} frames, the record says {frames}")
            paths += [os.path.join(k, n) for n in names]
        x = self.tokens(paths)
        with torch.no_grad():
            return self.model.perceiver(x.reshape(1, len(keys), frames, *x.shape[1:]))


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
    media = images.media(rec["image_paths"], rec.get("frames", 1))
    if rec["judge"] == "score":
        cands = [tok.encode(c) for c in rec["candidates"]]
        scores = ref.score_candidates(model, None, prompt_ids, cands, media=media)
        ok, out = judge(tok, rec, scores=scores)
        return ok, out, {"prompt_ids": prompt_ids, "candidate_ids": cands,
                         "logprobs": [s[0] for s in scores], "mean_logprobs": [s[1] for s in scores]}
    gen = ref.greedy_generate(model, None, prompt_ids, rec["max_new_tokens"], media=media)
    ok, out = judge(tok, rec, generated=gen)
    return ok, out, {"prompt_ids": prompt_ids, "generated_ids": gen}


def _rows(results):
    """The world's tasks in their order, then any others (dialogue turns) by
    name; and every shot count seen."""
    tasks = [t for t in T.TASKS if t in results] + sorted(t for t in results if t not in T.TASKS)
    return tasks, sorted({shot for rs in results.values() for (shot, _ok, _held) in rs})


def table(results):
    """Markdown: accuracy per task and shot count."""
    tasks, shots = _rows(results)
    lines = ["| task | " + " | ".join(f"{s}-shot" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for task in tasks:
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


def held_out_table(results):
    tasks, shots = _rows(results)
    lines = ["| task, queries with a held-out (shape, colour) pair | " + " | ".join(f"{s}-shot" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for task in tasks:
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
    ap.add_argument("--support", help="support pool directory: query records draw their examples from it")
    ap.add_argument("--shots", choices=("random", "rices"), default="random", help="how examples are picked")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random picks")
    ap.add_argument("--trials", type=int,
                    help="random picks: run the records with seeds SEED..SEED+N-1, the table over all of them")
    ap.add_argument("--held-out", action="store_true", help="--cli-table: append the held-out pairs' table")
    ap.add_argument("--selection", help="write both rules' picks for the first --limit queries (no evaluation)")
    args = ap.parse_args()
    if args.trials is not None and (args.trials < 1 or not args.support or args.shots != "random"):
        ap.error("--trials N needs N >= 1, --support and --shots random (as flamingo eval)")
    args.trials = args.trials or 1
    torch.set_num_threads(args.threads)

    model = ref.load_model_dir(args.model, torch.float32)  # bf16 weights, exact, computed in float32
    if args.weights != "f32":  # the weights quantised, and the activations rounded, as the C++ rounds them
        ref.quantize_linear_weights(model, args.weights)
        ref.ActivationRounding(model).__enter__()
    tok = bpe.Tokenizer.load(os.path.join(args.model, "tokenizer.json"))
    images = ImageCache(model, load_png)
    data = evalset.read(args.eval)
    support = Support(args.support) if args.support else None
    emb_cache = {}

    def emb(path):
        if path not in emb_cache:
            emb_cache[path] = embeddings(model, [path])[0]
        return emb_cache[path]

    if support:  # the pool's embeddings at once (batched), as the C++ cache holds them
        paths = sorted({support.path(i) for i in range(len(support.entries))})
        emb_cache.update(zip(paths, embeddings(model, paths)))
    if "dialogue" in data:  # a conversation judged turn by turn: a record per turn (--limit: conversations)
        convs = data["dialogue"][:args.limit] if args.limit else data["dialogue"]
        data["dialogue"] = [r for conv in convs for r in eval_extra.turn_records(conv)]
    for recs in data.values():
        for rec in recs:
            rec["image_paths"] = [os.path.realpath(os.path.join(args.eval, "images", n)) for n in rec["images"]]
            if "query" in rec:
                rec["query_path"] = rec["image_paths"][0]
    if args.selection:
        write_selection(args.selection, data, support, args.seed, emb, args.limit)
        return
    results, outputs = {}, []
    t0 = time.time()
    for seed in range(args.seed, args.seed + args.trials):
        for task, recs in data.items():
            seen = {}
            for rec in recs:
                key = (rec["task"], rec["shots"])   # as flamingo eval's --limit (a file may hold several tasks)
                seen[key] = seen.get(key, 0) + 1
                if args.limit and seen[key] > args.limit and task != "dialogue":
                    continue
                if "prompt" not in rec:
                    if not support:
                        raise SystemExit(f"{rec['id']}: a query record (no prompt): give --support")
                    rec = with_examples(rec, support, select(rec, support, args.shots, seed, emb)[0])
                ok, out, extra = run_record(model, tok, images, rec)
                results.setdefault(rec["task"], []).append((rec["shots"], ok, rec.get("held_out_pair", False)))
                outputs.append((rec, ok, out, extra, seed))
            print(f"{task}: {sum(seen.values())} records ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    what = "bf16 weights" if args.weights == "f32" else f"{args.weights} weights (dequantised, activations rounded)"
    md = (f"Accuracy (PyTorch reference, {what} computed in float32):\n\n" + table(results) + "\n\n"
          + held_out_table(results) + "\n")
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md)
    if args.cli_table:
        with open(args.cli_table, "w") as f:
            f.write(cli_table(results))
            if args.held_out:
                f.write("\nqueries whose (shape, colour) pair was held out of training:\n\n")
                f.write(cli_table({t: [r for r in rs if r[2]] for t, rs in results.items() if any(r[2] for r in rs)}))
    if args.predictions:
        with open(args.predictions, "w") as f:
            for rec, ok, out, _extra, seed in outputs:
                line = {"id": rec["id"], "task": rec["task"], "shots": rec["shots"],
                        "prediction": out, "correct": bool(ok)}
                if "examples" in rec:
                    line["examples"] = rec["examples"]
                if args.trials > 1:
                    line["seed"] = seed
                f.write(json.dumps(line) + "\n")
    if args.agreement:
        write_agreement(args.agreement, data, {o[0]["id"]: o[:4] for o in outputs}, args.agreement_per_task)


def write_selection(path, data, support, seed, emb, limit):
    """Both rules' picks (pool indices, prompt order) for the first `limit`
    query records of each task and shot count, with RICES's similarities and
    the similarity of the best candidate left out (how far from a tie the cut is)."""
    cases = []
    for task, recs in data.items():
        seen = {}
        for rec in recs:
            seen[rec["shots"]] = seen.get(rec["shots"], 0) + 1
            if limit and seen[rec["shots"]] > limit:
                continue
            rnd, _ = select(rec, support, "random", seed, emb)
            ric, sims = select(rec, support, "rices", seed, emb)
            cands = support.by_pool[rec["pool"]]
            all_sims = sorted((normalise(np.stack([emb(support.path(i)) for i in cands]))
                               @ normalise(emb(rec["query_path"]))).tolist(), reverse=True)
            cases.append({"id": rec["id"], "random": rnd, "rices": ric, "similarity": sims,
                          "next_similarity": all_sims[rec["shots"]] if rec["shots"] < len(all_sims) else None})
    with open(path, "w") as f:
        json.dump({"note": f"tools/world/evaluate.py --selection (seed {seed}, limit {limit}): pool indices "
                           "(lines of pool.jsonl from 0) of each query's examples in prompt order; RICES "
                           "similarities from the PyTorch reference's embeddings",
                   "seed": seed, "cases": cases}, f, indent=None)
        f.write("\n")


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

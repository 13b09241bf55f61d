"""Reproduce the bundled model end to end from a seed: tokenizer, contrastive
vision pre-training, language-model pre-training, the Flamingo stage, and the
model directory (bf16 weights).

  /usr/bin/python3 tools/world/train.py [--out models/shapes-flamingo] [--seed 0] [--threads 2]

Intermediate results (image pool, stage checkpoints) go to --work (default
/tmp/world-work); a rerun reuses the finished stages found there unless
--fresh is given. --vit-from / --lm-from take a stage from a model directory
this script made, --lm-state from a decoder file in --work; --bind-* trains
the decoder further on binding text (tools/world/EXPERIMENTS.md logs the runs). Training runs in bfloat16 autocast (oneDNN); everything the
model directory describes is computed from bf16-rounded frozen weights.
"""

import argparse
import hashlib
import inspect
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from world import common  # noqa: E402

if __name__ == "__main__":
    common.fast_blas_reexec()

import torch  # noqa: E402

import flamingo_ref as ref  # noqa: E402
from world import data, eval_extra, evalset, evaluate, stages, video  # noqa: E402
from world import scene as S  # noqa: E402
from world import tasks as T  # noqa: E402

log = stages.log


FLAMINGO_TASKS = ["caption", "vqa", "classify", "binding", "dialogue"]
PROBE_TASKS = T.TASKS + ["binding3", "position"] + [f"dialogue: {k}" for k in eval_extra.DIALOGUE_KINDS]


def probe_set(seed, per_task, names):
    """The development split, in memory, to follow training and make decisions
    on: other scenes (seed) than the evaluation set and the development names,
    never the evaluation set's. Binding with 3 names at 3 and 6 shots."""
    eps = evalset.build(f"probe-{seed}", per_task, 3 * per_task, names)
    recs = []
    for task in T.TASKS:
        recs += evalset.items(eps[task])
    recs += eval_extra.binding_records(f"probe-{seed}", per_task, names, 3, [3, 6])
    recs += eval_extra.dialogue_records(f"probe-{seed}", per_task)
    # VQA's weakest question on its own (a sixth of the VQA queries ask it):
    # the position questions among four times as many queries
    more = evalset.episodes("vqa", 4 * per_task, f"probe-{seed}",
                            evalset.general_scenes(f"probe-{seed}", 12 * per_task), names)
    recs += [dict(r, task="position") for r in evalset.items(more) if r["question"].startswith("Question: Where")]
    return recs


def format_probe(acc):
    lines = []
    for task in PROBE_TASKS:
        cells = " ".join(f"{s}:{100 * acc[(task, s)]:5.1f}" for s in range(9) if (task, s) in acc)
        lines.append(f"    {task:9s} {cells}")  # dialogue: cells by the number of earlier turns
    return "\n".join(lines)


def weights_option(items, option, names):
    """{name: weight} from repeated NAME=W arguments of `option`."""
    out = {}
    for item in items:
        name, _, w = item.partition("=")
        try:
            if name not in names:
                raise ValueError
            out[name] = float(w)
        except ValueError:
            sys.exit(f"{option} {item}: expected NAME=W (W a number), NAME one of {', '.join(names)}")
    if out and not any(out.get(n, 1.0) for n in names):   # the others weigh 1
        sys.exit(f"{option}: every weight is 0")
    return out


def from_tag(path):
    """The part of a stage file's name that says which --flamingo-from it went
    on from: a stage file by its name (which says how it was made), a model
    directory by its weights (every .safetensors file: one, or shards), so
    that runs from two directories never share (and reuse) each other's
    stage files."""
    if os.path.isfile(path):
        return "-from" + hashlib.sha1(os.path.basename(path).encode()).hexdigest()[:8]
    h = hashlib.sha1()
    for name in sorted(n for n in os.listdir(path) if n.endswith(".safetensors")):
        with open(os.path.join(path, name), "rb") as f:
            h.update(f.read())
    return "-dir" + h.hexdigest()[:8]


def parse_args(argv=None):
    """The options, with the weight options settled (checked before any stage
    runs: the CLIP stage alone takes an hour): args.task_weights (every task
    of the Flamingo stage's mix), args.given_task_weights (those given, for
    the stage files' names), args.question_weights, args.event_weights."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(common.REPO, "models", "shapes-flamingo"))
    ap.add_argument("--work", default="/tmp/world-work")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared: default 1)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished stages in --work")
    ap.add_argument("--pool", type=int, default=40000, help="rendered training images")
    ap.add_argument("--clip-steps", type=int, default=1500)
    ap.add_argument("--clip-attribute-weight", type=float, default=0.0,
                    help="weight of a loss of linear attribute classifiers on the vision encoder's tokens and "
                         "embedding beside the contrastive one (stages.AttributeHeads)")
    ap.add_argument("--vit-from", metavar="DIR",
                    help="take the contrastively trained vision encoder from this model directory (made by this "
                         "script with the same seed, --clip-steps and --clip-attribute-weight, which name the files made from "
                         "it) instead of training it")
    ap.add_argument("--lm-steps", type=int, default=2000)
    ap.add_argument("--describe", type=float, default=0.7,
                    help="share of language-model documents that describe their pictures in words")
    ap.add_argument("--lm-binding", type=float, default=0.25, help="share of binding documents in the language-model text")
    ap.add_argument("--lm-from", metavar="DIR",
                    help="take the pre-trained decoder from this model directory (made by this script with the same "
                         "seed and decoder options) instead of training it")
    ap.add_argument("--lm-state", metavar="FILE",
                    help="take the decoder before --bind-steps from this file (a decoder stage file of --work, "
                         "or a checkpoint written at a check)")
    ap.add_argument("--bind-steps", type=int, default=0,
                    help="then train the decoder further on binding-heavy text for this many steps")
    ap.add_argument("--bind-share", type=float, default=0.6, help="share of binding documents in that text")
    ap.add_argument("--bind-lr", type=float, default=1e-3)
    ap.add_argument("--bind-batch", type=int, default=32)
    ap.add_argument("--bind-short", type=float, default=0.0,
                    help="share of described binding documents that describe a picture by its kind alone")
    ap.add_argument("--bind-seed", type=int, default=5, help="offset from --seed of this stage's seed (a run "
                    "that goes on from another's checkpoint needs another one, or it sees the same text again)")
    ap.add_argument("--bind-name-weight", type=float, default=3.0,
                    help="loss weight of a repeated made-up name (the rest of a binding document: 0)")
    ap.add_argument("--bind-copy-share", type=float, default=0.0,
                    help="share of documents that are a line of made-up words said twice")
    ap.add_argument("--lm-check-every", type=int, default=500, help="text-only checks every N decoder steps")
    ap.add_argument("--stop-after", choices=["clip", "lm"], help="stop after this stage (experiments)")
    ap.add_argument("--flamingo-steps", type=int, default=8000)
    ap.add_argument("--flamingo-lr", type=float, default=2e-3)
    ap.add_argument("--flamingo-binding", type=float, default=1.5, help="weight of binding documents (others 1)")
    ap.add_argument("--flamingo-dialogue", type=float, default=0.0,
                    help="weight of conversations in the chat template (tasks.sample_dialogue)")
    ap.add_argument("--flamingo-task-weight", action="append", default=[], metavar="TASK=W",
                    help="weight of this task's documents (caption, vqa, classify 1; binding and dialogue as "
                         "above); 0 leaves a task out, as a focused phase of training does")
    ap.add_argument("--flamingo-video", type=float, default=0.0,
                    help="share of the Flamingo stage's batches that are video clips (video.py)")
    ap.add_argument("--video-event-weight", action="append", default=[], metavar="EVENT=W",
                    help="ask this video event's question W times as often as the others")
    ap.add_argument("--video-clips", type=int, default=400, help="training clips of each frame count (4 to 8)")
    ap.add_argument("--video-styles", action="store_true",
                    help="video documents in a random answer style each (video.py), as the picture tasks")
    ap.add_argument("--flamingo-from", metavar="DIR|FILE",
                    help="start the Flamingo stage from the Perceiver and cross-attention of this model directory, "
                         "or of a Flamingo stage file of --work (a checkpoint written at a probe)")
    ap.add_argument("--flamingo-first-weight", type=float,
                    help="loss weight of the first token of a repeated made-up name (others 1)")
    ap.add_argument("--flamingo-stream", type=float, nargs=2, metavar=("WEIGHT", "SHARE"),
                    help="that share of the batches are binding documents with the stream loss at that weight "
                         "beside the names' (stages.train_flamingo's stream; the decoder must bind in text)")
    ap.add_argument("--flamingo-similar", type=float, default=0.0,
                    help="share of caption/VQA/classify documents whose examples resemble their last picture")
    ap.add_argument("--flamingo-near", type=float, default=0.0,
                    help="share of caption/VQA/classify documents with an example twin of their last picture, "
                         "which is shown blurred (tasks.near_scenes)")
    ap.add_argument("--flamingo-near-clear", action="store_true",
                    help="--flamingo-near's last pictures shown clear, not blurred")
    ap.add_argument("--flamingo-question-weight", action="append", default=[], metavar="TYPE=W",
                    help="ask this question type W times as often as the others (VQA and conversations)")
    ap.add_argument("--flamingo-seed", type=int, default=4, help="offset from --seed of the Flamingo stage's seed "
                    "(a run that goes on from another's checkpoint needs another one)")
    ap.add_argument("--probe-every", type=int, default=500)
    ap.add_argument("--probe-size", type=int, default=50)
    args = ap.parse_args(argv)
    args.given_task_weights = weights_option(args.flamingo_task_weight, "--flamingo-task-weight", FLAMINGO_TASKS)
    args.event_weights = weights_option(args.video_event_weight, "--video-event-weight", video.EVENTS)
    args.question_weights = weights_option(args.flamingo_question_weight, "--flamingo-question-weight",
                                           T.QUESTION_TYPES)
    if args.flamingo_stream and not (args.flamingo_stream[0] >= 0 and 0 < args.flamingo_stream[1] <= 1):
        sys.exit("--flamingo-stream {} {}: expected WEIGHT >= 0 and 0 < SHARE <= 1".format(*args.flamingo_stream))
    for option in ("similar", "near"):
        share = getattr(args, "flamingo_" + option)
        if not 0 <= share <= 1:
            sys.exit(f"--flamingo-{option} {share}: expected a share from 0 to 1")
    if not args.clip_attribute_weight >= 0 or math.isinf(args.clip_attribute_weight):
        sys.exit(f"--clip-attribute-weight {args.clip_attribute_weight}: expected a weight >= 0")
    if args.flamingo_near_clear and not args.flamingo_near:
        sys.exit("--flamingo-near-clear: give --flamingo-near P, the share of documents with a twin")
    args.task_weights = {"caption": 1.0, "vqa": 1.0, "classify": 1.0, "binding": args.flamingo_binding}
    if args.flamingo_dialogue:
        args.task_weights["dialogue"] = args.flamingo_dialogue
    args.task_weights.update(args.given_task_weights)
    if not any(args.task_weights.values()):
        sys.exit("--flamingo-task-weight: every weight is 0")
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    t_start = time.time()
    seed = args.seed
    train_names, dev_names = T.training_names(), T.dev_names()

    def cached(name, build):
        path = os.path.join(args.work, name)
        if os.path.exists(path) and not args.fresh:
            log(f"reusing {path}")
            return torch.load(path)
        t = time.time()
        obj = build()
        torch.save(obj, path)
        log(f"{name} done in {time.time() - t:.0f}s")
        return obj

    tok = stages.train_tokenizer(seed)
    tok_path = os.path.join(args.work, "tokenizer.json")
    tok.save(tok_path)
    log(f"tokenizer: {len(tok)} tokens, {len(tok.merges)} merges")

    t = time.time()
    pool = data.ImagePool.build(args.pool, seed + 1, processes=args.threads, cache_dir=args.work)
    log(f"image pool: {len(pool.scenes)} scenes ({time.time() - t:.0f}s)")

    def clip():
        vit, _text = stages.train_clip(pool, tok, args.clip_steps, seed + 2,
                                       attribute_weight=args.clip_attribute_weight)
        stages.round_bf16_(vit)
        return vit.state_dict()

    def vit_from_dir():
        tensors = ref.load_state_dir(args.vit_from)
        with open(os.path.join(args.vit_from, "tokenizer.json")) as f:
            if json.load(f) != tok.to_json():
                sys.exit(f"{args.vit_from}: its tokenizer is not the one seed {seed} trains")
        prefix = "vision_encoder."
        return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}

    # names the vision encoder in every file made from it (its tokens, the Flamingo stage)
    vit_tag = f"{args.clip_steps}" + (f"-a{args.clip_attribute_weight}" if args.clip_attribute_weight else "")
    vit_state = cached(f"vit-{seed}-{vit_tag}.pt", vit_from_dir if args.vit_from else clip)
    if args.stop_after == "clip":
        return

    def lm():
        model = stages.train_lm(tok, train_names, args.lm_steps, seed + 3, describe_share=args.describe,
                                binding_share=args.lm_binding, check_every=args.lm_check_every)
        stages.round_bf16_(model)
        return model.state_dict()

    def lm_from_dir():
        tensors = ref.load_state_dir(args.lm_from)
        prefix = "lang_encoder."
        state = {k[len(prefix):]: v.float() for k, v in tensors.items()
                 if k.startswith(prefix) and ".gated_cross_attn_layer." not in k}
        # the Flamingo stage retrained the rows of <image> and <|endofchunk|>;
        # plain text never has them, so zero rows stand in for the decoder's
        new_rows = [tok.token_id(T.IMAGE), tok.token_id(T.EOC)]
        state["model.embed_tokens.weight"][new_rows] = 0
        state["lm_head.weight"][new_rows] = 0
        return state

    lm_tag = f"{args.lm_steps}-d{args.describe}-b{args.lm_binding}"
    if args.lm_state:
        lm_state = torch.load(args.lm_state)
        lm_tag = os.path.basename(args.lm_state)[len(f"lm-{seed}-"):-len(".pt")]
    else:
        lm_state = cached(f"lm-{seed}-{lm_tag}.pt", lm_from_dir if args.lm_from else lm)

    if args.bind_steps:
        bind_tag = (f"-bind{args.bind_steps}-s{args.bind_share}-lr{args.bind_lr}-B{args.bind_batch}"
                    f"-w{args.bind_name_weight}" + (f"-c{args.bind_copy_share}" if args.bind_copy_share else "")
                    + (f"-short{args.bind_short}" if args.bind_short else "")
                    + (f"-seed{args.bind_seed}" if args.bind_seed != 5 else ""))

        base_tag = lm_tag

        def checkpoint(step, state):
            path = os.path.join(args.work, f"lm-{seed}-{base_tag}{bind_tag}-at{step}.pt")
            torch.save(state, path)
            log(f"checkpoint {path}")

        def bind():
            model = stages.train_lm(tok, train_names, args.bind_steps, seed + args.bind_seed, lr=args.bind_lr,
                                    batch=args.bind_batch, name_weight=args.bind_name_weight,
                                    copy_share=args.bind_copy_share, on_check=checkpoint,
                                    short_share=args.bind_short,
                                    describe_share=args.describe, binding_share=args.bind_share,
                                    check_every=args.lm_check_every, init=lm_state, warmup=50)
            stages.round_bf16_(model)
            return model.state_dict()

        lm_tag += bind_tag
        lm_state = cached(f"lm-{seed}-{lm_tag}.pt", bind)
    if args.stop_after == "lm":
        return

    vit = stages.make_vit()
    vit.load_state_dict(vit_state)
    lang = stages.make_lm(tok)
    lang.load_state_dict(lm_state)
    model = stages.assemble(tok, vit, lang)

    t = time.time()
    feats = cached(f"feats-{seed}-{vit_tag}-{args.pool}.pt",
                   lambda: stages.vision_tokens(model.vision_encoder, pool.images))
    if args.flamingo_near and not args.flamingo_near_clear:
        # named by data.blurred's code too, so a changed blur does not reuse old tokens
        blur = hashlib.sha1(inspect.getsource(data.blurred).encode()).hexdigest()[:8]
        feats = torch.cat([feats, cached(f"feats-blurred{blur}-{seed}-{vit_tag}-{args.pool}.pt",
                                         lambda: stages.vision_tokens(model.vision_encoder, data.blurred(pool.images)))])
    log(f"vision tokens {tuple(feats.shape)} ({time.time() - t:.0f}s)")

    probe_recs = probe_set(seed, args.probe_size, dev_names)
    probe_cache = evaluate.ImageCache(model, S.render)

    def probe(m, step=None):
        t = time.time()
        acc = evaluate.probe_accuracy(m, tok, probe_recs, probe_cache.tokens)
        log(f"probe ({time.time() - t:.0f}s):\n" + format_probe(acc))
        if step is not None and step < args.flamingo_steps:
            # a checkpoint another run can start from (--flamingo-from), as the
            # finished stage stores it: weights rounded to bfloat16
            params = dict(m.named_parameters())
            state = {k: v.bfloat16().float() if k in params else v.clone() for k, v in m.state_dict().items()}
            path = os.path.join(args.work, f"flamingo-{fl_tag}-at{step}.pt")
            torch.save(state, path)
            log(f"checkpoint {path}")

    fl_tag = f"{seed}-{vit_tag}-{lm_tag}-{args.flamingo_steps}-w{args.flamingo_binding}"
    if args.flamingo_dialogue:
        fl_tag += f"-dlg{args.flamingo_dialogue}"
    fl_tag += "".join(f"-t{k}{w}" for k, w in args.given_task_weights.items())
    if args.flamingo_seed != 4:
        fl_tag += f"-seed{args.flamingo_seed}"
    if args.flamingo_first_weight is not None:
        fl_tag += f"-first{args.flamingo_first_weight}"
    fl_tag += "".join(f"-q{k}{w}" for k, w in args.question_weights.items())
    fl_tag += f"-similar{args.flamingo_similar}" if args.flamingo_similar else ""
    fl_tag += f"-near{args.flamingo_near}" if args.flamingo_near else ""
    fl_tag += "-clear" if args.flamingo_near and args.flamingo_near_clear else ""
    if args.flamingo_stream:
        fl_tag += "-stream{}-{}".format(*args.flamingo_stream)
    video_data = None
    if args.flamingo_video:
        fl_tag += f"-video{args.flamingo_video}-{args.video_clips}-f2"
        fl_tag += "".join(f"-v{k}{w}" for k, w in args.event_weights.items())
        fl_tag += "-vstyles" if args.video_styles else ""
        clips = video.ClipPool(args.video_clips, seed + 7, event_weights=args.event_weights,
                               styles=args.video_styles)

        def video_tokens():
            out = {}
            for f in video.FRAME_COUNTS:
                frames = clips.frames(f)
                out[f] = stages.vision_tokens(model.vision_encoder, frames.reshape(-1, *frames.shape[2:]))
                out[f] = out[f].reshape(len(frames), f, *out[f].shape[1:])
            return out

        t = time.time()
        video_data = (clips, cached(f"video-feats-{seed}-{vit_tag}-{args.video_clips}.pt", video_tokens),
                      args.flamingo_video)
        log(f"video clips: {args.video_clips} of each frame count ({time.time() - t:.0f}s)")
    if args.flamingo_from:
        # Perceiver, cross-attention and the new rows from an earlier Flamingo
        # stage (e.g. the shipped model, made with the decoder before --bind-steps)
        if os.path.isfile(args.flamingo_from):
            tensors = torch.load(args.flamingo_from)
        else:
            tensors = ref.load_state_dir(args.flamingo_from)
        fl_tag += from_tag(args.flamingo_from)
        stages.warm_start(model, tok, tensors)
        fl_tag += f"-warm-lr{args.flamingo_lr}"
    if len(fl_tag) > 200:   # file names end at 255 bytes: the tag's hash and its last part
        log(f"Flamingo stage: {fl_tag}")
        fl_tag = hashlib.sha1(fl_tag.encode()).hexdigest()[:12] + "-" + fl_tag[-180:]
    if args.flamingo_from:
        log(f"Flamingo stage files: flamingo-{fl_tag}*.pt")
        probe(model)

    def flamingo():
        stages.train_flamingo(model, tok, pool, feats, train_names, args.flamingo_steps, seed + args.flamingo_seed,
                              lr=args.flamingo_lr, weights=args.task_weights, probe=(args.probe_every, probe),
                              warm=bool(args.flamingo_from), warmup=50 if args.flamingo_from else 200,
                              first_weight=args.flamingo_first_weight, question_weights=args.question_weights,
                              video=video_data, stream=args.flamingo_stream, similar=args.flamingo_similar,
                              near=args.flamingo_near, blur=not args.flamingo_near_clear)
        stages.round_bf16_(model)
        return model.state_dict()

    state = cached(f"flamingo-{fl_tag}.pt", flamingo)
    model.load_state_dict(state)
    model.eval()
    probe(model)

    export(model, tok, args.out)
    log(f"total {time.time() - t_start:.0f}s")


# Example pictures shipped beside the model, for the demo (fresh renders, not
# in the training pool). name -> scene
EXAMPLES = {
    "two_red_circles": S.Scene("circle", "red", "solid", "large", 2, "left", seed=101),
    "one_striped_blue_star": S.Scene("star", "blue", "striped", "large", 1, "top", seed=102),
    "three_green_triangles": S.Scene("triangle", "green", "solid", "small", 3, "bottom", seed=103),
    "four_dotted_orange_squares": S.Scene("square", "orange", "dotted", "small", 4, "right", seed=104),
    "purple_heart_a": S.Scene("heart", "purple", "solid", "large", 1, "left", seed=105),
    "yellow_diamond": S.Scene("diamond", "yellow", "striped", "large", 1, "right", seed=106),
    "purple_heart_b": S.Scene("heart", "purple", "solid", "small", 1, "top", seed=107),
}

# Clips shipped beside the model (directories of frames), for the demo's video
# question: shapes that turn another colour part-way (which colour is the later
# one is the question, so the frames' order matters).
EXAMPLE_CLIPS = {
    "red_circles_turn_blue": video.Clip("colour", S.Scene("circle", "red", "solid", "large", 2, "left", seed=111), 6,
                                        new_colour="blue", change_at=3),
    "yellow_star_turns_purple": video.Clip("colour", S.Scene("star", "yellow", "striped", "large", 1, "top",
                                                             seed=112), 6, new_colour="purple", change_at=2),
    "orange_squares_turn_green": video.Clip("colour", S.Scene("square", "orange", "dotted", "small", 3, "bottom",
                                                              seed=113), 6, new_colour="green", change_at=4),
}


def demo_prompts():
    """The demo's prompts over the example pictures: captioning, a question,
    fast binding with two held-out made-up names, each with the answer the
    examples call for, and a three-turn conversation in the chat template."""
    E = EXAMPLES
    cap = lambda k: T.caption(E[k], 0)
    q = lambda k, qtype: f"{T.vqa_prefix(qtype)} {T.vqa_answer(E[k], qtype, 0)}"
    held_out = T.name_split()[1]
    dax = held_out[0]
    wug = next(n for n in held_out if n[0] != dax[0] and n[1] != dax[1])
    chunk = lambda text: f"{T.IMAGE}{text}{T.EOC}"
    return [
        {"title": "Captioning, 2 examples",
         "images": ["two_red_circles.png", "one_striped_blue_star.png", "three_green_triangles.png"],
         "prompt": chunk(cap("two_red_circles")) + chunk(cap("one_striped_blue_star")) + T.IMAGE,
         "expected": cap("three_green_triangles"), "max_new_tokens": 16},
        {"title": "Question answering, 2 examples",
         "images": ["two_red_circles.png", "one_striped_blue_star.png", "four_dotted_orange_squares.png"],
         "prompt": chunk(q("two_red_circles", "count")) + chunk(q("one_striped_blue_star", "colour"))
         + f"{T.IMAGE}{T.vqa_prefix('count')}",
         "expected": T.vqa_answer(E["four_dotted_orange_squares"], "count", 0), "max_new_tokens": 8},
        {"title": f"Fast binding: names made up in the prompt ('{dax}', '{wug}')",
         "images": ["purple_heart_a.png", "yellow_diamond.png", "purple_heart_b.png"],
         "prompt": chunk(T.binding_text(dax)) + chunk(T.binding_text(wug)) + f"{T.IMAGE}{T.BINDING_PREFIX}",
         "expected": f"{dax}.", "max_new_tokens": 8},
        {"title": "A conversation (flamingo chat)",
         "turns": [{"user": T.QUESTIONS["colour"], "images": ["two_red_circles.png"],
                    "expected": T.vqa_answer(E["two_red_circles"], "colour", 1)},
                   {"user": T.FOLLOW_UPS["count"], "images": [],
                    "expected": T.vqa_answer(E["two_red_circles"], "count", 1)},
                   {"user": T.ANOTHER_PICTURE, "images": ["four_dotted_orange_squares.png"],
                    "expected": T.vqa_answer(E["four_dotted_orange_squares"], "count", 1)}],
         "max_new_tokens": 8},
        {"title": "A video question, 2 examples (6 frames each)",
         "images": list(EXAMPLE_CLIPS), "frames": 6,
         "prompt": "".join(chunk(video.chunk_text(*video.video_chunk_text(c, "question")))
                           for c in list(EXAMPLE_CLIPS.values())[:2])
         + T.IMAGE + video.video_chunk_text(EXAMPLE_CLIPS["orange_squares_turn_green"], "question")[0],
         "expected": "green", "max_new_tokens": 8},
    ]


def write_examples(out):
    os.makedirs(os.path.join(out, "examples"), exist_ok=True)
    for name, sc in EXAMPLES.items():
        S.save_png(S.render(sc), os.path.join(out, "examples", name + ".png"))
    for name, clip in EXAMPLE_CLIPS.items():
        d = os.path.join(out, "examples", name)
        os.makedirs(d, exist_ok=True)
        for i, frame in enumerate(video.render_clip(clip)):
            S.save_png(frame, os.path.join(d, f"{i}.png"))
    with open(os.path.join(out, "examples", "demo.json"), "w") as f:
        json.dump(demo_prompts(), f, indent=1)
        f.write("\n")


def export(model, tok, out):
    if os.path.isdir(out):
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if os.path.exists(os.path.join(out, name)):
                os.remove(os.path.join(out, name))
    ref.save_model_dir(model, out, tok.to_json(), dtype="bf16")
    # the chat template the conversations were trained in (tasks.chat_text), shipped
    path = os.path.join(out, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["chat_template"] = {"system": "{content}\n", "user": T.CHAT_USER.format(content="{content}"),
                               "assistant": T.CHAT_ASSISTANT.format(content="{content}"),
                               "generation_prompt": T.CHAT_GENERATION_PROMPT, "stop": [T.EOC]}
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    write_examples(out)
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if os.path.isfile(os.path.join(out, f)))
    log(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

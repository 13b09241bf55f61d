"""Short clips of the world (4 to 8 frames) for the video tasks: a group of
shapes that moves, that more shapes join (appear), that shapes leave
(disappear), or that changes colour; with the few-shot texts about them.

A clip is a list of frames (64x64x3 uint8) rendered by scene.render: a move
shifts the picture of one scene a few pixels per frame (the background fills
in); appear/disappear render the scene with a growing or shrinking count; a
colour change renders the same scene (same seed: same layout) in another
colour from some frame on. A direction is named by the side the group moves
to, in the world's position words (left, right, top, bottom), which the
frozen decoder knows as one token each.
"""

import os
import random
from dataclasses import dataclass, replace

import numpy as np

from . import scene as S
from . import tasks as T

EVENTS = ["move", "appear", "disappear", "colour"]
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
# where a group that moves that way starts, so it stays in the picture
_START = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
FRAME_COUNTS = range(4, 9)


@dataclass(frozen=True)
class Clip:
    event: str
    first: S.Scene        # the scene of the first frame
    frames: int
    direction: str = ""   # move
    last_count: int = 0   # appear / disappear
    new_colour: str = ""  # colour
    change_at: int = 0    # colour: the first frame in the new colour


def sample_clip(rng, split="train", event=None, frames=None):
    event = event or rng.choice(EVENTS)
    frames = frames or rng.randint(4, 8)
    if event == "move":
        direction = rng.choice(list(DIRECTIONS))
        first = S.sample_scene(rng, split, position=_START[direction], count=rng.randint(1, 2))
        return Clip(event, first, frames, direction=direction)
    if event == "appear":
        c0 = rng.randint(1, 3)
        first = S.sample_scene(rng, split, count=c0)
        return Clip(event, first, frames, last_count=rng.randint(c0 + 1, 4))
    if event == "disappear":
        c0 = rng.randint(2, 4)
        first = S.sample_scene(rng, split, count=c0)
        return Clip(event, first, frames, last_count=rng.randint(1, c0 - 1))
    first = S.sample_scene(rng, split)
    while True:
        colour = rng.choice([c for c in S.COLOURS if c != first.colour])
        if split == "eval" or (first.shape, colour) not in S.HELD_OUT_PAIRS:
            break
    return Clip(event, first, frames, new_colour=colour, change_at=rng.randint(1, frames - 1))


def _shift(image, dx, dy):
    out = np.full_like(image, 248)
    h, w = image.shape[:2]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = image[ys, xs]
    return out


def frame_scenes(clip):
    """The scene each frame shows (a move: the same scene every frame)."""
    out = []
    for i in range(clip.frames):
        if clip.event in ("appear", "disappear"):
            # the count steps from the first to the last over the clip
            c = clip.first.count + round((clip.last_count - clip.first.count) * i / (clip.frames - 1))
            out.append(replace(clip.first, count=c))
        elif clip.event == "colour" and i >= clip.change_at:
            out.append(replace(clip.first, colour=clip.new_colour))
        else:
            out.append(clip.first)
    return out


def render_clip(clip):
    """[frames, 64, 64, 3] uint8."""
    if clip.event == "move":
        image = S.render(clip.first)
        ux, uy = DIRECTIONS[clip.direction]
        step = 24 / (clip.frames - 1)   # 24 pixels in all: from one half of the picture well into the other
        return np.stack([_shift(image, round(ux * step * i), round(uy * step * i)) for i in range(clip.frames)])
    return np.stack([S.render(s) for s in frame_scenes(clip)])


# ---- texts ------------------------------------------------------------------------

VIDEO_QUESTIONS = {
    "move": "Which side do the shapes move to?",
    "appear": "How many shapes appear?",
    "disappear": "How many shapes disappear?",
    "colour": "What colour do the shapes turn?",
}


# Answer styles, as the picture tasks have: a question's answer in one of
# tasks.VQA_STYLES ("left", "Left.", "The answer is left."), a caption in one
# of these. A prompt keeps one style, so only its examples show which.
CAPTION_STYLES = 3


def video_answer(clip, style=0):
    if clip.event == "move":
        word = clip.direction
    elif clip.event in ("appear", "disappear"):
        word = S.COUNT_WORDS[abs(clip.last_count - clip.first.count)]
    else:
        word = clip.new_colour
    return T.answer_in_style(word, style)


def video_caption(clip, style=0):
    """One sentence about the event: 'Two red circles move to the right.'
    (style 0), '2 red circles move to the right.' (1: the count in digits),
    'two red circles move to the right' (2: lower case, no full stop)."""
    sc = clip.first
    plural = lambda n: sc.shape if n == 1 else S.PLURALS[sc.shape]
    count = lambda n: str(n) if style == 1 else S.COUNT_WORDS[n]
    if clip.event == "move":
        verb = "moves" if sc.count == 1 else "move"
        text = f"{T.noun_phrase(sc, digits=style == 1)} {verb} to the {clip.direction}"
    elif clip.event in ("appear", "disappear"):
        n = abs(clip.last_count - sc.count)
        verb = clip.event + ("s" if n == 1 else "")
        text = f"{count(n)} {sc.colour} {plural(n)} {verb}"
    else:
        verb = "turns" if sc.count == 1 else "turn"
        text = f"{T.noun_phrase(sc, digits=style == 1)} {verb} {clip.new_colour}"
    return text if style == 2 else text[0].upper() + text[1:] + "."


def video_chunk_text(clip, kind, style=0):
    """kind 'question' (the question of the clip's event: few-shot prompts
    keep one event) or 'caption'; (prefix, answer) as tasks.Chunk."""
    if kind == "caption":
        return "", video_caption(clip, style)
    return f"Question: {VIDEO_QUESTIONS[clip.event]} Answer:", video_answer(clip, style)


def held_out(clip):
    """A (shape, colour) pair held out of training shows in the clip."""
    return clip.first.held_out or (clip.first.shape, clip.new_colour) in S.HELD_OUT_PAIRS


def chunk_text(prefix, answer):
    return prefix + (" " if prefix else "") + answer


# ---- training: a pool of rendered clips per frame count -------------------------------

class ClipPool:
    """n training clips of every frame count; a batch of the Flamingo stage
    takes its clips from one count, as a video batch has one frame count.
    clips[F]: the clips; by_event[F][event]: their indices by event."""

    def __init__(self, n, seed, split="train", event_weights=None, styles=False):
        rng = random.Random(f"clips-{seed}")
        self.styles = styles   # documents in a random answer style (else style 0 only)
        self.event_weights = [event_weights.get(e, 1.0) for e in EVENTS] if event_weights else None
        self.clips = {f: [sample_clip(rng, split, frames=f) for _ in range(n)] for f in FRAME_COUNTS}
        self.by_event = {f: {e: [i for i, c in enumerate(cs) if c.event == e] for e in EVENTS}
                         for f, cs in self.clips.items()}

    def frames(self, f):
        """[n, f, 64, 64, 3] uint8."""
        return np.stack([render_clip(c) for c in self.clips[f]])

    def document(self, rng, f, n_chunks):
        """n_chunks clips of frame count f, all asked the question of one event
        (drawn by event_weights) or all captioned, in one answer style:
        [(clip index, prefix, answer)]."""
        kind = rng.choice(["question", "caption"])
        if kind == "question":
            event = rng.choices(EVENTS, self.event_weights)[0] if self.event_weights else rng.choice(EVENTS)
            idx = rng.choices(self.by_event[f][event], k=n_chunks)
        else:
            idx = [rng.randrange(len(self.clips[f])) for _ in range(n_chunks)]
        style = rng.randrange(CAPTION_STYLES if kind == "caption" else T.VQA_STYLES) if self.styles else 0
        return [(i, *video_chunk_text(self.clips[f][i], kind, style)) for i in idx]


# ---- the evaluation set ---------------------------------------------------------------

# a prompt asks one event's question of every clip, or captions clips of any event
TASKS = ["move", "appear", "disappear", "colour", "caption"]
SHOTS = [0, 1, 2, 4]


def clip_namer(img_dir):
    """clip_name(clip) -> "NNNN": the clip's frames written once as
    img_dir/NNNN/<i>.png (a directory of frames, in name order)."""
    os.makedirs(img_dir, exist_ok=True)
    names = {}

    def clip_name(clip):
        if clip not in names:
            names[clip] = f"{len(names):04d}"
            d = os.path.join(img_dir, names[clip])
            os.makedirs(d)
            for i, frame in enumerate(render_clip(clip)):
                S.save_png(frame, os.path.join(d, f"{i}.png"))
        return names[clip]
    clip_name.names = names
    return clip_name


def eval_records(seed, n, clip_name, examples_per_count=10):
    """n queries per task ("video <task>"), each a fresh clip of its event
    (caption: of any event) at a frame count drawn per query (4 to 8), with
    four examples drawn from the task's examples of that frame count (a few
    per count, so the set stays small); at 0, 1, 2 and 4 shots the prompt
    holds the first k examples. Each query's prompt is in an answer style
    drawn for it (from its own generator: the clips do not depend on it)."""
    rng = random.Random(f"{seed}-video")
    style_rng = random.Random(f"{seed}-video-style")
    out = []
    for task in TASKS:
        kind = "caption" if task == "caption" else "question"
        sample = lambda f: sample_clip(rng, "eval", None if kind == "caption" else task, f)
        pool = {f: [sample(f) for _ in range(examples_per_count)] for f in FRAME_COUNTS}
        for q in range(n):
            f = rng.choice(FRAME_COUNTS)
            clips = rng.sample(pool[f], 4) + [sample(f)]
            style = style_rng.randrange(CAPTION_STYLES if kind == "caption" else T.VQA_STYLES)
            texts = [video_chunk_text(c, kind, style) for c in clips]
            for shots in SHOTS:
                prompt = "".join(f"{T.IMAGE}{chunk_text(*t)}{T.EOC}" for t in texts[:shots])
                out.append({"id": f"video-{task}-{q:03d}-{shots}shot", "task": f"video {task}", "shots": shots,
                            "prompt": prompt + T.IMAGE + texts[4][0],
                            "images": [clip_name(c) for c in clips[:shots] + clips[4:]], "frames": f,
                            "held_out_pair": held_out(clips[4]), "judge": "generate", "answer": texts[4][1],
                            "max_new_tokens": 16})
    return out


def demo(seed=0):
    rng = random.Random(seed)
    for _ in range(4):
        c = sample_clip(rng)
        print(c.event, c.frames, video_caption(c), "|", VIDEO_QUESTIONS[c.event], video_answer(c))

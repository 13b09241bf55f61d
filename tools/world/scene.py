"""Scenes of the synthetic world and their renderer.

A scene is a group of identical objects (same shape, colour, texture and
size), 1 to 4 of them, lying together on one side of a 64x64 picture. Every
attribute is visible in the pixels, so captions and answers are determined by
the image alone.
"""

from dataclasses import dataclass, field
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star", "diamond", "cross", "heart"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
TEXTURES = ["solid", "striped", "dotted"]
SIZES = ["small", "large"]
POSITIONS = ["left", "right", "top", "bottom"]
COUNTS = [1, 2, 3, 4]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
PLURALS = {s: s + "s" for s in SHAPES}
PLURALS["cross"] = "crosses"

ATTRIBUTES = {"shape": SHAPES, "colour": COLOURS, "texture": TEXTURES,
              "size": SIZES, "position": POSITIONS, "count": COUNTS}

# (shape, colour) pairs never drawn in training: the evaluation measures how
# well the model composes attributes it has only seen apart. Each shape and
# each colour is held out at most once, so every word is still learnt.
HELD_OUT_PAIRS = frozenset({("circle", "green"), ("square", "purple"),
                            ("triangle", "orange"), ("star", "blue"),
                            ("diamond", "red"), ("heart", "yellow")})

RGB = {"red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 80, 220),
       "yellow": (230, 200, 30), "purple": (140, 55, 195), "orange": (245, 135, 25)}

IMAGE_SIZE = 64
_SS = 4                      # supersampling factor for anti-aliased edges
_SIDE = {"small": 9, "large": 12}   # object side in pixels of the final image
_BACKGROUND = 248
_PAPER = 252                 # the light parts of striped and dotted objects


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    texture: str
    size: str
    count: int
    position: str
    seed: int = 0            # drives layout and jitter; same scene + seed = same pixels

    def attr(self, name):
        return getattr(self, name)

    @property
    def held_out(self):
        return (self.shape, self.colour) in HELD_OUT_PAIRS


def sample_scene(rng, split="train", **fixed):
    """A random scene; `fixed` pins attributes. In the train split held-out
    (shape, colour) pairs are never drawn; in 'eval' every pair is allowed."""
    while True:
        values = {name: fixed.get(name, rng.choice(choices)) for name, choices in ATTRIBUTES.items()}
        scene = Scene(seed=rng.randrange(1 << 30), **values)
        if split == "eval" or not scene.held_out:
            return scene


# ---- geometry -------------------------------------------------------------

def _star(cx, cy, r):
    pts = []
    for i in range(10):
        rad = r if i % 2 == 0 else r * 0.45
        a = -np.pi / 2 + i * np.pi / 5
        pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts


def _heart(cx, cy, r):
    pts = []
    for i in range(48):
        t = 2 * np.pi * i / 48
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        pts.append((cx + x * r / 17, cy - (y + 2.5) * r / 17))
    return pts


def _draw_shape(draw, shape, cx, cy, r, fill):
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        s = r * 0.88
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r * 1.05), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=fill)
    elif shape == "cross":
        w = r * 0.38
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif shape == "heart":
        draw.polygon(_heart(cx, cy, r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def _layout(scene, rng):
    """Object centres and side: the objects sit in distinct cells of a grid laid
    over the scene's half of the picture (so they never overlap), with jitter,
    and the group is clearly more on its side than on any other."""
    side = _SIDE[scene.size] + rng.uniform(-0.7, 0.7)
    mid = IMAGE_SIZE / 2
    x0, x1, y0, y1 = {"left": (1, mid - 1, 1, IMAGE_SIZE - 1), "right": (mid + 1, IMAGE_SIZE - 1, 1, IMAGE_SIZE - 1),
                      "top": (1, IMAGE_SIZE - 1, 1, mid - 1), "bottom": (1, IMAGE_SIZE - 1, mid + 1, IMAGE_SIZE - 1)}[scene.position]
    gap = 2.0   # at least two pixels between objects, so none touch after anti-aliasing
    cols, rows = int((x1 - x0) // (side + gap)), int((y1 - y0) // (side + gap))
    cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
    jx, jy = (cw - side - gap) / 2, (ch - side - gap) / 2
    cells = [(c, r) for c in range(cols) for r in range(rows)]
    for _ in range(1000):
        chosen = rng.sample(cells, scene.count)
        centres = [(x0 + (c + 0.5) * cw + rng.uniform(-jx, jx), y0 + (r + 0.5) * ch + rng.uniform(-jy, jy))
                   for c, r in chosen]
        xs = [c[0] for c in centres]
        ys = [c[1] for c in centres]
        dx = (min(xs) + max(xs)) / 2 - mid
        dy = (min(ys) + max(ys)) / 2 - mid
        along, across = (dx, dy) if scene.position in ("left", "right") else (dy, dx)
        if abs(along) >= abs(across) + 6:
            return centres, side
    raise RuntimeError(f"no layout for {scene}")


def render(scene):
    """The scene as a 64x64 RGB uint8 array (deterministic in scene and seed)."""
    rng = random.Random(scene.seed)
    centres, side = _layout(scene, rng)
    n = IMAGE_SIZE * _SS
    canvas = np.full((n, n, 3), _BACKGROUND, np.float32)
    base = np.array(RGB[scene.colour], np.float32)
    colour = np.clip(base + np.array([rng.uniform(-12, 12) for _ in range(3)]), 0, 255)
    r = side / 2 * _SS
    for cx, cy in centres:
        # draw in a window around the object (supersampled pixels)
        x0, y0 = max(0, int(cx * _SS - r) - 8), max(0, int(cy * _SS - r) - 8)
        x1, y1 = min(n, int(cx * _SS + r) + 9), min(n, int(cy * _SS + r) + 9)
        w, h = x1 - x0, y1 - y0
        lx, ly = cx * _SS - x0, cy * _SS - y0
        outer_img, inner_img = Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)
        _draw_shape(ImageDraw.Draw(outer_img), scene.shape, lx, ly, r, 255)
        # a rim in the object's colour keeps the outline visible for every texture
        _draw_shape(ImageDraw.Draw(inner_img), scene.shape, lx, ly, r - 1.0 * _SS, 255)
        mask = np.asarray(outer_img) > 127
        inner = np.asarray(inner_img) > 127
        yy = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5) / _SS
        xx = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5) / _SS
        if scene.texture == "solid":
            pattern = np.ones_like(mask)
        elif scene.texture == "striped":
            pattern = ((xx + yy - cx - cy) % 3.0) < 1.5
        else:  # dotted: a grid of dots on pale paper
            gx = (xx - cx) % 3.6 - 1.8
            gy = (yy - cy) % 3.6 - 1.8
            pattern = gx * gx + gy * gy < 0.9
        solid = mask & (~inner | pattern)
        window = canvas[y0:y1, x0:x1]
        window[mask] = _PAPER
        window[solid] = colour
    small = canvas.reshape(IMAGE_SIZE, _SS, IMAGE_SIZE, _SS, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def save_png(array, path):
    Image.fromarray(array, "RGB").save(path, optimize=True)


@dataclass
class Pool:
    """Rendered scenes held in memory: images[i] shows scenes[i]."""
    scenes: list = field(default_factory=list)
    images: np.ndarray = None

    @staticmethod
    def render_many(scenes):
        pool = Pool(list(scenes))
        pool.images = np.stack([render(s) for s in pool.scenes]) if pool.scenes else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        return pool

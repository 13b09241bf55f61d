#!/usr/bin/python3
"""Reference outputs for tests/image, computed by Pillow and torchvision.

Run with Debian's /usr/bin/python3 (Pillow 9.4, torch 1.13, torchvision 0.14):
    /usr/bin/python3 tools/make_image_fixtures.py
It rewrites tests/data/image/ (manifest.json plus small binary files).

- Resize: synthetic RGB images (a hash of x, y, channel, the same function as
  in tests/image/image_fixtures.hpp, so no input needs storing) resized with
  Image.resize((w, h), Image.BICUBIC); the test compares every byte (large
  outputs through their FNV-1a hash).
- CLIP: the same images through open_clip's eval transform, built here exactly
  as open_clip 2.20's image_transform(is_train=False) builds it: Resize(size,
  BICUBIC) -> CenterCrop(size) -> convert("RGB") -> ToTensor -> Normalize. Stored:
  the 8-bit crop (or its FNV-1a hash when large), the float tensor for small
  sizes, and per mean/std the tensor value of every 8-bit level (torch's own
  arithmetic); the script checks that tensor == table[crop].
- Decoding: small files written by Pillow (and a few written byte by byte here,
  for variants Pillow does not write) with Image.open(f).convert("RGB") of each,
  and every frame of animated GIFs (seek(k) + convert("RGB")).
"""
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "image")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


def synth(pattern, seed, w, h):
    """uint8 [h, w, 3]; must match synthetic_image() in tests/image/image_fixtures.hpp."""
    y, x, c = np.meshgrid(np.arange(h, dtype=np.uint32), np.arange(w, dtype=np.uint32),
                          np.arange(3, dtype=np.uint32), indexing="ij")
    if pattern == "blocks":  # 7x5 blocks of 0 or 255: strong edges, so over/undershoot gets clipped
        x, y = x // 7, y // 5
    v = (np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF) + x * np.uint32(0x85EBCA77) + y * np.uint32(0xC2B2AE3D)
         + c * np.uint32(0x27D4EB2F))
    v ^= v >> np.uint32(15)
    v *= np.uint32(0x2C1B3C6D)
    v ^= v >> np.uint32(12)
    v *= np.uint32(0x297A2D39)
    v ^= v >> np.uint32(15)
    if pattern == "blocks":
        return (((v >> np.uint32(8)) & np.uint32(1)) * np.uint32(255)).astype(np.uint8)
    return (v & np.uint32(0xFF)).astype(np.uint8)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def open_clip_eval_transform(size, mean, std):
    def _convert_to_rgb(image):
        return image.convert("RGB")
    return transforms.Compose([
        transforms.Resize(size, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(size),
        _convert_to_rgb,
        transforms.ToTensor(),
        transforms.Normalize(mean=mean, std=std),
    ])


def level_table(mean, std):
    """Tensor value of each 8-bit level per channel, [3, 256] float32, by torch's ops."""
    levels = torch.arange(256, dtype=torch.uint8).view(1, 256, 1).expand(3, 256, 1).contiguous()
    img = Image.fromarray(levels.permute(1, 2, 0).numpy().reshape(256, 1, 3), "RGB")
    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])(img)
    return t.reshape(3, 256).numpy().astype(np.float32)


# --- resize -------------------------------------------------------------------

RESIZE_CASES = [
    # (pattern, seed, w, h, out_w, out_h)
    ("noise", 1, 1, 1, 5, 3),
    ("noise", 2, 1, 1, 1, 1),
    ("noise", 3, 3, 5, 17, 29),
    ("noise", 4, 3, 5, 1, 1),
    ("noise", 5, 3, 5, 2, 9),
    ("noise", 6, 7, 300, 7, 30),      # vertical pass only
    ("noise", 7, 300, 7, 30, 7),      # horizontal pass only
    ("blocks", 8, 300, 7, 1000, 7),
    ("noise", 9, 640, 480, 224, 168),
    ("noise", 10, 640, 480, 97, 61),
    ("blocks", 11, 640, 480, 3, 2),
    ("blocks", 12, 640, 480, 298, 224),
    ("noise", 13, 225, 224, 224, 224),
    ("noise", 14, 224, 224, 224, 224),  # same size: a copy
    ("blocks", 15, 224, 224, 225, 223),
    ("noise", 16, 1000, 30, 224, 7),
    ("blocks", 17, 1000, 30, 1, 1),
    ("blocks", 18, 64, 48, 200, 150),   # upscale
    ("noise", 19, 50, 400, 120, 33),    # up in x, down in y
    ("blocks", 20, 31, 17, 93, 51),     # exactly 3x
    ("noise", 21, 93, 51, 31, 17),      # exactly 1/3
]


def make_resize():
    cases = []
    for i, (pattern, seed, w, h, ow, oh) in enumerate(RESIZE_CASES):
        im = Image.fromarray(synth(pattern, seed, w, h), "RGB")
        out = np.asarray(im.resize((ow, oh), Image.BICUBIC))
        assert out.shape == (oh, ow, 3)
        case = dict(pattern=pattern, seed=seed, width=w, height=h, out_width=ow, out_height=oh,
                    expected_fnv1a64=fnv1a64(out.tobytes()))
        if out.size <= 40000:  # larger outputs are checked by their hash only, to keep the fixtures small
            case["expected"] = "resize_%02d.rgb" % i
            write(case["expected"], out.tobytes())
        cases.append(case)
    return cases


# --- CLIP preprocessing -----------------------------------------------------------

CLIP_CASES = [
    # (pattern, seed, w, h, size, mean/std, store: "full" crop bytes or "hash")
    ("noise", 31, 1, 1, 30, "clip", "full"),
    ("noise", 32, 3, 5, 30, "clip", "full"),
    ("noise", 33, 7, 300, 30, "clip", "full"),
    ("blocks", 34, 300, 7, 30, "half", "full"),
    ("noise", 35, 640, 480, 30, "clip", "full"),
    ("noise", 36, 225, 224, 30, "clip", "full"),
    ("noise", 37, 30, 30, 30, "clip", "full"),       # already the size: no resampling
    ("noise", 38, 31, 30, 30, "half", "full"),       # torchvision skips the resize (size unchanged), crops
    ("blocks", 39, 1000, 30, 30, "clip", "full"),
    ("noise", 40, 33, 47, 31, "clip", "full"),       # odd size, odd crop offsets
    ("noise", 41, 40, 31, 31, "clip", "full"),
    ("noise", 42, 640, 480, 224, "clip", "full"),
    ("blocks", 43, 1000, 30, 224, "clip", "hash"),
    ("noise", 44, 7, 300, 224, "clip", "hash"),
    ("noise", 45, 225, 224, 224, "clip", "hash"),
    ("noise", 46, 224, 224, 224, "clip", "hash"),
    ("noise", 47, 224, 300, 224, "half", "hash"),
    ("blocks", 48, 300, 7, 224, "clip", "hash"),
    ("noise", 49, 3, 5, 224, "clip", "hash"),
    ("noise", 50, 1, 1, 224, "clip", "hash"),
    ("noise", 51, 229, 227, 224, "clip", "hash"),    # crop offsets round half to even
]


def make_clip():
    stats = {"clip": (CLIP_MEAN, CLIP_STD), "half": (HALF, HALF)}
    tables = {}
    for key, (mean, std) in stats.items():
        tables[key] = level_table(mean, std)
        write("levels_%s.f32" % key, tables[key].tobytes())
    cases = []
    for i, (pattern, seed, w, h, size, key, store) in enumerate(CLIP_CASES):
        mean, std = stats[key]
        im = Image.fromarray(synth(pattern, seed, w, h), "RGB")
        tensor = open_clip_eval_transform(size, mean, std)(im).numpy()
        assert tensor.shape == (3, size, size) and tensor.dtype == np.float32
        crop = np.asarray(transforms.CenterCrop(size)(transforms.Resize(size, InterpolationMode.BICUBIC)(im)))
        assert crop.shape == (size, size, 3)
        # The tensor is a per-channel function of the 8-bit crop: check, so the table may stand in for it.
        via_table = np.stack([tables[key][c][crop[:, :, c]] for c in range(3)])
        assert np.array_equal(via_table.view(np.uint32), tensor.view(np.uint32)), "tensor != table[crop]"
        case = dict(pattern=pattern, seed=seed, width=w, height=h, size=size, mean=list(mean), std=list(std),
                    levels="levels_%s.f32" % key, crop_fnv1a64=fnv1a64(crop.tobytes()))
        if store == "full":
            case["crop"] = "clip_%02d.rgb" % i
            write(case["crop"], crop.tobytes())
        if size <= 31:
            case["tensor"] = "clip_%02d.f32" % i
            write(case["tensor"], tensor.tobytes())
        cases.append(case)
    return cases


# --- decoding -------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(w, h, bit_depth, color_type, rows, extra=b"", interlace=False):
    """A PNG written here for variants Pillow cannot save (16-bit colour, grey+alpha 16-bit, tRNS, Adam7)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def adam7_rows(pixels):
    """Rows of the seven Adam7 passes of an 8-bit image, in file order."""
    rows = []
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] and sub.shape[1]:
            rows += [sub[y].tobytes() for y in range(sub.shape[0])]
    return rows


def bmp8(indices, palette):
    """An 8-bit BMP whose palette is shorter than its indices reach (biClrUsed set)."""
    h, w = indices.shape
    stride = (w + 3) // 4 * 4
    data = b"".join(indices[y].tobytes().ljust(stride, b"\0") for y in range(h - 1, -1, -1))
    pal = b"".join(bytes([b, g, r, 0]) for r, g, b in palette)
    offset = 14 + 40 + len(pal)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 0, len(data), 2835, 2835, len(palette), 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + pal + data


def bmp16(pixels, masks=None):
    """A 16-bit BMP (Pillow reads them but does not write them): 5-5-5, or bit fields."""
    h, w = pixels.shape
    stride = (w * 2 + 3) // 4 * 4
    data = b"".join(pixels[y].astype("<u2").tobytes().ljust(stride, b"\0") for y in range(h - 1, -1, -1))
    extra = struct.pack("<III", *masks) if masks else b""
    offset = 14 + 40 + len(extra)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, 3 if masks else 0, len(data), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + extra + data


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def make_decode():
    rng = np.random.default_rng(7)
    w, h = 23, 17
    rgb = synth("noise", 60, w, h)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], axis=2)
    grey = synth("noise", 61, w, h)[:, :, 0]
    base = Image.fromarray(rgb, "RGB")
    pal = base.quantize(colors=37)
    files = {}
    files["rgb.png"] = save(base, "PNG")
    files["rgba.png"] = save(Image.fromarray(rgba, "RGBA"), "PNG")
    files["grey.png"] = save(Image.fromarray(grey, "L"), "PNG")
    files["grey_alpha.png"] = save(Image.fromarray(rgba[:, :, [0, 3]], "LA"), "PNG")
    files["palette.png"] = save(pal, "PNG")
    files["palette_trns.png"] = save(pal, "PNG", transparency=5)
    files["bilevel.png"] = save(Image.fromarray(grey > 128), "PNG")
    files["interlaced.png"] = raw_png(w, h, 8, 2, adam7_rows(rgb), interlace=True)  # Pillow cannot write Adam7
    g16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    g16[0, :8] = [0, 1, 100, 254, 255, 256, 1000, 65535]
    files["grey16.png"] = save(Image.fromarray(g16.astype(np.int32), "I").convert("I;16"), "PNG")
    c16 = rng.integers(0, 65536, (h, w, 4), dtype=np.uint16)
    files["rgb16.png"] = raw_png(w, h, 16, 2, [c16[y, :, :3].astype(">u2").tobytes() for y in range(h)])
    files["rgba16.png"] = raw_png(w, h, 16, 6, [c16[y].astype(">u2").tobytes() for y in range(h)])
    files["grey_alpha16.png"] = raw_png(w, h, 16, 4, [c16[y, :, :2].astype(">u2").tobytes() for y in range(h)])
    files["rgb_trns.png"] = raw_png(w, h, 8, 2, [rgb[y].tobytes() for y in range(h)],
                                    extra=png_chunk(b"tRNS", struct.pack(">HHH", *rgb[0, 0])))
    files["grey4.png"] = raw_png(w, h, 4, 0, [np.packbits(np.unpackbits((grey[y] >> 4)[:, None], axis=1)[:, 4:].ravel()).tobytes()
                                              for y in range(h)])
    # Indices past the end of PLTE: Pillow reads its default grey ramp there.
    short_pal = bytes([10, 20, 30, 40, 50, 60, 70, 80, 90])
    files["short_palette.png"] = raw_png(w, h, 8, 3, [((rgb[y, :, 0].astype(np.int32) * 7) % 256).astype(np.uint8).tobytes()
                                                       for y in range(h)], extra=png_chunk(b"PLTE", short_pal))
    files["rgb.bmp"] = save(base, "BMP")
    files["palette.bmp"] = save(pal, "BMP")
    files["grey.bmp"] = save(Image.fromarray(grey, "L"), "BMP")
    files["bilevel.bmp"] = save(Image.fromarray(grey > 128), "BMP")
    files["rgba.bmp"] = save(Image.fromarray(rgba, "RGBA"), "BMP")
    p16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    files["short_palette.bmp"] = bmp8(((rgb[:, :, 0].astype(np.int32) * 7) % 256).astype(np.uint8),
                                      [(10, 20, 30), (40, 50, 60), (70, 80, 90), (200, 100, 0)])
    files["rgb555.bmp"] = bmp16(p16)
    files["rgb565.bmp"] = bmp16(p16, masks=(0xF800, 0x07E0, 0x001F))
    files["rgb.tga"] = save(base, "TGA")
    files["rgb_rle.tga"] = save(base, "TGA", compression="tga_rle")
    files["rgba.tga"] = save(Image.fromarray(rgba, "RGBA"), "TGA")
    files["grey.tga"] = save(Image.fromarray(grey, "L"), "TGA")
    files["palette.tga"] = save(pal, "TGA")
    files["rgb.ppm"] = save(base, "PPM")
    files["grey.pgm"] = save(Image.fromarray(grey, "L"), "PPM")
    files["bilevel.pbm"] = save(Image.fromarray(grey > 128), "PPM")
    files["grey16.pgm"] = save(Image.fromarray(g16.astype(np.int32), "I"), "PPM")
    v15 = (grey.astype(np.int32) * 15 // 255).astype(np.uint8)
    files["grey_max15.pgm"] = b"P5\n# maxval 15\n%d %d\n15\n" % (w, h) + v15.tobytes()
    v1000 = (rgb.astype(np.int32) * 1000 // 255 + (rgb == 255) * 50).astype(">u2")  # some samples above maxval
    files["rgb_max1000.ppm"] = b"P6 %d %d 1000\n" % (w, h) + v1000.tobytes()
    files["grey_max1000.pgm"] = b"P5 %d %d 1000\n" % (w, h) + v1000[:, :, 0].tobytes()
    files["rgb_max4095.ppm"] = b"P6\n%d %d\n4095\n" % (w, h) + (rgb.astype(">u2") * 16).tobytes()
    files["palette.gif"] = save(pal, "GIF")
    files["palette_trns.gif"] = save(pal, "GIF", transparency=5)
    files["grey.gif"] = save(Image.fromarray(grey, "L"), "GIF")
    files["interlaced.gif"] = save(pal, "GIF", interlace=True)

    cases = []
    for name, data in files.items():
        write(name, data)
        im = Image.open(io.BytesIO(data))
        out = np.asarray(im.convert("RGB"))
        write(name + ".rgb", out.tobytes())
        cases.append(dict(file=name, width=out.shape[1], height=out.shape[0], expected=name + ".rgb"))
    return cases


def make_jpeg():
    """JPEGs decoded by Pillow (libjpeg); our stb_image decode may differ by a few levels."""
    w, h = 48, 40
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([(xx * 255 // (w - 1)), (yy * 255 // (h - 1)), ((xx + yy) * 255 // (w + h - 2))], axis=2)
    smooth = (smooth * 0.8 + synth("noise", 70, w, h) * 0.2).astype(np.uint8)
    base = Image.fromarray(smooth, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90; must not be applied
    files = {
        "q90_420.jpg": save(base, "JPEG", quality=90),
        "q75_444.jpg": save(base, "JPEG", quality=75, subsampling=0),
        "q90_422.jpg": save(base, "JPEG", quality=90, subsampling=1),
        "progressive.jpg": save(base, "JPEG", quality=85, progressive=True),
        "grey.jpg": save(base.convert("L"), "JPEG", quality=90),
        "cmyk.jpg": save(base.convert("CMYK"), "JPEG", quality=90),
        "exif_rotated.jpg": save(base.crop((0, 0, 48, 24)), "JPEG", quality=90, exif=exif.tobytes()),
        "odd_size.jpg": save(base.crop((0, 0, 37, 29)), "JPEG", quality=95),
    }
    cases = []
    for name, data in files.items():
        write(name, data)
        out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        write(name + ".rgb", out.tobytes())
        cases.append(dict(file=name, width=out.shape[1], height=out.shape[0], expected=name + ".rgb"))
    return cases


def make_gif():
    """Animated GIFs written by Pillow (it crops frames to what changed, so frame
    rectangles vary) and all their frames as Pillow composites them."""
    w, h = 40, 30
    frames = []
    for k in range(6):
        a = np.zeros((h, w), np.uint8) + 3
        a[5 + k * 2:15 + k * 2, 4 + k * 4:16 + k * 4] = 10 + k  # a moving square
        a[(k * 5) % h, :] = 20
        frames.append(a)
    palette = []
    for i in range(256):
        palette += [(i * 37) % 256, (i * 91) % 256, (i * 53) % 256]

    def pimg(a):
        im = Image.fromarray(a, "P")
        im.putpalette(palette)
        return im

    ims = [pimg(a) for a in frames]
    files = {}
    for disposal in (0, 1, 2, 3):
        files["anim_d%d.gif" % disposal] = save(ims[0], "GIF", save_all=True, append_images=ims[1:],
                                                disposal=disposal, duration=50, loop=0)
        files["anim_d%d_trns.gif" % disposal] = save(ims[0], "GIF", save_all=True, append_images=ims[1:],
                                                     disposal=disposal, transparency=3, duration=50)
    files["anim_mixed.gif"] = save(ims[0], "GIF", save_all=True, append_images=ims[1:],
                                   disposal=[0, 2, 3, 1, 2, 3], transparency=3, duration=[20, 30, 40, 50, 60, 70])
    # Frames with different palettes: Pillow writes local colour tables.
    rgb_frames = [Image.fromarray(np.stack([a * (10 + 20 * k), a * 3, 255 - a * 7], 2).astype(np.uint8), "RGB")
                  for k, a in enumerate(frames[:4])]
    files["anim_rgb.gif"] = save(rgb_frames[0], "GIF", save_all=True, append_images=rgb_frames[1:], duration=40)
    files["hand_made.gif"] = hand_made_gif()
    files["local_palette_only.gif"] = small_gif(global_palette=False, local_palette=True)
    files["no_palette.gif"] = small_gif(global_palette=False, local_palette=False)
    files["first_frame_outside.gif"] = small_gif(global_palette=True, local_palette=False, screen=(5, 4),
                                                 rect=(2, 1, 6, 5))
    files["gif87a.gif"] = b"GIF87a" + small_gif(global_palette=True, local_palette=False, transparency=None)[6:]
    cases = []
    for name, data in files.items():
        write(name, data)
        im = Image.open(io.BytesIO(data))
        out = []
        for k in range(im.n_frames):
            im.seek(k)
            out.append(np.asarray(im.convert("RGB")))
        write(name + ".rgb", b"".join(o.tobytes() for o in out))
        cases.append(dict(file=name, width=out[0].shape[1], height=out[0].shape[0], frames=len(out),
                          expected=name + ".rgb"))
    return cases


def lzw_encode(indices, min_bits):
    """Plain GIF LZW with a clear code when the table is full, for the hand-made file."""
    clear, end = 1 << min_bits, (1 << min_bits) + 1
    codes = []

    def reset():
        return {bytes([i]): i for i in range(clear)}, end + 1, min_bits + 1

    table, nxt, size = reset()
    codes.append((clear, size))
    cur = b""
    for v in indices:
        s = cur + bytes([v])
        if s in table:
            cur = s
            continue
        codes.append((table[cur], size))
        if nxt < 4096:
            table[s] = nxt
            # The decoder widens its codes one entry later than the encoder adds them.
            if nxt == (1 << size) and size < 12:
                size += 1
            nxt += 1
        else:
            codes.append((clear, size))
            table, nxt, size = reset()
        cur = bytes([v])
    codes.append((table[cur], size))
    codes.append((end, size))
    bits, nbits, out = 0, 0, bytearray()
    for code, sz in codes:
        bits |= code << nbits
        nbits += sz
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    blocks = b"".join(bytes([len(out[i:i + 255])]) + bytes(out[i:i + 255]) for i in range(0, len(out), 255))
    return bytes([min_bits]) + blocks + b"\x00"


def small_gif(global_palette, local_palette, screen=(7, 6), rect=(1, 1, 5, 4), transparency=2):
    """One frame, written byte by byte: palette variants and a frame reaching past
    the screen (Pillow then enlarges the image)."""
    pal = bytes(sum(([(i * 90) % 256, (i * 40) % 256, 255 - i * 30] for i in range(8)), []))
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", screen[0], screen[1], (0x82 if global_palette else 0), 5, 0))
    if global_palette:
        out += pal
    if transparency is not None:
        out += b"\x21\xF9\x04\x01\x00\x00" + bytes([transparency]) + b"\x00"
    x, y, fw, fh = rect
    out += b"\x2C" + struct.pack("<HHHHB", x, y, fw, fh, 0x82 if local_palette else 0)
    if local_palette:
        out += pal[::-1]
    out += lzw_encode([(i * 3 + i // fw) % 8 for i in range(fw * fh)], 3) + b"\x3B"
    return bytes(out)


def hand_made_gif():
    """A GIF with what Pillow's writer does not produce: a background index, a
    first frame smaller than the screen with a transparent index, a later frame
    with a local palette and interlacing, a GCE without disposal after one with."""
    w, h = 12, 10
    gpal = bytes(sum(([(i * 50) % 256, (i * 80) % 256, (i * 110) % 256] for i in range(8)), []))
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80 | 0x02, 6, 0) + gpal)

    def gce(disposal, transparency=None):
        flags = (disposal << 2) | (1 if transparency is not None else 0)
        return b"\x21\xF9\x04" + bytes([flags]) + b"\x05\x00" + bytes([transparency or 0]) + b"\x00"

    def frame(x, y, fw, fh, idx, local=None, interlace=False):
        flags = (0x40 if interlace else 0)
        lp = b""
        if local is not None:
            flags |= 0x80 | 0x02
            lp = local
        rows = [idx[r * fw:(r + 1) * fw] for r in range(fh)]
        if interlace:
            order = list(range(0, fh, 8)) + list(range(4, fh, 8)) + list(range(2, fh, 4)) + list(range(1, fh, 2))
            rows = [rows[r] for r in order]
        data = [v for r in rows for v in r]
        return b"\x2C" + struct.pack("<HHHHB", x, y, fw, fh, flags) + lp + lzw_encode(data, 3)

    f0 = [(i * 3) % 8 for i in range(6 * 5)]
    out += gce(2, transparency=1) + frame(3, 2, 6, 5, f0)
    f1 = [(i * 5) % 8 for i in range(8 * 9)]
    lpal = bytes(sum(([(i * 30) % 256, 255 - i * 20, (i * 70) % 256] for i in range(8)), []))
    out += gce(0, transparency=2) + frame(2, 1, 8, 9, f1, local=lpal, interlace=True)  # disposal stays 2
    out += b"\x21\xFE\x05hello\x00"  # comment
    f2 = [(i * 7) % 8 for i in range(4 * 4)]
    out += gce(3) + frame(0, 0, 4, 4, f2)
    f3 = [i % 8 for i in range(12 * 10)]
    out += gce(1, transparency=4) + frame(0, 0, 12, 10, f3)
    out += b"\x3B"
    return bytes(out)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    manifest = dict(resize=make_resize(), clip=make_clip(), decode=make_decode(), jpeg=make_jpeg(), gif=make_gif())
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print("wrote %d files, %d bytes, to %s" % (len(os.listdir(OUT)), total, os.path.normpath(OUT)), file=sys.stderr)


if __name__ == "__main__":
    main()

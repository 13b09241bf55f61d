"""The module's answers equal the flamingo command's (run as a subprocess) on
the bundled model and on the parity fixtures of every decoder family."""
import json
import shutil

import numpy as np
import pytest

from conftest import BUNDLED, CASES, EXAMPLES, FIXTURES, cli, fixture_prompt, load

SHAPES_PROMPT = "<image>A photo of two red circles.<|endofchunk|><image>A photo of"
SHAPES_IMAGES = [str(EXAMPLES / "two_red_circles.png"), str(EXAMPLES / "three_green_triangles.png")]


def cli_generate(model, prompt, images, *extra, frames=1):
    args = ["generate", "--model", model, "--prompt", prompt, "--json", "--threads", "1", "--frames", frames]
    for im in images:
        args += ["--image", im]
    return json.loads(cli(*args, *extra)[1])


def cli_npy(tmp_path, command, model, images, *extra, frames=None):
    out = tmp_path / f"{command}.npy"
    args = [command, "--model", model, "--out", out, "--threads", "1", *extra]
    if frames:
        args += ["--frames", frames]
    for im in images:
        args += ["--image", im]
    cli(*args)
    return np.load(out)


def targets():
    yield "bundled", BUNDLED, SHAPES_PROMPT, SHAPES_IMAGES, 1
    for case in CASES:
        d, text, images, frames = fixture_prompt(case)
        yield case, d, text, images, frames


@pytest.fixture(scope="module")
def video_dirs(tmp_path_factory):
    """The video fixture's frames as one directory per medium (how the command takes videos)."""
    d, text, images, frames = fixture_prompt("video")
    root = tmp_path_factory.mktemp("video")
    media = []
    for m in range(len(images) // frames):
        md = root / f"media{m}"
        md.mkdir()
        for f in range(frames):
            shutil.copy(d / "expected" / "images" / f"media{m}_frame{f}.png", md / f"frame{f}.png")
        media.append(str(md))
    return d, text, media, frames


@pytest.mark.parametrize("name,model,prompt,images,frames", list(targets()), ids=[t[0] for t in targets()])
def test_generate_logits_score_tokenize(tmp_path, name, model, prompt, images, frames):
    m = load(model, threads=1)
    # greedy and beam search: the same tokens and text
    g = m.generate(prompt, images, max_new_tokens=12)
    ref = cli_generate(model, prompt, images, "--max-new-tokens", 12)
    assert g.tokens == ref["tokens"] and g.text == ref["text"]
    b = m.generate(prompt, images, max_new_tokens=8, num_beams=3, no_repeat_ngram_size=2)
    ref = cli_generate(model, prompt, images, "--max-new-tokens", 8, "--num-beams", 3, "--no-repeat-ngram-size", 2)
    assert b.tokens == ref["tokens"] and b.text == ref["text"]
    # sampling with a seed
    s = m.generate(prompt, images, max_new_tokens=6, temperature=0.9, top_k=20, top_p=0.95, seed=7)
    ref = cli_generate(model, prompt, images, "--max-new-tokens", 6, "--temperature", 0.9, "--top-k", 20,
                       "--top-p", 0.95, "--seed", 7)
    assert s.tokens == ref["tokens"]
    # logits: bit for bit the .npy the command writes
    lg = m.logits(prompt, images)
    ref = cli_npy(tmp_path, "logits", model, images, "--prompt", prompt)
    assert lg.dtype == np.float32 and lg.shape == ref.shape
    assert np.array_equal(lg, ref)
    # scores: what `flamingo score` prints
    cands = [" a cat.", " two red circles.", " the dog"]
    sc = m.score(prompt, images, candidates=cands)
    args = ["score", "--model", model, "--prompt", prompt, "--threads", "1"]
    for im in images:
        args += ["--image", im]
    for c in cands:
        args += ["--candidate", c]
    assert sc == json.loads(cli(*args)[1])
    # tokens
    assert m.tokenize(prompt) == json.loads(cli("tokenize", "--model", model, "--prompt", prompt)[1])


@pytest.mark.parametrize("name,model,prompt,images,frames", list(targets()), ids=[t[0] for t in targets()])
def test_embed(tmp_path, name, model, prompt, images, frames):
    e = load(model, threads=1).embed(images)
    ref = cli_npy(tmp_path, "embed", model, images)
    assert e.dtype == np.float32 and np.array_equal(e, ref)


def test_video_frames(tmp_path, video_dirs):
    model, prompt, media, frames = video_dirs
    m = load(model, threads=1)
    g = m.generate(prompt, media, max_new_tokens=10, frames=frames)
    assert g.tokens == cli_generate(model, prompt, media, "--max-new-tokens", 10, frames=frames)["tokens"]
    lg = m.logits(prompt, media, frames=frames)
    assert np.array_equal(lg, cli_npy(tmp_path, "logits", model, media, "--prompt", prompt, frames=frames))


def test_bf16_weights_and_chat(bundled):
    m = load(BUNDLED, threads=1, weights="bf16")
    assert m.weights == "bf16"
    g = m.generate(SHAPES_PROMPT, SHAPES_IMAGES, max_new_tokens=10)
    ref = cli_generate(BUNDLED, SHAPES_PROMPT, SHAPES_IMAGES, "--max-new-tokens", 10, "--weights", "bf16")
    assert g.tokens == ref["tokens"]
    # a conversation: the answers `flamingo chat` gives through a pipe
    chat = bundled.chat()
    answers = [chat.send("What is this?", images=[SHAPES_IMAGES[0]], max_new_tokens=8).text,
               chat.send("And its colour?", max_new_tokens=8).text]
    stdin = f"/image {SHAPES_IMAGES[0]}\nWhat is this?\nAnd its colour?\n"
    out = cli("chat", "--model", BUNDLED, "--threads", "1", "--max-new-tokens", 8, stdin=stdin)[1]
    assert [a.strip() for a in answers] == [l.strip() for l in out.splitlines()]
    assert [msg["role"] for msg in chat.messages] == ["user", "assistant", "user", "assistant"]


def test_idefics_instruct_chat_q4():
    # the PyTorch reference's answers for the same q4 weights (expected/chat.json),
    # which `flamingo chat` prints with line breaks turned into spaces
    d = FIXTURES / "idefics_instruct"
    want = json.loads((d / "expected" / "chat.json").read_text())
    m = load(d, threads=1, weights=want["weights"])
    chat = m.chat()
    answers = []
    for turn in want["turns"]:
        images = [str(d / "expected" / turn["image"])] if "image" in turn else []
        text = chat.send(turn["text"], images=images, max_new_tokens=want["max_new_tokens"]).text
        answers.append(text.replace("\n", " ").replace("\r", " "))
    assert answers == want["answers"]


def test_logits_share_the_buffer(bundled):
    lg = bundled.logits(SHAPES_PROMPT, SHAPES_IMAGES)
    # a view of the library's tensor (held by a capsule), not a NumPy-owned copy
    assert not lg.flags["OWNDATA"] and lg.base is not None
    assert lg.flags["C_CONTIGUOUS"] and lg.shape == (len(bundled.tokenize(SHAPES_PROMPT)), bundled.vocab_size)


def test_timings_count_this_call(bundled):
    g = bundled.generate(SHAPES_PROMPT, SHAPES_IMAGES, max_new_tokens=6)
    t = g.timings
    # greedy: the prompt is read once, then one step per generated token but the last
    assert t["read_tokens"] == len(bundled.tokenize(SHAPES_PROMPT)) and t["media_encoded"] == 2
    assert t["steps"] == len(g.tokens) - 1

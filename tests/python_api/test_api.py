"""Image inputs, threads, errors, and the batch / eval entry points, each
against the flamingo command's own answers."""
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import flamingo
from conftest import BUNDLED, EXAMPLES, SOURCE, cli, cli_error

A = EXAMPLES / "two_red_circles.png"
B = EXAMPLES / "three_green_triangles.png"
PROMPT = "<image>A photo of two red circles.<|endofchunk|><image>A photo of"


def test_images_as_paths_pil_and_numpy(bundled):
    by_path = bundled.logits(PROMPT, [str(A), B])  # str and os.PathLike
    pil = [Image.open(A), Image.open(B)]
    arrays = [np.asarray(p.convert("RGB")) for p in pil]
    assert np.array_equal(bundled.logits(PROMPT, pil), by_path)
    assert np.array_equal(bundled.logits(PROMPT, arrays), by_path)
    # any NumPy layout: a non-contiguous view, RGBA (alpha dropped, as files are read)
    rgba = np.concatenate([arrays[1], np.full(arrays[1].shape[:2] + (1,), 9, np.uint8)], axis=2)
    wide = np.zeros((arrays[0].shape[0], arrays[0].shape[1] * 2, 3), np.uint8)
    wide[:, ::2] = arrays[0]
    assert np.array_equal(bundled.logits(PROMPT, [wide[:, ::2], rgba]), by_path)
    # grey [H, W] is R = G = B
    grey = arrays[0][:, :, 0].copy()
    assert np.array_equal(bundled.embed([grey]), bundled.embed([np.stack([grey] * 3, axis=2)]))
    assert np.array_equal(bundled.embed(pil), bundled.embed([A, B]))


def test_threads_share_one_model(bundled):
    """Four Python threads on one Model give the single-threaded answers."""
    jobs = [(PROMPT, [A, B]), ("<image>A photo of", [B]), ("<image>A photo of", [A]),
            ("<image><image>A photo of", [B, A])]
    expected = [bundled.generate(p, ims, max_new_tokens=10, num_beams=2).tokens for p, ims in jobs]
    results, errors = {}, []

    def work(t):
        try:
            for r in range(3):
                i = (t + r) % len(jobs)
                p, ims = jobs[i]
                results[(t, r)] = (i, bundled.generate(p, ims, max_new_tokens=10, num_beams=2).tokens)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for i, tokens in results.values():
        assert tokens == expected[i]


def test_errors_have_the_commands_messages_and_kinds(bundled, tmp_path):
    missing = tmp_path / "no-model"
    with pytest.raises(flamingo.Error) as e:
        flamingo.Model(missing)
    assert e.value.kind == "file"
    assert str(e.value) == cli_error("tokenize", "--model", missing, "--prompt", "x")

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(flamingo.Error) as e:
        bundled.generate("<image>A photo of", [bad])
    assert e.value.kind == "format"
    assert str(e.value) == cli_error("generate", "--model", BUNDLED, "--prompt", "<image>A photo of",
                                     "--image", bad)

    with pytest.raises(flamingo.Error) as e:
        bundled.generate("")
    assert e.value.kind == "input"
    assert str(e.value) == cli_error("generate", "--model", BUNDLED, "--prompt", "")

    with pytest.raises(flamingo.Error) as e:
        bundled.generate("<image><image>A photo of", [A])
    assert e.value.kind == "input" and "2 <image> tokens but 1 image" in str(e.value)

    with pytest.raises(flamingo.Error, match="dtype uint8") as e:
        bundled.embed([np.zeros((8, 8, 3), np.float32)])
    assert e.value.kind == "input"
    with pytest.raises(flamingo.Error, match=r"\[height, width, 3\]"):
        bundled.embed([np.zeros((8, 8, 2), np.uint8)])
    with pytest.raises(flamingo.Error, match="expected a path"):
        bundled.embed([42])
    with pytest.raises(flamingo.Error, match="needs temperature"):
        bundled.generate("<image>A", [A], top_k=3)
    with pytest.raises(flamingo.Error) as e:
        flamingo.Model(BUNDLED, weights="f16")
    assert "weights must be" in str(e.value)
    with pytest.raises(flamingo.Error) as e:
        bundled.tokenize("A photo of" * 1000)
    assert e.value.kind == "limit"
    # the model still answers afterwards
    assert bundled.tokenize("A photo of") == json.loads(cli("tokenize", "--model", BUNDLED, "--prompt", "A photo of")[1])


def test_batch_line_equals_flamingo_batch(bundled, tmp_path):
    (tmp_path / "img").mkdir()
    for src, dst in ((A, "a.png"), (B, "b.png")):
        (tmp_path / "img" / dst).write_bytes(src.read_bytes())
    lines = [
        '{"id": 1, "task": "generate", "prompt": "<image>A photo of", "images": ["img/a.png"], "max_new_tokens": 8}',
        '{"id": "s", "task": "score", "prompt": "<image>A photo of", "images": ["img/b.png"], '
        '"candidates": [" three green triangles.", " two red circles."]}',
        'this is not JSON',
        '{"id": 4, "task": "generate", "prompt": "<image>A photo of", "images": ["img/missing.png"]}',
        '{"id": 5, "task": "generate", "prompt": "<image><image>A", "images": ["img/a.png", "img/b.png"], "num_beams": 3}',
        '{"id": 6, "task": "dance"}',
        '{"id": 7, "task": "embed", "images": ["img/a.png"]}',
        '{"id": 8, "task": "tokenize", "prompt": "<image>A photo of"}',
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    status, out, _ = cli("batch", "--model", BUNDLED, "--in", tmp_path / "in.jsonl", "--threads", "1", check=False)
    assert status == 3
    expected = out.splitlines()
    assert len(expected) == len(lines)
    got = [bundled.batch_line(line, str(tmp_path)) for line in lines]
    assert got == expected
    with pytest.raises(flamingo.Error, match="blank"):
        bundled.batch_line("  ", str(tmp_path))


@pytest.mark.parametrize("subset", ["", "video"])   # pictures; clips of several frames
def test_eval_equals_flamingo_eval(bundled, tmp_path, subset):
    data = SOURCE / "tests" / "data" / "world" / "eval" / subset
    table, preds = tmp_path / "table.md", tmp_path / "pred.jsonl"
    cli("eval", "--model", BUNDLED, "--data", data, "--limit", 1, "--threads", 1, "--out", table,
        "--predictions", preds)
    records = flamingo.eval_records(str(data), limit=1)
    outcomes = [bundled.eval_record(str(data), r) for r in records]
    assert [json.dumps(o, sort_keys=True) for o in outcomes] == \
        [json.dumps(json.loads(l), sort_keys=True) for l in preds.read_text().splitlines()]
    assert flamingo.eval_table(outcomes) == table.read_text()
    if subset:
        return
    # a broken evaluation set: the command's message, as flamingo.Error
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.jsonl").write_text('{"id": "a"}\nnot json\n')
    with pytest.raises(flamingo.Error) as e:
        flamingo.eval_records(str(broken))
    assert e.value.kind == "format"
    assert str(e.value) == cli_error("eval", "--model", BUNDLED, "--data", broken)
    # a dialogue record is several outcomes, not one: refused by name
    dialogue = flamingo.eval_records(str(data / "dialogue"), limit=1)[0]
    with pytest.raises(flamingo.Error, match="record dialogue-000 is a dialogue record"):
        bundled.eval_record(str(data / "dialogue"), dialogue)


def test_help_and_stubs():
    assert "context" in flamingo.Model.__doc__
    assert "GIL" in flamingo.Model.generate.__doc__
    pkg = Path(flamingo.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_flamingo.pyi").exists()

"""Shared fixtures: the module built by CMake (PYTHONPATH), the real flamingo
command (FLAMINGO_CLI) and the repository (FLAMINGO_SOURCE_DIR)."""
import json
import os
import subprocess
from pathlib import Path

import pytest

import flamingo

SOURCE = Path(os.environ.get("FLAMINGO_SOURCE_DIR", Path(__file__).resolve().parents[2]))
CLI = os.environ.get("FLAMINGO_CLI", str(SOURCE / "build" / "examples" / "flamingo"))
BUNDLED = SOURCE / "models" / "shapes-flamingo"
EXAMPLES = BUNDLED / "examples"
FIXTURES = SOURCE / "tests" / "data" / "model"
# Fixture models run with one frame per medium (the video case is below).
CASES = ["llama", "mpt", "mosaic_gpt", "gpt_neox", "all_media", "ln_post_tokens", "llama_bf16", "idefics",
         "idefics_instruct"]


def cli(*args, check=True, stdin=None):
    """Runs the flamingo command; returns (status, stdout, stderr)."""
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, input=stdin)
    if check and r.returncode != 0:
        raise AssertionError(f"flamingo {' '.join(map(str, args))} failed: {r.stderr}")
    return r.returncode, r.stdout, r.stderr


def cli_error(*args):
    """The message the command prints for a failing call (without its 'flamingo: error: ')."""
    status, _, err = cli(*args, check=False)
    assert status != 0
    assert err.startswith("flamingo: error: "), err
    return err[len("flamingo: error: "):].rstrip("\n")


def fixture_prompt(case):
    """(model dir, prompt text, image paths, frames) of a parity fixture."""
    d = FIXTURES / case
    p = json.loads((d / "expected" / "prompt.json").read_text())
    return d, p["text"], [str(d / "expected" / im) for im in p["images"]], p["frames"]


_models = {}


def load(path, **kw):
    """One Model per (path, options) for the whole session: loading is the slow part."""
    key = (str(path), tuple(sorted(kw.items())))
    if key not in _models:
        _models[key] = flamingo.Model(path, **kw)
    return _models[key]


@pytest.fixture(scope="session")
def bundled():
    return load(BUNDLED, threads=1)

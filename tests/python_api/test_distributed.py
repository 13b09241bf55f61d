"""flamingo.distributed on a LocalCluster of 2 worker processes: its lines and
tables must be exactly those of the `flamingo batch` and `flamingo eval`
commands, also when a worker dies in the middle of a job."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (a dependency of distributed)
from dask.distributed import Client, LocalCluster  # noqa: E402

import flamingo  # noqa: E402
import flamingo.distributed as fd  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "shapes-flamingo"
EXAMPLES = MODEL / "examples"
EVAL = ROOT / "tests" / "data" / "world" / "eval"
CLI = os.environ.get("FLAMINGO_CLI", str(ROOT / "build" / "examples" / "flamingo"))

# The worker-side helpers below are defined here, so they travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def command(*args, check=True):
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and r.returncode not in (0, 3):
        raise AssertionError(f"flamingo {' '.join(map(str, args))}: {r.returncode}\n{r.stderr}")
    return r


def module(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "flamingo.distributed", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def requests(tmp_path_factory):
    """A batch of every kind of line: tasks of each kind, with and without
    images, relative and absolute image paths, and three kinds of error."""
    d = tmp_path_factory.mktemp("batch")
    (d / "a.png").write_bytes((EXAMPLES / "two_red_circles.png").read_bytes())
    star = str(EXAMPLES / "one_striped_blue_star.png")
    lines = []
    for i in range(14):
        lines.append({"id": f"g{i}", "task": "generate", "prompt": f"<image>A photo of{' a' * (i % 3)}",
                      "images": ["a.png" if i % 2 else star], "max_new_tokens": 4 + i % 5})
    lines.append({"id": "beam", "task": "generate", "prompt": "<image>A photo of", "images": ["a.png"],
                  "num_beams": 3, "max_new_tokens": 6})
    lines.append({"id": "s", "task": "score", "prompt": "<image>A photo of", "images": [star],
                  "candidates": [" a star", " a circle"]})
    lines.append({"id": "t", "task": "tokenize", "prompt": "two red circles"})
    lines.append({"id": 7, "task": "embed", "images": ["a.png", star]})
    lines.append({"id": "missing", "task": "generate", "prompt": "<image>x", "images": ["nope.png"]})
    lines.append({"id": "unknown", "task": "dance"})
    text = "\n".join(json.dumps(x) for x in lines[:10]) + "\n{not json\n\n" + \
        "\n".join(json.dumps(x) for x in lines[10:]) + "\r\n"
    path = d / "requests.jsonl"
    path.write_text(text)
    ref = d / "reference.jsonl"
    # Without the command's prefix cache: with it, scores may differ in the last
    # bits (README, "Prefix cache"), and the Python runner does not use one.
    r = command("batch", "--model", MODEL, "--in", path, "--out", ref, "--prefix-cache", "0")
    assert r.returncode == 3, "the batch has failing lines"
    return path, ref.read_text()


def test_batch_lines_equal_the_command(client, requests, tmp_path):
    path, ref = requests
    out = tmp_path / "out.jsonl"
    status = fd.run_batch(client, MODEL, path, out, partition=3)
    assert out.read_text() == ref
    assert status == 3
    assert len(ref.splitlines()) == 21
    assert sum('"error"' in line for line in ref.splitlines()) == 3


def _stats():
    return dict(fd.stats)


def test_each_worker_loads_the_model_once(client, requests, tmp_path):
    path, _ = requests
    for k in range(2):
        fd.run_batch(client, MODEL, path, tmp_path / f"out{k}.jsonl", partition=2)
    per_worker = client.run(_stats)
    assert len(per_worker) == 2
    assert all(s["loads"] == 1 for s in per_worker.values()), per_worker
    assert all(s["tasks"] > 0 for s in per_worker.values()), "both workers took tasks"


def _die_after_next_task():
    """Starts a watcher in this worker process that kills it (SIGKILL, as an
    out-of-memory killer or a lost machine would) as soon as it finishes its
    next task; returns the process id."""
    import threading

    start = fd.stats["tasks"]

    def watch():
        while fd.stats["tasks"] <= start:
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()
    return os.getpid()


def test_a_worker_killed_mid_run_loses_nothing(client, requests, tmp_path):
    path, ref = requests
    client.wait_for_workers(2)
    victim = sorted(client.scheduler_info()["workers"])[0]
    pid = client.run(_die_after_next_task, workers=[victim])[victim]
    out = tmp_path / "out.jsonl"
    status = fd.run_batch(client, MODEL, path, out, partition=1)
    assert out.read_text() == ref
    assert status == 3
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert victim not in client.scheduler_info()["workers"], "the killed worker left the cluster"
    client.wait_for_workers(2, timeout=60)  # its nanny starts a new one for the tests that follow


def test_eval_table_and_predictions_equal_the_command(client, tmp_path):
    command("eval", "--model", MODEL, "--data", EVAL, "--limit", 6, "--threads", 1,
            "--out", tmp_path / "ref.md", "--predictions", tmp_path / "ref.jsonl")
    table, outcomes = fd.run_eval(client, MODEL, EVAL, limit=6, partition=5)
    assert table == (tmp_path / "ref.md").read_text()
    lines = [fd.prediction_line(o) for o in outcomes]
    assert lines == (tmp_path / "ref.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 4 * 6  # tasks x shot counts x limit


def test_command_on_a_scheduler_runs_an_evaluation(client, tmp_path):
    command("eval", "--model", MODEL, "--data", EVAL, "--limit", 3, "--threads", 1,
            "--out", tmp_path / "ref.md", "--predictions", tmp_path / "ref.jsonl")
    r = module("--scheduler", client.scheduler.address, "--model", MODEL, "--data", EVAL, "--limit", 3,
               "--out", tmp_path / "t.md", "--predictions", tmp_path / "p.jsonl")
    assert r.returncode == 0, r.stderr
    assert "dask dashboard:" in r.stderr
    assert (tmp_path / "t.md").read_text() == (tmp_path / "ref.md").read_text()
    assert r.stdout == (tmp_path / "ref.md").read_text()
    assert (tmp_path / "p.jsonl").read_text() == (tmp_path / "ref.jsonl").read_text()


def test_command_with_a_local_cluster_runs_a_batch(requests, tmp_path):
    path, ref = requests
    out = tmp_path / "out.jsonl"
    r = module("--local", 2, "--dashboard", "127.0.0.1:0", "--model", MODEL, "--in", path, "--out", out)
    assert r.returncode == 3, r.stderr  # as `flamingo batch`: some lines failed
    assert out.read_text() == ref


def test_bad_model_directory_is_one_error(client, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    r = module("--scheduler", client.scheduler.address, "--model", tmp_path, "--data", EVAL, "--limit", 1)
    assert r.returncode == 1
    assert r.stderr.count("flamingo: error:") == 1 and "config.json" in r.stderr, r.stderr
    with pytest.raises(flamingo.Error, match="config.json"):
        fd.run_eval(client, tmp_path, EVAL, limit=1)


@pytest.mark.parametrize("args, message", [
    (["--local", "0"], "--local needs 1 to 1024 workers"),
    (["--local", "1", "--model", "/no/such/model"], "no such directory"),
    (["--local", "1", "--limit", "3"], "--limit needs --data"),
    (["--local", "1", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument"),
])
def test_usage_errors(args, message):
    if "--model" not in args:
        args = args + ["--model", str(MODEL)]
    r = module(*args)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr

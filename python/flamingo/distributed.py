"""Batches and few-shot evaluations of one model on a Dask cluster.

Requests in the JSON Lines format of ``flamingo batch`` (or the records of an
evaluation set of ``flamingo eval``) are cut into partitions; each Dask task
runs one partition on a worker process, which loads the model once (memory
mapped, so the workers of one machine share the page cache) and keeps it for
all of its tasks. Results are gathered in input order and are the very lines
(the very table) the ``flamingo`` command writes: each request runs through
the same C++ code. A request that fails is an error line, never a failed job;
the tasks of a worker that dies are run again elsewhere by Dask.

From Python::

    from dask.distributed import Client
    import flamingo.distributed as fd
    with Client("tcp://scheduler:8786") as client:
        fd.run_batch(client, "models/shapes-flamingo", "requests.jsonl", "results.jsonl")
        table, outcomes = fd.run_eval(client, "models/shapes-flamingo", "eval/")

From the shell::

    python3 -m flamingo.distributed --local 2 --model DIR --in requests.jsonl --out results.jsonl
    python3 -m flamingo.distributed --scheduler tcp://HOST:8786 --model DIR --data EVAL_DIR --out table.md
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence

import flamingo

__all__ = ["ModelSpec", "run_batch", "run_eval", "batch_lines", "main"]


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: the model directory (a path valid on every worker)
    and the arguments of :class:`flamingo.Model`."""

    path: str
    weights: Optional[str] = None
    threads: int = 1


# Per worker process: the models it has loaded, and how much it has done (the
# tests and the dashboard's "call stack" read these; nothing depends on them).
_models: dict = {}
stats = {"tasks": 0, "requests": 0, "loads": 0}


def _model(spec: ModelSpec) -> "flamingo.Model":
    m = _models.get(spec)
    if m is None:
        m = flamingo.Model(spec.path, weights=spec.weights, threads=spec.threads)
        _models[spec] = m
        stats["loads"] += 1
    return m


def _batch_task(spec: ModelSpec, lines: List[str], base_dir: str) -> List[str]:
    m = _model(spec)
    out = [m.batch_line(line, base_dir) for line in lines]
    stats["tasks"] += 1
    stats["requests"] += len(lines)
    return out


def _eval_task(spec: ModelSpec, data: str, records: List[str], frames: int) -> List[dict]:
    m = _model(spec)
    out = [m.eval_record(data, r, frames) for r in records]
    stats["tasks"] += 1
    stats["requests"] += len(records)
    return out


def _partitions(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _ordered(client, tasks: Iterable[tuple], window: int) -> Iterator[list]:
    """Submits each (function, *args) of `tasks`, at most `window` at a time,
    and yields their results in submission order. The window keeps a
    million-line job from becoming a million-task graph in the scheduler
    while still giving every worker several partitions to choose from."""
    run = uuid.uuid4().hex[:12]
    pending: collections.deque = collections.deque()
    tasks = iter(tasks)
    for i, (fn, *args) in enumerate(tasks):
        pending.append(client.submit(fn, *args, key=f"flamingo{fn.__name__}-{run}-{i}"))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _window(client) -> int:
    return max(8, 4 * sum(client.nthreads().values()))


class _Progress:
    """One status line on a terminal: done, rate and time left (as `flamingo batch`)."""

    def __init__(self, total: int, what: str, enabled: bool):
        self.total, self.what, self.enabled = total, what, enabled
        self.t0 = time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        left = (self.total - done) / rate if rate > 0 else 0
        sys.stderr.write(f"\33[2K{done}/{self.total} {self.what}, {rate:.1f} {self.what}/s, {left:.0f} s left\r")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\33[2K")
            sys.stderr.flush()


def batch_lines(text: str) -> List[str]:
    """The request lines of a JSON Lines text as `flamingo batch` reads them:
    a trailing carriage return dropped, blank lines skipped."""
    lines = []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip(" \t"):
            lines.append(line)
    return lines


def run_batch(client, model, requests, out, *, base_dir: Optional[str] = None, partition: int = 16,
              weights: Optional[str] = None, threads: int = 1, progress: bool = False) -> int:
    """Runs JSON Lines requests on the cluster of `client` and writes one result
    line per request to `out`, in input order, as each becomes available.

    requests: a path, or a list of lines; out: a path or a text file object.
    base_dir: the directory relative image paths are taken from (default: the
    requests file's directory, else the current one). Returns the exit status
    of `flamingo batch`: 0 when every request succeeded, 3 when some failed.
    """
    if partition < 1:
        raise ValueError(f"partition must be at least 1, got {partition}")
    spec = ModelSpec(os.path.abspath(model), weights, threads)
    if isinstance(requests, (str, os.PathLike)):
        path = os.fspath(requests)
        with open(path, encoding="utf-8", newline="") as f:
            lines = batch_lines(f.read())
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(path))
    else:
        lines = list(requests)
    if base_dir is None:
        base_dir = os.getcwd()
    base_dir = os.path.abspath(base_dir)

    owned = isinstance(out, (str, os.PathLike))
    sink = open(out, "w", encoding="utf-8", newline="\n") if owned else out
    failed = False
    bar = _Progress(len(lines), "lines", progress)
    try:
        done = 0
        tasks = ((_batch_task, spec, list(part), base_dir) for part in _partitions(lines, partition))
        for results in _ordered(client, tasks, _window(client)):
            for line in results:
                failed = failed or "error" in json.loads(line)
                sink.write(line + "\n")
            sink.flush()
            done += len(results)
            bar.update(done)
    finally:
        bar.close()
        if owned:
            sink.close()
    return 3 if failed else 0


def run_eval(client, model, data, *, limit: int = 0, frames: int = 1, partition: int = 32,
             weights: Optional[str] = None, threads: int = 1, progress: bool = False):
    """Runs the evaluation `flamingo eval --data DATA --limit LIMIT` would run,
    its records spread over the cluster; returns (table, outcomes): the same
    Markdown table, and one dict per record (id, task, shots, prediction,
    correct) in the command's order. `data` must be readable here and on
    every worker at the same path."""
    if partition < 1:
        raise ValueError(f"partition must be at least 1, got {partition}")
    spec = ModelSpec(os.path.abspath(model), weights, threads)
    data = os.path.abspath(data)
    records = flamingo.eval_records(data, limit)
    outcomes: List[dict] = []
    bar = _Progress(len(records), "prompts", progress)
    try:
        tasks = ((_eval_task, spec, data, list(part), frames) for part in _partitions(records, partition))
        for results in _ordered(client, tasks, _window(client)):
            outcomes.extend(results)
            bar.update(len(outcomes))
    finally:
        bar.close()
    return flamingo.eval_table(outcomes), outcomes


def prediction_line(o: dict) -> str:
    """A line of `flamingo eval --predictions` (keys sorted, compact)."""
    keep = {k: o[k] for k in ("id", "task", "shots", "prediction", "correct")}
    return json.dumps(keep, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m flamingo.distributed",
        description="Run `flamingo batch` requests or a `flamingo eval` evaluation on a Dask cluster.")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--scheduler", metavar="ADDR", help="a running Dask scheduler, e.g. tcp://HOST:8786")
    where.add_argument("--local", metavar="N", type=int, help="start a LocalCluster of N worker processes")
    p.add_argument("--model", metavar="DIR", required=True, help="model directory (the same path on every worker)")
    p.add_argument("--weights", choices=["f32", "bf16", "q8", "q4"], help="as the command's --weights")
    p.add_argument("--threads", metavar="N", type=int, default=1, help="threads per task (default 1)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--in", dest="input", metavar="FILE", help="requests, JSON Lines (batch; default stdin)")
    what.add_argument("--data", metavar="DIR", help="an evaluation set (eval), as `flamingo eval --data`")
    p.add_argument("--out", metavar="FILE", help="batch: results (default stdout); eval: the table")
    p.add_argument("--limit", metavar="N", type=int, default=0, help="eval: as `flamingo eval --limit`")
    p.add_argument("--frames", metavar="F", type=int, default=1, help="eval: frames per medium (default 1)")
    p.add_argument("--predictions", metavar="FILE", help="eval: one JSON line per record")
    p.add_argument("--partition", metavar="N", type=int, help="requests per task (default 16 batch, 32 eval)")
    p.add_argument("--dashboard", metavar="ADDR", default="127.0.0.1:8787",
                   help="--local: where the dashboard listens (default 127.0.0.1:8787)")
    p.add_argument("--quiet", action="store_true", help="no dashboard link or progress on stderr")
    return p


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.local is not None and not 1 <= a.local <= 1024:
        p.error(f"--local needs 1 to 1024 workers, got {a.local}")
    if a.threads < 1:
        p.error(f"--threads must be at least 1, got {a.threads}")
    if a.partition is not None and a.partition < 1:
        p.error(f"--partition must be at least 1, got {a.partition}")
    if a.data is None:
        for flag, value in (("--limit", a.limit), ("--predictions", a.predictions)):
            if value:
                p.error(f"{flag} needs --data (it belongs to an evaluation)")
        if a.frames != 1:
            p.error("--frames needs --data (batch requests give their own \"frames\")")
    elif a.limit < 0 or a.frames < 1:
        p.error("--limit must not be negative and --frames must be at least 1")
    if not os.path.isdir(a.model):
        p.error(f"--model {a.model}: no such directory")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    _check_args(p, a)
    from dask.distributed import Client, LocalCluster

    cluster = None
    try:
        if a.local is not None:
            cluster = LocalCluster(n_workers=a.local, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=a.dashboard,
                                   silence_logs=logging.ERROR)  # a failing task's error is ours to print
            client = Client(cluster)
        else:
            client = Client(a.scheduler)
        with client:
            if not a.quiet:
                print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
            progress = not a.quiet and sys.stderr.isatty()
            if a.data is not None:
                table, outcomes = run_eval(client, a.model, a.data, limit=a.limit, frames=a.frames,
                                           partition=a.partition or 32, weights=a.weights,
                                           threads=a.threads, progress=progress)
                sys.stdout.write(table)
                if a.out:
                    with open(a.out, "w", encoding="utf-8") as f:
                        f.write(table)
                if a.predictions:
                    with open(a.predictions, "w", encoding="utf-8") as f:
                        for o in outcomes:
                            f.write(prediction_line(o) + "\n")
                return 0
            requests = a.input if a.input else batch_lines(sys.stdin.read())
            return run_batch(client, a.model, requests, a.out or sys.stdout, partition=a.partition or 16,
                             weights=a.weights, threads=a.threads, progress=progress)
    except flamingo.Error as e:
        print(f"flamingo: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"flamingo: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # the cluster's: unreachable scheduler, a task that killed its workers, ...
        print(f"flamingo: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.close()


if __name__ == "__main__":
    sys.exit(main())

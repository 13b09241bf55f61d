#!/usr/bin/python3
"""`flamingo serve`: throughput and latency of POST /v1/generate at 1, 8 and 32
clients on the bundled model, next to the `flamingo generate` command's own
generation time for the same request, in one run.

    bench/bench_serve.py [--cli build/examples/flamingo] [--requests 128] [--runs 20]

Loopback only; each client a thread with one kept-alive connection sending
its requests back to back. Latency: from the request's first byte to the
answer's last (p50, p99 over every request of a level). The command's time:
its --verbose timers (images encoded + prompt read + tokens generated),
median of --runs processes (model load and image files excluded); each
process runs the generation once, on a cold context; and a warm context's
time per request, from `flamingo batch` over many identical lines against
one (warm_command_ms). The server's own figure
per request (its log line: headers in to answer out) is given too. The server
configurations are those of the table; the prefix cache is off in the first
two so that every request computes what the command computes.
"""
import argparse
import base64
import http.client
import json
import re
import statistics
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "shapes-flamingo"
EX = MODEL / "examples"
PROMPT = ("<image>A photo of two red circles.<|endofchunk|><image>A photo of one striped blue star.<|endofchunk|>"
          "<image>A photo of")
IMAGES = [EX / "two_red_circles.png", EX / "one_striped_blue_star.png", EX / "three_green_triangles.png"]
CONFIGS = [["--parallel", "1", "--threads", "1", "--queue", "32", "--prefix-cache", "0"],
           ["--parallel", "2", "--threads", "2", "--queue", "32", "--prefix-cache", "0"],
           ["--parallel", "2", "--threads", "2", "--queue", "32"]]


def command_ms(cli, runs):
    args = [cli, "generate", "--model", str(MODEL), "--prompt", PROMPT, "--threads", "1", "--verbose", "--json"]
    for im in IMAGES:
        args += ["--image", str(im)]
    times, tokens = [], None
    for _ in range(runs):
        p = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
        t = sum(float(re.search(pattern, p.stderr, re.M).group(1)) for pattern in
                (r"^encode images: ([0-9.e-]+) s", r"^read prompt: .* in ([0-9.e-]+) s", r"^generate: .* in ([0-9.e-]+) s"))
        times.append(t * 1000)
        tokens = json.loads(p.stdout)["tokens"]
    return statistics.median(times), tokens


def warm_command_ms(cli, n):
    """The same request as a warm process serves it: `flamingo batch` (one
    worker, one thread, no prefix cache) over n identical lines and over one;
    the difference per extra line is a request's time on a warm context,
    without the model's load and the first request's page faults."""
    line = json.dumps({"task": "generate", "prompt": PROMPT, "images": [str(p) for p in IMAGES]})
    walls = []
    for count in (1, n):
        t0 = time.perf_counter()
        p = subprocess.run([cli, "batch", "--model", str(MODEL), "--parallel", "1", "--threads", "1",
                            "--prefix-cache", "0"], input="".join(
                                json.dumps({"id": i, **json.loads(line)}) + "\n" for i in range(count)),
                           capture_output=True, text=True, check=True, timeout=600)
        walls.append(time.perf_counter() - t0)
        assert len(p.stdout.splitlines()) == count and '"error"' not in p.stdout, p.stdout[:500]
    return (walls[1] - walls[0]) / (n - 1) * 1000


class Server:
    def __init__(self, cli, options):
        self.proc = subprocess.Popen([cli, "serve", "--model", str(MODEL), "--port", "0", *options],
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        self.port = int(re.search(r"http://127\.0\.0\.1:(\d+)", line).group(1))
        # the log (a line a request, ending with its time in ms from headers to answer) must be read,
        # or the pipe fills
        self.ms = []
        threading.Thread(target=self.drain, daemon=True).start()
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.025)

    def drain(self):
        for line in self.proc.stderr:
            if m := re.match(r"POST /v1/generate 200 .* (\d+) ms$", line):
                self.ms.append(int(m.group(1)))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(port, clients, per_client, body, tokens):
    latencies, errors = [], []
    lock = threading.Lock()

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        mine = []
        for _ in range(per_client):
            t0 = time.perf_counter()
            c.request("POST", "/v1/generate", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            answer = r.read()
            mine.append((time.perf_counter() - t0) * 1000)
            if r.status != 200 or json.loads(answer)["tokens"] != tokens:
                errors.append((r.status, answer[:200]))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    assert not errors, errors[:3]
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    return len(latencies) / wall, statistics.median(latencies), p99


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cli", default=str(ROOT / "build" / "examples" / "flamingo"))
    ap.add_argument("--requests", type=int, default=128, help="requests per client count (at least one a client)")
    ap.add_argument("--runs", type=int, default=20, help="command processes for its time")
    a = ap.parse_args()

    body = json.dumps({"prompt": PROMPT, "images": [base64.b64encode(p.read_bytes()).decode() for p in IMAGES]})
    cmd_ms, tokens = command_ms(a.cli, a.runs)
    warm_ms = warm_command_ms(a.cli, a.requests + 1)
    print(f"flamingo generate (its timers, median of {a.runs}): {cmd_ms:.1f} ms, {len(tokens)} tokens")
    print(f"flamingo batch, one worker, per extra line of {a.requests}: {warm_ms:.1f} ms (a warm context)")
    print("| server | clients | requests | throughput, req/s | p50, ms | p99, ms | p50 / command | p50 / warm command |"
          " p50 in the server's log, ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for options in CONFIGS:
        s = Server(a.cli, options)
        try:
            load(s.port, 2, 2, body, tokens)  # warm-up: both workers' first requests
            for clients in (1, 8, 32):
                per = max(1, a.requests // clients)
                seen = len(s.ms)
                rps, p50, p99 = load(s.port, clients, per, body, tokens)
                time.sleep(0.2)  # the last log lines
                logged = statistics.median(s.ms[seen:]) if len(s.ms) > seen else float("nan")
                print(f"| `{' '.join(options)}` | {clients} | {clients * per} | {rps:.1f} | {p50:.1f} | {p99:.1f} | "
                      f"{p50 / cmd_ms:.2f} | {p50 / warm_ms:.2f} | {logged:.0f} |", flush=True)
        finally:
            s.stop()


if __name__ == "__main__":
    main()

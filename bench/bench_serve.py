"""``magnet-jax serve`` under concurrent load against the same requests one by one, in one run.

Starts the real server (a subprocess on an ephemeral 127.0.0.1 port, the shipped default model, or
--model) and sends --requests requests from --clients concurrent client threads (each request one
prompt with its own seed, JSON answers); every loop is bounded in count and in time (--deadline).
Then, in this process, the same prompts and seeds go one by one through ``MAGNeT.generate`` (the
sequential baseline: what a user without the server does, one compiled batch of 1 per call).

Reports requests/s of both, the throughput ratio, p50/p95/p99 latency (arrival to response), the
batch-size histogram (from the responses' batch info), and lost / failed requests (must be 0).
Both sides exclude compilation: the server compiles every batch size before it listens, the
baseline runs one warm-up call first. Writes bench/results/serve_<device>.json and
serve_<device>.png (latency distribution and batch sizes).

    python bench/bench_serve.py                                    # 8 clients, 32 requests
    python bench/bench_serve.py --clients 2 --requests 4 --decoding-steps 2,1,1,1   # smoke
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench_latency import cpu_model  # noqa: E402  (bench/ is this script's folder)

PROMPTS = ["calm piano", "fast techno with drums at 140 BPM", "a flute melody in D minor",
           "guitar strumming chords at 100 BPM", "slow cello in C major", "marimba pattern with drums",
           "an organ arpeggio", "jazz trio with brushes"]
LISTENING = "listening on"          # magnet_jax.serve.cli.LISTENING, read without importing jax


def start_server(args, log: Path) -> tuple[subprocess.Popen, str, int]:
    cmd = [sys.executable, "-m", "magnet_jax.cli", "serve", "--port", "0", "--batch-sizes", args.batch_sizes,
           "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(4 * args.requests)]
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--decoding-steps", args.decoding_steps] if args.decoding_steps else []
    sink = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + args.start_timeout
    while time.monotonic() < deadline:
        found = re.search(rf"{LISTENING} http://([\d.]+):(\d+)", log.read_text())
        if found:
            return proc, found.group(1), int(found.group(2))
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start in {args.start_timeout} s:\n{log.read_text()[-2000:]}")


def post(host: str, port: int, body: dict, timeout: float) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/generate", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        conn.close()


def requests_of(n: int) -> list[dict]:
    return [{"prompt": PROMPTS[i % len(PROMPTS)], "seed": 1000 + i} for i in range(n)]


def load_phase(host: str, port: int, bodies: list[dict], clients: int, deadline_s: float) -> dict:
    """``clients`` threads take the next request from a shared list until it is empty or the
    deadline passes; each request's latency, status and batch are kept."""
    todo = collections.deque(enumerate(bodies))
    lock, results = threading.Lock(), {}
    stop_at = time.monotonic() + deadline_s

    def client():
        while time.monotonic() < stop_at:
            with lock:
                if not todo:
                    return
                i, body = todo.popleft()
            t0 = time.perf_counter()
            try:
                status, reply = post(host, port, body, timeout=max(1.0, stop_at - time.monotonic()))
            except (OSError, http.client.HTTPException, ValueError) as err:
                status, reply = -1, {"error": repr(err)}
            results[i] = (status, time.perf_counter() - t0, reply)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, stop_at - time.monotonic()) + 5)
    wall = time.perf_counter() - t0
    ok = [r for r in results.values() if r[0] == 200]
    latencies = np.array([r[1] for r in ok])
    sizes = collections.Counter(r[2]["results"][0]["batch"]["rows"] for r in ok)
    return {"requests": len(bodies), "ok": len(ok), "failed": len(results) - len(ok),
            "lost": len(bodies) - len(results), "wall_s": wall,
            "requests_per_s": len(ok) / wall,
            "latency_s": {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)} if len(ok) else {},
            "latencies_s": latencies.tolist(),
            "rows_per_batch_histogram": {str(k): v for k, v in sorted(sizes.items())},
            "errors": [r[2].get("error") for r in results.values() if r[0] != 200][:5]}


def sequential_phase(args, bodies: list[dict]) -> dict:
    """The same prompts and seeds, one ``MAGNeT.generate`` call each, after one warm-up call."""
    from magnet_jax.models import load_model
    model = load_model(args.model) if args.model else load_model()
    params = {"decoding_steps": [int(s) for s in args.decoding_steps.split(",")]} if args.decoding_steps else {}
    model.generate([bodies[0]["prompt"]], seed=0, **params)          # compile
    t0, latencies = time.perf_counter(), []
    for body in bodies:
        t1 = time.perf_counter()
        model.generate([body["prompt"]], seed=body["seed"], **params)
        latencies.append(time.perf_counter() - t1)
    wall = time.perf_counter() - t0
    return {"requests": len(bodies), "wall_s": wall, "requests_per_s": len(bodies) / wall,
            "latency_s": {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95, 99)}}


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    served, seq = result["served"], result["sequential"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.hist(served["latencies_s"], bins=20, label=f"served, {result['clients']} clients")
    a.axvline(seq["latency_s"]["p50"], color="k", ls="--", label="one by one (p50)")
    a.set_xlabel("request latency (s)")
    a.set_ylabel("requests")
    a.legend()
    hist = served["rows_per_batch_histogram"]
    b.bar(list(hist), list(hist.values()))
    b.set_xlabel("real rows in the request's batch")
    b.set_ylabel("requests")
    fig.suptitle(f"magnet-jax serve: {served['requests_per_s']:.2f} req/s vs {seq['requests_per_s']:.2f} one by "
                 f"one ({result['throughput_ratio']:.2f}x), {result['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model folder or name (default: the shipped default model)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--batch-sizes", default="1,2,4,8")
    p.add_argument("--max-wait-ms", type=float, default=50.0)
    p.add_argument("--decoding-steps", help="e.g. 20,10,10,10 (default: the model's)")
    p.add_argument("--deadline", type=float, default=1200.0, help="seconds the load phase may take")
    p.add_argument("--start-timeout", type=float, default=900.0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args()
    if not 1 <= args.clients <= 64 or not 1 <= args.requests <= 1024:
        raise SystemExit("--clients must be in [1, 64] and --requests in [1, 1024]")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bodies = requests_of(args.requests)
    log = Path(tempfile.mkdtemp(prefix="bench_serve_")) / "server.log"     # not a result: kept out of bench/results
    proc, host, port = start_server(args, log)
    try:
        served = load_phase(host, port, bodies, args.clients, args.deadline)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    sequential = sequential_phase(args, bodies)       # the server is gone: the cores are this one's
    import jax
    device = jax.devices()[0].platform
    result = {"bench": "serve", "device": device, "cpu": cpu_model(), "cores": os.cpu_count(),
              "clients": args.clients, "batch_sizes": args.batch_sizes, "max_wait_ms": args.max_wait_ms,
              "decoding_steps": args.decoding_steps or "model default", "served": served,
              "sequential": sequential,
              "throughput_ratio": served["requests_per_s"] / sequential["requests_per_s"]}
    path = out / f"serve_{device}.json"
    path.write_text(json.dumps(result, indent=1))
    plot(result, out / f"serve_{device}.png")
    summary = {k: result[k] for k in ("clients", "throughput_ratio")}
    summary.update(served={k: served[k] for k in ("requests_per_s", "latency_s", "rows_per_batch_histogram",
                                                   "failed", "lost")},
                   sequential={k: sequential[k] for k in ("requests_per_s", "latency_s")})
    print(json.dumps(summary, indent=1))
    print(f"wrote {path} (server log: {log})")


if __name__ == "__main__":
    main()

"""Benchmark: many clients at once through the job queue on loopback (studio-tiny on CPU).

Run from the repo root:  python bench/bench_queue.py [--clients 16] [--jobs 4] [--duration 1.0]

The real app (studio.server.build_app) is served by uvicorn in a thread on 127.0.0.1 (free port) in a temporary
data dir with studio-tiny loaded. Each of --clients threads, on its own HTTP connection, runs --jobs generations
one after the other, alternating the two ways a client can: POST /api/generate (waits for the audio) and
POST /api/jobs + following GET /api/jobs/{id}/events to its final event, then downloads the audio. Prints jobs
completed, errors (goal 0; before the queue, five REST pollers made 25 of 30 page generations fail "busy"), the
p50/p95 latency of a whole request (queue wait included), the batch sizes the worker used, and the growth of the
process RSS (the server runs in it) from before the first request to after the last. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.bench_generate import TINY, ServerThread  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.context import build_context  # noqa: E402
from studio.registry import parse_registry  # noqa: E402
from studio.server import build_app  # noqa: E402


def one_client(url: str, index: int, jobs: int, duration_s: float, latencies: list, errors: list) -> None:
    with httpx.Client(base_url=url, timeout=600) as http:
        for j in range(jobs):
            started = time.perf_counter()
            body = {"prompt": f"client {index} take {j}", "duration_s": duration_s, "seed": index * 100 + j}
            try:
                if j % 2 == 0:
                    r = http.post("/api/generate", json=body)
                    ok = r.status_code == 200
                    audio_url = r.json().get("audio_url") if ok else None
                else:
                    r = http.post("/api/jobs", json=body)
                    ok, audio_url = r.status_code == 202, None
                    if ok:
                        final = None
                        with http.stream("GET", r.json()["events_url"]) as events:
                            for line in events.iter_lines():
                                if line.startswith("data:"):
                                    final = json.loads(line[5:])
                        ok = final is not None and final.get("event") == "succeeded"
                        audio_url = final.get("audio_url") if ok else None
                if ok:
                    ok = http.get(audio_url).status_code == 200
                if not ok:
                    errors.append(f"client {index} job {j}: {r.status_code} {r.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - counted as an error, with what happened
                errors.append(f"client {index} job {j}: {exc!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of audio per job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), load_at_start=False, device="cpu", max_queue=256)
        ctx = build_context(settings, parse_registry({"default_model": "studio-tiny", "models": [TINY]}))
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        process = psutil.Process()
        with ServerThread(build_app(ctx, load_model=False)) as server:
            with httpx.Client(base_url=server.url, timeout=120) as warm:  # one job first: lazy imports, caches
                warm.post("/api/generate", json={"prompt": "warm up", "duration_s": args.duration, "seed": 1})
            rss_before = process.memory_info().rss
            latencies: list[float] = []
            errors: list[str] = []
            started = time.perf_counter()
            threads = [threading.Thread(target=one_client, args=(server.url, i, args.jobs, args.duration,
                                                                 latencies, errors)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            rss_after = process.memory_info().rss
        batches = Counter(j.batch_size for j in ctx.jobs.list(limit=500) if j.batch_size)
        ctx.close()
    total = args.clients * args.jobs
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    print(f"{args.clients} clients x {args.jobs} jobs of {args.duration:g} s (studio-tiny, CPU), {wall:.1f} s wall")
    print(f"jobs completed: {len(latencies)} of {total}; errors: {len(errors)} (goal 0)")
    for e in errors[:5]:
        print("  ", e)
    print(f"latency per request (queue wait included): p50 {statistics.median(latencies):.2f} s, "
          f"p95 {q[18]:.2f} s" if latencies else "no latency measured")
    print("batch sizes used (jobs by size): " + ", ".join(f"{k}: {v}" for k, v in sorted(batches.items())))
    print(f"server RSS growth: {(rss_after - rss_before) / 2**20:+.1f} MiB "
          f"({rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()

"""Benchmark: GPU workers on Ray Serve, 1 replica against 2, under many clients with different adapters.

Run from the repo root (needs requirements-ray.txt):  python bench/bench_ray.py [--clients 16] [--jobs 3]

For each of: the in-process worker, 1 replica and 2 replicas (a private local Ray, CPU replicas of studio-tiny, each
with its share of the cores), the real app is served on 127.0.0.1 and --clients threads each run --jobs generations
through the REST API (bench_queue.one_client: POST /api/generate or POST /api/jobs + its events, then the audio),
client k with adapter k mod --adapters. Prints, measured in this one run: throughput (jobs/s) and its ratio 2
replicas / 1 replica beside its ceiling on this machine (min(2, cores): CPU replicas share the cores), p50/p95
latency, errors (goal 0), and the share of batches that found their adapter already loaded on the replica Serve
routed them to (the hit rate). Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private cluster on loopback, gone at the end
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench.bench_generate import TINY, ServerThread  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.context import build_context  # noqa: E402
from studio.registry import parse_registry  # noqa: E402
from studio.server import build_app  # noqa: E402
from studio.services.adapters import RegisterAdapterRequest  # noqa: E402
from tests.adapters_factory import make_lora  # noqa: E402


def run(workers: str, replicas: int, args, root: Path) -> dict:
    data = root / f"{workers.replace(':', '-')}-{replicas}"
    settings = Settings(data_dir=data, load_at_start=False, device="cpu", max_queue=256, workers=workers,
                        ray_replicas=replicas, ray_gpus=0)
    ctx = build_context(settings, parse_registry({"default_model": "studio-tiny", "models": [TINY]}))
    try:
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        adapters = []
        for k in range(args.adapters):
            make_lora(settings.models_dir / "studio-tiny", data / "imports" / f"a{k}", base_name="studio-tiny",
                      seed=k + 1)
            adapters.append(ctx.adapters.register(RegisterAdapterRequest(source="folder", path=f"a{k}")).id)
        with ServerThread(build_app(ctx, load_model=False)) as server:
            with httpx.Client(base_url=server.url, timeout=300) as warm:  # every replica warm: imports, caches
                for k in range(2 * replicas):
                    warm.post("/api/generate", json={"prompt": "warm up", "duration_s": args.duration, "seed": k})
            stats = getattr(ctx.queue.worker, "stats", None)
            before = len(stats.placements) if stats else 0
            latencies: list[float] = []
            errors: list[str] = []
            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(server.url, i, args, adapters[i % len(adapters)],
                                                             latencies, errors)) for i in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
        placed = list(stats.placements)[before:] if stats else []
        hits = sum(hit for _, _, hit, _ in placed)
        return dict(wall=wall, latencies=latencies, errors=errors, batches=len(placed), hits=hits)
    finally:
        ctx.close()


def client(url: str, index: int, args, adapter_id: int, latencies: list, errors: list) -> None:
    with httpx.Client(base_url=url, timeout=600) as http:
        for j in range(args.jobs):
            started = time.perf_counter()
            body = {"prompt": f"client {index} take {j}", "duration_s": args.duration, "seed": index * 100 + j,
                    "adapter_id": adapter_id}
            try:
                r = http.post("/api/generate", json=body)
                if r.status_code != 200 or http.get(r.json()["audio_url"]).status_code != 200:
                    errors.append(f"client {index} job {j}: {r.status_code} {r.text[:200]}")
                else:
                    latencies.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - counted as an error, with what happened
                errors.append(f"client {index} job {j}: {exc!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of audio per job")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, workers, replicas in (("in process", "local", 1), ("1 replica", "ray:local", 1),
                                        ("2 replicas", "ray:local", 2)):
            results[name] = run(workers, replicas, args, Path(tmp))
    total = args.clients * args.jobs
    cores = os.cpu_count() or 1
    print(f"{args.clients} clients x {args.jobs} jobs of {args.duration:g} s, {args.adapters} adapters "
          f"(studio-tiny, CPU, {cores} cores)")
    for name, r in results.items():
        lat = r["latencies"]
        q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [float("nan")] * 19
        rate = len(lat) / r["wall"]
        r["rate"] = rate
        hit = f"; adapter hit rate {r['hits']}/{r['batches']}" if r["batches"] else ""
        print(f"{name:>11}: {rate:.2f} jobs/s ({len(lat)} of {total} in {r['wall']:.1f} s), p50 "
              f"{statistics.median(lat) if lat else float('nan'):.2f} s, p95 {q[18]:.2f} s, errors "
              f"{len(r['errors'])} (goal 0){hit}")
        for e in r["errors"][:3]:
            print("             ", e)
    ratio = results["2 replicas"]["rate"] / results["1 replica"]["rate"]
    print(f"throughput 2 replicas / 1 replica: {ratio:.2f} (ceiling here: {min(2, cores)}; CPU replicas share "
          f"{cores} cores, GPU replicas each have their own device)")
    print(f"Ray overhead, 1 replica / in process: {results['1 replica']['rate'] / results['in process']['rate']:.2f}")


if __name__ == "__main__":
    main()

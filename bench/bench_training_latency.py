"""Benchmark: a generation request's latency while a training run trains beside it vs idle (device policy "beside").

Run from the repo root:  python bench/bench_training_latency.py [--model tiny|small] [--requests 6] [--duration 2]
                                                                  [--no-share]

A studio context in a temporary data dir (studio-tiny, or with --model small a musicgen-small-shaped random model)
on CPU, a dataset of 8 synthetic tone clips of 12 s made by the dataset service, then:
- idle: --requests generations one after the other (`GenerationService.generate`: queue, decode, WAV, record);
- training: a LoRA run with the default configuration started through the TrainingService (a subprocess with half
  the cores at a lower OS priority; the worker decodes on the other half meanwhile, or on all of them with
  --no-share), and once its steps flow, the same requests again (same prompts, seeds).
Prints each phase's median latency, the ratio (training / idle), the steps the run made meanwhile and the server's
RSS growth. Nothing is asserted (shared machines are noisy: read the ratio, re-run when numbers scatter).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.bench_decode import SPEC as SMALL, build_small_shaped  # noqa: E402
from bench.bench_generate import TINY  # noqa: E402
from studio.config import Settings  # noqa: E402
from studio.context import build_context  # noqa: E402
from studio.registry import parse_registry  # noqa: E402
from studio.runtime.tiny import build_tiny_model  # noqa: E402
from studio.services.datasets import CreateDatasetRequest  # noqa: E402
from studio.services.generation import GenerateRequest  # noqa: E402
from studio.services.training import CreateRunRequest  # noqa: E402
from tests.tone_dataset import write_tone_folder  # noqa: E402

PROMPTS = ["calm bass", "fast synth"]


def timed_requests(ctx, n: int, duration_s: float) -> list[float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        ctx.generation.generate(GenerateRequest(prompt=PROMPTS[i % 2], duration_s=duration_s, seed=100 + i))
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "small"], default="tiny")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds of audio per request")
    parser.add_argument("--no-share", action="store_true", help="turn the device policy's core sharing off (the "
                                                                 "worker keeps every core): to see what it saves")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        data = tmp / "data"
        spec = dict(TINY if args.model == "tiny" else {**SMALL, "id": "studio-tiny"})
        folder = data / "models" / "studio-tiny"
        build_tiny_model(folder) if args.model == "tiny" else build_small_shaped(folder)
        registry = parse_registry({"default_model": "studio-tiny", "models": [spec]})
        ctx = build_context(Settings(data_dir=data, load_at_start=False, device="cpu",
                                     hf_cache_dir=tmp / "hf"), registry)
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
        write_tone_folder(data / "imports" / "tones", n=8, seconds=12.0)
        if args.no_share:  # the policy off: the worker keeps every core while the run trains (for comparison)
            ctx.queue.share_cpu = lambda threads: None
        dataset = ctx.datasets.create(CreateDatasetRequest(source="folder", path=str(data / "imports" / "tones"),
                                                           model_id="studio-tiny"))
        timed_requests(ctx, 1, args.duration)  # warm-up (first decode allocates)
        rss = psutil.Process().memory_info().rss
        idle = timed_requests(ctx, args.requests, args.duration)
        run = ctx.training.create(CreateRunRequest(dataset_id=dataset.id, audition_prompts=[], auto_register=False,
                                                   config={"max_steps": 1_000_000, "checkpoint_every": 1_000_000}))
        deadline = time.monotonic() + 600
        while ctx.training.get(run.id).step < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = ctx.training.get(run.id).step
        training = timed_requests(ctx, args.requests, args.duration)
        steps = ctx.training.get(run.id).step - first
        line = ctx.queue.view().training
        ctx.training.stop(run.id)
        grown = (psutil.Process().memory_info().rss - rss) / 2**20
        ctx.close()
        a, b = statistics.median(idle), statistics.median(training)
        print(f"model: {args.model}, {args.requests} requests of {args.duration:g} s, cores: {os.cpu_count()}")
        print(f"idle:     median {a:.3f} s  ({', '.join(f'{t:.2f}' for t in idle)})")
        print(f"training: median {b:.3f} s  ({', '.join(f'{t:.2f}' for t in training)}); the run made {steps} "
              f"steps meanwhile")
        print(f"queue view: {line}")
        print(f"server RSS growth over both phases: {grown:+.0f} MB")
        print(f"latency ratio while training / idle: {b / a:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: are window boundaries of a long piece audible? Studio Tiny, CPU.

Run from the repo root:  python bench/bench_joins.py [--seconds 60] [--seeds 3] [--window 30] [--stride 18] [--threads 1]

A piece longer than one window is decoded window by window (studio/runtime/decode.py, plan_windows): each further
window keeps the end of the one before as context. Per seed, on the final audio (what the job's file holds before
loudness normalisation), printed (never asserted; read the ratios):

  1. sample-to-sample jump: the largest |x[n+1] - x[n]| within 10 ms of each window boundary, vs the same figure at
     every other 10 ms point inside windows (median and 99th percentile): a click would put the boundary's jump far
     above the inside's 99th percentile.
  2. loudness per second: RMS (dBFS) of each 1 s block; the level change between the two seconds around each
     boundary vs between consecutive seconds inside windows (median, max).

Studio Tiny has random weights (its output is noise-like), so this measures the joining itself (context codes
forced, EnCodec decoding the whole sequence at once), not a trained model's musical continuity.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root

import numpy as np  # noqa: E402
import torch  # noqa: E402

from studio.registry import parse_registry  # noqa: E402
from studio.runtime.backend import Row, SamplingParams  # noqa: E402
from studio.runtime.decode import plan_windows  # noqa: E402
from studio.runtime.tiny import build_tiny_model  # noqa: E402
from studio.runtime.transformers_backend import TransformersBackend  # noqa: E402

SAMPLE = SamplingParams(do_sample=True, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)


def jumps_near(audio: np.ndarray, points: list[int], half: int) -> np.ndarray:
    """The largest sample-to-sample jump (any channel) within `half` samples of each point."""
    d = np.abs(np.diff(audio, axis=0)).max(axis=1)
    return np.array([d[max(0, p - half):p + half].max() for p in points])


def block_db(audio: np.ndarray, rate: int) -> np.ndarray:
    blocks = len(audio) // rate
    rms = np.sqrt(np.mean(audio[:blocks * rate].reshape(blocks, rate, -1) ** 2, axis=(1, 2)))
    return 20 * np.log10(np.maximum(rms, 1e-9))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--window", type=float, default=30.0, help="max_duration_s: one window")
    ap.add_argument("--stride", type=float, default=18.0, help="window_stride_s")
    ap.add_argument("--threads", type=int, default=1, help=(
        "torch CPU threads (1: on a shared 2-core machine, 2 threads waited on each other: 236 vs 9 ms a step)"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_model(Path(tmp) / "studio-tiny")
        spec = parse_registry({"default_model": "studio-tiny", "models": [{
            "id": "studio-tiny", "display_name": "Studio Tiny", "backend": "transformers",
            "source": {"builtin": "studio-tiny"}, "parameters": 740798, "sample_rate": 32000, "channels": 1,
            "frame_rate": 50, "max_duration_s": args.window, "max_extended_duration_s": max(180.0, args.seconds),
            "window_stride_s": args.stride, "memory_gb": 0.1}]}).get("studio-tiny")
        model = TransformersBackend().load(folder, spec, torch.device("cpu"), torch.float32)
        window, stride = model.window_frames()
        frames = round(args.seconds * spec.frame_rate)
        plan = plan_windows(0, frames, window, stride)
        hop = spec.sample_rate // round(spec.frame_rate)
        starts = np.cumsum([n for _, n in plan])[:-1]  # the frame where each further window's new music starts
        bounds = [int(f) * hop for f in starts]
        half = spec.sample_rate // 100  # 10 ms
        print(f"{args.seconds:g} s in {len(plan)} windows of {args.window:g} s (stride {args.stride:g} s): "
              f"boundaries at {', '.join(f'{b / spec.sample_rate:.2f} s' for b in bounds)}")
        all_b, all_i, lvl_b, lvl_i = [], [], [], []
        for seed in range(args.seeds):
            started = time.perf_counter()
            result = model.generate_batch([Row("slow ambient pads", frames, seed, SAMPLE)], stream_every_s=None)[0]
            took = time.perf_counter() - started
            audio = result.audio
            inside = [p for p in range(half, len(audio) - half, half)
                      if all(abs(p - b) > 2 * half for b in bounds)]
            jb, ji = jumps_near(audio, bounds, half), jumps_near(audio, inside, half)
            db = block_db(audio, spec.sample_rate)
            change = np.abs(np.diff(db))
            across = {int(b // spec.sample_rate) for b in bounds}  # the change from second s-1 to s spans it
            cb = np.array([change[s - 1] for s in across if 0 < s < len(db)])
            ci = np.array([c for i, c in enumerate(change) if i + 1 not in across])
            all_b += list(jb)
            all_i += list(ji)
            lvl_b += list(cb)
            lvl_i += list(ci)
            print(f"seed {seed}: {took:.1f} s to decode; jump at boundaries max {jb.max():.4f} vs inside median "
                  f"{np.median(ji):.4f}, p99 {np.percentile(ji, 99):.4f}, max {ji.max():.4f}; level change across "
                  f"boundaries max {cb.max():.3f} dB vs inside median {np.median(ci):.3f} dB, max {ci.max():.3f} dB")
        all_b, all_i, lvl_b, lvl_i = map(np.array, (all_b, all_i, lvl_b, lvl_i))
        print(f"all seeds: boundary jump median {np.median(all_b):.4f} max {all_b.max():.4f} | inside median "
              f"{np.median(all_i):.4f} p99 {np.percentile(all_i, 99):.4f} max {all_i.max():.4f}; boundary jumps over "
              f"the inside p99: {int((all_b > np.percentile(all_i, 99)).sum())} of {len(all_b)}")
        print(f"all seeds: level change across boundaries median {np.median(lvl_b):.3f} dB max {lvl_b.max():.3f} dB "
              f"| inside median {np.median(lvl_i):.3f} dB p99 {np.percentile(lvl_i, 99):.3f} dB max "
              f"{lvl_i.max():.3f} dB")


if __name__ == "__main__":
    main()

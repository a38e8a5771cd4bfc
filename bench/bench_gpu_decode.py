"""Benchmark (CUDA): the decode loop's GPU fast path vs transformers' model.generate(), 30 s of audio.

Run from the repo root on a machine with a CUDA GPU:  python bench/bench_gpu_decode.py [--seconds 30]

The same musicgen-small-shaped random model as bench/bench_decode.py (decoder 24 x 1024, ffn 4096, 4 codebooks;
built from a config in a temporary directory, nothing downloaded), loaded in float32 on cuda:0. Greedy decoding with
guidance 3.0, batch 1, --seconds of audio (30 s = 1503 steps). Printed (never asserted):

  - generate(): wall time (text encoder + steps + EnCodec), cuda-synchronized;
  - own loop, fast path (torch.compile mode="reduce-overhead" = CUDA graphs over the static cache, bfloat16
    autocast): the first call (compilation + graph capture) and the best of --runs timed calls;
  - own loop, eager float32 (fast_path=False): wall time;
  - the ratios, the absolute fast-path time (goal < 2 s on an H100-class GPU), and whether greedy codes agree with
    generate()'s: eager float32 should agree bit for bit; bfloat16 may drift after some frames (printed: the share
    of frames before the first difference).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_decode import SPEC, build_small_shaped  # noqa: E402
from studio.registry import parse_registry  # noqa: E402
from studio.runtime.backend import Row, SamplingParams  # noqa: E402
from studio.runtime.transformers_backend import TransformersBackend  # noqa: E402

PROMPT = "calm lofi piano beat with warm bass"
GREEDY = SamplingParams(do_sample=False, top_k=250, top_p=0.0, temperature=1.0, guidance_scale=3.0)


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def same_share(a: np.ndarray, b: np.ndarray) -> float:
    differs = np.nonzero((a != b).any(axis=0))[0]
    return 1.0 if len(differs) == 0 else differs[0] / a.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu_decode.py needs a CUDA GPU (see bench/bench_decode.py for the CPU benchmark).")
    device = torch.device("cuda:0")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}")

    with tempfile.TemporaryDirectory(prefix="bench-gpu-decode-") as tmp:
        folder = build_small_shaped(Path(tmp) / "small")
        spec = parse_registry({"default_model": "small-shaped", "models": [SPEC]}).get("small-shaped")
        loaded = TransformersBackend().load(folder, spec, device, torch.float32)
        model = loaded.model
        frames = round(args.seconds * 50)
        steps = frames + 3
        row = Row(PROMPT, frames, seed=0, params=GREEDY)

        seen = []
        decode = model.audio_encoder.decode

        def spy(codes, *a, **k):
            seen.append(codes[0, 0].cpu().numpy())
            return decode(codes, *a, **k)

        def reference():
            inputs = loaded.processor(text=[PROMPT], padding=True, return_tensors="pt").to(device)
            with torch.inference_mode():
                return model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=steps)

        model.audio_encoder.decode = spy
        reference()  # warm-up (cuBLAS, allocator)
        t_ref, _ = timed(reference)
        del model.audio_encoder.decode
        ref_codes = seen[-1]
        print(f"generate(): {t_ref:.2f} s for {args.seconds:g} s of audio ({steps} steps, "
              f"{t_ref / steps * 1000:.1f} ms/step)")

        loaded.fast_path = True
        t_first, _ = timed(lambda: loaded.generate_batch([row], stream_every_s=None))
        fast_times = []
        for _ in range(args.runs):
            t, out = timed(lambda: loaded.generate_batch([row], stream_every_s=None))
            fast_times.append(t)
        fast = min(fast_times)
        fast_codes = out[0].codes
        print(f"own loop, fast path (compile + CUDA graphs, bf16): first call {t_first:.2f} s (compile + capture), "
              f"then {['%.2f' % x for x in fast_times]} s -> {fast:.2f} s ({fast / steps * 1000:.2f} ms/step)")

        loaded.fast_path = False
        loaded.generate_batch([row], stream_every_s=None)  # warm-up
        t_eager, out = timed(lambda: loaded.generate_batch([row], stream_every_s=None))
        eager_codes = out[0].codes
        print(f"own loop, eager float32: {t_eager:.2f} s ({t_eager / steps * 1000:.1f} ms/step)")

        print(f"fast path / generate() = {fast / t_ref:.3f}; eager / generate() = {t_eager / t_ref:.3f}")
        print(f"fast path absolute: {fast:.2f} s for {args.seconds:g} s of audio (goal < 2 s on an H100-class GPU)")
        print(f"greedy codes vs generate(): eager float32 identical: {np.array_equal(eager_codes, ref_codes)} "
              f"(share of frames before the first difference {same_share(eager_codes, ref_codes):.3f}); "
              f"fast path bf16 identical: {np.array_equal(fast_codes, ref_codes)} "
              f"(share {same_share(fast_codes, ref_codes):.3f})")


if __name__ == "__main__":
    main()

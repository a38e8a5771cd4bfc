"""Benchmark: a training step of the studio's loop (studio.training.trainer.Trainer, what `python -m
studio.training.run` runs) vs a plain PEFT training loop, on the same model, LoRA and batch.

Run from the repo root:  python bench/bench_training.py [--layers 24] [--steps 8] [--warmup 2] [--rounds 2]
                                                        [--batch 2] [--seconds 2] [--device auto] [--threads 1]

A random-weight MusicGen shaped like musicgen-small's decoder (hidden 1024, 16 heads, ffn 4096, --layers 24; tiny
T5 and EnCodec as in studio-tiny: the text and codec are frozen and precomputed by both loops, so they do not
matter) is built with bench_switch_memory.py's helper into a temporary folder. Both loops train LoRA rank 16 on the
"attention" preset (self- and cross-attention q/k/v/out of every decoder layer), AdamW, gradient clipping at 1.0,
batch --batch clips of --seconds s, on --device in the precision the studio picks (fp32 on CPU, bf16 on a GPU
that has it):

- **plain PEFT**: get_peft_model + a fixed batch (labels with the delay pattern, precomputed text states) +
  forward(labels=...) / backward / clip / step / zero_grad: the least a training loop can do;
- **studio**: Trainer.run() on a run folder (spec.json as the studio writes it; tone clips encoded into the codes
  cache first), timed from its own step events: per step it draws the clips, crops and text dropout from seeded
  generators, builds the labels, sets the learning rate, writes a StepEvent line and checks the stop file.

Each loop runs --warmup + --steps steps per round; the warm-up steps are not timed; --rounds rounds alternate which
loop goes first. On a CPU with one thread (the default: --threads 1) a step is timed as the CPU time of the training
thread, which other programs on a shared machine do not disturb; otherwise (GPU, more threads) as wall time. Summary line: `training step ratio (studio / plain PEFT) = X.XX (goal <= 1.10)`, the median time
per step of each. Nothing is asserted: read the numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers of bench_switch_memory.py

GOAL = 1.10


def plain_peft(folder: Path, args, device, dtype, config, clock) -> float:
    """Seconds per step of the plainest PEFT loop on the same shapes."""
    import warnings
    from contextlib import nullcontext

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MusicgenForConditionalGeneration

    from studio.training.config import TARGET_PRESETS
    from studio.training.data import delay_labels

    model = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                             local_files_only=True).to(device)
    model.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(model, LoraConfig(r=config.r, lora_alpha=config.lora_alpha,
                                                 lora_dropout=config.lora_dropout,
                                                 target_modules=TARGET_PRESETS[config.target_modules]))
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=config.learning_rate)
    frames = round(args.seconds * 50)
    g = torch.Generator().manual_seed(0)
    labels = delay_labels([torch.randint(0, 2048, (4, frames), generator=g) for _ in range(args.batch)],
                          2048).to(device)
    states = torch.randn(args.batch, 6, 32, generator=g).to(device=device, dtype=dtype)
    mask = torch.ones(args.batch, 6, dtype=torch.long, device=device)
    autocast = nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)
    model.train()
    times = []
    for i in range(args.warmup + args.steps):
        t0 = clock()
        with autocast:
            loss = model(encoder_outputs=(states,), attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the studio reads every step's loss: same synchronisation on a GPU
        if i >= args.warmup:
            times.append(clock() - t0)
    del model, opt
    return statistics.median(times)


def studio_loop(folder: Path, work: Path, clips, args, device, config, round_no: int, clock) -> float:
    """Seconds per step of Trainer.run(), read on `clock` as each step event is written (warm-up steps left out)."""
    from studio.training import layout
    from studio.training.trainer import Trainer

    ends: list[float] = []

    class Timed(Trainer):
        def emit(self, event) -> None:
            if event.kind == "step":
                ends.append(clock())
            super().emit(event)

    run = work / f"run-{round_no}"
    run.mkdir()
    spec = layout.RunSpec(run_id=round_no, method="sft", model_id="bench-small", model_folder=str(folder),
                          sample_rate=32000, frame_rate=50, max_clip_s=30.0, device=str(device), config=config,
                          clips=clips, codes_cache=str(work / "codes"))
    layout.write_json_atomic(run / layout.SPEC_FILE, spec)
    done = Timed(run, spec).run()
    if done.status != "succeeded":
        raise SystemExit(f"the studio's run failed: {done.message}")
    timed = ends[args.warmup - 1:] if args.warmup else ends
    return statistics.median(b - a for a, b in zip(timed, timed[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = parser.parse_args()

    import soundfile as sf
    import torch

    from bench_switch_memory import _build_model
    from studio.runtime.tiny import build_tiny_model
    from studio.training.config import TrainingConfig
    from studio.training.layout import ClipRef
    from studio.training.trainer import resolve_precision
    from tests.tone_dataset import KINDS, tone

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    # the studio's loop draws a new crop each step; clips exactly --seconds long make every batch the same shape
    config = TrainingConfig(r=16, lora_alpha=32, target_modules="attention", batch_size=args.batch,
                            clip_duration_s=args.seconds, max_steps=args.warmup + args.steps, warmup_steps=0,
                            lr_scheduler="constant", checkpoint_every=1_000_000, cfg_dropout=0.3,
                            threads=args.threads)
    dtype = resolve_precision(config, device)
    # On one CPU thread all the work is the main thread's: its CPU time per step is what the loop costs, whatever
    # else the (shared) machine runs; wall time there scattered 4.7-16.6 s for the same step. Otherwise wall time.
    cpu_clock = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        tiny = build_tiny_model(work / "studio-tiny")
        folder = work / "bench-small"
        t0 = time.perf_counter()
        params = _build_model(folder, args.layers, 0, tiny)
        print(f"model: musicgen-small-shaped decoder, {args.layers} layers, {params / 1e6:.0f} M parameters "
              f"(built in {time.perf_counter() - t0:.1f} s); device {device}, {str(dtype).removeprefix('torch.')}, "
              f"{torch.get_num_threads()} threads; batch {args.batch} x {args.seconds} s; timed in "
              f"{'CPU time of the training thread' if cpu_clock else 'wall time'}")
        clips = []
        for i in range(max(4, args.batch * 2)):
            path = work / f"clip{i}.wav"
            sf.write(path, tone(list(KINDS)[i % 2], args.seconds, seed=i), 32000)
            clips.append(ClipRef(clip_id=i + 1, file=str(path), caption=list(KINDS)[i % 2],
                                 hash=hashlib.sha256(path.read_bytes()).hexdigest()))
        plain, studio = [], []
        for round_no in range(args.rounds):
            order = ("plain", "studio") if round_no % 2 == 0 else ("studio", "plain")
            for which in order:
                if which == "plain":
                    plain.append(plain_peft(folder, args, device, dtype, config, clock))
                else:
                    studio.append(studio_loop(folder, work, clips, args, device, config, round_no, clock))
                print(f"  round {round_no + 1} {which:>6}: {(plain if which == 'plain' else studio)[-1] * 1000:8.1f}"
                      " ms/step")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        p, s = statistics.median(plain), statistics.median(studio)
        print(f"plain PEFT {p * 1000:.1f} ms/step, studio {s * 1000:.1f} ms/step "
              f"({1 / p:.2f} vs {1 / s:.2f} steps/s)")
        print(f"training step ratio (studio / plain PEFT) = {s / p:.2f} (goal <= {GOAL:.2f}) "
              f"[{args.layers} layers, batch {args.batch} x {args.seconds} s, {device}, median of {args.rounds}]")


if __name__ == "__main__":
    main()

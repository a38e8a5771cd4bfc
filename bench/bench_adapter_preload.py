"""Benchmark: a studio with many registered adapters: how long a model switch takes, whether a client told "ready"
can generate with an adapter at once (or gets 423 Busy), and how busy the studio stays afterwards with nobody
generating.

Run from the repo root:  python bench/bench_adapter_preload.py [--adapters 100] [--rounds 2]

Adapters are LoRAs on studio-tiny (one made by PEFT, the others copies with shifted weights: distinct files and
hashes), registered while no model is loaded. Then, through the studio's own code paths:

1. start: switch to studio-tiny (what the studio does at start-up), then one generation with an adapter at once
   (ok or 423 Busy), then the share of the next --window seconds the studio is busy with nobody generating, and
   how many adapters are loaded;
2. a switch to another model and back, --rounds times, measured the same way;
3. a no-op switch (to the loaded model), measured the same way.
Nothing is asserted: read the numbers.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_adapters(tiny: Path, root: Path, count: int) -> list[Path]:
    from safetensors.torch import load_file, save_file

    from tests.adapters_factory import make_lora

    first = make_lora(tiny, root / "lora-0", seed=1)
    tensors = load_file(str(first / "adapter_model.safetensors"))
    folders = [first]
    for i in range(1, count):
        folder = root / f"lora-{i}"
        shutil.copytree(first, folder)
        save_file({k: v + i * 1e-3 for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
        folders.append(folder)
    return folders


def generate_once(ctx, adapter_id: int) -> bool:
    """One generation with adapter_id, as a client told 'ready' sends it: False when the studio answered Busy."""
    from studio.errors import Busy
    from studio.services.generation import GenerateRequest

    try:
        ctx.generation.generate(GenerateRequest(prompt="calm piano", duration_s=0.2, seed=1, adapter_id=adapter_id))
        return True
    except Busy:
        return False


def busy_share(ctx, seconds: float) -> float:
    """The share of `seconds` the studio spends busy with nobody generating (background adapter work)."""
    samples = busy = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        samples += 1
        busy += ctx.manager.status().state != "idle"
        time.sleep(0.01)
    return busy / max(1, samples)


def switch(ctx, model_id: str) -> tuple[float, float]:
    """(seconds refused with Busy before the switch could start, seconds the switch took)."""
    from studio.errors import Busy

    started, blocked = time.perf_counter(), 0.0
    while True:
        try:
            events = ctx.manager.switch(model_id)
            break
        except Busy:
            time.sleep(0.05)
            blocked = time.perf_counter() - started
    started = time.perf_counter()
    for final in events:
        pass
    assert final.stage == "ready", final.message
    return blocked, time.perf_counter() - started


def measured_switch(ctx, model_id: str, adapter_id: int, window_s: float) -> str:
    blocked, switch_s = switch(ctx, model_id)
    time.sleep(0.1)  # a client's round trip between reading 'ready' and sending its request
    started = time.perf_counter()
    ok = generate_once(ctx, adapter_id)
    first_s = time.perf_counter() - started
    share = busy_share(ctx, window_s)
    from studio.errors import Busy

    try:
        with ctx.manager.use("bench") as model:
            loaded = str(len(model.adapters))
    except Busy:
        loaded = "? (busy)"
    return (f"switch refused (423) for {blocked:5.2f} s, then took {switch_s:5.2f} s | generate 0.1 s after 'ready': "
            f"{'ok' if ok else '423 Busy'} ({first_s:4.2f} s) | busy with nobody generating in the next "
            f"{window_s:g} s: {share:4.0%} | adapters loaded: {loaded}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--window", type=float, default=3.0, help="seconds watched after each switch")
    args = parser.parse_args()

    from studio.config import Settings
    from studio.context import build_context
    from studio.registry import parse_registry
    from studio.runtime.tiny import build_tiny_model
    from studio.services.adapters import RegisterAdapterRequest
    from tests.conftest import registry_dict

    with tempfile.TemporaryDirectory(prefix="bench-preload-", ignore_cleanup_errors=True) as tmp:
        tmp = Path(tmp)
        tiny = build_tiny_model(tmp / "build" / "studio-tiny")
        data = tmp / "data"
        shutil.copytree(tiny, data / "models" / "studio-tiny")
        settings = Settings(data_dir=data, load_at_start=False, device="cpu", host="0.0.0.0",
                            hf_cache_dir=tmp / "hf-cache")
        ctx = build_context(settings, parse_registry(registry_dict(**{"tiny-b": {}})))
        folders = make_adapters(tiny, data / "imports", args.adapters)
        started = time.perf_counter()
        ids = [ctx.adapters.register(RegisterAdapterRequest(source="folder", path=f.name, name=f"lora-{i}")).id
               for i, f in enumerate(folders)]
        print(f"registered {len(ids)} adapters in {time.perf_counter() - started:.1f} s (no model loaded)")

        print("start:        ", measured_switch(ctx, "studio-tiny", ids[0], args.window))
        for r in range(args.rounds):
            switch(ctx, "tiny-b")  # a model without adapters
            print(f"switch back {r + 1}:", measured_switch(ctx, "studio-tiny", ids[r + 1], args.window))
        print("no-op switch: ", measured_switch(ctx, "studio-tiny", ids[0], args.window))
        sys.stdout.flush()
        os._exit(0)  # a background pre-load (in older versions) would still be running: end it with the bench


if __name__ == "__main__":
    main()

"""Benchmark: switching LoRA adapters (A -> B -> base -> A) vs loading the base model, through the studio.

Run from the repo root:  python bench/bench_adapter_swap.py [--layers 24] [--rank 16] [--rounds 5] [--base-loads 3]
                                                           [--device auto] [--dtype auto] [--cache DIR]

A random-weight MusicGen shaped like musicgen-small's decoder (hidden 1024, 16 heads, ffn 4096, --layers 24: about
420 M parameters; tiny T5 text encoder and tiny EnCodec as in studio-tiny) is built in a SUBPROCESS and laid out as a
real Hugging Face hub cache with the helpers of bench_switch_memory.py; two LoRA adapters (rank --rank on every Linear
layer of the decoder: q/k/v/out of self- and cross-attention, fc1, fc2), made by PEFT on that model with different
seeds, are saved next to it with `base_model_name_or_path: bench/swap-base`.

The studio then, in one run and through its own code paths:

1. registers both adapters from its import root (AdapterService.register: validation, structural check against the
   base's modules on the meta device, copy into the adapter store) while no model is loaded;
2. loads the base model with ModelManager.switch_and_wait (what POST /api/models/current runs), --base-loads times
   (unloading in between); the first load and the median are printed, the median is the reference;
3. loads each adapter into the loaded model for the first time (TransformersMusicgen.activate_adapter under
   ctx.manager.use(): structural check + PEFT load_adapter + set_adapter);
4. switches A -> B -> base -> A, --rounds times, each switch a `model.activate_adapter(...)` under
   `ctx.manager.use()` (what a generation request with another adapter_id does before generating), checking that
   the loaded model object is the same one throughout (the base is never reloaded);
5. (--check-audio, default on) generates 0.1 s with the base, A and the base again through GenerationService and
   says whether A changed the audio and whether the base came back bit for bit.

Summary line: `adapter swap ratio (swap / base load) = X.XXX (goal <= 0.05)`, swap = the median of every switch
timed in step 4, base load = the median of step 2. Nothing is asserted: read the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# transformers prints a "MISSING" table when a second adapter is loaded (the first one's weights, which are not in
# the second file: they stay as they are) and a progress bar per load: noise here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers of bench_switch_memory.py

from bench_switch_memory import _build_model, _to_hub_cache

GOAL = 0.05
REPO = "bench/swap-base"
MODEL_ID = "swap-base"
DECODER_TARGET = r"decoder\.model\.decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc[12])"
MB = 1024**2


# ---- building (runs in a subprocess) ----------------------------------------------------------------------
def build(cache: Path, adapters: Path, layers: int, rank: int) -> dict:
    """The base model into the hub cache and two PEFT LoRAs into `adapters`; returns facts for the report."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MusicgenForConditionalGeneration

    from studio.runtime.tiny import build_tiny_model

    facts_file = cache / "bench-swap.json"
    storage = cache / ("models--" + REPO.replace("/", "--"))
    if facts_file.is_file() and (storage / "refs" / "main").is_file() and \
            json.loads(facts_file.read_text()).get("layers") == layers and \
            json.loads(facts_file.read_text()).get("rank") == rank and (adapters / "lora-b").is_dir():
        return json.loads(facts_file.read_text())
    shutil.rmtree(storage, ignore_errors=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-build-", dir=cache) as tmp:
        started = time.perf_counter()
        tiny = build_tiny_model(Path(tmp) / "studio-tiny")
        folder = Path(tmp) / "swap-base"
        params = _build_model(folder, layers, 3, tiny)
        model = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        commit = _to_hub_cache(folder, cache, REPO)
        print(f"  built {REPO}: {params / 1e6:.0f} M parameters, commit {commit[:12]}, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        started = time.perf_counter()
        sizes = {}
        peft_model = None
        for name, seed in (("lora-a", 11), ("lora-b", 12)):
            config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=DECODER_TARGET, lora_dropout=0.0,
                                init_lora_weights=False)  # non-zero lora_B: the adapters change the output
            torch.manual_seed(seed)
            if peft_model is None:
                peft_model = get_peft_model(model, config, adapter_name=name)
            else:
                peft_model.add_adapter(name, config)
            out = adapters / name
            shutil.rmtree(out, ignore_errors=True)
            peft_model.save_pretrained(str(adapters), selected_adapters=[name])  # -> adapters/<name>/
            cfg_path = out / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["base_model_name_or_path"] = REPO
            cfg_path.write_text(json.dumps(cfg, indent=2))
            sizes[name] = (out / "adapter_model.safetensors").stat().st_size
        print(f"  made 2 LoRAs (rank {rank}, {sizes['lora-a'] / MB:.1f} MB each) with PEFT, "
              f"{time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    facts = {"params": params, "layers": layers, "rank": rank, "adapter_bytes": sizes["lora-a"]}
    facts_file.write_text(json.dumps(facts))
    return facts


# ---- measuring --------------------------------------------------------------------------------------------
def registry_dict(params: int) -> dict:
    return {"default_model": MODEL_ID, "models": [{
        "id": MODEL_ID, "display_name": "Bench swap base", "backend": "transformers", "source": {"hub": REPO},
        "parameters": params, "sample_rate": 32000, "channels": 1, "frame_rate": 50, "max_duration_s": 30,
        "memory_gb": round(params * 4 * 1.5 / 1024**3, 2), "download_gb": 1.0}]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=24, help="decoder layers of the base (default 24, as musicgen-small)")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of A -> B -> base -> A (default 5)")
    p.add_argument("--base-loads", type=int, default=3, help="base model loads to time (default 3)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--cache", type=Path, default=None,
                   help="folder to build the model and adapters into and reuse (default: a temp dir, removed after)")
    p.add_argument("--no-check-audio", dest="check_audio", action="store_false",
                   help="skip the 0.1 s generations that check the adapter changes the audio")
    p.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)  # the build subprocess
    args = p.parse_args()

    if args.build_only is not None:
        facts = build(args.build_only / "hf-cache", args.build_only / "adapters", args.layers, args.rank)
        json.dump(facts, sys.stdout)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    try:
        run(args, args.cache or work / "build", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, build_dir: Path, work: Path) -> None:
    print(f"building the base model and two LoRAs into {build_dir} (in a subprocess) ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--build-only", str(build_dir), "--layers", str(args.layers),
                           "--rank", str(args.rank)], stdout=subprocess.PIPE, text=True, check=True)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"ready in {time.perf_counter() - started:.1f} s")

    import torch
    from transformers.utils import logging as transformers_logging

    from studio.config import Settings
    from studio.context import build_context
    from studio.errors import Busy
    from studio.registry import parse_registry
    from studio.services.adapters import RegisterAdapterRequest, adapter_key
    from studio.services.generation import GenerateRequest

    transformers_logging.disable_progress_bar()
    data = work / "data"
    imports = data / "imports"
    for name in ("lora-a", "lora-b"):
        shutil.copytree(build_dir / "adapters" / name, imports / name)
    settings = Settings(data_dir=data, hf_cache_dir=build_dir / "hf-cache", load_at_start=False,
                        device=args.device, dtype=args.dtype, host="0.0.0.0")
    ctx = build_context(settings, parse_registry(registry_dict(facts["params"])))
    manager = ctx.manager
    cuda = manager.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(manager.device)

    def use():
        """manager.use(), waiting out a listener that still holds the studio after a switch."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return manager.use("benchmark")
            except Busy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    print(f"torch {torch.__version__}; device {manager.device}, dtype {manager.dtype}; {torch.get_num_threads()} "
          f"threads; base {facts['params'] / 1e6:.0f} M parameters ({facts['layers']} decoder layers), LoRA rank "
          f"{facts['rank']}, {facts['adapter_bytes'] / MB:.1f} MB per adapter")

    # 1. registration (no model loaded: nothing is pre-loaded, the structure is checked on the meta device)
    registered = {}
    for name in ("lora-a", "lora-b"):
        t0 = time.perf_counter()
        registered[name] = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=name))
        print(f"  registered {name}: id {registered[name].id}, base {registered[name].base_model}, "
              f"{time.perf_counter() - t0:.2f} s")
    a, b = registered["lora-a"], registered["lora-b"]
    folder_of = {x.id: ctx.adapters.for_generation(x.id, ctx.registry.get(MODEL_ID), None).folder
                 for x in (a, b)}

    # 2. base model loads
    base_loads = []
    for i in range(max(1, args.base_loads)):
        if i:
            manager.unload()
        t0 = time.perf_counter()
        final = manager.switch_and_wait(MODEL_ID)
        sync()
        base_loads.append(time.perf_counter() - t0)
        if final.stage != "ready":
            raise SystemExit(f"loading {MODEL_ID} failed: {final.message}")
    base_load = statistics.median(base_loads)
    print(f"\nbase model load (ModelManager.switch_and_wait): "
          f"{', '.join(f'{s * 1000:.0f}' for s in base_loads)} ms -> first {base_loads[0] * 1000:.0f} ms, "
          f"median {base_load * 1000:.0f} ms")

    with use() as model:
        model_object = model.model
        weights = model.nbytes()

    def activate(adapter) -> float:
        with use() as model:
            if model.model is not model_object:
                raise SystemExit("the base model was reloaded")
            t0 = time.perf_counter()
            model.activate_adapter(adapter_key(adapter.id) if adapter else None,
                                   folder_of[adapter.id] if adapter else None)
            sync()
            return time.perf_counter() - t0

    # 3. first-time adapter loads
    first_a = activate(a)
    first_b = activate(b)
    print(f"first-time adapter load (check + PEFT load_adapter + set_adapter): A {first_a * 1000:.0f} ms, "
          f"B {first_b * 1000:.0f} ms")

    # 4. switches A -> B -> base -> A
    activate(a)
    steps = [("A -> B", b), ("B -> base", None), ("base -> A", a)]
    times: dict[str, list[float]] = {label: [] for label, _ in steps}
    for _ in range(max(1, args.rounds)):
        for label, target in steps:
            times[label].append(activate(target))
    every = [t for ts in times.values() for t in ts]
    swap = statistics.median(every)
    print(f"switches ({args.rounds} rounds, activate_adapter under manager.use(); base model object unchanged):")
    for label, ts in times.items():
        print(f"  {label:<10} median {statistics.median(ts) * 1000:7.2f} ms   "
              f"min {min(ts) * 1000:7.2f}   max {max(ts) * 1000:7.2f}")
    with use() as model:
        same = model.model is model_object
        loaded = sorted(model.adapters)
    print(f"  base model object the same throughout: {same}; adapters loaded: {', '.join(loaded)}; "
          f"weights {weights / MB:.0f} MB")

    # 5. the adapter does something, and the base comes back bit for bit
    if args.check_audio:
        def gen(adapter_id):
            r = ctx.generation.generate(GenerateRequest(prompt="calm piano", duration_s=0.1, seed=5,
                                                        adapter_id=adapter_id))
            import soundfile as sf
            return sf.read(r.output_file, dtype="int16")[0]

        t0 = time.perf_counter()
        before, with_a, after = gen(None), gen(a.id), gen(None)
        print(f"audio check (0.1 s each, {time.perf_counter() - t0:.1f} s): adapter A changes the audio: "
              f"{bool((before != with_a).any())}; base identical after A: {bool((before == after).all())}")

    ratio = swap / base_load
    print(f"\nfirst-time adapter load / base load = {statistics.mean([first_a, first_b]) / base_load:.3f}; "
          f"worst switch / base load = {max(every) / base_load:.3f}")
    verdict = "OK" if ratio <= GOAL else "ABOVE GOAL"
    print(f"adapter swap ratio (swap / base load) = {ratio:.3f} (goal <= {GOAL:.2f}) [{verdict}; median switch "
          f"{swap * 1000:.2f} ms, median base load {base_load * 1000:.0f} ms, {facts['params'] / 1e6:.0f} M params, "
          f"device {manager.device}]")
    manager.unload()
    ctx.engine.dispose()


if __name__ == "__main__":
    main()

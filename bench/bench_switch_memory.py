"""Benchmark: process memory after the first model load vs after 10 model switches.

Run from the repo root:  python bench/bench_switch_memory.py [--switches 10] [--device auto] [--dtype auto]
                                                            [--gen-seconds 0.2] [--cache DIR]

Two random-weight MusicGen models whose decoders are big enough for the weights to dominate the process
(hidden 1024; A: 12 layers, about 218 M parameters, B: 8 layers, about 151 M; tiny T5 text encoder and tiny EnCodec
as in studio-tiny, processor files copied from studio-tiny) are built in a SUBPROCESS (so building them leaves no
garbage in the measured process) and laid out as a real Hugging Face hub cache:

    <cache>/models--bench--switch-a/blobs/<sha256>                 file contents
    <cache>/models--bench--switch-a/snapshots/<40-hex>/<file>      symlinks to ../../blobs/<sha256>
    <cache>/models--bench--switch-a/refs/main                      the 40-hex commit
    <cache>/models--bench--switch-a/trees/<40-hex>.json            the tree listing (huggingface_hub >= 2.x checks
                                                                   cached snapshots against it when offline)

The registry has `source: {hub: bench/switch-a}` and `{hub: bench/switch-b}` and Settings(hf_cache_dir=<cache>), so
the studio finds them through its normal code path (studio.runtime.hub.cached_snapshot, offline) and loads them with
the transformers backend. The script then switches to A (first load), and makes N switches alternating B, A, B, ...
through ModelManager.switch_and_wait (what POST /api/models/current runs), each followed by a short generation
through GenerationService (--gen-seconds, default 0.2 s: transformers keeps float32 safetensors weights as views
of the memory-mapped file, so a load alone leaves most weight pages non-resident and RSS would not show them; the
generation reads every decoder weight, as real use does), printing the process RSS (and the anonymous
/ file-backed split, and CUDA allocated / reserved memory on a GPU machine) before anything is loaded, after the first
load and after every switch. N is even by default so the last switch loads A again: like for like with the first load.

Summary line: `memory ratio (after 10 switches / after first load) = X.XX (goal <= 1.10)`.
Nothing is asserted: read the numbers.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py` from the repo root

GOAL = 1.10
MB = 1024**2
MODELS = {  # repo id -> (decoder layers, seed)
    "bench/switch-a": (12, 1),
    "bench/switch-b": (8, 2),
}
HIDDEN = 1024


# ---- building the models (runs in a subprocess) -----------------------------------------------------------
def _build_model(folder: Path, layers: int, seed: int, processor_from: Path) -> int:
    import torch
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenForConditionalGeneration,
                              T5Config)

    text = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                    decoder_start_token_id=0, pad_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=32, num_filters=4,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=32,
                          target_bandwidths=[2.2], num_lstm_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=HIDDEN, num_hidden_layers=layers,
                                    num_attention_heads=16, ffn_dim=4 * HIDDEN, num_codebooks=4,
                                    max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048,
                                    audio_channels=1)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    config.decoder.decoder_start_token_id = 2048
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config)
    for name, buf in model.audio_encoder.named_buffers():
        if name.endswith("codebook.embed"):
            buf.copy_(torch.randn_like(buf))
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
                 "special_tokens_map.json", "spiece.model"):
        if (processor_from / name).is_file():
            shutil.copy2(processor_from / name, folder / name)
    return sum(p.numel() for p in model.parameters())


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _to_hub_cache(folder: Path, cache: Path, repo_id: str) -> str:
    """Move the files of `folder` into a hub-cache layout for repo_id; return the commit hash."""
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    commit = hashlib.sha1(b"".join(p.name.encode() + _file_sha256(p).encode() for p in files)).hexdigest()
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    tree = {}
    for p in files:
        sha256 = _file_sha256(p)
        size = p.stat().st_size
        big = p.suffix == ".safetensors"
        blob_name = sha256 if big else _git_blob_sha1(p.read_bytes())
        shutil.move(str(p), storage / "blobs" / blob_name)
        (snapshot / p.name).symlink_to(Path("..", "..", "blobs", blob_name))
        entry = {"size": size, "blob_id": _git_blob_sha1(b"version https://git-lfs.github.com/spec/v1\n") if big
                 else blob_name}
        if big:
            entry.update(lfs_sha256=sha256, lfs_size=size)
        tree[p.name] = entry
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    (storage / "trees").mkdir(exist_ok=True)
    (storage / "trees" / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return commit


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_cache(cache: Path) -> dict[str, int]:
    """Build both models into `cache` (skipping those already there); returns repo -> parameter count."""
    from studio.runtime.tiny import build_tiny_model

    cache.mkdir(parents=True, exist_ok=True)
    counts_file = cache / "bench-params.json"
    counts = json.loads(counts_file.read_text()) if counts_file.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="bench-build-", dir=cache) as tmp:
        tiny = build_tiny_model(Path(tmp) / "studio-tiny")
        for repo_id, (layers, seed) in MODELS.items():
            if repo_id in counts and (cache / ("models--" + repo_id.replace("/", "--")) / "refs" / "main").is_file():
                continue
            folder = Path(tmp) / repo_id.replace("/", "--")
            started = time.perf_counter()
            counts[repo_id] = _build_model(folder, layers, seed, tiny)
            commit = _to_hub_cache(folder, cache, repo_id)
            print(f"  built {repo_id}: {counts[repo_id] / 1e6:.0f} M parameters, commit {commit[:12]}, "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
    counts_file.write_text(json.dumps(counts))
    return counts


# ---- measuring --------------------------------------------------------------------------------------------
def _proc_status() -> dict[str, int]:
    """RssAnon / RssFile from /proc/self/status (Linux), in bytes."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


class Probe:
    def __init__(self, device):
        import psutil
        import torch

        self.torch, self.proc, self.device = torch, psutil.Process(), device
        self.cuda = device.type == "cuda"
        self.rows: list[tuple[str, int, int]] = []

    def __call__(self, label: str, loaded: str = "") -> int:
        rss = self.proc.memory_info().rss
        st = _proc_status()
        split = (f"anon {st['RssAnon'] / MB:7.0f} MB  file {st['RssFile'] / MB:6.0f} MB"
                 if "RssAnon" in st else "")
        cuda_alloc = self.torch.cuda.memory_allocated(self.device) if self.cuda else 0
        gpu = ""
        if self.cuda:
            gpu = (f"  cuda allocated {cuda_alloc / MB:7.0f} MB  reserved "
                   f"{self.torch.cuda.memory_reserved(self.device) / MB:7.0f} MB")
        print(f"  {label:<22} {loaded:<16} RSS {rss / MB:7.0f} MB  {split}{gpu}", flush=True)
        self.rows.append((label, rss, cuda_alloc))
        return rss


def registry_dict(counts: dict[str, int]) -> dict:
    models = []
    for repo_id, params in counts.items():
        model_id = repo_id.split("/")[1]
        models.append({
            "id": model_id, "display_name": f"Bench {model_id}", "backend": "transformers",
            "source": {"hub": repo_id}, "parameters": params, "sample_rate": 32000, "channels": 1, "frame_rate": 50,
            "max_duration_s": 30, "memory_gb": round(params * 4 * 1.5 / 1024**3, 2), "download_gb": 1.0,
        })
    return {"default_model": models[0]["id"], "models": models}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--switches", type=int, default=10, help="switches after the first load (default 10)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype (default auto: float32 on CPU, float16 on CUDA). On CPU, float32 weights stay "
                        "views of the mmap-ed file (file-backed RSS); any other dtype converts them into anonymous "
                        "heap memory, which is where a missing free / malloc_trim would show")
    p.add_argument("--cache", type=Path, default=None,
                   help="hub cache folder to build the models into and reuse (default: a temp dir, removed after)")
    p.add_argument("--gen-seconds", type=float, default=0.2,
                   help="seconds of audio generated after every load, so that the weights are actually read "
                        "(0: switch only; default 0.2)")
    p.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)  # the build subprocess
    args = p.parse_args()

    if args.build_only is not None:
        json.dump(build_cache(args.build_only), sys.stdout)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-switch-"))  # the studio's data dir (and the cache by default)
    try:
        run(args, args.cache or work / "hf-cache", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, cache: Path, work: Path) -> None:
    print(f"building the two models into the hub cache {cache} (in a subprocess) ...", flush=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--build-only", str(cache)], stdout=subprocess.PIPE, text=True,
                          check=True)
    lines = done.stdout.rstrip().splitlines()
    print("\n".join(lines[:-1]))
    counts = json.loads(lines[-1])
    print(f"models ready in {time.perf_counter() - started:.1f} s")

    import torch

    from studio.config import Settings
    from studio.context import build_context
    from studio.registry import parse_registry
    from studio.runtime import hub

    registry = parse_registry(registry_dict(counts))
    settings = Settings(data_dir=work / "data", hf_cache_dir=cache, load_at_start=False, device=args.device,
                        dtype=args.dtype)
    ctx = build_context(settings, registry)
    manager = ctx.manager
    for spec in registry.models:
        found = hub.cached_snapshot(spec.source.hub, None, cache)
        if found is None:
            raise SystemExit(f"the studio does not see {spec.source.hub} as cached in {cache}")
    print(f"torch {torch.__version__}; device {manager.device}, dtype {manager.dtype}; "
          f"cuda available: {torch.cuda.is_available()}")
    ids = registry.ids()
    a, b = ids[0], ids[1]
    probe = Probe(manager.device)
    what = (f"after each load: a {args.gen_seconds:g} s generation" if args.gen_seconds > 0
            else "no generation after loads: mmap-ed weights may not be resident")
    print(f"\nmemory (RSS = resident set of this process; {what})")
    gc.collect()
    base = probe("before any load")

    from studio.services.generation import GenerateRequest

    def switch(model_id: str) -> float:
        t0 = time.perf_counter()
        final = manager.switch_and_wait(model_id)
        if final.stage != "ready":
            raise SystemExit(f"switch to {model_id} failed: {final.message}")
        elapsed = time.perf_counter() - t0
        if args.gen_seconds > 0:  # what a user does next; it also faults in every weight page (see the README)
            ctx.generation.generate(GenerateRequest(prompt="calm piano", duration_s=args.gen_seconds, seed=0))
        return elapsed

    seconds = switch(a)
    with manager.use("benchmark") as loaded:
        weights = loaded.nbytes()
        spec_a = loaded.spec.id
    first = probe("after first load", f"{spec_a} ({seconds:.1f} s)")
    print(f"  weights of {a}: {weights / MB:.0f} MB ({counts[registry.get(a).source.hub] / 1e6:.0f} M params); "
          f"first load added {(first - base) / MB:.0f} MB RSS")
    after = first
    for i in range(1, args.switches + 1):
        target = b if i % 2 == 1 else a
        seconds = switch(target)
        after = probe(f"after switch {i}", f"{target} ({seconds:.1f} s)")
    manager.unload()
    unloaded = probe("after unload (end)")

    ratio = after / first
    last = probe.rows[-2][0]
    print(f"\nRSS: before load {base / MB:.0f} MB, after first load {first / MB:.0f} MB, {last} {after / MB:.0f} MB "
          f"({(after - first) / MB:+.0f} MB = {(after - first) / weights:+.2f} x the weights of {a}); "
          f"after unload {unloaded / MB:.0f} MB ({(unloaded - base) / MB:+.0f} MB vs before any load)")
    if manager.device.type == "cuda":
        cuda_first, cuda_after = probe.rows[1][2], probe.rows[-2][2]
        print(f"CUDA allocated: after first load {cuda_first / MB:.0f} MB, {last} {cuda_after / MB:.0f} MB "
              f"(ratio {cuda_after / max(cuda_first, 1):.2f}), after unload {probe.rows[-1][2] / MB:.0f} MB")
    verdict = "OK" if ratio <= GOAL else "ABOVE GOAL"
    print(f"memory ratio (after {args.switches} switches / after first load) = {ratio:.2f} (goal <= {GOAL:.2f}) "
          f"[{verdict}; {ids[0]} ~{weights / MB:.0f} MB of weights, device {manager.device}]")
    ctx.engine.dispose()


if __name__ == "__main__":
    main()

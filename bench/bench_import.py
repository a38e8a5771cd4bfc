"""Benchmark: importing an audiocraft checkpoint of musicgen-small's shape (CPU, local disk).

Run from the repo root:  python bench/bench_import.py [--scale small] [--dtype float16]

Writes a random audiocraft-format exported checkpoint shaped like musicgen-small's LM (dim 1024, 24 layers, 16 heads,
4 codebooks of 2048: about 420M parameters with its embeddings and heads) and imports it with the studio's own code
(studio/runtime/audiocraft.py: sha256, safe read, checks, mapping, sharded safetensors). The text encoder and codec
are studio-tiny's (the real t5-base and encodec_32khz add their own 0.9 GB and 0.24 GB to read and write). Each
import runs in a child process so its peak memory is its own. Printed, never asserted:

  - seconds per step (hash, read, convert + write) and the whole import's throughput in MB/s of checkpoint;
  - the floor: a plain copy of the checkpoint's bytes on the same disk (read + write once), in the same run, and the
    ratio of the import's time to it;
  - the child's peak resident memory vs the checkpoint's size (the LM is memory-mapped; safetensors serialises each
    shard in memory).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `python bench/x.py` from the repo root

SCALES = {"small": (1024, 24, 16), "medium": (1536, 48, 24)}


def write_checkpoint(folder: Path, dim: int, layers: int, heads: int, dtype, text_dim: int) -> Path:
    import torch
    import yaml

    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(dtype)

    tensors = {f"emb.{k}.weight": rand(2049, dim) for k in range(4)}
    tensors.update({f"linears.{k}.weight": rand(2048, dim) for k in range(4)})
    tensors.update({"out_norm.weight": torch.ones(dim, dtype=dtype), "out_norm.bias": torch.zeros(dim, dtype=dtype),
                    "condition_provider.conditioners.description.output_proj.weight": rand(dim, text_dim),
                    "condition_provider.conditioners.description.output_proj.bias": rand(dim)})
    for i in range(layers):
        p = f"transformer.layers.{i}."
        for attn in ("self_attn", "cross_attention"):
            tensors[p + f"{attn}.in_proj_weight"] = rand(3 * dim, dim)
            tensors[p + f"{attn}.out_proj.weight"] = rand(dim, dim)
        tensors[p + "linear1.weight"] = rand(4 * dim, dim)
        tensors[p + "linear2.weight"] = rand(dim, 4 * dim)
        for norm in ("norm1", "norm2", "norm_cross"):
            tensors[p + f"{norm}.weight"] = torch.ones(dim, dtype=dtype)
            tensors[p + f"{norm}.bias"] = torch.zeros(dim, dtype=dtype)
    fixture = torch.load(ROOT / "tests/fixtures/audiocraft/mono/state_dict.bin", weights_only=True)
    config = yaml.safe_load(fixture["xp.cfg"])
    config["transformer_lm"].update(dim=dim, num_layers=layers, num_heads=heads)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"best_state": tensors, "xp.cfg": yaml.safe_dump(config), "version": "1.3.0", "exported": True},
               folder / "state_dict.bin")
    return folder / "state_dict.bin"


def child(args) -> None:
    """One import, timed by step; prints a JSON line."""
    import transformers  # noqa: F401 - its lazy modules loaded before the clock starts (not the import's cost)
    from transformers import AutoTokenizer, MusicgenForConditionalGeneration  # noqa: F401

    from studio.runtime import audiocraft as ac

    path, refs, out = Path(args.checkpoint), json.loads(args.refs), Path(args.out)
    t0 = time.perf_counter()
    ac.file_sha256(path)
    t1 = time.perf_counter()
    ckpt = ac.read_checkpoint(path)
    plan = ac.plan_of(ckpt.config, ckpt.tensors)
    t2 = time.perf_counter()
    converted = ac.convert(ckpt, plan, Path(refs["t5-base"]), Path(refs["facebook/encodec_32khz"]), out)
    t3 = time.perf_counter()
    print(json.dumps({"hash_s": t1 - t0, "read_s": t2 - t1, "convert_s": t3 - t2, "written": converted.weights_bytes,
                      "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "shards": len(list(out.glob("*.safetensors")))}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--checkpoint")
    parser.add_argument("--refs")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        return child(args)

    import torch

    from studio.runtime.tiny import build_tiny_model
    from tests.audiocraft_support import write_reference_repos

    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        refs = write_reference_repos(build_tiny_model(tmp / "tiny"), tmp / "refs")
        dim, layers, heads = SCALES[args.scale]
        path = write_checkpoint(tmp / "ckpt", dim, layers, heads, getattr(torch, args.dtype), text_dim=32)
        size = path.stat().st_size
        # the floor: read and write the same bytes once
        t = time.perf_counter()
        shutil.copyfile(path, tmp / "copy.bin")
        os.sync()
        floor = time.perf_counter() - t
        (tmp / "copy.bin").unlink()
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", "--checkpoint", str(path), "--refs",
                              json.dumps({k: str(v) for k, v in refs.items()}), "--out", str(tmp / "out")],
                             check=True, capture_output=True, text=True).stdout
        os.sync()
        total = time.perf_counter() - t
        r = json.loads(out.strip().splitlines()[-1])
        mb = size / 1e6
        print(f"checkpoint: musicgen-{args.scale}-shaped LM, {args.dtype}, {mb:,.0f} MB")
        print(f"import (child process, incl. python, torch and transformers start): {total:.1f} s = {mb / total:,.0f} MB/s")
        print(f"  sha256 {r['hash_s']:.1f} s, safe read + checks {r['read_s']:.1f} s, "
              f"convert + write {r['convert_s']:.1f} s ({r['shards']} shard(s), {r['written'] / 1e6:,.0f} MB)")
        steps = r["hash_s"] + r["read_s"] + r["convert_s"]
        print(f"floor: copying the same bytes once: {floor:.1f} s = {mb / floor:,.0f} MB/s; "
              f"import / floor = {total / floor:.1f}x (its steps alone: {steps:.1f} s = {steps / floor:.1f}x)")
        print(f"peak memory of the import: {r['peak_rss'] / 1e6:,.0f} MB = {r['peak_rss'] / size:.2f}x the checkpoint")


if __name__ == "__main__":
    main()

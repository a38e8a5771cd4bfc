"""Real PEFT adapter checkpoints for tests: valid LoRAs, a second tiny base, and deliberately broken adapters.

Every adapter is made by PEFT itself on a tiny MusicGen (studio-tiny or a variant), so the files have the exact layout
that users' adapters have: `adapter_config.json` + `adapter_model.safetensors`, keys like
`base_model.model.decoder.model.decoder.layers.0.self_attn.q_proj.lora_A.weight`.

    make_lora(base, out)                    valid LoRA on the decoder (non-zero lora_B: it changes the output)
    build_tiny_variant(out, hidden_size=48) another tiny MusicGen with other shapes (or seed=...: other weights)
    make_pickled(out)                       valid LoRA saved as adapter_model.bin (torch.save), no safetensors
    make_not_lora(out)                      real IA3 adapter (peft_type "IA3"), safetensors
    make_unmapped(base, out)                valid LoRA + one extra key for a module that does not exist (layer 99)
    make_wrong_shapes(out)                  LoRA trained on the hidden_size-48 variant (size mismatch on studio-tiny)
    make_archive(folder, out_path, fmt)     zip / tar.gz with the folder as the top-level directory

Functions that need a base but are not given one build studio-tiny once per process into a temp directory.
The global torch RNG is left untouched (everything seeded runs inside `torch.random.fork_rng`).
"""
from __future__ import annotations

import atexit
import io
import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import torch

from studio.runtime.tiny import TINY_SEED, build_tiny_model

# Only the MusicGen decoder's Linear layers (never the T5 text encoder's q/k/v/o, the EnCodec or the lm_heads).
# PEFT applies a string target_modules with re.fullmatch on each module name. Matches exactly the 10 Linear layers
# per decoder layer: {self_attn,encoder_attn}.{q,k,v,out}_proj, fc1, fc2.
DECODER_TARGET = r"decoder\.model\.decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc[12])"
DECODER_FFN = r"decoder\.model\.decoder\.layers\.\d+\.fc[12]"
UNMAPPED_KEY = "base_model.model.decoder.model.decoder.layers.99.self_attn.q_proj.lora_A.weight"
VARIANT_HIDDEN = 48

_cache: dict[str, Path] = {}


def _scratch() -> Path:
    if "scratch" not in _cache:
        d = Path(tempfile.mkdtemp(prefix="adapters-factory-"))
        atexit.register(shutil.rmtree, d, ignore_errors=True)
        _cache["scratch"] = d
    return _cache["scratch"]


def default_base() -> Path:
    """studio-tiny, built once per process in a temp directory."""
    if "base" not in _cache:
        _cache["base"] = build_tiny_model(_scratch() / "studio-tiny")
    return _cache["base"]


def default_variant() -> Path:
    """The other-shapes variant (decoder hidden_size 48), built once per process in a temp directory."""
    if "variant" not in _cache:
        _cache["variant"] = build_tiny_variant(_scratch() / "studio-tiny-h48", hidden_size=VARIANT_HIDDEN)
    return _cache["variant"]


def _load(base_folder):
    from transformers import MusicgenForConditionalGeneration

    return MusicgenForConditionalGeneration.from_pretrained(str(base_folder))


def _set_base_name(out_dir: Path, base_name: str | None) -> None:
    if base_name is None:
        return
    cfg_path = out_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def make_lora(base_folder, out_dir, *, r: int = 4, alpha: int = 8, seed: int = 0, target: str = DECODER_TARGET,
              base_name: str | None = None, init_nonzero: bool = True) -> Path:
    """A real PEFT LoRA for the MusicGen in `base_folder`, saved to `out_dir` (adapter_config.json +
    adapter_model.safetensors). `target` is a regex fullmatched against module names (default: decoder only).
    init_nonzero=True uses init_lora_weights=False (lora_B non-zero: the adapter changes the output); False gives
    PEFT's default init (lora_B = 0: a no-op adapter). Deterministic for a given base and seed.
    `base_name` overwrites base_model_name_or_path in adapter_config.json (else PEFT's value: the base folder path)."""
    from peft import LoraConfig, get_peft_model

    out_dir = Path(out_dir)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=target, lora_dropout=0.0,
                        init_lora_weights=not init_nonzero)
    with torch.random.fork_rng(devices=[]):  # from_pretrained also draws from the global RNG
        model = _load(base_folder)
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    _set_base_name(out_dir, base_name)
    return out_dir


def build_tiny_variant(out_dir, *, hidden_size: int | None = None, seed: int | None = None) -> Path:
    """Another tiny MusicGen saved like studio-tiny (model + processor, same tokenizer, same T5 / EnCodec configs).

    hidden_size: decoder hidden size (default 32 = studio-tiny's); ffn_dim is 2 * hidden_size. Other than 32 gives
    OTHER SHAPES (a LoRA for it fails on studio-tiny with a size mismatch).
    seed: weight seed (default TINY_SEED + 1: SAME SHAPES, OTHER WEIGHTS). hidden_size=None, seed=TINY_SEED
    reproduces studio-tiny's weights exactly.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return build_tiny_model(out_dir, hidden_size=32 if hidden_size is None else int(hidden_size),
                            seed=TINY_SEED + 1 if seed is None else int(seed))


def make_pickled(out_dir, *, base_folder=None, **lora_kwargs) -> Path:
    """A real LoRA whose weights are a pickle (`adapter_model.bin`, torch.save), with no safetensors file."""
    from safetensors.torch import load_file

    out_dir = make_lora(base_folder or default_base(), out_dir, **lora_kwargs)
    st = out_dir / "adapter_model.safetensors"
    torch.save(load_file(str(st)), out_dir / "adapter_model.bin")
    st.unlink()
    return out_dir


def make_not_lora(out_dir, *, base_folder=None, peft_type: str = "IA3", seed: int = 0) -> Path:
    """A real non-LoRA PEFT adapter (IA3 on the decoder's k/v/fc2) with adapter_model.safetensors.
    peft_type other than "IA3" only rewrites the "peft_type" field of the IA3 adapter's config (e.g.
    "PREFIX_TUNING": a config whose type does not match its tensors, still not a LoRA)."""
    from peft import IA3Config, get_peft_model

    out_dir = Path(out_dir)
    config = IA3Config(target_modules=r"decoder\.model\.decoder\.layers\.\d+\.(self_attn\.(k|v)_proj|fc2)",
                       feedforward_modules=DECODER_FFN, init_ia3_weights=True)
    with torch.random.fork_rng(devices=[]):
        model = _load(base_folder or default_base())
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir))
    if peft_type != "IA3":
        cfg_path = out_dir / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["peft_type"] = peft_type
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return out_dir


def make_unmapped(base_folder, out_dir, *, key: str = UNMAPPED_KEY, **lora_kwargs) -> Path:
    """A valid LoRA plus one extra tensor under `key`, a module that does not exist in the base (layer 99).
    The extra tensor has a plausible lora_A shape (r, hidden) so only the name is wrong."""
    from safetensors.torch import load_file, save_file

    out_dir = make_lora(base_folder, out_dir, **lora_kwargs)
    st = out_dir / "adapter_model.safetensors"
    tensors = load_file(str(st))
    like = next(v for k, v in sorted(tensors.items()) if k.endswith("self_attn.q_proj.lora_A.weight"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        tensors[key] = torch.randn_like(like)
    save_file(tensors, str(st), metadata={"format": "pt"})
    return out_dir


def make_wrong_shapes(out_dir, *, variant_folder=None, **lora_kwargs) -> Path:
    """A LoRA trained on the other-shapes variant (decoder hidden 48, ffn 96): same key names as a studio-tiny LoRA,
    other tensor shapes. Loading it into studio-tiny fails with a size mismatch."""
    return make_lora(variant_folder or default_variant(), out_dir, **lora_kwargs)


def make_archive(folder, out_path, fmt: str = "zip") -> Path:
    """Archive `folder` to exactly `out_path` with the folder as the top-level directory inside
    (e.g. `my-lora/adapter_config.json`). fmt: "zip" or "tar.gz"."""
    folder, out_path = Path(folder), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(out_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(folder.name + "/", "")
            for p in files:
                zf.write(p, arcname=f"{folder.name}/{p.relative_to(folder).as_posix()}")
    elif fmt in ("tar.gz", "tgz"):
        with tarfile.open(out_path, "w:gz") as tf:
            tf.add(folder, arcname=folder.name)
    else:
        raise ValueError(f"unknown archive format {fmt!r} (zip or tar.gz)")
    return out_path


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    """A deflated .zip holding entries (name -> bytes), as an upload would carry it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(entries: dict[str, bytes], link: tuple[str, str] | None = None) -> bytes:
    """A .tar.gz holding entries (name -> bytes), plus a symlink (name, target) when given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
        if link:
            member = tarfile.TarInfo(link[0])
            member.type, member.linkname = tarfile.SYMTYPE, link[1]
            tf.addfile(member)
    return buf.getvalue()

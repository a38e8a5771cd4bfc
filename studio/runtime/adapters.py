"""LoRA adapter files: validate a PEFT checkpoint without unpickling anything, and check its structure.

The structural check maps every tensor onto a module of the base model and compares shapes, so an adapter for
another architecture or size is refused before PEFT ever sees it (PEFT would load unmapped keys silently).
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from torch import nn

from studio.errors import InvalidRequest, TooLarge

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# Adapters kept loaded next to the base weights, least recently used unloaded first. Each one loaded makes the next
# load and every forward over the adapted layers slower; reloading an evicted one costs a few hundred ms.
MAX_LOADED_ADAPTERS = 8
MAX_LOADED_ADAPTER_BYTES = 2 * 2**30
# Metadata files are read into the database and sent to pages: a real adapter_config.json is ~1 KB.
MAX_CONFIG_BYTES = 64 * 1024
KEY_PREFIX = "base_model.model."
# PEFT LoRA tensor suffixes and the dimension each checks: (module kind, index into the tensor shape, attribute)
_LINEAR = {"lora_A.weight": [(1, "in_features")], "lora_B.weight": [(0, "out_features")],
           "lora_B.bias": [(0, "out_features")], "lora_magnitude_vector": [(0, "out_features")]}
_EMBEDDING = {"lora_embedding_A": [(1, "num_embeddings")], "lora_embedding_B": [(0, "embedding_dim")]}
_SUFFIX = re.compile(r"^(?P<module>.+?)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_B\.bias|lora_magnitude_vector|"
                     r"lora_embedding_A|lora_embedding_B)(?:\.weight)?$")


@dataclass(frozen=True)
class AdapterFiles:
    folder: Path
    config: dict
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape, read from the safetensors header only
    dropped: tuple[str, ...] = ()  # keys of adapter_config.json that LoraConfig does not declare (not kept)

    @property
    def rank(self) -> int | None:
        return self.config.get("r")

    @property
    def base_name(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def revision(self) -> str | None:
        return self.config.get("revision")


def read_json_object(path: Path, *, code: str, max_bytes: int) -> dict:
    """A JSON file that must hold an object, at most max_bytes long; InvalidRequest with `code` (TooLarge with
    `metadata_too_large`) naming the file otherwise."""
    size = path.stat().st_size
    if size > max_bytes:
        raise TooLarge(f"{path.name} is {size / 1024:.0f} KB; the limit is {max_bytes // 1024} KB.",
                       code="metadata_too_large", file=path.name, max_bytes=max_bytes)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"{path.name} is not valid JSON: {exc}", code=code) from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path.name} must hold a JSON object.", code=code)
    return data


def inspect_adapter(folder: Path) -> AdapterFiles:
    """Validate that `folder` is a PEFT LoRA checkpoint with safetensors weights; raise InvalidRequest if not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidRequest(f"{folder.name or folder} is not a folder.", code="not_a_folder")
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise InvalidRequest(f"Not a PEFT adapter: {CONFIG_FILE} is missing.", code="not_peft_adapter")
    raw = read_json_object(config_path, code="not_peft_adapter", max_bytes=MAX_CONFIG_BYTES)
    config = known_lora_keys(raw)
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise InvalidRequest(f"Only LoRA adapters are supported; this one is {peft_type or 'of unknown type'}.",
                             code="not_lora", peft_type=peft_type or None)
    problem = _config_problem(config)
    if problem:
        raise InvalidRequest(f"{CONFIG_FILE} is not a usable LoRA configuration: {problem}.",
                             code="invalid_adapter_config")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        if pickled:
            raise InvalidRequest(f"Pickled weights ({', '.join(pickled)}) are refused: they can run code when "
                                 f"loaded. Convert the adapter to {WEIGHTS_FILE} (safetensors).",
                                 code="pickled_weights", files=pickled)
        raise InvalidRequest(f"{WEIGHTS_FILE} is missing.", code="missing_weights")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say so
        raise InvalidRequest(f"{WEIGHTS_FILE} is not a readable safetensors file: {exc}",
                             code="invalid_weights") from None
    if not shapes:
        raise InvalidRequest(f"{WEIGHTS_FILE} holds no tensors.", code="invalid_weights")
    return AdapterFiles(folder, config, shapes, tuple(sorted(set(raw) - set(config))))


def known_lora_keys(config: dict) -> dict:
    """Only the fields PEFT's LoraConfig declares (padding or foreign keys are dropped before anything is stored)."""
    from peft import LoraConfig

    known = {f.name for f in dataclasses.fields(LoraConfig)}
    return {k: v for k, v in config.items() if k in known}


def _number(value, *, integer: bool = False) -> bool:
    kinds = int if integer else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool)


def _config_problem(config: dict) -> str | None:
    """What would make PEFT fail (or misbehave) when loading this config, checked without PEFT's help: its
    config classes accept r="four" or lora_alpha=None and only fail deep inside load_adapter."""
    r = config.get("r", 8)
    if not _number(r, integer=True) or r < 1:
        return f"r must be a positive integer, not {r!r}"
    alpha = config.get("lora_alpha", 8)
    if not _number(alpha):
        return f"lora_alpha must be a number, not {alpha!r}"
    dropout = config.get("lora_dropout", 0.0)
    if not _number(dropout) or not 0 <= dropout < 1:
        return f"lora_dropout must be a number in [0, 1), not {dropout!r}"
    targets = config.get("target_modules")
    named = (isinstance(targets, str) and targets.strip()) or (
        isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets))
    if not named:
        return f"target_modules must name the layers the adapter changes, not {targets!r}"
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key) or {}
        integer = key == "rank_pattern"
        if not isinstance(pattern, dict) or not all(_number(v, integer=integer) for v in pattern.values()):
            return f"{key} must map module names to numbers"
    if isinstance(targets, str) and (config.get("layers_to_transform") is not None or config.get("layers_pattern")):
        return "layers_to_transform / layers_pattern cannot be used when target_modules is a regex string"
    return None


def _missing_parts(shapes: dict[str, tuple[int, ...]], dora: bool) -> list[str]:
    """Modules with half an adapter: lora_A without lora_B (or the reverse), or DoRA without its magnitudes."""
    parts: dict[str, set[str]] = {}
    for key in shapes:
        match = _SUFFIX.match(key.removeprefix(KEY_PREFIX))
        if match:
            parts.setdefault(match["module"], set()).add(match["part"])
    missing = []
    for module, found in sorted(parts.items()):
        pairs = [("lora_A.weight", "lora_B.weight"), ("lora_embedding_A", "lora_embedding_B")]
        for one, other in pairs:
            if (one in found) != (other in found):
                missing.append(f"{module} has {one if one in found else other} but no "
                               f"{other if one in found else one}")
        if dora and "lora_A.weight" in found and "lora_magnitude_vector" not in found:
            missing.append(f"{module} has no lora_magnitude_vector (use_dora is set)")
    return missing


def structure_problems(model: nn.Module, files: AdapterFiles, limit: int = 5) -> tuple[list[str], list[str]]:
    """(unmapped keys, shape mismatches) of the adapter against `model` (real or on the meta device)."""
    modules = dict(model.named_modules())
    unmapped: list[str] = []
    mismatched: list[str] = []
    for key, shape in sorted(files.shapes.items()):
        match = _SUFFIX.match(key.removeprefix(KEY_PREFIX))
        if not match:
            unmapped.append(key)
            continue
        module = modules.get(match["module"])
        module = getattr(module, "base_layer", module)  # a layer PEFT already wrapped for another adapter
        part = match["part"]
        checks = (_LINEAR if isinstance(module, nn.Linear) else
                  _EMBEDDING if isinstance(module, nn.Embedding) else None)
        if module is None or checks is None or part not in checks:
            unmapped.append(key)
            continue
        for dim, attr in checks[part]:
            expected = getattr(module, attr)
            if len(shape) <= dim or shape[dim] != expected:
                mismatched.append(f"{match['module']}.{part}: shape {list(shape)} but the module has "
                                  f"{attr}={expected}")
    return _clip(unmapped, limit), _clip(mismatched, limit)


def _clip(items: list[str], limit: int) -> list[str]:
    return items[:limit] + ([f"... and {len(items) - limit} more"] if len(items) > limit else [])


def check_structure(model: nn.Module, files: AdapterFiles, base_name: str) -> None:
    """Raise InvalidRequest unless every tensor maps onto a module of `model` with matching in/out features and
    every adapted module has all its parts."""
    unmapped, mismatched = structure_problems(model, files)
    if unmapped:
        raise InvalidRequest(f"The adapter has tensors for modules {base_name} does not have: "
                             f"{'; '.join(unmapped)}.", code="unmapped_keys", keys=unmapped)
    if mismatched:
        raise InvalidRequest(f"The adapter's shapes do not fit {base_name}: {'; '.join(mismatched)}.",
                             code="shape_mismatch", mismatches=mismatched)
    missing = _missing_parts(files.shapes, bool(files.config.get("use_dora")))
    if missing:  # PEFT would fill them in silently (zeros, random or weight norms): not what was trained
        raise InvalidRequest(f"{WEIGHTS_FILE} is incomplete: {'; '.join(missing[:5])}"
                             f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}.",
                             code="incomplete_weights", missing=missing[:5])

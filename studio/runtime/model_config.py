"""What a MusicGen checkpoint can do, read from its config.json alone (no weights loaded): for custom models.

The figures follow registry.yaml's rules for the official checkpoints (see its header): parameters counted on the
model built from the config on the meta device (shapes without memory), download size from the weight files,
memory = float32 weights + a guided 30 s window's key/value cache + 1 GB.
"""
from __future__ import annotations

import math
from typing import Any

from studio.errors import InvalidRequest
from studio.registry import ARCHITECTURES, MELODY_ARCHITECTURE

GB = 1e9
DEFAULT_WINDOW_S = 30.0  # what MusicGen was trained on
EXTENDED_S = 180.0  # the official models' extended limit (registry.yaml)
STRIDE_S = 18.0
# Bounds that keep a hostile config from making the meta-device build slow (it allocates nothing, but builds every
# module): the largest official model has 48 layers of 2048.
MAX_LAYERS, MAX_HIDDEN, MAX_CODEBOOKS = 128, 16384, 16


def _unsupported(message: str, **extra: Any) -> InvalidRequest:
    return InvalidRequest(message, code="unsupported_config", **extra)


def architecture_of(config: dict) -> str:
    """The transformers class a config.json names (its `architectures`, else its model_type), if the studio runs it;
    InvalidRequest 'unsupported_architecture' otherwise."""
    named = config.get("architectures") or []
    model_type = config.get("model_type")
    if isinstance(named, list) and named:
        arch = named[0]
        if arch in ARCHITECTURES.values() and len(named) == 1:
            return arch
    elif model_type in ARCHITECTURES:
        return ARCHITECTURES[model_type]
    else:
        arch = model_type
    runs = " or ".join(ARCHITECTURES.values())
    raise InvalidRequest(f"This checkpoint is a {arch or 'model of no known architecture'}: the studio runs "
                         f"{runs} (MusicGen) checkpoints only.", code="unsupported_architecture",
                         architecture=str(arch) if arch else None)


def _int(section: dict, key: str, default: int | None = None, *, low: int = 1, high: int = 10**9) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _unsupported(f"config.json: {key} is {value!r}, expected a whole number from {low} to {high}.",
                           field=key)
    return value


def describe(config: dict, weights_bytes: int) -> dict[str, Any]:
    """The ModelSpec fields a MusicGen config.json gives (architecture, channels, codebooks, conditioning, rates,
    parameters, limits, memory, download size); InvalidRequest naming what the studio cannot run."""
    if not isinstance(config, dict):
        raise InvalidRequest("config.json is not a JSON object.", code="invalid_config")
    arch = architecture_of(config)
    decoder, audio = config.get("decoder"), config.get("audio_encoder")
    if not isinstance(decoder, dict) or not isinstance(audio, dict) or not isinstance(config.get("text_encoder"), dict):
        raise _unsupported("config.json lacks the decoder, audio_encoder or text_encoder section of a MusicGen "
                           "config.")
    channels = _int(decoder, "audio_channels", 1, high=2)
    codebooks = _int(decoder, "num_codebooks", high=MAX_CODEBOOKS)
    if codebooks % channels:
        raise _unsupported(f"config.json: {codebooks} codebooks cannot be split between {channels} channels.",
                           field="num_codebooks")
    layers = _int(decoder, "num_hidden_layers", high=MAX_LAYERS)
    hidden = _int(decoder, "hidden_size", high=MAX_HIDDEN)
    positions = _int(decoder, "max_position_embeddings", 2048, high=10**6)
    sample_rate = _int(audio, "sampling_rate", high=192_000)
    ratios = audio.get("upsampling_ratios") or [8, 5, 4, 2]
    if not isinstance(ratios, list) or not all(isinstance(r, int) and r > 0 for r in ratios):
        raise _unsupported("config.json: audio_encoder.upsampling_ratios is not a list of positive numbers.",
                           field="upsampling_ratios")
    frame_rate = math.ceil(sample_rate / math.prod(ratios))  # what EncodecConfig.frame_rate computes
    parameters = count_parameters(config, arch)
    # one window: what the positions allow (the delay pattern takes codebooks-1 of them), at most 30 s
    window = min(DEFAULT_WINDOW_S, math.floor((positions - codebooks) / frame_rate))
    if window < 1:
        raise _unsupported(f"config.json: {positions} positions at {frame_rate} frames per second leave less than a "
                           "second per window.", field="max_position_embeddings")
    steps = window * frame_rate + codebooks // channels - 1
    kv_bytes = 4 * layers * hidden * steps * 4  # keys + values, guided (x2), float32
    weights_fp32 = parameters * 4
    return {
        "architecture": arch,
        "channels": channels,
        "codebooks": codebooks,
        "conditioning": ["text", "melody"] if arch == MELODY_ARCHITECTURE else ["text"],
        "sample_rate": sample_rate,
        "frame_rate": frame_rate,
        "parameters": parameters,
        "max_duration_s": float(window),
        "max_extended_duration_s": EXTENDED_S if window > STRIDE_S else None,
        "window_stride_s": STRIDE_S if window > STRIDE_S else None,
        "memory_gb": round(max((weights_fp32 + kv_bytes) / GB + 1.0, 0.1), 1),
        "download_gb": round(weights_bytes / GB, 4),  # MB precision: added tiny models say "4 MB", not "0 MB"
    }


def count_parameters(config: dict, arch: str) -> int:
    """Parameters of the model this config builds, counted on the meta device (no memory, no weights)."""
    import torch
    import transformers

    from studio.runtime.hf_logging import quiet_musicgen_token_layout

    quiet_musicgen_token_layout()
    cls = getattr(transformers, arch)
    try:
        cfg = cls.config_class.from_dict(config)
        with torch.device("meta"):
            model = cls(cfg)
    except Exception as exc:  # noqa: BLE001 - any inconsistency of a config a person brought
        raise _unsupported(f"config.json does not build a {arch}: {str(exc).splitlines()[0][:200]}") from None
    return sum(p.numel() for p in model.parameters())

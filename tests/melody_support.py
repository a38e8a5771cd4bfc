"""studio-tiny-melody for tests: its registry entry and the model built once per process (like adapters_factory),
and synthetic melodies."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

from studio.runtime.tiny import TINY_SEED, build_tiny_melody_model
from tests.conftest import TINY

TINY_MELODY = {**TINY, "id": "studio-tiny-melody", "display_name": "Studio Tiny Melody",
               "source": {"builtin": "studio-tiny-melody"}, "parameters": 732894, "conditioning": ["text", "melody"]}

_cache: dict[str, Path] = {}


def melody_folder(hidden_size: int = 32, channels: int = 1) -> Path:
    """studio-tiny-melody (hidden_size 32), or a variant of another width (48: the text states are projected) or
    a stereo one (channels 2: 8 codebooks), built once per process in a temp directory."""
    key = f"h{hidden_size}c{channels}"
    if key not in _cache:
        scratch = _cache.get("scratch")
        if scratch is None:
            scratch = _cache["scratch"] = Path(tempfile.mkdtemp(prefix="tiny-melody-"))
            atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        _cache[key] = build_tiny_melody_model(scratch / key, hidden_size=hidden_size, 
                                               seed=TINY_SEED if hidden_size == 32 else TINY_SEED + hidden_size,
                                               channels=channels)
    return _cache[key]


def tune(freqs: list[float], each_s: float = 0.5, rate: int = 32000, amp: float = 0.5) -> np.ndarray:
    """A melody of pure tones, float32 (samples,)."""
    t = np.arange(int(each_s * rate)) / rate
    return np.concatenate([amp * np.sin(2 * np.pi * f * t) for f in freqs]).astype(np.float32)


def write_tune(path: Path, freqs: list[float], each_s: float = 0.5, rate: int = 44100, channels: int = 1) -> Path:
    import soundfile as sf

    audio = tune(freqs, each_s, rate)
    sf.write(str(path), np.repeat(audio[:, None], channels, axis=1), rate)
    return path


def melody_ctx(make, **overrides):
    """A studio (from a make_ctx / make_module_ctx factory) whose registry has studio-tiny-melody, built once per
    process and copied in (a switch would build it again otherwise)."""
    from studio.registry import parse_registry
    from tests.conftest import registry_dict

    ctx = make(parse_registry(registry_dict(**{"studio-tiny-melody": TINY_MELODY})), **overrides)
    target = ctx.settings.data_dir / "models" / "studio-tiny-melody"
    if not target.exists():
        shutil.copytree(melody_folder(), target)
    return ctx


def upload(ctx, path: Path) -> str:
    """Keep a file as an audio upload, the page's way (incoming + save); its id."""
    with ctx.uploads.incoming() as staged:
        staged.write_bytes(path.read_bytes())
        return ctx.uploads.save(staged, path.name).id

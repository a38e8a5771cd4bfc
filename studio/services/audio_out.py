"""What happens to generated audio before it is saved: mix-down, loudness normalisation, the file format."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf

from studio.errors import OperationFailed
from studio.gen_settings import MusicgenSettings

PEAK_CEILING = 10 ** (-1.0 / 20)  # -1 dBFS: normalised audio never clips, even after lossy encoding
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block: shorter clips have no defined loudness
# format -> (soundfile format, subtype, media type)
FORMATS = {"wav": ("WAV", "PCM_16", "audio/wav"), "flac": ("FLAC", "PCM_16", "audio/flac"),
           "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg")}


def media_type(path: Path) -> str:
    return FORMATS.get(path.suffix.lstrip(".").lower(), ("", "", "application/octet-stream"))[2]


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float) -> np.ndarray:
    """Scale (samples, channels) audio to the target integrated loudness, peaks kept under -1 dBFS. Silence and
    clips shorter than one gating block are returned unchanged (their loudness is undefined)."""
    if len(audio) < LOUDNESS_BLOCK_S * sample_rate:
        return audio
    import pyloudnorm  # imported on first use: it brings scipy, which start-up does not need

    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(audio.astype(np.float64))
    if not np.isfinite(loudness):
        return audio
    out = audio * (10 ** ((target_lufs - loudness) / 20))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > PEAK_CEILING:
        out = out * (PEAK_CEILING / peak)
    return out.astype(np.float32)


def finish_audio(audio: np.ndarray, sample_rate: int, settings: MusicgenSettings) -> np.ndarray:
    """Apply the output settings to (samples, channels) float audio."""
    if getattr(settings, "downmix_to_mono", False) and audio.ndim == 2 and audio.shape[1] > 1:
        audio = audio.mean(axis=1, keepdims=True)
    if settings.normalize_loudness:
        audio = normalize_loudness(audio, sample_rate, settings.target_lufs)
    return audio


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Write atomically (a reader never sees half a file); `path` gets the format's extension."""
    sf_format, subtype, _ = FORMATS[fmt]
    path = path.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype, format=sf_format)
        os.replace(tmp, path)
    except (OSError, sf.LibsndfileError) as exc:
        tmp.unlink(missing_ok=True)
        raise OperationFailed(f"Could not write the audio file: {getattr(exc, 'strerror', None) or exc}",
                              code="disk_error") from None
    return path

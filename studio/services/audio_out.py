"""What happens to generated audio before it is saved: mix-down, loudness normalisation with a true-peak limiter,
the file format, and what the written file measures (loudness reached, true peak)."""
from __future__ import annotations

import io
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from studio.errors import OperationFailed
from studio.gen_settings import MusicgenSettings
from studio.storage import storage_writes

CEILING_DBTP = -1.0  # normalised audio keeps its true peak (between samples too) under -1 dBTP, as promised
PEAK_CEILING = 10 ** (CEILING_DBTP / 20)
# Lossy encoders overshoot the input's peaks (measured: -1 dBTP in, -0.29 dBFS out of libsndfile's LAME): MP3 is
# limited lower, and the decoded file is checked (and written again quieter if it still overshoots).
ENCODER_HEADROOM_DB = {"wav": 0.05, "flac": 0.05, "mp3": 1.0}
MAX_LIMITING_DB = 12.0  # more gain reduction than this pumps audibly: the target is then not reached (and reported)
LOOKAHEAD_S = 0.005  # the gain comes down over this time before a peak ...
RELEASE_DB_PER_S = 60.0  # ... and back up at this rate after it
DC_CUTOFF_HZ = 5  # below hearing: removed before normalising
OVERSAMPLE = 4  # true peak per ITU-R BS.1770-4 annex 2: 4x oversampling
TARGET_TOLERANCE_LU = 0.5  # reached when within this of the target
LOUDNESS_BLOCK_S = 0.4  # BS.1770 gating block: shorter clips have no defined loudness
# format -> (soundfile format, subtype, media type)
FORMATS = {"wav": ("WAV", "PCM_16", "audio/wav"), "flac": ("FLAC", "PCM_16", "audio/flac"),
           "mp3": ("MP3", "MPEG_LAYER_III", "audio/mpeg")}


def media_type(path: Path) -> str:
    return FORMATS.get(path.suffix.lstrip(".").lower(), ("", "", "application/octet-stream"))[2]


def download_name(prompt: str, job_id: int, fmt: str) -> str:
    """'lofi-hip-hop-beat_job12.flac': a file name a person recognises, safe on every file system."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")[:40].rstrip("-") or "music"
    return f"{slug}_job{job_id}.{fmt}"


def _db(x: float) -> float:
    return 20 * math.log10(x) if x > 0 else -math.inf


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    """BS.1770 integrated loudness in LUFS of (samples, channels) audio; None when undefined (silence, or
    shorter than one gating block)."""
    if len(audio) < LOUDNESS_BLOCK_S * sample_rate:
        return None
    import pyloudnorm  # imported on first use: it brings scipy, which start-up does not need

    loudness = pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(audio, dtype=np.float64))
    return float(loudness) if np.isfinite(loudness) else None


def sample_true_peaks(audio: np.ndarray) -> np.ndarray:
    """Per sample, the largest absolute value of the 4x oversampled signal around it (all channels)."""
    from scipy.signal import resample_poly

    if audio.ndim == 1:
        audio = audio[:, None]
    n = len(audio)
    up = np.abs(resample_poly(np.asarray(audio, dtype=np.float64), OVERSAMPLE, 1, axis=0)).max(axis=1)
    return np.maximum(up[: n * OVERSAMPLE].reshape(n, OVERSAMPLE).max(axis=1), np.abs(audio).max(axis=1))


def true_peak_dbtp(audio: np.ndarray) -> float:
    return _db(float(sample_true_peaks(audio).max())) if len(audio) else -math.inf


def remove_dc(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """High-pass at DC_CUTOFF_HZ, zero phase: an offset is silent but takes headroom (the tiny model's output sits
    at +0.55), and would make the limiter flatten the music to keep an inaudible offset under the ceiling."""
    from scipy.signal import butter, sosfiltfilt

    if len(audio) < 3 * sample_rate // DC_CUTOFF_HZ:
        return audio - audio.mean(axis=0)
    return sosfiltfilt(butter(2, DC_CUTOFF_HZ, btype="highpass", fs=sample_rate, output="sos"), audio, axis=0)


def limit_true_peak(audio: np.ndarray, sample_rate: int, ceiling_dbtp: float) -> np.ndarray:
    """Lower the gain smoothly around peaks so the true peak stays under the ceiling: a lookahead limiter working
    on 1 ms blocks (the gain starts falling LOOKAHEAD_S before a peak and rises again at RELEASE_DB_PER_S)."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    n = len(audio)
    block = max(1, sample_rate // 1000)
    blocks = -(-n // block)
    peaks = np.zeros(blocks * block)
    peaks[:n] = sample_true_peaks(audio)
    with np.errstate(divide="ignore"):
        need = np.minimum(0.0, ceiling_dbtp - 20 * np.log10(peaks.reshape(blocks, block).max(axis=1)))
    look = max(1, round(LOOKAHEAD_S * 1000))
    # Each block's gain is at most what every block within look+1 of it needs; averaging over +-look blocks then
    # keeps it so (smooth attack), and so do the interpolated gains between block centres.
    floor = minimum_filter1d(need, size=2 * look + 3, mode="nearest")
    release = RELEASE_DB_PER_S / 1000
    gain = np.empty_like(floor)
    level = 0.0
    for i, lowest in enumerate(floor):  # 1 ms blocks: 30,000 steps for 30 s
        level = min(lowest, level + release)
        gain[i] = level
    gain = uniform_filter1d(gain, size=2 * look + 1, mode="nearest")
    centres = (np.arange(blocks) + 0.5) * block
    per_sample = 10 ** (np.interp(np.arange(n), centres, gain) / 20)
    out = audio * (per_sample[:, None] if audio.ndim == 2 else per_sample)
    overshoot = true_peak_dbtp(out) - ceiling_dbtp  # oversampling edge effects of the changed gain: a last trim
    if overshoot > 0:
        out = out * 10 ** (-overshoot / 20)
    return out


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float,
                       ceiling_dbtp: float = CEILING_DBTP) -> np.ndarray:
    """Scale (samples, channels) audio to the target integrated loudness with the true peak under the ceiling
    (limited where the gain would push peaks over it). When reaching the target would need more than
    MAX_LIMITING_DB of limiting, the result stays quieter than the target (measure_file reports what was reached).
    Silence and clips shorter than one gating block are returned unchanged (their loudness is undefined)."""
    loudness = integrated_loudness(audio, sample_rate)  # K-weighting ignores DC: measured before or after alike
    if loudness is None:
        return audio
    source = remove_dc(np.asarray(audio, dtype=np.float64), sample_rate)
    max_gain = ceiling_dbtp + MAX_LIMITING_DB - true_peak_dbtp(source)
    gain_db = min(target_lufs - loudness, max_gain)
    out = source
    for _ in range(4):  # limiting takes some loudness away: make it up (converges in 2-3 rounds)
        out = limit_true_peak(source * 10 ** (gain_db / 20), sample_rate, ceiling_dbtp)
        reached = integrated_loudness(out, sample_rate)
        if reached is None or abs(reached - target_lufs) < 0.05 or gain_db >= max_gain and reached < target_lufs:
            break
        gain_db = min(gain_db + target_lufs - reached, max_gain)
    return out.astype(np.float32)


def finish_audio(audio: np.ndarray, sample_rate: int, settings: MusicgenSettings) -> np.ndarray:
    """Apply the output settings to (samples, channels) float audio."""
    if getattr(settings, "downmix_to_mono", False) and audio.ndim == 2 and audio.shape[1] > 1:
        audio = audio.mean(axis=1, keepdims=True)
    if settings.normalize_loudness:
        ceiling = CEILING_DBTP - ENCODER_HEADROOM_DB[settings.output_format]
        audio = normalize_loudness(audio, sample_rate, settings.target_lufs, ceiling)
    return audio


@dataclass(frozen=True)
class Measured:
    """What a written file measures once decoded: what a listener gets, encoder included."""

    loudness_lufs: float | None  # None: undefined (silence, under 0.4 s)
    true_peak_dbtp: float | None  # None: silence


def measure_file(path: Path) -> Measured:
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    peak = true_peak_dbtp(data) if len(data) else -math.inf
    return Measured(integrated_loudness(data, rate), round(peak, 2) if math.isfinite(peak) else None)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, fmt: str) -> Path:
    """Write atomically (a reader never sees half a file); `path` gets the format's extension. Encoded in memory
    first: libsndfile reports a failed write of its own file as "System error", Python's file gives the errno, so a
    full or read-only disk is said as such (studio.storage)."""
    sf_format, subtype, _ = FORMATS[fmt]
    path = path.with_suffix(f".{fmt}")
    buffer = io.BytesIO()
    try:
        sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, subtype=subtype, format=sf_format)
    except sf.LibsndfileError as exc:
        raise OperationFailed(f"Could not encode the audio as {fmt}: {exc}", code="encode_failed") from None
    tmp = path.with_name(path.name + ".part")
    try:
        with storage_writes(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.write_bytes(buffer.getbuffer())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)  # no half-written file stays behind
    except OSError as exc:  # not a refusal of the machine (those are mapped above): still never a bare 500
        raise OperationFailed(f"Could not write the audio file: {exc.strerror or exc}", code="disk_error") from None
    return path


def write_measured(path: Path, audio: np.ndarray, sample_rate: int, settings: MusicgenSettings
                   ) -> tuple[Path, Measured]:
    """Write the audio and measure the decoded file. With loudness normalisation on, a lossy file whose decoded
    true peak still overshoots the ceiling is written again, quieter by the overshoot (at most twice)."""
    fmt = settings.output_format
    for _ in range(3):
        written = write_audio(path, audio, sample_rate, fmt)
        measured = measure_file(written)
        over = (measured.true_peak_dbtp or -math.inf) - CEILING_DBTP
        if not settings.normalize_loudness or over <= 0:
            break
        audio = audio * 10 ** (-(over + 0.1) / 20)
    return written, Measured(None if measured.loudness_lufs is None else round(measured.loudness_lufs, 2),
                             measured.true_peak_dbtp)

"""Loudness normalisation with a true-peak limiter, measured the way a listener gets it: the written file, decoded
(soundfile) and metered (pyloudnorm, 4x oversampled true peak). wav, flac and mp3 x quiet and loud inputs."""
from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import butter, resample_poly, sosfilt

from studio.gen_settings import settings_class
from studio.services.audio_out import finish_audio, remove_dc, write_measured

SR = 32000


def _music(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Something like music: a chord, band-limited noise, and drum hits every half second (peaky: the hits make
    reaching -14 LUFS need a limiter, as the tiny model's output did)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    noise = sosfilt(butter(4, 4000, fs=SR, output="sos"), rng.standard_normal(len(t)))
    hits = np.zeros(len(t))
    for start in range(0, len(t), SR // 2):
        n = min(800, len(t) - start)
        hits[start:start + n] = 1.2 * np.exp(-np.arange(n) / 120) * np.sin(2 * np.pi * 90 * np.arange(n) / SR)
    x = 0.3 * chord + 0.1 * noise + hits
    return (level * x / np.abs(x).max())[:, None].astype(np.float32)


def _lufs(data: np.ndarray) -> float:
    return pyloudnorm.Meter(SR).integrated_loudness(data)


def _true_peak_db(data: np.ndarray) -> float:
    return 20 * np.log10(np.abs(resample_poly(data, 4, 1, axis=0)).max())


# quiet: -51 LUFS; loud: a hot master clipped at full scale (about -8 LUFS, true peak over 0 dBTP)
INPUTS = {"quiet": _music(4.0, 0.02), "loud": np.clip(_music(4.0, 3.0), -1.0, 1.0)}


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3"])
@pytest.mark.parametrize("kind", sorted(INPUTS))
@pytest.mark.parametrize("target", [-14.0, -23.0])
def test_normalised_file_meets_the_target_with_true_peaks_under_minus_one(tmp_path, fmt, kind, target):
    audio = INPUTS[kind]
    settings = settings_class("transformers", 1, 30.0)(normalize_loudness=True, target_lufs=target,
                                                       output_format=fmt)
    assert abs(_lufs(audio.astype(np.float64)) - target) > 5  # far from the target before
    path, measured = write_measured(tmp_path / "out", finish_audio(audio, SR, settings), SR, settings)
    data, rate = sf.read(path, dtype="float64", always_2d=True)
    assert rate == SR and path.suffix == f".{fmt}"
    reached, peak = _lufs(data), _true_peak_db(data)
    assert abs(reached - target) < 0.5, reached  # the target is met, peak ceiling or not
    assert peak < -1.0, peak  # true peak of the decoded file: the MP3 encoder's overshoot included
    assert 20 * np.log10(np.abs(data).max()) < -1.0
    # what is reported is what the file measures
    assert measured.loudness_lufs == pytest.approx(reached, abs=0.05)
    assert measured.true_peak_dbtp == pytest.approx(peak, abs=0.1)


def test_a_target_out_of_reach_is_measured_and_left_quieter(tmp_path):
    """Clicks 30 dB above a soft pad: reaching -14 LUFS would need far more than the limiter's 12 dB; the file
    stays quieter (and says so), its peaks still under -1 dBTP."""
    t = np.arange(4 * SR) / SR
    clicks = 0.01 * np.sin(2 * np.pi * 220 * t)
    clicks[:: SR // 4] += 0.5
    settings = settings_class("transformers", 1, 30.0)(normalize_loudness=True, target_lufs=-14.0)
    path, measured = write_measured(tmp_path / "out", finish_audio(clicks[:, None], SR, settings), SR, settings)
    data, _ = sf.read(path, dtype="float64", always_2d=True)
    assert measured.loudness_lufs < -14.0 - 3 and _true_peak_db(data) < -1.0
    assert measured.loudness_lufs == pytest.approx(_lufs(data), abs=0.05)


def test_the_limiter_bends_the_gain_smoothly(tmp_path):
    """No clicks of its own: the gain changes by at most a fraction of a dB from one sample to the next."""
    audio = INPUTS["quiet"]
    settings = settings_class("transformers", 1, 30.0)(normalize_loudness=True, target_lufs=-14.0)
    out = finish_audio(audio, SR, settings)
    audio = remove_dc(audio.astype(np.float64), SR)  # the limiter's input: DC removed first
    chord = np.abs(audio[:, 0]) > 1e-4
    gain_db = 20 * np.log10(np.abs(out[chord, 0]) / np.abs(audio[chord, 0]))
    assert np.abs(np.diff(gain_db)).max() < 0.1


def test_an_offset_does_not_cost_loudness(tmp_path):
    """The tiny model's output sits on a +0.55 offset: it is removed (inaudible), not limited into the music."""
    audio = INPUTS["quiet"] * 10 + 0.55
    settings = settings_class("transformers", 1, 30.0)(normalize_loudness=True, target_lufs=-14.0)
    path, measured = write_measured(tmp_path / "out", finish_audio(audio, SR, settings), SR, settings)
    data, _ = sf.read(path, dtype="float64", always_2d=True)
    assert abs(_lufs(data) - (-14.0)) < 0.5 and _true_peak_db(data) < -1.0
    assert abs(data.mean()) < 0.01


def test_without_normalisation_the_file_is_measured_as_written(tmp_path):
    audio = INPUTS["loud"] * 0.5
    settings = settings_class("transformers", 1, 30.0)(output_format="flac")
    path, measured = write_measured(tmp_path / "out", finish_audio(audio, SR, settings), SR, settings)
    data, _ = sf.read(path, dtype="float64", always_2d=True)
    assert np.allclose(data, audio, atol=1 / 2**15)  # untouched
    assert measured.loudness_lufs == pytest.approx(_lufs(data), abs=0.05)

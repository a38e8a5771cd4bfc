"""The studio's chromagram (studio/runtime/chroma.py) equals transformers' MusicgenMelodyFeatureExtractor.

The extractor cannot be built without torchaudio (its Spectrogram transform; no CPU build on the index), so the
reference here is transformers' own extractor code (padding, truncation, stereo to mono, filter bank, normalisation,
one-hot: its __call__ and _torch_extract_fbank_features) with only the spectrogram supplied by transformers' numpy
`audio_utils.spectrogram` in float64, written from torchaudio's definition (periodic Hann window, reflect padding,
power 2, "window" normalisation). Where torchaudio imports, the real extractor is compared too."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.runtime.chroma import ChromaSettings, chroma_filters, chromagram

SR = 32000
NOTES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]


class _NumpySpectrogram:
    """torchaudio.transforms.Spectrogram(n_fft, win_length=n_fft, hop, power=2, center=True, normalized=True)."""

    def __init__(self, n_fft: int, hop: int):
        self.n_fft, self.hop = n_fft, hop

    def __call__(self, wave: torch.Tensor) -> torch.Tensor:
        from transformers.audio_utils import spectrogram, window_function

        w = window_function(self.n_fft, "hann", periodic=True)
        rows = [spectrogram(x.numpy().astype(np.float64), w, frame_length=self.n_fft, hop_length=self.hop,
                            fft_length=self.n_fft, power=2.0, center=True, pad_mode="reflect", dtype=np.float64)
                / np.sum(w ** 2) for x in wave.reshape(-1, wave.shape[-1])]
        return torch.from_numpy(np.stack(rows)).float().reshape(*wave.shape[:-1], *rows[0].shape)


def _reference(settings: ChromaSettings = ChromaSettings()):
    import transformers.models.musicgen_melody.feature_extraction_musicgen_melody as fx
    from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor

    fe = object.__new__(fx.MusicgenMelodyFeatureExtractor)  # its __init__ builds torchaudio's transform
    SequenceFeatureExtractor.__init__(fe, feature_size=settings.num_chroma, sampling_rate=settings.sample_rate,
                                      padding_value=0.0, return_attention_mask=False)
    fe.n_fft, fe.hop_length, fe.chunk_length = settings.n_fft, settings.hop_length, settings.chunk_length_s
    fe.n_samples = settings.chunk_length_s * settings.sample_rate
    fe.chroma_filters = chroma_filters(settings)  # transformers' chroma_filter_bank, as its __init__ calls it
    fe.spectrogram = _NumpySpectrogram(settings.n_fft, settings.hop_length)
    fe.stem_indices = [3, 2]
    return lambda audio: fe(audio, sampling_rate=settings.sample_rate, return_tensors="np")["input_features"][0]


def _tone(freq: float, seconds: float, amp: float = 0.5, rate: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _melody(notes_hz: list[float], each_s: float) -> np.ndarray:
    return np.concatenate([_tone(f, each_s) for f in notes_hz])


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    c4 = 261.6256
    scale = [c4 * 2 ** (k / 12) for k in range(12)]
    return {
        "scale": _melody(scale, 0.5),
        "octaves": _melody([55.0 * 2 ** o for o in range(6)], 0.4),  # A1 .. A6
        "chord_with_loud_root": _tone(196.0, 2) + _tone(246.94, 2, 0.2) + _tone(293.66, 2, 0.2),
        "detuned": _melody([440 * 2 ** (0.3 / 12), 440 * 2 ** (-0.3 / 12)], 1.0),
        "short_below_fft": _tone(329.63, 0.2),  # shorter than n_fft: centred zero padding
        "quiet": _tone(523.25, 2.0, amp=1e-3),
        "tone_in_noise": _tone(349.23, 2.0) + 0.05 * rng.standard_normal(2 * SR).astype(np.float32),
        "silence": np.zeros(SR, dtype=np.float32),  # all-zero frames: the first bin, as the extractor's argmax
        "longer_than_chunk": _melody([110.0, 146.83], 16.0),  # 32 s: cut to 30
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_equals_transformers_extractor(name):
    audio = _signals()[name]
    ref = _reference()(audio)
    ours = chromagram(audio)
    assert ours.shape == ref.shape == (ChromaSettings().frames(len(audio)), 12)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)


def test_stereo_is_averaged_like_the_extractor():
    left, right = _tone(440.0, 2.0, 0.6), _tone(261.63, 2.0, 0.2)
    stereo = np.stack([left, right], axis=1)
    # the extractor takes a batch of stereo clips as (channels, samples) tensors and averages the channels
    import transformers.models.musicgen_melody.feature_extraction_musicgen_melody  # noqa: F401
    ref = _reference()([torch.from_numpy(stereo.T.copy())])
    np.testing.assert_array_equal(chromagram(stereo), ref)


@pytest.mark.parametrize("semitone", range(12))
def test_a_tone_lights_its_pitch_class_in_every_octave(semitone):
    for octave in (2, 3, 4, 5):
        freq = 261.6256 * 2 ** (octave - 4 + semitone / 12)
        chroma = chromagram(_tone(freq, 1.0))
        assert (chroma.argmax(1) == semitone).all(), (NOTES[semitone], octave)
        assert (chroma.sum(1) == 1).all()


def test_other_settings_follow_the_extractor():
    settings = ChromaSettings(sample_rate=16000, n_fft=4096, hop_length=1024, chunk_length_s=5)
    audio = _melody([220.0, 277.18, 329.63], 2.0)[: 6 * 16000]
    np.testing.assert_array_equal(chromagram(audio, settings), _reference(settings)(audio))


def test_settings_from_a_model_folder(tmp_path):
    import json

    assert ChromaSettings.from_folder(tmp_path) == ChromaSettings()
    custom = ChromaSettings(n_fft=8192, hop_length=2048)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(custom.preprocessor_config()))
    assert ChromaSettings.from_folder(tmp_path) == custom


def test_torchaudio_extractor_directly_where_it_imports():
    pytest.importorskip("torchaudio")
    from transformers import MusicgenMelodyFeatureExtractor

    fe = MusicgenMelodyFeatureExtractor()
    for name, audio in _signals().items():
        ref = fe(audio, sampling_rate=SR, return_tensors="np")["input_features"][0]
        np.testing.assert_array_equal(chromagram(audio), ref, err_msg=name)

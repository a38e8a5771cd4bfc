"""The chromagram MusicGen Melody follows, computed without torchaudio.

transformers' MusicgenMelodyFeatureExtractor needs torchaudio (its Spectrogram transform), and torchaudio has no CPU
build for our torch on the package index. This module computes the same features from the same pieces:
torchaudio's `Spectrogram(n_fft, win_length=n_fft, hop_length, power=2, center=True, normalized=True)` is
`torch.stft` with a periodic Hann window, reflect padding, no frame-length normalisation, then divided by the
window's L2 norm (torchaudio's "window" normalisation) and squared in magnitude; the chroma filter bank is
transformers' own `audio_utils.chroma_filter_bank` (librosa's, tuning 0, starting at C). Then, as the extractor:
filters x power spectrum, normalised by the largest bin of each frame (eps 1e-6), and replaced by a one-hot of that
largest bin (ties: the first).

What the extractor does before the spectrogram is kept too: stereo is averaged to mono, a clip is cut to
`chunk_length` seconds, and a clip shorter than n_fft is zero-padded on both sides to n_fft. (The extractor can also
take Demucs stems to drop drums and bass first; the studio has no Demucs: the chroma of the whole mix is used.)

Equality with the extractor's algorithm on synthetic tones is tested in tests/runtime/test_chroma.py (and directly
against transformers' class where torchaudio imports).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class ChromaSettings:
    """MusicgenMelodyFeatureExtractor's parameters (its defaults are what every official melody checkpoint ships)."""
    sample_rate: int = 32000
    n_fft: int = 16384
    hop_length: int = 4096
    num_chroma: int = 12
    chunk_length_s: int = 30  # longer clips are cut to this

    @classmethod
    def from_folder(cls, folder: Path) -> "ChromaSettings":
        """The settings of a model folder's preprocessor_config.json (defaults for what it leaves out)."""
        path = Path(folder) / "preprocessor_config.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        default = cls()
        return cls(sample_rate=int(data.get("sampling_rate", default.sample_rate)),
                   n_fft=int(data.get("n_fft", default.n_fft)),
                   hop_length=int(data.get("hop_length", default.hop_length)),
                   num_chroma=int(data.get("num_chroma", default.num_chroma)),
                   chunk_length_s=int(data.get("chunk_length", default.chunk_length_s)))

    def preprocessor_config(self) -> dict:
        """preprocessor_config.json as transformers writes it for MusicgenMelodyFeatureExtractor (the hub's
        facebook/musicgen-melody has these keys)."""
        return {"feature_extractor_type": "MusicgenMelodyFeatureExtractor",
                "processor_class": "MusicgenMelodyProcessor",
                "feature_size": self.num_chroma, "num_chroma": self.num_chroma, "sampling_rate": self.sample_rate,
                "n_fft": self.n_fft, "hop_length": self.hop_length, "chunk_length": self.chunk_length_s,
                "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True, "stem_indices": [3, 2]}

    def frames(self, samples: int) -> int:
        """Chroma frames of a clip of `samples` samples (center=True: one frame per hop, plus one)."""
        samples = max(min(samples, self.chunk_length_s * self.sample_rate), self.n_fft)
        return 1 + samples // self.hop_length


def chroma_filters(settings: ChromaSettings) -> torch.Tensor:
    """(num_chroma, n_fft // 2 + 1) float32, exactly as the extractor builds them."""
    from transformers.audio_utils import chroma_filter_bank

    bank = chroma_filter_bank(sampling_rate=settings.sample_rate, num_frequency_bins=settings.n_fft, tuning=0,
                              num_chroma=settings.num_chroma)
    return torch.from_numpy(bank).float()


def power_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """(samples,) -> (n_fft // 2 + 1, frames): torchaudio's Spectrogram(n_fft, win_length=n_fft, hop_length,
    power=2, center=True, pad_mode="reflect", normalized=True), which is this torch.stft call."""
    window = torch.hann_window(n_fft, dtype=wave.dtype, device=wave.device)  # periodic, as torchaudio's default
    spec = torch.stft(wave, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    spec = spec / window.pow(2.0).sum().sqrt()  # normalized=True means "window" normalisation in torchaudio
    return spec.abs().pow(2.0)


def chromagram(audio: np.ndarray, settings: ChromaSettings = ChromaSettings(),
               filters: torch.Tensor | None = None) -> np.ndarray:
    """float32 audio at settings.sample_rate, (samples,) or (samples, channels) -> float32 (frames, num_chroma):
    one-hot, the strongest pitch class of each frame."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)  # the extractor converts stereo to mono by averaging
    if audio.ndim != 1 or audio.size == 0:
        raise ValueError("a melody needs at least one sample of mono or multichannel audio")
    wave = torch.from_numpy(np.ascontiguousarray(audio[:settings.chunk_length_s * settings.sample_rate]))
    if wave.numel() < settings.n_fft:  # as the extractor: centred zero padding up to one FFT window
        pad = settings.n_fft - wave.numel()
        wave = torch.nn.functional.pad(wave, (pad // 2, pad // 2 + pad % 2))
    filters = chroma_filters(settings) if filters is None else filters
    with torch.no_grad():
        raw = filters @ power_spectrogram(wave, settings.n_fft, settings.hop_length)  # (chroma, frames)
        norm = torch.nn.functional.normalize(raw, p=math.inf, dim=0, eps=1e-6)
        index = norm.argmax(dim=0)
        one_hot = torch.zeros(index.numel(), settings.num_chroma, dtype=torch.float32)
        one_hot[torch.arange(index.numel()), index] = 1.0
    return one_hot.numpy()

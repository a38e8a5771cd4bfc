"""CLAP scoring: text-audio agreement as the cosine of a CLAP's text and audio embeddings.

A hub checkpoint (laion/larger_clap_music) and studio-tiny-clap, a tiny random-weight CLAP built here, are loaded by
the same code: `ClapModel.from_pretrained` of a folder, safetensors only. The worker (studio.runtime.worker) is the
one user of a loaded scorer: it runs on the studio's device, between generations, never beside them.

Audio is mixed to mono and resampled to the CLAP's rate (scipy's polyphase resampler). The CLAP sees at most
`max_length_s` (10 s) at a time and its feature extractor would take a RANDOM crop of anything longer (and pick a
random clip for 'fusion'): a clip is instead cut into consecutive windows of at most 10 s, each embedded on its own
(a short window is repeat-padded by the feature extractor, deterministically), and the clip's embedding is the mean
of the windows' embeddings weighted by their length. The same clip and prompt always get the same score.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from studio.runtime.tiny import save_built

TINY_CLAP_SEED = 4321
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,-'!?&/"


def _tiny_tokenizer():
    """A RoBERTa byte-level BPE tokenizer over a tiny character vocabulary, built offline (no download)."""
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for ch in _CHARS.replace(" ", "\u0120") + "".join(c.upper() for c in _CHARS if c.isalpha()):
        vocab.setdefault(ch, len(vocab))
    return RobertaTokenizer(vocab=vocab, merges=[])


def build_tiny_clap(folder: Path, *, seed: int = TINY_CLAP_SEED) -> Path:
    """Build studio-tiny-clap into `folder` (atomically: a half-built folder is never left behind): a ClapModel with
    tiny sizes and a ClapProcessor (the real feature extractor: 48 kHz, 64 mel bins, 10 s windows)."""
    from transformers import ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, ClapTextConfig

    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_tokenizer()
    text = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, projection_dim=16, max_position_embeddings=80)
    # HTSAT needs spec_size 256 and 64 mel bins (the feature extractor's); the rest is as small as it goes
    audio = ClapAudioConfig(hidden_size=16, patch_embeds_hidden_size=8, depths=[1, 1], num_attention_heads=[1, 2],
                            projection_dim=16, window_size=8, num_hidden_layers=2)
    config = ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ClapModel(config)
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer)
    return save_built(model, processor, folder, prefix=".tiny-clap-")


def to_mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=1, dtype=np.float32)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 audio at `rate` -> `target` (scipy's polyphase filter; exact for 32 kHz -> 48 kHz: 3/2)."""
    if rate == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(audio, target // g, rate // g).astype(np.float32)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """A generated clip (wav, flac or mp3) as float32 (samples, channels) and its rate."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio, int(rate)


class ClapScorer:
    """A loaded CLAP: embeds texts and clips, and scores (text, clip) pairs in [-1, 1]."""

    def __init__(self, model, processor, device: torch.device):
        self.model, self.processor, self.device = model, processor, torch.device(device)
        fe = processor.feature_extractor
        self.sample_rate = int(fe.sampling_rate)
        self.window = int(fe.nb_max_samples)  # samples the CLAP sees at once (10 s)

    @classmethod
    def load(cls, folder: Path, device: torch.device | str = "cpu") -> "ClapScorer":
        """From a transformers folder (a hub snapshot or studio-tiny-clap): config + model.safetensors + processor.
        Pickled weights are never read (use_safetensors)."""
        from transformers import ClapModel, ClapProcessor

        folder = Path(folder)
        model = ClapModel.from_pretrained(folder, use_safetensors=True, dtype=torch.float32).to(device).eval()
        processor = ClapProcessor.from_pretrained(folder)
        return cls(model, processor, torch.device(device))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """(n, dim) unit vectors. A text longer than the text encoder's positions is cut there: RoBERTa's positions
        start after the padding index (2 fewer than max_position_embeddings), and a tokenizer may not say its own
        limit (model_max_length unset: ~1e30, so truncation alone would cut nothing)."""
        tokenizer = self.processor.tokenizer
        limit = min(int(tokenizer.model_max_length), self.model.config.text_config.max_position_embeddings - 2)
        inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return self.model.get_text_features(**inputs).pooler_output.float().cpu()

    @torch.inference_mode()
    def audio_embedding(self, audio: np.ndarray, rate: int) -> torch.Tensor:
        """(dim,) unit vector of a clip (samples[, channels]) at `rate`: the length-weighted mean of its windows'."""
        mono = resample(to_mono(audio), rate, self.sample_rate)
        if mono.size == 0:
            mono = np.zeros(1, dtype=np.float32)
        windows = [mono[i:i + self.window] for i in range(0, len(mono), self.window)]
        fe = self.processor.feature_extractor
        # one window per call: with several, 'fusion' extractors mark a random one as longer
        feats = [fe(w, sampling_rate=self.sample_rate, return_tensors="pt") for w in windows]
        inputs = {k: torch.cat([f[k] for f in feats]).to(self.device) for k in feats[0].keys()}
        emb = self.model.get_audio_features(**inputs).pooler_output.float().cpu()
        weights = torch.tensor([len(w) for w in windows], dtype=torch.float32)[:, None]
        mean = (emb * weights).sum(0) / weights.sum()
        return torch.nn.functional.normalize(mean, dim=0)

    def score(self, items: Sequence[tuple[str, np.ndarray, int]]) -> list[float]:
        """Cosine similarity of each (text, audio, rate)'s text and audio embeddings, in [-1, 1]."""
        if not items:
            return []
        texts = self.text_embeddings([t for t, _, _ in items])
        values = []
        for text, (_, audio, rate) in zip(texts, items):
            value = float(torch.dot(text, self.audio_embedding(audio, rate)))
            values.append(min(1.0, max(-1.0, value)))  # unit vectors: only rounding can step outside
        return values

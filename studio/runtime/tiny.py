"""studio-tiny (and studio-tiny-melody): tiny random-weight MusicGen models built deterministically on this machine.

It is saved as a standard transformers folder (model + processor) and then loaded through the same
from_pretrained path as hub models, so the offline studio and the tests exercise the real code path.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from studio.runtime.chroma import ChromaSettings
from studio.runtime.hf_logging import quiet_musicgen_token_layout

TINY_SEED = 1234
CODES_FITTED = 64  # codec entries fitted to sounds per codebook (see _fit_codebooks)
HEAD_SCALE = 10.0
_WORDS = ["rock", "jazz", "piano", "drums", "lofi", "beat", "calm", "guitar", "bass", "synth", "ambient", "happy",
          "sad", "fast", "slow", "electronic", "classical", "hip", "hop", "pop", "epic", "orchestral", "chill", "dance"]


def _tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [("\u2581" + w, -1.0) for w in _WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_model(folder: Path, *, hidden_size: int = 32, seed: int = TINY_SEED, channels: int = 1) -> Path:
    """Build studio-tiny into `folder` (atomically: a half-built folder is never left behind).

    hidden_size / seed make other tiny models (other shapes / other weights) for tests; the defaults are
    studio-tiny's. channels=2: a stereo model laid out like MusicGen Stereo (a mono EnCodec; the decoder predicts
    8 codebooks, left and right interleaved)."""
    from transformers import (EncodecConfig, EncodecFeatureExtractor, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, MusicgenProcessor, T5Config)

    quiet_musicgen_token_layout()
    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    text = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                    decoder_start_token_id=0, pad_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=32, num_filters=4,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=32,
                          target_bandwidths=[2.2], num_lstm_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=hidden_size, num_hidden_layers=2,
                                    num_attention_heads=2, ffn_dim=2 * hidden_size, num_codebooks=4 * channels, max_position_embeddings=2048,
                                    pad_token_id=2048, bos_token_id=2048, audio_channels=channels)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    config.decoder.decoder_start_token_id = 2048  # missing in transformers 5.23; training needs it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        _make_usable(model)
    processor = MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
                                  tokenizer=_tokenizer())
    return save_built(model, processor, folder)


MELODY_PROJ_SCALE = 100.0  # see build_tiny_melody_model


def build_tiny_melody_model(folder: Path, *, hidden_size: int = 32, seed: int = TINY_SEED,
                            chroma: ChromaSettings | None = None, channels: int = 1) -> Path:
    """Build studio-tiny-melody into `folder` (atomically): MusicgenMelodyForConditionalGeneration with
    studio-tiny's text encoder, tokenizer and fitted EnCodec, a decoder without cross-attention (the conditioning
    is a prefix of its sequence) and MusicGen Melody's chroma settings (n_fft 16384, hop 4096, 235 chroma frames
    for 30 s at 32 kHz), so the melody path is the hub checkpoints' own.

    Saved like a hub repo: config.json + model.safetensors, the tokenizer's files and preprocessor_config.json
    (transformers cannot build MusicgenMelodyProcessor without torchaudio, so that file is written from the
    studio's ChromaSettings, with the keys the hub's facebook/musicgen-melody has). channels=2: a stereo melody
    model (8 codebooks, left and right interleaved, like musicgen-stereo-melody), for tests."""
    from transformers import (EncodecConfig, MusicgenMelodyConfig, MusicgenMelodyDecoderConfig,
                              MusicgenMelodyForConditionalGeneration, T5Config)

    quiet_musicgen_token_layout()
    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    chroma = chroma or ChromaSettings()
    text = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                    decoder_start_token_id=0, pad_token_id=0)
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=32, num_filters=4,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=32,
                          target_bandwidths=[2.2], num_lstm_layers=1)
    decoder = MusicgenMelodyDecoderConfig(vocab_size=2048, hidden_size=hidden_size, num_hidden_layers=2,
                                          num_attention_heads=2, ffn_dim=2 * hidden_size,
                                          num_codebooks=4 * channels, max_position_embeddings=2048,
                                          pad_token_id=2048, bos_token_id=2048, audio_channels=channels)
    config = MusicgenMelodyConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                  decoder=decoder.to_dict(), num_chroma=chroma.num_chroma,
                                  chroma_length=chroma.frames(chroma.chunk_length_s * chroma.sample_rate))
    config.decoder.decoder_start_token_id = 2048
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenMelodyForConditionalGeneration(config)
        _make_usable(model)
        with torch.no_grad():
            # The chroma's projection starts at std 0.02: the prefix of any melody is then almost the null
            # melody's, and another melody changed 7 % of 50 greedy codes; scaled up 100 times, 13 %.
            model.audio_enc_to_dec_proj.weight.mul_(MELODY_PROJ_SCALE)
    return save_built(model, MelodyProcessorFiles(_tokenizer(), chroma), folder)


class MelodyProcessorFiles:
    """What MusicgenMelodyProcessor.save_pretrained would write, without building its torchaudio extractor."""

    def __init__(self, tokenizer, chroma):
        self.tokenizer, self.chroma = tokenizer, chroma

    def save_pretrained(self, folder: Path) -> None:
        import json

        self.tokenizer.save_pretrained(folder)
        (Path(folder) / "preprocessor_config.json").write_text(
            json.dumps(self.chroma.preprocessor_config(), indent=2) + "\n")


def _calibration_audio(sample_rate: int = 32000) -> list[np.ndarray]:
    """Generic sounds (tones across the range, pulses, noise, sweeps; 0.5 s each), fixed, to fit the codec to."""
    rng = np.random.default_rng(TINY_SEED)
    t = np.arange(sample_rate // 2) / sample_rate
    pitches = np.geomspace(40.0, 4000.0, 24)
    sounds = [0.4 * np.sin(2 * np.pi * f * t) for f in pitches]
    sounds += [0.4 * np.sin(2 * np.pi * f * t) * (np.sin(2 * np.pi * 4 * t) > 0) for f in pitches[::3]]
    sounds += [level * rng.standard_normal(t.size) for level in (0.02, 0.1, 0.3, 0.6)]
    sounds += [0.4 * np.sin(2 * np.pi * np.cumsum(np.geomspace(a, b, t.size)) / sample_rate)
               for a, b in ((50, 2000), (2000, 50), (200, 800), (800, 3000))]
    return [s.astype(np.float32) for s in sounds]


def _make_usable(model) -> None:
    """What a random tiny MusicGen (any class) needs to be of use. A config-built EnCodec has all-zero codebooks
    (every frame encodes to code 0): give them values, fitted to generic sounds, so encoding audio (training,
    continuation) means something. Random heads (std 0.02 on a few features) give logits within about +-0.5: no
    LoRA update could make any code likely, so a training run's loss could hardly move; scaled up, the decoder can
    learn a distribution."""
    for name, buf in model.audio_encoder.named_buffers():
        if name.endswith("codebook.embed"):
            buf.copy_(torch.randn_like(buf))
    _fit_codebooks(model.audio_encoder)
    with torch.no_grad():
        for head in model.decoder.lm_heads:
            head.weight.mul_(HEAD_SCALE)


def _fit_codebooks(codec, used: int = CODES_FITTED) -> None:
    """Fit the first `used` entries of each residual codebook to the encoder's frames of generic sounds (a few
    rounds of k-means), leaving the other entries where they are (far away: never chosen when encoding).

    Random codebooks (std 1) lie far from a random encoder's frames (which vary by ~0.002), so every sound would
    quantise to the same code of each codebook: a dataset's codes would not tell a bass from a synth, and training
    on studio-tiny would learn nothing. Fitted, the codes follow the audio."""
    g = torch.Generator().manual_seed(TINY_SEED)
    with torch.no_grad():
        # one batch: the sounds have the same length
        frames = codec.encoder(torch.from_numpy(np.stack(_calibration_audio()))[:, None])  # (sounds, dim, frames)
        residual = frames.transpose(1, 2).reshape(-1, frames.shape[1])
        for layer in codec.quantizer.layers:
            centres = residual[torch.randperm(len(residual), generator=g)[:used]].clone()
            for _ in range(10):
                nearest = torch.cdist(residual, centres).argmin(1)
                sums = torch.zeros_like(centres).index_add_(0, nearest, residual)
                counts = torch.bincount(nearest, minlength=used)[:, None]
                centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
            layer.codebook.embed[:used] = centres
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T


def save_built(model, processor, folder: Path, prefix: str = ".tiny-") -> Path:
    """Write a model built on this machine as a transformers folder (safetensors), whole or not at all: it is
    written beside its place (prefix: what start-up recovery removes, studio/datadir.py) and moved there in one
    step, so a kill mid-build leaves no half folder to load."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if folder.exists():  # a broken earlier build
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tiny_stereo_model(folder: Path) -> Path:
    """studio-tiny-stereo: Studio Tiny's shape in stereo (2 channels, 8 codebooks), for the stereo paths offline."""
    return build_tiny_model(folder, channels=2)

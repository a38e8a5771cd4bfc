"""studio-tiny: a tiny random-weight MusicGen built deterministically on this machine.

It is saved as a standard transformers folder (model + processor) and then loaded through the same
from_pretrained path as hub models, so the offline studio and the tests exercise the real code path.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from studio.runtime.hf_logging import quiet_musicgen_token_layout

TINY_SEED = 1234
_WORDS = ["rock", "jazz", "piano", "drums", "lofi", "beat", "calm", "guitar", "bass", "synth", "ambient", "happy",
          "sad", "fast", "slow", "electronic", "classical", "hip", "hop", "pop", "epic", "orchestral", "chill", "dance"]


def _tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab += [("\u2581" + w, -1.0) for w in _WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_tiny_model(folder: Path, *, hidden_size: int = 32, seed: int = TINY_SEED) -> Path:
    """Build studio-tiny into `folder` (atomically: a half-built folder is never left behind).

    hidden_size / seed make other tiny models (other shapes / other weights) for tests; the defaults are
    studio-tiny's."""
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
                                    num_attention_heads=2, ffn_dim=2 * hidden_size, num_codebooks=4, max_position_embeddings=2048, pad_token_id=2048,
                                    bos_token_id=2048, audio_channels=1)
    config = MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(), decoder=decoder.to_dict())
    config.decoder.decoder_start_token_id = 2048  # missing in transformers 5.23; training needs it
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MusicgenForConditionalGeneration(config)
        # A config-built EnCodec has all-zero codebooks (every frame encodes to code 0): give them values so
        # encoding audio (training, continuation) means something.
        for name, buf in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                buf.copy_(torch.randn_like(buf))
    processor = MusicgenProcessor(feature_extractor=EncodecFeatureExtractor(feature_size=1, sampling_rate=32000),
                                  tokenizer=_tokenizer())
    return save_built(model, processor, folder)


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

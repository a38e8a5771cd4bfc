"""registry.yaml's models checked against each other and against what their configs build.

The official entries cannot be downloaded here: their figures are checked for internal consistency (codebooks vs
channels, melody conditioning vs the melody class, sizes vs parameters) and against the model transformers builds
from each checkpoint's published config (on the meta device: shapes only), so a wrong figure fails here."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from studio.registry import ARCHITECTURES, MELODY_ARCHITECTURE, load_registry

REGISTRY = load_registry(Path(__file__).parent.parent / "registry.yaml")
OFFICIAL = ["musicgen-small", "musicgen-medium", "musicgen-large", "musicgen-melody", "musicgen-melody-large",
            "musicgen-stereo-small", "musicgen-stereo-medium", "musicgen-stereo-large", "musicgen-stereo-melody",
            "musicgen-stereo-melody-large"]
# The decoders of the official checkpoints (config.json: decoder.hidden_size, num_hidden_layers, num_attention_heads,
# ffn_dim): small, medium (1.5B) and large (3.3B); the text encoder is t5-base, the codec EnCodec 32 kHz for all.
DECODERS = {"small": (1024, 24, 16, 4096), "medium": (1536, 48, 24, 6144), "large": (2048, 48, 32, 8192)}
# What the hub lists for some checkpoints' safetensors (GB, the shards added): download_gb must match within 2 %
HUB_LISTED_GB = {"musicgen-small": 2.36, "musicgen-stereo-melody": 5.0 + 1.33,
                 "musicgen-stereo-melody-large": 4.99 + 4.97 + 0.678}


def _size(model_id: str) -> str:
    return "small" if model_id.endswith("small") else "large" if model_id.endswith("large") else "medium"


def test_every_official_checkpoint_is_listed_from_its_hub_repo():
    for model_id in OFFICIAL:
        spec = REGISTRY.get(model_id)
        assert spec.source.hub == f"facebook/{model_id}" and spec.source.revision is None


@pytest.mark.parametrize("model_id", OFFICIAL)
def test_official_capabilities_follow_the_checkpoint_name(model_id):
    spec = REGISTRY.get(model_id)
    stereo, melody = "stereo" in model_id, "melody" in model_id
    assert spec.channels == (2 if stereo else 1)
    assert spec.codebooks == 4 * spec.channels  # EnCodec 32 kHz's 4 codebooks, per channel (interleaved in stereo)
    assert spec.conditioning == (("text", "melody") if melody else ("text",))
    assert spec.model_class == (MELODY_ARCHITECTURE if melody else ARCHITECTURES["musicgen"])
    assert (spec.sample_rate, spec.frame_rate) == (32000, 50)
    assert (spec.max_duration_s, spec.max_extended_duration_s, spec.stride_s) == (30, 180, 18)
    assert spec.memory_gb > spec.download_gb > 0


@pytest.mark.parametrize("spec", REGISTRY.models, ids=lambda s: s.id)
def test_every_entry_is_consistent(spec):
    """Any entry (official, built-in or added later): codebooks split evenly between channels, melody conditioning
    exactly when the class is MusicGen Melody's, a window that holds the stride, a size that fits the memory."""
    assert spec.codebooks % spec.channels == 0
    assert ("melody" in spec.conditioning) == (spec.model_class == MELODY_ARCHITECTURE)
    assert spec.stride_s < spec.max_duration_s <= spec.extended_limit_s
    assert spec.download_gb <= spec.memory_gb
    if spec.download_gb:
        # float32 safetensors: 4 bytes a parameter (+ tokenizer and configs)
        assert spec.download_gb == pytest.approx(spec.parameters * 4 / 1e9, rel=0.03)


@pytest.mark.parametrize("model_id,listed", HUB_LISTED_GB.items())
def test_download_sizes_match_the_hub_listings(model_id, listed):
    assert REGISTRY.get(model_id).download_gb == pytest.approx(listed, rel=0.02)


def _official_config(model_id: str):
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, MusicgenMelodyConfig,
                              MusicgenMelodyDecoderConfig, T5Config)

    hidden, layers, heads, ffn = DECODERS[_size(model_id)]
    stereo, melody = "stereo" in model_id, "melody" in model_id
    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)  # t5-base
    audio = EncodecConfig(sampling_rate=32000, audio_channels=1, hidden_size=128, num_filters=64,
                          num_residual_layers=1, upsampling_ratios=[8, 5, 4, 4], codebook_size=2048, codebook_dim=128,
                          target_bandwidths=[2.2], num_lstm_layers=2, use_causal_conv=False)  # encodec_32khz
    decoder = dict(vocab_size=2048, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                   ffn_dim=ffn, num_codebooks=8 if stereo else 4, audio_channels=2 if stereo else 1,
                   max_position_embeddings=2048, pad_token_id=2048, bos_token_id=2048)
    if melody:
        return MusicgenMelodyConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                                    decoder=MusicgenMelodyDecoderConfig(**decoder).to_dict(), num_chroma=12)
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=audio.to_dict(),
                          decoder=MusicgenDecoderConfig(**decoder).to_dict())


@pytest.mark.parametrize("model_id", OFFICIAL)
def test_official_figures_equal_what_the_config_builds(model_id):
    """Parameters exactly, the derived capabilities, and the memory estimate's rule (registry.yaml's header), as
    studio/runtime/model_config.py derives them for a custom model from the same config."""
    from studio.runtime.model_config import describe

    spec = REGISTRY.get(model_id)
    config = _official_config(model_id).to_dict()
    config["architectures"] = [spec.model_class]
    derived = describe(config, weights_bytes=spec.parameters * 4)
    assert derived["parameters"] == spec.parameters
    for field in ("architecture", "channels", "codebooks", "sample_rate", "frame_rate", "max_duration_s",
                  "max_extended_duration_s", "window_stride_s"):
        assert derived[field] == getattr(spec, field), field
    assert tuple(derived["conditioning"]) == spec.conditioning
    assert derived["download_gb"] == pytest.approx(spec.download_gb, abs=0.05)
    assert math.isclose(derived["memory_gb"], spec.memory_gb, abs_tol=0.5)


def test_stereo_tiny_is_built_in_and_stereo():
    spec = REGISTRY.get("studio-tiny-stereo")
    assert spec.is_builtin and (spec.channels, spec.codebooks) == (2, 8)


@pytest.mark.parametrize("change,expected", [
    ({"channels": 2, "codebooks": 3}, "even number of codebooks"),
    ({"architecture": MELODY_ARCHITECTURE}, "does not fit"),
    ({"conditioning": ["text", "melody"], "architecture": "MusicgenForConditionalGeneration"}, "does not fit"),
])
def test_inconsistent_entries_are_refused(change, expected):
    from studio.errors import RegistryError
    from studio.registry import parse_registry

    entry = REGISTRY.get("studio-tiny").model_dump(mode="json", exclude_none=True)
    with pytest.raises(RegistryError, match=expected):
        parse_registry({"default_model": "studio-tiny", "models": [{**entry, **change}]})

"""The reference repos an audiocraft checkpoint names (its text encoder `t5-base` and its codec
`facebook/encodec_32khz`), made tiny from studio-tiny's own text encoder and codec, laid out like the real hub repos:
served by the fake hub in tests, and used by tests/fixtures/audiocraft/build.py when it builds the committed
checkpoints with audiocraft (so the expected logits there were computed with exactly these text states)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "audiocraft"
T5_REPO, CODEC_REPO = "t5-base", "facebook/encodec_32khz"


def write_reference_repos(tiny_folder: Path, out: Path) -> dict[str, Path]:
    """{repo id: folder}: "t5-base" as a T5ForConditionalGeneration checkpoint (the real repo has a decoder too,
    which the importer must leave out) with studio-tiny's encoder weights and tokenizer, and
    "facebook/encodec_32khz" as an EncodecModel with studio-tiny's codec and its feature extractor's config.
    Deterministic: the same tiny_folder gives the same files."""
    from transformers import (EncodecFeatureExtractor, MusicgenForConditionalGeneration, MusicgenProcessor,
                              T5Config, T5ForConditionalGeneration)

    out = Path(out)
    t5_dir, codec_dir = out / "t5-base", out / "encodec_32khz"
    if (t5_dir / "model.safetensors").is_file() and (codec_dir / "model.safetensors").is_file():
        return {T5_REPO: t5_dir, CODEC_REPO: codec_dir}
    model = MusicgenForConditionalGeneration.from_pretrained(tiny_folder)
    processor = MusicgenProcessor.from_pretrained(tiny_folder)
    encoder = model.text_encoder
    config = T5Config(**{k: v for k, v in encoder.config.to_dict().items()
                         if k not in ("architectures", "transformers_version", "is_encoder_decoder", "use_cache")})
    config.num_decoder_layers = config.num_layers
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        full = T5ForConditionalGeneration(config)
    missing, unexpected = full.load_state_dict(encoder.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(("decoder.", "lm_head.")) for k in missing), (missing, unexpected)
    full.save_pretrained(t5_dir)
    processor.tokenizer.save_pretrained(t5_dir)
    model.audio_encoder.save_pretrained(codec_dir)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=model.audio_encoder.config.sampling_rate).save_pretrained(
        codec_dir)
    return {T5_REPO: t5_dir, CODEC_REPO: codec_dir}


def text_encoder_digest(t5_dir: Path) -> str:
    """sha256 over the encoder's tensors (names and bytes, sorted): the fixtures record the one they were built
    with, and a test checks that the repos it serves are that one."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(t5_dir) / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(k for k in tensors if k.startswith(("shared.", "encoder."))):
        digest.update(name.encode())
        digest.update(tensors[name].float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def expected(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """A fixture's expected.json and expected.safetensors (what audiocraft computed when it was built)."""
    from safetensors.torch import load_file

    folder = FIXTURES / name
    return (json.loads((folder / "expected.json").read_text()),
            load_file(str(folder / "expected.safetensors")))

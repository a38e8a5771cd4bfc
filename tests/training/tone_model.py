"""A tiny MusicGen whose codec hears the tones of tests/tone_dataset.py.

studio-tiny's EnCodec has random codebooks (std 1) far from its random encoder's outputs (which vary by ~0.002
across frames): every audio quantises to the same code per codebook, so its codes cannot tell a bass from a synth.
Here each of the residual quantiser's codebooks gets 16 entries fitted (k-means) to the tones' encoder frames and
its other entries put out of reach: codes then follow the audio (a periodic pattern for a bass, another for a
pulsing synth), which is what training needs to be tested on; and its output heads are scaled up (see below). Everything
else is studio-tiny's.
"""
from __future__ import annotations

from pathlib import Path

import torch

from studio.runtime.tiny import save_built
from tests.tone_dataset import KINDS, tone

USED_CODES = 16
HEAD_SCALE = 10.0


def _kmeans(x: torch.Tensor, k: int, g: torch.Generator, rounds: int = 20) -> torch.Tensor:
    centres = x[torch.randperm(len(x), generator=g)[:k]].clone()
    for _ in range(rounds):
        nearest = torch.cdist(x, centres).argmin(1)
        for j in range(k):
            if (nearest == j).any():
                centres[j] = x[nearest == j].mean(0)
    return centres


def build_tone_tiny(base: Path, folder: Path) -> Path:
    from transformers import AutoProcessor, MusicgenForConditionalGeneration

    if (folder / "model.safetensors").is_file():
        return folder
    model = MusicgenForConditionalGeneration.from_pretrained(base, use_safetensors=True, local_files_only=True)
    processor = AutoProcessor.from_pretrained(base, local_files_only=True)
    codec = model.audio_encoder
    g = torch.Generator().manual_seed(0)
    audio = [tone(kind, 3.0, seed=s) for kind in KINDS for s in range(100, 104)]
    with torch.no_grad():
        residual = torch.cat([codec.encoder(torch.from_numpy(a)[None, None])[0].T for a in audio])
        for layer in codec.quantizer.layers:
            embed = layer.codebook.embed
            far = float(residual.abs().max()) * 1e3
            embed.copy_(torch.randn(embed.shape, generator=g) * far)
            embed[:USED_CODES] = _kmeans(residual, USED_CODES, g)
            residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
        # Random heads (std 0.02 on 32 features) give logits within about +-0.5: no LoRA update could make any
        # code likely. Scaled up, the decoder can express the distributions it learns.
        for head in model.decoder.lm_heads:
            head.weight.mul_(HEAD_SCALE)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return save_built(model, processor, folder)

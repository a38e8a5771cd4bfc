"""What a run trains on, prepared once before the first step: each clip's codes (encoded one clip at a time by the
model's codec, cached by clip hash so a clip is never encoded twice), the frozen text encoder's states per caption,
and the deterministic sampling of clips, crops and text dropout from (seed, step).

Runs inside the training subprocess: no gradio, no fastapi, no database.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

CODES_KEY = "codes"
TMP_SUFFIX = ".tmp"
MAX_TEXT_TOKENS = 512


class TrainingError(Exception):
    """A failure a person can act on: ends the run with done(status="failed", code=code, message=str(self))."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class Stopped(Exception):
    """The stop file appeared while the run was preparing (before any step)."""


def derive_seed(seed: int, *parts) -> int:
    """A 63-bit seed for one use of randomness (`parts` such as ("batch", step, micro)): every random draw of a run
    is a pure function of the configuration's seed and where it happens, so a resumed run draws exactly what an
    uninterrupted one would have."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, *parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *parts))


# ---- audio -> codes -----------------------------------------------------------------------------------------------
def read_clip(path: str, sample_rate: int, channels: int) -> np.ndarray:
    """A clip's samples as float32 (channels, samples) at the model's rate. The dataset service already wrote clips
    at the model's rate and channels; this converts anyway so a clip made otherwise still trains."""
    import soundfile as sf

    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError or OSError depending on the cause
        raise TrainingError(f"The clip {Path(path).name} could not be read: {exc}", code="unreadable_clip") from None
    if audio.shape[0] == 0:
        raise TrainingError(f"The clip {Path(path).name} is empty.", code="unreadable_clip")
    if audio.shape[1] != channels:
        audio = audio.mean(axis=1, keepdims=True)
        if channels > 1:
            audio = np.repeat(audio, channels, axis=1)
    if rate != sample_rate:
        import soxr

        audio = soxr.resample(audio, rate, sample_rate).astype(np.float32)
    return np.ascontiguousarray(audio.T)


@torch.no_grad()
def encode_audio(model, audio: np.ndarray) -> torch.Tensor:
    """(channels, samples) -> int64 codes (codebooks, frames); stereo models take each channel through the codec
    and interleave their codebooks (left, right, left, ...) as MusicGen's stereo decoder expects."""
    codec = model.audio_encoder
    device = next(codec.parameters()).device
    dtype = next(codec.parameters()).dtype
    parts = []
    for channel in audio:
        x = torch.from_numpy(channel).to(device=device, dtype=dtype)[None, None]
        out = codec.encode(x)
        parts.append(out.audio_codes[0, 0])  # (codebooks, frames): one chunk, one row
    if len(parts) == 1:
        return parts[0].long().cpu()
    stacked = torch.stack(parts, dim=1)  # (codebooks, channels, frames)
    return stacked.reshape(-1, stacked.shape[-1]).long().cpu()


def write_codes(path: Path, codes: torch.Tensor) -> None:
    """Written beside and renamed into place (a kill leaves a *.tmp file, removed at the next start)."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        save_file({CODES_KEY: codes.contiguous()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_codes(path: str | Path, num_codebooks: int) -> torch.Tensor:
    """A codes file (safetensors, "codes": (codebooks, frames) integers), checked against the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        codes = load_file(str(path))[CODES_KEY]
    except (OSError, KeyError, SafetensorError) as exc:
        raise TrainingError(f"The codes file {Path(path).name} could not be read: {exc}",
                            code="unreadable_codes") from None
    if codes.ndim != 2 or codes.shape[0] != num_codebooks or codes.shape[1] == 0:
        raise TrainingError(f"The codes file {Path(path).name} holds codes shaped {tuple(codes.shape)}; the model "
                            f"has {num_codebooks} codebooks.", code="unreadable_codes")
    return codes.long()


def remove_temp_files(folder: Path) -> None:
    """Our own half-written files in a folder only this run writes to (a previous process was killed mid-write)."""
    if folder.is_dir():
        for child in folder.iterdir():
            if child.name.startswith(".") and child.name.endswith(TMP_SUFFIX) and child.is_file():
                child.unlink(missing_ok=True)


def encode_clips(model, clips, cache: Path, sample_rate: int, channels: int, num_codebooks: int,
                 on_progress: Callable[[int, int, int], None], stop_requested: Callable[[], bool]) -> list[torch.Tensor]:
    """The codes of every clip, from the cache when there (`<cache>/<clip hash>.safetensors`), else encoded one clip
    at a time (batched padded encoding changes 8-12 % of frames) and cached. on_progress(done, total, encoded)."""
    cache.mkdir(parents=True, exist_ok=True)
    remove_temp_files(cache)
    codes, encoded = [], 0
    for i, clip in enumerate(clips):
        if stop_requested():
            raise Stopped()
        path = cache / f"{clip.hash}.safetensors"
        found = None
        if path.is_file():
            try:
                found = read_codes(path, num_codebooks)
            except TrainingError:  # a damaged cache entry is encoded again, not a failed run
                found = None
        if found is None:
            found = encode_audio(model, read_clip(clip.file, sample_rate, channels))
            write_codes(path, found)
            encoded += 1
        codes.append(found)
        on_progress(i + 1, len(clips), encoded)
    return codes


# ---- text -> frozen states ----------------------------------------------------------------------------------------
@dataclass
class TextStates:
    """The frozen T5 states of each distinct caption (on the training device), computed once."""

    states: dict[str, torch.Tensor]  # caption -> (tokens, hidden)

    def batch(self, captions: list[str], keep: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded states (B, L, H) and attention mask (B, L); rows with keep False get zero states and an all-zero
        mask: the unconditional input that classifier-free guidance contrasts with at generation time."""
        rows = [self.states[c] for c in captions]
        length = max(r.shape[0] for r in rows)
        hidden = rows[0].shape[1]
        device = rows[0].device
        states = torch.zeros(len(rows), length, hidden, device=device, dtype=dtype)
        mask = torch.zeros(len(rows), length, device=device, dtype=torch.long)
        for i, r in enumerate(rows):
            if keep[i]:
                states[i, :r.shape[0]] = r
                mask[i, :r.shape[0]] = 1
        return states, mask


@torch.no_grad()
def text_states(model, tokenizer, captions: list[str], device: torch.device) -> TextStates:
    encoder = model.text_encoder
    # MusicGen's T5 was trained on 512 tokens; a tokenizer without a stated limit says ~1e30
    max_length = min(getattr(tokenizer, "model_max_length", MAX_TEXT_TOKENS) or MAX_TEXT_TOKENS, MAX_TEXT_TOKENS)
    out = {}
    for caption in dict.fromkeys(captions):
        tokens = tokenizer([caption], return_tensors="pt", truncation=True, max_length=max_length)
        ids = tokens["input_ids"].to(device)
        mask = tokens["attention_mask"].to(device)
        hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[0]
        out[caption] = hidden[mask[0].bool()].float()
    return TextStates(out)


# ---- sampling -----------------------------------------------------------------------------------------------------
def sample_items(seed: int, n_items: int, step: int, micro: int, batch_size: int, accumulation: int) -> list[int]:
    """The dataset items of micro-batch `micro` of optimiser step `step` (1-based): an epoch is a permutation seeded
    by (seed, epoch), walked in order across steps, so any step's batch is known without replaying the run."""
    first = ((step - 1) * accumulation + micro) * batch_size
    items = []
    perms: dict[int, torch.Tensor] = {}
    for i in range(first, first + batch_size):
        epoch, pos = divmod(i, n_items)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n_items, generator=generator(seed, "epoch", epoch))
        items.append(int(perms[epoch][pos]))
    return items


def delay_labels(codes: list[torch.Tensor], pad: int) -> torch.Tensor:
    """Labels (B, T + K - 1, K) with MusicGen's codebook delay pattern: labels[b, t, k] = codes[b][k, t - k], pad
    elsewhere (before a codebook starts, after it ends, and after a shorter row). transformers' forward ignores pad
    labels but does not apply the delay itself."""
    k = codes[0].shape[0]
    length = max(c.shape[1] for c in codes) + k - 1
    labels = torch.full((len(codes), length, k), pad, dtype=torch.long)
    for b, c in enumerate(codes):
        for q in range(k):
            labels[b, q:q + c.shape[1], q] = c[q]
    return labels


def crop(codes: torch.Tensor, frames: int, g: torch.Generator | None) -> torch.Tensor:
    """At most `frames` frames: a random window (g) or the first ones (g None)."""
    total = codes.shape[1]
    if total <= frames:
        return codes
    start = int(torch.randint(0, total - frames + 1, (1,), generator=g)) if g is not None else 0
    return codes[:, start:start + frames]

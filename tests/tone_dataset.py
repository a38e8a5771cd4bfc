"""Synthetic training audio: tones with captions, written as a dataset folder (or archive) a person would make.

Two kinds of clip that a model can learn to tell apart: "calm bass" (a low, steady tone) and "fast synth" (a high
tone pulsing 4 times a second). Captions use words the tiny models' tokenizer knows (studio/runtime/tiny.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

KINDS = {"calm bass": (110.0, 0.0), "fast synth": (880.0, 4.0)}  # caption: (pitch Hz, pulses per second)


def tone(kind: str, seconds: float, sample_rate: int = 32000, seed: int = 0, channels: int = 1) -> np.ndarray:
    pitch, pulses = KINDS[kind]
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.4 * np.sin(2 * np.pi * pitch * (1 + 0.02 * rng.standard_normal()) * t + rng.uniform(0, 2 * np.pi))
    if pulses:
        wave *= 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * pulses * t))
    wave += 0.01 * rng.standard_normal(t.size)
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_tone_folder(folder: Path, n: int = 20, seconds: float = 3.0, *, sample_rate: int = 32000,
                      captions: str = "sidecar", suffix: str = ".wav") -> list[tuple[str, str]]:
    """n files alternating the two kinds; captions as sidecar .txt files, metadata.jsonl or metadata.csv.
    Returns [(file name, caption)]."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        kind = list(KINDS)[i % len(KINDS)]
        name = f"clip_{i:03d}{suffix}"
        sf.write(folder / name, tone(kind, seconds, sample_rate, seed=i), sample_rate)
        made.append((name, kind))
    if captions == "sidecar":
        for name, caption in made:
            (folder / name).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
    elif captions == "jsonl":
        with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
            for name, caption in made:
                f.write(json.dumps({"file_name": name, "text": caption}) + "\n")
    elif captions == "csv":
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "text"])
            writer.writerows(made)
    else:
        raise ValueError(captions)
    return made

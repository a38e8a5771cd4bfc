"""Training fixtures: a tone dataset (tests/tone_dataset.py) as the RunSpec clips the studio would send, and a
spec builder on studio-tiny (the session's tiny_folder, built once)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from studio.training.config import TrainingConfig
from studio.training.layout import ClipRef, RunSpec, write_json_atomic
from tests.tone_dataset import write_tone_folder
from tests.training.tone_model import build_tone_tiny

# fast and still learning on studio-tiny: 2 s crops of 3 s clips, a high rate, no warm-up to wait for
FAST = dict(clip_duration_s=2.0, learning_rate=3e-3, warmup_steps=2, batch_size=2, threads=1, seed=7)


@pytest.fixture(autouse=True)
def one_thread():
    """Train on one thread as the subprocess would (config.threads): on CI's two shared cores, two threads
    contending with the other worker made each step 3 times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tone_clips(tmp_path_factory) -> list[ClipRef]:
    folder = tmp_path_factory.mktemp("tones")
    made = write_tone_folder(folder, n=8, seconds=3.0)
    return [ClipRef(clip_id=i + 1, file=str(folder / name), caption=caption,
                    hash=hashlib.sha256((folder / name).read_bytes()).hexdigest())
            for i, (name, caption) in enumerate(made)]


@pytest.fixture(scope="session")
def tone_tiny(tmp_path_factory, tiny_folder) -> Path:
    """studio-tiny with a codec fitted to the tones (tests/training/tone_model.py), built once per session."""
    return build_tone_tiny(tiny_folder, tmp_path_factory.mktemp("tone-tiny") / "studio-tiny")


@pytest.fixture(scope="session")
def codes_cache(tmp_path_factory) -> Path:
    """One codes cache for the session: the tone clips are encoded once (as in a studio)."""
    return tmp_path_factory.mktemp("codes")


@pytest.fixture
def make_spec(tmp_path, tone_tiny, tone_clips, codes_cache):
    """make_spec(name="run", **config or spec fields) -> (run folder with spec.json written, RunSpec)."""
    spec_fields = set(RunSpec.model_fields)

    def make(name: str = "run", **fields) -> tuple[Path, RunSpec]:
        config = {**FAST, **{k: v for k, v in fields.items() if k not in spec_fields}}
        spec_args = {k: v for k, v in fields.items() if k in spec_fields}
        spec = RunSpec(**{"run_id": 1, "method": "sft", "model_id": "studio-tiny", "model_folder": str(tone_tiny),
                          "sample_rate": 32000, "frame_rate": 50, "max_clip_s": 30.0, "device": "cpu",
                          "config": TrainingConfig(**config), "clips": tone_clips,
                          "codes_cache": str(codes_cache), **spec_args})
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        write_json_atomic(folder / "spec.json", spec)
        return folder, spec

    return make

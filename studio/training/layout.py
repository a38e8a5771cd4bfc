"""The seam between the studio and a training subprocess: the run folder's layout and the files that cross it.

The studio (studio/services/training.py) writes `spec.json` and starts `python -m studio.training.run <folder>`;
the subprocess (studio/training/) never touches the database: it reads the spec, appends its events to
`events.jsonl` (one JSON object per line, flushed per line; a reader ignores a partial last line), writes each
checkpoint into a folder of its own, and ends when asked to by the `stop` file. Everything here is plain files so a
run survives the studio's restart and could be watched from another machine.

<data-dir>/training/runs/<run id>/
    spec.json              RunSpec: everything the subprocess needs (written once per start by the studio)
    events.jsonl           TrainerEvent lines: stage, step, checkpoint, resumed, done
    stop                   present: stop at the next step, save a checkpoint, end with done(status="stopped")
    train.log              the subprocess's stdout and stderr (the last lines are shown when it fails)
    checkpoints/step-000100/
        adapter_config.json, adapter_model.safetensors   the LoRA adapter at that step (PEFT's save_pretrained)
        trainer_state.safetensors                        optimiser moments and RNG states (resume only; removed
                                                         from all but the newest keep_last checkpoints)
        state.json                                       CheckpointState
<data-dir>/training/codes/<model id>@<weights hash>/<clip hash>.safetensors   codes of a clip, encoded once
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from studio.training.config import TrainingConfig

SPEC_FILE = "spec.json"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "stop"
LOG_FILE = "train.log"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
TRAINER_STATE_FILE = "trainer_state.safetensors"
CHECKPOINT_PREFIX = "step-"


def training_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "training"


def run_folder(data_dir: Path, run_id: int) -> Path:
    return training_dir(data_dir) / "runs" / str(run_id)


def codes_cache(data_dir: Path, model_id: str, weights_hash: str | None) -> Path:
    """Where the codes of clips encoded by a model's codec are kept (by model and weights: another revision of the
    model encodes again)."""
    return training_dir(data_dir) / "codes" / f"{model_id}@{(weights_hash or 'unknown')[:16]}"


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_folder(folder: Path, step: int) -> Path:
    """A checkpoint's folder inside a run folder (step 0: no folder; the run's starting point)."""
    return Path(folder) / CHECKPOINTS_DIR / checkpoint_name(step)


def checkpoint_steps(folder: Path) -> list[int]:
    """The steps of the complete checkpoints of a run (a checkpoint is written beside and renamed into place)."""
    root = Path(folder) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        if child.name.startswith(CHECKPOINT_PREFIX) and (child / STATE_FILE).is_file():
            try:
                steps.append(int(child.name.removeprefix(CHECKPOINT_PREFIX)))
            except ValueError:
                continue
    return sorted(steps)


# ---- the spec ---------------------------------------------------------------------------------------------------
class ClipRef(BaseModel):
    """One training clip: audio at the model's sample rate and channels, its caption and its content hash."""

    clip_id: int
    file: str  # absolute path of the clip's audio
    caption: str
    hash: str  # sha256 of the clip's samples: its codes are cached under this name


class PreferencePair(BaseModel):
    """One DPO pair from an A/B test: the same prompt (and seed), the preferred and the rejected clip's codes."""

    prompt: str
    chosen: str  # absolute path of the codes file (safetensors, "codes": (codebooks, frames) int64) of the winner
    rejected: str
    votes: int = 1  # decisive votes behind the preference (a weight)


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: int
    method: Literal["sft", "dpo"]
    model_id: str
    model_folder: str  # the base model's transformers folder
    weights_hash: str | None = None
    sample_rate: int
    frame_rate: int
    max_clip_s: float  # the model's window
    device: str  # resolved: "cpu", "cuda", "cuda:1"
    config: TrainingConfig
    clips: list[ClipRef] = []  # sft
    pairs: list[PreferencePair] = []  # dpo
    start_adapter: str | None = None  # folder of the adapter training continues from (dpo: the winner)
    codes_cache: str  # folder: <clip hash>.safetensors
    resume_from: int | None = None  # the checkpoint step to resume from (None: a fresh start)


# ---- events -----------------------------------------------------------------------------------------------------
class StageEvent(BaseModel):
    kind: Literal["stage"] = "stage"
    stage: Literal["loading", "encoding", "training", "saving"]
    message: str
    fraction: float | None = None
    time: float  # time.time()


class StepEvent(BaseModel):
    kind: Literal["step"] = "step"
    step: int  # optimiser steps done (1, 2, ...)
    total_steps: int
    epoch: float  # clips seen / clips in the dataset
    loss: float  # this step's loss (mean over its accumulated batches)
    lr: float  # the learning rate used for this step
    elapsed_s: float  # training time so far (not counting time while stopped)
    eta_s: float | None  # seconds to the last step at the recent speed
    time: float
    # dpo only: the share of this step's pairs where the adapter prefers the chosen clip more than the reference
    accuracy: float | None = None


class CheckpointEvent(BaseModel):
    kind: Literal["checkpoint"] = "checkpoint"
    step: int
    folder: str  # the checkpoint's folder name (checkpoint_name(step))
    loss: float | None  # mean loss of the steps since the previous checkpoint
    time: float


class ResumedEvent(BaseModel):
    kind: Literal["resumed"] = "resumed"
    step: int  # training goes on after this step's checkpoint
    time: float


class DoneEvent(BaseModel):
    kind: Literal["done"] = "done"
    status: Literal["succeeded", "stopped", "failed"]
    step: int
    message: str
    code: str | None = None  # failed: a stable snake_case code (out_of_memory, no_clips, bad_spec, ...)
    time: float


TrainerEvent = Annotated[Union[StageEvent, StepEvent, CheckpointEvent, ResumedEvent, DoneEvent],
                         Field(discriminator="kind")]
_EVENT = TypeAdapter(TrainerEvent)


class CheckpointState(BaseModel):
    """state.json of a checkpoint: where training stood."""

    step: int
    total_steps: int
    epoch: float
    loss: float | None
    elapsed_s: float
    time: float


def append_event(path: Path, event: BaseModel) -> None:
    """One line, written and flushed in one call (a reader never sees half a line but the last)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(event.model_dump_json() + "\n")
        f.flush()


def read_events(path: Path, offset: int = 0) -> tuple[list, int]:
    """The complete event lines from byte `offset` on, and the offset after the last complete line. A partial last
    line (a writer killed mid-line, or still writing) is left for the next read; an unreadable line is skipped."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(_EVENT.validate_json(line))
        except ValidationError:
            continue
    return events, offset + end


def write_json_atomic(path: Path, data: BaseModel | dict) -> None:
    """Written beside and renamed into place: a reader sees the old file or the new one, never half of one."""
    text = data.model_dump_json(indent=2) if isinstance(data, BaseModel) else json.dumps(data, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=Path(path).parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""The training loop in-process (studio.training.trainer.Trainer) on studio-tiny and tone clips: learning, exact
stop/resume, checkpoints, the codes cache and clean failures. Subprocess behaviour is in test_run.py."""
from __future__ import annotations

import hashlib
import math
import json
from pathlib import Path

import pytest
import torch

import studio.training.data as data
from studio.training import layout
from studio.training.trainer import Trainer, lr_at, rewrite_events_until
from studio.training.config import TrainingConfig


def events_of(folder: Path) -> list:
    return layout.read_events(folder / layout.EVENTS_FILE)[0]


def losses_of(folder: Path) -> dict[int, float]:
    return {e.step: e.loss for e in events_of(folder) if e.kind == "step"}


def stop_after(step: int):
    """A stop signal raised once the trainer has done `step` steps (as the stop file would be, between steps)."""
    holder: dict[str, Trainer] = {}

    def requested() -> bool:
        return holder["trainer"].step >= step

    return holder, requested


def run(folder: Path, spec, stop_at: int | None = None) -> Trainer:
    if stop_at is None:
        trainer = Trainer(folder, spec)
    else:
        holder, requested = stop_after(stop_at)
        trainer = holder["trainer"] = Trainer(folder, spec, stop_requested=requested)
    trainer.run()
    return trainer


def tree_digest(folder: Path) -> dict[str, str]:
    """The checkpoint's files (the optimiser state aside: keep_last may remove it)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != layout.TRAINER_STATE_FILE}


def test_loss_decreases(make_spec):
    folder, spec = make_spec(max_steps=40, cfg_dropout=0.0, batch_size=4, checkpoint_every=100)
    trainer = run(folder, spec)
    losses = [losses_of(folder)[s] for s in range(1, 41)]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.3, (first, last)
    done = events_of(folder)[-1]
    assert done.kind == "done" and done.status == "succeeded" and done.step == 40
    assert layout.checkpoint_steps(folder) == [40]
    # the adapter names its base by the studio's model id and loads with PEFT like any imported adapter
    config = json.loads((layout.checkpoint_folder(folder, 40) / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "studio-tiny" and config["r"] == 16
    assert not list(layout.checkpoint_folder(folder, 40).glob("*.bin"))
    # what the studio checks before it registers or applies an adapter: every tensor maps onto the base's modules
    from studio.runtime.adapters import check_structure, inspect_adapter
    from studio.runtime.transformers_backend import build_skeleton
    files = inspect_adapter(layout.checkpoint_folder(folder, 40))
    check_structure(build_skeleton(Path(spec.model_folder)), files, "studio-tiny")
    assert files.rank == 16 and len(files.shapes) == 2 * 2 * 8  # 2 layers x 8 attention projections x (A, B)


def test_stop_then_resume_continues_the_same_loss_sequence(make_spec):
    """Accumulation, LoRA dropout, text dropout and random crops all on: the resumed run's losses are the
    uninterrupted run's. The checkpoint the run resumes from, and one it passes again, are never rewritten."""
    fields = dict(max_steps=12, checkpoint_every=5, gradient_accumulation_steps=2, cfg_dropout=0.5,
                  clip_duration_s=1.5, lora_dropout=0.1, keep_last=3)
    whole, spec = make_spec("whole", **fields)
    run(whole, spec)
    expected = losses_of(whole)
    assert sorted(expected) == list(range(1, 13))

    part, spec = make_spec("part", **fields)
    run(part, spec, stop_at=7)
    done = events_of(part)[-1]
    assert (done.kind, done.status, done.step) == ("done", "stopped", 7)
    assert layout.checkpoint_steps(part) == [5, 7]
    before = {s: tree_digest(layout.checkpoint_folder(part, s)) for s in (5, 7)}

    # resume from 5 (not the newest): the run passes step 7 again and leaves that checkpoint as it was
    resumed = Trainer(part, spec.model_copy(update={"resume_from": 5})).run()
    assert resumed.status == "succeeded" and resumed.step == 12
    got = losses_of(part)
    assert sorted(got) == list(range(1, 13))
    for step in range(1, 13):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    assert {s: tree_digest(layout.checkpoint_folder(part, s)) for s in (5, 7)} == before
    kinds = [e.kind for e in events_of(part)]
    assert kinds.count("resumed") == 1 and kinds.count("done") == 1 and kinds[-1] == "done"
    steps = [e.step for e in events_of(part) if e.kind == "step"]
    assert steps == list(range(1, 13))  # events after step 5 of the first start were dropped, not duplicated
    assert layout.checkpoint_steps(part) == [5, 7, 10, 12]
    # keep_last=3: the oldest checkpoint lost its optimiser state, every one kept its adapter
    with_state = [s for s in (5, 7, 10, 12)
                  if (layout.checkpoint_folder(part, s) / layout.TRAINER_STATE_FILE).is_file()]
    assert with_state == [7, 10, 12]
    assert all((layout.checkpoint_folder(part, s) / "adapter_model.safetensors").is_file() for s in (5, 7, 10, 12))
    # a resumed run's final adapter is the uninterrupted run's
    from safetensors.torch import load_file
    a = load_file(str(layout.checkpoint_folder(whole, 12) / "adapter_model.safetensors"))
    b = load_file(str(layout.checkpoint_folder(part, 12) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_from_a_checkpoint_without_state_fails_clearly(make_spec):
    folder, spec = make_spec(max_steps=4, checkpoint_every=2, keep_last=1)
    run(folder, spec)
    assert not (layout.checkpoint_folder(folder, 2) / layout.TRAINER_STATE_FILE).exists()
    done = Trainer(folder, spec.model_copy(update={"resume_from": 2})).run()
    assert (done.status, done.code) == ("failed", "not_resumable")
    assert "optimiser state" in done.message
    done = Trainer(folder, spec.model_copy(update={"resume_from": 3})).run()
    assert (done.status, done.code) == ("failed", "not_resumable")


def test_a_cached_clip_is_not_encoded_again(make_spec, tmp_path, monkeypatch):
    cache = tmp_path / "own-cache"
    folder, spec = make_spec("first", max_steps=1, codes_cache=str(cache))
    calls = []
    real = data.encode_audio
    monkeypatch.setattr(data, "encode_audio", lambda *a: calls.append(1) or real(*a))
    assert Trainer(folder, spec).run().status == "succeeded"
    assert len(calls) == len(spec.clips)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{c.hash}.safetensors" for c in spec.clips)
    (cache / ".leftover.tmp").write_bytes(b"half")  # a kill mid-write earlier
    damaged = cache / f"{spec.clips[0].hash}.safetensors"
    damaged.write_bytes(b"not safetensors")
    folder, spec = make_spec("second", max_steps=1, codes_cache=str(cache))
    assert Trainer(folder, spec).run().status == "succeeded"
    assert len(calls) == len(spec.clips) + 1  # only the damaged entry was encoded again
    assert not (cache / ".leftover.tmp").exists()
    assert data.read_codes(damaged, 4).shape == (4, 150)
    stages = [e.message for e in events_of(folder) if e.kind == "stage" and e.stage == "encoding"]
    assert f"({len(spec.clips) - 1} from the cache)" in stages[-1]
    folder, spec = make_spec("third", max_steps=1, codes_cache=str(cache))
    assert Trainer(folder, spec).run().status == "succeeded"
    assert len(calls) == len(spec.clips) + 1  # nothing encoded the third time


def test_codes_have_the_models_layout(make_spec, codes_cache):
    folder, spec = make_spec(max_steps=1)
    Trainer(folder, spec).run()
    codes = data.read_codes(codes_cache / f"{spec.clips[0].hash}.safetensors", 4)
    assert codes.dtype == torch.int64 and codes.shape == (4, 150)  # 3 s at 50 Hz, 4 codebooks
    other = data.read_codes(codes_cache / f"{spec.clips[1].hash}.safetensors", 4)  # the other kind of tone
    assert codes.any() and not torch.equal(codes, other)  # initialised codebooks: audio tells in its codes


@pytest.mark.parametrize("case, code", [
    ("no_clips", "no_clips"),
    ("unreadable_clip", "unreadable_clip"),
    ("missing_clip", "unreadable_clip"),
    ("bad_model_folder", "model_unreadable"),
    ("no_cuda", "device_unavailable"),
])
def test_bad_input_fails_with_a_code(make_spec, tmp_path, case, code):
    fields = {"max_steps": 2}
    if case == "no_clips":
        fields["clips"] = []
    elif case in ("unreadable_clip", "missing_clip"):
        bad = tmp_path / "bad.wav"
        if case == "unreadable_clip":
            bad.write_bytes(b"RIFF not really audio")
        fields["clips"] = [layout.ClipRef(clip_id=1, file=str(bad), caption="calm bass", hash="f" * 64)]
    elif case == "bad_model_folder":
        fields["model_folder"] = str(tmp_path / "nowhere")
    elif case == "no_cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        fields["device"] = "cuda"
    folder, spec = make_spec(**fields)
    done = Trainer(folder, spec).run()
    assert (done.status, done.code) == ("failed", code)
    assert done.message and "Traceback" not in done.message
    assert events_of(folder)[-1] == done
    assert layout.checkpoint_steps(folder) == []


def test_stop_while_encoding_ends_without_a_checkpoint(make_spec, tmp_path):
    folder, spec = make_spec(max_steps=5, codes_cache=str(tmp_path / "empty-cache"))
    (folder / layout.STOP_FILE).touch()
    done = Trainer(folder, spec).run()
    assert (done.status, done.step) == ("stopped", 0)
    assert layout.checkpoint_steps(folder) == []


def test_learning_rate_schedule():
    config = TrainingConfig(learning_rate=1e-3, warmup_steps=4, lr_scheduler="cosine")
    lrs = [lr_at(config, s, 20) for s in range(1, 21)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[-1] > 0
    linear = TrainingConfig(learning_rate=1e-3, warmup_steps=0, lr_scheduler="linear")
    assert lr_at(linear, 1, 10) == pytest.approx(1e-3) and lr_at(linear, 10, 10) == pytest.approx(1e-4)
    constant = TrainingConfig(learning_rate=1e-3, warmup_steps=0, lr_scheduler="constant")
    assert {lr_at(constant, s, 10) for s in range(1, 11)} == {1e-3}


def test_sampling_depends_only_on_seed_and_step():
    a = [data.sample_items(3, 7, step, micro, 2, 2) for step in range(1, 8) for micro in range(2)]
    b = [data.sample_items(3, 7, step, micro, 2, 2) for step in range(1, 8) for micro in range(2)]
    assert a == b
    flat = [i for batch in a for i in batch]
    assert sorted(flat[:7]) == list(range(7))  # the first epoch is a permutation: every clip once
    assert data.sample_items(4, 7, 1, 0, 2, 2) != a[0] or data.sample_items(5, 7, 1, 0, 2, 2) != a[0]


def test_delay_pattern_labels():
    codes = [torch.arange(12).reshape(4, 3), torch.arange(8).reshape(4, 2) + 100]
    labels = data.delay_labels(codes, pad=2048)
    assert labels.shape == (2, 6, 4)
    assert labels[0, :, 0].tolist() == [0, 1, 2, 2048, 2048, 2048]
    assert labels[0, :, 3].tolist() == [2048, 2048, 2048, 9, 10, 11]
    assert labels[1, :, 1].tolist() == [2048, 102, 103, 2048, 2048, 2048]


def test_events_rewritten_up_to_a_step(tmp_path):
    path = tmp_path / layout.EVENTS_FILE
    t = 0.0
    lines = [layout.StageEvent(stage="training", message="", time=t)]
    lines += [layout.StepEvent(step=s, total_steps=9, epoch=0, loss=1.0, lr=1e-4, elapsed_s=0, eta_s=None, time=t)
              for s in range(1, 7)]
    lines.insert(5, layout.CheckpointEvent(step=4, folder="step-000004", loss=1.0, time=t))
    lines += [layout.StageEvent(stage="saving", message="", time=t),
              layout.CheckpointEvent(step=6, folder="step-000006", loss=1.0, time=t),
              layout.DoneEvent(status="stopped", step=6, message="", time=t)]
    for e in lines:
        layout.append_event(path, e)
    with open(path, "a") as f:
        f.write('{"kind":"step","step":7')  # a half line from a killed writer
    rewrite_events_until(path, 4)
    kept = layout.read_events(path)[0]
    assert [(e.kind, getattr(e, "step", None)) for e in kept] == [
        ("stage", None), ("step", 1), ("step", 2), ("step", 3), ("step", 4), ("checkpoint", 4)]
    assert not list(tmp_path.glob(".*.tmp"))


def test_epochs_decide_the_number_of_steps(make_spec):
    # 8 clips, batch 2 x accumulation 2: 2 steps per epoch
    folder, spec = make_spec(epochs=2, max_steps=999, gradient_accumulation_steps=2, checkpoint_every=3)
    done = Trainer(folder, spec).run()
    assert (done.status, done.step) == ("succeeded", 4)
    last = [e for e in events_of(folder) if e.kind == "step"][-1]
    assert (last.total_steps, last.epoch) == (4, 2.0)
    assert layout.checkpoint_steps(folder) == [3, 4]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_trains_with_fp32_lora(make_spec, precision):
    """The GPU policies (bf16; fp16 with loss scaling), exercised on the CPU: the frozen base in that precision,
    the LoRA matrices and the optimiser in fp32, and a resumable checkpoint."""
    folder, spec = make_spec(max_steps=3, checkpoint_every=2, precision=precision, cfg_dropout=0.0)
    trainer = Trainer(folder, spec)
    done = trainer.run()
    assert done.status == "succeeded", done.message
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)
    base = trainer.model.base_model.model.decoder.model.decoder.layers[0].fc1.weight
    assert base.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    losses = losses_of(folder)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses.values())
    resumed = Trainer(folder, spec.model_copy(update={"resume_from": 2})).run()
    assert resumed.status == "succeeded"
    assert losses_of(folder)[3] == pytest.approx(losses[3], rel=1e-3)


@pytest.mark.parametrize("error, code", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out_of_memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes"), "out_of_memory"),
    (ValueError("something unforeseen"), "training_failed"),
])
def test_a_failure_mid_training_ends_with_its_code(make_spec, monkeypatch, error, code):
    folder, spec = make_spec(max_steps=5, checkpoint_every=2)
    real = Trainer.forward_loss
    calls = []

    def failing_at_step_3(self, *batch):
        calls.append(1)
        if len(calls) == 3:
            raise error
        return real(self, *batch)

    monkeypatch.setattr(Trainer, "forward_loss", failing_at_step_3)
    logged = []
    done = Trainer(folder, spec, log=logged.append).run()
    assert (done.status, done.code, done.step) == ("failed", code, 2)
    assert "Traceback" not in done.message
    assert layout.checkpoint_steps(folder) == [2]  # what was saved before stays
    assert bool([m for m in logged if "Traceback" in m]) == (code == "training_failed")  # train.log has it


def test_stop_between_accumulated_batches_saves_the_last_whole_step(make_spec):
    """Stop asked in the middle of step 3 (of 4 accumulated batches): step 2 is saved, step 3's partial gradients
    dropped, and the resumed run's step 3 is the uninterrupted run's."""
    fields = dict(max_steps=4, gradient_accumulation_steps=4, batch_size=1, checkpoint_every=100)
    whole, spec = make_spec("whole", **fields)
    Trainer(whole, spec).run()
    part, spec = make_spec("part", **fields)
    real = Trainer.forward_loss
    calls = []

    def touching_stop(self, *batch):
        calls.append(1)
        if len(calls) == 10:  # step 3, second batch
            (part / layout.STOP_FILE).touch()
        return real(self, *batch)

    trainer = Trainer(part, spec)
    trainer.forward_loss = touching_stop.__get__(trainer)
    done = trainer.run()
    assert (done.status, done.step) == ("stopped", 2)
    assert layout.checkpoint_steps(part) == [2]
    (part / layout.STOP_FILE).unlink()
    assert Trainer(part, spec.model_copy(update={"resume_from": 2})).run().status == "succeeded"
    expected, got = losses_of(whole), losses_of(part)
    assert sorted(got) == [1, 2, 3, 4]
    assert all(got[s] == pytest.approx(expected[s], rel=1e-5, abs=1e-6) for s in expected)

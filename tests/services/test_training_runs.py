"""Training runs for real: the studio spawns `python -m studio.training.run` on the tiny model and a dataset of tones,
follows its events, auditions every checkpoint with the same seeds through the queue (waiting for the run's model),
registers checkpoints as adapter versions with their provenance, and trains DPO on a closed A/B test's votes.
Stop, resume and recovery: test_training_recovery.py. Each run costs a subprocess start (~4 s): runs are few and
short."""
from __future__ import annotations


import pytest
from safetensors.numpy import load_file

from studio.db.engine import session_scope
from studio.db.models import TrainingRun
from studio.errors import Conflict
from studio.services.jobs import JobQuery
from studio.services.training import CreateRunRequest, RegisterCheckpointRequest
from studio.training import layout
from studio.training.config import TrainingConfig
from tests.training_support import FAST, seed_dataset, wait_auditions, wait_status


def _studio(make_ctx, load: bool = True, **overrides):
    ctx = make_ctx(**overrides)
    if load:
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    return ctx


def test_a_run_trains_auditions_every_checkpoint_with_the_same_seeds_and_registers_with_provenance(make_ctx):
    ctx = _studio(make_ctx, load=False)  # no model loaded: auditions wait for it (never a switch of their own)
    dataset = seed_dataset(ctx, n=4, name="tones")
    info = ctx.training.create(CreateRunRequest(dataset_id=dataset, config=FAST,
                                                audition_prompts=["calm bass", "fast synth"], description="d"))
    assert info.status == "running" and info.total_steps == 6 and info.url == f"/?run={info.id}"
    events = [e for e in ctx.training.follow(info.id, keepalive_s=30) if e is not None]
    kinds = [e.event for e in events]
    assert kinds[0] == "status" and kinds[-1] == "done" and events[-1].status == "succeeded"
    assert [e.step for e in events if e.event == "step"] == [1, 2, 3, 4, 5, 6]
    assert [e.checkpoint_step for e in events if e.event == "checkpoint"] == [3, 6]
    assert all(e.loss is not None and e.lr is not None for e in events if e.event == "step")

    info = ctx.training.get(info.id)
    assert [c.step for c in info.checkpoints] == [0, 3, 6]
    assert all(c.status == "waiting" and c.job_id is None for cp in info.checkpoints for c in cp.auditions)
    assert [p.step for p in info.loss_curve] == [1, 2, 3, 4, 5, 6]

    # registered when it succeeded, with everything that made it
    adapter = ctx.adapters.get(info.adapter_id)
    assert adapter.label == "tones v1" and adapter.base_model == "studio-tiny" and adapter.description == "d"
    assert adapter.training_run_id == str(info.id) and adapter.trained_at is not None
    data = ctx.datasets.get(dataset)
    assert adapter.training_dataset == f"tones v{data.version} (sha256:{data.content_hash[:16]}…)"
    config = adapter.training_config
    assert set(TrainingConfig.model_fields) <= set(config) and config["method"] == "sft"
    assert config["max_steps"] == 6 and config["r"] == 4
    metrics = adapter.training_metrics
    losses = [p.loss for p in info.loss_curve]
    assert metrics["steps"] == 6 and metrics["first_loss"] == losses[0] and metrics["final_loss"] == losses[-1]
    assert metrics["min_loss"] == min(losses) and len(metrics["loss"]) == 6
    with session_scope(ctx.engine) as s:
        run = s.get(TrainingRun, info.id)
        assert adapter.base_model_revision == run.base_model_revision
        assert run.base_weights_hash and ctx.adapters.get(info.adapter_id).training_run_id == str(run.id)
    timeline = ctx.adapters.timeline("tones")
    assert timeline[0].training_run_url == f"/?run={info.id}" and timeline[0].final_loss == losses[-1]

    # any checkpoint on request; the same one twice is refused
    earlier = ctx.training.register(info.id, RegisterCheckpointRequest(step=3, name="tones"))
    assert earlier.label == "tones v2" and earlier.training_config["checkpoint_step"] == 3
    assert earlier.training_metrics["steps"] == 3
    with pytest.raises(Conflict) as refused:
        ctx.training.register(info.id, RegisterCheckpointRequest(step=3))
    assert refused.value.code == "checkpoint_registered"

    # the model loaded: the waiting auditions are queued, the same prompts and seeds for every checkpoint
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    info = wait_auditions(ctx, info.id)
    by_step = {cp.step: cp.auditions for cp in info.checkpoints}
    assert all(c.status == "succeeded" and c.audio_url for clips in by_step.values() for c in clips)
    assert [(c.prompt, c.seed) for c in by_step[0]] == [(c.prompt, c.seed) for c in by_step[3]] == \
        [(c.prompt, c.seed) for c in by_step[6]]
    codes = {step: [load_file(str(ctx.jobs.audio_path(c.job_id).with_name(
        ctx.jobs.audio_path(c.job_id).stem + ".codes.safetensors")))["codes"] for c in clips]
        for step, clips in by_step.items()}
    assert codes[0][0].shape == codes[6][0].shape
    # audition clips: out of History, served to whoever follows the run
    assert ctx.jobs.search(JobQuery()).total == 0
    assert ctx.jobs.search(JobQuery(source="training")).total == 6
    assert ctx.jobs.audio_path(by_step[6][0].job_id).is_file()
    assert info.checkpoints[2].adapter_label == "tones v1" and info.checkpoints[1].adapter_label == "tones v2"

    # the registered version is an adapter like any other: compatible with the loaded base, used in a generation
    assert ctx.adapters.get(info.adapter_id).compatible
    from studio.services.generation import GenerateRequest
    made = ctx.generation.generate(GenerateRequest(prompt="calm bass", duration_s=1.0, seed=0,
                                                   adapter_id=info.adapter_id))
    assert made.adapter_label == "tones v1"
    # the same prompt, seed and weights as the last checkpoint's audition: the same music
    assert (load_file(str(made.output_file.with_name(made.output_file.stem + ".codes.safetensors")))["codes"]
            == codes[6][0]).all()


def test_a_dpo_run_learns_from_a_closed_ab_tests_votes_starting_from_the_winner(make_ctx, tiny_folder):
    import numpy as np
    from datetime import datetime, timezone

    from safetensors.numpy import save_file

    from studio.db.models import ABPair, ABTest, ABVote, Job
    from studio.services.adapters import RegisterAdapterRequest
    from tests.adapters_factory import make_lora

    ctx = _studio(make_ctx)
    make_lora(tiny_folder, ctx.settings.data_dir / "imports" / "winner", base_name="studio-tiny")
    winner = ctx.adapters.register(RegisterAdapterRequest(source="folder", path="winner"))
    rng = np.random.default_rng(0)
    outputs = ctx.settings.data_dir / "outputs"
    outputs.mkdir(parents=True, exist_ok=True)
    # pairs 0-3: B preferred by most listeners; 4: A; 5: a tie (skipped); 6: only "no preference" (skipped)
    votes = [("b", "b", "a"), ("b", "b"), ("b",), ("b", "none"), ("a", "a"), ("a", "b"), ("none",)]
    with session_scope(ctx.engine) as s:
        test = ABTest(name="warmth", model_id="studio-tiny", side_a={"adapter_id": None},
                      side_b={"adapter_id": winner.id}, prompts=["calm bass", "fast synth"], seeds_per_prompt=4,
                      duration_s=1, secret="s", status="ready", closed_at=datetime.now(timezone.utc))
        s.add(test)
        s.commit()
        codes_of = {}
        for i, choices in enumerate(votes):
            jobs = []
            for side in "ab":
                path = outputs / f"p{i}{side}.codes.safetensors"
                save_file({"codes": rng.integers(0, 2048, (4, 50)).astype(np.int64)}, str(path))
                job = Job(prompt=test.prompts[i % 2], model_id="studio-tiny", settings={}, seed=i, duration_s=1,
                          sample_rate=32000, status="succeeded", abtest_id=test.id,
                          codes_file=path.relative_to(ctx.settings.data_dir).as_posix())
                s.add(job)
                s.commit()
                jobs.append(job.id)
                codes_of[i, side] = str(path)
            pair = ABPair(abtest_id=test.id, position=i, prompt=test.prompts[i % 2], seed=i, job_a_id=jobs[0],
                          job_b_id=jobs[1])
            s.add(pair)
            s.commit()
            s.add_all([ABVote(abtest_id=test.id, pair_id=pair.id, listener=f"l{k}", choice=c)
                       for k, c in enumerate(choices)])
            s.commit()
        test_id = test.id
    run = ctx.training.create(CreateRunRequest(method="dpo", abtest_id=test_id, config={
        **FAST, "max_steps": 4, "checkpoint_every": 4, "dpo_beta": 0.5}))
    assert run.start_adapter_id == winner.id and run.name == "warmth" and run.audition_prompts == ["calm bass"]
    spec = layout.RunSpec.model_validate_json(
        (ctx.settings.data_dir / "training" / "runs" / str(run.id) / "spec.json").read_text())
    assert [(p.chosen, p.rejected) for p in spec.pairs] == [
        (codes_of[i, w], codes_of[i, "a" if w == "b" else "b"]) for i, w in enumerate("bbbba")]
    assert spec.start_adapter == str(ctx.adapters.for_generation(winner.id, ctx.registry.get("studio-tiny"),
                                                                 None).folder)
    done = wait_status(ctx, run.id, ("succeeded", "failed", "interrupted"))
    assert done.status == "succeeded" and done.adapter_id is not None, (done.error, done.log_tail)
    assert all(p.accuracy is not None for p in done.loss_curve)
    adapter = ctx.adapters.get(done.adapter_id)
    assert adapter.training_config["method"] == "dpo" and adapter.training_config["dpo_beta"] == 0.5
    assert adapter.training_config["start_adapter_id"] == winner.id and "warmth" in adapter.training_dataset
    assert "final_accuracy" in adapter.training_metrics
    step0 = wait_auditions(ctx, run.id).checkpoints[0].auditions[0]
    with session_scope(ctx.engine) as s:  # the starting point is the winner, auditioned as such
        assert s.get(Job, step0.job_id).adapter_id == winner.id

"""Automatic scores and evaluation runs (studio/services/evaluation.py) with Studio Tiny and studio-tiny-clap, loaded
through the same code as a hub CLAP; without any evaluation model the studio says so and keeps working."""
from __future__ import annotations

import math
import time

import pytest
from sqlmodel import select

from studio.db.engine import session_scope
from studio.db.models import Evaluation, Job, Score
from studio.errors import Conflict, NotFound, StudioError
from studio.services.evaluation import PromptSet, load_prompt_set
from studio.services.generation import GenerateRequest, JobRequest

TWO = PromptSet(duration_s=1.0, prompts=[{"prompt": "rock drums", "seed": 11}, {"prompt": "calm piano", "seed": 12}])


def _studio(make_ctx, **overrides):
    ctx = make_ctx(eval_model="studio-tiny-clap", **overrides)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ctx.evaluation.prompt_set = TWO
    return ctx


def _generate(ctx, prompt="calm piano", seed=3):
    return ctx.generation.generate(GenerateRequest(prompt=prompt, duration_s=1.0, seed=seed)).job_id


def _over(ctx, evaluation_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = ctx.evaluation.get_evaluation(evaluation_id)
        if info.status != "running":
            return info
        time.sleep(0.1)
    raise AssertionError(f"evaluation {evaluation_id} still running: {info}")


def _scores(ctx) -> list[tuple[int, str, float]]:
    with session_scope(ctx.engine) as session:
        return [(s.job_id, s.scorer, s.value) for s in session.exec(select(Score).order_by(Score.id))]


def test_the_shipped_prompt_set_is_varied_with_fixed_seeds_and_a_short_duration():
    prompts = load_prompt_set()
    assert len(prompts.prompts) == 8 and prompts.duration_s <= 10
    assert len({p.prompt for p in prompts.prompts}) == 8 and len({p.seed for p in prompts.prompts}) == 8


def test_a_job_is_scored_once_in_range_and_the_same_every_time(make_ctx):
    ctx = _studio(make_ctx)
    job_id = _generate(ctx)
    score = ctx.evaluation.score_job(job_id)
    assert score.job_id == job_id and score.scorer == "studio-tiny-clap"
    assert math.isfinite(score.value) and -1.0 <= score.value <= 1.0
    assert ctx.evaluation.score_job(job_id) == score  # asked again: the stored score, not a second one
    assert _scores(ctx) == [(job_id, "studio-tiny-clap", score.value)]
    # the same prompt, seed and settings make the same audio, which gets the same score
    again = _generate(ctx)
    assert ctx.evaluation.score_job(again).value == pytest.approx(score.value, abs=1e-6)
    assert ctx.evaluation.scores([job_id, again, 999]) == {
        job_id: [score], again: [ctx.evaluation.score_job(again)]}


def test_without_an_evaluation_model_scores_are_refused_saying_how_to_get_one_and_the_studio_works(make_ctx):
    ctx = make_ctx()  # the default evaluation model (a hub CLAP) is not downloaded; no --eval-model
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    models = ctx.evaluation.models()
    assert models.current is None and not any(m.in_use for m in models.models)
    assert "--eval-model studio-tiny-clap" in models.note and "Tiny CLAP Hub" in models.note
    job_id = _generate(ctx)
    with pytest.raises(Conflict) as refused:
        ctx.evaluation.score_job(job_id)
    assert refused.value.code == "no_evaluation_model" and refused.value.status == 409
    assert "POST /api/evaluation/models/current" in refused.value.message
    with pytest.raises(Conflict) as run:
        ctx.evaluation.evaluate(None, None)
    assert run.value.code == "no_evaluation_model"
    assert ctx.evaluation.request_scores([job_id]) is False  # the background path never raises for it
    assert ctx.evaluation.list_evaluations() == [] and _scores(ctx) == []  # nothing half-recorded
    assert _generate(ctx, seed=4) > job_id  # generation goes on


def test_a_registry_without_evaluation_models_says_so(make_ctx):
    from tests.conftest import registry_dict

    raw = registry_dict()
    raw.pop("evaluation_models"), raw.pop("default_evaluation_model")
    ctx = make_ctx(raw)
    assert ctx.evaluation.models().models == []
    with pytest.raises(Conflict, match="registry.yaml lists none"):
        ctx.evaluation._scorer()


def test_an_unknown_eval_model_is_refused_at_start(make_ctx):
    with pytest.raises(NotFound, match="studio-tiny-clap"):
        make_ctx(eval_model="no-such-clap")


@pytest.mark.parametrize("status", ["queued", "running", "failed", "cancelled", "interrupted"])
def test_a_job_without_audio_cannot_be_scored(make_module_ctx, status):
    ctx = make_module_ctx(eval_model="studio-tiny-clap")
    with session_scope(ctx.engine) as session:
        job = Job(prompt="p", model_id="studio-tiny", settings={}, seed=1, duration_s=1.0, sample_rate=32000,
                  status=status)
        session.add(job)
        session.commit()
        job_id = job.id
    with pytest.raises(Conflict) as refused:
        ctx.evaluation.score_job(job_id)
    assert refused.value.code == "job_not_scorable" and status in refused.value.message
    with pytest.raises(NotFound):
        ctx.evaluation.score_job(job_id + 100)


def test_a_job_whose_file_is_gone_is_refused_and_nothing_is_stored(make_ctx):
    ctx = _studio(make_ctx)
    job_id = _generate(ctx)
    ctx.jobs.audio_path(job_id).unlink()
    with pytest.raises(Conflict, match="missing or damaged"):
        ctx.evaluation.score_job(job_id)
    assert _scores(ctx) == []


def test_clips_are_scored_in_the_background_once_they_are_done(make_ctx):
    ctx = _studio(make_ctx)
    accepted = ctx.generation.submit(JobRequest(prompt="lofi beat", duration_s=1.0, seed=5, variations=2))
    assert ctx.evaluation.request_scores(accepted.job_ids) is True
    deadline = time.monotonic() + 60
    while len(_scores(ctx)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(j for j, _, _ in _scores(ctx)) == accepted.job_ids


def test_an_evaluation_run_generates_the_prompt_set_scores_each_clip_and_stores_the_mean(make_ctx):
    ctx = _studio(make_ctx)
    started = ctx.evaluation.evaluate("studio-tiny", None, "alice")
    assert started.status == "running" and started.total == 2 and started.created_by == "alice"
    info = _over(ctx, started.id)
    assert info.status == "succeeded" and info.error is None and info.done == 2
    assert [(c.prompt, c.seed, c.status) for c in info.clips] == [("rock drums", 11, "succeeded"),
                                                                  ("calm piano", 12, "succeeded")]
    values = [c.score for c in info.clips]
    assert info.n == 2 and info.mean_score == pytest.approx(sum(values) / 2)
    assert info.scorer == "studio-tiny-clap" and info.duration_s == 1.0
    jobs = [ctx.jobs.get(c.job_id) for c in info.clips]
    assert all(j.duration_s == 1.0 and j.adapter_id is None for j in jobs)
    with session_scope(ctx.engine) as session:  # the clips are the run's, not a person's generations
        assert {j.evaluation_id for j in session.exec(select(Job))} == {info.id}
    # a second run on the same prompts and seeds is comparable clip by clip (and, same model: equal)
    second = _over(ctx, ctx.evaluation.evaluate(None, None).id)
    pairs = ctx.evaluation.paired_scores(info.id, second.id)
    assert pairs == [(pytest.approx(v, abs=1e-6), pytest.approx(v, abs=1e-6)) for v in values]
    assert ctx.evaluation.compare(info.id, second.id).verdict == "not_enough_data"
    assert [e.id for e in ctx.evaluation.list_evaluations(model_id="studio-tiny")] == [second.id, info.id]
    assert ctx.evaluation.list_evaluations(adapter_id=5) == []
    assert len(ctx.evaluation.list_evaluations(base_only=True)) == 2


@pytest.mark.parametrize("model_id, code", [("tiny-hub", "model_not_loaded"), ("nope", "model_not_found")])
def test_an_evaluation_of_a_model_not_loaded_is_refused_before_anything_is_recorded(make_ctx, model_id, code):
    ctx = _studio(make_ctx)
    with pytest.raises(StudioError) as refused:
        ctx.evaluation.evaluate(model_id, None)
    assert refused.value.code == code
    assert ctx.evaluation.list_evaluations() == [] and ctx.jobs.list() == []


def test_an_evaluation_of_an_unknown_adapter_is_refused_before_anything_is_recorded(make_ctx):
    ctx = _studio(make_ctx)
    with pytest.raises(NotFound) as refused:
        ctx.evaluation.evaluate(None, 77)
    assert refused.value.code == "adapter_not_found"
    assert ctx.evaluation.list_evaluations() == [] and ctx.jobs.list() == []


def test_a_cancelled_run_ends_cancelled(make_ctx):
    ctx = _studio(make_ctx)
    ctx.evaluation.prompt_set = PromptSet(duration_s=5.0, prompts=TWO.prompts)
    started = ctx.evaluation.evaluate(None, None)
    info = ctx.evaluation.cancel(started.id)
    info = _over(ctx, info.id)
    assert info.status == "cancelled" and info.finished_at is not None
    assert all(c.status in ("cancelled", "succeeded") for c in info.clips)
    with pytest.raises(NotFound):
        ctx.evaluation.cancel(999)


def _killed_mid_run(make_ctx, statuses=("running", "queued")):
    """A studio that died during an evaluation run: by default its first clip was decoding, the second waiting
    (None: the clip's job was not recorded yet)."""
    first = make_ctx(eval_model="studio-tiny-clap")
    with session_scope(first.engine) as session:
        ev = Evaluation(model_id="studio-tiny", scorer="studio-tiny-clap", prompts=["rock drums", "calm piano"],
                        seeds=[11, 12], duration_s=1.0, status="running")
        session.add(ev)
        session.commit()
        for prompt, seed, status in zip(ev.prompts, ev.seeds, statuses):
            if status is not None:
                session.add(Job(prompt=prompt, model_id="studio-tiny", settings={}, seed=seed, duration_s=1.0,
                                sample_rate=32000, status=status, evaluation_id=ev.id))
        session.commit()
        return first.settings.data_dir, ev.id


@pytest.mark.parametrize("statuses, kept", [
    (("running", "queued"), [("calm piano", "succeeded"), ("rock drums", "interrupted"), ("rock drums", "succeeded")]),
    ((None, None), [("calm piano", "succeeded"), ("rock drums", "succeeded")]),  # killed before its clips were queued
], ids=["a clip decoding, one waiting", "no clip queued yet"])
def test_a_run_interrupted_by_a_restart_is_taken_up_again_and_completes(make_ctx, statuses, kept):
    data_dir, evaluation_id = _killed_mid_run(make_ctx, statuses)
    ctx = make_ctx(eval_model="studio-tiny-clap", data_dir=data_dir)  # the next start: running -> interrupted
    assert ctx.evaluation.get_evaluation(evaluation_id).clips[0].status == (
        "interrupted" if statuses[0] else "pending")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"  # the start-up model (--model studio-tiny)
    ctx.start_background_load().join(60)  # runs the waiting clip, then takes the run up again
    info = _over(ctx, evaluation_id)
    assert info.status == "succeeded" and info.n == 2 and info.error is None
    assert [c.status for c in info.clips] == ["succeeded", "succeeded"]
    with session_scope(ctx.engine) as session:  # an interrupted job is kept as it was; a new one made the clip
        assert sorted((j.prompt, j.status) for j in session.exec(select(Job))) == kept


def test_a_run_that_cannot_go_on_after_a_restart_is_recorded_as_failed(make_ctx):
    data_dir, evaluation_id = _killed_mid_run(make_ctx)
    ctx = make_ctx(eval_model="studio-tiny-clap", data_dir=data_dir)
    assert ctx.evaluation.resume() == []  # no model is loaded: the interrupted clip cannot be made again
    info = ctx.evaluation.get_evaluation(evaluation_id)
    assert info.status == "failed" and info.finished_at is not None
    assert "start the evaluation again" in info.error and "Interrupted" in info.error


def test_the_base_model_and_an_adapter_are_compared_on_the_same_prompts_and_seeds(make_ctx, tiny_folder, tmp_path):
    from studio.services.adapters import RegisterAdapterRequest
    from tests import adapters_factory as factory

    ctx = _studio(make_ctx)
    lora = factory.make_lora(tiny_folder, ctx.settings.data_dir / "imports" / "lora", seed=1)
    adapter = ctx.adapters.register(RegisterAdapterRequest(source="folder", path=str(lora)))
    base = _over(ctx, ctx.evaluation.evaluate(None, None).id)
    tuned = _over(ctx, ctx.evaluation.evaluate("studio-tiny", adapter.id).id)
    assert tuned.status == "succeeded" and tuned.adapter_id == adapter.id and tuned.adapter_label == adapter.label
    assert [(c.prompt, c.seed) for c in tuned.clips] == [(c.prompt, c.seed) for c in base.clips]
    assert all(ctx.jobs.get(c.job_id).adapter_id == adapter.id for c in tuned.clips)
    pairs = ctx.evaluation.paired_scores(base.id, tuned.id)
    assert pairs == [(b.score, t.score) for b, t in zip(base.clips, tuned.clips)]
    assert [e.id for e in ctx.evaluation.list_evaluations(adapter_id=adapter.id)] == [tuned.id]
    assert [e.id for e in ctx.evaluation.list_evaluations(base_only=True)] == [base.id]
    assert ctx.evaluation.latest("studio-tiny").id == base.id
    assert ctx.evaluation.latest("studio-tiny", adapter.id).id == tuned.id
    assert ctx.evaluation.latest("studio-tiny", adapter.id, scorer="tiny-clap-hub") is None
    assert ctx.evaluation.latest("tiny-hub") is None


def test_scoring_waits_for_the_generation_running_on_the_device(make_ctx):
    """A score is a task of the worker that owns the device: asked for while a batch decodes, it runs after it."""
    ctx = _studio(make_ctx)
    first = _generate(ctx)
    ctx.evaluation.score_job(first)  # the CLAP is loaded: what follows measures the order, not the load
    second = _generate(ctx, seed=9)
    long = ctx.generation.submit(JobRequest(prompt="long", duration_s=4.0, seed=1)).job_id
    while ctx.jobs.get(long).status == "queued":
        time.sleep(0.01)
    score = ctx.evaluation.score_job(second)
    job = ctx.jobs.get(long)
    assert job.status == "succeeded" and job.finished_at <= score.created_at


def test_a_score_waiting_when_the_studio_stops_is_told_so(make_ctx):
    from studio.runtime.worker import ScoreTask

    ctx = _studio(make_ctx)
    ctx.generation.submit(JobRequest(prompt="long", duration_s=10.0, seed=1))
    task = ScoreTask("studio-tiny-clap", ctx.settings.models_dir / "studio-tiny-clap", (("x", ctx.settings.data_dir),))
    ctx.queue.worker.submit(task)
    ctx.close()
    with pytest.raises(RuntimeError, match="stopped"):
        task.result.result(timeout=10)


def test_a_damaged_evaluation_model_fails_the_score_saying_why_and_the_next_one_works(make_ctx):
    from studio.errors import OperationFailed

    ctx = _studio(make_ctx)
    job_id = _generate(ctx)
    folder = ctx.evaluation._scorer()[1]
    good = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(good[:100])  # a truncated file
    with pytest.raises(OperationFailed) as failed:
        ctx.evaluation.score_job(job_id)
    assert failed.value.code == "scoring_failed" and "Studio Tiny CLAP" in failed.value.message
    assert _scores(ctx) == []
    (folder / "model.safetensors").write_bytes(good)
    assert -1 <= ctx.evaluation.score_job(job_id).value <= 1  # the worker went on


def test_runs_scored_by_different_evaluation_models_are_not_compared(make_ctx):
    ctx = make_ctx(eval_model="studio-tiny-clap")
    with session_scope(ctx.engine) as session:
        runs = [Evaluation(model_id="studio-tiny", scorer=scorer, prompts=["p"], seeds=[1], duration_s=1.0,
                           status="succeeded") for scorer in ("studio-tiny-clap", "tiny-clap-hub")]
        session.add_all(runs)
        session.commit()
        a, b = (r.id for r in runs)
    with pytest.raises(Conflict) as refused:
        ctx.evaluation.comparison(a, b)
    assert refused.value.code == "different_scorers"
    assert ctx.evaluation.comparison(a, a).pairs == []  # no clip scored: nothing to pair

"""The job queue (issue 9): every generation and switch of every client goes through one worker in order; nothing
is refused as busy, a waiting job knows its place, switches are barriers, jobs are validated against the model
they will run on, waiting and running jobs can be cancelled, and a full queue says when to come back."""
from __future__ import annotations

import threading

import pytest

from studio.errors import Cancelled, InvalidValues, QueueFull, StudioError
from studio.services.generation import GenerateRequest, JobRequest
from studio.services.job_events import AudioChunk, JobEvent
from tests.conftest import registry_dict
from tests.live import held_decoding, hold_fetch


def one_at_a_time(**extra_models) -> dict:
    reg = registry_dict(**extra_models)
    for model in reg["models"]:
        model["max_batch"] = 1  # every job alone: the order of the queue is the order they run in
    return reg


@pytest.fixture
def serial(make_ctx):
    ctx = make_ctx(one_at_a_time())
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    return ctx


def events_of(ctx, job_id) -> list:
    return list(ctx.generation.follow(job_id))


def test_jobs_wait_in_order_and_each_is_told_its_place(serial):
    ctx = serial
    with held_decoding(ctx) as running:
        first = ctx.generation.submit(JobRequest(prompt="first", duration_s=0.5, seed=1))
        assert running.wait(20)
        later = [ctx.generation.submit(JobRequest(prompt=f"p{i}", duration_s=0.5, seed=i)) for i in range(3)]
        assert [a.position for a in later] == [1, 2, 3] and all(a.status == "queued" for a in later)
        view = ctx.queue.view()
        assert [(i.state, i.position, i.prompt) for i in view.items] == [
            ("running", 0, "first"), ("queued", 1, "p0"), ("queued", 2, "p1"), ("queued", 3, "p2")]
        assert view.waiting == 3 and f"generate job {later[0].job_id}" in view.next
    results = [ctx.generation.wait(a.job_id) for a in [first, *later]]
    jobs = [ctx.jobs.get(r.job_id) for r in results]
    assert [j.started_at for j in jobs] == sorted(j.started_at for j in jobs)  # first come, first served
    assert all(j.status == "succeeded" and j.batch_size == 1 for j in jobs)
    # The last one heard its place go down as the others finished, then ran.
    said = [(e.event, e.position) for e in events_of(ctx, later[2].job_id) if isinstance(e, JobEvent)]
    assert said[0] == ("succeeded", None)  # it is over: a late follower gets its final event only
    assert ctx.queue.view().items == []


def test_a_follower_hears_queued_running_audio_and_the_end(serial):
    ctx = serial
    with held_decoding(ctx) as running:
        ctx.generation.submit(JobRequest(prompt="first", duration_s=0.5, seed=1))
        assert running.wait(20)
        job = ctx.generation.submit(JobRequest(prompt="second", duration_s=1.0, seed=2))
        follower = ctx.generation.follow(job.job_id)
        assert next(follower).event == "queued"
    items = list(follower)
    states = [i.event for i in items if isinstance(i, JobEvent) and i.event != "queued"]
    assert states[0] == "running" and states[-1] == "succeeded" and "failed" not in states
    positions = [i.position for i in items if isinstance(i, JobEvent) and i.event == "queued"]
    assert set(positions) <= {1}  # it was next already
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    assert chunks and sum(len(c.audio) for c in chunks) == 32000  # the stream covers the whole clip
    assert [c.start_sample for c in chunks] == [sum(len(c.audio) for c in chunks[:k]) for k in range(len(chunks))]
    assert items[-1].audio_url == f"/api/jobs/{job.job_id}/audio"


def test_cancel_a_waiting_job_and_a_running_one(db_url, serial):
    ctx = serial
    with held_decoding(ctx) as running:
        first = ctx.generation.submit(JobRequest(prompt="first", duration_s=2, seed=1))
        assert running.wait(20)
        waiting = ctx.generation.submit(JobRequest(prompt="waiting", duration_s=0.5, seed=2))
        assert ctx.generation.cancel_job(waiting.job_id) == "queued"
        assert ctx.jobs.get(waiting.job_id).status == "cancelled"  # at once, before the running one moves on
        assert ctx.generation.cancel_job(first.job_id) == "running"
    with pytest.raises(Cancelled):
        ctx.generation.wait(first.job_id)
    with pytest.raises(Cancelled, match="before it started"):
        ctx.generation.wait(waiting.job_id)
    assert ctx.jobs.get(first.job_id).status == "cancelled" and not ctx.jobs.get(first.job_id).has_audio
    assert ctx.generation.cancel_job(first.job_id) is None  # over already
    assert not list((ctx.settings.data_dir / "outputs").glob("*"))  # no file of a cancelled job
    assert ctx.generation.generate(GenerateRequest(prompt="after", duration_s=0.5, seed=3)).job_id  # usable


def test_a_full_queue_refuses_and_says_when_to_come_back(make_ctx):
    ctx = make_ctx(one_at_a_time(), max_queue=2)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with held_decoding(ctx) as running:
        ctx.generation.submit(JobRequest(prompt="running", duration_s=0.5, seed=1))
        assert running.wait(20)
        ctx.generation.submit(JobRequest(prompt="w", duration_s=0.5, seed=2, variations=2))  # fills the queue
        before = len(ctx.jobs.list())
        with pytest.raises(QueueFull) as full:
            ctx.generation.submit(JobRequest(prompt="one too many", duration_s=0.5))
        assert full.value.status == 429 and full.value.extra["retry_after_s"] >= 1
        assert "queue is full" in full.value.message and len(ctx.jobs.list()) == before  # nothing recorded
    assert all(ctx.generation.wait(j.id).job_id for j in ctx.jobs.list())


def test_a_switch_is_a_barrier_and_jobs_are_checked_against_the_model_they_will_run_on(make_ctx):
    ctx = make_ctx(one_at_a_time(**{"tiny-short": {"max_duration_s": 3}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    gate = hold_fetch(ctx)
    with held_decoding(ctx) as running:
        before = ctx.generation.submit(JobRequest(prompt="before", duration_s=5, seed=1))
        assert running.wait(20)
        switch = ctx.models.switch("tiny-short")
        first = next(switch)
        assert first.stage == "queued" and "after the 1 job(s)" in first.message
        # Accepted after the switch: checked against tiny-short's limit, and run on it.
        with pytest.raises(InvalidValues) as refused:
            ctx.generation.submit(JobRequest(prompt="too long for it", duration_s=5))
        assert refused.value.code == "duration_exceeds_limit" and refused.value.extra["model_id"] == "tiny-short"
        after = ctx.generation.submit(JobRequest(prompt="after", duration_s=2, seed=2))
        assert after.model_id == "tiny-short" and after.position == 2  # behind the switch
        assert ctx.queue.target_model() == "tiny-short"
    gate.set()
    assert list(switch)[-1].stage == "ready"
    assert ctx.generation.wait(before.job_id).model_id == "studio-tiny"
    assert ctx.generation.wait(after.job_id).model_id == "tiny-short"


def test_jobs_planned_before_a_switch_and_accepted_after_it_are_refused_not_run_on_the_other_model(make_ctx):
    from sqlmodel import select

    from studio.db.engine import session_scope
    from studio.db.models import Job

    ctx = make_ctx(one_at_a_time(**{"tiny-b": {}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    gate = hold_fetch(ctx)
    with held_decoding(ctx) as running:
        busy = ctx.generation.submit(JobRequest(prompt="busy", duration_s=1, seed=1))
        assert running.wait(20)
        plans = ctx.generation.plan(GenerateRequest(prompt="planned for tiny", duration_s=1, seed=2))
        switch = ctx.models.switch("tiny-b")  # someone switches between the plan and its acceptance
        assert next(switch).stage == "queued"
        with pytest.raises(StudioError) as refused:
            ctx.queue.accept(plans)
        assert refused.value.code == "model_changed" and refused.value.status == 409
        assert "Tiny" in refused.value.message and "Submit them again" in refused.value.message
        with session_scope(ctx.engine) as session:  # nothing half-recorded: only the running job
            assert [j.id for j in session.exec(select(Job))] == [busy.job_id]
    gate.set()
    assert list(switch)[-1].stage == "ready"


def test_variations_are_decoded_together_each_with_its_seed(ctx):
    accepted = ctx.generation.submit(JobRequest(prompt="takes", duration_s=1, seed=40, variations=3))
    assert accepted.seeds == [40, 41, 42] and len(accepted.job_ids) == 3
    results = [ctx.generation.wait(j) for j in accepted.job_ids]
    assert [r.seed for r in results] == [40, 41, 42] and {r.batch_size for r in results} == {3}
    import soundfile as sf

    audio = [sf.read(r.output_file)[0] for r in results]
    assert not (audio[0] == audio[1]).all() and not (audio[1] == audio[2]).all()
    alone = ctx.generation.generate(GenerateRequest(prompt="takes", duration_s=1, seed=41))
    assert (sf.read(alone.output_file)[0] == audio[1]).all()  # a take is what its seed alone gives


def test_many_clients_at_once_are_all_served(ctx):
    results, errors = [], []

    def client(i):
        try:
            results.append(ctx.generation.generate(GenerateRequest(prompt=f"client {i}", duration_s=0.5, seed=i)))
        except Exception as exc:  # noqa: BLE001 - collected: the test says which failed
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(r.prompt for r in results) == sorted(f"client {i}" for i in range(8))
    assert max(r.batch_size for r in results) > 1  # those that waited together were decoded together


def test_jobs_accepted_while_the_start_up_model_loads_run_once(make_ctx):
    """Start-up queues the model's load, then the jobs a stopped studio left queued: a job accepted meanwhile by
    this studio is not queued a second time."""
    ctx = make_ctx()
    gate = hold_fetch(ctx)
    switch = ctx.models.switch("studio-tiny")
    accepted = ctx.generation.submit(JobRequest(prompt="early", duration_s=0.5, seed=1))
    assert ctx.generation.resume() == []  # it is this studio's own job, already in the queue
    gate.set()
    assert list(switch)[-1].stage == "ready"
    assert ctx.generation.wait(accepted.job_id).prompt == "early"
    assert [j.prompt for j in ctx.jobs.list()] == ["early"]


def test_a_job_behind_a_failed_switch_fails_saying_why_in_model_names(make_ctx):
    ctx = make_ctx(registry_dict(**{"tiny-b": {}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    gate = hold_fetch(ctx)

    def broken(spec, on_bytes):
        gate.wait(30)
        raise OSError("the hub cannot be reached")

    ctx.manager.store.fetch = broken
    switch = ctx.models.switch("tiny-b")
    job = ctx.generation.submit(JobRequest(prompt="after", duration_s=0.5, seed=1))
    assert job.model_id == "tiny-b"
    gate.set()
    assert list(switch)[-1].stage == "error"
    with pytest.raises(StudioError) as failed:
        ctx.generation.wait(job.job_id)
    assert failed.value.code == "model_not_loaded" and failed.value.status == 409
    assert failed.value.message == ("Not generated: this job was for tiny-b, which could not be loaded (Could not "
                                    "download tiny-b: the hub cannot be reached. Studio Tiny stays loaded); "
                                    "Studio Tiny is loaded. Generate again to run it on Studio Tiny, or switch "
                                    "models again.")


def test_the_header_follows_the_batch_not_whichever_row_reported_last(ctx):
    accepted = ctx.generation.submit(JobRequest(prompt="takes", duration_s=2, seed=5, variations=3))
    seen: list[str] = []
    ctx.generation.wait(accepted.job_ids[1], on_step=lambda done, total: seen.append(ctx.models.current().activity))
    said = [s for s in seen if s]
    assert said and all(s.startswith(f"generating job {accepted.job_id} and 2 more: ") for s in said), said


def test_a_training_run_beside_the_worker_takes_cores_from_its_decodes(ctx, monkeypatch):
    """Device policy "beside" on a CPU: while a run holds N threads, the worker decodes with N fewer (at least 1),
    from its next task on; all of them again once the run ends."""
    import torch

    worker = ctx.queue.worker
    # the suite runs torch on one thread (conftest): give the worker two of its own, so that a run's share shows
    monkeypatch.setattr(worker, "_own_threads", 2)
    seen = []
    real = worker._generate
    monkeypatch.setattr(worker, "_generate", lambda batch: (seen.append(torch.get_num_threads()), real(batch)))
    request = GenerateRequest(prompt="calm bass", duration_s=0.2, seed=1)
    try:
        ctx.generation.generate(request)
        own = seen[-1]
        ctx.queue.share_cpu(1)
        ctx.generation.generate(request)
        ctx.queue.share_cpu(0)
        ctx.generation.generate(request)
    finally:
        torch.set_num_threads(1)  # the worker set the count new threads get: the suite's one again
    assert seen == [own, max(1, own - 1), own] and own == 2

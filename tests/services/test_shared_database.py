"""Two studios on one PostgreSQL database (each with its own data directory): each runs, interrupts and takes up
only its own jobs, and writers from both at once (threads) keep every record: no rating, version, settings change
or dataset edit lost or duplicated. The database enforces it (row locks, conditional updates, unique constraints),
not a lock of one process."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

import tests.adapters_factory as factory
from studio.db.engine import session_scope
from studio.db.models import ABPair, ABTest, ABVote, Adapter, GenerationConfigChange, Job, Rating
from studio.errors import Conflict, StudioError
from studio.services.adapters import RegisterAdapterRequest
from studio.services.datasets import ClipCaption, ClipsEdit, CreateDatasetRequest
from studio.services.generation import JobRequest
from studio.users import Actor
from tests.tone_dataset import write_tone_folder


@pytest.fixture
def pair(make_ctx, postgres_server, tmp_path):
    """Studios A and B: two data directories, one PostgreSQL database."""
    url = postgres_server.create_database()
    imports = tmp_path / "imports"
    imports.mkdir()
    a = make_ctx(database_url=url, import_roots=(imports,))
    b = make_ctx(database_url=url, import_roots=(imports,))
    a.url, b.url, a.imports, b.imports = url, url, imports, imports
    return a, b


def at_once(*calls):
    """Run the calls together (threads released at one barrier); their results, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(run, c) for c in calls]]


def outcome(call):
    """A call's result, or the code of the StudioError it raised."""
    def run():
        try:
            return call()
        except StudioError as exc:
            return exc.code

    return run


def jobs(ctx) -> dict[int, Job]:
    with session_scope(ctx.engine) as s:
        return {j.id: j for j in s.exec(select(Job))}


def test_each_studio_runs_its_own_jobs_and_a_restart_touches_only_its_own(pair, make_ctx):
    a, b = pair
    runner_a, runner_b = a.queue.runner, b.queue.runner
    assert runner_a and runner_b and runner_a != runner_b
    for ctx in (a, b):
        assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    ids_a = a.generation.submit(JobRequest(prompt="from a", duration_s=0.5, seed=1, variations=2)).job_ids
    ids_b = b.generation.submit(JobRequest(prompt="from b", duration_s=0.5, seed=2, variations=2)).job_ids
    for ctx, ids in ((a, ids_a), (b, ids_b)):
        for job_id in ids:
            ctx.generation.wait(job_id)
    recorded = jobs(a)
    for ctx, ids, runner in ((a, ids_a, runner_a), (b, ids_b, runner_b)):
        for job_id in ids:  # ran by the studio that accepted it: its files are in that studio's data directory
            job = recorded[job_id]
            assert job.status == "succeeded" and job.runner == runner
            assert (ctx.settings.data_dir / job.output_file).is_file()

    # A stops (killed: its jobs stay as they were) while B still runs one; A and B each have one waiting
    a.close()
    with session_scope(b.engine) as s:
        left = {name: Job(prompt=name, model_id="studio-tiny", seed=3, duration_s=0.5, sample_rate=32000,
                          status=status, runner=runner, settings=dict(recorded[ids_a[0]].settings))
                for name, status, runner in [("a running", "running", runner_a), ("a waiting", "queued", runner_a),
                                             ("b running", "running", runner_b), ("b waiting", "queued", runner_b)]}
        s.add_all(left.values())
        s.commit()
        left = {name: job.id for name, job in left.items()}
    b.queue.worker.close()  # B keeps its records but runs nothing more here: what follows is A's doing alone

    again = make_ctx(database_url=a.url, data_dir=a.settings.data_dir)  # A restarts: same data dir, same id
    assert again.queue.runner == runner_a
    assert again.generation.resume() == [left["a waiting"]]
    again.generation.wait(left["a waiting"])
    after = jobs(again)
    assert after[left["a running"]].status == "interrupted"
    assert after[left["a waiting"]].status == "succeeded"
    assert (after[left["b running"]].status, after[left["b waiting"]].status) == ("running", "queued")
    assert {j.id for j in after.values()} == set(recorded) | set(left.values())  # nothing lost, nothing added


def test_writers_in_both_studios_at_once_lose_and_duplicate_nothing(pair, tmp_path, tiny_folder):
    a, b = pair
    # a job to rate (recorded as done)
    with session_scope(a.engine) as s:
        job = Job(prompt="rated", model_id="studio-tiny", seed=1, duration_s=1.0, sample_rate=32000,
                  status="succeeded")
        s.add(job)
        s.commit()
        job_id = job.id
    users = [f"user{i}" for i in range(4)]
    at_once(*[lambda u=u, c=c, n=n: c.jobs.rate(job_id, Actor(u, "admin"), n)
              for u in users for c, n in ((a, 2), (b, 4))])
    with session_scope(a.engine) as s:
        ratings = s.exec(select(Rating).where(Rating.job_id == job_id)).all()
    assert sorted(r.user for r in ratings) == users and {r.stars for r in ratings} <= {2, 4}  # one per user

    # A/B votes are final: one listener voting on one pair from both studios at once is recorded once
    with session_scope(a.engine) as s:
        test = ABTest(name="blind", model_id="studio-tiny", prompts=["p"], seeds_per_prompt=2, duration_s=1.0,
                      secret="s" * 64, status="ready")
        s.add(test)
        s.flush()
        s.add_all([ABPair(abtest_id=test.id, position=i, prompt="p", seed=i) for i in range(2)])
        s.commit()
        test_id = test.id
    listeners = ["ann", "bob", "cid"]
    answers = at_once(*[outcome(lambda who=who, c=c: c.abtests.vote(test_id, who, 1, "first").pair)
                        for who in listeners for c in (a, b)])
    assert sorted(answers, key=str) == [1, 1, 1] + ["already_voted"] * 3
    with session_scope(a.engine) as s:
        assert sorted(v.listener for v in s.exec(select(ABVote).where(ABVote.abtest_id == test_id))) == listeners

    # the same adapter name registered from both at once: each gets its own version, none refused
    lora = factory.make_lora(tiny_folder, tmp_path / "lora", seed=1)
    for i in range(6):
        factory.shutil.copytree(lora, a.imports / f"lora{i}")
    infos = at_once(*[lambda i=i: (a, b)[i % 2].adapters.register(RegisterAdapterRequest(
        source="folder", path=f"lora{i}", name="shared", allow_duplicate=True)) for i in range(6)])
    assert sorted(info.version for info in infos) == [1, 2, 3, 4, 5, 6]
    with session_scope(a.engine) as s:
        assert sorted(s.exec(select(Adapter.version).where(Adapter.name == "shared"))) == [1, 2, 3, 4, 5, 6]
    # each registration's files are in the data directory of the studio that took it: the other one says so
    tiny = a.registry.get("studio-tiny")
    assert a.adapters.for_generation(infos[0].id, tiny, None).folder.is_dir()
    with pytest.raises(Conflict) as err:
        a.adapters.for_generation(infos[1].id, tiny, None)
    assert err.value.code == "adapter_files_missing" and "shared v" in err.value.message

    # settings: each studio changes other values at once; every change is kept, each recorded once
    changes = [{"top_k": 17}, {"temperature": 0.7}, {"guidance_scale": 2.0}, {"top_p": 0.5}]
    at_once(*[lambda c=c, i=i: (a, b)[i % 2].gen_config.update("studio-tiny", c, by=f"user{i}")
              for i, c in enumerate(changes)])
    values = b.gen_config.get("studio-tiny").values
    assert {k: values[k] for c in changes for k in c} == {k: v for c in changes for k, v in c.items()}
    with session_scope(a.engine) as s:
        history = s.exec(select(GenerationConfigChange).where(GenerationConfigChange.model_id == "studio-tiny")).all()
    assert sorted(h.action for h in history) == ["seed"] + ["update"] * 4  # seeded once by the two starts

    # a dataset's clips captioned from both at once: one new version per edit, every caption kept
    write_tone_folder(a.imports / "tones", n=6, seconds=1.0)
    dataset = a.datasets.create(CreateDatasetRequest(source="folder", path="tones"))
    clips = a.datasets.clips(dataset.id)
    at_once(*[lambda c=c, i=i: (a, b)[i % 2].datasets.edit_clips(dataset.id, ClipsEdit(
        captions=[ClipCaption(id=c.id, caption=f"caption {i}")])) for i, c in enumerate(clips)])
    assert b.datasets.get(dataset.id).version == dataset.version + len(clips)
    assert [c.caption for c in b.datasets.clips(dataset.id)] == [f"caption {i}" for i in range(len(clips))]

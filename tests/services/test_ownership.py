"""Who sees and manages which jobs (issue 14): a member (alice, bob) sees and manages their own generations only,
another's job is unknown to them (404 job_not_found, as for an unknown id); an admin (root) sees everyone's and can
filter by user; the queue lists a member's own jobs at their places in the whole queue."""
from __future__ import annotations

import pytest

from studio.errors import NotFound
from studio.services.generation import GenerateRequest, JobRequest
from studio.services.jobs import JobQuery
from studio.users import LOCAL_ACTOR, Actor
from tests.conftest import job_names, seed_history
from tests.live import held_decoding

ALICE, BOB, ROOT = Actor("alice", "member"), Actor("bob", "member"), Actor("root", "admin")


@pytest.fixture(scope="module")
def seeded(make_module_ctx):
    """Seeded History (piano and failed: alice's; drone: bob's; jazz and waiting: local's; an A/B clip and an
    evaluation clip), with studio-tiny loaded (continuing a job is planned against it)."""
    ctx = make_module_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    return ctx, seed_history(ctx)


def names(ids: dict[str, int], page) -> list[str]:
    return [job_names(ids)[j.id] for j in page.items]


@pytest.mark.parametrize("actor, query, expected", [
    (ALICE, {}, ["failed", "piano"]),
    (BOB, {}, ["drone"]),
    (ROOT, {}, ["waiting", "failed", "jazz", "drone", "piano"]),
    (LOCAL_ACTOR, {}, ["waiting", "failed", "jazz", "drone", "piano"]),  # no auth: as before, everything
    (ROOT, {"submitted_by": "bob"}, ["drone"]),  # an admin filters by user
    (ALICE, {"submitted_by": "alice"}, ["failed", "piano"]),
    (ALICE, {"submitted_by": "bob"}, []),  # a member naming another gets nothing of theirs
    (ALICE, {"source": "all"}, ["failed", "piano"]),  # evaluation and training clips are an admin's business
    (ALICE, {"source": "evaluation"}, ["failed", "piano"]),
    (ROOT, {"source": "evaluation"}, ["eval"]),
])
def test_history_lists_a_members_own_jobs_and_everyones_for_an_admin(seeded, actor, query, expected):
    ctx, ids = seeded
    page = ctx.jobs.search(JobQuery(**query), actor)
    assert names(ids, page) == expected and page.total == len(expected)


def test_the_user_filter_lists_who_has_generations(seeded):
    ctx, _ = seeded
    assert ctx.jobs.submitters(ROOT) == ["alice", "bob", "local"]
    assert ctx.jobs.submitters(ALICE) == ["alice"]


# Every action on one job, asked by bob about alice's piano: each one is told the job does not exist.
ACTIONS = {
    "get": lambda ctx, job, who: ctx.jobs.get(job, who),
    "audio": lambda ctx, job, who: ctx.jobs.audio_path(job, who),
    "rating": lambda ctx, job, who: ctx.jobs.rating(job, who),
    "rate": lambda ctx, job, who: ctx.jobs.rate(job, who, 4),
    "unrate": lambda ctx, job, who: ctx.jobs.unrate(job, who),
    "delete": lambda ctx, job, who: ctx.jobs.delete(job, who),
    "score": lambda ctx, job, who: ctx.evaluation.score_job(job, who),
    "resubmit": lambda ctx, job, who: ctx.generation.resubmit(job, who),
    "cancel": lambda ctx, job, who: ctx.generation.cancel_job(job, who),
    "continue": lambda ctx, job, who: ctx.generation.plan(
        JobRequest(prompt="more", duration_s=0.5, continue_job_id=job), who),
}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_another_members_job_is_unknown_to_every_job_action(seeded, action):
    ctx, ids = seeded
    with pytest.raises(NotFound) as err:
        ACTIONS[action](ctx, ids["piano"], BOB)
    assert err.value.code == "job_not_found" and err.value.message == f"There is no job {ids['piano']}."
    assert ctx.jobs.get(ids["piano"]).rating.count == 2  # nothing changed: alice's and bob's seeded ratings


def test_the_owner_and_an_admin_manage_the_job(make_ctx):
    ctx = make_ctx()
    ids = seed_history(ctx)
    assert ctx.jobs.get(ids["piano"], ALICE).rating.mine == 5
    assert ctx.jobs.rate(ids["piano"], ALICE, 2).mine == 2
    assert ctx.jobs.rate(ids["drone"], ROOT, 4).mine == 4  # an admin rates anyone's
    assert ctx.jobs.audio_path(ids["drone"], BOB).is_file()
    assert ctx.jobs.delete(ids["failed"], ALICE).job_id == ids["failed"]
    assert ctx.jobs.delete(ids["drone"], ROOT).job_id == ids["drone"]  # an admin deletes anyone's
    assert names(ids, ctx.jobs.search(JobQuery(), ROOT)) == ["waiting", "jazz", "piano"]


def test_a_member_resubmits_and_continues_their_own_job_and_is_recorded(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    first = ctx.generation.generate(GenerateRequest(prompt="alice's tune", duration_s=0.5, seed=3), actor=ALICE)
    again = ctx.generation.resubmit(first.job_id, ALICE)
    longer = ctx.generation.submit(JobRequest(prompt="more", duration_s=0.5, continue_job_id=first.job_id), ALICE)
    for accepted in (again, longer):
        assert ctx.generation.wait(accepted.job_id).submitted_by == "alice"
    assert ctx.jobs.get(longer.job_id, ALICE).continuation["job_id"] == first.job_id
    with pytest.raises(NotFound):
        ctx.generation.resubmit(first.job_id, BOB)
    assert ctx.generation.resubmit(first.job_id, ROOT).job_id > longer.job_id  # an admin may, as themselves
    assert ctx.generation.cancel(BOB) is False  # bob has nothing running: alice's jobs are not his to stop


def test_the_queue_lists_a_members_own_jobs_at_their_places_in_the_whole_queue(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    jobs = []
    try:
        with held_decoding(ctx) as running:
            jobs.append(ctx.generation.submit(JobRequest(prompt="root's", duration_s=0.5, seed=1), ROOT).job_id)
            assert running.wait(20)
            for who, prompt in ((ALICE, "a1"), (BOB, "b1"), (ALICE, "a2")):
                jobs.append(ctx.generation.submit(JobRequest(prompt=prompt, duration_s=0.5, seed=2), who).job_id)
            mine = ctx.queue.view(ALICE)
            assert [(i.prompt, i.position) for i in mine.items] == [("a1", 1), ("a2", 3)]
            assert mine.waiting == 3  # the queue's length stays everyone's
            assert [i.prompt for i in ctx.queue.view(BOB).items] == ["b1"]
            assert "generate a job with" in ctx.queue.view(BOB).next  # alice's job next, not named to bob
            assert [i.prompt for i in ctx.queue.view(ROOT).items] == ["root's", "a1", "b1", "a2"]
            assert [i.prompt for i in ctx.queue.view(ROOT, "alice").items] == ["a1", "a2"]
            assert [i.prompt for i in ctx.queue.view(ALICE, "bob").items] == []
            with pytest.raises(NotFound):
                ctx.generation.cancel_job(jobs[2], ALICE)  # bob's
            assert ctx.generation.cancel_job(jobs[1], ALICE) == "queued"
            assert [i.prompt for i in ctx.queue.view(ALICE).items] == ["a2"]
    finally:
        for job_id in jobs:
            ctx.queue.cancel(job_id)

"""History (issue 10) at the service: filters, sorting and paging as tables; what a job carries (deleted adapter,
ratings per user, scores); a blind A/B test's clips invisible everywhere; ratings and delete."""
from __future__ import annotations

import pytest

from studio.errors import Conflict, InvalidValues, NotFound, StorageUnavailable
from studio.services.jobs import DELETED_ADAPTER, JobQuery
from studio.users import Actor
from tests.conftest import seed_history


def admin(name: str) -> Actor:
    """Raters who may see every job (members see their own only: tests/services/test_ownership.py)."""
    return Actor(name, "admin")


@pytest.fixture(scope="module")
def seeded(make_module_db_ctx):
    """One studio with the seeded records, shared by the read-only tables below (on SQLite, then PostgreSQL)."""
    ctx = make_module_db_ctx()
    return ctx, seed_history(ctx)


def names(ids: dict[str, int], infos) -> list[str]:
    by_id = {v: k for k, v in ids.items() if k not in ("lofi", "gone", "abtest", "evaluation")}
    return [by_id[j.id] for j in infos]


# (filters, the jobs listed in order). Seeded oldest first: piano, drone, jazz, failed, waiting (+ ab, eval clips).
FILTERS = [
    ({}, ["waiting", "failed", "jazz", "drone", "piano"]),
    ({"model_id": "tiny-hub"}, ["jazz"]),
    ({"model_id": "no-such-model"}, []),
    ({"adapter": "none"}, ["waiting", "failed", "piano"]),
    ({"adapter": "lofi"}, ["drone"]),
    ({"adapter": "gone"}, ["jazz"]),  # a deleted adapter's jobs stay findable
    ({"status": "failed"}, ["failed"]),
    ({"status": "queued"}, ["waiting"]),
    ({"min_rating": 4}, ["piano"]),  # average of alice 5 and bob 3
    ({"max_rating": 2}, ["drone"]),
    ({"min_rating": 2, "max_rating": 2}, ["drone"]),  # exactly
    ({"min_rating": 3, "max_rating": 3}, []),
    ({"rated": False}, ["waiting", "failed", "jazz"]),
    ({"rated": True}, ["drone", "piano"]),
    ({"submitted_by": "alice"}, ["failed", "piano"]),
    ({"submitted_by": "ALICE"}, []),  # exact
    ({"text": "LO-FI"}, ["piano"]),  # case-insensitive
    ({"text": "café"}, ["jazz"]),  # beyond ASCII too
    ({"text": "CAFÉ"}, ["jazz"]),
    ({"text": "50%"}, ["piano"]),  # LIKE's wildcards are plain characters
    ({"text": "%"}, ["piano"]),
    ({"text": "_"}, ["drone"]),
    ({"text": "piano"}, ["piano"]),  # neither the A/B clip nor the evaluation clip
    ({"text": "secret", "source": "all"}, []),  # an A/B clip is never listed
    ({"source": "evaluation"}, ["eval"]),
    ({"source": "all"}, ["eval", "waiting", "failed", "jazz", "drone", "piano"]),
    ({"evaluation_id": "evaluation"}, ["eval"]),
    ({"text": "i", "status": "succeeded", "adapter": "none"}, ["piano"]),  # filters combine
    ({"sort": "oldest"}, ["piano", "drone", "jazz", "failed", "waiting"]),
    ({"sort": "best_rated"}, ["piano", "drone", "waiting", "failed", "jazz"]),  # unrated last, newest first
    ({"sort": "worst_rated"}, ["drone", "piano", "waiting", "failed", "jazz"]),
    ({"sort": "longest"}, ["drone", "waiting", "failed", "piano", "jazz"]),
    ({"sort": "shortest"}, ["jazz", "piano", "failed", "waiting", "drone"]),
]


@pytest.mark.parametrize("filters, expected", FILTERS, ids=[repr(f) for f, _ in FILTERS])
def test_filters_and_sorting(seeded, filters, expected):
    ctx, ids = seeded
    filters = {k: ids[v] if k in ("adapter", "evaluation_id") and v in ids else v for k, v in filters.items()}
    page = ctx.jobs.search(JobQuery(**filters))
    assert names(ids, page.items) == expected
    assert page.total == len(expected)


@pytest.mark.parametrize("limit, offset, expected", [
    (2, 0, ["waiting", "failed"]), (2, 2, ["jazz", "drone"]), (2, 4, ["piano"]), (2, 5, []),
    (500, 3, ["drone", "piano"]),
])
def test_paging_keeps_the_total(seeded, limit, offset, expected):
    ctx, ids = seeded
    page = ctx.jobs.search(JobQuery(limit=limit, offset=offset))
    assert names(ids, page.items) == expected and page.total == 5


@pytest.mark.parametrize("filters, field", [
    ({"min_rating": 5, "max_rating": 1}, "min_rating"),
    ({"text": "a\x00b"}, "q"),
    ({"submitted_by": "\ud800"}, "submitted_by"),
])
def test_contradictory_or_unusable_filters_are_refused_naming_them(seeded, filters, field):
    ctx, _ = seeded
    with pytest.raises(InvalidValues) as err:
        ctx.jobs.search(JobQuery(**filters))
    assert [e["field"] for e in err.value.extra["errors"]] == [field]


def test_a_job_carries_what_it_used_its_ratings_and_scores(seeded):
    ctx, ids = seeded
    piano = ctx.jobs.get(ids["piano"], admin("alice"))
    assert (piano.rating.mine, piano.rating.average, piano.rating.count) == (5, 4.0, 2)
    assert ctx.jobs.get(ids["piano"], admin("bob")).rating.mine == 3
    assert ctx.jobs.get(ids["piano"], admin("carol")).rating.mine is None
    assert ctx.jobs.get(ids["piano"]).scores == {"clap-tiny": 0.25}
    assert piano.seed == 100 and piano.settings["top_k"] == 250 and piano.submitted_by == "alice"
    assert piano.elapsed_s == 2.0 and piano.started_at > piano.created_at and piano.has_audio
    # the same figures in a listing, for the asking user
    [listed] = ctx.jobs.search(JobQuery(text="lo-fi"), admin("bob")).items
    assert (listed.rating.mine, listed.rating.average, listed.scores) == (3, 4.0, {"clap-tiny": 0.25})


def test_a_deleted_adapter_is_named_so_and_its_job_stays_playable(seeded):
    ctx, ids = seeded
    jazz = ctx.jobs.get(ids["jazz"])
    assert jazz.adapter_label == DELETED_ADAPTER and jazz.adapter_deleted and jazz.adapter_id == ids["gone"]
    assert ctx.jobs.audio_path(ids["jazz"]).is_file()
    drone = ctx.jobs.get(ids["drone"])
    assert drone.adapter_label == "lofi v1" and not drone.adapter_deleted


def test_a_blind_ab_clip_is_unknown_to_every_job_operation(seeded):
    ctx, ids = seeded
    clip = ids["ab"]
    who = admin("a")
    for call in (lambda: ctx.jobs.get(clip), lambda: ctx.jobs.audio_path(clip), lambda: ctx.jobs.rating(clip, who),
                 lambda: ctx.jobs.rate(clip, who, 5), lambda: ctx.jobs.unrate(clip, who),
                 lambda: ctx.jobs.delete(clip)):
        with pytest.raises(NotFound) as err:
            call()
        assert err.value.code == "job_not_found" and err.value.message == f"There is no job {clip}."
    for source in ("person", "evaluation", "all"):
        assert clip not in [j.id for j in ctx.jobs.search(JobQuery(source=source, limit=500)).items]
    # the services that own the clips still read them, when they say so
    assert ctx.jobs.get(clip, include_clips=True).prompt == "ab piano secret"
    assert ctx.jobs.audio_path(clip, include_clips=True).is_file()
    # an evaluation clip is readable (a filter shows it), just not listed by default
    assert ctx.jobs.get(ids["eval"]).evaluation_id == ids["evaluation"]


def test_search_folds_every_letter_on_each_database(make_ctx, db_url):
    """Python's casefold on SQLite, ICU's full case mappings on PostgreSQL: ß is ss, É is é, either way round."""
    from studio.db.engine import session_scope
    from studio.db.models import Job

    ctx = make_ctx()
    with session_scope(ctx.engine) as s:
        s.add_all([Job(prompt=p, model_id="studio-tiny", seed=1, duration_s=1.0, sample_rate=32000, status="failed")
                   for p in ("Straßenmusik im ÉTÉ", "STRASSE der Nacht", "plain ascii")])
        s.commit()
    for text, expected in [("strasse", 2), ("STRAẞE", 2), ("straßenMUSIK", 1), ("été", 1), ("ÉTÉ", 1),
                           ("ETE", 0), ("der nacht", 1)]:
        found = [j.prompt for j in ctx.jobs.search(JobQuery(text=text)).items]
        assert len(found) == expected, (text, found)


def test_ratings_one_per_user_changeable_removable_and_only_for_succeeded_jobs(make_ctx, db_url):
    ctx = make_ctx()
    ids = seed_history(ctx)
    jazz = ids["jazz"]
    alice, bob = admin("alice"), admin("bob")
    assert ctx.jobs.rate(jazz, alice, 4).model_dump() == {"job_id": jazz, "mine": 4, "average": 4.0, "count": 1}
    assert ctx.jobs.rate(jazz, bob, 1).average == 2.5
    assert ctx.jobs.rate(jazz, alice, 2).model_dump() == {"job_id": jazz, "mine": 2, "average": 1.5, "count": 2}
    assert ctx.jobs.unrate(jazz, bob).model_dump() == {"job_id": jazz, "mine": None, "average": 2.0, "count": 1}
    assert ctx.jobs.unrate(jazz, bob).count == 1  # nothing left to remove: fine
    for stars in (0, 6, 2.5, True, "3"):
        with pytest.raises(InvalidValues):
            ctx.jobs.rate(jazz, alice, stars)
    for name in ("failed", "waiting"):
        with pytest.raises(Conflict) as err:
            ctx.jobs.rate(ids[name], alice, 3)
        assert err.value.code == "job_not_rateable"
    assert ctx.jobs.get(jazz, alice).rating.mine == 2


def test_delete_removes_the_record_its_ratings_scores_and_files(make_ctx, db_url):
    ctx = make_ctx()
    ids = seed_history(ctx)
    piano = ctx.jobs.get(ids["piano"])
    files = [ctx.settings.data_dir / f"outputs/piano_job{piano.id}.wav",
             ctx.settings.data_dir / f"outputs/piano_job{piano.id}.codes.safetensors"]
    assert all(f.is_file() for f in files)
    done = ctx.jobs.delete(piano.id)
    assert sorted(done.files_removed) == sorted(f.relative_to(ctx.settings.data_dir).as_posix() for f in files)
    assert not any(f.exists() for f in files)
    with pytest.raises(NotFound):
        ctx.jobs.get(piano.id)
    from sqlmodel import select

    from studio.db.engine import session_scope
    from studio.db.models import Rating, Score
    with session_scope(ctx.engine) as s:  # nothing keeps referring to the deleted job or its files
        assert not list(s.exec(select(Rating).where(Rating.job_id == piano.id)))
        assert not list(s.exec(select(Score).where(Score.job_id == piano.id)))
    assert ctx.jobs.search(JobQuery()).total == 4
    # a failed job (no files) goes too
    assert ctx.jobs.delete(ids["failed"]).files_removed == []


@pytest.mark.parametrize("name, code", [("waiting", "job_not_finished"), ("eval", "evaluation_clip")])
def test_delete_refuses_jobs_still_in_the_queue_and_evaluation_clips(seeded, name, code):
    ctx, ids = seeded
    with pytest.raises(Conflict) as err:
        ctx.jobs.delete(ids[name])
    assert err.value.code == code
    assert ctx.jobs.get(ids[name]).id == ids[name]


def test_delete_refuses_a_running_job(make_ctx, db_url):
    ctx = make_ctx()
    ids = seed_history(ctx)
    from studio.db.engine import session_scope
    from studio.db.jobs import get_job, mark_running
    with session_scope(ctx.engine) as s:
        mark_running(s, [ids["waiting"]], 1)
    with pytest.raises(Conflict) as err:
        ctx.jobs.delete(ids["waiting"])
    assert err.value.code == "job_not_finished" and "cancel it first" in err.value.message
    with session_scope(ctx.engine) as s:
        assert get_job(s, ids["waiting"]).status == "running"


def test_a_delete_the_database_refuses_keeps_the_files(make_ctx, monkeypatch):
    """Files go only after the commit: a refused commit leaves the job whole, its audio playable."""
    ctx = make_ctx()
    ids = seed_history(ctx)

    def refused(session, job):
        raise StorageUnavailable("The database is read-only.", code="storage_unavailable")

    monkeypatch.setattr("studio.services.jobs.delete_job", refused)
    with pytest.raises(StorageUnavailable):
        ctx.jobs.delete(ids["piano"])
    assert ctx.jobs.audio_path(ids["piano"]).is_file() and ctx.jobs.get(ids["piano"]).has_codes
    assert not list((ctx.settings.data_dir / "outputs").glob(".delete-job*"))  # nothing left to settle


class Killed(BaseException):
    """Stands for a kill: nothing after it runs."""


@pytest.mark.parametrize("killed", ["before the commit", "after the commit"])
def test_a_delete_killed_midway_is_settled_at_the_next_start(make_ctx, monkeypatch, killed):
    """Killed before the commit: the job keeps its files. Killed after it, before the files went: the next start
    removes them (nothing refers to them any more). No marker is left either way."""
    from studio.datadir import recover_interrupted_work
    from studio.deletions import write_marker

    ctx = make_ctx()
    ids = seed_history(ctx)
    outputs = ctx.settings.data_dir / "outputs"
    files = sorted(outputs.glob(f"piano_job{ids['piano']}.*"))
    assert len(files) == 2
    if killed == "before the commit":  # what a kill there leaves: the marker, the record, the files
        write_marker(outputs, ids["piano"], [f.relative_to(ctx.settings.data_dir).as_posix() for f in files])
    else:
        def kill(*args, **kwargs):
            raise Killed()

        with monkeypatch.context() as m:
            m.setattr("studio.services.jobs.remove_files", kill)
            with pytest.raises(Killed):
                ctx.jobs.delete(ids["piano"])
    assert all(f.is_file() for f in files) and list(outputs.glob(".delete-job*"))
    recover_interrupted_work(ctx.settings, ctx.engine)  # what the next start runs
    assert not list(outputs.glob(".delete-job*"))
    if killed == "before the commit":
        assert ctx.jobs.get(ids["piano"]).has_audio and all(f.is_file() for f in files)
    else:
        with pytest.raises(NotFound):
            ctx.jobs.get(ids["piano"])
        assert not any(f.exists() for f in files)
    assert ctx.jobs.audio_path(ids["drone"]).is_file()  # other jobs' files untouched

"""Blind A/B tests (studio/services/abtests.py) on Studio Tiny: what each pair is made of (same seed and settings,
codes that differ only by the side, decoded in one batch), loudness-matched clips, blinding, votes per listener,
results against the statistics computed by hand, the queue limit, a restart mid-generation, cancel and delete."""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file

from studio.db.abtests import jobs_of, pairs_of
from studio.db.engine import session_scope
from studio.db.jobs import create_jobs
from studio.db.models import ABPair, ABTest, Job
from studio.errors import Conflict, InvalidValues, StudioError
from studio.services.abtests import (ABSideSpec, ABTestCreate, first_is_b, integrated_loudness, listener_order,
                                     match_loudness)
from studio.services.audio_out import true_peak_dbtp
from studio.services.generation import JobRequest

TEMPERATURE = {"temperature": 0.5}


def make_test(ctx, side_a=None, side_b=None, prompts=("lofi piano", "rock riff"), seeds=1, **fields):
    req = ABTestCreate(name=fields.pop("name", "versions"), side_a=ABSideSpec(**(side_a or {})),
                       side_b=ABSideSpec(**(side_b or {})), prompts=list(prompts), seeds_per_prompt=seeds,
                       seed=fields.pop("seed", 11), duration_s=fields.pop("duration_s", 1.0), **fields)
    return ctx.abtests.create(req)


def wait_done(ctx, test_id: int, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while (view := ctx.abtests.get(test_id)).status == "generating":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    return view


def records(ctx, test_id: int) -> tuple[ABTest, list[ABPair], dict[int, Job]]:
    with session_scope(ctx.engine) as session:
        test = session.get(ABTest, test_id)
        return test, pairs_of(session, test_id), {j.id: j for j in jobs_of(session, test_id)}


def codes(ctx, job: Job) -> np.ndarray:
    return load_file(str(ctx.settings.data_dir / job.codes_file))["codes"]


def side_choice(test: ABTest, listener: str, pair: ABPair, side: str) -> str:
    """The slot (first/second) in which `listener` hears `side` of `pair` (what a listener cannot know)."""
    return "first" if first_is_b(test.secret, listener, pair.id) == (side == "b") else "second"


@pytest.fixture(scope="module")
def studio(make_module_ctx):
    ctx = make_module_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    return ctx


@pytest.fixture(scope="module")
def ready_test(studio):
    """A 5-prompt x 2-seed test (10 pairs): base vs base at temperature 0.5, generated once for the module."""
    view = make_test(studio, side_b={"overrides": TEMPERATURE}, prompts=[f"prompt {i}" for i in range(5)], seeds=2)
    assert wait_done(studio, view.id).status == "ready"
    return view.id


# ---- what a pair is made of ----------------------------------------------------------------------------------
def test_each_pair_shares_prompt_seed_and_settings_and_differs_only_by_the_side(studio, ready_test):
    test, pairs, jobs = records(studio, ready_test)
    assert len(pairs) == 10 and sorted({(p.prompt, p.seed) for p in pairs}) == sorted(
        (f"prompt {i}", s) for i in range(5) for s in (11, 12))
    for pair in pairs:
        a, b = jobs[pair.job_a_id], jobs[pair.job_b_id]
        assert (a.prompt, a.seed, a.duration_s, a.model_id) == (b.prompt, b.seed, b.duration_s, b.model_id) == (
            pair.prompt, pair.seed, 1.0, "studio-tiny")
        differ = {k for k in a.settings if a.settings[k] != b.settings[k]}
        assert differ == {"temperature"} and b.settings["temperature"] == 0.5
        assert a.adapter_id is b.adapter_id is None and a.abtest_id == b.abtest_id == test.id
        # decoded together: one batch, started at the same moment
        assert a.batch_size >= 2 and a.batch_size == b.batch_size and a.started_at == b.started_at
        assert not np.array_equal(codes(studio, a), codes(studio, b))  # the side's setting changed the music


def test_equal_sides_give_identical_codes(studio):
    view = make_test(studio, side_a={"overrides": TEMPERATURE}, side_b={"overrides": TEMPERATURE}, seeds=2)
    assert wait_done(studio, view.id).status == "ready"
    _, pairs, jobs = records(studio, view.id)
    for pair in pairs:
        assert np.array_equal(codes(studio, jobs[pair.job_a_id]), codes(studio, jobs[pair.job_b_id]))
    seeds = [codes(studio, jobs[p.job_a_id]) for p in pairs if p.prompt == "lofi piano"]
    assert not np.array_equal(*seeds)  # the next seed of a prompt is other music


def test_an_adapter_side_runs_the_adapter_on_the_same_seed(studio, tiny_folder):
    from studio.services.adapters import RegisterAdapterRequest
    from tests.adapters_factory import make_lora

    make_lora(tiny_folder, studio.settings.data_dir / "imports" / "ab-lora", base_name="studio-tiny")
    lora = studio.adapters.register(RegisterAdapterRequest(source="folder", path="ab-lora"))
    view = make_test(studio, side_b={"adapter_id": lora.id}, prompts=["adapter"])
    same = make_test(studio, side_a={"adapter_id": lora.id}, side_b={"adapter_id": lora.id}, prompts=["adapter"])
    assert wait_done(studio, view.id).status == wait_done(studio, same.id).status == "ready"
    _, [pair], jobs = records(studio, view.id)
    a, b = jobs[pair.job_a_id], jobs[pair.job_b_id]
    assert (a.adapter_id, b.adapter_id) == (None, lora.id) and a.seed == b.seed and a.settings == b.settings
    assert a.batch_size == b.batch_size >= 2 and a.started_at == b.started_at  # base and adapter rows in one batch
    assert not np.array_equal(codes(studio, a), codes(studio, b))
    # both sides the adapter: identical codes, also when decoded in one batch with base rows (PEFT's mixed batch)
    _, [twin], twin_jobs = records(studio, same.id)
    a2, b2 = twin_jobs[twin.job_a_id], twin_jobs[twin.job_b_id]
    assert np.array_equal(codes(studio, a2), codes(studio, b2))
    studio.abtests.close_test(view.id)
    assert studio.abtests.get(view.id).results.side_b.label == "ab-lora v1"


# ---- loudness matching ---------------------------------------------------------------------------------------
def test_match_loudness_brings_two_levels_to_the_quieter_one_under_the_ceiling():
    rate = 32000
    t = np.arange(2 * rate) / rate
    quiet = (0.02 * np.sin(2 * np.pi * 440 * t))[:, None].astype(np.float32)
    loud = (0.9 * np.sin(2 * np.pi * 220 * t))[:, None].astype(np.float32)
    before = integrated_loudness(quiet, rate), integrated_loudness(loud, rate)
    assert before[1] - before[0] > 20
    a, b = match_loudness(quiet, loud, rate)
    assert a.shape == b.shape == quiet.shape
    la, lb = integrated_loudness(a, rate), integrated_loudness(b, rate)
    assert abs(la - lb) < 0.1 and abs(la - before[0]) < 0.1
    assert max(true_peak_dbtp(a), true_peak_dbtp(b)) <= -1.0 + 1e-6


def test_listening_clips_are_loudness_matched_wavs_of_one_size_under_random_names(studio, ready_test):
    _, pairs, _ = records(studio, ready_test)
    names = set()
    for pair in pairs:
        paths = [studio.settings.data_dir / c for c in (pair.clip_a, pair.clip_b)]
        infos = [sf.info(p) for p in paths]
        assert {(i.format, i.subtype, i.frames, i.channels, i.samplerate) for i in infos} == {
            ("WAV", "PCM_16", 32000, 1, 32000)}
        assert paths[0].stat().st_size == paths[1].stat().st_size
        assert paths[0].stat().st_mtime == paths[1].stat().st_mtime
        levels = [integrated_loudness(sf.read(p, always_2d=True)[0], 32000) for p in paths]
        assert abs(levels[0] - levels[1]) < 0.5
        for p in paths:
            assert len(p.stem) == 32 and all(c in "0123456789abcdef" for c in p.stem)
            names.add(p.name)
    assert len(names) == 20


# ---- blinding ------------------------------------------------------------------------------------------------
def test_each_listener_gets_their_own_stable_random_order_and_first_second(studio):
    view = make_test(studio, prompts=[f"order {i}" for i in range(4)], seeds=2)
    assert wait_done(studio, view.id).status == "ready"
    test, pairs, _ = records(studio, view.id)

    def walk(listener: str) -> list[int]:
        """The pairs this listener is given, in order, voting 'none' on each (as a listener would)."""
        seen, nxt = [], studio.abtests.next_pair(view.id, listener)
        assert studio.abtests.next_pair(view.id, listener) == nxt  # asking again gives the same pair
        while not nxt.done:
            assert nxt.pair.index == len(seen) + 1 and nxt.pair.total == 8
            seen.append(nxt.pair.pair)
            nxt = studio.abtests.vote(view.id, listener, nxt.pair.pair, "none").next
        return seen

    orders = [walk(f"listener {i}") for i in range(6)]
    assert all(sorted(o) == list(range(1, 9)) for o in orders)
    assert len({tuple(o) for o in orders}) == 6  # six listeners, six orders
    flips = [first_is_b(test.secret, f"listener {i}", pair.id) for i in range(40) for pair in pairs]
    assert 0.35 < sum(flips) / len(flips) < 0.65  # B first about half the time
    # the order depends on the listener and the pairs, not on how they are listed
    ids = [p.id for p in pairs]
    assert listener_order(test.secret, "x", ids) == listener_order(test.secret, "x", ids[::-1])


def test_nothing_a_listener_gets_names_a_side(studio, ready_test):
    listener = "blind listener"
    nxt = studio.abtests.next_pair(ready_test, listener)
    payload = nxt.model_dump()
    assert set(payload) == {"test_id", "listener", "voted", "total", "done", "pair", "message"}
    assert set(payload["pair"]) == {"pair", "index", "total", "prompt", "duration_s", "first_url", "second_url"}
    assert nxt.pair.first_url == f"/api/abtests/{ready_test}/pairs/{nxt.pair.pair}/first?listener=blind%20listener"
    assert nxt.pair.second_url.endswith(f"/pairs/{nxt.pair.pair}/second?listener=blind%20listener")
    view = studio.abtests.get(ready_test, listener).model_dump_json()
    test, pairs, jobs = records(studio, ready_test)
    for secret in ("temperature", "side_a", "side_b", "Base model", test.secret, *(p.clip_a for p in pairs),
                   *(p.clip_b for p in pairs)):
        assert secret not in view and secret not in nxt.model_dump_json()
    assert studio.abtests.get(ready_test, listener).results is None
    summary = studio.abtests.list()[0].model_dump_json()
    assert "temperature" not in summary and "side" not in summary


def test_a_slot_serves_the_side_the_listeners_coin_says(studio, ready_test):
    test, pairs, _ = records(studio, ready_test)
    for listener in ("ann", "bob"):
        for pair in pairs:
            first = studio.abtests.clip(ready_test, pair.position + 1, "first", listener)
            second = studio.abtests.clip(ready_test, pair.position + 1, "second", listener)
            expect = (pair.clip_b, pair.clip_a) if first_is_b(test.secret, listener, pair.id) else (
                pair.clip_a, pair.clip_b)
            assert (first, second) == tuple((studio.settings.data_dir / c).resolve() for c in expect)


# ---- votes and results -----------------------------------------------------------------------------------------
def test_votes_per_listener_and_results_match_the_sign_test_by_hand(studio, ready_test):
    test, pairs, _ = records(studio, ready_test)
    by_number = {p.position + 1: p for p in pairs}
    # ann prefers B on 9 pairs and has no preference on 1; bob prefers A on 2 pairs then stops
    nxt = studio.abtests.next_pair(ready_test, "ann")
    n = 0
    while not nxt.done:
        pair = by_number[nxt.pair.pair]
        choice = "none" if n == 0 else side_choice(test, "ann", pair, "b")
        if n < 9:
            assert studio.abtests.get(ready_test, "ann").results is None  # nothing revealed before the last vote
        nxt = studio.abtests.vote(ready_test, "ann", pair.position + 1, choice).next
        n += 1
    assert n == 10 and nxt.voted == 10
    for _ in range(2):
        pair = by_number[studio.abtests.next_pair(ready_test, "bob").pair.pair]
        studio.abtests.vote(ready_test, "bob", pair.position + 1, side_choice(test, "bob", pair, "a"))
    with pytest.raises(Conflict) as again:
        studio.abtests.vote(ready_test, "bob", pair.position + 1, "first")
    assert again.value.code == "already_voted"

    bob_view, ann_view = studio.abtests.get(ready_test, "bob"), studio.abtests.get(ready_test, "ann")
    assert bob_view.results is None and not bob_view.revealed and bob_view.your_votes == 2
    assert ann_view.revealed and ann_view.votes_per_listener == {"ann": 10, "bob": 2}
    res = ann_view.results
    # overall: B 9, A 2, 1 tie; p = P(X <= 2 or X >= 9), X ~ Binomial(11, 1/2), by hand
    p = 2 * sum(math.comb(11, k) for k in range(0, 3)) / 2 ** 11
    o = res.overall
    assert (o.wins_a, o.wins_b, o.ties, o.decisive) == (2, 9, 1, 11)
    assert o.p_value == pytest.approx(p) == 0.0654296875 and o.win_rate_b == pytest.approx(9 / 11)
    assert o.verdict == "no_difference"  # 9 of 11 is not significant at 5 %: the verdict says so
    assert res.verdict.startswith("No significant difference: B won 9 of 11") and "A = Base model; B = Base model (temperature=0.5)" in res.verdict
    assert [(r.listener, r.votes, r.test.wins_a, r.test.wins_b, r.test.ties) for r in res.listeners] == [
        ("ann", 10, 0, 9, 1), ("bob", 2, 2, 0, 0)]
    assert res.listeners[0].test.p_value == pytest.approx(2 / 2 ** 9) and res.listeners[0].test.verdict == "b"
    assert res.listeners[1].test.verdict == "not_enough_data"  # two votes: too few, says how many more
    # the raw votes, as sides: the counts above recomputed from them
    raw = [(v.listener, v.choice) for v in res.votes]
    assert len(raw) == 12 and raw.count(("ann", "b")) == 9 and raw.count(("ann", "none")) == 1
    assert raw.count(("bob", "a")) == 2 and {v.pair for v in res.votes if v.listener == "ann"} == set(range(1, 11))
    assert "4 more" in res.listeners[1].test.summary


def test_too_few_votes_say_how_many_more_and_closing_reveals_to_everyone(studio):
    view = make_test(studio, prompts=["few"], seeds=3)
    assert wait_done(studio, view.id).status == "ready"
    test, pairs, _ = records(studio, view.id)
    pair = pairs[0]
    studio.abtests.vote(view.id, "carol", 1, side_choice(test, "carol", pair, "a"))
    assert studio.abtests.get(view.id).results is None
    closed = studio.abtests.close_test(view.id)
    assert closed.closed and closed.revealed and closed.results.overall.verdict == "not_enough_data"
    assert "at least 5 more decisive votes are needed" in closed.results.verdict
    with pytest.raises(Conflict) as late:
        studio.abtests.vote(view.id, "carol", 2, "first")
    assert late.value.code == "test_closed"
    for listener in ("carol", "dave"):  # a closed test offers no pair to anyone (a vote would be refused)
        nxt = studio.abtests.next_pair(view.id, listener)
        assert nxt.done and nxt.pair is None and "closed" in nxt.message


def test_mean_automatic_scores_per_side_appear_only_in_results(studio):
    from studio.db.models import Score

    view = make_test(studio, prompts=["scored"], seeds=2)
    assert wait_done(studio, view.id).status == "ready"
    _, pairs, _ = records(studio, view.id)
    with session_scope(studio.engine) as session:
        for pair, (va, vb) in zip(pairs, ((0.1, 0.4), (0.3, 0.6))):
            session.add(Score(job_id=pair.job_a_id, scorer="clap-tiny", value=va))
            session.add(Score(job_id=pair.job_b_id, scorer="clap-tiny", value=vb))
        session.commit()
    assert "clap" not in studio.abtests.next_pair(view.id, "dan").model_dump_json()
    res = studio.abtests.close_test(view.id).results
    assert res.side_a.mean_scores == {"clap-tiny": pytest.approx(0.2)} and res.side_a.scored_clips == {"clap-tiny": 2}
    assert res.side_b.mean_scores == {"clap-tiny": pytest.approx(0.5)}


@pytest.mark.parametrize("name, code", [
    ("", "listener_required"), ("   ", "listener_required"), ("x" * 61, "invalid_listener"),
    ("tab\there", "invalid_listener"), ("zero\u200bwidth", "invalid_listener"), ("new\nline", "invalid_listener"),
])
def test_listener_names_are_checked(studio, ready_test, name, code):
    with pytest.raises(InvalidValues) as refused:
        studio.abtests.next_pair(ready_test, name)
    assert refused.value.code == code and refused.value.extra["errors"][0]["field"] == "listener"


@pytest.mark.parametrize("name", ["a\x00b", "a\ud800", "bell\x07"])
def test_test_names_hold_text_only(studio, name):
    before = len(studio.abtests.list())
    with pytest.raises(InvalidValues) as refused:
        make_test(studio, name=name)
    assert refused.value.code == "invalid_name" and len(studio.abtests.list()) == before


def test_a_pair_ready_callback_gets_each_pairs_jobs(studio):
    seen = []
    studio.abtests.on_pair_ready(lambda test_id, job_ids: seen.append((test_id, job_ids)))
    view = make_test(studio, prompts=["callback"], seeds=2)
    assert wait_done(studio, view.id).status == "ready"
    _, pairs, _ = records(studio, view.id)
    assert sorted(j for t, js in seen if t == view.id for j in js) == sorted(
        j for p in pairs for j in (p.job_a_id, p.job_b_id))


# ---- the queue -------------------------------------------------------------------------------------------------
def test_a_big_test_leaves_room_for_people_and_still_finishes(make_ctx):
    ctx = make_ctx(max_queue=4)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    view = make_test(ctx, prompts=[f"p{i}" for i in range(6)], duration_s=0.5)  # 12 clips, max-queue 4
    person = ctx.generation.submit(JobRequest(prompt="a person's own", duration_s=0.5, seed=1))  # not refused
    assert ctx.generation.wait(person.job_id).prompt == "a person's own"
    assert wait_done(ctx, view.id).status == "ready" and ctx.abtests.get(view.id).clips_ready == 6


def test_queue_view_shows_an_ab_clip_as_such(studio, monkeypatch):
    monkeypatch.setattr(studio.abtests, "_start", lambda test_id: None)  # its clips are queued by hand here
    test_id = make_test(studio, prompts=["secret prompt"]).id
    plans = [dataclasses.replace(p, abtest_id=test_id) for p in studio.generation.plan(
        JobRequest(prompt="secret prompt", duration_s=5.0, seed=1), variations=2)]
    blocker = studio.generation.submit(JobRequest(prompt="long", duration_s=20.0, seed=1))
    ids = studio.queue.accept(plans)
    try:
        items = {i.job_id: i for i in studio.queue.view().items}
        assert [items[j].prompt for j in ids] == [f"clip of A/B test {test_id}"] * 2
        assert items[blocker.job_id].prompt == "long"
    finally:
        for job_id in (*ids, blocker.job_id):
            studio.queue.cancel(job_id)


def test_an_ab_test_needs_room_for_a_pair_in_the_queue(make_ctx):
    ctx = make_ctx(max_queue=1)
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    with pytest.raises(Conflict) as refused:
        make_test(ctx)
    assert refused.value.code == "queue_too_small" and "--max-queue" in refused.value.message


# ---- restart, cancel, delete -------------------------------------------------------------------------------------
def test_a_restart_mid_generation_resumes_the_test(db_url, make_ctx, monkeypatch):
    """What a kill leaves: pair 1's jobs running (interrupted at the next start), pair 2's queued, pairs 3-4 not
    queued yet. The next start resumes the queued jobs and the test: every pair is made, pair 2 from its jobs."""
    first = make_ctx()
    assert first.manager.switch_and_wait("studio-tiny").stage == "ready"
    monkeypatch.setattr(first.abtests, "_start", lambda test_id: None)  # killed before its feeder ran
    view = make_test(first, prompts=["one", "two", "three", "four"])
    test, pairs, _ = records(first, view.id)
    with session_scope(first.engine) as session:
        rows = [dict(prompt=p.prompt, model_id="studio-tiny", settings=test.settings, seed=p.seed, duration_s=1.0,
                     sample_rate=32000, status=status, abtest_id=test.id)
                for p, status in ((pairs[0], "running"), (pairs[0], "running"), (pairs[1], "queued"),
                                  (pairs[1], "queued"))]
        jobs = create_jobs(session, rows)
        for pair, (ja, jb) in zip(pairs[:2], (jobs[:2], jobs[2:])):
            row = session.get(ABPair, pair.id)
            row.job_a_id, row.job_b_id = ja.id, jb.id
            session.add(row)
        session.commit()
    again = make_ctx(data_dir=first.settings.data_dir)
    again.start_background_load().join(60)
    assert wait_done(again, view.id).status == "ready"
    _, pairs_after, jobs_after = records(again, view.id)
    assert all(p.clip_a and p.clip_b for p in pairs_after)
    assert (pairs_after[1].job_a_id, pairs_after[1].job_b_id) == (jobs[2].id, jobs[3].id)  # resumed, not redone
    assert pairs_after[0].job_a_id not in (jobs[0].id, jobs[1].id)  # interrupted: generated again
    assert jobs_after[jobs[0].id].status == "interrupted"


def test_cancel_stops_generation_and_delete_removes_everything(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    view = make_test(ctx, prompts=[f"long {i}" for i in range(8)], duration_s=1.0)
    deadline = time.monotonic() + 30
    while not any(j.status == "running" for j in records(ctx, view.id)[2].values()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    cancelled = ctx.abtests.cancel(view.id)
    assert cancelled.status == "cancelled" and cancelled.clips_ready < 8
    _, _, jobs = records(ctx, view.id)
    assert jobs and all(j.status in ("succeeded", "cancelled") for j in jobs.values())
    # the running clip leaves the queue view at its next decoding step (seen still listed once, on a loaded machine)
    deadline = time.monotonic() + 10
    while any(i.prompt == f"clip of A/B test {view.id}" for i in ctx.queue.view().items):
        assert time.monotonic() < deadline, ctx.queue.view().items
        time.sleep(0.02)
    with pytest.raises(Conflict) as not_ready:
        ctx.abtests.next_pair(view.id, "eve")
    assert not_ready.value.code == "test_not_ready"
    resumed = ctx.abtests.retry(view.id)
    assert resumed.status == "generating" and wait_done(ctx, view.id).status == "ready"
    _, pairs, jobs = records(ctx, view.id)
    files = [ctx.settings.data_dir / f for j in jobs.values() for f in (j.output_file, j.codes_file) if f]
    files += [ctx.settings.data_dir / c for p in pairs for c in (p.clip_a, p.clip_b)]
    assert len(files) >= 8 * 4 and all(f.is_file() for f in files)
    ctx.abtests.vote(view.id, "eve", 1, "first")
    ctx.abtests.delete(view.id)
    assert not any(f.exists() for f in files) and not (ctx.settings.data_dir / "abtests" / str(view.id)).exists()
    with session_scope(ctx.engine) as session:
        assert jobs_of(session, view.id) == [] and pairs_of(session, view.id) == []
    with pytest.raises(StudioError) as gone:
        ctx.abtests.get(view.id)
    assert gone.value.code == "abtest_not_found"


def test_a_model_switch_mid_test_fails_it_clearly_and_resume_finishes_it(make_ctx):
    from tests.conftest import registry_dict

    ctx = make_ctx(registry_dict(**{"tiny-b": {}}))
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    view = make_test(ctx, prompts=[f"p{i}" for i in range(12)], duration_s=0.5)
    assert list(ctx.models.switch("tiny-b"))[-1].stage == "ready"  # someone switches models meanwhile
    failed = wait_done(ctx, view.id)
    assert failed.status == "failed" and failed.clips_ready < 12
    assert "switch back to it and resume the test" in failed.error
    with pytest.raises(Conflict) as refused:
        ctx.abtests.next_pair(view.id, "fay")
    assert refused.value.code == "test_not_ready" and "generation failed" in refused.value.message
    assert list(ctx.models.switch("studio-tiny"))[-1].stage == "ready"
    ctx.abtests.retry(view.id)
    done = wait_done(ctx, view.id)
    assert done.status == "ready" and done.clips_ready == 12
    _, pairs, jobs = records(ctx, view.id)
    assert all(jobs[p.job_a_id].model_id == jobs[p.job_b_id].model_id == "studio-tiny" for p in pairs)


def test_closing_the_studio_stops_its_feeders_and_leaves_the_clips_queued(make_ctx):
    ctx = make_ctx()
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    view = make_test(ctx, prompts=[f"c{i}" for i in range(10)], duration_s=2.0)
    deadline = time.monotonic() + 30
    while not records(ctx, view.id)[2]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    feeder = ctx.abtests._feeders[view.id]
    ctx.close()
    feeder.join(10)
    assert not feeder.is_alive(), "the feeder outlived the studio"
    again = make_ctx(data_dir=ctx.settings.data_dir)  # the next start finds the test still generating
    assert again.abtests.get(view.id).status == "generating"


def test_with_an_evaluation_model_every_clip_is_scored_once_ready(make_ctx):
    """The studio wires A/B tests to the evaluation service: each pair's clips get their automatic score."""
    ctx = make_ctx(eval_model="studio-tiny-clap")
    assert ctx.manager.switch_and_wait("studio-tiny").stage == "ready"
    view = make_test(ctx, side_b={"overrides": TEMPERATURE}, prompts=["scored"], seeds=2)
    assert wait_done(ctx, view.id).status == "ready"
    _, pairs, jobs = records(ctx, view.id)
    deadline = time.monotonic() + 60
    while len(scored := ctx.evaluation.scores(list(jobs))) < len(jobs) or not all(scored.values()):
        assert time.monotonic() < deadline, scored
        time.sleep(0.1)
    res = ctx.abtests.results(view.id)
    assert res.side_a.scored_clips == res.side_b.scored_clips == {"studio-tiny-clap": 2}
    a_scores = [scored[p.job_a_id][0].value for p in pairs]
    assert res.side_a.mean_scores["studio-tiny-clap"] == pytest.approx(sum(a_scores) / 2)

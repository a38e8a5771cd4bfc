"""Adapter performance and version comparison on seeded rows: every figure recomputed by hand here (means,
distributions, counts, exact binomial and signed-rank p-values by enumeration, Mann-Whitney U by its normal
approximation with the tie correction), not-enough-data cases, deleted adapters and non-comparable pairs."""
from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
from sqlmodel import Session, select

from studio.db.models import Job, Rating
from studio.errors import InvalidRequest, NotFound
from studio.services.metrics import UNREADABLE_SIDE, _side_of, loss_figures
from tests.metrics_seed import SCORER, Seeder

PROMPTS, SEEDS = ["piano", "rain", "wind"], [1, 2]
S1 = [0.30, 0.32, 0.35, 0.28, 0.40, 0.33]  # v1's latest run
SB = [0.21, 0.27, 0.33, 0.27, 0.28, 0.29]  # the base's run on the same prompts and seeds: v1 - base all > 0
S2 = [0.31, 0.29, 0.40, 0.30, 0.36, 0.39]  # v2's run, same set: v2 - v1 = +.01 -.03 +.05 +.02 -.04 +.06
S3 = [0.10, 0.12, 0.11]  # v3's run on other seeds
V1_STARS, BASE_STARS, V2_STARS = [4, 5, 3, 2], [2, 3, 1], [5, 5, 4, 5, 4, 5]


# ---- by hand --------------------------------------------------------------------------------------------------------
def binom_two_sided(k: int, n: int) -> float:
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n)


def signed_rank_exact(diffs: list[float]) -> float:
    """Two-sided exact Wilcoxon p by enumerating every sign pattern (distinct |d|, no zeros)."""
    ranks = {d: r for r, d in enumerate(sorted(diffs, key=abs), start=1)}
    w_plus = sum(r for d, r in ranks.items() if d > 0)
    stat = min(w_plus, len(diffs) * (len(diffs) + 1) / 2 - w_plus)
    sums = [sum(s) for k in range(len(diffs) + 1) for s in itertools.combinations(range(1, len(diffs) + 1), k)]
    return min(1.0, 2 * sum(1 for s in sums if s <= stat) / 2 ** len(diffs))


def mwu_normal(a: list[float], b: list[float]) -> tuple[float, float]:
    """(U of a, two-sided p): midranks, tie-corrected variance, continuity correction."""
    pooled = sorted(a + b)
    rank = {v: (pooled.index(v) + 1 + len(pooled) - pooled[::-1].index(v)) / 2 for v in set(pooled)}
    n1, n2, n = len(a), len(b), len(a) + len(b)
    u = sum(rank[v] for v in a) - n1 * (n1 + 1) / 2
    ties = sum(pooled.count(v) ** 3 - pooled.count(v) for v in set(pooled))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (abs(u - n1 * n2 / 2) - 0.5) / sigma
    return u, math.erfc(z / math.sqrt(2))


def mean(xs):
    return sum(xs) / len(xs)


# ---- the seeded studio ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded(make_module_db_ctx):
    ctx = make_module_db_ctx()
    with Session(ctx.engine) as session:
        s = Seeder(session)
        v1 = s.adapter("lofi", 1, training_metrics={"loss": [2.0, 1.2, 1.5]}, training_dataset="piano-a")
        v2 = s.adapter("lofi", 2, training_metrics={"loss": [1.0, 0.8, 0.9], "final_loss": 0.9},
                       training_dataset="piano-b")
        v3, v4 = s.adapter("lofi", 3), s.adapter("lofi", 4)
        other = s.adapter("keys", 1, base="tiny-b")
        gone = s.adapter("old", 1, deleted=True)
        fresh = s.adapter("fresh", 1)
        # v1's own generations: 3 succeeded (4 ratings), 1 failed
        s.job("piano", v1, ratings={"alice": 4, "bob": 5})
        s.job("piano", v1, ratings={"alice": 3})
        s.job("rain", v1, ratings={"alice": 2})
        s.job("piano", v1, status="failed")
        # the base model: on v1's prompts (piano, rain: 3 succeeded, ratings 2, 3, 1), and others left out
        s.job("piano", None, ratings={"alice": 2, "bob": 3})
        s.job("rain", None, ratings={"carol": 1})
        s.job("piano", None)
        s.job("rain", None, status="failed")
        s.job("drums", None, ratings={"alice": 5})  # a prompt v1 never had
        s.job("piano", None, model="tiny-b", ratings={"alice": 5})  # another model
        for prompt, stars in zip(PROMPTS, [(5, 5), (4, 5), (4, 5)]):
            s.job(prompt, v2, ratings={"alice": stars[0], "bob": stars[1]})
        s.job("piano", gone, ratings={"alice": 4})
        # A/B tests
        t1 = s.abtest("v1 vs base", v1, None, {"a": 7, "b": 1, "none": 2})
        s.abtest("base vs v1, running", None, v1, {"a": 4}, closed=False)
        s.abtest("v1 vs v2", v1, v2, {"a": 2, "b": 8})
        s.abtest("v2 vs v1", v2, v1, {"a": 3, "none": 1})
        s.abtest("v1 warmer vs v2", v1, v2, {"a": 1, "b": 1}, overrides_a={"temperature": 0.8})
        s.abtest("v1 two settings", v1, v1, {"a": 5}, overrides_b={"top_k": 50})
        s.abtest("v2 vs v1, running", v2, v1, {"a": 2}, closed=False)
        s.job("piano", v1, abtest_id=t1.id, ratings={"alice": 1})  # an A/B clip: not a generation of v1
        # evaluation runs
        s.evaluation(v1, ["x"], [1], [0.9])  # older
        e1 = s.evaluation(v1, PROMPTS, SEEDS, S1)
        s.evaluation(v1, PROMPTS, SEEDS, [], status="failed")  # newer, failed: ignored
        eb = s.evaluation(None, PROMPTS, SEEDS, SB)
        s.evaluation(None, PROMPTS, [7], [0.5, 0.5, 0.5])  # the base on other seeds: not the same set
        e2 = s.evaluation(v2, PROMPTS, SEEDS, S2)
        s.evaluation(v3, PROMPTS, [5], S3)
        s.evaluation(v4, PROMPTS, SEEDS, S1, scorer="other-clap")
        clip = session.exec(select(Job).where(Job.evaluation_id == e1.id)).first()
        session.add(Rating(job_id=clip.id, user="alice", stars=1))  # a rated evaluation clip: not counted
        session.commit()
        ids = SimpleNamespace(v1=v1.id, v2=v2.id, v3=v3.id, v4=v4.id, other=other.id, gone=gone.id,
                              fresh=fresh.id, e1=e1.id, eb=eb.id, e2=e2.id)
    return ctx, ids


# ---- performance ---------------------------------------------------------------------------------------------------
def test_performance_counts_own_generations_and_ratings_beside_the_base_on_the_same_prompts(seeded):
    ctx, ids = seeded
    p = ctx.metrics.performance(ids.v1)
    assert (p.label, p.deleted, p.base_model, p.base_model_name) == ("lofi v1", False, "studio-tiny", "Studio Tiny")
    assert p.adapter.generations == 3  # failed job, A/B clip and evaluation clips left out
    assert p.adapter.rating.n == 4 and p.adapter.rating.jobs_rated == 3
    assert p.adapter.rating.mean == pytest.approx(mean(V1_STARS))  # 3.5
    assert p.adapter.rating.distribution == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 1}
    # the base: piano and rain only (not drums, not another model, not the failed job)
    assert p.base.generations == 3
    assert p.base.rating.n == 3 and p.base.rating.mean == pytest.approx(2.0)
    assert p.base.rating.distribution == {"1": 1, "2": 1, "3": 1, "4": 0, "5": 0}
    # 3 + 4 ratings: the smallest two-sided p is 2 / C(7, 3) = 0.057, so no verdict; 4 + 5 reaches 2 / 126
    assert 2 / math.comb(7, 3) > 0.05 > 2 / math.comb(9, 4)
    vs = p.rating_vs_base
    assert (vs.verdict, vs.more_needed, vs.n_a, vs.n_b) == ("not_enough_data", 1, 3, 4)


def test_performance_evaluation_is_the_latest_run_beside_the_base_run_on_the_same_set(seeded):
    ctx, ids = seeded
    p = ctx.metrics.performance(ids.v1)
    e, b = p.adapter.evaluation, p.base.evaluation
    assert (e.evaluation_id, e.n, e.scorer, e.prompts, e.seeds) == (ids.e1, 6, SCORER, 3, SEEDS)
    assert e.mean_score == pytest.approx(mean(S1))
    assert (b.evaluation_id, b.n) == (ids.eb, 6) and b.mean_score == pytest.approx(mean(SB))
    test = p.evaluation_vs_base  # A: base, B: this version; every difference positive: p = 2 / 2^6
    assert test.p_value == pytest.approx(signed_rank_exact([x - y for x, y in zip(S1, SB)]))
    assert test.p_value == pytest.approx(2 / 64) and test.verdict == "b"


def test_performance_ab_record_counts_revealed_tests_only(seeded):
    ctx, ids = seeded
    ab = ctx.metrics.performance(ids.v1).ab
    assert [t.name for t in ab.tests] == ["v1 vs base", "v1 vs v2", "v2 vs v1", "v1 warmer vs v2"]
    assert [(t.side, t.wins, t.losses, t.ties) for t in ab.tests] == [
        ("a", 7, 1, 2), ("a", 2, 8, 0), ("b", 0, 3, 1), ("a", 1, 1, 0)]
    assert [t.opponent for t in ab.tests] == ["Studio Tiny (base model)", "lofi v2", "lofi v2", "lofi v2"]
    assert ab.tests[3].overrides == {"temperature": 0.8} and ab.tests[3].opponent_overrides == {}
    assert (ab.wins, ab.losses, ab.ties, ab.pending_tests) == (10, 13, 3, 2)  # two tests still running
    vs = ab.vs_base  # the base won 1, this version 7: p = 2 (1 + 8) / 256
    assert (vs.wins_a, vs.wins_b, vs.ties) == (1, 7, 2)
    assert vs.p_value == pytest.approx(binom_two_sided(7, 8)) == pytest.approx(18 / 256)
    assert vs.verdict == "no_difference"


def test_performance_of_a_deleted_version_stays_readable(seeded):
    ctx, ids = seeded
    p = ctx.metrics.performance(ids.gone)
    assert p.deleted and p.adapter.generations == 1 and p.adapter.rating.mean == 4
    assert p.base.rating.n == 2 and p.base.rating.mean == 2.5  # the base on "piano" only: 2 and 3


def test_performance_with_no_data_says_what_is_missing(seeded):
    ctx, ids = seeded
    p = ctx.metrics.performance(ids.fresh)
    assert p.adapter.generations == 0 and p.adapter.rating.n == 0 and p.adapter.rating.mean is None
    assert p.adapter.evaluation is None and p.base.evaluation is None and p.evaluation_vs_base is None
    assert p.base.generations == 0 and p.base.rating.n == 0  # no prompt of its own: nothing to compare on
    assert p.rating_vs_base.verdict == "not_enough_data" and p.ab.tests == [] and p.ab.vs_base.decisive == 0
    assert any("No rating" in n for n in p.notes) and any("No evaluation run" in n for n in p.notes)


def test_unknown_adapter_is_not_found(seeded):
    ctx, _ = seeded
    with pytest.raises(NotFound) as err:
        ctx.metrics.performance(999_999)
    assert err.value.code == "adapter_not_found"


# ---- comparison ----------------------------------------------------------------------------------------------------
def test_compare_two_versions_every_metric_by_hand(seeded):
    ctx, ids = seeded
    c = ctx.metrics.compare(ids.v1, ids.v2)
    assert c.comparable and c.reason is None and (c.a.label, c.b.label) == ("lofi v1", "lofi v2")
    loss = c.training_loss
    assert (loss.final_a, loss.best_a, loss.steps_a) == (1.5, 1.2, 3)
    assert (loss.final_b, loss.best_b, loss.steps_b) == (0.9, 0.8, 3)
    assert loss.better == "b" and loss.verdict == "not_tested" and "different data" in loss.summary

    ev = c.evaluation  # the same 6 prompt and seed pairs: paired
    assert ev.test == "wilcoxon_signed_rank" and (ev.n_a, ev.n_b) == (6, 6)
    assert ev.value_a == pytest.approx(mean(S1)) and ev.value_b == pytest.approx(mean(S2))
    # |d| ranks 1..6, W+ = 1 + 2 + 5 + 6 = 14, W- = 7: 18 of 64 sign patterns sum to 7 or less
    assert ev.p_value == pytest.approx(signed_rank_exact([y - x for x, y in zip(S1, S2)]))
    assert ev.p_value == pytest.approx(2 * 18 / 64)
    assert ev.verdict == "no_difference" and not ev.significant and ev.better == "b"

    r = c.rating
    u, p = mwu_normal(V1_STARS, V2_STARS)  # U = 15 - 10 = 5; sigma^2 = 2 (11 - 144/90) = 18.8
    assert u == 5 and r.detail.statistic == pytest.approx(u) and r.p_value == pytest.approx(p, rel=1e-9)
    assert p == pytest.approx(math.erfc(6.5 / math.sqrt(18.8) / math.sqrt(2)))
    assert (r.n_a, r.n_b, r.value_a, r.value_b) == (4, 6, 3.5, pytest.approx(28 / 6))
    assert r.verdict == "no_difference" and r.better == "b" and r.test == "mann_whitney_u"

    ab = c.ab  # v1: 2 (as A in "v1 vs v2") + 0; v2: 8 + 3; ties 1; "warmer" (other settings) and running left out
    assert (ab.detail.wins_a, ab.detail.wins_b, ab.detail.ties, ab.n_a) == (2, 11, 1, 13)
    assert ab.p_value == pytest.approx(binom_two_sided(2, 13)) == pytest.approx(184 / 8192)
    assert ab.verdict == "b" and ab.significant and ab.better == "b"
    assert ab.value_b == pytest.approx(11 / 13) and c.ab_pending_tests == 1
    assert ab.summary.startswith("lofi v2 is better") and "1 test(s) between them are not revealed" in ab.summary


def test_compare_is_symmetric(seeded):
    ctx, ids = seeded
    ab, ba = ctx.metrics.compare(ids.v1, ids.v2), ctx.metrics.compare(ids.v2, ids.v1)
    assert ab.ab.p_value == pytest.approx(ba.ab.p_value) and (ab.ab.verdict, ba.ab.verdict) == ("b", "a")
    assert ab.rating.p_value == pytest.approx(ba.rating.p_value)
    assert ab.evaluation.p_value == pytest.approx(ba.evaluation.p_value)


def test_compare_runs_on_other_seeds_with_mann_whitney(seeded):
    ctx, ids = seeded
    ev = ctx.metrics.compare(ids.v1, ids.v3).evaluation
    # every v1 score above every v3 score: U = 18, exact p = 2 / C(9, 3)
    assert ev.test == "mann_whitney_u" and (ev.n_a, ev.n_b) == (6, 3)
    assert ev.p_value == pytest.approx(2 / math.comb(9, 3)) and ev.verdict == "a" and ev.better == "a"


def test_compare_runs_by_different_scorers_is_refused_for_that_metric(seeded):
    ctx, ids = seeded
    ev = ctx.metrics.compare(ids.v1, ids.v4).evaluation
    assert ev.verdict == "not_comparable" and "other-clap" in ev.summary and ev.p_value is None


def test_compare_with_no_data_says_how_much_more_is_needed(seeded):
    ctx, ids = seeded
    c = ctx.metrics.compare(ids.fresh, ids.v1)
    assert c.training_loss.verdict == "not_enough_data" and "fresh v1" in c.training_loss.summary
    assert c.evaluation.verdict == "not_enough_data" and "No evaluation run of fresh v1" in c.evaluation.summary
    # 0 vs 4 ratings: k more each until 2 / C(n_a + n_b + 2k, k) < 0.05: k = 3 (2/120), k = 2 gives 2/28
    assert 2 / math.comb(8, 2) > 0.05 > 2 / math.comb(10, 3)
    assert c.rating.verdict == "not_enough_data" and c.rating.more_needed == 3 and "3 more" in c.rating.summary
    assert c.ab.verdict == "not_enough_data" and c.ab.more_needed == 6  # 2/64 needs 6 one-way votes
    assert not c.ab.significant and c.ab.better is None


def test_versions_of_different_base_models_are_not_comparable(seeded):
    ctx, ids = seeded
    c = ctx.metrics.compare(ids.v1, ids.other)
    assert not c.comparable and "Studio Tiny" in c.reason and "tiny-b" in c.reason
    for m in (c.evaluation, c.rating, c.ab):
        assert m.verdict == "not_comparable" and m.p_value is None and not m.significant
    assert c.rating.value_a == 3.5 and c.rating.n_a == 4  # the figures are still shown


def test_deleted_versions_can_be_compared(seeded):
    ctx, ids = seeded
    c = ctx.metrics.compare(ids.v1, ids.gone)
    assert c.comparable and c.b.deleted and c.b.label == "old v1 (deleted)"
    assert (c.rating.n_a, c.rating.n_b, c.rating.value_b) == (4, 1, 4.0)


@pytest.mark.parametrize("a, b, error", [(1, 1, InvalidRequest), (1, 999_999, NotFound), (999_999, 1, NotFound)])
def test_compare_refusals(seeded, a, b, error):
    ctx, ids = seeded
    a, b = (ids.v1 if x == 1 else x for x in (a, b))
    with pytest.raises(error):
        ctx.metrics.compare(a, b)


def test_timeline_figures(seeded):
    ctx, ids = seeded
    figures = ctx.metrics.timeline_figures([ids.v1, ids.v2, ids.fresh, 999_999])
    assert set(figures) == {ids.v1, ids.v2, ids.fresh}
    v1, v2, fresh = figures[ids.v1], figures[ids.v2], figures[ids.fresh]
    assert (v1.rating_mean, v1.ratings, v1.evaluation_n) == (3.5, 4, 6)
    assert v1.evaluation_mean == pytest.approx(mean(S1)) and v2.rating_mean == pytest.approx(28 / 6)
    assert (fresh.rating_mean, fresh.ratings, fresh.evaluation_mean, fresh.evaluation_n) == (None, 0, None, 0)


@pytest.mark.parametrize("metrics, expected", [
    (None, (None, None, 0)),
    ({}, (None, None, 0)),
    ({"loss": [3.0, 1.0, 2.0]}, (2.0, 1.0, 3)),
    ({"loss": [3.0, 1.0], "final_loss": 0.7, "best_loss": 0.5}, (0.7, 0.5, 2)),
    ({"loss": 1.25}, (1.25, 1.25, 1)),
    ({"final_loss": 0.4}, (0.4, 0.4, 0)),
    ({"loss": ["x", None, 2.0, True, float("nan")]}, (2.0, 2.0, 1)),  # non-numbers skipped
], ids=["none", "empty", "curve", "explicit", "number", "final only", "junk"])
def test_loss_figures_read_the_training_record(metrics, expected):
    assert loss_figures(metrics) == expected


@pytest.mark.parametrize("side, expected", [
    ({"adapter_id": 3, "overrides": {"top_k": 50}}, (3, {"top_k": 50})),
    ({"adapter_id": None, "overrides": {}}, (None, {})),
    ({"adapter_id": None}, (None, {})),
    ({"adapter_id": "3", "overrides": None}, (3, {})),
    ({"adapter_id": "lofi"}, (UNREADABLE_SIDE, {})),  # never taken for the base model
    ({"adapter_id": True}, (UNREADABLE_SIDE, {})),
    (None, (None, {})),
])
def test_ab_sides_are_read_defensively(side, expected):
    assert _side_of(side) == expected


def test_a_failed_newest_evaluation_is_said_not_hidden(make_module_ctx):
    """A run that failed (a broken evaluation model, a restart it could not survive) is the version's news: the
    performance says so with the reason, instead of 'no evaluation run yet'."""
    from studio.db.engine import session_scope
    from studio.db.models import Adapter, Evaluation

    ctx = make_module_ctx()
    with session_scope(ctx.engine) as s:
        a = Adapter(name="broke", version=1, base_model="studio-tiny", path="adapters/x", source="test")
        s.add(a)
        s.commit()
        s.refresh(a)
        s.add(Evaluation(model_id="studio-tiny", adapter_id=a.id, scorer="clap-tiny", prompts=["p"], seeds=[1],
                         duration_s=1.0, status="failed", error="Scoring failed: index out of range"))
        s.commit()
        adapter_id = a.id
    notes = " ".join(ctx.metrics.performance(adapter_id).notes)
    assert "is failed: Scoring failed: index out of range" in notes and "No evaluation run" not in notes

"""Adapter metrics and version comparison: what a version's generations, ratings, blind A/B tests and evaluation runs
say about it, beside the base model on the same prompts; and two versions side by side with a verdict per metric.

Read from the tables the ratings, A/B and evaluation services fill; every statistic comes from studio.services.stats.

Rules (said here once, and on the page and in the API's descriptions):
- Generations and ratings are a person's own generations only: clips made for an A/B test or an evaluation run are
  left out (their listeners voted blind; their scores are the evaluation's figure).
- The base model's figures are 'on the same prompts': its own generations whose prompt is exactly one the version
  was rated on (generations: one it generated), and its evaluation run on the same prompt set, seeds and scorer.
- A/B results count only once a test is revealed to everyone (`closed_at` set): a running test's votes are never
  shown, not even as a total; it is counted as pending. A test whose two sides use the same adapter (two settings of
  one version) is not part of a version's record.
- Each rating is one sample (several people may rate one clip); each decisive A/B vote is one sample.
"""
from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field

from studio.db.adapters import get_adapter
from studio.db.engine import session_scope
from studio.db.metrics import (abtests_on, evaluation_scores, generation_count, latest_evaluation, ratings,
                               succeeded_evaluations, vote_counts)
from studio.db.models import ABTest, Adapter, Evaluation, UTCTimestamp
from studio.errors import InvalidRequest, NotFound
from studio.registry import Registry
from studio.services.stats import ALPHA, SignTest, TwoSampleTest, mann_whitney, sign_test, wilcoxon_paired

STARS = ("1", "2", "3", "4", "5")
Side = Literal["a", "b"]
RULE_AB = ("Only tests revealed to everyone count (a running test's votes stay hidden until it is revealed); "
           "tests between two settings of this same version are left out.")


# ---- results -------------------------------------------------------------------------------------------------------
class RatingFigures(BaseModel):
    n: int = Field(description="ratings (one per person per generation; each is one sample)")
    jobs_rated: int = Field(description="generations with at least one rating")
    mean: float | None = Field(description="average stars (None: no rating)")
    distribution: dict[str, int] = Field(description="how many ratings gave 1, 2, 3, 4 and 5 stars (keys '1'..'5')")


class EvaluationFigures(BaseModel):
    evaluation_id: int
    scorer: str = Field(description="the evaluation model that scored the clips")
    mean_score: float | None
    n: int = Field(description="clips scored")
    prompts: int = Field(description="prompts in the run's prompt set")
    seeds: list[int]
    finished_at: UTCTimestamp | None


class VersionFigures(BaseModel):
    generations: int = Field(description="succeeded own generations (A/B and evaluation clips left out)")
    rating: RatingFigures
    evaluation: EvaluationFigures | None = Field(description="latest succeeded evaluation run (None: none)")


class ABTestRecord(BaseModel):
    abtest_id: int
    name: str
    side: Side = Field(description="the side this version was in the test")
    overrides: dict[str, Any] = Field(description="this side's generation-setting overrides")
    opponent_adapter_id: int | None = Field(description="None: the base model")
    opponent: str = Field(description="'name vN' ('(deleted)' added for a deleted version), or the base model")
    opponent_overrides: dict[str, Any]
    wins: int = Field(description="votes for this version")
    losses: int = Field(description="votes for the opponent")
    ties: int = Field(description="'no preference' votes")
    revealed_at: UTCTimestamp


class ABRecord(BaseModel):
    rule: str = RULE_AB
    tests: list[ABTestRecord] = Field(description="revealed tests with this version on one side, oldest first")
    wins: int
    losses: int
    ties: int
    pending_tests: int = Field(description="tests with this version not revealed yet: their votes are not shown")
    vs_base: SignTest = Field(description="every revealed vote against the base model (A: the base model, B: this "
                                          "version)")


class AdapterPerformance(BaseModel):
    adapter_id: int
    label: str
    name: str
    version: int
    deleted: bool
    base_model: str
    base_model_name: str
    adapter: VersionFigures
    base: VersionFigures = Field(description=(
        "the base model on the same prompts: its own generations whose prompt is one this version generated "
        "(ratings: one it was rated on), and its evaluation run on the same prompt set, seeds and scorer"))
    rating_vs_base: TwoSampleTest = Field(description="Mann-Whitney U: A the base model, B this version")
    evaluation_vs_base: TwoSampleTest | None = Field(description=(
        "paired Wilcoxon on the clips of both runs (A the base model, B this version); None: no base run on the "
        "same prompt set, seeds and scorer"))
    ab: ABRecord
    notes: list[str] = Field(description="what is missing and how to get it, for a person")


class VersionSide(BaseModel):
    adapter_id: int
    label: str
    deleted: bool
    base_model: str
    base_model_name: str
    training_dataset: str | None


Verdict = Literal["a", "b", "no_difference", "not_enough_data", "not_comparable", "not_tested"]


class LossComparison(BaseModel):
    """Training loss as recorded by the training (adapter.training_metrics): not a sample, so no test."""

    final_a: float | None
    best_a: float | None
    steps_a: int = Field(description="loss values recorded (0: none)")
    final_b: float | None
    best_b: float | None
    steps_b: int
    better: Side | None = Field(description="the lower final loss (None: equal or not recorded for both)")
    verdict: Verdict = Field(description="not_tested: a training loss is one run's figure, not a sample; "
                                         "not_enough_data: not recorded for both")
    summary: str


class MetricComparison(BaseModel):
    metric: Literal["evaluation_score", "rating", "ab_votes"]
    value_a: float | None = Field(description="mean score / mean rating / share of decisive A/B votes won")
    value_b: float | None
    n_a: int = Field(description="samples behind value_a (clips scored, ratings, decisive votes)")
    n_b: int
    test: Literal["wilcoxon_signed_rank", "mann_whitney_u", "sign_test"] | None
    p_value: float | None
    better: Side | None = Field(description="the version with the better figure (None: equal or no data)")
    significant: bool = Field(description=f"the difference is significant at {ALPHA:.0%}")
    verdict: Verdict
    more_needed: int = Field(description="not_enough_data: samples still needed (the summary says of what)")
    summary: str = Field(description="the verdict in plain words, with the versions' names")
    detail: TwoSampleTest | SignTest | None = Field(description="the test's full result")


class VersionComparison(BaseModel):
    a: VersionSide
    b: VersionSide
    comparable: bool = Field(description="same base model (and base weights when recorded)")
    reason: str | None = Field(description="why the two versions cannot be compared")
    alpha: float = ALPHA
    training_loss: LossComparison
    evaluation: MetricComparison
    rating: MetricComparison
    ab: MetricComparison
    ab_pending_tests: int = Field(description="tests between the two not revealed yet (not counted)")


class TimelineFigures(BaseModel):
    """What the version timeline shows beside each version."""

    adapter_id: int
    rating_mean: float | None
    ratings: int
    evaluation_mean: float | None
    evaluation_n: int


# ---- helpers -------------------------------------------------------------------------------------------------------
def _mean(xs) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _rating_figures(rows) -> RatingFigures:
    stars = [r.stars for r in rows]
    dist = {s: 0 for s in STARS}
    for value in stars:
        if str(value) in dist:
            dist[str(value)] += 1
    return RatingFigures(n=len(stars), jobs_rated=len({r.job_id for r in rows}), mean=_mean(stars),
                         distribution=dist)


def _evaluation_figures(run: Evaluation | None) -> EvaluationFigures | None:
    if run is None:
        return None
    return EvaluationFigures(evaluation_id=run.id, scorer=run.scorer, mean_score=run.mean_score, n=run.n,
                             prompts=len(run.prompts), seeds=list(run.seeds), finished_at=run.finished_at)


def _run_key(run: Evaluation) -> tuple:
    """Runs with the same key scored the same clips' prompts and seeds with the same evaluation model."""
    return run.scorer, tuple(sorted(set(run.prompts))), tuple(sorted(set(run.seeds)))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def loss_figures(metrics: dict[str, Any] | None) -> tuple[float | None, float | None, int]:
    """(final, best, values recorded) from a training record: 'loss' (a list, one value per logged step, or a
    number), 'final_loss' and 'best_loss' (as the adapters' timeline reads them; explicit values win)."""
    metrics = metrics or {}
    loss = metrics.get("loss")
    values = [float(x) for x in loss if _is_number(x)] if isinstance(loss, list) else \
        [float(loss)] if _is_number(loss) else []
    final = metrics.get("final_loss")
    best = metrics.get("best_loss")
    final = float(final) if _is_number(final) else (values[-1] if values else None)
    best = float(best) if _is_number(best) else (min(values) if values else final)
    return final, best, len(values)


UNREADABLE_SIDE = -1  # an adapter_id that is neither an id nor None: matches no version and is not the base model


def _side_of(side: dict) -> tuple[int | None, dict]:
    """(adapter id or None for the base model, overrides) of an A/B side as the A/B service stores it."""
    side = side if isinstance(side, dict) else {}
    adapter_id, overrides = side.get("adapter_id"), side.get("overrides")
    if adapter_id is not None and (not isinstance(adapter_id, int) or isinstance(adapter_id, bool)):
        adapter_id = int(adapter_id) if isinstance(adapter_id, str) and adapter_id.isdigit() else UNREADABLE_SIDE
    return adapter_id, overrides if isinstance(overrides, dict) else {}


def _more(n: int, what: str) -> str:
    return f"{n} more {what}{'' if n == 1 else 's'}"


# ---- the service ---------------------------------------------------------------------------------------------------
class MetricsService:
    def __init__(self, engine, registry: Registry):
        self.engine, self.registry = engine, registry

    def _model_name(self, model_id: str) -> str:
        return self.registry.get(model_id).display_name if model_id in self.registry.ids() else model_id

    def _base_label(self, model_id: str) -> str:
        return f"{self._model_name(model_id)} (base model)"

    @staticmethod
    def _row(session, adapter_id: int) -> Adapter:
        a = get_adapter(session, adapter_id)
        if a is None:
            raise NotFound(f"There is no adapter {adapter_id}.", code="adapter_not_found", adapter_id=adapter_id)
        return a

    def _label(self, session, adapter_id: int | None, model_id: str) -> str:
        if adapter_id is None:
            return self._base_label(model_id)
        a = get_adapter(session, adapter_id)
        if a is None:
            return f"adapter {adapter_id} (unknown)"
        return a.label + (" (deleted)" if a.deleted_at is not None else "")

    # ---- performance ---------------------------------------------------------------------------------------------
    def performance(self, adapter_id: int) -> AdapterPerformance:
        """One version's figures beside the base model's on the same prompts (deleted versions too: their past
        generations, ratings and tests stay readable). NotFound for an unknown id."""
        with session_scope(self.engine) as session:
            a = self._row(session, adapter_id)
            model = a.base_model
            mine = ratings(session, model_id=model, adapter_id=a.id)
            base_rows = ratings(session, model_id=model, adapter_id=None, prompts_of_adapter=a.id)
            runs = succeeded_evaluations(session, model_id=model, adapter_id=a.id)
            run = runs[0] if runs else None
            newest = latest_evaluation(session, model_id=model, adapter_id=a.id)
            newest_note = None
            if newest is not None and newest.status != "succeeded" and (run is None or newest.id > run.id):
                newest_note = (f"The newest evaluation run ({newest.id}) is {newest.status}"
                               + (f": {newest.error}" if newest.error else ".")
                               + ("" if newest.status == "running" else " Evaluate again once the cause is fixed."))
            base_run = None
            if run is not None:
                base_run = next((r for r in succeeded_evaluations(session, model_id=model, adapter_id=None)
                                 if _run_key(r) == _run_key(run)), None)
            eval_test = None
            if run is not None and base_run is not None:
                ours, theirs = evaluation_scores(session, run), evaluation_scores(session, base_run)
                keys = sorted(ours.keys() & theirs.keys())
                eval_test = wilcoxon_paired([theirs[k] for k in keys], [ours[k] for k in keys])
            ab = self._ab_record(session, a)
            adapter = VersionFigures(generations=generation_count(session, model_id=model, adapter_id=a.id),
                                     rating=_rating_figures(mine), evaluation=_evaluation_figures(run))
            base = VersionFigures(generations=generation_count(session, model_id=model, adapter_id=None,
                                                               prompts_of_adapter=a.id),
                                  rating=_rating_figures(base_rows), evaluation=_evaluation_figures(base_run))
        notes = []
        if not mine:
            notes.append("No rating of this version's generations yet: rate them on the Generate or History tab.")
        if mine and not base_rows:
            notes.append("The base model has no rated generation on the prompts this version was rated on: "
                         "generate them without the adapter and rate them to compare.")
        if newest_note:
            notes.append(newest_note)
        if run is None:
            if not newest_note:
                notes.append("No evaluation run of this version yet.")
        elif base_run is None:
            notes.append("No evaluation run of the base model on the same prompt set and seeds yet.")
        if not ab.tests:
            notes.append("No revealed A/B test with this version yet." +
                         (f" {ab.pending_tests} test(s) not revealed yet: close a test (A/B tests tab) to count its votes."
                          if ab.pending_tests else ""))
        return AdapterPerformance(
            adapter_id=a.id, label=a.label, name=a.name, version=a.version, deleted=a.deleted_at is not None,
            base_model=model, base_model_name=self._model_name(model), adapter=adapter, base=base,
            rating_vs_base=mann_whitney([r.stars for r in base_rows], [r.stars for r in mine]),
            evaluation_vs_base=eval_test, ab=ab, notes=notes)

    def _ab_record(self, session, a: Adapter) -> ABRecord:
        tests, pending = [], 0
        candidates: list[tuple[ABTest, Side]] = []
        for t in abtests_on(session, a.base_model):
            (id_a, _), (id_b, _) = _side_of(t.side_a), _side_of(t.side_b)
            if id_a == id_b or a.id not in (id_a, id_b):
                continue  # not this version, or two settings of one version
            if t.closed_at is None:
                pending += 1
            else:
                candidates.append((t, "a" if id_a == a.id else "b"))
        counts = vote_counts(session, [t.id for t, _ in candidates])
        for t, side in candidates:
            mine, other = (t.side_a, t.side_b) if side == "a" else (t.side_b, t.side_a)
            (_, overrides), (other_id, other_overrides) = _side_of(mine), _side_of(other)
            votes = counts[t.id]
            tests.append(ABTestRecord(
                abtest_id=t.id, name=t.name, side=side, overrides=overrides, opponent_adapter_id=other_id,
                opponent=self._label(session, other_id, t.model_id), opponent_overrides=other_overrides,
                wins=votes[side], losses=votes["b" if side == "a" else "a"], ties=votes["none"],
                revealed_at=t.closed_at))
        vs_base = [r for r in tests if r.opponent_adapter_id is None]
        return ABRecord(tests=tests, wins=sum(r.wins for r in tests), losses=sum(r.losses for r in tests),
                        ties=sum(r.ties for r in tests), pending_tests=pending,
                        vs_base=sign_test(sum(r.losses for r in vs_base), sum(r.wins for r in vs_base),
                                          sum(r.ties for r in vs_base)))

    # ---- timeline --------------------------------------------------------------------------------------------------
    def timeline_figures(self, adapter_ids: list[int]) -> dict[int, TimelineFigures]:
        """Average rating (and how many) and latest evaluation score of each version; unknown ids are left out."""
        out = {}
        with session_scope(self.engine) as session:
            for adapter_id in adapter_ids:
                a = get_adapter(session, adapter_id)
                if a is None:
                    continue
                stars = [r.stars for r in ratings(session, model_id=a.base_model, adapter_id=a.id)]
                runs = succeeded_evaluations(session, model_id=a.base_model, adapter_id=a.id)
                out[a.id] = TimelineFigures(adapter_id=a.id, rating_mean=_mean(stars), ratings=len(stars),
                                            evaluation_mean=runs[0].mean_score if runs else None,
                                            evaluation_n=runs[0].n if runs else 0)
        return out

    # ---- comparison ----------------------------------------------------------------------------------------------
    def compare(self, a_id: int, b_id: int) -> VersionComparison:
        """Two versions side by side (A: a_id, B: b_id). NotFound for an unknown id; InvalidRequest for the same
        version twice. Versions on different base models are returned with comparable=False and the reason, their
        figures shown without a verdict."""
        if a_id == b_id:
            raise InvalidRequest("Choose two different versions to compare.", code="same_version", adapter_id=a_id)
        with session_scope(self.engine) as session:
            a, b = self._row(session, a_id), self._row(session, b_id)
            reason = self._not_comparable(a, b)
            sides = [VersionSide(adapter_id=x.id, label=x.label + (" (deleted)" if x.deleted_at else ""),
                                 deleted=x.deleted_at is not None, base_model=x.base_model,
                                 base_model_name=self._model_name(x.base_model), training_dataset=x.training_dataset)
                     for x in (a, b)]
            names = (sides[0].label, sides[1].label)
            evaluation = self._compare_evaluations(session, a, b, names, reason)
            stars_a = [r.stars for r in ratings(session, model_id=a.base_model, adapter_id=a.id)]
            stars_b = [r.stars for r in ratings(session, model_id=b.base_model, adapter_id=b.id)]
            rating = self._compare_ratings(stars_a, stars_b, names, reason)
            ab, pending = self._compare_ab(session, a, b, names, reason)
        return VersionComparison(a=sides[0], b=sides[1], comparable=reason is None, reason=reason,
                                 training_loss=self._compare_loss(a, b, names), evaluation=evaluation,
                                 rating=rating, ab=ab, ab_pending_tests=pending)

    def _not_comparable(self, a: Adapter, b: Adapter) -> str | None:
        if a.base_model != b.base_model:
            return (f"{a.label} was trained on {self._model_name(a.base_model)} and {b.label} on "
                    f"{self._model_name(b.base_model)}: versions of different base models cannot be compared (their "
                    "clips come from different models; an A/B test needs one base model).")
        if a.base_weights_hash and b.base_weights_hash and a.base_weights_hash != b.base_weights_hash:
            return (f"{a.label} and {b.label} were trained on different weights of "
                    f"{self._model_name(a.base_model)}: they cannot be compared.")
        return None

    @staticmethod
    def _compare_loss(a: Adapter, b: Adapter, names) -> LossComparison:
        (final_a, best_a, steps_a), (final_b, best_b, steps_b) = loss_figures(a.training_metrics), \
            loss_figures(b.training_metrics)
        better = None
        if final_a is not None and final_b is not None and final_a != final_b:
            better = "a" if final_a < final_b else "b"
        if final_a is None or final_b is None:
            missing = " and ".join(n for n, f in zip(names, (final_a, final_b)) if f is None)
            summary = f"No training loss recorded for {missing}."
            verdict = "not_enough_data"
        else:
            lower = (f"{names[0 if better == 'a' else 1]} ended training with the lower loss "
                     f"({min(final_a, final_b):.4g} vs {max(final_a, final_b):.4g})") if better else \
                f"Both ended training with a loss of {final_a:.4g}"
            summary = (f"{lower}. No significance test: a training loss is one figure per run, and runs on other "
                       "data or settings are not on the same scale.")
            verdict = "not_tested"
        if a.training_dataset and b.training_dataset and a.training_dataset != b.training_dataset:
            summary += " They were trained on different data."
        return LossComparison(final_a=final_a, best_a=best_a, steps_a=steps_a, final_b=final_b, best_b=best_b,
                              steps_b=steps_b, better=better, verdict=verdict, summary=summary)

    def _compare_evaluations(self, session, a: Adapter, b: Adapter, names, reason) -> MetricComparison:
        runs_a = succeeded_evaluations(session, model_id=a.base_model, adapter_id=a.id)
        runs_b = succeeded_evaluations(session, model_id=b.base_model, adapter_id=b.id)
        # the newest pair of runs over the same prompts, seeds and scorer (paired); else each one's latest
        pair = next(((ra, rb) for ra in runs_a for rb in runs_b if _run_key(ra) == _run_key(rb)), None)
        run_a, run_b = pair or (runs_a[0] if runs_a else None, runs_b[0] if runs_b else None)
        scores_a = evaluation_scores(session, run_a) if run_a else {}
        scores_b = evaluation_scores(session, run_b) if run_b else {}
        values = dict(value_a=_mean(list(scores_a.values())), value_b=_mean(list(scores_b.values())),
                      n_a=len(scores_a), n_b=len(scores_b))
        missing = [n for n, r in zip(names, (run_a, run_b)) if r is None]
        if reason:
            return _no_verdict("evaluation_score", values, "not_comparable", reason)
        if missing:
            return _no_verdict("evaluation_score", values, "not_enough_data",
                               f"No evaluation run of {' and '.join(missing)} yet: evaluate "
                               f"{'it' if len(missing) == 1 else 'them'} to compare scores.")
        if run_a.scorer != run_b.scorer:
            return _no_verdict("evaluation_score", values, "not_comparable",
                               f"The two evaluation runs were scored by different evaluation models ({run_a.scorer}, "
                               f"{run_b.scorer}): evaluate both with the same one.")
        if pair:
            keys = sorted(scores_a.keys() & scores_b.keys())
            test = wilcoxon_paired([scores_a[k] for k in keys], [scores_b[k] for k in keys])
            how = f"on the same {len(keys)} prompt and seed pairs (paired Wilcoxon signed-rank test)"
            need = ("clip that scores differently on the same prompt and seed",
                    "clips that score differently on the same prompt and seed")
        else:
            test = mann_whitney(list(scores_a.values()), list(scores_b.values()), what="score")
            how = "on different prompt sets or seeds (Mann-Whitney U test; the same set would allow a paired test)"
            need = ("scored clip of each version", "scored clips of each version")
        return _from_two_sample("evaluation_score", test, names, "mean evaluation score", how, need, ".3f")

    @staticmethod
    def _compare_ratings(stars_a, stars_b, names, reason) -> MetricComparison:
        test = mann_whitney(stars_a, stars_b)
        if reason:
            values = dict(value_a=test.mean_a, value_b=test.mean_b, n_a=test.n_a, n_b=test.n_b)
            return _no_verdict("rating", values, "not_comparable", reason)
        return _from_two_sample("rating", test, names, "average rating",
                                "over every rating of each version's own generations (Mann-Whitney U test)",
                                ("rating of each version", "ratings of each version"), ".2f")

    def _compare_ab(self, session, a: Adapter, b: Adapter, names, reason) -> tuple[MetricComparison, int]:
        """Revealed tests between exactly these two versions with the same setting overrides on both sides."""
        wins = {"a": 0, "b": 0}
        ties = pending = tests = 0
        chosen = []
        for t in abtests_on(session, a.base_model) if reason is None else []:
            (id_a, over_a), (id_b, over_b) = _side_of(t.side_a), _side_of(t.side_b)
            if {id_a, id_b} != {a.id, b.id} or over_a != over_b:
                continue
            if t.closed_at is None:
                pending += 1
            else:
                chosen.append((t, id_a == a.id))
        counts = vote_counts(session, [t.id for t, _ in chosen])
        for t, a_is_side_a in chosen:
            votes = counts[t.id]
            wins["a"] += votes["a" if a_is_side_a else "b"]
            wins["b"] += votes["b" if a_is_side_a else "a"]
            ties += votes["none"]
            tests += 1
        test = sign_test(wins["a"], wins["b"], ties)
        decisive = test.decisive
        values = dict(value_a=(1 - test.win_rate_b) if decisive else None, value_b=test.win_rate_b,
                      n_a=decisive, n_b=decisive)
        if reason:
            return _no_verdict("ab_votes", values, "not_comparable", reason), 0
        pending_note = f" {pending} test(s) between them are not revealed yet and are not counted." if pending else ""
        if tests == 0:
            metric = _no_verdict("ab_votes", values, "not_enough_data",
                                 f"No revealed A/B test between {names[0]} and {names[1]} yet: run a Quick A/B to "
                                 f"compare them by ear (at least {test.more_needed} decisive votes)." + pending_note)
            metric.more_needed, metric.test, metric.detail = test.more_needed, "sign_test", test
            return metric, pending
        where = (f"{names[0]} won {wins['a']} and {names[1]} won {wins['b']} of {decisive} decisive "
                 f"vote{'s' if decisive != 1 else ''} ({ties} without preference, "
                 f"{tests} test{'s' if tests != 1 else ''})")
        better = None if wins["a"] == wins["b"] else ("a" if wins["a"] > wins["b"] else "b")
        if test.verdict == "not_enough_data":
            summary = (f"Not enough votes for a verdict: {where}; at least {_more(test.more_needed, 'decisive vote')}"
                       " are needed.")
        elif test.verdict in ("a", "b"):
            summary = (f"{names[0 if test.verdict == 'a' else 1]} is better: {where}, p = {test.p_value:.3g} "
                       "(two-sided exact binomial sign test), significant at 5 %.")
        else:
            summary = f"No significant difference: {where}, p = {test.p_value:.3g} (exact binomial sign test)."
            if test.more_needed_at_rate:
                summary += f" About {_more(test.more_needed_at_rate, 'decisive vote')} at this rate would settle it."
        return MetricComparison(metric="ab_votes", **values, test="sign_test", p_value=test.p_value, better=better,
                                significant=test.verdict in ("a", "b"), verdict=test.verdict,
                                more_needed=test.more_needed, summary=summary + pending_note, detail=test), pending


def _no_verdict(metric: str, values: dict, verdict: str, summary: str) -> MetricComparison:
    return MetricComparison(metric=metric, **values, test=None, p_value=None, better=None, significant=False,
                            verdict=verdict, more_needed=0, summary=summary, detail=None)


def _from_two_sample(metric: str, test: TwoSampleTest, names, what: str, how: str, need: tuple[str, str],
                     fmt: str) -> MetricComparison:
    """need: what is missing, (one, several)."""
    def show(x):
        return "—" if x is None else format(x, fmt)

    better = None
    if test.mean_a is not None and test.mean_b is not None and test.mean_a != test.mean_b:
        better = "a" if test.mean_a > test.mean_b else "b"
    where = (f"{what} {show(test.mean_a)} for {names[0]} ({test.n_a}) and {show(test.mean_b)} for {names[1]} "
             f"({test.n_b}), {how}")
    if test.verdict == "not_enough_data":
        summary = (f"Not enough data: {where}; at least {test.more_needed} more {need[test.more_needed != 1]} "
                   f"{'is' if test.more_needed == 1 else 'are'} needed for a verdict.")
    elif test.verdict in ("a", "b"):
        summary = f"{names[0 if test.verdict == 'a' else 1]} is better: {where}; p = {test.p_value:.3g}, " \
                  "significant at 5 %."
    else:
        summary = f"No significant difference: {where}; p = {test.p_value:.3g}."
    return MetricComparison(metric=metric, value_a=test.mean_a, value_b=test.mean_b, n_a=test.n_a, n_b=test.n_b,
                            test=test.test, p_value=test.p_value, better=better,
                            significant=test.verdict in ("a", "b"), verdict=test.verdict,
                            more_needed=test.more_needed, summary=summary, detail=test)

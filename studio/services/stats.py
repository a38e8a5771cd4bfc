"""The studio's statistics, from scipy (never hand-written tests): a sign test for blind A/B votes, Mann-Whitney U for
ratings of two versions, Wilcoxon signed-rank for scores of two versions on the same prompts and seeds. Each result
says which side is better and whether that is significant at ALPHA, or that there is not enough data yet and how
much more is needed, so a page never shows a verdict the data cannot carry."""
from __future__ import annotations

import math
from typing import Literal, Sequence

from pydantic import BaseModel, Field
from scipy import stats

ALPHA = 0.05
Verdict = Literal["a", "b", "no_difference", "not_enough_data"]
MAX_SEARCH = 100_000  # votes: beyond this "more needed" is not a useful number


class SignTest(BaseModel):
    """Blind A/B votes: wins of each side, ties (no preference), B's win rate among the decisive votes with its
    exact (Clopper-Pearson) 95 % interval, and a two-sided exact binomial test of 'both sides are as good'."""

    wins_a: int
    wins_b: int
    ties: int
    decisive: int = Field(description="votes for A or B (ties are not part of the test)")
    win_rate_b: float | None = Field(description="wins_b / decisive (None: no decisive vote)")
    ci95: tuple[float, float] | None = Field(description="95 % interval of B's win rate (exact)")
    p_value: float | None = Field(description="two-sided exact binomial (sign) test, p = 0.5 under 'no difference'")
    verdict: Verdict
    more_needed: int = Field(description=(
        "not_enough_data: decisive votes still needed before any verdict is possible (if all of them went one "
        "way); otherwise 0"))
    more_needed_at_rate: int | None = Field(description=(
        "no verdict yet: about how many more decisive votes would make the difference significant if the observed "
        "win rate held (None: the rate is exactly even, or already significant)"))
    summary: str


def _binom_p(k: int, n: int) -> float:
    return float(stats.binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def min_decisive_votes(alpha: float = ALPHA) -> int:
    """The fewest decisive votes with which a sign test can be significant (6 at 5 %: p = 2/64)."""
    n = 1
    while _binom_p(n, n) >= alpha:
        n += 1
    return n


def _more_at_rate(wins_b: int, n: int, alpha: float) -> int | None:
    if n == 0 or 2 * wins_b == n:
        return None
    rate = wins_b / n
    lo, hi = n + 1, n + MAX_SEARCH  # p falls (not strictly) as n grows at a fixed rate: bisect on the first n
    if _binom_p(round(rate * hi), hi) >= alpha:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _binom_p(round(rate * mid), mid) < alpha:
            hi = mid
        else:
            lo = mid + 1
    return lo - n


def sign_test(wins_a: int, wins_b: int, ties: int = 0, alpha: float = ALPHA) -> SignTest:
    n = wins_a + wins_b
    floor = min_decisive_votes(alpha)
    if n == 0:
        return SignTest(wins_a=0, wins_b=0, ties=ties, decisive=0, win_rate_b=None, ci95=None, p_value=None,
                        verdict="not_enough_data", more_needed=floor, more_needed_at_rate=None,
                        summary=f"No decisive vote yet: {floor} more decisive votes at least are needed for a verdict.")
    test = stats.binomtest(wins_b, n, 0.5, alternative="two-sided")
    ci = test.proportion_ci(confidence_level=0.95, method="exact")
    p = float(test.pvalue)
    rate = wins_b / n
    where = f"B won {wins_b} of {n} decisive votes ({rate:.0%}, 95 % CI {ci.low:.0%}-{ci.high:.0%})"
    if n < floor:
        verdict, more = "not_enough_data", floor - n
        summary = f"{where}: not enough votes for a verdict; at least {more} more decisive votes are needed."
    elif p < alpha:
        verdict, more = ("b" if wins_b > wins_a else "a"), 0
        summary = f"{'B' if verdict == 'b' else 'A'} is better: {where}, p = {p:.3g} (exact binomial test)."
    else:
        verdict, more = "no_difference", 0
        summary = f"No significant difference: {where}, p = {p:.3g}."
    at_rate = None if verdict in ("a", "b") else _more_at_rate(wins_b, n, alpha)
    if at_rate is not None:
        summary += f" About {at_rate} more decisive votes at this rate would settle it."
    return SignTest(wins_a=wins_a, wins_b=wins_b, ties=ties, decisive=n, win_rate_b=rate,
                    ci95=(float(ci.low), float(ci.high)), p_value=p, verdict=verdict, more_needed=more,
                    more_needed_at_rate=at_rate, summary=summary)


class TwoSampleTest(BaseModel):
    """Two versions' samples (ratings, or scores) compared: means, sizes, the test used and its verdict."""

    test: Literal["mann_whitney_u", "wilcoxon_signed_rank"]
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    statistic: float | None
    p_value: float | None
    verdict: Verdict
    more_needed: int = Field(description="not_enough_data: samples still needed on each side, at least")
    summary: str


def _mean(xs: Sequence[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _mwu_min_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can reach with these sizes: 2 / C(n_a + n_b, n_a)."""
    return 1.0 if n_a == 0 or n_b == 0 else min(1.0, 2 / math.comb(n_a + n_b, n_a))


def mann_whitney(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, what: str = "rating") -> TwoSampleTest:
    """Independent samples (the ratings of two versions' generations): a two-sided Mann-Whitney U test."""
    n_a, n_b = len(a), len(b)
    mean_a, mean_b = _mean(a), _mean(b)
    if _mwu_min_p(n_a, n_b) >= alpha:
        more = 0
        while _mwu_min_p(n_a + more, n_b + more) >= alpha:
            more += 1
        return TwoSampleTest(test="mann_whitney_u", n_a=n_a, n_b=n_b, mean_a=mean_a, mean_b=mean_b, statistic=None,
                             p_value=None, verdict="not_enough_data", more_needed=more,
                             summary=f"Not enough data: {n_a} and {n_b} {what}s; about {more} more on each side "
                                     "are needed before a difference can be significant.")
    if len(set(a) | set(b)) == 1:  # every value equal: no difference (scipy would divide by a zero variance)
        stat, p = n_a * n_b / 2, 1.0
    else:
        res = stats.mannwhitneyu(a, b, alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    return _two_sample("mann_whitney_u", n_a, n_b, mean_a, mean_b, stat, p, alpha, what)


def wilcoxon_paired(a: Sequence[float], b: Sequence[float], alpha: float = ALPHA, what: str = "score") -> TwoSampleTest:
    """Paired samples (two versions scored on the same prompts and seeds): a two-sided Wilcoxon signed-rank test."""
    if len(a) != len(b):
        raise ValueError("paired samples need the same length")
    n = len(a)
    diffs = [y - x for x, y in zip(a, b)]
    nonzero = sum(1 for d in diffs if d != 0)
    mean_a, mean_b = _mean(a), _mean(b)
    # the exact signed-rank test's smallest two-sided p is 2 / 2**n: 6 differing pairs at 5 %
    floor = min_decisive_votes(alpha)
    if nonzero < floor:
        more = floor - nonzero
        return TwoSampleTest(test="wilcoxon_signed_rank", n_a=n, n_b=n, mean_a=mean_a, mean_b=mean_b, statistic=None,
                             p_value=None, verdict="not_enough_data", more_needed=more,
                             summary=f"Not enough data: {nonzero} differing pairs of {what}s; at least {more} more "
                                     "are needed.")
    res = stats.wilcoxon(a, b, alternative="two-sided")
    return _two_sample("wilcoxon_signed_rank", n, n, mean_a, mean_b, float(res.statistic), float(res.pvalue), alpha,
                       what)


def _two_sample(test, n_a, n_b, mean_a, mean_b, stat, p, alpha, what) -> TwoSampleTest:
    if p < alpha and mean_a != mean_b:
        verdict = "b" if mean_b > mean_a else "a"
        summary = (f"{verdict.upper()} is better: mean {what} {mean_a:.3g} vs {mean_b:.3g} ({n_a} and {n_b}), "
                   f"p = {p:.3g}.")
    else:
        verdict = "no_difference"
        summary = f"No significant difference: mean {what} {mean_a:.3g} vs {mean_b:.3g} ({n_a} and {n_b}), p = {p:.3g}."
    return TwoSampleTest(test=test, n_a=n_a, n_b=n_b, mean_a=mean_a, mean_b=mean_b, statistic=stat, p_value=p,
                         verdict=verdict, more_needed=0, summary=summary)

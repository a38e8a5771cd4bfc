"""The studio's statistics against values computed by hand (binomial sums, exact U distributions)."""
import math

import pytest

from studio.services.stats import mann_whitney, min_decisive_votes, sign_test, wilcoxon_paired


def _two_sided(k: int, n: int) -> float:  # by hand: twice the smaller tail of Binomial(n, 1/2)
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("wins_a, wins_b, verdict", [
    (1, 9, "b"),            # 22/1024 = 0.0215
    (9, 1, "a"),
    (2, 8, "no_difference"),  # 112/1024 = 0.109
    (0, 6, "b"),            # 2/64 = 0.03125: the fewest votes that can decide
    (10, 30, "b"),
    (20, 20, "no_difference"),
])
def test_sign_test_p_values_are_the_exact_binomial_ones(wins_a, wins_b, verdict):
    result = sign_test(wins_a, wins_b, ties=3)
    assert result.p_value == pytest.approx(_two_sided(wins_b, wins_a + wins_b), rel=1e-9)
    assert result.verdict == verdict
    assert result.decisive == wins_a + wins_b and result.ties == 3
    assert result.win_rate_b == pytest.approx(wins_b / (wins_a + wins_b))


def test_sign_test_interval_is_clopper_pearson():
    # 9 of 10: the textbook exact interval is 0.5550-0.9975
    low, high = sign_test(1, 9).ci95
    assert low == pytest.approx(0.5550, abs=5e-4) and high == pytest.approx(0.9975, abs=5e-4)


@pytest.mark.parametrize("wins_a, wins_b, more", [(0, 0, 6), (0, 5, 1), (1, 2, 3), (2, 2, 2)])
def test_too_few_votes_say_how_many_more_instead_of_a_verdict(wins_a, wins_b, more):
    result = sign_test(wins_a, wins_b)
    assert result.verdict == "not_enough_data" and result.more_needed == more
    assert f"{more} more" in result.summary and "better" not in result.summary


def test_no_verdict_yet_estimates_votes_needed_at_the_observed_rate():
    result = sign_test(3, 7)  # 70 %: p = 0.34
    k = result.more_needed_at_rate
    assert result.verdict == "no_difference" and k is not None
    n = 10 + k  # at that many votes the same rate is significant, one fewer is not
    assert _two_sided(round(0.7 * n), n) < 0.05 <= _two_sided(round(0.7 * (n - 1)), n - 1)
    assert sign_test(5, 5).more_needed_at_rate is None  # an even split never settles


def test_min_decisive_votes_at_five_percent():
    assert min_decisive_votes() == 6  # 2/32 = 0.0625 with 5, 2/64 with 6


def test_mann_whitney_separated_samples_exact():
    result = mann_whitney([1, 2, 3, 4], [5, 6, 7, 8])
    assert result.statistic == 0 and result.p_value == pytest.approx(2 / 70)  # by hand: 2 / C(8, 4)
    assert result.verdict == "b" and result.mean_b == 6.5


def test_mann_whitney_too_few_ratings_and_all_equal():
    small = mann_whitney([5, 5, 4], [1, 2, 1])
    assert small.verdict == "not_enough_data" and small.more_needed == 1  # 3+3: 2/20 = 0.1; 4+4: 2/70
    same = mann_whitney([3] * 6, [3] * 5)
    assert same.verdict == "no_difference" and same.p_value == 1.0


def test_wilcoxon_paired_all_one_way():
    a = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    b = [x + 0.01 * (i + 1) for i, x in enumerate(a)]
    result = wilcoxon_paired(a, b)
    assert result.p_value == pytest.approx(2 / 2 ** 7) and result.verdict == "b"  # every difference positive
    assert wilcoxon_paired(a[:5], b[:5]).verdict == "not_enough_data"

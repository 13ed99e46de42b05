"""Statistics of the regression gate on synthetic samples: exact null distributions, verdicts, robustness."""

import itertools
import math

import numpy as np
import pytest

from ssmbench.gate.stats import (
    Comparison,
    compare_paired,
    compare_unpaired,
    geomean,
    mann_whitney_u,
    smallest_p,
    verdict,
    wilcoxon_signed_rank,
)

THRESHOLD, ALPHA = 0.10, 0.01


def times(rng: np.random.Generator, n: int, center: float = 1e-2, cv: float = 0.03) -> np.ndarray:
    """Timing-like samples: a floor plus right-skewed noise (load only ever adds time)."""
    return center * (1 + cv * rng.standard_normal(n) + rng.exponential(cv, n))


def brute_force_mwu(x, y):
    """P(U >= u_obs) and P(U <= u_obs) by enumerating every split of the pooled values."""
    pooled = list(x) + list(y)
    u_obs = sum(a > b for a in x for b in y)
    us = []
    for idx in itertools.combinations(range(len(pooled)), len(x)):
        xs = [pooled[i] for i in idx]
        ys = [pooled[i] for i in range(len(pooled)) if i not in idx]
        us.append(sum(a > b for a in xs for b in ys))
    us = np.array(us)
    return (us >= u_obs).mean(), (us <= u_obs).mean()


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 3), (4, 3), (5, 5)], ids=lambda v: str(v))
def test_mann_whitney_exact_matches_enumeration(m, n):
    rng = np.random.default_rng(m * 10 + n)
    x, y = rng.normal(size=m) + 0.5, rng.normal(size=n)
    u, p_slow, p_fast = mann_whitney_u(x, y)
    assert u == sum(a > b for a in x for b in y)
    assert (p_slow, p_fast) == pytest.approx(brute_force_mwu(x, y))


def test_mann_whitney_normal_approximation_with_ties_is_close_and_symmetric():
    rng = np.random.default_rng(0)
    x = np.round(rng.normal(0.4, 1, 60), 1)  # rounding makes ties: the tie-corrected normal approximation runs
    y = np.round(rng.normal(0.0, 1, 70), 1)
    _, p_slow, p_fast = mann_whitney_u(x, y)
    _, q_slow, q_fast = mann_whitney_u(y, x)
    assert p_slow == pytest.approx(q_fast) and p_fast == pytest.approx(q_slow)
    assert p_slow < 0.05 < p_fast
    # all values tied: no evidence in either direction
    assert mann_whitney_u([1.0, 1.0], [1.0, 1.0, 1.0])[1:] == (1.0, 1.0)


@pytest.mark.parametrize("shift", [0.0, 0.3, 0.8])
def test_normal_approximations_agree_with_exact_distributions(shift):
    rng = np.random.default_rng(1)
    x, y = rng.normal(shift, 1, 25), rng.normal(0, 1, 25)
    exact, approx = mann_whitney_u(x, y, exact=True), mann_whitney_u(x, y, exact=False)
    assert approx[1:] == pytest.approx(exact[1:], abs=0.01)
    w_exact, w_approx = wilcoxon_signed_rank(x - y, exact=True), wilcoxon_signed_rank(x - y, exact=False)
    assert w_approx[1:] == pytest.approx(w_exact[1:], abs=0.01)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_wilcoxon_exact_matches_enumeration(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1, n)
    w, p_slow, p_fast = wilcoxon_signed_rank(d)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    assert w == ranks[d > 0].sum()
    sums = np.array([sum(r for r, s in zip(ranks, signs, strict=True) if s)
                     for signs in itertools.product([0, 1], repeat=n)])
    assert p_slow == pytest.approx((sums >= w).mean())
    assert p_fast == pytest.approx((sums <= w).mean())


def test_wilcoxon_drops_zeros_and_handles_ties():
    assert wilcoxon_signed_rank([0.0, 0.0]) == (0.0, 1.0, 1.0)
    _, p_slow, p_fast = wilcoxon_signed_rank([0.1] * 12 + [-0.1, 0.0])  # tied magnitudes: normal approximation
    assert p_slow < 0.01 and p_fast > 0.99


def test_smallest_p():
    assert smallest_p(5, 5, paired=False) == pytest.approx(1 / math.comb(10, 5))
    assert smallest_p(7, 7, paired=True) == pytest.approx(2.0**-7)


@pytest.mark.parametrize("seed", range(5))
def test_known_20_percent_slowdown_is_flagged(seed):
    rng = np.random.default_rng(seed)
    base, head = times(rng, 10), times(rng, 10) * 1.2
    c = compare_unpaired(base, head, seed=seed)
    assert c.ratio == pytest.approx(1.2, rel=0.05)
    assert c.ci_low < 1.2 < c.ci_high and c.ci_low > 1.0
    assert c.p_slower < ALPHA
    assert verdict(c, THRESHOLD, ALPHA) == "regression"


def test_identical_distributions_are_not_flagged():
    flagged = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        c = compare_unpaired(times(rng, 10), times(rng, 10), n_boot=500, seed=seed)
        flagged += verdict(c, THRESHOLD, ALPHA) == "regression"
    assert flagged == 0


def test_a_single_outlier_does_not_flip_the_verdict():
    rng = np.random.default_rng(7)
    base = times(rng, 10)
    head = times(rng, 10)
    head[3] *= 5  # one round hit by a burst of load
    assert verdict(compare_unpaired(base, head), THRESHOLD, ALPHA) == "ok"
    slow = times(rng, 10) * 1.25
    slow[0] *= 0.5  # one impossibly fast sample in a real regression
    assert verdict(compare_unpaired(base, slow), THRESHOLD, ALPHA) == "regression"


def test_significant_but_small_change_is_ok_and_big_noisy_change_is_unsure():
    rng = np.random.default_rng(3)
    base = times(rng, 30, cv=0.005)
    small = compare_unpaired(base, times(rng, 30, cv=0.005) * 1.05)
    assert small.p_slower < ALPHA and verdict(small, THRESHOLD, ALPHA) == "ok"
    noisy = compare_unpaired(times(rng, 3, cv=0.5), times(rng, 3, cv=0.5) * 1.3)
    assert noisy.p_slower >= ALPHA  # 3 vs 3 cannot reach 0.01
    assert verdict(Comparison(1.3, 0.8, 2.0, 0.05, 0.95, 3, 3, False), THRESHOLD, ALPHA) == "unsure"


def test_faster_is_reported_not_failed():
    rng = np.random.default_rng(4)
    c = compare_unpaired(times(rng, 10), times(rng, 10) * 0.7)
    assert verdict(c, THRESHOLD, ALPHA) == "faster" and c.p == c.p_faster


def test_paired_comparison_cancels_drift_that_confuses_unpaired():
    """The machine slows down by 60% over the run; base and head measured back to back in every round."""
    rng = np.random.default_rng(5)
    drift = np.linspace(1.0, 1.6, 12)
    base = drift * times(rng, 12, cv=0.01)
    same = drift * times(rng, 12, cv=0.01)
    slower = drift * times(rng, 12, cv=0.01) * 1.2
    assert verdict(compare_paired(base, same), THRESHOLD, ALPHA) == "ok"
    c = compare_paired(base, slower)
    assert c.paired and c.ratio == pytest.approx(1.2, rel=0.03) and c.p_slower < ALPHA
    assert verdict(c, THRESHOLD, ALPHA) == "regression"
    # against a baseline recorded before the drift, the unchanged code looks 30% slower
    assert compare_unpaired(times(rng, 12, cv=0.01), same).ratio > 1.2


def test_bootstrap_is_reproducible_and_validates_input():
    rng = np.random.default_rng(6)
    base, head = times(rng, 8), times(rng, 8)
    assert compare_unpaired(base, head, seed=1) == compare_unpaired(base, head, seed=1)
    with pytest.raises(ValueError, match="positive"):
        compare_unpaired([1.0, -1.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        compare_unpaired([], [1.0])
    with pytest.raises(ValueError, match="equal lengths"):
        compare_paired([1.0, 2.0], [1.0])


def test_geomean_skips_non_positive():
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([4.0, float("nan"), 0.0]) == pytest.approx(4.0)
    assert math.isnan(geomean([]))

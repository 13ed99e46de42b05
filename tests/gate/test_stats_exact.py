"""The gate's statistics pinned to exact values (written after a mutation run of ssmbench/gate/stats.py: each test
kills mutants that the distribution-level tests in test_stats.py let through; see docs/testing.md)."""

from __future__ import annotations

import itertools
import math
from statistics import NormalDist, pvariance

import numpy as np
import pytest

from ssmbench.gate.stats import (
    Comparison,
    compare_paired,
    compare_unpaired,
    geomean,
    mann_whitney_u,
    verdict,
    wilcoxon_signed_rank,
)

PHI = NormalDist()


def midranks(values: list[float]) -> list[float]:
    return [sum(w < v for w in values) + (sum(w == v for w in values) + 1) / 2 for v in values]


@pytest.mark.parametrize(("head", "base"), [
    ([1.0, 2.0, 2.0, 3.0], [2.0, 3.0, 3.0, 4.0]),  # ties inside and across the groups
    ([5.0, 5.0, 6.0], [1.0, 5.0, 7.0, 7.0, 7.0]),
    ([2.0], [1.0]),  # variance 1/4: below 1, still a real normal approximation
])
def test_mann_whitney_normal_approximation_uses_the_exact_null_variance_with_ties(head, base) -> None:
    """Under the null every split of the pooled values is equally likely: U's mean and variance by enumeration,
    then the one-sided p-values with the 0.5 continuity correction."""
    pooled, m = head + base, len(head)
    ranks = midranks(pooled)
    us = [sum(ranks[i] for i in idx) - m * (m + 1) / 2 for idx in itertools.combinations(range(len(pooled)), m)]
    mu, sd = sum(us) / len(us), math.sqrt(pvariance(us))
    u = sum(ranks[:m]) - m * (m + 1) / 2
    got_u, p_slow, p_fast = mann_whitney_u(head, base, exact=False)
    assert got_u == u
    assert p_slow == pytest.approx(1 - PHI.cdf((u - mu - 0.5) / sd), rel=1e-9)
    assert p_fast == pytest.approx(1 - PHI.cdf((mu - u - 0.5) / sd), rel=1e-9)
    if len(set(pooled)) < len(pooled):  # ties: the automatic choice is the normal approximation
        assert mann_whitney_u(head, base) == (got_u, p_slow, p_fast)


@pytest.mark.parametrize("diffs", [[0.3], [0.5, -0.5, 1.0, 2.0, -2.0, 2.0], [1.0, 1.0, -1.0, 3.0, 0.0]])
def test_wilcoxon_normal_approximation_uses_the_exact_null_variance_with_ties(diffs) -> None:
    """Under the null each nonzero difference's sign is a fair coin: W+'s mean and variance by enumeration."""
    d = [x for x in diffs if x != 0]
    ranks = midranks([abs(x) for x in d])
    ws = [sum(r for r, s in zip(ranks, signs, strict=True) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    mu, sd = sum(ws) / len(ws), math.sqrt(pvariance(ws))
    w = sum(r for r, x in zip(ranks, d, strict=True) if x > 0)
    got_w, p_slow, p_fast = wilcoxon_signed_rank(diffs, exact=False)
    assert got_w == w
    assert p_slow == pytest.approx(1 - PHI.cdf((w - mu - 0.5) / sd), rel=1e-9)
    assert p_fast == pytest.approx(1 - PHI.cdf((mu - w - 0.5) / sd), rel=1e-9)
    if len(set(map(abs, d))) < len(d):  # ties: the automatic choice is the normal approximation, not the exact one
        assert wilcoxon_signed_rank(diffs) == (got_w, p_slow, p_fast)


def distinct(n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).permutation(n) + 1.0 + 0.5 * seed)


@pytest.mark.parametrize(("m", "n", "exact"), [(50, 50, True), (50, 51, False), (1, 2500, True), (1, 2501, False)])
def test_mann_whitney_exact_up_to_2500_cells(m: int, n: int, exact: bool) -> None:
    head, base = distinct(m, 1), distinct(n, 2)
    assert mann_whitney_u(head, base) == mann_whitney_u(head, base, exact=exact)
    assert mann_whitney_u(head, base) != mann_whitney_u(head, base, exact=not exact)


@pytest.mark.parametrize(("n", "exact"), [(60, True), (61, False)])
def test_wilcoxon_exact_up_to_60_differences(n: int, exact: bool) -> None:
    d = [(i + 1) * (1 if i % 3 else -1) for i in range(n)]  # distinct magnitudes, mixed signs
    assert wilcoxon_signed_rank(d) == wilcoxon_signed_rank(d, exact=exact)
    assert wilcoxon_signed_rank(d) != wilcoxon_signed_rank(d, exact=not exact)


def test_bad_samples_name_the_group() -> None:
    for compare in (compare_unpaired, compare_paired):
        with pytest.raises(ValueError, match=r"^base: need a non-empty"):
            compare([], [1.0])
        with pytest.raises(ValueError, match=r"^head: samples must be finite positive"):
            compare([1.0], [0.0])
        with pytest.raises(ValueError, match=r"^base: samples must be finite positive"):
            compare([-1.0], [1.0])
        with pytest.raises(ValueError, match=r"^head: samples must be finite positive"):
            compare([1.0], [math.inf])
    for head, base in (([], [1.0]), ([1.0], [])):
        with pytest.raises(ValueError, match=r"^both groups need at least one sample$"):
            mann_whitney_u(head, base)
    with pytest.raises(ValueError, match=r"equal lengths \(base 2, head 1\)"):
        compare_paired([1.0, 2.0], [1.0])


BASE = [1.00, 1.04, 0.97, 1.10, 0.93, 1.02, 0.99, 1.06]
HEAD = [1.20, 1.31, 1.12, 1.25, 1.18, 1.40, 1.22, 1.15]
# 201 rounds of continuous noise: enough distinct bootstrap medians that another seed or n_boot moves the interval
WIDE_BASE = list(np.exp(np.random.default_rng(11).normal(0, 0.2, 201)))
WIDE_HEAD = list(np.exp(np.random.default_rng(12).normal(0.1, 0.2, 201)))


def test_unpaired_bootstrap_interval_is_the_documented_percentile_bootstrap() -> None:
    c = compare_unpaired(BASE, HEAD, confidence=0.9, n_boot=500, seed=7)
    rng = np.random.default_rng(7)
    b, h = np.array(BASE), np.array(HEAD)
    boot_b = np.median(b[rng.integers(0, 8, (500, 8))], axis=1)  # the base group is resampled first
    boot_h = np.median(h[rng.integers(0, 8, (500, 8))], axis=1)
    lo, hi = np.quantile(boot_h / boot_b, [0.05, 0.95])
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    assert c.ratio == pytest.approx(np.median(h) / np.median(b))
    assert (c.n_base, c.n_head, c.paired) == (8, 8, False)
    wide = compare_unpaired(WIDE_BASE, WIDE_HEAD)
    assert wide == compare_unpaired(WIDE_BASE, WIDE_HEAD, n_boot=2000, seed=0, confidence=0.95)  # the defaults
    for other in ({"seed": 1}, {"confidence": 0.9}):  # (n_boot 2001 shares the first 2000 draws: no change)
        assert compare_unpaired(WIDE_BASE, WIDE_HEAD, **other) != wide


def test_paired_bootstrap_interval_is_the_documented_percentile_bootstrap() -> None:
    c = compare_paired(BASE, HEAD, confidence=0.8, n_boot=300, seed=3)
    r = np.array(HEAD) / np.array(BASE)
    boot = np.median(r[np.random.default_rng(3).integers(0, 8, (300, 8))], axis=1)
    lo, hi = np.quantile(boot, [0.1, 0.9])
    assert (c.ci_low, c.ci_high) == pytest.approx((lo, hi), rel=1e-12)
    _, p_slow, p_fast = wilcoxon_signed_rank(np.log(r))
    assert (c.ratio, c.p_slower, c.p_faster) == (pytest.approx(float(np.median(r))), p_slow, p_fast)
    assert (c.n_base, c.n_head, c.paired) == (8, 8, True)
    wide = compare_paired(WIDE_BASE, WIDE_HEAD)
    assert wide == compare_paired(WIDE_BASE, WIDE_HEAD, n_boot=2000, seed=0, confidence=0.95)  # the defaults
    for other in ({"seed": 1}, {"confidence": 0.9}):  # (n_boot 2001 shares the first 2000 draws: no change)
        assert compare_paired(WIDE_BASE, WIDE_HEAD, **other) != wide


@pytest.mark.parametrize(("c", "expected"), [
    (Comparison(1.5, 1.2, 1.8, 0.01, 0.99, 9, 9, False), "unsure"),  # p exactly alpha is not below it
    (Comparison(0.5, 0.4, 0.8, 0.99, 0.01, 9, 9, False), "ok"),
    (Comparison(1.5, 1.2, 1.8, 0.0099, 0.99, 9, 9, False), "regression"),
    (Comparison(0.5, 0.4, 0.8, 0.99, 0.0099, 9, 9, False), "faster"),
])
def test_significance_is_strictly_below_alpha(c: Comparison, expected: str) -> None:
    assert verdict(c, 0.1, 0.01) == expected


def test_geomean_of_positive_finite_values() -> None:
    assert geomean([0.5, 2.0]) == pytest.approx(1.0)  # values below 1 count
    assert geomean([0.25, 4.0, 0.0, -3.0, math.inf, math.nan]) == pytest.approx(1.0)
    assert math.isnan(geomean([0.0, -1.0]))

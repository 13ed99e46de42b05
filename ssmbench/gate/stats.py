"""Statistics of the regression gate: ratio of medians, bootstrap confidence intervals and rank tests.

Pure functions over 1-D sample arrays (numpy only, no scipy). Samples are *times* (seconds, lower is better), so a
ratio ``head / base > 1`` means the code under test is slower.

- Unpaired (a stored baseline): ratio of medians, percentile-bootstrap CI resampling both groups, Mann-Whitney U
  (asv's test). Exact U distribution when there are no ties and the groups are small, else the normal approximation
  with tie and continuity corrections.
- Paired (``--against``: base and head measured round by round, interleaved): median of the per-round ratios,
  bootstrap CI over rounds, Wilcoxon signed-rank test on the log ratios (drift cancels within a round).

Both tests are one-sided and reported in both directions: ``p_slower`` tests "head is slower", ``p_faster`` tests
"head is faster".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Exact null distributions are used up to these sizes; beyond them the normal approximation is accurate.
_EXACT_MWU_MAX_CELLS = 2500  # m * n
_EXACT_WILCOXON_MAX_N = 60

VERDICTS = ("regression", "unsure", "ok", "faster")


@dataclass(frozen=True)
class Comparison:
    """head vs base for one case. ``ratio`` = head time / base time (> 1: slower)."""

    ratio: float
    ci_low: float
    ci_high: float
    p_slower: float  # one-sided p-value of "head is slower than base"
    p_faster: float  # one-sided p-value of "head is faster than base"
    n_base: int
    n_head: int
    paired: bool

    @property
    def p(self) -> float:
        """The p-value in the direction of the observed change."""
        return self.p_slower if self.ratio >= 1 else self.p_faster


def _ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``x`` and the sizes of its groups of ties."""
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    counts = np.diff(np.r_[starts, len(x)])
    avg = starts + (counts + 1) / 2.0  # average of 1-based ranks start+1 .. start+count
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _mwu_exact_counts(m: int, n: int) -> np.ndarray:
    """Number of orderings of m x's and n y's with U = u (pairs x > y), u = 0..m*n (q-binomial coefficients).

    Recurrence on the largest element: if it is an x it beats all n y's (u - n with m - 1 x's), else it is a y
    that beats nothing (n - 1 y's).
    """
    table = [[np.ones(1)] * (n + 1)]  # table[i][j] for i x's, j y's; 0 x's -> only u = 0
    for i in range(1, m + 1):
        row = [np.ones(1)]  # 0 y's -> only u = 0
        for j in range(1, n + 1):
            out = np.zeros(i * j + 1)
            prev_x = table[i - 1][j]  # the largest is an x: shifts u by j
            out[j:j + len(prev_x)] += prev_x
            prev_y = row[j - 1]
            out[:len(prev_y)] += prev_y
            row.append(out)
        table.append(row)
    return table[m][n]


def mann_whitney_u(head: Sequence[float], base: Sequence[float],
                   exact: bool | None = None) -> tuple[float, float, float]:
    """(U, p_slower, p_faster) of the Mann-Whitney U test; U counts pairs with head > base (ties count 1/2).

    ``p_slower`` is P(U >= observed) under the null (head values tend to be larger), ``p_faster`` the other tail.
    ``exact``: None picks the exact distribution when there are no ties and the groups are small; False forces
    the normal approximation.
    """
    x, y = np.asarray(head, dtype=float), np.asarray(base, dtype=float)
    m, n = len(x), len(y)
    if m == 0 or n == 0:
        raise ValueError("both groups need at least one sample")
    ranks, ties = _ranks(np.concatenate([x, y]))
    u = float(ranks[:m].sum() - m * (m + 1) / 2)
    if exact is None:
        exact = bool((ties == 1).all()) and m * n <= _EXACT_MWU_MAX_CELLS
    if exact:
        counts = _mwu_exact_counts(m, n)
        total = counts.sum()
        k = round(u)
        return u, float(counts[k:].sum() / total), float(counts[:k + 1].sum() / total)
    big_n = m + n
    var = m * n / 12.0 * ((big_n + 1) - float((ties**3 - ties).sum()) / (big_n * (big_n - 1)))
    if var <= 0:  # every value tied: no evidence either way
        return u, 1.0, 1.0
    mu, sd = m * n / 2.0, math.sqrt(var)
    return u, _normal_sf((u - mu - 0.5) / sd), _normal_sf((mu - u - 0.5) / sd)


def _signed_rank_exact_counts(n: int) -> np.ndarray:
    """Number of subsets of {1..n} with sum w, w = 0..n(n+1)/2."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return counts


def wilcoxon_signed_rank(diffs: Sequence[float], exact: bool | None = None) -> tuple[float, float, float]:
    """(W+, p_slower, p_faster) of the Wilcoxon signed-rank test on paired differences (head - base, e.g. log ratios).

    Zero differences are dropped (Wilcoxon's convention). ``p_slower`` tests "differences tend to be positive".
    ``exact`` as in :func:`mann_whitney_u`.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 0.0, 1.0, 1.0
    ranks, ties = _ranks(np.abs(d))
    w = float(ranks[d > 0].sum())
    if exact is None:
        exact = bool((ties == 1).all()) and n <= _EXACT_WILCOXON_MAX_N
    if exact:
        counts = _signed_rank_exact_counts(n)
        total = counts.sum()
        k = round(w)
        return w, float(counts[k:].sum() / total), float(counts[:k + 1].sum() / total)
    mu = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((ties**3 - ties).sum()) / 48.0
    if var <= 0:
        return w, 1.0, 1.0
    sd = math.sqrt(var)
    return w, _normal_sf((w - mu - 0.5) / sd), _normal_sf((mu - w - 0.5) / sd)


def _check(samples: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(samples, dtype=float)
    if a.ndim != 1 or len(a) == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence of samples")
    if not np.isfinite(a).all() or (a <= 0).any():
        raise ValueError(f"{what}: samples must be finite positive times")
    return a


def compare_unpaired(base: Sequence[float], head: Sequence[float], *, confidence: float = 0.95,
                     n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Ratio of medians median(head) / median(base) with a percentile-bootstrap CI and the Mann-Whitney U test.

    The bootstrap resamples each group independently (``n_boot`` x (n,) index draws, vectorised); ``seed`` makes
    the interval reproducible.
    """
    b, h = _check(base, "base"), _check(head, "head")
    rng = np.random.default_rng(seed)
    boot_b = np.median(b[rng.integers(0, len(b), (n_boot, len(b)))], axis=1)
    boot_h = np.median(h[rng.integers(0, len(h), (n_boot, len(h)))], axis=1)
    lo, hi = np.quantile(boot_h / boot_b, [(1 - confidence) / 2, (1 + confidence) / 2])
    _, p_slow, p_fast = mann_whitney_u(h, b)
    return Comparison(float(np.median(h) / np.median(b)), float(lo), float(hi), p_slow, p_fast, len(b), len(h),
                      paired=False)


def compare_paired(base: Sequence[float], head: Sequence[float], *, confidence: float = 0.95,
                   n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Median of per-round ratios head_i / base_i with a bootstrap CI over rounds and the Wilcoxon signed-rank test.

    ``base[i]`` and ``head[i]`` were measured in the same round (back to back), so slow drift of the machine cancels
    in each ratio.
    """
    b, h = _check(base, "base"), _check(head, "head")
    if len(b) != len(h):
        raise ValueError(f"paired comparison needs equal lengths (base {len(b)}, head {len(h)})")
    r = h / b
    rng = np.random.default_rng(seed)
    boot = np.median(r[rng.integers(0, len(r), (n_boot, len(r)))], axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    _, p_slow, p_fast = wilcoxon_signed_rank(np.log(r))
    return Comparison(float(np.median(r)), float(lo), float(hi), p_slow, p_fast, len(b), len(h), paired=True)


def verdict(c: Comparison, threshold: float, alpha: float) -> str:
    """Classify a comparison; the rule the gate fails on.

    - ``regression``: the point estimate exceeds ``1 + threshold`` AND the rank test says "slower" at level
      ``alpha`` AND the bootstrap CI excludes 1. The point estimate (not the CI's low bound) is held against the
      threshold, as asv does: the test already guards against noise, and requiring CI low > 1 + threshold would
      miss slowdowns only somewhat above the threshold unless the rounds were many times more.
    - ``unsure``: beyond the threshold but not significant (noisy; re-measured, reported, does not fail).
    - ``faster``: the mirror image (ratio below 1 / (1 + threshold), significant).
    - ``ok``: everything else, including significant changes smaller than the threshold.
    """
    if c.ratio > 1 + threshold:
        return "regression" if c.p_slower < alpha and c.ci_low > 1 else "unsure"
    if c.ratio < 1 / (1 + threshold) and c.p_faster < alpha and c.ci_high < 1:
        return "faster"
    return "ok"


def smallest_p(n_base: int, n_head: int, paired: bool) -> float:
    """The smallest one-sided p-value the test can reach with these sample counts (all of one side beyond all of
    the other): below ``alpha`` or the gate could never fire."""
    if paired:
        return 2.0 ** -min(n_base, n_head)
    return 1.0 / math.comb(n_base + n_head, n_base)


def geomean(values: Sequence[float]) -> float:
    a = np.asarray([v for v in values if v > 0 and math.isfinite(v)], dtype=float)
    return float(np.exp(np.log(a).mean())) if len(a) else float("nan")

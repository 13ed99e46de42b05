"""Sequential A/B testing for ``ssmbench check --against``: stop a case as soon as it is decided.

The interleaved A/B measures every case in rounds (one paired base/head time per round, see ``run.py``). Instead
of a fixed number of rounds for every case, the rounds are examined at *looks* (every ``STEP`` rounds, up to the
maximum); at each look an undecided case can stop in one of two ways, and is otherwise measured further:

- **regression** (clearly outside the threshold): the gate's usual rule (:func:`ssmbench.gate.stats.verdict`:
  median of the per-round ratios > 1 + threshold, one-sided Wilcoxon signed-rank p < alpha_k, bootstrap CI above
  1) at the look's level ``alpha_k``;
- **inside** (futility: clearly within the threshold): a distribution-free upper confidence bound of the median
  per-round ratio, at level ``beta_k``, lies below 1 + threshold. The bound is an order statistic (sign test):
  with n rounds, the (n - j)-th smallest ratio is below the true median with probability P(Binomial(n, 1/2) <= j),
  so j is the largest count with that probability <= beta_k. Only the independence of the rounds is assumed.

Error rates stay honest by *alpha spending* with a Bonferroni bound (a conservative repeated-test rule: no
assumption on how the looks are correlated):

- false alarms: each case's regression level ``alpha / m`` (m = the number of cases: the bound holds for the
  whole suite, not per case) is spent over the looks, half at the first look where the signed-rank test can reach
  it (its smallest p-value is 2^-n) and the other half in equal parts over the later looks. A case can then be
  flagged at some look with probability <= sum(alpha_k) = alpha / m when it is unchanged (under the signed-rank
  test's null: per-round log ratios symmetric about 0, which alternating ABAB/BABA order gives an unchanged case),
  so the suite raises a false alarm with probability <= alpha. Every look also requires the ratio to exceed the
  threshold, which only makes false alarms rarer.
- missed regressions: ``beta`` (per case) is spent over the looks the same way; a case whose true median ratio is
  >= 1 + threshold stops as "inside" at some look with probability <= beta.

A case still undecided at the last look gets the ordinary verdict at the last look's level (``unsure`` when the
ratio is beyond the threshold without significance). Spending alpha over looks needs more rounds for the first
possible regression decision (2^-n <= alpha / 2m: 12 rounds for 20 cases at alpha 0.01) but a clean case stops
after 6 rounds when its rounds agree, which is where a CI run spends its time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssmbench.gate import stats

STEP = 2  # rounds between looks: an even count keeps each look balanced between ABAB and BABA rounds
BETA = 0.10  # per-case chance, spent over the looks, that a case at the threshold stops early as "inside"


@dataclass(frozen=True)
class Look:
    rounds: int  # rounds measured when this look is taken
    alpha: float  # regression level spent at this look (0: no regression decision here)
    beta: float  # futility level spent at this look (0: no early "inside" stop here)


def _spend(total: float, ns: Sequence[int]) -> list[float]:
    """``total`` over the looks ``ns``: half at the first look whose rank/sign test can reach it (2^-n <= level),
    the rest in equal parts over the later looks (all of it at the first such look when it is the last); looks
    that cannot use their share get nothing (their share is not moved elsewhere: the bound stays a plain sum)."""
    levels = [0.0] * len(ns)
    first = next((i for i, n in enumerate(ns) if 2.0 ** -n <= total / 2), None)
    if first is None:
        if ns and 2.0 ** -ns[-1] <= total:
            levels[-1] = total
        return levels
    later = range(first + 1, len(ns))
    levels[first] = total / 2 if later else total
    for i in later:
        share = total / 2 / len(later)
        levels[i] = share if 2.0 ** -ns[i] <= share else 0.0
    return levels


def plan_looks(max_rounds: int, alpha_case: float, beta: float = BETA) -> tuple[Look, ...]:
    """The looks of one case: every STEP rounds up to ``max_rounds`` (always a look at the end), with the
    regression level ``alpha_case`` and the futility level ``beta`` spent over them."""
    ns = [*range(STEP, max_rounds, STEP), max_rounds]
    return tuple(Look(n, a, b) for n, a, b in zip(ns, _spend(alpha_case, ns), _spend(beta, ns), strict=True))


def upper_bound(ratios: Sequence[float], level: float) -> float:
    """Distribution-free upper confidence bound (error <= ``level``) for the median of ``ratios``: the order
    statistic of the one-sided sign test; +inf when ``level`` is below 2^-n (no bound that sure exists)."""
    r = np.sort(np.asarray(ratios, dtype=float))
    n = len(r)
    cdf, j = 0.0, -1
    for k in range(n):  # largest j with P(Binomial(n, 1/2) <= j) <= level
        cdf += math.comb(n, k) / 2.0**n
        if cdf > level:
            break
        j = k
    return float(r[n - 1 - j]) if j >= 0 else math.inf


def decide(base: Sequence[float], head: Sequence[float], look: Look, threshold: float,
           last: bool) -> tuple[str | None, stats.Comparison]:
    """(verdict or None to go on, comparison) for one case at one look: ``regression`` when the gate's rule holds
    at the look's alpha, ``ok``/``faster`` when the upper bound is inside the threshold, the plain verdict at the
    last look."""
    c = stats.compare_paired(base, head)
    if look.alpha > 0 and stats.verdict(c, threshold, look.alpha) == "regression":
        return "regression", c
    ratios = np.asarray(head, dtype=float) / np.asarray(base, dtype=float)
    inside = look.beta > 0 and upper_bound(ratios, look.beta) < 1 + threshold
    if inside or last:
        # the last look's level also classifies ok/faster; "regression" cannot come back here unless at the last
        # look with alpha 0 (then the ratio beyond the threshold reads as unsure)
        v = stats.verdict(c, threshold, look.alpha) if look.alpha > 0 else (
            "unsure" if c.ratio > 1 + threshold else "ok")
        return v, c
    return None, c


def first_decision(looks: Sequence[Look]) -> tuple[int | None, int | None]:
    """Rounds at the first look that can flag a regression and at the first that can stop a case as inside."""
    reg = next((lk.rounds for lk in looks if lk.alpha > 0), None)
    ok = next((lk.rounds for lk in looks if lk.beta > 0), None)
    return reg, ok

"""Sequential A/B testing for ``ssmbench check --against``: stop a case as soon as it is decided.

The interleaved A/B measures every case in rounds (one paired base/head time per round, see ``run.py``). Instead
of a fixed number of rounds for every case, the rounds are examined at *looks* (every ``STEP`` rounds, up to the
maximum); at each look an undecided case can stop in one of two ways, and is otherwise measured further:

- **regression** (clearly outside the threshold): the gate's usual rule (:func:`ssmbench.gate.stats.verdict`:
  median of the per-round ratios > 1 + threshold, one-sided Wilcoxon signed-rank p < alpha_k, bootstrap CI above
  1) at the look's level ``alpha_k``;
- **inside** (futility: clearly within the threshold): an upper confidence bound of the case's typical per-round
  ratio, at level ``beta_k``, lies below 1 + threshold. The bound inverts the same signed-rank test
  (:func:`upper_bound`, Hodges-Lehmann: an order statistic of the Walsh averages of the log ratios), so a load
  burst in one round moves it little. (The sign test's order statistic needs nearly every round below the
  threshold, and Student's t bound is blown up by one burst: on a loaded 2-core machine both kept most clean
  cases running to the last round.)

Error rates, with alpha spending and a Bonferroni bound (a conservative repeated-test rule: no assumption on how
the looks are correlated), so that looking repeatedly does not inflate them:

- false alarms (distribution-free): each case's level ``alpha`` (``--alpha``, per case as in the baseline mode)
  is spent 40% at the first look where the signed-rank test can reach that share (its smallest p-value is
  2^-n), 10% at the settling look (below) and the rest at the last look, where noisy cases need it most. An
  unchanged case is flagged at some look with probability <= alpha under the signed-rank test's null (per-round
  log ratios symmetric about 0, which the alternating ABAB/BABA order gives an unchanged case). Every look also
  requires the ratio to exceed the threshold, which under the null is itself rare. Splitting alpha over the m
  cases as well (alpha/m) was tried: with a load burst every few rounds the signed-rank test then needs 12+
  nearly unanimous rounds, and a 1.3x slowdown went undetected in a quarter of the simulated cases.
- missed regressions: ``beta`` per case is spent over the looks from FUTILITY_FROM up to the settling look
  (half at the first, the rest in equal parts; 2^-n <= beta_k, so each share is reachable): a case whose
  typical ratio is at the threshold stops as "inside" with probability <= beta (same symmetry assumption); a
  regression well beyond the threshold practically never does.

At the fixed design's length (``settle_at`` = ``--rounds``, 10 for the CI suite) a case whose ratio is not beyond
the threshold stops as well, as the fixed design judged it there (it re-measured only suspects): this caps a
clean but noisy case at the fixed design's rounds and misses nothing the fixed design would have caught. Only
cases beyond the threshold go on, up to twice ``--rounds`` (what the fixed design's re-measurement took). A case
still undecided at the last look gets the ordinary verdict at the last look's level (``unsure`` when the ratio
is beyond the threshold without significance). With alpha 0.01 and --rounds 10 a regression can be called at
round 8 (p <= 0.004: all 8 rounds slower), 10 (p <= 0.001) or 20 (p <= 0.005); a clean case can stop from 6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssmbench.gate import stats

STEP = 2  # rounds between looks: an even count keeps each look balanced between ABAB and BABA rounds
FUTILITY_FROM = 6  # the first look that may stop a case as inside the threshold (2^-6 <= BETA / 2)
BETA = 0.10  # per-case chance, spent over the looks, that a case at the threshold stops early as "inside"


@dataclass(frozen=True)
class Look:
    rounds: int  # rounds measured when this look is taken
    alpha: float  # regression level spent at this look (0: no regression decision here)
    beta: float  # futility level spent at this look (0: no early "inside" stop here)
    settle: bool = False  # the fixed design's length: a case not beyond the threshold stops here


FIRST_SHARE, SETTLE_SHARE = 0.4, 0.1  # of alpha, at the first reachable look and the settling look; the rest last


def _alpha_spending(total: float, ns: Sequence[int], settle_at: int | None = None) -> list[float]:
    """``total`` over the looks ``ns``: FIRST_SHARE at the first look whose signed-rank test can reach it (2^-n <=
    its share), SETTLE_SHARE at the settling look when later and reachable, the rest at the last look (all of it
    there when no earlier look can reach its share). Other looks get nothing: a share there would be too small to
    reach once a round or two disagree; the last look gets the most, for the noisy cases that need every round."""
    levels = [0.0] * len(ns)
    first = next((i for i, n in enumerate(ns[:-1]) if 2.0 ** -n <= total * FIRST_SHARE), None)
    if first is not None:
        levels[first] = total * FIRST_SHARE
        settle = next((i for i, n in enumerate(ns[:-1]) if n == settle_at and i > first), None)
        if settle is not None and 2.0 ** -ns[settle] <= total * SETTLE_SHARE:
            levels[settle] = total * SETTLE_SHARE
    rest = total - sum(levels)
    levels[-1] = rest if ns and 2.0 ** -ns[-1] <= rest else 0.0
    return levels


def _beta_spending(total: float, ns: Sequence[int], settle_at: int | None = None) -> list[float]:
    """``total`` over the looks from FUTILITY_FROM on, before the settling look (after it only cases beyond the
    threshold remain, which an upper bound below it will not stop): half at the first, the rest in equal parts."""
    usable = [i for i, n in enumerate(ns) if n >= FUTILITY_FROM and (settle_at is None or n < settle_at)]
    usable = usable or [len(ns) - 1]
    levels = [0.0] * len(ns)
    for i in usable:
        levels[i] = total / 2 / (len(usable) - 1) if len(usable) > 1 else total
    levels[usable[0]] = total / 2 if len(usable) > 1 else total
    return levels


def plan_looks(max_rounds: int, alpha_case: float, beta: float = BETA,
               settle_at: int | None = None) -> tuple[Look, ...]:
    """The looks of one case: every STEP rounds up to ``max_rounds`` (always a look at the end), with the
    regression level ``alpha_case`` and the futility level ``beta`` spent over them; ``settle_at`` (a look's
    rounds): where a case whose ratio is not beyond the threshold stops (see :func:`decide`)."""
    ns = [*range(STEP, max_rounds, STEP), max_rounds]
    return tuple(Look(n, a, b, n == settle_at) for n, a, b in
                 zip(ns, _alpha_spending(alpha_case, ns, settle_at), _beta_spending(beta, ns, settle_at),
                     strict=True))


def _signed_rank_cdf(n: int) -> np.ndarray:
    """P(W+ <= w), w = 0..n(n+1)/2, of the signed-rank statistic of n untied differences under the null."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1
    for k in range(1, n + 1):
        counts[k:] = counts[k:] + counts[:-k].copy()
    return np.cumsum(counts) / 2.0**n


def upper_bound(ratios: Sequence[float], level: float) -> float:
    """Upper confidence bound (error <= ``level``) of the typical per-round ratio: the inverted one-sided Wilcoxon
    signed-rank test (Hodges-Lehmann), exp of an order statistic of the Walsh averages of the log ratios.

    The number of Walsh averages (d_i + d_j) / 2, i <= j, above the true center has the signed-rank null
    distribution, so with c the largest count with P(W+ <= c) <= level, the (N - c)-th smallest of the N averages is
    below the center with probability <= level. Exact for log ratios symmetric about their center (the signed-rank
    test's own assumption); a load burst moves only the extreme averages. +inf when 2^-n > level.
    """
    d = np.log(np.asarray(ratios, dtype=float))
    n = len(d)
    cdf = _signed_rank_cdf(n)
    c = int(np.searchsorted(cdf, level, side="right")) - 1  # largest c with cdf[c] <= level
    if n == 0 or c < 0:
        return math.inf
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    return math.exp(float(walsh[len(walsh) - c - 1]))


def decide(base: Sequence[float], head: Sequence[float], look: Look, threshold: float,
           last: bool) -> tuple[str | None, stats.Comparison]:
    """(verdict or None to go on, comparison) for one case at one look: ``regression`` when the gate's rule holds
    at the look's alpha, ``ok``/``faster`` when the upper bound is inside the threshold or, at a settling look,
    when the ratio is not beyond it; the plain verdict at the last look."""
    c = stats.compare_paired(base, head)
    if look.alpha > 0 and stats.verdict(c, threshold, look.alpha) == "regression":
        return "regression", c
    ratios = np.asarray(head, dtype=float) / np.asarray(base, dtype=float)
    inside = look.beta > 0 and upper_bound(ratios, look.beta) < 1 + threshold
    if inside or last or (look.settle and c.ratio <= 1 + threshold):
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

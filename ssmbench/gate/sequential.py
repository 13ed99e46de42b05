"""Sequential A/B testing for ``ssmbench check --against``: stop a case as soon as it is decided.

The interleaved A/B measures every case in rounds (one paired base/head time per round, see ``run.py``). Instead
of a fixed number of rounds for every case, the rounds are examined at *looks* (every ``STEP`` rounds, up to the
maximum); at each look an undecided case can stop in one of two ways, and is otherwise measured further:

- **regression** (clearly outside the threshold): the gate's usual rule (:func:`ssmbench.gate.stats.verdict`:
  median of the per-round ratios > 1 + threshold, one-sided Wilcoxon signed-rank p < alpha_k, bootstrap CI above
  1) at the look's level ``alpha_k``;
- **inside** (futility: clearly within the threshold): an upper confidence bound of the case's typical per-round
  ratio, at level ``beta_k``, lies below 1 + threshold. The bound is Student's one-sided t bound of the mean log
  ratio (:func:`upper_bound`); a distribution-free bound (the sign test's order statistic) would need nearly every
  round below the threshold, which on a loaded 2-core machine kept clean cases running to the last round.

Error rates, with alpha spending and a Bonferroni bound (a conservative repeated-test rule: no assumption on how
the looks are correlated):

- false alarms (distribution-free): each case's regression level is ``alpha / m`` (m = the number of cases, so the
  bound holds for the whole suite, not per case), spent half at the first look where the signed-rank test can
  reach it (its smallest p-value is 2^-n) and half at the last look. An unchanged case is flagged at some look
  with probability <= alpha / m under the signed-rank test's null (per-round log ratios symmetric about 0, which
  the alternating ABAB/BABA order gives an unchanged case), so the suite raises a false alarm with probability
  <= alpha. Every look also requires the ratio to exceed the threshold, which only makes false alarms rarer.
- missed regressions (normal theory, approximate): ``beta`` per case is spent over the looks from FUTILITY_FROM
  on (half at the first, the rest in equal parts), so a case whose typical ratio is at the threshold stops as
  "inside" with probability <= beta, to the accuracy of the t bound; load bursts widen the bound (they delay a
  stop, they do not cause one), and a regression well beyond the threshold essentially never stops as inside.

A case still undecided at the last look gets the ordinary verdict at the last look's level (``unsure`` when the
ratio is beyond the threshold without significance). With 20 cases and alpha 0.01 a regression can be called
from round 12 (2^-12 <= 0.01 / 40), a clean case can stop from round 6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ssmbench.gate import stats

STEP = 2  # rounds between looks: an even count keeps each look balanced between ABAB and BABA rounds
FUTILITY_FROM = 6  # the first look that may stop a case as inside the threshold (the t bound wants a few rounds)
BETA = 0.10  # per-case chance, spent over the looks, that a case at the threshold stops early as "inside"


@dataclass(frozen=True)
class Look:
    rounds: int  # rounds measured when this look is taken
    alpha: float  # regression level spent at this look (0: no regression decision here)
    beta: float  # futility level spent at this look (0: no early "inside" stop here)


def _alpha_spending(total: float, ns: Sequence[int]) -> list[float]:
    """``total`` over the looks ``ns``: half at the first look whose signed-rank test can reach it (2^-n <= its
    share), half at the last look (all of it at the last when that is the first reachable one). Looks in between
    get nothing: a share there would be too small to reach once a round or two disagree."""
    levels = [0.0] * len(ns)
    first = next((i for i, n in enumerate(ns[:-1]) if 2.0 ** -n <= total / 2), None)
    if first is not None:
        levels[first] = levels[-1] = total / 2
    elif ns and 2.0 ** -ns[-1] <= total:
        levels[-1] = total
    return levels


def _beta_spending(total: float, ns: Sequence[int]) -> list[float]:
    """``total`` over the looks from FUTILITY_FROM on: half at the first, the rest in equal parts over the later."""
    usable = [i for i, n in enumerate(ns) if n >= FUTILITY_FROM] or [len(ns) - 1]
    levels = [0.0] * len(ns)
    for i in usable:
        levels[i] = total / 2 / (len(usable) - 1) if len(usable) > 1 else total
    levels[usable[0]] = total / 2 if len(usable) > 1 else total
    return levels


def plan_looks(max_rounds: int, alpha_case: float, beta: float = BETA) -> tuple[Look, ...]:
    """The looks of one case: every STEP rounds up to ``max_rounds`` (always a look at the end), with the
    regression level ``alpha_case`` and the futility level ``beta`` spent over them."""
    ns = [*range(STEP, max_rounds, STEP), max_rounds]
    return tuple(Look(n, a, b) for n, a, b in
                 zip(ns, _alpha_spending(alpha_case, ns), _beta_spending(beta, ns), strict=True))


def t_cdf(x: float, df: int) -> float:
    """Student's t distribution function for integer ``df`` (closed forms, Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(abs(x) / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: A = (2/pi)(theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, series = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            series += term
        a = 2 / math.pi * (theta + s * math.cos(theta) * series)
    else:  # even: A = sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        term, series = 1.0, 1.0
        for k in range(1, df // 2):
            term *= c2 * (2 * k - 1) / (2 * k)
            series += term
        a = s * series
    return 0.5 + math.copysign(a / 2, x)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    lo, hi = -1e3, 1e3
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def upper_bound(ratios: Sequence[float], level: float) -> float:
    """Upper confidence bound (error ``level``) of the typical per-round ratio: exp of the one-sided Student t
    bound of the mean log ratio. Load bursts inflate the spread and so widen the bound: they delay a stop
    rather than cause a wrong one."""
    logs = np.log(np.asarray(ratios, dtype=float))
    n = len(logs)
    if n < 2 or level <= 0:
        return math.inf
    sd = float(logs.std(ddof=1))
    return math.exp(float(logs.mean()) + t_quantile(1 - level, n - 1) * sd / math.sqrt(n))


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

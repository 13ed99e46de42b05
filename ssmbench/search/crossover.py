"""Where does model A overtake model B? Bracket on powers of two, then bisect in log L, deciding each probe by the
confidence interval of the A/B time ratio.

A probe at length L measures A and B interleaved, round by round (ABAB, then BABA: slow drift of a shared machine
cancels in each round's ratio), and compares them with the gate's paired bootstrap
(:func:`ssmbench.gate.stats.compare_paired`: median of the per-round ratios A/B and its CI over rounds). The
verdict is three-valued: A faster (CI entirely below 1 and the one-sided signed-rank test significant at
1 - confidence), B faster (the mirror image) or a tie (neither, after the most rounds allowed). The rank test
matters with few rounds: the bootstrap interval of a median of 3 ratios is their range, which excludes 1 one time
in eight when the two models are equal. The default confidence is 0.99, not 0.95, because a search makes a dozen
decisions and the interval is only as right as the two that end it; 7 rounds are the fewest with which the test
can reach p < 0.01. Only decided probes move the bracket: the answer's interval [lo, hi] runs from the
last length where one side was *shown* faster to the first where the other was, so tied lengths (the two models
within noise of each other) stay inside it rather than being guessed at.

The search:
1. walk the powers of two of the range from the shortest until a decided probe disagrees with the previous
   decided one: that bracket holds a crossing (none: "never crosses in [lo, hi]", or "indistinguishable");
2. bisect in log L: probe the geometric midpoint of the widest still-open gap (between the low end and the
   first tie, between the last tie and the high end, or the whole bracket when there are no ties) until the
   bracket is within ``rel_width`` (hi / lo - 1), every gap is, or the time budget is spent;
3. while time remains, probe every power of two above the bracket: losing at any of them means the two models
   cross more than once, which is the answer then; lengths left unchecked are named in the note.

L* is interpolated where log(ratio) crosses zero between the bracket's ends (clamped to the bracket).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ssmbench.gate.stats import compare_paired

# measure(length, rounds) -> (A's per-round times, B's per-round times), `rounds` new rounds, interleaved
Measure = Callable[[int, int], tuple[list[float], list[float]]]

ANSWERS = ("crosses", "never_crosses", "crosses_more_than_once", "indistinguishable", "failed")


class ProbeFailed(RuntimeError):
    """A side could not be measured at a length (out of memory, timeout, error): the search ends there."""


@dataclass
class Probe:
    length: int
    a_times: list[float] = field(default_factory=list)
    b_times: list[float] = field(default_factory=list)
    ratio: float = float("nan")  # median over rounds of time(A) / time(B): < 1 means A is faster
    ci: tuple[float, float] = (float("nan"), float("nan"))
    faster: str | None = None  # "A" | "B" | None (a tie: the CI contains 1)
    error: str = ""

    @property
    def rounds(self) -> int:
        return len(self.a_times)


@dataclass
class SearchResult:
    answer: str  # one of ANSWERS
    crossover_len: float | None
    interval: tuple[int, int] | None
    faster_above: str | None  # "A" | "B": the side faster above the crossing (or everywhere, never_crosses)
    probes: list[Probe]
    stopped_by: str  # width | budget | range | failure
    range: tuple[int, int]
    seconds: float
    note: str = ""

    def to_dict(self, names: dict[str, str] | None = None) -> dict[str, Any]:
        names = names or {}
        out = asdict(self)
        for side in ("A", "B"):  # notes name the sides as {A} / {B}
            out["note"] = out["note"].replace(f"{{{side}}}", names.get(side, side))
        out["faster_above"] = names.get(self.faster_above, self.faster_above) if self.faster_above else None
        out["interval"] = list(self.interval) if self.interval else None
        out["range"] = list(self.range)
        for p, d in zip(self.probes, out["probes"], strict=True):
            d["faster"] = names.get(p.faster, p.faster) if p.faster else None
            d["ci"] = list(p.ci)
            d["rounds"] = p.rounds
        return out


@dataclass(frozen=True)
class SearchSettings:
    rel_width: float = 0.15
    budget_s: float = 120.0
    min_rounds: int = 7
    step_rounds: int = 4  # rounds added to a probe whose verdict is still a tie
    max_rounds: int = 15
    confidence: float = 0.99
    granularity: int = 16  # bisection lengths are rounded to a multiple of this (kernels' chunk-friendly sizes)


def decide(probe: Probe, confidence: float) -> None:
    """Set the probe's ratio, CI and verdict from its rounds (A = head, B = base: ratio = A / B)."""
    c = compare_paired(probe.b_times, probe.a_times, confidence=confidence)
    probe.ratio, probe.ci = c.ratio, (c.ci_low, c.ci_high)
    alpha = 1 - confidence
    probe.faster = ("A" if c.ci_high < 1 and c.p_faster < alpha else
                    "B" if c.ci_low > 1 and c.p_slower < alpha else None)


class _Search:
    def __init__(self, measure: Measure, settings: SearchSettings, clock: Callable[[], float]) -> None:
        self.measure, self.s, self.clock = measure, settings, clock
        self.start = clock()
        self.probes: dict[int, Probe] = {}

    def over_budget(self) -> bool:
        return self.clock() - self.start >= self.s.budget_s

    def probe(self, length: int) -> Probe:
        """Measure ``min_rounds`` rounds, then ``step_rounds`` more at a time while the verdict is a tie."""
        p = self.probes.setdefault(length, Probe(length))
        while True:
            try:
                a, b = self.measure(length, self.s.step_rounds if p.rounds else self.s.min_rounds)
            except ProbeFailed as exc:
                p.error = str(exc)
                raise
            p.a_times += a
            p.b_times += b
            decide(p, self.s.confidence)
            if p.faster or p.rounds >= self.s.max_rounds or self.over_budget():
                return p

    def mid(self, lo: int, hi: int) -> int | None:
        """The geometric midpoint, rounded to the granularity; None when no new length lies strictly between."""
        g = self.s.granularity if lo >= 16 * self.s.granularity else 1  # keeps steps <= ~6%
        m = round(math.sqrt(lo * hi) / g) * g
        return m if lo < m < hi and m not in self.probes else None


def _interpolate(lo: Probe, hi: Probe) -> float:
    """Where log(ratio) crosses 0 on the segment between two probes, in log L (clamped to the segment)."""
    r0, r1 = math.log(lo.ratio), math.log(hi.ratio)
    frac = 0.5 if r0 == r1 else min(1.0, max(0.0, r0 / (r0 - r1)))
    return math.exp(math.log(lo.length) + frac * (math.log(hi.length) - math.log(lo.length)))


def search_crossover(measure: Measure, grid: Sequence[int], settings: SearchSettings = SearchSettings(),
                     clock: Callable[[], float] = time.monotonic) -> SearchResult:
    """Search ``grid`` (ascending powers of two) for the length where A and B swap places; see the module doc."""
    if len(grid) < 2:
        raise ValueError("the search needs a range of at least two lengths")
    run = _Search(measure, settings, clock)

    def result(answer: str, stopped: str, interval: tuple[int, int] | None = None, faster: str | None = None,
               length: float | None = None, note: str = "") -> SearchResult:
        probes = sorted(run.probes.values(), key=lambda p: p.length)
        # the range the answer covers: what was probed when the budget or a failure cut the walk short
        covered = (grid[0], probes[-1].length if answer == "never_crosses" and probes else grid[-1])
        return SearchResult(answer, length, interval, faster, probes, stopped, covered, clock() - run.start, note)

    # 1. bracket on the powers of two
    last: Probe | None = None
    bracket: tuple[Probe, Probe] | None = None
    for length in grid:
        if run.over_budget():
            break
        try:
            p = run.probe(length)
        except ProbeFailed as exc:
            return result("failed" if last is None else "never_crosses", "failure", faster=last and last.faster,
                          note=f"stopped at L={length}: {exc}")
        if p.faster is None:
            continue
        if last is not None and p.faster != last.faster:
            bracket = (last, p)
            break
        last = p
    walked = max(run.probes)
    if bracket is None:
        stopped = "budget" if walked < grid[-1] else "range"
        if last is None:
            return result("indistinguishable", stopped, note=f"the CI of the ratio contains 1 at every probed length "
                                                             f"up to L={walked}")
        return result("never_crosses", stopped, faster=last.faster, note=f"probed up to L={walked}")

    # 2. bisect in log L between the decided ends, around any tied lengths
    lo, hi = bracket
    while hi.length / lo.length - 1 > settings.rel_width and not run.over_budget():
        ties = sorted(k for k in run.probes if lo.length < k < hi.length)
        gaps = [(lo.length, ties[0]), (ties[-1], hi.length)] if ties else [(lo.length, hi.length)]
        gaps = [g for g in gaps if g[1] / g[0] - 1 > settings.rel_width and run.mid(*g)]
        if not gaps:
            break
        g = max(gaps, key=lambda g: g[1] / g[0])
        try:
            p = run.probe(run.mid(*g))  # type: ignore[arg-type]
        except ProbeFailed as exc:
            return result("failed", "failure", (lo.length, hi.length), hi.faster, note=str(exc))
        if p.faster == lo.faster:
            lo = p
        elif p.faster == hi.faster:
            hi = p
    width_ok = hi.length / lo.length - 1 <= settings.rel_width
    stopped = "width" if width_ok else "budget" if run.over_budget() else "ties"
    interval = (lo.length, hi.length)
    estimate = _interpolate(lo, hi)
    ties = [k for k in run.probes if lo.length < k < hi.length]
    note = (f"{{A}} and {{B}} are within noise of each other at L={', '.join(map(str, sorted(ties)))}"
            if ties and not width_ok else "")

    # 3. does the faster side stay faster? every power of two above the bracket, while time remains: two models
    # within a few percent of each other can swap more than once (on a 2-core CPU, mamba vs the transformer
    # did between 128 and 2k), and checking only the next length found the first swap and called it the answer
    checked = []
    for length in (k for k in grid if k > hi.length and k not in run.probes):
        if run.over_budget():
            break
        try:
            p = run.probe(length)
        except ProbeFailed as exc:
            note = (note + "; " if note else "") + f"check above the bracket failed: {exc}"
            break
        checked.append(length)
        if p.faster is not None and p.faster != hi.faster:
            return result("crosses_more_than_once", stopped, interval, hi.faster, estimate,
                          f"{{{p.faster}}} is faster again at L={p.length}")
    unchecked = [k for k in grid if k > hi.length and k not in run.probes]
    if unchecked:
        note = (note + "; " if note else "") + (f"not checked above L={max([hi.length, *checked])} (budget): "
                                                 "another swap there is not excluded")
    return result("crosses", stopped, interval, hi.faster, estimate, note)

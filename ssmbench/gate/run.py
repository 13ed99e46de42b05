"""The throughput regression gate behind ``ssmbench check``.

Two ways to get a reference to compare the code under test ("head") with:

- a git ref (``--against REF``, what CI runs): the ref is checked out in a temporary ``git worktree`` and measured
  in the same job, its worker importing the worktree's code (PYTHONPATH), base and head interleaved round by round
  (ABBA), each case stopped as soon as it is decided (sequential testing, ``ab.py`` and ``sequential.py``). It sees
  every kind of regression, including one in code every model shares;
- a stored baseline (``--baseline results/baselines/ci.parquet``, format in ``baseline.py``): per-case samples
  recorded earlier, with the recording machine's calibration (``calibrate.py``); baseline times are scaled by how
  much slower this machine is (``--normalize``: by the calibration, or by the suite's median ratio, the default,
  which also absorbs the load of a shared machine and with it any change that slows every case alike: that blind
  spot is printed with every such result, BLIND_SPOT). For local use and runners without git history.

Measurement: rounds; in each round every case runs once per side in a persistent worker; one number per
(round, case, side) = the fastest of the case's few timed samples. Rounds spread each case over the whole run, so a
burst of load on a shared machine hits one round of every case instead of every sample of one case.

Verdicts against a baseline (``stats.verdict``): a case is a regression when its time ratio exceeds 1 + threshold
AND a one-sided rank test is significant AND the bootstrap CI excludes 1. Suspects (ratio beyond the threshold) are
re-measured with twice the rounds and judged on the fresh samples only, so one bad stretch of load cannot fail CI.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ssmbench.case import Case
from ssmbench.contention import is_contended
from ssmbench.gate import stats as check_stats
from ssmbench.gate.baseline import case_key, check_compatible, read_baseline, write_baseline
from ssmbench.gate.calibrate import Calibration, Normalisation, combine, measure_calibration, normalisation
from ssmbench.gate.worktree import IncompatibleCase, base_payload, start_worker
from ssmbench.spec import SpecError, Suite

DEFAULT_ROUNDS = 10
DEFAULT_THRESHOLD = 0.10
# Refuse a stored baseline when either calibration workload moved by more than this factor: a different class
# of machine, where rescaling by the calibration would be guesswork (``--force`` overrides).
MAX_CALIBRATION_SHIFT = 2.0
NORMALIZE_MODES = ("auto", "calibration", "suite", "none")
# --normalize suite re-measures suspects beside this many unsuspected cases, which re-estimate the machine factor
SUITE_CONTROLS = 6

Progress = Callable[[int, int, str], None]
# What the baseline mode cannot see, said in every --normalize suite result (the CI workflow runs --against).
BLIND_SPOT = ("⚠️ blind spot of --baseline with --normalize suite: a regression that slows every case alike (code "
              "all models share: residual block, norm, embedding, LM head, timer, runner) is divided out with the "
              "machine's speed and cannot fail this check; gate such changes with --against REF (the CI workflow "
              "does)")


@dataclass(frozen=True)
class CheckPlan:
    suite: Suite
    cases: tuple[Case, ...]
    rounds: int
    threshold: float
    alpha: float

    @property
    def device(self) -> str:
        return self.cases[0].device

    @property
    def threads(self) -> int:
        return self.cases[0].threads

    @property
    def ab_max_rounds(self) -> int:
        """Most rounds a case runs with --against (the sequential design usually stops far earlier); twice
        ``rounds``, as the fixed design's re-measurement of a suspect used to take."""
        return 2 * self.rounds


def plan_check(suite_path: str | os.PathLike[str], *, rounds: int | None = None, threshold: float | None = None,
               alpha: float = 0.01, compile_modes: tuple[str, ...] | None = None) -> CheckPlan:
    """The suite's speed cases and the gate's settings (CLI value, else the suite's ``[suite]`` value, else default).

    ``compile_modes`` (``--compile``) replaces every sweep's ``compile`` setting: gate the compiled paths too."""
    from ssmbench.engine.runner import plan_sweep
    from ssmbench.schema import load_suite

    suite = load_suite(suite_path)
    sweeps = [replace(s, compile=compile_modes) if compile_modes else s for s in suite.sweeps]
    cases = tuple(dict.fromkeys(c for s in sweeps for c in plan_sweep(s) if c.kind == "speed"))
    if not cases:
        raise SpecError(f"{suite_path}: the regression gate needs [[sweep]] tables (speed cases)")
    rounds = int(rounds if rounds is not None else suite.options.get("rounds", DEFAULT_ROUNDS))
    threshold = float(threshold if threshold is not None else suite.options.get("threshold", DEFAULT_THRESHOLD))
    if rounds < 3:
        raise SpecError(f"--rounds must be >= 3 (got {rounds}): the rank test needs a few samples per side")
    if not 0 < threshold < 10:
        raise SpecError(f"--threshold must be in (0, 10), a relative slowdown such as 0.10 (got {threshold:g})")
    if not 0 < alpha < 1:
        raise SpecError(f"--alpha must be in (0, 1) (got {alpha:g})")
    return CheckPlan(suite, cases, rounds, threshold, alpha)


# ----------------------------------------------------------------------------------------------- measurement


@dataclass(frozen=True)
class Side:
    """Where one side's cases run: its worker's environment, and model options injected into its cases.

    ``case_fields``: the ``Case`` fields the side's worker knows (an older ref's, ``worktree.case_fields``); cases
    are sent restricted to them (``worktree.base_payload``). None: the worker is this code's.
    """

    name: str  # "base" | "head"
    env: dict[str, str] | None = None
    options: tuple[tuple[str, Any], ...] = ()
    worker_module: str = "ssmbench.engine.worker"
    case_fields: frozenset[str] | None = None

    def apply(self, case: Case) -> Case:
        if not self.options:
            return case
        merged = dict(case.model_options) | dict(self.options)
        return replace(case, model_options=tuple(sorted(merged.items())))

    def incompatibility(self, case: Case) -> str | None:
        """Why this side's worker cannot run ``case`` (a field its Case lacks), or None."""
        try:
            base_payload(self.apply(case), self.case_fields)
        except IncompatibleCase as exc:
            return str(exc)
        return None

    def start(self) -> Any:
        """A persistent worker for this side (it starts importing torch at once; see :func:`measure_rounds`)."""
        return start_worker(self.env, self.worker_module, self.case_fields)


@dataclass
class Measurements:
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (side, key) -> per-round times
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    # (side, key) -> rounds that ran while other processes used the CPU (ssmbench/contention.py)
    contended: dict[tuple[str, str], int] = field(default_factory=dict)

    def contention_note(self, rounds_total: int) -> list[str]:
        """One note when some rounds ran contended: how many, and of which cases (times may be inflated)."""
        if not self.contended:
            return []
        n = sum(self.contended.values())
        keys = sorted({k for _, k in self.contended})
        return [f"⚠️ contended: {n} of {rounds_total} rounds ran while other processes used >= 0.5 CPU cores "
                f"({len(keys)} case(s)); their times may be inflated: a regression or speed-up found on them is "
                "suspect, re-run the check on a quiet machine"]


def _round_time(result: Any) -> float:
    """One round's number: the fastest of the case's timed samples (load on a shared machine only adds time, so
    the minimum of a few back-to-back calls is the least load-sensitive; rounds are then compared by medians)."""
    for m in result.metrics or []:
        if m.metric == "time" and m.stat == "median":
            return float(min(m.samples)) if m.samples else float(m.value)
    raise ValueError("the case reported no time/median metric")


def measure_rounds(cases: Sequence[Case], sides: Sequence[Side], rounds: int,
                   on_progress: Progress | None = None, probe: Callable[[], object] | None = None,
                   workers: dict[str, Any] | None = None) -> Measurements:
    """``rounds`` x every case x every side, interleaved: round r runs each case on the sides in ABAB order for
    even r and BABA for odd r. A case that fails on any side is not run again. ``probe`` (the calibration) runs
    at the start of every round, so it sees the same stretches of machine load as the cases.

    ``workers`` (side name -> worker): warm workers kept by the caller across calls (it closes them); without it
    the workers live for this call. Every side's worker is started before the first case, so that their
    interpreters and torch imports overlap.
    """
    out = Measurements()
    own = workers is None
    pool: dict[str, Any] = {} if workers is None else workers
    total, done = rounds * len(cases) * len(sides), 0
    try:
        for side in sides:
            if side.name not in pool:
                pool[side.name] = side.start()
        for case in cases:  # a case one side's worker cannot take is reported, not run
            for side in sides:
                why = side.incompatibility(case)
                if why:
                    out.errors[(side.name, case_key(case))] = f"error: {why}"
        for r in range(rounds):
            if probe is not None:
                probe()
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for case in cases:
                key = case_key(case)
                for side in order:
                    done += 1
                    if any((s.name, key) in out.errors for s in sides):
                        continue
                    if on_progress:
                        on_progress(done - 1, total, f"round {r + 1}/{rounds} {side.name}: {case.label()}")
                    worker = pool.get(side.name) or side.start()
                    pool[side.name] = worker
                    result, restart = worker.run(side.apply(case))
                    if restart:
                        worker.kill()
                        pool.pop(side.name)
                    if result.status != "ok":
                        out.errors[(side.name, key)] = f"{result.status}: {result.error}"
                        continue
                    out.values.setdefault((side.name, key), []).append(_round_time(result))
                    if is_contended(result.metrics or []):
                        out.contended[(side.name, key)] = out.contended.get((side.name, key), 0) + 1
        if on_progress:
            on_progress(total, total, "done")
    finally:
        if own:
            for worker in pool.values():
                worker.close()
    return out


# ----------------------------------------------------------------------------------------------------- results


@dataclass
class CaseCheck:
    key: str
    label: str
    base: list[float] = field(default_factory=list)  # scaled by the calibration factor in baseline mode
    head: list[float] = field(default_factory=list)
    comparison: check_stats.Comparison | None = None
    verdict: str = "ok"  # regression | unsure | ok | faster | failed | new
    error: str = ""
    first_verdict: str | None = None  # the verdict before re-measurement, when re-measured
    rounds: int = 0  # --against: the rounds after which the sequential test decided the case


@dataclass
class CheckResult:
    mode: str  # "baseline" | "against"
    plan: CheckPlan
    reference: str  # the baseline's description or "REF (sha)"
    cases: list[CaseCheck]
    normalisation: Normalisation | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def regressions(self) -> list[CaseCheck]:
        return [c for c in self.cases if c.verdict in ("regression", "failed")]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    @property
    def geomean_ratio(self) -> float:
        return check_stats.geomean([c.comparison.ratio for c in self.cases if c.comparison is not None])


def _judge(cc: CaseCheck, paired: bool, plan: CheckPlan) -> None:
    compare = check_stats.compare_paired if paired else check_stats.compare_unpaired
    cc.comparison = compare(cc.base, cc.head)
    cc.verdict = check_stats.verdict(cc.comparison, plan.threshold, plan.alpha)


def _collect(plan: CheckPlan, meas: Measurements, base_of: Callable[[str], list[float] | None],
             paired: bool) -> list[CaseCheck]:
    out = []
    for c in plan.cases:
        key = case_key(c)
        cc = CaseCheck(key, c.label(), base=list(base_of(key) or []), head=meas.values.get(("head", key), []))
        if ("head", key) in meas.errors:
            cc.verdict, cc.error = "failed", meas.errors[("head", key)]
        elif ("base", key) in meas.errors:
            cc.verdict, cc.error = "new", "base: " + meas.errors[("base", key)]
        else:
            _judge(cc, paired, plan)
        out.append(cc)
    return out


def _remeasure(plan: CheckPlan, checks: list[CaseCheck], sides: Sequence[Side], paired: bool,
               base_of: Callable[[str], list[float]] | None, on_progress: Progress | None,
               rescale: Callable[[Measurements, list[str]], Callable[[str], list[float]]] | None = None) -> None:
    """Re-run suspects (ratio beyond the threshold) with twice the rounds; judge them on the fresh samples.

    ``base_of`` None: the base side is re-measured too (``--against``). ``rescale`` (``--normalize suite``):
    up to SUITE_CONTROLS unsuspected cases are re-measured alongside, and ``rescale(meas, control keys)`` gives the
    baseline of this pass, so that the machine factor comes from the same stretch of time as the suspects.
    """
    suspects = {c.key: c for c in checks if c.verdict in ("regression", "unsure")}
    if not suspects:
        return
    others = [c.key for c in checks if c.key not in suspects and c.comparison is not None]
    controls = others[::max(1, math.ceil(len(others) / SUITE_CONTROLS))] if rescale else []
    cases = [c for c in plan.cases if case_key(c) in suspects or case_key(c) in controls]
    meas = measure_rounds(cases, sides, 2 * plan.rounds, on_progress)
    if rescale is not None:
        base_of = rescale(meas, [k for k in controls if ("head", k) in meas.values] or list(suspects))
    for key, cc in suspects.items():
        cc.first_verdict = cc.verdict
        if ("head", key) in meas.errors or ("base", key) in meas.errors:
            cc.verdict = "failed"
            cc.error = meas.errors.get(("head", key)) or meas.errors.get(("base", key), "")
            continue
        cc.head = meas.values[("head", key)]
        cc.base = meas.values[("base", key)] if base_of is None else base_of(key)
        _judge(cc, paired, plan)


def _median_ratio(meas: Measurements, raw: dict[str, list[float]], keys: Sequence[str]) -> float:
    """Median over cases of median(current) / median(baseline): the machine factor of ``--normalize suite``."""
    from statistics import median

    ratios = [median(meas.values[("head", k)]) / median(raw[k]) for k in keys if ("head", k) in meas.values]
    return median(ratios) if ratios else 1.0


def _check_power(plan: CheckPlan, n_base: int, paired: bool) -> None:
    p = check_stats.smallest_p(n_base, plan.rounds, paired)
    if p >= plan.alpha:
        raise SpecError(f"with {plan.rounds} rounds{'' if paired else f' against {n_base} baseline rounds'} the "
                        f"{'signed-rank' if paired else 'rank'} test cannot reach p < {plan.alpha:g} (best "
                        f"p = {p:.2g}): raise --rounds (or --alpha)")


def _prober(plan: CheckPlan, into: list[Calibration]) -> Callable[[], None]:
    """A short calibration per round (3 samples of each workload), collected in ``into``."""
    return lambda: into.append(measure_calibration(plan.device, plan.threads, samples=3))


def run_against_baseline(plan: CheckPlan, baseline_path: str | os.PathLike[str], *,
                         inject: tuple[tuple[str, Any], ...] = (), force: bool = False, remeasure: bool = True,
                         normalize: str = "auto", on_progress: Progress | None = None) -> CheckResult:
    """Measure the suite here and compare it with a stored baseline, normalised for the machine.

    ``normalize``: ``suite`` (also ``auto``, the default) scales baseline times by the median ratio over the
    suite's cases: it absorbs machine speed and the load of a shared machine, which on the 2-core development
    machine moved whole runs by +-35% while the calibration tracked it only to ~10-20%; a change that slows every
    case alike is not gated then, but a note compares the suite's ratio with the calibration's. ``calibration``
    scales by the calibration ratio; ``none`` leaves baseline times as recorded. The calibration is always
    measured: a baseline from another machine whose calibration differs more than MAX_CALIBRATION_SHIFT is
    refused (a different class of machine) unless ``force``.
    """
    if normalize not in NORMALIZE_MODES:
        raise SpecError(f"unknown --normalize '{normalize}'; choose from {', '.join(NORMALIZE_MODES)}")
    t0 = time.perf_counter()
    baseline = read_baseline(baseline_path)
    notes = check_compatible(baseline, suite=plan.suite.name, suite_path=plan.suite.path, cases=plan.cases)
    _check_power(plan, min(len(xs) for xs in baseline.samples.values()), paired=False)
    normalize = "suite" if normalize == "auto" else normalize
    if normalize == "suite" and len(plan.cases) < 2:  # the lone case would be its own reference: it could never fail
        notes.append("a one-case suite cannot fail under suite normalisation (the case would be its own "
                     "reference): normalised by the machine calibration instead")
        normalize = "calibration"
    elsewhere = not baseline.same_machine()
    probes: list[Calibration] = []
    for _ in range(3):  # the same estimator as the baseline's (median of short probes), before spending the time
        _prober(plan, probes)()
    shift = normalisation(baseline.calibration, combine(*probes))
    if (elsewhere or normalize == "calibration") and shift.worst_shift() > MAX_CALIBRATION_SHIFT and not force:
        raise SpecError(f"calibration moved too much to trust the baseline: {shift.describe()} (limit "
                        f"{MAX_CALIBRATION_SHIFT:g}x): a different class of machine, or a heavily loaded one; "
                        "re-record the baseline on this kind of machine (--update-baseline), use --against REF, "
                        "or pass --force")
    head = Side("head", options=inject)
    meas = measure_rounds(plan.cases, [head], plan.rounds, on_progress, probe=_prober(plan, probes))
    raw = baseline.samples
    norm = normalisation(baseline.calibration, combine(*probes), normalize,
                         _median_ratio(meas, raw, [case_key(c) for c in plan.cases]))
    if normalize == "none" and norm.worst_shift() > MAX_CALIBRATION_SHIFT:
        notes.append(f"the calibration differs {norm.worst_shift():.2f}x from the baseline's on this same machine: "
                     "its load differs from when the baseline was recorded, so the verdicts are less reliable")
    if normalize == "suite":
        notes.append(BLIND_SPOT)
    if normalize == "suite" and norm.suite_ratio > norm.measured_factor * (1 + plan.threshold):
        notes.append(f"⚠️ the whole suite is x{norm.suite_ratio / norm.measured_factor:.2f} slower than the "
                     "calibration predicts: load the calibration missed, or a change that slows every case alike, "
                     "which --normalize suite does not gate (confirm with --against REF)")
    drift = normalisation(probes[0], probes[-1])
    notes.append(f"machine drift during the run (calibration in the last round vs before the first): matmul "
                 f"x{drift.matmul_ratio:.3f}, memory x{drift.memory_ratio:.3f}")

    def scaled(factor: float) -> Callable[[str], list[float]]:
        return lambda key: [s * factor for s in raw[key]]

    def rescale(again: Measurements, controls: list[str]) -> Callable[[str], list[float]]:
        factor = _median_ratio(again, raw, controls)
        notes.append(f"re-measurement beside {len(controls)} unsuspected case(s): baseline times scaled by "
                     f"x{factor:.3f} for the re-measured cases")
        return scaled(factor)

    checks = _collect(plan, meas, scaled(norm.factor), paired=False)
    if remeasure:
        _remeasure(plan, checks, [head], False, scaled(norm.factor), on_progress,
                   rescale if normalize == "suite" else None)
    notes += meas.contention_note(sum(len(v) for v in meas.values.values()))
    return CheckResult("baseline", plan, baseline.describe(), checks, norm, notes, time.perf_counter() - t0)


def record_baseline(plan: CheckPlan, path: str | os.PathLike[str], *, command: str = "",
                    on_progress: Progress | None = None) -> tuple[Path, Measurements, Calibration]:
    """Measure the suite and write it as the new baseline (nothing is written if a case fails)."""
    probes: list[Calibration] = []
    meas = measure_rounds(plan.cases, [Side("head")], plan.rounds, on_progress, probe=_prober(plan, probes))
    if meas.errors:
        (_, key), err = next(iter(meas.errors.items()))
        label = next(c.label() for c in plan.cases if case_key(c) == key)
        raise RuntimeError(f"{len(meas.errors)} case(s) failed, baseline not written; first: {label}: {err}")
    calibration = combine(*probes)
    samples = {key: xs for (_, key), xs in meas.values.items()}
    out = write_baseline(path, suite=plan.suite.name, suite_path=plan.suite.path, cases=plan.cases, samples=samples,
                         rounds=plan.rounds, calibration=calibration, command=command)
    return out, meas, calibration

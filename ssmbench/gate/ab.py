"""``ssmbench check --against REF``: the ref and the working tree measured interleaved, each case stopped once decided.

The ref is checked out in a temporary worktree (``worktree.py``); its worker imports that tree (PYTHONPATH first,
and the ref's own worker module and ``Case`` fields, so refs older than the current layout still run). Both
sides' workers start together and stay warm for the whole run. Cases run in steps of two rounds (ABAB then BABA);
after each step every undecided case is examined (``sequential.py``: a regression at the look's spent alpha, or
an upper bound of its ratio inside the threshold) and decided cases drop out, so later rounds only run the cases
still in doubt, up to ``CheckPlan.ab_max_rounds``.
A case flagged as a regression is confirmed by a second such pass in fresh workers, judged on its own rounds.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ssmbench.case import Case
from ssmbench.gate import sequential
from ssmbench.gate.baseline import case_key
from ssmbench.gate.run import CaseCheck, CheckPlan, CheckResult, Measurements, Progress, Side, measure_rounds
from ssmbench.gate.worktree import case_fields, git_worktree, worker_module
from ssmbench.spec import SpecError


def looks_for(plan: CheckPlan) -> tuple[sequential.Look, ...]:
    """The plan's looks: each case's alpha (``--alpha``, per case as against a baseline) spent over them."""
    looks = sequential.plan_looks(plan.ab_max_rounds, plan.alpha, settle_at=plan.rounds)
    if sequential.first_decision(looks)[0] is None:
        raise SpecError(f"with at most {plan.ab_max_rounds} rounds per case (2 x --rounds {plan.rounds}) the "
                        f"signed-rank test cannot reach p < {plan.alpha:g}: raise --rounds (or --alpha)")
    return looks


def _sequential(plan: CheckPlan, cases: Sequence[Case], sides: Sequence[Side], looks: Sequence[sequential.Look],
                on_progress: Progress | None) -> tuple[Measurements, dict[str, tuple[str, Any, int]]]:
    """Measure in steps between looks until every case is decided, in fresh workers kept warm for this pass;
    (all samples, key -> (verdict, cmp, rounds))."""
    out, decided = Measurements(), {}
    pending: list[Case] = list(cases)
    workers: dict[str, Any] = {}
    total, done, measured = plan.ab_max_rounds * len(cases) * len(sides), 0, 0
    try:
        for look in looks:
            def progress(d: int, _t: int, what: str, start: int = done, left: int = len(pending)) -> None:
                if on_progress:
                    on_progress(start + d, total, f"{left} undecided, {what}")

            step = measure_rounds(pending, sides, look.rounds - measured, progress, workers=workers)
            done += (look.rounds - measured) * len(pending) * len(sides)
            measured = look.rounds
            out.errors.update(step.errors)
            for k, n in step.contended.items():
                out.contended[k] = out.contended.get(k, 0) + n
            for k, xs in step.values.items():
                out.values.setdefault(k, []).extend(xs)
            still = []
            for case in pending:
                key = case_key(case)
                if any((s.name, key) in out.errors for s in sides):
                    continue
                v, cmp = sequential.decide(out.values[("base", key)], out.values[("head", key)], look,
                                           plan.threshold, last=look is looks[-1])
                if v is None:
                    still.append(case)
                else:
                    decided[key] = (v, cmp, look.rounds)
            pending = still
            if not pending:
                break
        if on_progress:
            on_progress(total, total, "done")
    finally:
        for worker in workers.values():
            worker.close()
    return out, decided


def run_against_ref(plan: CheckPlan, ref: str, *, inject: tuple[tuple[str, Any], ...] = (), remeasure: bool = True,
                    repo: str | os.PathLike[str] = ".", on_progress: Progress | None = None) -> CheckResult:
    """Measure ``ref`` (in a worktree) and the working tree interleaved in this job; paired sequential statistics.

    ``remeasure``: a case flagged as a regression is confirmed by a second sequential pass in fresh workers,
    judged on its rounds alone (both passes must flag it).
    """
    t0 = time.perf_counter()
    looks = looks_for(plan)
    with git_worktree(ref, repo) as (tree, sha):
        pythonpath = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
        # PYTHONSAFEPATH: ``python -m`` must not put the caller's directory (maybe the head checkout) first
        base = Side("base", env={"PYTHONPATH": pythonpath, "PYTHONSAFEPATH": "1"},
                    worker_module=worker_module(tree) or "ssmbench.engine.worker", case_fields=case_fields(tree))
        head = Side("head", options=inject)
        meas, decided = _sequential(plan, plan.cases, [base, head], looks, on_progress)
        # Confirmation: a flagged case is measured again from scratch in fresh workers and judged on those rounds
        # alone, so a bias of one pair of worker processes (memory placement, a stretch of load) cannot fail CI.
        suspects = [c for c in plan.cases if decided.get(case_key(c), ("",))[0] == "regression"]
        again, confirmed = (_sequential(plan, suspects, [base, head], looks, on_progress) if remeasure and suspects
                            else (Measurements(), {}))
    checks = []
    for c in plan.cases:
        key = case_key(c)
        cc = CaseCheck(key, c.label(), base=meas.values.get(("base", key), []), head=meas.values.get(("head", key), []))
        if ("head", key) in meas.errors:
            cc.verdict, cc.error = "failed", meas.errors[("head", key)]
        elif ("base", key) in meas.errors:
            cc.verdict, cc.error = "new", "base: " + meas.errors[("base", key)]
        else:
            cc.verdict, cc.comparison, cc.rounds = decided[key]
        if key in confirmed or any(k == key for _, k in again.errors):
            cc.first_verdict = cc.verdict
            cc.base, cc.head = again.values.get(("base", key), []), again.values.get(("head", key), [])
            error = again.errors.get(("head", key)) or again.errors.get(("base", key))
            if error:
                cc.verdict, cc.error = "failed", error
            else:
                cc.verdict, cc.comparison, cc.rounds = confirmed[key]
        checks.append(cc)
    reg_at = ", ".join(str(lk.rounds) for lk in looks if lk.alpha)
    ok_at = sequential.first_decision(looks)[1]
    ran = sum(v[2] for v in decided.values())
    notes = [f"base = {ref} ({sha[:12]}) checked out in a temporary worktree; head = the working tree; both run "
             f"by {sys.executable}, interleaved round by round, workers kept warm",
             f"sequential: looks every {sequential.STEP} rounds up to {plan.ab_max_rounds}; a case can stop as a "
             f"regression at rounds {reg_at} (alpha {plan.alpha:g} per case, spent over these looks), as inside "
             f"the threshold from round {ok_at} (signed-rank upper bound of its ratio), and stops at round "
             f"{plan.rounds} unless its ratio is beyond the threshold; {ran} case-rounds run of "
             f"{plan.ab_max_rounds * len(checks)} at most in the first pass"
             + (f"; {len(suspects)} flagged case(s) confirmed by a second pass in fresh workers" if suspects
                and remeasure else "")]
    notes += meas.contention_note(sum(len(v) for v in meas.values.values()))
    return CheckResult("against", plan, f"{ref} ({sha[:12]})", checks, None, notes, time.perf_counter() - t0)

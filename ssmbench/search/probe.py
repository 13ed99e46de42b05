"""The crossover search for real: probes measured in a worker process, stored as ordinary speed rows.

Each probe length becomes the two speed cases a sweep would plan there (same model options, device, dtype, mode
and tokens-per-batch rule, through :func:`ssmbench.engine.runner.plan_sweep`), tagged with the search id
(``Case.search``). A round runs A then B (B then A in odd rounds) in one persistent worker; one round's number
for a side is the fastest of its few timed samples, as in the regression gate. After every probe each side is
written as one part whose ``time`` rows summarise its rounds (``samples`` = the per-round times), so the probes
show up in ``ssmbench report`` like any other case, and the answer goes to ``searches/<id>.json``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ssmbench import store
from ssmbench.case import Case
from ssmbench.engine.runner import WorkerProcess, plan_sweep
from ssmbench.search.crossover import ProbeFailed, SearchResult, SearchSettings, search_crossover
from ssmbench.spec import SweepSpec, resolve_device
from ssmbench.store import CaseResult, Metric

# Metrics recomputed from the rounds; every other metric of the last round's result is stored as measured.
_TIMING = ("time", "tokens_per_s", "achieved_flops", "wall_time", "launch_bound")


def probe_cases(spec: SweepSpec, length: int, search_id: str) -> tuple[Case, Case]:
    """The two cases (A, B) a sweep would run at ``length``, tagged with the search."""
    a, b = (replace(c, search=search_id, options=(*c.options, ("measure_memory", False)))
            for c in plan_sweep(replace(spec, lengths=(length,))))
    return a, b


def _round_time(result: CaseResult) -> float:
    for m in result.metrics or []:
        if m.metric == "time" and m.stat == "median":
            return float(min(m.samples)) if m.samples else float(m.value)
    raise ProbeFailed("the case reported no time")


def combine_rounds(case: Case, times: list[float], last: CaseResult) -> CaseResult:
    """One stored result for a side of a probe: time statistics over the rounds, the rest from the last round."""
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    med, n = statistics.median(times), len(times)
    metrics = [Metric("time", "median", med, "s", n, samples=tuple(times)), Metric("time", "q25", q[0], "s", n),
               Metric("time", "q75", q[2], "s", n), Metric("time", "iqr", q[2] - q[0], "s", n),
               Metric("time", "min", min(times), "s", n),
               Metric("tokens_per_s", "median", case.tokens / med, "tok/s", n)]
    kept = [m for m in last.metrics or [] if m.metric not in _TIMING]
    flops = next((m.value for m in kept if m.metric == "flops"), None)
    if flops:
        metrics.append(Metric("achieved_flops", "median", flops / med, "FLOP/s", n))
    info = dict(last.info or {}, rounds=n)
    return CaseResult(status="ok", metrics=metrics + kept, info=info)


@dataclass
class WorkerMeasure:
    """The search's ``measure(length, rounds)``: interleaved rounds in one worker, parts written per probe."""

    spec: SweepSpec
    search_id: str
    root: Path
    run_id: str
    rounds_done: int = 0
    worker: WorkerProcess | None = None
    times: dict[tuple[int, str], list[float]] = field(default_factory=dict)

    def _run(self, case: Case) -> CaseResult:
        self.worker = self.worker or WorkerProcess()
        result, restart = self.worker.run(case)
        if restart:
            self.worker.kill()
            self.worker = None
        return result

    def __call__(self, length: int, rounds: int) -> tuple[list[float], list[float]]:
        from ssmbench.bench.pair import PAIR_MODES  # lazily: it imports torch, which this process need not

        cases = dict(zip("AB", probe_cases(self.spec, length, self.search_id), strict=True))
        if cases["A"].mode in PAIR_MODES:
            new, last = self._pair_rounds(cases, rounds)
        else:
            new, last = self._case_rounds(cases, rounds)
        for side, case in cases.items():
            self.times.setdefault((length, side), []).extend(new[side])
            store.write_case(self.root, self.run_id, case, combine_rounds(case, self.times[(length, side)],
                                                                           last[side]))
        return new["A"], new["B"]

    def _pair_rounds(self, cases: dict[str, Case], rounds: int) -> tuple[dict, dict]:
        """All rounds in one worker call (both models built once, see ``bench/pair.py``)."""
        from ssmbench.bench.pair import pair_case

        pair = pair_case(cases["A"], cases["B"], rounds, self.rounds_done)
        pair = replace(pair, timeout_s=pair.timeout_s * max(1, rounds))
        self.rounds_done += rounds
        result = self._run(pair)
        if result.status != "ok":
            raise ProbeFailed(f"{cases['A'].label()} vs {cases['B'].label()}: {result.status}: {result.error}")
        m = {(x.metric, x.stat): x for x in result.metrics or []}
        new, last = {}, {}
        for side, key in (("A", "a"), ("B", "b")):
            new[side] = list(m["round_time", key].samples or ())
            kept = [Metric(name, "value", m[name, key].value, m[name, key].unit) for name in ("first_call", "flops",
                                                                                             "params")]
            last[side] = CaseResult(metrics=kept, info={"backend": (result.info or {}).get(f"backend_{key}"),
                                                        "params": int(m["params", key].value)})
        return new, last

    def _case_rounds(self, cases: dict[str, Case], rounds: int) -> tuple[dict, dict]:
        """One whole case per side per round (the inference modes)."""
        new: dict[str, list[float]] = {"A": [], "B": []}
        last: dict[str, CaseResult] = {}
        for _ in range(rounds):
            order = "AB" if self.rounds_done % 2 == 0 else "BA"
            self.rounds_done += 1
            for side in order:
                result = self._run(cases[side])
                if result.status != "ok":
                    store.write_case(self.root, self.run_id, cases[side], result)
                    raise ProbeFailed(f"{cases[side].label()}: {result.status}: {result.error}")
                new[side].append(_round_time(result))
                last[side] = result
        return new, last

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


def run_crossover(spec: SweepSpec, root: str | Path, settings: SearchSettings = SearchSettings(), *,
                  command: str = "") -> tuple[str, SearchResult, dict[str, Any]]:
    """Search ``spec.lengths`` (powers of two) for where ``spec.models`` (A, B) cross; (id, result, summary)."""
    from ssmbench.env import fingerprint

    root = Path(root)
    spec = replace(spec, device=resolve_device(spec.device))
    run_id = store.new_run_id()
    search_id = f"xo-{run_id}"
    info = fingerprint()
    if spec.threads > 0:
        info["torch_threads"] = str(spec.threads)
    store.write_run(root, run_id, info, command=command, suite="crossover")
    measure = WorkerMeasure(spec, search_id, root, run_id)
    started = time.perf_counter()
    try:
        result = search_crossover(measure, spec.lengths, settings)
    finally:
        measure.close()
    a, b = (str(m) for m in spec.models)
    c = probe_cases(spec, spec.lengths[0], search_id)[0]
    summary = {"search_id": search_id, **result.to_dict({"A": a, "B": b}), "models": [a, b],
               "mode": spec.modes[0], "device": spec.device, "dtype": spec.dtype,
               "d_model": spec.d_model, "n_layers": spec.n_layers, "tokens": spec.tokens,
               "threads": spec.threads, "rel_width": settings.rel_width, "budget_s": settings.budget_s,
               "confidence": settings.confidence, "wall_s": time.perf_counter() - started, "run_id": run_id,
               "model_options": dict(c.model_options), "match_params": spec.match_params}
    store.write_search(root, search_id, summary)
    return search_id, result, summary

"""Two speed cases timed against each other in one worker call, round by round (a crossover probe).

Both models are built once and warmed up; then each round times one call of A and one of B back to back (AB in
even rounds, BA in odd ones, counting from the probe's ``offset`` so the order keeps alternating across calls), so
slow drift of a shared machine cancels in each round's ratio. Compared with one case per side per round this
saves a model build and an untimed first call per side per round, which is most of a probe's time on a CPU.
Only ``fwd`` and ``fwdbwd`` (whose step is a plain call); the inference modes go through whole cases.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from ssmbench.bench.cost import case_flops
from ssmbench.bench.measure import build_case_model, ran_backend
from ssmbench.bench.speed import make_step
from ssmbench.case import Case
from ssmbench.store import CaseResult, Metric

PAIR_MODES = ("fwd", "fwdbwd")


def pair_case(a: Case, b: Case, rounds: int, offset: int) -> Case:
    """The worker case that times ``a`` against ``b`` for ``rounds`` rounds."""
    return replace(a, kind="pair", options=(*a.options, ("pair_with", b.to_json()), ("rounds", rounds),
                                            ("offset", offset)))


def _timed(fn: Callable[[], object], before: Callable[[], None] | None, device: str) -> float:
    if before is not None:
        before()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_pair_case(case: Case) -> CaseResult:
    """Metrics per side s in (a, b): ``round_time/s`` (samples = one time per round, the fastest of
    ``case.samples`` calls), ``first_call/s``, ``flops/s``, ``params/s``; info: ``backend_a``, ``backend_b``."""
    b_case = Case.from_dict(json.loads(case.option("pair_with")))
    a_case = replace(case, kind="speed", options=tuple((k, v) for k, v in case.options
                                                       if k not in ("pair_with", "rounds", "offset")))
    if a_case.mode not in PAIR_MODES:
        raise ValueError(f"mode '{a_case.mode}' cannot be timed as a pair; modes: {', '.join(PAIR_MODES)}")
    sides = {}
    metrics: list[Metric] = []
    info = {}
    for name, c in (("a", a_case), ("b", b_case)):
        torch.manual_seed(c.seed)
        _, model, model_info = build_case_model(c)
        step, before = make_step(c, model)
        sides[name] = (step, before)
        metrics += [Metric("first_call", name, _timed(step, before, c.device), "s"),
                    Metric("flops", name, case_flops(model, c.batch, c.seq_len, c.mode), "FLOP"),
                    Metric("params", name, model_info["params"], "count")]
        info[f"backend_{name}"] = ran_backend(c)
    times: dict[str, list[float]] = {"a": [], "b": []}
    offset = int(case.option("offset", 0))
    for r in range(int(case.option("rounds", 1))):
        for name in ("ab" if (offset + r) % 2 == 0 else "ba"):
            step, before = sides[name]
            times[name].append(min(_timed(step, before, case.device) for _ in range(max(1, case.samples))))
    metrics += [Metric("round_time", name, min(t), "s", len(t), samples=tuple(t)) for name, t in times.items()]
    return CaseResult(status="ok", metrics=metrics, info=info)

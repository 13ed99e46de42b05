"""Timing of record: warm-up, then >= N samples (and up to a time budget); median and IQR, never a mean.

CPU: ``time.perf_counter`` around a call; CPU kernels are synchronous, so the work is done when it returns.
CUDA: a pair of CUDA events per call, read after ``synchronize`` (device time), and the synchronised host
wall time per call beside it; a case whose wall time is far above its device time is launch-bound.
The first call (compilation, autotuning, lazy init) is timed on its own and reported separately.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch


def quantile(values: Sequence[float], q: float) -> float:
    """Linearly interpolated quantile (numpy's default method); NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass
class Timing:
    samples: list[float]  # seconds (device time on CUDA)
    first_call_s: float
    host_samples: list[float] = field(default_factory=list)  # CUDA only: synchronised wall time per call

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        return quantile(self.samples, q)

    @property
    def iqr(self) -> float:
        return self.quantile(0.75) - self.quantile(0.25)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], *, device: str, warmup: int = 2, min_samples: int = 5,
            budget_s: float = 2.0, max_samples: int = 50, before_each: Callable[[], None] | None = None) -> Timing:
    """Time ``fn``: one separately timed first call, ``warmup - 1`` more untimed calls, then samples.

    Sampling continues past ``min_samples`` while the time spent sampling is under ``budget_s`` (at most
    ``max_samples``). ``before_each`` runs untimed before every call (e.g. clearing gradients).
    """
    if min_samples < 1:
        raise ValueError("min_samples must be >= 1")

    def prepare() -> None:
        if before_each is not None:
            before_each()

    prepare()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        prepare()
        fn()
    _sync(device)

    samples: list[float] = []
    host: list[float] = []
    spent = 0.0
    while len(samples) < min_samples or (spent < budget_s and len(samples) < max_samples):
        prepare()
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            h0 = time.perf_counter()
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            wall = time.perf_counter() - h0
            samples.append(start.elapsed_time(end) / 1e3)
            host.append(wall)
        else:
            h0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - h0
            samples.append(wall)
        spent += wall
    return Timing(samples=samples, first_call_s=first, host_samples=host)

"""Machine-speed calibration: two fixed workloads timed in the same run as the benchmark cases.

A stored baseline carries the calibration of the machine that recorded it; the check measures the same workloads
(before the first round and at the start of every round) to see how much slower or faster this machine is, so a
baseline recorded on one runner stays usable on another of the same class. The two workloads bracket what the
models do:

- ``matmul``: a fixed fp32 matrix product (compute-bound, like the projections and MLPs);
- ``memory``: a fixed elementwise add over arrays larger than the last-level cache (bandwidth-bound, like scans,
  norms and activations).

``--normalize calibration`` scales baseline times by the geometric mean of the two ratios (the default scales by
the suite's own median ratio and reports the calibration beside it, see ``check.py``). A ratio far from 1 means a
different class of machine, where a linear rescaling would be guesswork: the check refuses.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

# Workload sizes per device: (matmul n, matmul repeats, memory elements, memory repeats). CPU: ~10-30 ms per
# sample on a laptop-class core; CUDA: large enough to be far above launch overhead.
_SIZES = {"cpu": (256, 8, 4 * 2**20, 4), "cuda": (4096, 10, 64 * 2**20, 10)}


@dataclass(frozen=True)
class Calibration:
    """Seconds of one sample of each workload (the fastest of the samples), and the conditions of the measurement."""

    device: str
    threads: int  # torch CPU threads used (0 = torch's default)
    matmul_s: float
    memory_s: float
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(device=str(data["device"]), threads=int(data["threads"]), matmul_s=float(data["matmul_s"]),
                   memory_s=float(data["memory_s"]), n_samples=int(data.get("n_samples", 0)))


NORMALISATION_MODES = ("calibration", "suite", "none")


@dataclass(frozen=True)
class Normalisation:
    """How this machine compares to the baseline's (ratios > 1: slower here), and how baseline times are scaled.

    ``mode``: ``calibration`` scales by the calibration's geometric mean; ``suite`` by ``suite_ratio``, the median
    over the suite's cases of current / baseline time (robust to machine load, but a change that slows every case
    alike cancels out); ``none`` leaves baseline times as recorded.
    """

    matmul_ratio: float
    memory_ratio: float
    mode: str = "calibration"
    suite_ratio: float = 1.0

    @property
    def measured_factor(self) -> float:
        """How much slower this machine is by the calibration: the geometric mean of the two ratios."""
        return math.sqrt(self.matmul_ratio * self.memory_ratio)

    @property
    def factor(self) -> float:
        """Multiply baseline times by this to predict them here."""
        return {"calibration": self.measured_factor, "suite": self.suite_ratio}.get(self.mode, 1.0)

    def worst_shift(self) -> float:
        """The largest relative move of either workload, as a factor >= 1."""
        return max(max(r, 1 / r) for r in (self.matmul_ratio, self.memory_ratio))

    def describe(self) -> str:
        measured = f"matmul x{self.matmul_ratio:.3f}, memory x{self.memory_ratio:.3f} vs the baseline's calibration"
        if self.mode == "calibration":
            return f"{measured} -> baseline times scaled by x{self.factor:.3f}"
        if self.mode == "suite":
            return (f"{measured} (not used); baseline times scaled by x{self.suite_ratio:.3f}, the median ratio of "
                    "the suite's cases (--normalize suite: a change that slows every case alike is not gated)")
        return f"{measured} -> not applied (baseline times used as recorded)"


def normalisation(baseline: Calibration, current: Calibration, mode: str = "calibration",
                  suite_ratio: float = 1.0) -> Normalisation:
    if mode not in NORMALISATION_MODES:
        raise ValueError(f"unknown normalisation mode '{mode}'")
    return Normalisation(current.matmul_s / baseline.matmul_s, current.memory_s / baseline.memory_s, mode,
                         suite_ratio)


def measure_calibration(device: str = "cpu", threads: int = 0, samples: int = 9, seed: int = 0) -> Calibration:
    """Time both workloads ``samples`` times each (after one warm-up), alternating them; the fastest of each.

    The minimum, not the median: load from other processes only adds time, and the gate compares machines.

    ``threads`` > 0 sets torch's CPU threads for the measurement (the benchmark cases' setting) and restores the
    previous value afterwards.
    """
    from ssmbench.bench.peaks import time_workloads  # the workloads are shared with the roofline's peaks

    if device not in _SIZES:
        raise ValueError(f"no calibration workload for device '{device}'")
    mm, mem = time_workloads(device, _SIZES[device], threads, samples, seed)
    return Calibration(device, threads, mm, mem, samples)


def combine(*calibrations: Calibration) -> Calibration:
    """One calibration from the probes of a run (one per round): the median of each workload's times, so that
    the machine's speed is averaged over the same stretch of time, and load, as the cases."""
    if not calibrations:
        raise ValueError("nothing to combine")
    first = calibrations[0]
    return Calibration(first.device, first.threads, statistics.median(c.matmul_s for c in calibrations),
                       statistics.median(c.memory_s for c in calibrations), sum(c.n_samples for c in calibrations))

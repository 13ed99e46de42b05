"""This machine's attainable peaks: a matrix product (FLOP/s) and a streaming add (bytes/s).

The same two fixed workloads serve the regression gate's machine calibration (``gate/calibrate.py`` times them
at its own sizes to compare machines) and the roofline (:func:`measure_peaks`, recorded with every run: achieved
FLOP/s and GB/s of a case are reported as a percentage of these). Both are *attained* peaks measured by torch on
this machine with the run's thread count, not datasheet numbers: the roofline then says how far a kernel is from
what torch itself reaches here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# (matmul n, matmul repeats, memory elements, memory repeats) for the peak measurement. The add streams three
# float32 arrays of 16 Mi elements (192 MiB per repeat), far beyond any last-level cache.
PEAK_SIZES = {"cpu": (1024, 2, 16 * 2**20, 2), "cuda": (8192, 10, 256 * 2**20, 10)}


def _timer(device: str) -> Callable[[Callable[[], object]], float]:
    import torch

    def time_cpu(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def time_cuda(fn: Callable[[], object]) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3

    return time_cuda if device == "cuda" else time_cpu


def time_workloads(device: str, sizes: tuple[int, int, int, int], threads: int = 0, samples: int = 9,
                   seed: int = 0) -> tuple[float, float]:
    """(fastest matmul sample, fastest memory sample) in seconds, the two workloads alternated ``samples`` times
    after one warm-up each. The minimum, not the median: load from other processes only adds time.

    ``threads`` > 0 sets torch's CPU threads for the measurement and restores the previous value afterwards.
    """
    import torch

    n, mm_reps, elems, mem_reps = sizes
    previous_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(n, n, generator=g).to(device)
        b = torch.randn(n, n, generator=g).to(device)
        c = torch.empty(n, n, device=device)
        x = torch.randn(elems, generator=g).to(device)
        y = torch.randn(elems, generator=g).to(device)
        z = torch.empty(elems, device=device)

        def matmul() -> None:
            for _ in range(mm_reps):
                torch.mm(a, b, out=c)

        def memory() -> None:
            for _ in range(mem_reps):
                torch.add(x, y, out=z)

        timed = _timer(device)
        timed(matmul)
        timed(memory)
        mm, mem = [], []
        for _ in range(samples):  # alternate so that a burst of load hits both workloads alike
            mm.append(timed(matmul))
            mem.append(timed(memory))
    finally:
        torch.set_num_threads(previous_threads)
    return min(mm), min(mem)


@dataclass(frozen=True)
class Peaks:
    device: str
    threads: int
    flops_per_s: float  # float32 matmul
    bytes_per_s: float  # streaming add: two reads and a write per element

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the two ceilings meet."""
        return self.flops_per_s / self.bytes_per_s

    def to_env(self) -> dict[str, str]:
        return {"peak_flops": f"{self.flops_per_s:.6g}", "peak_bandwidth": f"{self.bytes_per_s:.6g}",
                "peak_threads": str(self.threads)}


def measure_peaks(device: str = "cpu", threads: int = 0, samples: int = 3) -> Peaks:
    n, mm_reps, elems, mem_reps = sizes = PEAK_SIZES[device]
    mm_s, mem_s = time_workloads(device, sizes, threads, samples)
    return Peaks(device, threads, 2.0 * n**3 * mm_reps / mm_s, 3.0 * 4 * elems * mem_reps / mem_s)

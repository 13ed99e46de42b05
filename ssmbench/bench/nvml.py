"""NVML sampling during a CUDA case's timed samples: energy per token, power, SM clock, temperature, memory used.

A background thread polls NVML (nvidia-ml-py's ``pynvml`` module) every ``interval_s`` while the samples run.
Energy comes from the board's cumulative energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ, Volta and
newer) read before and after, falling back to integrating the sampled power over time; a GPU that reports no
power (NVML_ERROR_NOT_SUPPORTED, e.g. some virtualised or consumer boards) yields clocks and temperatures but no
energy rows. Any NVML failure (no driver, no permission, a transient error) drops the affected readings, never
the case: energy is an extra, the time is the measurement.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ssmbench.store import Metric


@dataclass
class NvmlReadings:
    seconds: float = 0.0
    energy_j: float | None = None  # from the energy counter, else integrated power
    power_w: list[float] = field(default_factory=list)
    sm_clock_mhz: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)
    memory_used_b: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def metrics(self, tokens: int) -> list[Metric]:
        """Rows for a window in which ``tokens`` tokens were processed."""
        out: list[Metric] = []
        if self.energy_j is not None and tokens > 0:
            out += [Metric("energy_per_token", "value", self.energy_j / tokens, "J/token"),
                    Metric("energy", "value", self.energy_j, "J")]
        if self.energy_j is not None and self.seconds > 0:
            out.append(Metric("power", "mean", self.energy_j / self.seconds, "W", len(self.power_w)))
        for name, values, unit, stat in (("sm_clock", self.sm_clock_mhz, "MHz", "median"),
                                         ("temperature", self.temperature_c, "C", "max"),
                                         ("nvml_memory_used", self.memory_used_b, "B", "max")):
            if values:
                value = statistics.median(values) if stat == "median" else max(values)
                out.append(Metric(name, stat, value, unit, len(values)))
        return out


def _load() -> Any | None:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class NvmlSampler:
    """``with NvmlSampler(index) as s: ...`` then ``s.readings``; inert (no readings) when NVML is unusable."""

    def __init__(self, index: int = 0, interval_s: float = 0.01) -> None:
        self.index, self.interval_s = index, interval_s
        self.readings = NvmlReadings()
        self._nvml: Any | None = None
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._power_ok = True

    def _call(self, name: str, *args: Any) -> Any | None:
        """One NVML call; an NVMLError becomes a recorded error and None."""
        nvml = self._nvml
        try:
            return getattr(nvml, name)(self._handle, *args)
        except nvml.NVMLError as exc:
            self.readings.errors.append(f"{name}: {exc}")
            if name == "nvmlDeviceGetPowerUsage":
                self._power_ok = False  # not supported on this board: stop asking
            return None

    def _energy_mj(self) -> float | None:
        return self._call("nvmlDeviceGetTotalEnergyConsumption")

    def _sample(self) -> None:
        r, nvml = self.readings, self._nvml
        if self._power_ok:
            mw = self._call("nvmlDeviceGetPowerUsage")
            if mw is not None:
                r.power_w.append(mw / 1e3)
        for values, name, args, scale in ((r.sm_clock_mhz, "nvmlDeviceGetClockInfo", (nvml.NVML_CLOCK_SM,), 1),
                                          (r.temperature_c, "nvmlDeviceGetTemperature",
                                           (nvml.NVML_TEMPERATURE_GPU,), 1)):
            v = self._call(name, *args)
            if v is not None:
                values.append(float(v) * scale)
        mem = self._call("nvmlDeviceGetMemoryInfo")
        if mem is not None:
            r.memory_used_b.append(float(mem.used))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> NvmlSampler:
        nvml = _load()
        if nvml is None:
            self.readings.errors.append("pynvml is not installed")
            return self
        try:
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(self.index)
        except nvml.NVMLError as exc:
            self.readings.errors.append(f"nvmlInit: {exc}")
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()
            return self
        self._nvml = nvml
        self._energy0 = self._energy_mj()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nvml is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        r = self.readings
        r.seconds = time.perf_counter() - self._t0
        energy1 = self._energy_mj() if self._energy0 is not None else None
        if self._energy0 is not None and energy1 is not None and energy1 >= self._energy0:
            r.energy_j = (energy1 - self._energy0) / 1e3
        elif len(r.power_w) >= 2:  # no counter: mean sampled power x the window
            r.energy_j = statistics.fmean(r.power_w) * r.seconds
        with contextlib.suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def physical_index() -> int:
    """NVML numbers GPUs physically; torch's device 0 is the first of CUDA_VISIBLE_DEVICES."""
    import os

    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    current = torch.cuda.current_device()
    if current < len(visible) and visible[current].strip().isdigit():
        return int(visible[current])
    return current

"""Was the machine busy while a case was measured? Per-case load metrics, so contended timings are flagged.

A shared machine makes timings slower without any error: another process on a core a case uses can add 50-100%
to its time. The worker wraps every case in a :class:`LoadProbe` and stores, beside the timings:

- ``load_avg`` / ``before``, ``after``: the 1-minute load average (includes this sweep's own worker);
- ``cpu_time`` / ``value``: CPU seconds the worker and its child processes used during the case (all threads;
  children include the C++ compilers and compile pools ``--compile`` starts), and ``wall_time``;
- ``other_cpu`` / ``mean``: CPU cores used by *other* processes on average during the case (from the machine's
  busy time in ``/proc/stat`` minus the worker's own CPU time, its children's included: a compiled case's compilers
  are its own work, not a neighbour's);
- ``contended`` / ``value``: 1 when other processes used at least :data:`OTHERS_MIN_CORES` cores meanwhile (for
  cases shorter than :data:`MIN_WALL_S`, too short for the kernel's 10 ms ticks: when the load average before the
  case exceeded the number of cores).

The window is the whole case in the worker (model build, warm-up and the timed samples), so a burst of load
during the case is caught even if it falls between samples. ``ssmbench report`` lists contended cases and
``ssmbench check`` says how many of its rounds were contended. Linux only for ``other_cpu``/``contended`` (other
systems record the load average and CPU time, and never flag).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

from ssmbench.store import Metric

OTHERS_MIN_CORES = 0.5  # other processes using half a core on average during a case make its timing suspect
MIN_WALL_S = 0.2  # below this /proc/stat's 10 ms ticks are too coarse to judge
CONTENDED = ("contended", "value")


def _machine_busy_s() -> float | None:
    """Seconds of CPU time all processes have used since boot (all cores), or None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait (guest is in user already)
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s() -> float:
    """CPU seconds used by this process and its descendants: its own and its reaped children's (``os.times``) plus
    every live descendant's own and reaped children's (``/proc/<pid>/stat``; a compile pool lives across cases).
    Without /proc: this process and its reaped children only."""
    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    tick = os.sysconf("SC_CLK_TCK")
    parent_of, cpu_of = {}, {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return total
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"; comm may hold spaces
        except (OSError, IndexError):
            continue  # gone meanwhile
        # fields[1] is ppid; [11..14] utime stime cutime cstime (stat fields 4 and 14-17)
        parent_of[int(entry)] = int(fields[1])
        cpu_of[int(entry)] = sum(int(v) for v in fields[11:15]) / tick
    me = os.getpid()
    for pid in cpu_of:
        ancestor = parent_of.get(pid)
        while ancestor is not None and ancestor > 1 and ancestor != me:
            ancestor = parent_of.get(ancestor)
        if ancestor == me:
            total += cpu_of[pid]
    return total


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class LoadProbe:
    """Started before a case, read after it: ``with LoadProbe() as probe: ...; probe.metrics()``."""

    def __enter__(self) -> LoadProbe:
        self.load0, self.busy0 = _load(), _machine_busy_s()
        self.cpu0, self.wall0 = _tree_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cpu1, self.wall1 = _tree_cpu_s(), time.perf_counter()
        self.load1, self.busy1 = _load(), _machine_busy_s()

    def metrics(self) -> list[Metric]:
        wall, cpu = self.wall1 - self.wall0, self.cpu1 - self.cpu0
        out = [Metric("load_avg", "before", self.load0, ""), Metric("load_avg", "after", self.load1, ""),
               Metric("cpu_time", "value", cpu, "s"), Metric("wall_time", "value", wall, "s")]
        if self.busy0 is not None and self.busy1 is not None and wall > 0:
            others = max(0.0, (self.busy1 - self.busy0 - cpu) / wall)
            out.append(Metric("other_cpu", "mean", others, "cores"))
            # a case too short for the tick counts is judged by the load average: more runnable processes than cores
            busy = others >= OTHERS_MIN_CORES if wall >= MIN_WALL_S else self.load0 > (os.cpu_count() or 1)
            out.append(Metric(*CONTENDED, float(busy), ""))
        return out


def is_contended(metrics: Iterable[Any]) -> bool:
    """True if a case's metrics (Metric objects, or rows with metric/stat/value) say it ran contended."""
    return any(m.metric == CONTENDED[0] and m.stat == CONTENDED[1] and m.value >= 1 for m in metrics)


def describe(metrics: Iterable[Any]) -> str:
    """'other processes used 1.3 cores, load 2.1 -> 3.0' from a case's metrics."""
    values = {(m.metric, m.stat): m.value for m in metrics}
    nan = float("nan")
    others, before, after = (values.get(k, nan) for k in (("other_cpu", "mean"), ("load_avg", "before"),
                                                           ("load_avg", "after")))
    return f"other processes used {others:.1f} cores, load {before:.1f} -> {after:.1f}"

import math

import pytest

import ssmbench.bench.timer as timer_mod
from ssmbench.bench.memory import measure_peak
from ssmbench.bench.timer import Timing, measure


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_measure_counts_calls_and_separates_first_call(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timer_mod, "time", clock)
    durations = iter([9.0, 0.5, 0.5, 2.0, 1.0, 3.0, 1.0, 2.0])  # first, 2 warm-up, 5 samples

    def call():
        clock.now += next(durations)

    t = measure(call, device="cpu", warmup=3, min_samples=5, budget_s=0.0)
    assert next(durations, None) is None  # first (timed apart) + 2 warm-up + 5 samples, nothing more
    assert t.first_call_s == 9.0 and t.samples == [2.0, 1.0, 3.0, 1.0, 2.0]
    assert t.median == 2.0 and t.iqr == 1.0


def test_budget_extends_sampling_up_to_max(monkeypatch):
    t = measure(lambda: None, device="cpu", warmup=1, min_samples=2, budget_s=10.0, max_samples=7)
    assert len(t.samples) == 7
    clock = Clock()
    monkeypatch.setattr(timer_mod, "time", clock)

    def one_second():
        clock.now += 1.0

    # 1 s per call, 3.5 s of budget: sampling stops at the first sample that brings the total to >= 3.5 s
    assert len(measure(one_second, device="cpu", warmup=1, min_samples=2, budget_s=3.5).samples) == 4


def test_before_each_runs_untimed_before_every_call():
    order = []
    measure(lambda: order.append("call"), device="cpu", warmup=1, min_samples=2, budget_s=0,
            before_each=lambda: order.append("prep"))
    assert order == ["prep", "call"] * 3


def test_quantiles_and_iqr():
    t = Timing(samples=[1.0, 2.0, 3.0, 4.0, 100.0], first_call_s=0.0)
    assert t.median == 3.0
    assert t.quantile(0.25) == 2.0 and t.quantile(0.75) == 4.0 and t.iqr == 2.0


def test_min_samples_validated():
    with pytest.raises(ValueError, match="min_samples must be >= 1"):
        measure(lambda: None, device="cpu", min_samples=0)


def test_cpu_peak_memory_sees_torch_tensors():
    import torch

    def allocate():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        return float(x.sum())

    peak = measure_peak(allocate, "cpu")
    if peak is None:
        pytest.skip("/proc/self/clear_refs not writable here")
    assert peak.delta_bytes >= 60 * 2**20


def test_quantile_interpolates_between_neighbours():
    """(survivors of the bench/timer.py mutation run)"""
    from ssmbench.bench.timer import quantile

    assert quantile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5  # position 1.5: halfway between 2 and 3
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.3) == pytest.approx(2.2)
    assert quantile([1.0, 2.0, 3.0], 1.0) == 3.0 and quantile([1.0, 2.0, 3.0], 0.0) == 1.0
    assert math.isnan(quantile([], 0.5))


def test_measure_defaults_and_the_single_sample_minimum(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timer_mod, "time", clock)

    def quarter():  # exact in binary: the budget is reached exactly, not by rounding
        clock.now += 0.25

    t = measure(quarter, device="cpu")  # defaults: sample while under 2 s of budget
    assert len(t.samples) == 8 and t.host_samples == []  # no host wall times on CPU
    assert len(measure(lambda: None, device="cpu").samples) == 50  # free calls: capped at max_samples
    assert len(measure(quarter, device="cpu", min_samples=1, budget_s=0.0).samples) == 1
    calls = []
    t = measure(lambda: calls.append(1), device="cpu", budget_s=0.0)  # default warm-up 2, minimum 5 samples
    assert len(calls) == 2 + 5 and len(t.samples) == 5
    with pytest.raises(ValueError, match=r"^min_samples must be >= 1$"):
        measure(quarter, device="cpu", min_samples=-1)

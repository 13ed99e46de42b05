import pytest

from ssmbench.bench.memory import measure_peak
from ssmbench.bench.timer import Timing, measure


def test_measure_counts_calls_and_separates_first_call():
    calls = []
    t = measure(lambda: calls.append(1), device="cpu", warmup=3, min_samples=5, budget_s=0.0)
    assert len(t.samples) == 5
    assert len(calls) == 3 + 5  # first (timed apart) + 2 warm-up + 5 samples
    assert t.first_call_s >= 0


def test_budget_extends_sampling_up_to_max():
    t = measure(lambda: None, device="cpu", warmup=1, min_samples=2, budget_s=10.0, max_samples=7)
    assert len(t.samples) == 7


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
    with pytest.raises(ValueError):
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

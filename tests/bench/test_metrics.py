"""Every reported metric against a hand-computed value: a fake clock and a fake /proc at the measurement boundary.

The benchmark code runs for real on tiny models; only ``time.perf_counter`` (as the timing modules see it) and the
process-status file are replaced, so each time, rate, quantile and memory row has an exact expected value.
"""

from __future__ import annotations

import pytest
import torch

import ssmbench.bench.decode as decode_mod
import ssmbench.bench.generate as generate_mod
import ssmbench.bench.memory as memory_mod
import ssmbench.bench.speed as speed_mod
import ssmbench.bench.timer as timer_mod
from ssmbench.bench.cost import case_flops
from ssmbench.bench.decode import run_decode_case, step_overhead
from ssmbench.bench.generate import generate
from ssmbench.bench.measure import build_case_model
from ssmbench.bench.speed import run_training_mode_case
from ssmbench.models import count_params, make_config
from ssmbench.models.inference import GreedyDecoder


class FakeClock:
    """``time`` as the benchmark modules use it: perf_counter only moves when :meth:`advance` is called."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    for mod in (timer_mod, decode_mod, generate_mod):
        monkeypatch.setattr(mod, "time", c)
    return c


@pytest.fixture
def fake_proc(monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A process-status file reporting 1000 kB resident before the call and a 5000 kB high-water mark."""
    status, clear = tmp_path / "status", tmp_path / "clear_refs"
    status.write_text("Name:\tpython\nVmHWM:\t    5000 kB\nVmRSS:\t    1000 kB\n")
    monkeypatch.setattr(memory_mod, "_STATUS", status)
    monkeypatch.setattr(memory_mod, "_CLEAR_REFS", clear)
    return clear


def values(result) -> dict[tuple[str, str], float]:
    return {(m.metric, m.stat): m.value for m in result.metrics}


def test_speed_case_metrics_from_a_fake_clock(tiny_case, clock, fake_proc, monkeypatch):
    """first call 7 s, one more warm-up call, then samples of 3, 1, 4, 1, 5 s."""
    durations = iter([7.0, 0.5, 3.0, 1.0, 4.0, 1.0, 5.0, 0.0])  # the last: the untimed memory pass
    real = speed_mod.make_step

    def make_step(case, model):
        step, before = real(case, model)

        def timed():
            out = step()
            clock.advance(next(durations))
            return out

        return timed, before

    monkeypatch.setattr(speed_mod, "make_step", make_step)
    case = tiny_case("mamba", batch=2, seq_len=16, warmup=2, samples=5, budget_s=0.0)
    result = run_training_mode_case(case)
    v = values(result)
    assert next(durations, None) is None  # every scripted call happened, the memory pass last
    assert v["time", "median"] == 3.0 and v["time", "min"] == 1.0
    assert v["time", "q25"] == 1.0 and v["time", "q75"] == 4.0 and v["time", "iqr"] == 3.0
    assert v["tokens_per_s", "median"] == pytest.approx(2 * 16 / 3.0)
    assert v["first_call", "value"] == 7.0
    samples = next(m.samples for m in result.metrics if (m.metric, m.stat) == ("time", "median"))
    assert list(samples) == [3.0, 1.0, 4.0, 1.0, 5.0]
    _, model, _ = build_case_model(case)
    assert v["flops", "value"] == pytest.approx(case_flops(model, 2, 16, "fwd"))
    assert v["achieved_flops", "median"] == pytest.approx(v["flops", "value"] / 3.0)
    assert v["peak_mem", "max"] == 5000 * 1024 and v["peak_mem_delta", "max"] == 4000 * 1024
    assert fake_proc.read_text() == "5"  # the high-water mark was reset before the measured call
    assert v["params", "value"] == sum(p.numel() for p in model.parameters())


def test_fwdbwd_flops_are_three_forwards_in_the_case_rows(tiny_case, clock, monkeypatch):
    real = speed_mod.make_step

    def make_step(case, model):
        step, before = real(case, model)
        return (lambda: (step(), clock.advance(2.0))), before

    monkeypatch.setattr(speed_mod, "make_step", make_step)
    v = values(run_training_mode_case(tiny_case("mamba", mode="fwdbwd", samples=3)))
    fwd = values(run_training_mode_case(tiny_case("mamba", mode="fwd", samples=3)))
    assert v["flops", "value"] == pytest.approx(3 * fwd["flops", "value"])
    assert v["achieved_flops", "median"] == pytest.approx(3 * fwd["flops", "value"] / 2.0)


def test_cpu_peak_is_the_high_water_mark_minus_what_was_resident(fake_proc):
    peak = memory_mod.measure_peak(lambda: None, "cpu")
    assert (peak.peak_bytes, peak.delta_bytes) == (5000 * 1024, 4000 * 1024)


def scripted_decode(monkeypatch, clock, step_s, prefill_s: float = 0.25) -> None:
    """Each decode step takes step_s(i) seconds (i counts steps), each prefill prefill_s."""
    real_step, real_prefill = GreedyDecoder.step, decode_mod.prefill
    calls = []

    def step(self):
        real_step(self)
        clock.advance(step_s(len(calls)))
        calls.append(1)

    def prefill(*a, **kw):
        out = real_prefill(*a, **kw)
        clock.advance(prefill_s)
        return out

    monkeypatch.setattr(GreedyDecoder, "step", step)
    monkeypatch.setattr(decode_mod, "prefill", prefill)
    monkeypatch.setattr(generate_mod, "prefill", prefill)


def test_decode_case_ttft_percentiles_and_batch_tokens_per_s(tiny_case, clock, monkeypatch):
    """11 tokens per round, step i of a round taking (i + 1)·10 ms; one warm-up round, one timed round."""
    k = 11
    scripted_decode(monkeypatch, clock, lambda i: 0.01 * (1 + i % k))
    case = tiny_case("mamba", mode="decode", batch=3, seq_len=8, n_layers=2, warmup=1, samples=1,
                     options=(("decode_tokens", k),))
    result = run_decode_case(case)
    assert result.status == "ok", result.error
    v = values(result)
    assert v["ttft", "value"] == pytest.approx(0.25)  # the timed prefill only, not the warm-up one
    # latencies 10..110 ms: p50 = 60 ms, p90 at rank 9 = 100 ms, p99 at rank 9.9 = 109 ms
    assert v["token_latency", "p50"] == pytest.approx(0.06)
    assert v["token_latency", "p90"] == pytest.approx(0.10)
    assert v["token_latency", "p99"] == pytest.approx(0.109)
    assert v["time", "median"] == pytest.approx(0.06)
    wall = 0.01 * sum(range(1, k + 1))  # 0.66 s for a round
    assert v["tokens_per_s", "median"] == pytest.approx(3 * k / wall)  # batch x tokens / wall time
    # state at context 8: per layer conv (d_inner x d_conv) + SSM (d_inner x d_state) float32 values, batch 3
    assert v["state_bytes", "value"] == 2 * 3 * 64 * (4 + 16) * 4


def test_generate_ttft_latency_and_tokens_per_s(clock, monkeypatch):
    scripted_decode(monkeypatch, clock, lambda i: 0.02, prefill_s=0.5)
    torch.manual_seed(0)
    model = make_config("mamba", d_model=32, n_layers=1, vocab_size=16).build()
    res = generate(model, torch.zeros(2, 5, dtype=torch.long), 6)
    assert res.ttft_s == pytest.approx(0.5)
    assert res.token_latencies_s == pytest.approx([0.02] * 5)
    assert res.latency_quantile(0.5) == pytest.approx(0.02)
    assert res.tokens_per_s == pytest.approx(2 * 5 / 0.1)  # batch x decoded tokens / decode wall time


def test_step_overhead_fraction_from_a_fake_clock(clock):
    """Every matmul-class op costs 4 ms, the rest of a step 6 ms: overhead = 1 − 9·4 / (9·4 + 6)."""
    from torch.overrides import TorchFunctionMode

    class Cost(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in decode_mod.MATMUL_OPS:
                clock.advance(0.004)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    # the PyTorch step (backend "chunked"): the fused C++ step would hide its matmuls from the recorder
    model = make_config("mamba", backend="chunked", d_model=32, n_layers=2, vocab_size=16).build().eval()

    class Decoder:
        def step(self):
            clock.advance(0.006)
            model.step(torch.zeros(1, dtype=torch.long), cache)

    with torch.inference_mode():
        cache = model.allocate_inference_cache(1, 64)
        with Cost():
            fraction, matmul_s, step_s, n_ops = step_overhead(Decoder(), lambda: None, repeats=3)
    assert n_ops == 2 * 4 + 1  # in_proj, x_proj, dt_proj, out_proj per layer, then the LM head
    assert matmul_s == pytest.approx(0.036) and step_s == pytest.approx(0.042)
    assert fraction == pytest.approx(1 - 0.036 / 0.042)


def test_match_params_sizes_each_family_to_the_transformer(tiny_case):
    """--match-params: the family's d_model is the multiple of 16 whose parameter count is nearest the transformer's
    at the requested width (here d_model 64 x 2 layers)."""
    target = count_params(make_config("transformer", d_model=64, n_layers=2, vocab_size=32))
    for family in ("mamba", "s4"):
        _, model, info = build_case_model(tiny_case(family, d_model=64, n_layers=2, match_params=True))
        gaps = {d: abs(count_params(make_config(family, d_model=d, n_layers=2, vocab_size=32)) - target)
                for d in range(16, 8 * 64 + 1, 16)}
        assert info["d_model"] == min(gaps, key=gaps.get) != 64
        assert info["params"] == model.num_params() == count_params(
            make_config(family, d_model=info["d_model"], n_layers=2, vocab_size=32))
        assert abs(info["params"] - target) < 0.1 * target
        _, _, plain = build_case_model(tiny_case(family, d_model=64, n_layers=2))
        assert plain["d_model"] == 64
    _, _, t = build_case_model(tiny_case("transformer", d_model=64, n_layers=2, match_params=True))
    assert t["d_model"] == 64 and t["params"] == target

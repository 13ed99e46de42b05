"""The analytic peak-memory estimate: its structure per family and mode, and against measured peaks."""

import pytest
import torch

from ssmbench.bench.memory_model import Poly, case_estimate_metrics, estimate
from ssmbench.case import Case
from ssmbench.engine.worker import execute
from ssmbench.models import make_config


def _model(name, backend="auto", d_model=64):
    with torch.device("meta"):
        return make_config(name, backend=backend, d_model=d_model, n_layers=2).build()


def test_poly_arithmetic():
    p = Poly(1, 2, 3, 4, 5)
    assert p.at(2, 10) == 1 + 2 * 2 + 3 * 20 + 4 * 10 + 5 * 2 * 100
    assert (p + p).at(1, 1) == 2 * p.at(1, 1) and p.scale(4).per_token == 12
    assert p.max(Poly(per_token=9)).per_token == 9 and p.max(Poly(per_token=9)).const == 1


def test_attention_is_quadratic_only_on_backends_that_materialise_scores():
    math_ = estimate(_model("transformer", "math"), "fwd", torch.float32, 1024)
    fused = estimate(_model("transformer", "sdpa"), "fwd", torch.float32, 1024)
    assert math_.per_token_len > 0 and fused.per_token_len == 0
    assert estimate(_model("mamba"), "fwd", torch.float32, 1024).per_token_len == 0


def test_training_keeps_more_than_inference_and_decode_holds_its_cache():
    for name in ("transformer", "mamba", "mamba2", "s4", "hybrid"):
        m = _model(name)
        fwd, bwd = (estimate(m, mode, torch.float32, 2048).at(2, 2048) for mode in ("fwd", "fwdbwd"))
        assert bwd > 2 * fwd, name
        assert estimate(m, "fwdbwd", torch.float32, 2048).const > 0  # one gradient per parameter
    kv = estimate(_model("transformer"), "decode", torch.float32, 1024, decode_tokens=32)
    ssm = estimate(_model("mamba"), "decode", torch.float32, 1024, decode_tokens=32)
    # the KV cache (2·d_model per token per layer, float32) grows with L; Mamba's state is per sequence
    assert kv.per_token - estimate(_model("transformer"), "fwd", torch.float32, 1024).per_token == 2 * 2 * 64 * 4
    assert ssm.per_token == estimate(_model("mamba"), "fwd", torch.float32, 1024).per_token and ssm.per_seq > 0


def test_a_failed_case_still_gets_an_estimate_without_allocating():
    case = Case(kind="speed", model="transformer", backend="math", mode="fwd", device="cpu", dtype="float32",
                batch=1, seq_len=2**20, d_model=256, n_layers=2)
    metrics = {(m.metric, m.stat): m.value for m in case_estimate_metrics(case)}
    assert metrics["peak_mem_est", "value"] > 2**40  # 4 heads x (2^20)^2 scores: terabytes, on the meta device
    assert metrics["param_bytes", "value"] > 0 and ("peak_mem_est", "per_token_len") in metrics


@pytest.mark.parametrize("model, backend, mode", [("transformer", "math", "fwd"), ("transformer", "math", "fwdbwd"),
                                                  ("mamba", "auto", "fwd"), ("s4", "auto", "fwd")])
def test_estimate_is_within_2x_of_the_measured_peak(model, backend, mode):
    case = Case(kind="speed", model=model, backend=backend, mode=mode, device="cpu", dtype="float32", batch=1,
                seq_len=2048, d_model=128, n_layers=2, warmup=1, samples=1, budget_s=0.0, threads=1)
    result, _ = execute(case)
    m = {(x.metric, x.stat): x.value for x in result.metrics}
    if ("peak_mem_delta", "max") not in m:
        pytest.skip("this kernel does not let the process reset its RSS high-water mark")
    assert 0.5 < m["peak_mem_est", "value"] / m["peak_mem_delta", "max"] < 2.0

"""Peaks and the analytic bytes moved: the roofline's inputs."""

import pytest
import torch

from ssmbench.bench.cost import case_bytes, forward_bytes
from ssmbench.bench.peaks import Peaks, time_workloads
from ssmbench.models import make_config


def test_workloads_time_both_and_restore_threads():
    before = torch.get_num_threads()
    mm, mem = time_workloads("cpu", (64, 1, 2**16, 1), threads=1, samples=2)
    assert mm > 0 and mem > 0 and torch.get_num_threads() == before
    p = Peaks("cpu", 1, 2e10, 1e10)
    assert p.ridge == 2 and p.to_env()["peak_flops"] == "2e+10"


def _model(name, backend="auto"):
    with torch.device("meta"):
        return make_config(name, backend=backend, d_model=64, n_layers=1, vocab_size=32).build()


def test_bytes_count_weights_inputs_outputs():
    m = _model("mamba")
    linear = sum(x.in_features * x.out_features for x in m.modules() if isinstance(x, torch.nn.Linear))
    # more tokens: weights are read once, activations scale with the tokens
    one, two = forward_bytes(m, 1, 512), forward_bytes(m, 2, 512)
    assert two - one == pytest.approx(one - 4 * linear)
    assert case_bytes(m, 1, 512, "fwdbwd") == 3 * case_bytes(m, 1, 512, "fwd")
    assert forward_bytes(m, 1, 512, element_size=8) == 2 * one


def test_math_attention_moves_its_scores():
    fused, math_ = _model("transformer", "sdpa"), _model("transformer", "math")
    extra = forward_bytes(math_, 1, 1024) - forward_bytes(fused, 1, 1024)
    heads = fused.blocks[0].mixer.n_heads
    assert extra == pytest.approx(4 * 4.0 * heads * 1024**2)

import math

import pytest

from ssmbench.bench.cost import case_flops, forward_flops
from ssmbench.models import make_config


def _build(name, **kw):
    return make_config(name, d_model=64, n_layers=2, vocab_size=32, **kw).build()


def test_transformer_flops_by_hand():
    b, L, d, V = 3, 50, 64, 32
    model = _build("transformer")
    per_layer_linear = 2 * b * L * (3 * d * d + d * d + 2 * 4 * d * d)  # qkv, out, MLP 4x
    attention = 2 * b * L * L * d
    head = 2 * b * L * d * V
    assert forward_flops(model, b, L) == pytest.approx(2 * (per_layer_linear + attention) + head)


def test_attention_term_is_quadratic_and_scan_term_linear():
    t, m = _build("transformer"), _build("mamba")
    linear_t = forward_flops(t, 1, 1000) - forward_flops(t, 2, 500)  # same tokens: only attention differs
    assert linear_t == pytest.approx(2 * 2 * (1000**2 - 2 * 500**2) * 64)
    assert forward_flops(m, 1, 1000) == pytest.approx(forward_flops(m, 2, 500))


def test_mamba_scan_term():
    model = _build("mamba")
    linear_only = sum(2 * 4 * 10 * mod.in_features * mod.out_features
                      for mod in model.modules() if mod.__class__.__name__ == "Linear")
    scan = 2 * 9 * 4 * 128 * 10 * 16  # layers x 9 x b x d_inner x L x N
    assert forward_flops(model, 4, 10) == pytest.approx(linear_only + scan)


B, L = 3, 40
T = B * L  # tokens


def test_mamba2_flops_by_hand():
    """Linear layers + the SSD term 2·L·Q·N·G + 2·L·Q·P·H + 4·L·N·P·H per sequence and layer."""
    model = _build("mamba2", options={"d_state": 16, "headdim": 32, "ngroups": 2, "chunk_size": 16})
    # d_inner 128, H = 128 / 32 = 4 heads, in_proj 64 -> z 128 + xBC (128 + 2·2·16) + dt 4 = 324
    linear = 2 * 2 * T * (64 * 324 + 128 * 64) + 2 * T * 64 * 32
    ssd = 2 * B * (2 * L * 16 * 16 * 2 + 2 * L * 16 * 32 * 4 + 4 * L * 16 * 32 * 4)
    assert forward_flops(model, B, L) == pytest.approx(linear + ssd, rel=1e-12)


def test_hybrid_flops_by_hand():
    """2 layers: a Mamba-2 layer (1 group), then attention (4 heads of 16) followed by its 4x MLP."""
    model = _build("hybrid", options={"d_state": 16, "headdim": 32, "chunk_size": 16, "attn_head_dim": 16})
    linear = 2 * T * (64 * 292 + 128 * 64 + 64 * 192 + 64 * 64 + 64 * 256 + 256 * 64 + 64 * 32)
    ssd = B * (2 * L * 16 * 16 * 1 + 2 * L * 16 * 32 * 4 + 4 * L * 16 * 32 * 4)
    attention = 2 * B * L * L * 64
    assert forward_flops(model, B, L) == pytest.approx(linear + ssd + attention, rel=1e-12)


@pytest.mark.parametrize(("name", "per_pair"), [("s4", 8), ("s4-dplr", 16)])
def test_s4_flops_by_hand(name, per_pair):
    """FFT convolution (u and y FFTs per sequence, the kernel's once, the pointwise product) + kernel generation."""
    model = _build(name, options={"d_state": 8})
    n_fft = 2 * L
    fft = 2.5 * n_fft * math.log2(n_fft)
    conv = B * 64 * (2 * fft + 6 * n_fft) + 64 * fft
    kernel = per_pair * 64 * (8 // 2) * L
    linear = 2 * 2 * T * 64 * 128 + 2 * T * 64 * 32  # out_proj (GLU, 64 -> 128) per layer, head
    assert forward_flops(model, B, L) == pytest.approx(linear + 2 * (conv + kernel), rel=1e-12)


def test_fwdbwd_is_three_forwards():
    model = _build("mamba")
    assert case_flops(model, 2, 16, "fwdbwd") == pytest.approx(3 * case_flops(model, 2, 16, "fwd"))


def test_edge_cases_of_the_mixing_terms():
    """(survivors of the bench/cost.py mutation run)"""
    from torch import nn

    # no chunk size: the SSD term uses Q = 64 (or L when shorter)
    model = _build("mamba2", options={"d_state": 16, "headdim": 32, "ngroups": 2, "chunk_size": None})
    linear = 2 * 2 * 100 * (64 * 324 + 128 * 64) + 2 * 100 * 64 * 32
    ssd = 2 * (2 * 100 * 64 * 16 * 2 + 2 * 100 * 64 * 32 * 4 + 4 * 100 * 16 * 32 * 4)
    assert forward_flops(model, 1, 100) == pytest.approx(linear + ssd, rel=1e-12)
    # L = 1: FFTs of length 2 cost 2.5 * 2 * log2(2) each
    s4 = _build("s4", options={"d_state": 8})
    conv = 64 * (2 * 5.0 + 6 * 2) + 64 * 5.0
    linear = 2 * 2 * 64 * 128 + 2 * 64 * 32
    assert forward_flops(s4, 1, 1) == pytest.approx(linear + 2 * (conv + 8 * 64 * 4 * 1), rel=1e-12)
    # a model without blocks has only its Linear layers
    assert forward_flops(nn.Sequential(nn.Linear(4, 8)), 2, 3) == 2 * 6 * 4 * 8

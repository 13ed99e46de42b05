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


@pytest.mark.parametrize("name", ["mamba2", "s4", "s4-dplr", "hybrid"])
def test_every_family_has_a_mixing_term(name):
    model = _build(name)
    linear_only = sum(2 * 64 * mod.in_features * mod.out_features
                      for mod in model.modules() if mod.__class__.__name__ == "Linear")
    assert forward_flops(model, 1, 64) > linear_only


def test_fwdbwd_is_three_forwards():
    model = _build("mamba")
    assert case_flops(model, 2, 16, "fwdbwd") == pytest.approx(3 * case_flops(model, 2, 16, "fwd"))

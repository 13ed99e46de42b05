"""S4D and S4-DPLR models: decode == parallel forward, causality, backends agree, training reduces the loss."""

from __future__ import annotations

import copy

import pytest
import torch

from ssmbench.models.s4 import S4Config, S4DPLRConfig, S4Layer
from ssmbench.registry import MODELS

CONFIGS = {
    "s4d-lin": S4Config(d_model=8, n_layers=2, vocab_size=11, d_state=8, init="lin"),
    "s4d-inv": S4Config(d_model=8, n_layers=2, vocab_size=11, d_state=8, init="inv"),
    "s4-dplr": S4DPLRConfig(d_model=8, n_layers=2, vocab_size=11, d_state=8),
    "s4-dplr-n64": S4DPLRConfig(d_model=4, n_layers=1, vocab_size=11, d_state=64),
}
IDS = list(CONFIGS)


def build(name: str, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = CONFIGS[name]
    if overrides:
        cfg = type(cfg)(**{**cfg.__dict__, **overrides})
    return cfg.build().to(dtype)


@pytest.mark.parametrize("name", IDS)
def test_decode_equals_forward_float64(name: str) -> None:
    model = build(name, dtype=torch.float64).eval()
    tokens = torch.randint(0, 11, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        parallel = model(tokens)
        cache = model.allocate_inference_cache(2, 13)
        steps = torch.stack([model.step(tokens[:, t], cache) for t in range(13)], dim=1)
    assert parallel.dtype == torch.float64
    torch.testing.assert_close(steps, parallel, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", IDS)
def test_state_size_is_d_state(name: str) -> None:
    cfg = CONFIGS[name]
    model = cfg.build()
    cache = model.allocate_inference_cache(3, 16, torch.float32)
    for layer_cache in cache:
        state = layer_cache["state"]
        real_numbers = state.numel() * (2 if state.is_complex() else 1)
        assert real_numbers == 3 * cfg.d_model * cfg.d_state
    assert cfg.state_dim == cfg.d_state


@pytest.mark.parametrize("name", IDS)
def test_causal(name: str) -> None:
    """Logits at t do not depend on tokens after t (float32, FFT rounding only)."""
    model = build(name).eval()
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, 11, (2, 40), generator=g)
    changed = tokens.clone()
    changed[:, 25:] = torch.randint(0, 11, (2, 15), generator=g)
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(b[:, :25], a[:, :25], rtol=0, atol=1e-5)
    assert (b[:, 25:] - a[:, 25:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["s4d-inv", "s4-dplr"])
def test_reference_backends_agree_float64(name: str) -> None:
    """The model through (reference kernel, direct conv) == through the fast backends, values and gradients."""
    tokens = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for overrides in ({}, {"backend": "reference", "conv_backend": "direct"}):
        model = build(name, seed=4, dtype=torch.float64, **overrides)
        out = model(tokens)
        out.square().mean().backward()
        outs.append(out)
        grads.append([p.grad for p in model.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-11)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("name", ["s4d-lin", "s4-dplr"])
def test_trains_on_fixed_batch(name: str, fit_fixed_batch) -> None:
    model = build(name, seed=5, d_model=16)
    g = torch.Generator().manual_seed(6)
    tokens = torch.randint(0, 11, (4, 24), generator=g)
    losses = fit_fixed_batch(model, tokens)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.85 * losses[0], losses
    layer = model.blocks[0].mixer
    for param in (layer.log_dt, layer.A_imag, layer.C, layer.D):  # the SSM itself learns, not just the embedding
        assert param.grad is not None and param.grad.abs().max() > 0


@pytest.mark.parametrize("mode", ["dplr", "diag"])
def test_layer_bf16_forward_and_step(mode: str) -> None:
    """bf16 forward and every decode step against the same weights in float64: within a few bf16 ulps of the
    outputs (|y| < 1 here; measured max error 0.004, one ulp at 0.6)."""
    torch.manual_seed(0)
    layer = S4Layer(8, d_state=8, mode=mode).to(torch.bfloat16)
    x = torch.randn(2, 10, 8, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y.float()).all()
    want = copy.deepcopy(layer).double()(x.double())
    torch.testing.assert_close(y.double(), want, rtol=1e-2, atol=1e-2)
    cache = layer.allocate_inference_cache(2, 10, torch.bfloat16)
    assert cache["state"].dtype in (torch.float32, torch.complex64)  # single precision under bf16 weights
    steps = torch.stack([layer.step(x[:, t], cache) for t in range(10)], dim=1)
    torch.testing.assert_close(steps.double(), want, rtol=1e-2, atol=1e-2)


def test_ssm_params_marked_for_no_weight_decay() -> None:
    layer = S4Layer(4, d_state=4, mode="dplr")
    marked = {n for n, p in layer.named_parameters() if getattr(p, "_optim", None)}
    assert marked == {"log_dt", "A_log_real", "A_imag", "P", "B"}
    assert all(p._optim["weight_decay"] == 0.0 for n, p in layer.named_parameters() if n in marked)


def test_dplr_step_requires_allocated_cache() -> None:
    layer = S4Layer(4, d_state=4, mode="dplr")
    with pytest.raises(RuntimeError, match="allocate_inference_cache"):
        layer.step(torch.randn(1, 4), {"state": torch.zeros(1, 4, 4)})


def test_registry_entries() -> None:
    assert MODELS.load("s4d") is S4Config and MODELS.load("s4") is S4Config
    for alias in ("s4-dplr", "s4dplr", "dplr"):
        assert MODELS.load(alias) is S4DPLRConfig
    assert MODELS.get("s4").ops == ("s4_kernel",) == MODELS.get("dplr").ops
    assert S4Config().d_state == 64 and S4DPLRConfig().d_state == 64


@pytest.mark.parametrize("cls,kwargs,match", [
    (S4Config, {"d_state": 7}, "must be even"),
    (S4Config, {"init": "legs"}, "unknown S4D init"),
    (S4DPLRConfig, {"dt_min": 0.2, "dt_max": 0.1}, "dt_min <= dt_max"),
    (S4Config, {"backend": "cauchy"}, "other S4 variant"),
    (S4DPLRConfig, {"backend": "vandermonde"}, "other S4 variant"),
], ids=["odd-state", "bad-init", "bad-dt", "s4d-cauchy", "dplr-vandermonde"])
def test_config_validation(cls: type, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_dplr_length_change_keeps_the_system() -> None:
    """C̃ is converted on length change (S4's doubling): a layer first run at 16 then at 40 (ℓ doubles to 64) gives
    the outputs of a fresh copy run at 40 directly, a shorter input reuses ℓ, and decode still equals forward."""
    torch.manual_seed(0)
    layer = S4Layer(6, d_state=10, mode="dplr").double()
    fresh = copy.deepcopy(layer)
    x = torch.randn(2, 40, 6, dtype=torch.float64)
    with torch.no_grad():
        layer(x[:, :16])
        assert layer._l_kernel == 16 and int(layer.l_kernel) == 16
        y = layer(x)
        assert layer._l_kernel == 64
        torch.testing.assert_close(y, fresh(x), rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(layer(x[:, :9]), y[:, :9], rtol=1e-9, atol=1e-11)
        assert layer._l_kernel == 64
        cache = layer.allocate_inference_cache(2, 40, torch.float64)
        steps = torch.stack([layer.step(x[:, t], cache) for t in range(40)], dim=1)
    torch.testing.assert_close(steps, y, rtol=1e-9, atol=1e-10)
    loaded = S4Layer(6, d_state=10, mode="dplr").double()
    loaded.load_state_dict(layer.state_dict())
    assert loaded._l_kernel == 64
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("prompt_len", [1, 4, 5, 11, 12, 70])
@pytest.mark.parametrize("name", IDS)
def test_chunked_prefill_state_equals_the_recurrence_float64(name: str, prompt_len: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The prefill's chunked state (Krylov block + Ā^c per chunk) equals running the step token by token, for
    prompts shorter than a chunk, exactly one, one and a bit, several with a partial first chunk (chunks shrunk
    to 4 tokens so small prompts cross many), and the default chunk size at 70 tokens."""
    import ssmbench.models.s4 as s4_module

    if prompt_len != 70:
        monkeypatch.setattr(s4_module, "PREFILL_CHUNK", 4)
    layer = build(name, dtype=torch.float64).eval().blocks[0].mixer
    x = torch.randn(2, prompt_len, layer.d_model, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = layer.allocate_inference_cache(2, prompt_len, torch.float64)
        y = layer.prefill(x, cache)
        loop = layer.allocate_inference_cache(2, prompt_len, torch.float64)
        steps = torch.stack([layer.step(x[:, t], loop) for t in range(prompt_len)], dim=1)
    torch.testing.assert_close(cache["state"], loop["state"], rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(y, steps, rtol=1e-9, atol=1e-10)

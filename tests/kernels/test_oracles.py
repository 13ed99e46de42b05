"""The oracles checked against formulas written out here, element by element, sharing no code with ssmbench.

Every fast path is tested against a reference (``ssd_ref``, ``causal_conv1d_ref``, ``fft_conv_direct``, ...). Where
a reference shares a helper with the path it checks (the SSD skip/gate and dt helpers are used by the reference,
the chunked, minimal and compiled paths alike; the S4 convolutions share their skip term), a bug in that helper
would make both agree. These tests pin each reference, and each shared helper, to a scalar-loop formula.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssmbench.kernels.conv import causal_conv1d_ref, causal_conv1d_step, causal_conv1d_torch
from ssmbench.kernels.mamba1._common import gate, prepare_delta
from ssmbench.kernels.mamba1.reference import selective_scan_ref
from ssmbench.kernels.mamba2.reference import apply_skip_and_gate, process_dt, ssd_ref
from ssmbench.kernels.s4.fftconv import fft_conv_direct, fft_conv_fft

TIGHT = {"rtol": 1e-10, "atol": 1e-12}


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def silu(v: float) -> float:
    return v / (1.0 + math.exp(-v))


# ---- Mamba-2 SSD -------------------------------------------------------------------------------------------------
def ssd_by_hand(x, dt, A, B, C, D, z, dt_bias, softplus_dt, init) -> tuple[torch.Tensor, torch.Tensor]:
    """H_t = exp(dt·A_h) H_{t-1} + dt x_t B_tᵀ;  y_t = H_t C_t + D ⊙ x_t, then ⊙ silu(z), one scalar at a time."""
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    y = torch.zeros(b, length, h, p, dtype=torch.float64)
    final = torch.zeros(b, h, p, n, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            gi = hi // (h // g)
            H = [[float(init[bi, hi, i, j]) if init is not None else 0.0 for j in range(n)] for i in range(p)]
            for t in range(length):
                d = float(dt[bi, t, hi]) + (float(dt_bias[hi]) if dt_bias is not None else 0.0)
                d = softplus(d) if softplus_dt else d
                decay = math.exp(d * float(A[hi]))
                for i in range(p):
                    xi = float(x[bi, t, hi, i])
                    acc = 0.0
                    for j in range(n):
                        H[i][j] = decay * H[i][j] + d * xi * float(B[bi, t, gi, j])
                        acc += H[i][j] * float(C[bi, t, gi, j])
                    if D is not None:
                        acc += (float(D[hi]) if D.dim() == 1 else float(D[hi, i])) * xi
                    if z is not None:
                        acc *= silu(float(z[bi, t, hi, i]))
                    y[bi, t, hi, i] = acc
            final[bi, hi] = torch.tensor(H, dtype=torch.float64)
    return y, final


@pytest.mark.parametrize("d_shape", ["h", "hp"])
def test_ssd_reference_matches_the_recurrence_written_out(d_shape: str) -> None:
    gen = torch.Generator().manual_seed(3)
    b, length, h, p, g, n = 2, 5, 4, 3, 2, 3
    args = dict(x=randn(gen, b, length, h, p), dt=randn(gen, b, length, h) - 1,
                A=-torch.exp(torch.rand(h, generator=gen, dtype=torch.float64)),
                B=randn(gen, b, length, g, n), C=randn(gen, b, length, g, n),
                D=randn(gen, h) if d_shape == "h" else randn(gen, h, p), z=randn(gen, b, length, h, p),
                dt_bias=0.5 * randn(gen, h), initial_states=randn(gen, b, h, p, n))
    y, final = ssd_ref(**args, chunk_size=4, dt_softplus=True, return_final_states=True)
    want_y, want_final = ssd_by_hand(args["x"], args["dt"], args["A"], args["B"], args["C"], args["D"], args["z"],
                                     args["dt_bias"], True, args["initial_states"])
    torch.testing.assert_close(y, want_y, **TIGHT)
    torch.testing.assert_close(final, want_final, **TIGHT)
    # without the optional parts: plain recurrence, raw dt
    plain = {k: args[k] for k in ("x", "B", "C", "A")}
    dt = torch.rand(b, length, h, generator=gen, dtype=torch.float64)
    y = ssd_ref(**plain, dt=dt, chunk_size=4)
    want_y = ssd_by_hand(args["x"], dt, args["A"], args["B"], args["C"], None, None, None, False, None)[0]
    torch.testing.assert_close(y, want_y, **TIGHT)


def test_ssd_skip_and_gate_helper_is_y_plus_D_x_times_silu_z() -> None:
    """The helper every SSD backend shares, against its formula for D of shape (h,) and (h, p)."""
    gen = torch.Generator().manual_seed(4)
    y, x, z = randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 4, 5), randn(gen, 2, 3, 4, 5)
    for D in (randn(gen, 4), randn(gen, 4, 5)):
        got = apply_skip_and_gate(y, x, D, z)
        want = torch.empty_like(y)
        for idx in torch.cartesian_prod(*(torch.arange(s) for s in y.shape)).tolist():
            a, t, hh, i = idx
            d = float(D[hh]) if D.dim() == 1 else float(D[hh, i])
            want[a, t, hh, i] = (float(y[a, t, hh, i]) + d * float(x[a, t, hh, i])) * silu(float(z[a, t, hh, i]))
        torch.testing.assert_close(got, want, **TIGHT)
    torch.testing.assert_close(apply_skip_and_gate(y, x, None, None), y, rtol=0, atol=0)


def test_ssd_dt_helper_is_softplus_of_dt_plus_bias() -> None:
    gen = torch.Generator().manual_seed(5)
    dt, bias = randn(gen, 2, 3, 4), randn(gen, 4)
    got = process_dt(dt, bias, True, torch.float64)
    want = torch.tensor([[[softplus(float(dt[a, t, h]) + float(bias[h])) for h in range(4)] for t in range(3)]
                         for a in range(2)], dtype=torch.float64)
    torch.testing.assert_close(got, want, **TIGHT)
    torch.testing.assert_close(process_dt(dt, None, False, torch.float64), dt, rtol=0, atol=0)


# ---- Mamba-1 helpers shared by the chunked path --------------------------------------------------------------------
def test_mamba1_gate_and_delta_helpers_against_their_formulas() -> None:
    gen = torch.Generator().manual_seed(6)
    y, u, z, D, delta, bias = (randn(gen, 2, 3, 4), randn(gen, 2, 3, 4), randn(gen, 2, 3, 4), randn(gen, 3),
                               randn(gen, 2, 3, 4), randn(gen, 3))
    got_gate, got_delta = gate(y, u, D, z), prepare_delta(delta, bias, True)
    for a in range(2):
        for c in range(3):
            for t in range(4):
                want = (float(y[a, c, t]) + float(D[c]) * float(u[a, c, t])) * silu(float(z[a, c, t]))
                assert float(got_gate[a, c, t]) == pytest.approx(want, rel=1e-12, abs=1e-12)
                assert float(got_delta[a, c, t]) == pytest.approx(softplus(float(delta[a, c, t]) + float(bias[c])),
                                                                  rel=1e-12)


def test_selective_scan_reference_matches_the_recurrence_written_out() -> None:
    gen = torch.Generator().manual_seed(7)
    b, d, length, n = 1, 2, 4, 3
    u, delta, z = randn(gen, b, d, length), randn(gen, b, d, length), randn(gen, b, d, length)
    A, B, C = -torch.rand(d, n, generator=gen, dtype=torch.float64), randn(gen, b, n, length), randn(gen, b, n, length)
    D, bias = randn(gen, d), randn(gen, d)
    y, last = selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                 return_last_state=True)
    for c in range(d):
        state = [0.0] * n
        for t in range(length):
            dl = softplus(float(delta[0, c, t]) + float(bias[c]))
            state = [math.exp(dl * float(A[c, j])) * state[j] + dl * float(u[0, c, t]) * float(B[0, j, t])
                     for j in range(n)]
            out = sum(state[j] * float(C[0, j, t]) for j in range(n)) + float(D[c]) * float(u[0, c, t])
            assert float(y[0, c, t]) == pytest.approx(out * silu(float(z[0, c, t])), rel=1e-12, abs=1e-12)
        assert last[0, c].tolist() == pytest.approx(state, rel=1e-12, abs=1e-12)


# ---- causal convolutions -----------------------------------------------------------------------------------------
def causal_conv_by_hand(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y[t] = Σ_k w[k] · x[t − (W − 1) + k] over the taps that land at t' ≥ 0 (+ bias): y_t sees x_t, never x_{t+1}."""
    b, d, length = x.shape
    width = w.shape[1]
    y = torch.zeros_like(x)
    for a in range(b):
        for c in range(d):
            for t in range(length):
                acc = float(bias[c]) if bias is not None else 0.0
                for k in range(width):
                    src = t - (width - 1) + k
                    if src >= 0:
                        acc += float(w[c, k]) * float(x[a, c, src])
                y[a, c, t] = acc
    return y


@pytest.mark.parametrize("fn", [causal_conv1d_ref, causal_conv1d_torch], ids=["reference", "torch"])
def test_causal_conv_matches_the_sum_written_out(fn) -> None:
    gen = torch.Generator().manual_seed(8)
    x, w, bias = randn(gen, 2, 3, 7), randn(gen, 3, 4), randn(gen, 3)
    torch.testing.assert_close(fn(x, w, bias), causal_conv_by_hand(x, w, bias), **TIGHT)
    torch.testing.assert_close(fn(x, w), causal_conv_by_hand(x, w, None), **TIGHT)
    silu_y = causal_conv_by_hand(x, w, bias)
    torch.testing.assert_close(fn(x, w, bias, activation="silu"), silu_y * torch.sigmoid(silu_y), **TIGHT)


def test_causal_conv_step_reproduces_the_sum_one_token_at_a_time() -> None:
    gen = torch.Generator().manual_seed(9)
    x, w, bias = randn(gen, 2, 3, 6), randn(gen, 3, 4), randn(gen, 3)
    state = torch.zeros(2, 3, 4, dtype=torch.float64)
    steps = torch.stack([causal_conv1d_step(x[..., t], state, w, bias) for t in range(6)], dim=-1)
    torch.testing.assert_close(steps, causal_conv_by_hand(x, w, bias), **TIGHT)


@pytest.mark.parametrize("fn", [fft_conv_direct, fft_conv_fft], ids=["direct", "fft"])
def test_s4_long_convolution_matches_the_sum_written_out(fn) -> None:
    """y_t = Σ_{s ≤ t} K_s u_{t−s} + D u_t, for a kernel shorter than the input (zero beyond its end)."""
    gen = torch.Generator().manual_seed(10)
    u, k, D = randn(gen, 2, 3, 6), randn(gen, 3, 4), randn(gen, 3)
    want = torch.zeros_like(u)
    for a in range(2):
        for c in range(3):
            for t in range(6):
                acc = sum(float(k[c, s]) * float(u[a, c, t - s]) for s in range(min(t + 1, 4)))
                want[a, c, t] = acc + float(D[c]) * float(u[a, c, t])
    torch.testing.assert_close(fn(u, k, D), want, **TIGHT)

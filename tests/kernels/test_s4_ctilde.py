"""S4-DPLR's C̃ parametrisation (kernels/s4/ctilde.py) and the pair-form compiled Cauchy kernel's gradients.

The DPLR kernels take C̃ = C (I − Ā^L); these tests tie that to the plain recurrence y_l = C Ā^l B̄ run with C
itself (no C̃ anywhere), in float64, on odd shapes.
"""

from __future__ import annotations

import math

import pytest
import torch

from ssmbench import kernels
from ssmbench.kernels.s4.compiled import probe
from ssmbench.kernels.s4.ctilde import bilinear_dense, c_from_ctilde, ctilde
from ssmbench.kernels.s4.hippo import nplr_legs
from ssmbench.kernels.s4.reference import dplr_dense

F64 = {"rtol": 1e-9, "atol": 1e-11}


def params(H: int, N: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """HiPPO-LegS DPLR parameters, every channel perturbed; log dt in [log 1e-3, log 0.5]."""
    g = torch.Generator().manual_seed(seed)
    Lam, P, B, _ = nplr_legs(N)

    def crandn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.complex128)

    A = Lam.repeat(H, 1)
    A = torch.complex(A.real * torch.exp(0.2 * torch.randn(A.shape, generator=g, dtype=torch.float64)),
                      A.imag + 0.3 * torch.randn(A.shape, generator=g, dtype=torch.float64))
    log_dt = torch.rand(H, generator=g, dtype=torch.float64) * (math.log(0.5) - math.log(1e-3)) + math.log(1e-3)
    return {"log_dt": log_dt, "A": A, "P": P.repeat(H, 1) + 0.1 * crandn(H, N // 2),
            "B": B.repeat(H, 1) + 0.1 * crandn(H, N // 2), "C": crandn(H, N // 2)}


def plain_recurrence(p: dict[str, torch.Tensor], L: int) -> torch.Tensor:
    """K_l = C_r Ā^l B̄ for l < L with the plain C (the dense bilinear system, no C̃)."""
    dA, x, C_r = dplr_dense(torch.exp(p["log_dt"]), p["A"], p["P"], p["B"], p["C"])
    out = []
    for _ in range(L):
        out.append((C_r * x).sum(-1))
        x = (dA @ x[..., None])[..., 0]
    return torch.stack(out, -1)


def kernel(p: dict[str, torch.Tensor], Ct: torch.Tensor, L: int, backend: str) -> torch.Tensor:
    return kernels.s4_kernel(torch.exp(p["log_dt"]), p["A"], p["B"], Ct, L, P=p["P"], mode="dplr", backend=backend)


@pytest.fixture
def backends(require_compiled) -> tuple[str, ...]:
    require_compiled(probe)
    return ("reference", "cauchy", "cauchy_compiled", "cauchy_naive")


@pytest.mark.parametrize("H,N,L", [(1, 2, 1), (3, 6, 7), (2, 10, 50), (5, 64, 129)], ids=str)
def test_ctilde_kernel_equals_plain_recurrence(H: int, N: int, L: int, backends: tuple[str, ...]) -> None:
    p = params(H, N, seed=L)
    want = plain_recurrence(p, L)
    Ct = ctilde(torch.exp(p["log_dt"]), p["A"], p["P"], p["C"], L)
    for backend in backends:
        torch.testing.assert_close(kernel(p, Ct, L, backend), want, rtol=1e-9, atol=1e-11 * want.abs().max().item(),
                                   msg=lambda m, b=backend: f"{b}: {m}")


@pytest.mark.parametrize("L", [1, 3, 40], ids=lambda v: f"L{v}")
def test_doubling_and_inverse(L: int) -> None:
    """C̃_{2L} = C̃_L (I + Ā^L) equals the direct C̃ at 2L, and C̃ (I − Ā^L)^{-1} gives C back."""
    p = params(3, 14, seed=L)
    dt = torch.exp(p["log_dt"])
    Ct = ctilde(dt, p["A"], p["P"], p["C"], L)
    torch.testing.assert_close(ctilde(dt, p["A"], p["P"], Ct, L, sign=1), ctilde(dt, p["A"], p["P"], p["C"], 2 * L),
                               **F64)
    torch.testing.assert_close(c_from_ctilde(dt, p["A"], p["P"], Ct, L), p["C"], **F64)


def test_bilinear_dense_matches_solve() -> None:
    p = params(4, 12, seed=2)
    dt = torch.exp(p["log_dt"])
    dA, _, _ = dplr_dense(dt, p["A"], p["P"], p["B"], p["C"])
    torch.testing.assert_close(bilinear_dense(dt, p["A"], p["P"]), dA, **F64)


@pytest.mark.parametrize("H,N,L", [(3, 10, 37), (2, 6, 100), (5, 4, 2)], ids=str)
def test_gradients_of_every_parameter_match_reference(H: int, N: int, L: int, backends: tuple[str, ...]) -> None:
    """d/d(log dt, Λ, P, B, C̃) through every DPLR backend == through the sequential oracle, float64."""
    p = params(H, N, seed=H * L)
    g = torch.randn(H, L, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grads = {}
    for backend in backends:
        leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        out = kernel(leaves, leaves["C"], L, backend)
        grads[backend] = torch.autograd.grad((out * g).sum(), list(leaves.values()))
    for backend in backends[1:]:
        for name, a, b in zip(p, grads[backend], grads["reference"], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * b.abs().max().item(),
                                       msg=lambda m, name=name, b=backend: f"{b}: grad of {name}: {m}")


def test_compiled_float32_gradients_close_to_float64(backends: tuple[str, ...]) -> None:
    """float32 pair form (reciprocal by a 14-bit estimate + one Newton step) against the float64 oracle."""
    p = params(4, 64, seed=5)
    L = 300
    g = torch.randn(4, L, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grads = {}
    for backend, dtype in (("reference", torch.float64), ("cauchy_compiled", torch.float32)):
        leaves = {k: v.to(torch.complex64 if v.is_complex() and dtype == torch.float32 else
                          (dtype if not v.is_complex() else v.dtype)).requires_grad_(True) for k, v in p.items()}
        out = kernel(leaves, leaves["C"], L, backend)
        grads[backend] = torch.autograd.grad((out * g.to(out.dtype)).sum(), list(leaves.values()))
    for name, a, b in zip(p, grads["cauchy_compiled"], grads["reference"], strict=True):
        torch.testing.assert_close(a.to(b.dtype), b, rtol=1e-3, atol=1e-3 * b.abs().max().item(),
                                   msg=lambda m, name=name: f"grad of {name}: {m}")

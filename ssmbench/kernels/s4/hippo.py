"""Initialisations of the S4 state matrix: HiPPO-LegS (dense and NPLR-diagonalised), S4D-Lin and S4D-Inv.

Notation: N is the real state size; complex parameters are stored as N2 = N/2 conjugate pairs (only one
member of each pair is kept, kernels use 2·Re(...)). Everything is built in float64 and cast by the caller,
because the eigendecomposition of HiPPO-LegS loses digits in float32.
"""

from __future__ import annotations

import math

import torch


def _check_even(N: int) -> None:
    if N < 2 or N % 2:
        raise ValueError(f"state size N={N} must be even and >= 2 (it is stored as N/2 conjugate pairs)")


def hippo_legs(N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The HiPPO-LegS matrices in their original (real, dense) basis, float64.

    A_nk = -sqrt(2n+1)·sqrt(2k+1) for n > k, -(n+1) for n = k, 0 above the diagonal; B_n = sqrt(2n+1).
    Returns A (N, N), B (N,).
    """
    q = torch.sqrt(2 * torch.arange(N, dtype=torch.float64) + 1)
    A = -torch.tril(q[:, None] * q[None, :], diagonal=-1) - torch.diag(torch.arange(1, N + 1, dtype=torch.float64))
    return A, q.clone()


def nplr_legs(N: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """HiPPO-LegS in normal-plus-low-rank form, diagonalised: A = V (Λ − P̃ P̃*) V* with V unitary.

    A + P Pᵀ (P_n = sqrt(n + 1/2)) equals −I/2 plus a skew-symmetric matrix J, so it is normal; it is
    diagonalised with ``eigh`` of the Hermitian −iJ in float64. Eigenvalues come in conjugate pairs
    −1/2 ± iμ; the pair member with μ > 0 is kept.

    Returns (all complex128): Λ (N2,), P̃ = V_h* P (N2,), B̃ = V_h* B (N2,), V_h (N, N2), where V_h holds the
    kept eigenvectors. A real output vector c maps to C = c V_h (y = c x = 2 Re(C x̃)).
    """
    _check_even(N)
    A, B = hippo_legs(N)
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    S = A + P[:, None] * P[None, :]
    diag = torch.diagonal(S)
    if not torch.allclose(diag, torch.full_like(diag, -0.5)):
        raise AssertionError("A + P Pᵀ should have -1/2 on its diagonal")
    J = S + 0.5 * torch.eye(N, dtype=torch.float64)
    mu, V = torch.linalg.eigh(-1j * J.to(torch.complex128))  # J v = i·mu·v
    keep = mu > 0
    if int(keep.sum()) != N // 2:
        raise AssertionError(f"expected {N // 2} eigenvalues with positive imaginary part, got {int(keep.sum())}")
    V_h = V[:, keep]
    Lambda = torch.complex(torch.full_like(mu[keep], -0.5), mu[keep])
    P_t = V_h.conj().T @ P.to(torch.complex128)
    B_t = V_h.conj().T @ B.to(torch.complex128)
    return Lambda, P_t, B_t, V_h


def s4d_init(N: int, init: str = "lin") -> torch.Tensor:
    """Diagonal S4D state matrix, N2 = N/2 values (complex128).

    ``lin``: A_n = −1/2 + iπn (S4D-Lin). ``inv``: A_n = −1/2 + i(N/π)(N/(2n+1) − 1) (S4D-Inv).
    ``legs``: the diagonal Λ of the NPLR form of HiPPO-LegS (S4D-LegS).
    """
    _check_even(N)
    n = torch.arange(N // 2, dtype=torch.float64)
    if init == "lin":
        imag = math.pi * n
    elif init == "inv":
        imag = N / math.pi * (N / (2 * n + 1) - 1)
    elif init == "legs":
        return nplr_legs(N)[0]
    else:
        raise ValueError(f"unknown S4D init '{init}'; known: lin, inv, legs")
    return torch.complex(torch.full_like(n, -0.5), imag)

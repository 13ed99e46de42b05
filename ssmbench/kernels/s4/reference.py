"""The S4 oracle: materialise the discrete (Ā, B̄, C) and run the recurrence (Krylov sequence K_l = C Ā^l B̄).

- ``diag`` (S4D, zero-order hold): Ā = exp(ΔA), B̄ = (exp(ΔA) − 1)/A · B, both diagonal (H, N2) complex;
  K_l = 2 Re Σ_n C_n Ā_n^l B̄_n.
- ``dplr`` (S4, bilinear): A = Λ − P P* over the N = 2·N2 conjugate-paired coordinates is rewritten as a real
  dense (N, N) matrix (coordinates [Re x; Im x]), then Ā = (I − Δ/2 A)^{-1}(I + Δ/2 A), B̄ = (I − Δ/2 A)^{-1} Δ B.
  The ``C`` argument of mode ``dplr`` is C̃ = C (I − Ā^L), the vector S4 trains (``dplr.py``, step 1): the oracle
  recovers the recurrence's C = C̃ (I − Ā^L)^{-1} with a dense matrix power and solve, then runs the recurrence.

Slow (a Python loop over L) and differentiable; float64-capable. The dense real form is also what the S4-DPLR
decode step uses.
"""

from __future__ import annotations

import torch

from ssmbench.kernels.s4._args import check_kernel_args


def zoh_discretize(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold of a diagonal SSM. dt: (H,); A, B: (H, N2) complex -> Ā, B̄: (H, N2) complex."""
    dtA = dt[:, None] * A
    return torch.exp(dtA), torch.expm1(dtA) / A * B


def dplr_real_form(A: torch.Tensor, P: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real dense form of the conjugate-paired DPLR system x' = (Λ − P P*) x + B u, y = 2 Re(C x).

    With x_r = [Re x; Im x] (N = 2·N2 real coordinates) the rank-1 term P (P* x_full) equals P · 2 pᵀ x_r,
    p = [Re P; Im P], because the full state holds x and its conjugate. A, P, B, C: (H, N2) complex.
    Returns A_r (H, N, N), B_r (H, N), C_r (H, N) (real), with y = C_r x_r.
    """
    re, im = A.real, A.imag
    top = torch.cat([torch.diag_embed(re), torch.diag_embed(-im)], dim=-1)
    bottom = torch.cat([torch.diag_embed(im), torch.diag_embed(re)], dim=-1)
    p = torch.cat([P.real, P.imag], dim=-1)
    A_r = torch.cat([top, bottom], dim=-2) - 2 * p[:, :, None] * p[:, None, :]
    B_r = torch.cat([B.real, B.imag], dim=-1)
    C_r = 2 * torch.cat([C.real, -C.imag], dim=-1)
    return A_r, B_r, C_r


def bilinear_discretize(dt: torch.Tensor, A_r: torch.Tensor, B_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) map of a dense system. dt: (H,); A_r: (H, N, N); B_r: (H, N) -> Ā (H, N, N), B̄ (H, N)."""
    eye = torch.eye(A_r.shape[-1], dtype=A_r.dtype, device=A_r.device)
    half = (dt / 2)[:, None, None] * A_r
    lhs = eye - half
    dA = torch.linalg.solve(lhs, eye + half)
    dB = torch.linalg.solve(lhs, dt[:, None] * B_r)
    return dA, dB


def dplr_dense(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, B: torch.Tensor,
               C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Discrete dense real (Ā (H, N, N), B̄ (H, N), C_r (H, N)) of a DPLR system; y_k = C_r x_k."""
    A_r, B_r, C_r = dplr_real_form(A, P, B, C)
    dA, dB = bilinear_discretize(dt.to(A_r.dtype), A_r, B_r)
    return dA, dB, C_r


def s4_kernel_ref(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                  P: torch.Tensor | None = None, mode: str = "diag") -> torch.Tensor:
    """SSM convolution kernel K (H, L), real, by running the recurrence from x_0 = B̄ for L steps."""
    dt = check_kernel_args(dt, A, B, C, L, P, mode)
    out = []
    if mode == "diag":
        dA, x = zoh_discretize(dt, A, B)
        for _ in range(L):
            out.append(2 * (C * x).sum(-1).real)
            x = dA * x
    else:
        dA, x, Ct_r = dplr_dense(dt, A, P, B, C)
        lhs = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device) - torch.linalg.matrix_power(dA, L)
        C_r = torch.linalg.solve(lhs.transpose(-1, -2), Ct_r[..., None])[..., 0]  # C̃_r (I − Ā^L)^{-1}
        for _ in range(L):
            out.append((C_r * x).sum(-1))
            x = (dA @ x[..., None])[..., 0]
    return torch.stack(out, dim=-1)

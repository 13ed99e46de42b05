"""S4D kernel (diagonal A, zero-order hold) as a Vandermonde product, generated in L-chunks.

K_l = 2 Re Σ_n C̃_n z_n^l with z_n = exp(ΔA_n) and C̃ = C·B·(exp(ΔA) − 1)/A, for l < L.

The naive form materialises exp(ΔA ⊗ arange(L)), an (H, N2, L) complex tensor (2 GB at H=1024, N2=32,
L=16K in complex64). Instead l = m·c + j is split into a block index m < M and an offset j < c (c ≈ √L):

    K[m·c + j] = 2 Re Σ_n (C̃_n z_n^{m·c}) · z_n^j = 2 Re (W @ V)[m, j],

with W (H, M, N2) and V (H, N2, c), so the largest tensor is O(H·N2·√L) and the work is a single batched
matmul. Autograd through these ops saves only W and V, so the backward pass is bounded the same way.
Both powers are computed as exp(l·ΔA) directly (not by repeated multiplication), so the phase error stays
that of one exp; in float32 it still grows with l·|Im ΔA| (S4's Vandermonde tests loosen to 1e-3 past L=1024).
"""

from __future__ import annotations

import math

import torch

from ssmbench.kernels.s4._args import check_kernel_args


def zoh_ctilde(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
               C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔA (H, N2) and C̃ = C·B·(exp(ΔA) − 1)/A (H, N2) for dt (H,), A, B, C (H, N2) complex."""
    dtA = dt[:, None] * A
    return dtA, C * B * torch.expm1(dtA) / A


def block_size(L: int) -> int:
    """Power of two c with c ≥ √L, so both factors of the Vandermonde split hold O(√L) columns."""
    return 1 << max(0, math.ceil(math.log2(L) / 2))


def _exp_outer(log_z: torch.Tensor, t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of exp(log_z · t), with t inserted as a new axis at ``dim``.

    Built from real exp/cos/sin: torch's complex exp is not vectorised on CPU (about 20x slower).
    """
    shape = [1] * (log_z.dim() + 1)
    shape[dim] = -1
    t = t.view(shape)
    a, b = log_z.real.unsqueeze(dim) * t, log_z.imag.unsqueeze(dim) * t
    mag = torch.exp(a)
    return mag * torch.cos(b), mag * torch.sin(b)


def vandermonde(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """2 Re Σ_n coef_n exp(l · log_z_n) for l < L. coef, log_z: (H, N2) complex -> (H, L) real."""
    c = block_size(L)
    M = -(-L // c)
    rdtype = log_z.real.dtype
    j = torch.arange(c, device=log_z.device, dtype=rdtype)
    m = torch.arange(M, device=log_z.device, dtype=rdtype) * c
    V_re, V_im = _exp_outer(log_z, j, dim=-1)  # (H, N2, c): z^j
    E_re, E_im = _exp_outer(log_z, m, dim=-2)  # (H, M, N2): z^{m·c}
    cr, ci = coef.real[:, None, :], coef.imag[:, None, :]
    W_re, W_im = cr * E_re - ci * E_im, cr * E_im + ci * E_re  # W = coef · z^{m·c}
    # Re(W V) = Re W · Re V − Im W · Im V as one real matmul (half the work of a complex one).
    out = torch.cat([W_re, -W_im], dim=-1) @ torch.cat([V_re, V_im], dim=-2)  # (H, M, c)
    return 2 * out.reshape(coef.shape[0], M * c)[:, :L]


def s4d_kernel_vandermonde(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                           P: torch.Tensor | None = None, mode: str = "diag") -> torch.Tensor:
    """S4D-ZOH kernel K (H, L), real. dt: (H,); A, B, C: (H, N2) complex. ``mode`` must be "diag"."""
    if mode != "diag":
        raise ValueError(f"the vandermonde backend computes mode='diag' kernels only, got mode='{mode}'")
    dt = check_kernel_args(dt, A, B, C, L, P, mode)
    dtA, Ct = zoh_ctilde(dt, A, B, C)
    return vandermonde(Ct, dtA, L)

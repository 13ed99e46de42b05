"""S4 DPLR kernel: truncated generating function at the roots of unity, Woodbury + Cauchy, then irfft.

System (conjugate pairs kept once, N = 2·N2): A = Λ − P P*, bilinear discretisation with step Δ.

1. C̃ = C (I − Ā^L). With ω^L = 1 the generating function Σ_{l<L} K_l ω^l = C̃ (I − Ā ω)^{-1} B̄, so K is
   the inverse DFT of its values at ω_k = exp(−2πik/L). C̃ is formed in the dense real form (reference.py)
   by repeated squaring: log2(L) (N, N) matmuls per channel.
2. (I − Ā ω)^{-1} B̄ = 2/(1 + ω) · (g(ω) − A)^{-1} B with g(ω) = (2/Δ)(1 − ω)/(1 + ω). Woodbury for the rank-1
   term gives four Cauchy sums k_ab = Σ_n a_n b_n / (g − λ_n), (a, b) ∈ {C̃, P*} × {B, P}, summed over all N
   (both members of each pair), and K̂ = 2/(1 + ω) [k_00 − k_01 k_10 / (1 + k_11)].
3. ω = −1 (k = L/2) makes g infinite. Multiplying every term by s = (1 + ω)/2 removes the pole:
   k̃_ab = Σ a_n b_n / ((1 − ω)/Δ − s λ_n) = 2/(1 + ω) · k_ab, and K̂ = k̃_00 − s k̃_01 k̃_10 / (1 + s k̃_11),
   which is finite for every |ω| = 1 (Re λ < 0) and gives K̂(−1) = Δ/2 · C̃ B exactly.
4. K = irfft(K̂, n=L).

The Cauchy sums are naive: an (H, N, F) complex tensor of 1/denominators, built in frequency chunks so the
forward pass stays bounded (under autograd each chunk's reciprocals are kept for backward).
"""

from __future__ import annotations

import math

import torch

from ssmbench.kernels.s4._args import check_kernel_args
from ssmbench.kernels.s4.reference import dplr_dense

_CHUNK_ELEMENTS = 1 << 22  # complex entries of one (H, N, F-chunk) reciprocal tensor (32 MB in complex64)


def row_times_power(c: torch.Tensor, M: torch.Tensor, L: int) -> torch.Tensor:
    """c M^L by repeated squaring. c: (H, N); M: (H, N, N) -> (H, N)."""
    out = c[:, None, :]
    power = M
    while L:
        if L & 1:
            out = out @ power
        L >>= 1
        if L:
            power = power @ power
    return out[:, 0, :]


def ctilde_dplr(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                L: int) -> torch.Tensor:
    """C̃ = C (I − Ā^L) in the conjugate-paired basis (H, N2) complex, via the dense real form."""
    dA, _, C_r = dplr_dense(dt, A, P, B, C)
    Ct_r = C_r - row_times_power(C_r, dA, L)
    n2 = A.shape[-1]
    # C_r = 2 [Re C, −Im C]  =>  C = (C_r[:N2] − i C_r[N2:]) / 2
    return torch.complex(Ct_r[:, :n2], -Ct_r[:, n2:]) / 2


def cauchy_woodbury(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, B: torch.Tensor, Ct: torch.Tensor,
                    L: int) -> torch.Tensor:
    """K̂ at ω_k = exp(−2πik/L), k ≤ L/2, from C̃: (H, L//2 + 1) complex (see the module docstring)."""
    rdtype = A.real.dtype
    n_freq = L // 2 + 1
    theta = torch.arange(n_freq, dtype=torch.float64, device=A.device) * (2 * math.pi / L)
    omega = torch.polar(torch.ones_like(theta), -theta).to(A.dtype)  # (F,)
    s = (1 + omega) / 2
    t = (1 - omega)[None, :] / dt.to(rdtype)[:, None]  # (H, F)
    lam = torch.cat([A, A.conj()], dim=-1)  # (H, N): both members of every pair
    Bf, Pf, Cf = (torch.cat([x, x.conj()], dim=-1) for x in (B, P, Ct))
    Qc = Pf.conj()
    numer = torch.stack([Cf * Bf, Cf * Pf, Qc * Bf, Qc * Pf], dim=1)  # (H, 4, N)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, lam.numel()))
    parts = []
    for f0 in range(0, n_freq, chunk):
        sl = slice(f0, f0 + chunk)
        # 1 / (t − s·λ) as one fused op plus an in-place reciprocal: this elementwise pass over (H, N, f)
        # dominates the cost, and separate mul/sub/div ops were 3x slower on CPU.
        r = torch.addcmul(t[:, None, sl], lam[:, :, None], s[sl], value=-1).reciprocal_()  # (H, N, f)
        parts.append(numer @ r)  # (H, 4, f)
    k = torch.cat(parts, dim=-1)
    k00, k01, k10, k11 = k.unbind(dim=1)
    return k00 - s * k01 * k10 / (1 + s * k11)


def s4_kernel_cauchy(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                     P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """S4 DPLR kernel K (H, L), real. dt: (H,); A (= Λ), B, C, P: (H, N2) complex; A_full = Λ − P P*."""
    if mode != "dplr":
        raise ValueError(f"the cauchy backend computes mode='dplr' kernels only, got mode='{mode}'")
    dt = check_kernel_args(dt, A, B, C, L, P, mode)
    Ct = ctilde_dplr(dt, A, P, B, C, L)
    K_hat = cauchy_woodbury(dt, A, P, B, Ct, L)
    return torch.fft.irfft(K_hat, n=L)

"""S4 DPLR kernel: truncated generating function at the roots of unity, Woodbury + Cauchy, then irfft.

System (conjugate pairs kept once, N = 2·N2): A = Λ − P P*, bilinear discretisation with step Δ.

1. C̃ = C (I − Ā^L). With ω^L = 1 the generating function Σ_{l<L} K_l ω^l = C̃ (I − Ā ω)^{-1} B̄, so K is
   the inverse DFT of its values at ω_k = exp(−2πik/L). C̃ is formed in the dense real form by repeated
   squaring: log2(L) (N, N) matmuls per channel. Ā itself is built in closed form (:func:`bilinear_dense`): with
   the real form A_r = Λ_r − 2 p pᵀ and M = I − Δ/2 A_r = D + Δ p pᵀ, where D multiplies each (Re, Im) pair by
   the complex scalar 1 − Δ/2 λ, Sherman–Morrison gives M^{-1} and Ā = M^{-1}(I + Δ/2 A_r) = 2 M^{-1} − I:
   O(N²) per channel instead of two dense solves.
2. (I − Ā ω)^{-1} B̄ = 2/(1 + ω) · (g(ω) − A)^{-1} B with g(ω) = (2/Δ)(1 − ω)/(1 + ω). Woodbury for the rank-1
   term gives four Cauchy sums k_ab = Σ_n a_n b_n / (g − λ_n), (a, b) ∈ {C̃, P*} × {B, P}, summed over all N
   (both members of each pair), and K̂ = 2/(1 + ω) [k_00 − k_01 k_10 / (1 + k_11)].
3. ω = −1 (k = L/2) makes g infinite. Multiplying every term by s = (1 + ω)/2 removes the pole:
   k̃_ab = Σ a_n b_n / ((1 − ω)/Δ − s λ_n) = 2/(1 + ω) · k_ab, and K̂ = k̃_00 − s k̃_01 k̃_10 / (1 + s k̃_11),
   which is finite for every |ω| = 1 (Re λ < 0) and gives K̂(−1) = Δ/2 · C̃ B exactly.
4. K = irfft(K̂, n=L).

The Cauchy sums (:class:`CauchySums`) never keep an (H, N, F) tensor: the forward builds the reciprocals a
frequency chunk at a time (or in C++, ``cpu_cauchy.cpp``, without storing them at all), and the backward
recomputes them and applies the analytic gradients, so training memory is O(H·(N + F)). ``cauchy_naive`` is the
form S4 publishes as its CPU fallback: the same chunks under plain autograd, which keeps every chunk's
reciprocals for backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ssmbench.kernels.s4._args import check_kernel_args

_CHUNK_ELEMENTS = 1 << 22  # complex entries of one (H, N, F-chunk) reciprocal tensor (32 MB in complex64)


def bilinear_dense(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Ā (H, N, N) of the real form (coordinates [Re x; Im x]) of A = Λ − P P*, in closed form (module doc, 1)."""
    n2 = A.shape[-1]
    d = dt.to(A.real.dtype)[:, None]
    inv = 1 / (1 - d / 2 * A)  # D^{-1}: multiplication by this complex scalar per pair

    def mult(z: torch.Tensor) -> torch.Tensor:
        """Real (N, N) matrix of multiplication by the complex diagonal z on [Re; Im] coordinates."""
        re, im = torch.diag_embed(z.real), torch.diag_embed(z.imag)
        return torch.cat([torch.cat([re, -im], -1), torch.cat([im, re], -1)], -2)

    p = torch.cat([P.real, P.imag], -1)  # A_r = Λ_r − 2 p pᵀ, so M = D + Δ p pᵀ
    u = torch.cat([(inv * P).real, (inv * P).imag], -1)  # D^{-1} p
    v = torch.cat([(inv.conj() * P).real, (inv.conj() * P).imag], -1)  # D^{-T} p (Dᵀ multiplies by the conjugate)
    denom = 1 + d * (p * u).sum(-1, keepdim=True)
    Minv = mult(inv) - (d / denom)[..., None] * u[:, :, None] * v[:, None, :]
    return 2 * Minv - torch.eye(2 * n2, dtype=Minv.dtype, device=Minv.device)


def row_times_power(c: torch.Tensor, M: torch.Tensor, L: int) -> torch.Tensor:
    """c M^L by repeated squaring. c: (H, N); M: (H, N, N) -> (H, N).

    High powers of a stable Ā decay towards the subnormal range, where CPU matmuls run ~20x slower (measured:
    one (256, 64, 64) float32 squaring takes 0.8 ms on M, 25 ms on M^256, whose products of small entries
    underflow). Entries below √(smallest normal) (1e-19 in float32, 1e-154 in float64) are set to 0, so no
    product of two kept entries is subnormal; what they would add to c M^L is far below its rounding error.
    """
    tiny = math.sqrt(torch.finfo(M.dtype).tiny)
    out = c[:, None, :]
    power = M
    while L:
        if L & 1:
            out = out @ power
        L >>= 1
        if L:
            power = power @ power
            power = torch.nn.functional.hardshrink(power, tiny)  # one fused pass: |x| <= tiny -> 0
    return out[:, 0, :]


def ctilde_dplr(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, C: torch.Tensor, L: int) -> torch.Tensor:
    """C̃ = C (I − Ā^L) in the conjugate-paired basis (H, N2) complex, via the dense real form."""
    n2 = A.shape[-1]
    C_r = 2 * torch.cat([C.real, -C.imag], dim=-1)  # y = C_r [Re x; Im x] = 2 Re(C x)
    Ct_r = C_r - row_times_power(C_r, bilinear_dense(dt, A, P), L)
    return torch.complex(Ct_r[:, :n2], -Ct_r[:, n2:]) / 2


def _omega(A: torch.Tensor, L: int) -> torch.Tensor:
    """ω_k = exp(−2πik/L), k ≤ L/2 (F,), in A's complex dtype (computed in float64)."""
    theta = torch.arange(L // 2 + 1, dtype=torch.float64, device=A.device) * (2 * math.pi / L)
    return torch.polar(torch.ones_like(theta), -theta).to(A.dtype)


def _freq_terms(dt: torch.Tensor, A: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """s = (1 + ω)/2 (F,) and t = (1 − ω)/Δ (H, F)."""
    omega = _omega(A, L)
    return (1 + omega) / 2, (1 - omega)[None, :] / dt.to(A.real.dtype)[:, None]


def _sums_chunk(t: torch.Tensor, s: torch.Tensor, lam: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_n w[:, q, n] / (t − s λ_n) for one frequency chunk: (H, 4, f). The reciprocals live only here."""
    # 1 / (t − s·λ) as one fused op plus an in-place reciprocal (separate mul/sub/div were 3x slower on CPU).
    r = torch.addcmul(t[:, None, :], lam[:, :, None], s, value=-1).reciprocal_()  # (H, N, f)
    return w @ r


def _chunks(n_freq: int, per_freq: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(1, per_freq))
    return [slice(f0, f0 + step) for f0 in range(0, n_freq, step)]


class CauchySums(torch.autograd.Function):
    """k (H, 4, F) = Σ_n w[:, q, n] / (t[:, f] − s[f] λ[:, n]) with an analytic, recomputing backward.

    t (H, F), lam (H, N), w (H, 4, N) complex (differentiable); s (F,) complex constant.
    """

    @staticmethod
    def forward(ctx, t, s, lam, w):
        ctx.save_for_backward(t, s, lam, w)
        return torch.cat([_sums_chunk(t[:, sl], s[sl], lam, w) for sl in _chunks(t.shape[1], lam.numel())], -1)

    @staticmethod
    def backward(ctx, grad):
        t, s, lam, w = ctx.saved_tensors
        grad = grad.contiguous()
        dlam, dw, dts = torch.zeros_like(lam), torch.zeros_like(w), []
        for sl in _chunks(t.shape[1], lam.numel()):
            rc = torch.addcmul(t[:, None, sl], lam[:, :, None], s[sl], value=-1).reciprocal_().conj_physical_()
            g = grad[:, :, sl]  # (H, 4, f)
            dw += g @ rc.transpose(1, 2)  # Σ_f G conj(r)
            gd = -(w.conj().transpose(1, 2) @ g) * rc.square_()  # (H, N, f): −(Σ_q G_q conj(w_q)) conj(r)²
            dts.append(gd.sum(1))
            dlam -= gd @ s[sl].conj()
        return torch.cat(dts, -1), None, dlam, dw


class CompiledWoodbury(torch.autograd.Function):
    """K̂ (H, F) = k00 − s k01 k10 / (1 + s k11) from the four Cauchy sums with t = (1 − ω) x, all in C++
    (``cpu_cauchy.cpp``, t never materialised), forward and analytic backward. om = 1 − ω, s (F,) complex
    constants; x = 1/Δ (H,) real, lam (H, N), w (H, 4, N) complex."""

    @staticmethod
    def forward(ctx, om, x, s, lam, w):
        from ssmbench.kernels.s4.compiled import cauchy_forward

        ctx.save_for_backward(om, x, s, lam, w)
        return cauchy_forward(om, x, s, lam, w)

    @staticmethod
    def backward(ctx, grad):
        from ssmbench.kernels.s4.compiled import cauchy_backward

        om, x, s, lam, w = ctx.saved_tensors
        dx, dlam, dw = cauchy_backward(om, x, s, lam, w, grad)
        return None, dx, None, dlam, dw


def _naive_sums(t: torch.Tensor, s: torch.Tensor, lam: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """S4's naive Cauchy product under plain autograd (every chunk's reciprocals are saved for backward)."""
    return torch.cat([_sums_chunk(t[:, sl], s[sl], lam, w) for sl in _chunks(t.shape[1], lam.numel())], -1)


def cauchy_woodbury(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, B: torch.Tensor, Ct: torch.Tensor, L: int,
                    sums: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """K̂ at ω_k = exp(−2πik/L), k ≤ L/2, from C̃: (H, L//2 + 1) complex (see the module docstring).

    ``sums(t, s, lam, w)`` evaluates the Cauchy sums (default: :class:`CauchySums` in torch), or is
    ``CompiledWoodbury.apply``, which returns K̂ itself.
    """
    lam = torch.cat([A, A.conj()], dim=-1)  # (H, N): both members of every pair
    Bf, Pf, Cf = (torch.cat([x, x.conj()], dim=-1) for x in (B, P, Ct))
    Qc = Pf.conj()
    w = torch.stack([Cf * Bf, Cf * Pf, Qc * Bf, Qc * Pf], dim=1)  # (H, 4, N)
    if sums == CompiledWoodbury.apply:  # Woodbury fused into the C++ kernel, t = (1 − ω)/Δ formed there
        omega = _omega(A, L)
        return sums(1 - omega, 1 / dt.to(A.real.dtype), (1 + omega) / 2, lam, w)
    s, t = _freq_terms(dt, A, L)
    k = CauchySums.apply(t, s, lam, w) if sums is None else sums(t, s, lam, w)
    k00, k01, k10, k11 = k.unbind(dim=1)
    return k00 - s * k01 * k10 / (1 + s * k11)


def _kernel(dt, A, B, C, L, P, mode, sums) -> torch.Tensor:
    if mode != "dplr":
        raise ValueError(f"the cauchy backends compute mode='dplr' kernels only, got mode='{mode}'")
    dt = check_kernel_args(dt, A, B, C, L, P, mode)
    Ct = ctilde_dplr(dt, A, P, C, L)
    return torch.fft.irfft(cauchy_woodbury(dt, A, P, B, Ct, L, sums), n=L)


def s4_kernel_cauchy(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                     P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """S4 DPLR kernel K (H, L), real. dt: (H,); A (= Λ), B, C, P: (H, N2) complex; A_full = Λ − P P*."""
    return _kernel(dt, A, B, C, L, P, mode, None)


def s4_kernel_cauchy_compiled(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                              P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """As :func:`s4_kernel_cauchy`, with the Cauchy sums in C++ (CPU tensors only)."""
    if dt.device.type != "cpu":
        raise ValueError(f"the cauchy_compiled backend runs on CPU tensors, got {dt.device}")
    return _kernel(dt, A, B, C, L, P, mode, CompiledWoodbury.apply)


def s4_kernel_cauchy_naive(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                           P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """As :func:`s4_kernel_cauchy`, with S4's naive Cauchy product under autograd (the peer)."""
    return _kernel(dt, A, B, C, L, P, mode, _naive_sums)

"""S4 DPLR kernel: truncated generating function at the roots of unity, Woodbury + Cauchy, then irfft.

System (conjugate pairs kept once, N = 2·N2): A = Λ − P P*, bilinear discretisation with step Δ.

1. The output vector these backends take is C̃ = C (I − Ā^L), not C: S4 trains C̃ as the parameter (its kernel's
   ``C`` is C̃), so a forward pass never forms Ā^L. With ω^L = 1 the generating function
   Σ_{l<L} K_l ω^l = C̃ (I − Ā ω)^{-1} B̄, so K_l = C Ā^l B̄ (l < L) is the inverse DFT of its values at
   ω_k = exp(−2πik/L). Converting between C and C̃, or C̃ between lengths, is :mod:`ssmbench.kernels.s4.ctilde`.
2. (I − Ā ω)^{-1} B̄ = 2/(1 + ω) · (g(ω) − A)^{-1} B with g(ω) = (2/Δ)(1 − ω)/(1 + ω). Woodbury for the rank-1
   term gives four Cauchy sums k_ab = Σ a_n b_n / (g − λ_n), (a, b) ∈ {C̃, P*} × {B, P}, summed over all N
   (both members of each pair), and K̂ = 2/(1 + ω) [k_00 − k_01 k_10 / (1 + k_11)].
3. ω = −1 (k = L/2) makes g infinite. Multiplying every term by s = (1 + ω)/2 removes the pole: with
   t = (1 − ω)/Δ, k̃_ab = Σ a_n b_n / (t − s λ_n) = 2/(1 + ω) · k_ab, and K̂ = k̃_00 − s k̃_01 k̃_10 / (1 + s k̃_11),
   which is finite for every |ω| = 1 (Re λ < 0) and gives K̂(−1) = Δ/2 · C̃ B exactly. Δ enters only through t.
4. Pair form (``cauchy_compiled``): the coefficients of the two members of a pair are conjugate (v, v̄), so their
   terms share one denominator: v/(t − sλ) + v̄/(t − sλ̄) = (a t − b s)/D with real a = 2 Re v, b = 2 Re(v λ̄) and
   D = t² − 2 Re(λ) s t + |λ|² s². One complex reciprocal per pair instead of two, and real coefficients.
5. K = irfft(K̂, n=L).

The Cauchy sums never keep an (H, N, F) tensor: ``cauchy`` (:class:`CauchySums`, torch) builds the reciprocals a
frequency chunk at a time and its backward recomputes them with analytic gradients; ``cauchy_compiled``
(``cpu_cauchy.cpp``, pair form, Woodbury fused) never stores them at all. Training memory is O(H·(N + F)).
``cauchy_naive`` is the form S4 publishes as its CPU fallback: the same chunks under plain autograd, which keeps
every chunk's reciprocals for backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ssmbench.kernels.s4._args import check_kernel_args

_CHUNK_ELEMENTS = 1 << 22  # complex entries of one (H, N, F-chunk) reciprocal tensor (32 MB in complex64)


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
    """K̂ (H, F) = k̃00 − s k̃01 k̃10 / (1 + s k̃11) from the pair-form Cauchy sums with t = (1 − ω) x, all in C++
    (``cpu_cauchy.cpp``, t never materialised), forward and analytic backward. om = 1 − ω, s (F,) complex
    constants; x = 1/Δ (H,) real, coef (H, N2, 10) real (:func:`pair_coefficients`)."""

    @staticmethod
    def forward(ctx, om, x, s, coef):
        from ssmbench.kernels.s4.compiled import cauchy_forward

        ctx.save_for_backward(om, x, s, coef)
        return cauchy_forward(om, x, s, coef)

    @staticmethod
    def backward(ctx, grad):
        from ssmbench.kernels.s4.compiled import cauchy_backward

        om, x, s, coef = ctx.saved_tensors
        dx, dcoef = cauchy_backward(om, x, s, coef, grad)
        return None, dx, None, dcoef


def pair_coefficients(A: torch.Tensor, P: torch.Tensor, B: torch.Tensor, Ct: torch.Tensor) -> torch.Tensor:
    """(H, N2, 10) real: per pair [a_0..a_3, b_0..b_3, Re λ, |λ|²] of the pair form (module docstring, step 4),
    for the Woodbury coefficients v = (C̃B, C̃P, P̄B, P̄P) of the first member of each pair."""
    Pc = P.conj()
    v = torch.stack([Ct * B, Ct * P, Pc * B, Pc * P], dim=-1)  # (H, N2, 4)
    a = 2 * v.real
    b = 2 * (v * A.conj()[..., None]).real
    return torch.cat([a, b, A.real[..., None], (A.real.square() + A.imag.square())[..., None]], dim=-1)


def _naive_sums(t: torch.Tensor, s: torch.Tensor, lam: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """S4's naive Cauchy product under plain autograd (every chunk's reciprocals are saved for backward)."""
    return torch.cat([_sums_chunk(t[:, sl], s[sl], lam, w) for sl in _chunks(t.shape[1], lam.numel())], -1)


def cauchy_woodbury(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, B: torch.Tensor, Ct: torch.Tensor, L: int,
                    sums: Callable[..., torch.Tensor] | str | None = None) -> torch.Tensor:
    """K̂ at ω_k = exp(−2πik/L), k ≤ L/2, from C̃: (H, L//2 + 1) complex (see the module docstring).

    ``sums(t, s, lam, w)`` evaluates the Cauchy sums (default: :class:`CauchySums` in torch), or is
    ``"compiled"``: the C++ kernel (:class:`CompiledWoodbury`), which returns K̂ itself.
    """
    if sums == "compiled":  # pair form, Woodbury fused into the C++ kernel, t = (1 − ω)/Δ formed there
        omega = _omega(A, L)
        # under torch.compile the kernel is its registered op (compiled.py, imported by the backend's probe)
        kernel = torch.ops.ssmbench.s4_cauchy_woodbury if torch.compiler.is_compiling() else CompiledWoodbury.apply
        return kernel(1 - omega, 1 / dt.to(A.real.dtype), (1 + omega) / 2, pair_coefficients(A, P, B, Ct))
    lam = torch.cat([A, A.conj()], dim=-1)  # (H, N): both members of every pair
    Bf, Pf, Cf = (torch.cat([x, x.conj()], dim=-1) for x in (B, P, Ct))
    Qc = Pf.conj()
    w = torch.stack([Cf * Bf, Cf * Pf, Qc * Bf, Qc * Pf], dim=1)  # (H, 4, N)
    s, t = _freq_terms(dt, A, L)
    k = CauchySums.apply(t, s, lam, w) if sums is None else sums(t, s, lam, w)
    k00, k01, k10, k11 = k.unbind(dim=1)
    return k00 - s * k01 * k10 / (1 + s * k11)


def _kernel(dt, A, B, C, L, P, mode, sums) -> torch.Tensor:
    if mode != "dplr":
        raise ValueError(f"the cauchy backends compute mode='dplr' kernels only, got mode='{mode}'")
    dt = check_kernel_args(dt, A, B, C, L, P, mode)
    return torch.fft.irfft(cauchy_woodbury(dt, A, P, B, C, L, sums), n=L)  # C is C̃ (module docstring, step 1)


def s4_kernel_cauchy(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                     P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """S4 DPLR kernel K (H, L), real. dt: (H,); A (= Λ), B, C, P: (H, N2) complex; A_full = Λ − P P*.

    ``C`` is C̃ = C_rec (I − Ā^L) for this L (S4's trained parameter): K_l = C_rec Ā^l B̄ for l < L."""
    return _kernel(dt, A, B, C, L, P, mode, None)


def s4_kernel_cauchy_compiled(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                              P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """As :func:`s4_kernel_cauchy`, with the pair-form Cauchy sums and Woodbury in C++ (CPU tensors only).
    Under torch.compile the C++ kernel is the op ``ssmbench::s4_cauchy_woodbury`` (``compiled.py``)."""
    if dt.device.type != "cpu":
        raise ValueError(f"the cauchy_compiled backend runs on CPU tensors, got {dt.device}")
    return _kernel(dt, A, B, C, L, P, mode, "compiled")


def s4_kernel_cauchy_naive(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                           P: torch.Tensor | None = None, mode: str = "dplr") -> torch.Tensor:
    """As :func:`s4_kernel_cauchy`, with S4's naive Cauchy product under autograd (the peer)."""
    return _kernel(dt, A, B, C, L, P, mode, _naive_sums)

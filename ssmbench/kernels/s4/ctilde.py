"""C̃ = C (I − Ā^L): the DPLR kernel's output vector, and the conversions between C, C̃ and lengths.

S4 (Gu et al. 2022, and the official ``SSMKernelDPLR``) trains C̃ itself: the generating function at the L-th
roots of unity needs C̃, not C, so a forward pass at a fixed length never forms Ā^L. Ā^L is needed only when
the kernel length changes, as a doubling step C̃_{2L} = C̃_L (I + Ā^L) (since I − Ā^{2L} = (I − Ā^L)(I + Ā^L)),
and when the recurrent form needs C back: C = C̃ (I − Ā^L)^{-1} (decode).

Everything here works in the dense real form (coordinates [Re x; Im x], N = 2·N2) of the conjugate-paired system,
where y = 2 Re(C x) = C_r x_r with C_r = 2 [Re C, −Im C].
"""

from __future__ import annotations

import math

import torch


def bilinear_dense(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Ā (H, N, N) of the real form of A = Λ − P P* under the bilinear map, in closed form.

    With A_r = Λ_r − 2 p pᵀ and M = I − Δ/2 A_r = D + Δ p pᵀ, where D multiplies each (Re, Im) pair by the complex
    scalar 1 − Δ/2 λ, Sherman–Morrison gives M^{-1}, and Ā = M^{-1}(I + Δ/2 A_r) = 2 M^{-1} − I: O(N²) per channel
    instead of two dense solves.
    """
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


def times_power(c: torch.Tensor, M: torch.Tensor, L: int) -> torch.Tensor:
    """c M^L by repeated squaring. c: (H, k, N) rows; M: (H, N, N) -> (H, k, N).

    High powers of a stable Ā decay towards the subnormal range, where CPU matmuls run ~20x slower (measured:
    one (256, 64, 64) float32 squaring takes 0.8 ms on M, 25 ms on M^256, whose products of small entries
    underflow). Entries below √(smallest normal) (1e-19 in float32, 1e-154 in float64) are set to 0, so no
    product of two kept entries is subnormal; what they would add to c M^L is far below its rounding error.
    """
    tiny = math.sqrt(torch.finfo(M.dtype).tiny)
    out, power = c, M
    while L:
        if L & 1:
            out = out @ power
        L >>= 1
        if L:
            power = torch.nn.functional.hardshrink(power @ power, tiny)  # one fused pass: |x| <= tiny -> 0
    return out


def _to_real(C: torch.Tensor) -> torch.Tensor:
    return 2 * torch.cat([C.real, -C.imag], dim=-1)


def _to_paired(C_r: torch.Tensor) -> torch.Tensor:
    n2 = C_r.shape[-1] // 2
    return torch.complex(C_r[..., :n2], -C_r[..., n2:]) / 2


def ctilde(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, C: torch.Tensor, L: int, sign: int = -1) -> torch.Tensor:
    """C (I + sign·Ā^L) in the conjugate-paired basis (H, N2) complex.

    sign −1: C̃ of length L from C. sign +1: the doubling step, C̃_{2L} from C̃_L (``C`` holds C̃_L).
    """
    C_r = _to_real(C)[:, None, :]
    out = C_r + sign * times_power(C_r, bilinear_dense(dt, A, P), L)
    return _to_paired(out[:, 0, :])


def c_from_ctilde(dt: torch.Tensor, A: torch.Tensor, P: torch.Tensor, Ct: torch.Tensor, L: int) -> torch.Tensor:
    """C = C̃ (I − Ā^L)^{-1} (H, N2) complex: the output vector of the recurrence whose length-L kernel C̃ gives."""
    dA = bilinear_dense(dt, A, P)
    eye = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device).expand_as(dA)
    lhs = eye - times_power(eye, dA, L)  # I − Ā^L
    C_r = torch.linalg.solve(lhs.transpose(-1, -2), _to_real(Ct)[..., None])[..., 0]  # row vector C̃_r lhs^{-1}
    return _to_paired(C_r)

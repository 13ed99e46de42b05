"""Causal long convolution y = K * u + D·u per channel (the S4 training path).

``fft``: k_f = rfft(K, n=2L), u_f = rfft(u, n=2L), y = irfft(u_f·k_f)[..., :L] — zero padding to 2L makes the
circular convolution linear. O(b·H·L log L). ``direct``: the explicit causal sum y_t = Σ_{s ≤ t} K_s u_{t−s}
(a grouped ``conv1d`` over a left-padded input), O(b·H·L²) — the oracle.

Both compute in float32 (float64 when u or K is float64), because half-precision FFTs lose too much and
cuFFT half supports powers of two only, and return u's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _prepare(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes; return u and K (truncated or zero-padded to u's length) in the compute dtype."""
    if u.dim() != 3:
        raise ValueError(f"u must be (b, h, l), got {tuple(u.shape)}")
    if k.dim() != 2 or k.shape[0] != u.shape[1]:
        raise ValueError(f"k must be (h, l_k) with h={u.shape[1]}, got {tuple(k.shape)}")
    if D is not None and D.shape != (u.shape[1],):
        raise ValueError(f"D must be ({u.shape[1]},), got {tuple(D.shape)}")
    if u.is_complex() or k.is_complex():
        raise ValueError("fft_conv takes real u and k")
    wide = torch.float64 in (u.dtype, k.dtype)
    dtype = torch.float64 if wide else torch.float32
    L = u.shape[-1]
    # Taps beyond L never reach a causal output of length L; shorter kernels are zero beyond their end.
    k = k[:, :L] if k.shape[-1] >= L else F.pad(k, (0, L - k.shape[-1]))
    return u.to(dtype), k.to(dtype)


def _skip(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    return y if D is None else y + D.to(y.dtype)[:, None] * u


def fft_conv_fft(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """u: (b, h, l); k: (h, l_k); D: (h,) -> y (b, h, l) in u's dtype, through rfft with 2L padding."""
    out_dtype = u.dtype
    u, k = _prepare(u, k, D)
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]
    return _skip(y, u, D).to(out_dtype)


def fft_conv_direct(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as :func:`fft_conv_fft`, computed as an explicit causal convolution (no FFT)."""
    out_dtype = u.dtype
    u, k = _prepare(u, k, D)
    L = u.shape[-1]
    # conv1d is a cross-correlation: flipping K turns Σ_s K_s u_{t−s} into Σ_j K'_j u_{t−L+1+j}.
    y = F.conv1d(F.pad(u, (L - 1, 0)), k.flip(-1)[:, None, :], groups=u.shape[1])
    return _skip(y, u, D).to(out_dtype)

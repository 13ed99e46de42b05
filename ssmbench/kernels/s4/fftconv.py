"""Causal long convolution y = K * u + D·u per channel (the S4 training path).

``fft``: k_f = rfft(K, n=2L), u_f = rfft(u, n=2L), y = irfft(u_f·k_f)[..., :L] — zero padding to 2L makes the
circular convolution linear. O(b·H·L log L). ``direct``: the explicit causal sum y_t = Σ_{s ≤ t} K_s u_{t−s}
(a grouped ``conv1d`` over a left-padded input), O(b·H·L²) — the oracle.

Both compute in float32 (float64 when u or K is float64), because half-precision FFTs lose too much and
cuFFT half supports powers of two only, and return u's dtype.

``fft`` transforms a zero-padded copy of u with contiguous rows: S4 passes u as a transposed view of its (b, l, H)
activations, and the FFT of strided rows (zero-padded to 2L in u's stride order) cost more than the copy (measured
on the 2-core Xeon, H=256, L=1k, b=4, one thread: 11.3 -> 7.2 ms per layer). Under ``torch.compile`` the
convolution is the opaque op ``ssmbench::fft_conv`` (analytic backward ``ssmbench::fft_conv_backward``): traced as
plain ops, inductor laid the padded FFT input out in u's transposed stride order whatever the code asked for, and
the FFT then copied every row (the compiled S4 forward lost to eager at L=1k). As an op it runs the eager code.
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


def _fft_conv(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    out_dtype = u.dtype
    u, k = _prepare(u, k, D)
    b, h, L = u.shape
    n = 2 * L
    # The zero-padded input with contiguous rows (module docstring), written by one copy: .contiguous() and then
    # rfft(n=2L)'s own padding were two (H=256, one thread: 9.3 -> 7.1 ms at L=1k b=4, 15.5 -> 14.5 at 4k b=1).
    padded = u.new_empty(b, h, n)
    padded[..., L:].zero_()
    u = padded[..., :L].copy_(u)
    u_f = torch.fft.rfft(padded)
    y = torch.fft.irfft(u_f.mul_(torch.fft.rfft(k, n=n)), n=n)[..., :L]
    y = y if D is None else torch.addcmul(y, D.to(y.dtype)[:, None], u)
    return y.to(out_dtype)


def fft_conv_fft(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """u: (b, h, l); k: (h, l_k); D: (h,) -> y (b, h, l) in u's dtype, through rfft with 2L padding."""
    if torch.compiler.is_compiling():  # one opaque op in the graph (module docstring); eagerly a direct call
        return torch.ops.ssmbench.fft_conv(u, k, D)
    return _fft_conv(u, k, D)


@torch.library.custom_op("ssmbench::fft_conv", mutates_args=(), schema="(Tensor u, Tensor k, Tensor? D) -> Tensor")
def _fft_conv_op(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    # contiguous as the fake kernel says (without D the result is a slice of the 2L-long irfft output)
    return _fft_conv(u, k, D).contiguous()


@_fft_conv_op.register_fake
def _(u, k, D):
    _prepare(u, k, D)  # the same argument errors while tracing
    return torch.empty(u.shape, dtype=u.dtype, device=u.device)


@torch.library.custom_op("ssmbench::fft_conv_backward", mutates_args=(),
                         schema="(Tensor u, Tensor k, Tensor? D, Tensor grad) -> (Tensor, Tensor, Tensor)")
def _fft_conv_backward_op(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None,
                          grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(du, dk, dD) of ``fft_conv`` for the upstream ``grad`` (b, h, l); dD is empty without D.

    With y_t = Σ_{s≤t} K_s u_{t−s}: du_m = Σ_t g_t K_{t−m} and dK_j = Σ_{b,t} g_t u_{t−j}, correlations that the
    same 2L zero padding makes exact: irfft(G·conj(K_f)) and irfft(Σ_b G·conj(U_f)), cut to L."""
    u_c, k_c = _prepare(u, k, D)
    L, Lk = u_c.shape[-1], k.shape[-1]
    n = 2 * L
    u_c = u_c.contiguous()
    g = grad.to(u_c.dtype).contiguous()
    g_f = torch.fft.rfft(g, n=n)
    du = torch.fft.irfft(g_f * torch.fft.rfft(k_c, n=n).conj(), n=n)[..., :L]
    dk = torch.fft.irfft((g_f * torch.fft.rfft(u_c, n=n).conj()).sum(0), n=n)[..., :L]
    # taps beyond L (cut by _prepare) get no gradient; a shorter k gets its own taps' gradients
    dk = F.pad(dk, (0, Lk - L)) if Lk >= L else dk[:, :Lk]
    if D is None:
        dD = u.new_empty(0)
    else:
        du = du + D.to(g.dtype)[:, None] * g
        dD = (g * u_c).sum((0, 2)).to(D.dtype)
    return du.to(u.dtype).contiguous(), dk.to(k.dtype).contiguous(), dD


@_fft_conv_backward_op.register_fake
def _(u, k, D, grad):
    dD = u.new_empty(0) if D is None else torch.empty_like(D, memory_format=torch.contiguous_format)
    return (torch.empty_like(u, memory_format=torch.contiguous_format),
            torch.empty_like(k, memory_format=torch.contiguous_format), dD)


def _setup_context(ctx, inputs, output) -> None:
    u, k, D = inputs
    ctx.has_D = D is not None
    ctx.save_for_backward(u, k, D)


def _backward(ctx, grad):
    u, k, D = ctx.saved_tensors
    du, dk, dD = torch.ops.ssmbench.fft_conv_backward(u, k, D, grad)
    return du, dk, dD if ctx.has_D else None


_fft_conv_op.register_autograd(_backward, setup_context=_setup_context)


def fft_conv_direct(u: torch.Tensor, k: torch.Tensor, D: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as :func:`fft_conv_fft`, computed as an explicit causal convolution (no FFT)."""
    out_dtype = u.dtype
    u, k = _prepare(u, k, D)
    L = u.shape[-1]
    # conv1d is a cross-correlation: flipping K turns Σ_s K_s u_{t−s} into Σ_j K'_j u_{t−L+1+j}.
    y = F.conv1d(F.pad(u, (L - 1, 0)), k.flip(-1)[:, None, :], groups=u.shape[1])
    return _skip(y, u, D).to(out_dtype)

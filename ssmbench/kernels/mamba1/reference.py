"""Sequential Mamba-1 selective scan: the oracle every fast path is tested against.

Glossary: b batch, d channels, l length, n state size, g groups of B/C.
    delta = softplus(delta + delta_bias)            (if delta_softplus)
    h_t   = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t
    y_t   = <C_t, h_t> + D * u_t,  then y * silu(z)
Computation runs in float32 (or float64 when the inputs are float64) and is cast back to u's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ssmbench.kernels.mamba1._common import check_inputs, compute_dtype


def expand_groups(BC: torch.Tensor, d: int) -> torch.Tensor:
    """(b, n, l) or (b, g, n, l) -> (b, d, n, l); with g groups, channel i uses group i // (d // g)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(-1, d, -1, -1)
    g = BC.shape[1]
    if d % g:
        raise ValueError(f"channels d={d} must be divisible by groups g={g}")
    return BC.repeat_interleave(d // g, dim=1)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).

    Returns y (b, d, l) in u's dtype [, last state (b, d, n) in the compute dtype]. Differentiable through
    plain autograd, which makes it the gradient oracle too.
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = compute_dtype(u)
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    bsz, d, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bx = expand_groups(B.to(ct), d)
    Cx = expand_groups(C.to(ct), d)
    h = u.new_zeros(bsz, d, A.shape[1])
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]
        h = torch.exp(dt * A) * h + dt * u[:, :, t, None] * Bx[:, :, :, t]
        ys.append((h * Cx[:, :, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0)
    if D is not None:
        y = y + D.to(ct)[None, :, None] * u
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y

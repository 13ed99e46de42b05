"""Sequential Mamba-2 SSD recurrence: the oracle every fast SSD path is tested against.

Glossary: b batch, l length, h heads, p head dim, g groups of B/C (heads h share group h // (h/g)), n state size.
Per head the state matrix is a scalar times the identity, so with dt already processed
(dt = softplus(dt + dt_bias) when asked):

    H_t = exp(dt_t · A_h) · H_{t-1} + dt_t · x_t B_tᵀ        H: (p, n)
    y_t = H_t C_t + D_h ⊙ x_t,   then y ⊙ silu(z)

Computation runs in float32 (float64 when x is float64) and y is cast back to x's dtype; the final state is
returned in the compute dtype, like mamba_ssm. ``check_ssd_inputs`` is shared by every backend, ``stable_segsum`` by the
chunked forward and the hand-written backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 stays float64 (the oracle tests); everything else accumulates in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_ssd_inputs(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,
                     initial_states=None) -> tuple[int, int, int, int, int, int]:
    """Validate shapes for the SSD signature; returns (b, l, h, p, g, n). Raises ValueError on any mismatch."""
    if x.dim() != 4:
        raise ValueError(f"x must be (b, l, h, p), got shape {tuple(x.shape)}")
    b, length, h, p = x.shape
    if B.dim() != 4 or B.shape[:2] != (b, length):
        raise ValueError(f"B must be (b, l, g, n) = ({b}, {length}, g, n), got {tuple(B.shape)}")
    g, n = B.shape[2], B.shape[3]
    expected = {
        "dt": (dt, (b, length, h)),
        "A": (A, (h,)),
        "C": (C, (b, length, g, n)),
        "z": (z, (b, length, h, p)),
        "dt_bias": (dt_bias, (h,)),
        "initial_states": (initial_states, (b, h, p, n)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if D is not None and tuple(D.shape) not in ((h,), (h, p)):
        raise ValueError(f"D must have shape ({h},) or ({h}, {p}), got {tuple(D.shape)}")
    if g == 0 or h % g:
        raise ValueError(f"heads h={h} must be divisible by groups g={g}")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return b, length, h, p, g, n


def process_dt(dt: torch.Tensor, dt_bias, dt_softplus: bool, ct: torch.dtype) -> torch.Tensor:
    """dt (b, l, h) -> softplus(dt + dt_bias) (each part optional) in the compute dtype."""
    dt = dt.to(ct)
    if dt_bias is not None:
        dt = dt + dt_bias.to(ct)
    return F.softplus(dt) if dt_softplus else dt


def apply_skip_and_gate(y: torch.Tensor, x: torch.Tensor, D, z) -> torch.Tensor:
    """y + D ⊙ x (D: (h,) or (h, p)), then y ⊙ silu(z); y, x, z: (..., h, p) in the compute dtype of y."""
    if D is not None:
        Dc = D.to(y.dtype)
        y = y + x.to(y.dtype) * (Dc[:, None] if Dc.dim() == 1 else Dc)
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def stable_segsum(a: torch.Tensor) -> torch.Tensor:
    """a: (..., Q) -> (..., Q, Q) with out[..., i, j] = a_{j+1} + … + a_i for i ≥ j, and 0 above the diagonal.

    Each entry is its own short sum (a masked cumsum down the columns), so it keeps full relative precision even
    when the chunk's total decay is large, unlike cumsum(a)_i − cumsum(a)_j. Entries above the diagonal are 0,
    not -inf: callers mask them out of the product with C Bᵀ, which keeps exp() finite and gradients NaN-free.
    """
    q = a.shape[-1]
    strict_lower = torch.tril(torch.ones(q, q, dtype=a.dtype, device=a.device), diagonal=-1)
    terms = a.reshape(-1, q, 1) * strict_lower  # terms[i, j] = a_i if i > j else 0; 3-D keeps cumsum fast
    return terms.cumsum(dim=1).view(*a.shape, q)


def ssd_ref(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
            initial_states=None, return_final_states=False):
    """Sequential SSD over l (``chunk_size`` is validated and otherwise unused: the recurrence has no chunks).

    x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); D: (h,) or (h, p); z: (b, l, h, p);
    dt_bias: (h,); initial_states: (b, h, p, n). Returns y (b, l, h, p) [, final_states (b, h, p, n)].
    """
    b, length, h, p, g, n = check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    ct = compute_dtype(x)
    xc = x.to(ct)
    dtc = process_dt(dt, dt_bias, dt_softplus, ct)
    Ac = A.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n): head i reads group i // (h / g)
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)
    state = initial_states.to(ct) if initial_states is not None else xc.new_zeros(b, h, p, n)
    ys = []
    for t in range(length):
        dt_t = dtc[:, t]  # (b, h)
        decay = torch.exp(dt_t * Ac)[:, :, None, None]
        state = decay * state + (dt_t[:, :, None] * xc[:, t])[..., None] * Bh[:, t, :, None, :]
        ys.append((state * Ch[:, t, :, None, :]).sum(-1))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else xc.new_zeros(b, 0, h, p)
    y = apply_skip_and_gate(y, xc, D, z).to(x.dtype)
    return (y, state) if return_final_states else y

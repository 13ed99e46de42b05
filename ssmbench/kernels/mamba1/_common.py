"""Argument checks and small helpers shared by the Mamba-1 selective-scan backends.

Glossary: b batch, d channels, l length, n state size, g groups of B/C (channel i reads group i // (d // g)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScanShape:
    b: int
    d: int
    l: int
    n: int
    g: int

    @property
    def cpg(self) -> int:
        """Channels per group."""
        return self.d // self.g


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 inputs compute in float64; everything else (fp32, bf16, fp16) in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 D: torch.Tensor | None = None, z: torch.Tensor | None = None,
                 delta_bias: torch.Tensor | None = None) -> ScanShape:
    """Validate the mamba_ssm ``selective_scan_fn`` shapes and return the sizes.

    u, delta, z: (b, d, l); A: (d, n) real; B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    """
    if u.dim() != 3:
        raise ValueError(f"u must be (b, d, l), got shape {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must match u {tuple(u.shape)}, got {tuple(z.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported; A must be a real (d, n) tensor")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"A must be (d={d}, n), got {tuple(A.shape)}")
    n = A.shape[1]
    groups = {}
    for name, x in (("B", B), ("C", C)):
        if x.is_complex():
            raise ValueError(f"complex {name} is not supported")
        if x.dim() not in (3, 4) or x.shape[0] != b or x.shape[-2:] != (n, l):
            raise ValueError(f"{name} must be (b, n, l) = {(b, n, l)} or (b, g, n, l) = {(b, 'g', n, l)}, "
                             f"got {tuple(x.shape)}")
        groups[name] = 1 if x.dim() == 3 else x.shape[1]
    g = max(groups.values())
    if any(gx not in (1, g) for gx in groups.values()):
        raise ValueError(f"B and C have different group counts {groups['B']} and {groups['C']}")
    if d % g:
        raise ValueError(f"channels d={d} must be divisible by groups g={g}")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and tuple(x.shape) != (d,):
            raise ValueError(f"{name} must be (d,) = ({d},), got {tuple(x.shape)}")
    return ScanShape(b, d, l, n, g)


def as_groups(BC: torch.Tensor, g: int) -> torch.Tensor:
    """(b, n, l) or (b, 1, n, l) -> (b, g, n, l) by broadcasting (a view); (b, g, n, l) unchanged.

    A single group is shared by every channel, so it equals g identical groups; this lets B and C use
    different layouts (as mamba_ssm allows) while the kernels see one group count.
    """
    BC = BC.unsqueeze(1) if BC.dim() == 3 else BC
    return BC.expand(-1, g, -1, -1) if BC.shape[1] != g else BC


def prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """softplus(delta + bias) as the reference computes it (torch ops, so autograd covers it)."""
    if delta_bias is not None:
        delta = delta + delta_bias.to(delta.dtype)[None, :, None]
    return torch.nn.functional.softplus(delta) if delta_softplus else delta


def gate(y: torch.Tensor, u: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None) -> torch.Tensor:
    """y + D u, then * silu(z). y, u, z: (b, d, l) in the compute dtype; D: (d,)."""
    if D is not None:
        y = torch.addcmul(y, D.to(y.dtype)[None, :, None], u)
    if z is not None:
        y = y * torch.nn.functional.silu(z.to(y.dtype))
    return y

"""Conventions of the C++ kernels' ``torch.library`` ops (Mamba-1 scan, SSD): an op returns no None, so a gradient
of an absent optional input (D, z, bias, initial states) is an empty tensor, and every output is contiguous, as the
fake kernels declare."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def op_outputs(tensors: Iterable[torch.Tensor | None], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The real op's outputs: each tensor contiguous, None as an empty tensor of ``like``'s dtype and device."""
    return tuple(like.new_empty(0) if t is None else t.contiguous() for t in tensors)


def fake_outputs(shapes_of: Iterable[torch.Tensor | None], like: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The fake op's outputs: a contiguous empty tensor shaped and typed like each given one, None as empty."""
    return tuple(like.new_empty(0) if t is None else torch.empty(t.shape, dtype=t.dtype, device=t.device)
                 for t in shapes_of)

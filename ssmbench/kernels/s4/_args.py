"""Argument checks shared by every ``s4_kernel`` backend (one signature, explicit ValueErrors)."""

from __future__ import annotations

import torch

MODES = ("diag", "dplr")


def check_kernel_args(dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, L: int,
                      P: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Validate the ``s4_kernel`` arguments; return dt cast to the real dtype matching A.

    dt: (H,) real step sizes; A, B, C: (H, N2) complex (one member of each conjugate pair);
    P: (H, N2) complex, the rank-1 term of A = Λ − P P* (``mode="dplr"`` only); L: kernel length >= 1.
    """
    if mode not in MODES:
        raise ValueError(f"unknown s4_kernel mode '{mode}'; known: {', '.join(MODES)}")
    if not isinstance(L, int) or L < 1:
        raise ValueError(f"kernel length L must be a positive int, got {L!r}")
    if A.dim() != 2 or not A.is_complex():
        raise ValueError(f"A must be a complex (H, N2) tensor, got {tuple(A.shape)} {A.dtype}")
    named = {"B": B, "C": C} if mode == "diag" else {"B": B, "C": C, "P": P}
    for name, t in named.items():
        if t is None:
            raise ValueError(f"mode '{mode}' needs {name}")
        if t.shape != A.shape or t.dtype != A.dtype:
            raise ValueError(f"{name} must match A: {tuple(A.shape)} {A.dtype}, got {tuple(t.shape)} {t.dtype}")
    if mode == "diag" and P is not None:
        raise ValueError("P (the low-rank term) is only used by mode='dplr'")
    if dt.shape != A.shape[:1] or dt.is_complex():
        raise ValueError(f"dt must be a real ({A.shape[0]},) tensor, got {tuple(dt.shape)} {dt.dtype}")
    return dt.to(A.real.dtype)

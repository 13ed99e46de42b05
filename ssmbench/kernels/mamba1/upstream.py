"""Adapter over the official CUDA kernel, ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``.

Same signature and layouts as ours (mamba_ssm defines them). Pitfall (docs/kernels.md §7): ``mamba_ssm`` can
import while its compiled extension ``selective_scan_cuda`` is missing (a wheel built without
MAMBA_KEEP_CUDA_BUILD), and then fails only on the first call; the probe imports the extension itself.
"""

from __future__ import annotations

import torch

from ssmbench.kernels.mamba1._common import check_inputs


def probe() -> str | None:
    """None when mamba_ssm, its CUDA extension and a GPU are all present, else what is missing."""
    try:
        import selective_scan_cuda  # noqa: F401  - the compiled kernel behind selective_scan_fn
    except ImportError as exc:
        return f"mamba_ssm's CUDA extension selective_scan_cuda is not importable ({exc}); pip install mamba-ssm"
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception as exc:  # the package __init__ pulls optional kernels that may fail to import
        return f"mamba_ssm.ops.selective_scan_interface failed to import: {type(exc).__name__}: {exc}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    return None


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                             return_last_state=False):
    """u, delta, z: (b, d, l) fp32/fp16/bf16 on CUDA; A: (d, n) fp32; B, C: (b, n, l) or (b, g, n, l).

    Returns y (b, d, l) [, last state (b, d, n) float32]. float64 is not supported upstream.
    """
    check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if u.dtype == torch.float64:
        raise ValueError("mamba_ssm's selective_scan_fn does not support float64; use backend='chunked' or 'reference'")
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u, delta, A.float(), B, C, D=D, z=z, delta_bias=delta_bias,
                             delta_softplus=delta_softplus, return_last_state=return_last_state)

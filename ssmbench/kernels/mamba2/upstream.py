"""Adapters for the official SSD kernels: mamba_ssm's ``mamba_chunk_scan_combined`` and fla's ``chunk_simple_gla``.

Both are optional CUDA/Triton packages. Each probe imports the *specific* submodule the adapter needs
(``mamba_ssm``'s package ``__init__`` pulls in unrelated Mamba-3 dependencies, see docs/kernels.md §7), and any
failure, an ImportError or a RuntimeError raised at import by a Triton-version guard, makes the backend
"unavailable: <reason>" rather than a crash.

fla mapping (SSD as gated linear attention with a scalar per-head decay): q = C, k = B (both expanded from g groups
to h heads), v = x·dt, log-decay g = dt·A, **scale = 1.0** (fla's default 1/√n is wrong for SSD); fla's state is
(b, h, n, p), ours (b, h, p, n). D and z are applied here, after the kernel.
"""

from __future__ import annotations

import inspect

from ssmbench.kernels.mamba2.reference import apply_skip_and_gate, check_ssd_inputs, compute_dtype, process_dt


def probe_mamba_ssm() -> str | None:
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined  # noqa: F401
    except Exception as exc:  # ImportError, or a version guard raising at import
        return f"pip install mamba-ssm ({type(exc).__name__}: {exc})"
    return None


def probe_fla() -> str | None:
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # noqa: F401
    except Exception as exc:
        return f"pip install flash-linear-attention ({type(exc).__name__}: {exc})"
    return None


def ssd_mamba_ssm(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                  initial_states=None, return_final_states=False):
    """mamba_ssm's fused Triton SSD; same signature and layouts as ours."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    return mamba_chunk_scan_combined(x, dt, A, B, C, int(chunk_size), D=D, z=z, dt_bias=dt_bias,
                                     initial_states=initial_states, dt_softplus=dt_softplus,
                                     return_final_states=return_final_states)


def ssd_fla(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
            initial_states=None, return_final_states=False):
    """SSD through fla's ``chunk_simple_gla`` (fla picks its own chunk size; ``chunk_size`` is only validated)."""
    from fla.ops.simple_gla import chunk_simple_gla

    _, _, h, _, g, _ = check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    ct = compute_dtype(x)
    dtc = process_dt(dt, dt_bias, dt_softplus, ct)  # (b, l, h)
    q = C.repeat_interleave(h // g, dim=2).to(x.dtype)  # (b, l, h, n)
    k = B.repeat_interleave(h // g, dim=2).to(x.dtype)
    v = (x * dtc[..., None]).to(x.dtype)
    log_decay = (dtc * A.to(ct)).float()
    kwargs = {"g": log_decay, "scale": 1.0, "output_final_state": True,
              "initial_state": None if initial_states is None else initial_states.transpose(-1, -2).float()}
    if "head_first" in inspect.signature(chunk_simple_gla).parameters:  # older fla defaults to (b, h, l, ·)
        kwargs["head_first"] = False
    y, final = chunk_simple_gla(q, k, v, **kwargs)
    y = apply_skip_and_gate(y.to(ct), x, D, z).to(x.dtype)
    return (y, final.transpose(-1, -2)) if return_final_states else y

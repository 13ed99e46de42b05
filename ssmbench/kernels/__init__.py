"""Functional kernels with one signature per op and many backends (docs/kernels.md).

Public API::

    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto")
    mamba_step(hidden, conv_state, ssm_state, weights, backend="auto")   # one Mamba-1 decode step
    ssd(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
        initial_states=None, return_final_states=False, backend="auto")
    attention(q, k, v, causal=True, backend="auto")
    backends(op) -> list[BackendStatus]
    last_backend(op) -> name of the backend that ran most recently for ``op`` (recorded in results)

Backends are declared per op folder and imported lazily (see ``_backend.py``).
The folders are named by family (``mamba1/`` holds the selective scan, ``mamba2/`` the SSD, ``sdpa.py``
attention) rather than by op: a subpackage named ``selective_scan`` would replace the ``selective_scan``
function on this package the moment it is imported.
"""

from __future__ import annotations

from typing import Any

from ssmbench.kernels._backend import (
    Backend,
    BackendStatus,
    BackendUnavailable,
    load_target,
    quick_status,
    resolve,
    status,
)

# op name -> "module:ATTR" naming the op's tuple[Backend, ...]
_OP_MODULES = {
    "selective_scan": "ssmbench.kernels.mamba1:BACKENDS",
    "mamba_step": "ssmbench.kernels.mamba1:STEP_BACKENDS",
    "ssd": "ssmbench.kernels.mamba2:BACKENDS",
    "s4_kernel": "ssmbench.kernels.s4:KERNEL_BACKENDS",
    "fft_conv": "ssmbench.kernels.s4:FFT_CONV_BACKENDS",
    "causal_conv1d": "ssmbench.kernels._tables:CONV_BACKENDS",
    "attention": "ssmbench.kernels._tables:ATTENTION_BACKENDS",
}

_last_backend: dict[str, str] = {}
# (op, requested backend, device type, dtype) -> (backend name, function). Besides saving the lookup, this keeps
# torch.compile from tracing into the resolution (imports, probes: graph breaks) once a call has run eagerly.
_s4_auto: dict[tuple[str, str], str] = {}  # (mode, device type) -> the s4_kernel backend "auto" runs
_resolved: dict[tuple[str, str, str, str | None], tuple[str, Any]] = {}

__all__ = [
    "BackendStatus",
    "BackendUnavailable",
    "attention",
    "backend_names",
    "backends",
    "causal_conv1d",
    "dispatch",
    "fft_conv",
    "forget_last_backends",
    "installed_backends",
    "last_backend",
    "mamba_step",
    "ops",
    "s4_kernel",
    "selective_scan",
    "ssd",
]


def ops() -> list[str]:
    return list(_OP_MODULES)


def _op_backends(op: str) -> tuple[Backend, ...]:
    if op not in _OP_MODULES:
        raise KeyError(f"unknown op '{op}'; known: {', '.join(_OP_MODULES)}")
    return load_target(_OP_MODULES[op])


def backend_names(op: str) -> list[str]:
    """Names of the backends of ``op``, without probing whether they can run (cheap)."""
    return [b.name for b in _op_backends(op)]


def backends(op: str, device: str | None = None) -> list[BackendStatus]:
    """Every backend of ``op`` with availability (on ``device`` if given) and the reason when unavailable."""
    return status(_op_backends(op), device)


def installed_backends(op: str) -> list[BackendStatus]:
    """Every backend of ``op``, "available" meaning its dependencies are installed (no probe runs: fast)."""
    return quick_status(_op_backends(op))


def dispatch(op: str, backend: str, device_type: str, dtype: str | None = None) -> tuple[str, Any]:
    """Resolve ``backend`` ("auto" or a name) for ``op`` on ``device_type`` (and inputs of ``dtype``, for backends
    that restrict it); remembers the choice."""
    key = (op, backend, device_type, dtype)
    hit = _resolved.get(key)
    if hit is None:
        hit = _resolved[key] = resolve(op, _op_backends(op), backend, device_type, dtype)
    _last_backend[op] = hit[0]
    return hit


def last_backend(op: str) -> str | None:
    return _last_backend.get(op)


def forget_last_backends() -> None:
    """Clear what :func:`last_backend` remembers, so that afterwards it names only backends that ran since."""
    _last_backend.clear()


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str = "auto"):
    """Mamba-1 selective scan. u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D: (d,).

    Returns y (b, d, l), and the last state (b, d, n) when ``return_last_state``.
    """
    _, fn = dispatch("selective_scan", backend, u.device.type)
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)


def mamba_step(hidden, conv_state, ssm_state, weights, backend: str = "auto"):
    """One Mamba-1 mixer decode step. hidden: (b, dm); conv_state (b, di, k) and ssm_state (b, di, n) are updated
    in place; ``weights`` is a ``kernels.mamba1.step.MambaStepWeights``. Returns (b, dm)."""
    _, fn = dispatch("mamba_step", backend, hidden.device.type, str(hidden.dtype).removeprefix("torch."))
    return fn(hidden, conv_state, ssm_state, weights)


def ssd(x, dt, A, B, C, chunk_size: int, D=None, z=None, dt_bias=None, dt_softplus=False,
        initial_states=None, return_final_states=False, backend: str = "auto"):
    """Mamba-2 SSD. x: (b, l, h, p); dt: (b, l, h); A: (h,); B, C: (b, l, g, n); D: (h,) or (h, p).

    Returns y (b, l, h, p), and the final states (b, h, p, n) when ``return_final_states``.
    """
    _, fn = dispatch("ssd", backend, x.device.type)
    return fn(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus,
              initial_states=initial_states, return_final_states=return_final_states)


def causal_conv1d(x, weight, bias=None, activation: str | None = None, backend: str = "auto"):
    """Depthwise causal convolution. x: (b, d, l); weight: (d, w); bias: (d,). Returns (b, d, l)."""
    _, fn = dispatch("causal_conv1d", backend, x.device.type)
    return fn(x, weight, bias, activation)


def s4_kernel(dt, A, B, C, L: int, P=None, mode: str = "diag", backend: str = "auto"):
    """S4 convolution kernel K (h, L), real. dt: (h,); A, B, C, P: (h, n/2) complex (conjugate pairs kept once).

    mode "diag": S4D with ZOH; mode "dplr": S4 with bilinear discretisation of A = Λ − P P* (pass Λ as A), where C
    is C̃ = C (I − Ā^L), S4's trained parameter (``kernels.s4.ctilde`` converts between C, C̃ and lengths).
    "auto" runs the fastest available backend of the mode (vandermonde / cauchy_compiled > cauchy).
    """
    if backend == "auto":
        key = (mode, dt.device.type)
        if key not in _s4_auto:  # probed once (cached, like dispatch: torch.compile must not trace the probes)
            from ssmbench.kernels.s4 import AUTO_BY_MODE

            usable = {b.name for b in backends("s4_kernel", dt.device.type) if b.available}
            _s4_auto[key] = next((name for name in AUTO_BY_MODE.get(mode, ()) if name in usable), backend)
        backend = _s4_auto[key]
    _, fn = dispatch("s4_kernel", backend, dt.device.type)
    return fn(dt, A, B, C, L, P=P, mode=mode)


def fft_conv(u, k, D=None, backend: str = "auto"):
    """Causal long convolution y = k * u + D·u. u: (b, h, l); k: (h, l_k); D: (h,). Returns (b, h, l)."""
    _, fn = dispatch("fft_conv", backend, u.device.type)
    return fn(u, k, D)


def attention(q, k, v, causal: bool = True, backend: str = "auto"):
    """Scaled dot-product attention, layout (b, h, l, d), with an explicit SDPA backend choice."""
    _, fn = dispatch("attention", backend, q.device.type, str(q.dtype).removeprefix("torch."))
    return fn(q, k, v, causal)

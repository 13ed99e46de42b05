"""The C++ Cauchy sums + Woodbury (``cpu_cauchy.cpp``), built on first use like the other CPU kernels (``_cpp.py``).

The kernel takes real inputs only: per conjugate pair the ten real coefficients of the pair form (``coef``,
:func:`ssmbench.kernels.s4.dplr.pair_coefficients`), x = 1/Δ per channel, and the planar frequency terms om, s.
Frequencies are padded to whole SIMD vectors (om = 1, s = 0 on the padding keeps the reciprocals finite; the padded
outputs are dropped).
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmbench.kernels import _cpp

_SOURCE = Path(__file__).with_name("cpu_cauchy.cpp")
_PTR, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_FWD_ARGS = [_PTR] * 6 + [_I64] * 4 + [_PTR] + [_INT]
_BWD_ARGS = [_PTR] * 6 + [_I64] * 3 + [_PTR] * 3 + [_INT]


@cache
def library() -> ctypes.CDLL:
    lib = _cpp.load(_SOURCE, "ssmbench_cpu_cauchy")
    for suffix in ("f32", "f64"):
        for kind, argtypes in (("fwd", _FWD_ARGS), ("bwd", _BWD_ARGS)):
            fn = getattr(lib, f"cauchy_{kind}_{suffix}")
            fn.argtypes, fn.restype = argtypes, _INT
    return lib


def probe() -> str | None:
    """None when the kernel builds (or is cached) and loads here, else why not."""
    return _cpp.probe(library)


def _inputs(om, x, s, coef) -> tuple[list[torch.Tensor], int, int]:
    """Contiguous, frequency-padded arrays in the C order (coef, x, om, s) and the padded frequency count."""
    F_ = om.shape[0]
    lanes = 64 // x.element_size()
    pad = -F_ % lanes
    if pad:  # om = 1, s = 0 on the padding keeps every reciprocal finite; the padded outputs are dropped
        om = torch.cat([om, torch.ones(pad, dtype=om.dtype, device=om.device)])
        s = F.pad(s, (0, pad))
    arrays = [coef.contiguous(), x.contiguous(), om.real.contiguous(), om.imag.contiguous(), s.real.contiguous(),
              s.imag.contiguous()]
    return arrays, F_ + pad, F_


def _suffix(t: torch.Tensor) -> str:
    return "f64" if t.dtype == torch.float64 else "f32"


def cauchy_forward(om, x, s, coef) -> torch.Tensor:
    """K (H, F) = k0 − s k1 k2 / (1 + s k3) with k_q the pair-form Cauchy sums; om, s (F,) complex, x (H,) real,
    coef (H, N2, 10) real."""
    arrays, Fp, F_ = _inputs(om, x, s, coef)
    H, N2 = coef.shape[:2]
    cdtype = torch.complex128 if coef.dtype == torch.float64 else torch.complex64
    K = torch.empty(H, F_, dtype=cdtype, device=coef.device)  # unpadded and contiguous: irfft reads it in place
    rc = getattr(library(), f"cauchy_fwd_{_suffix(coef)}")(*(a.data_ptr() for a in arrays), H, N2, Fp, F_,
                                                            torch.view_as_real(K).data_ptr(), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled Cauchy forward failed (code {rc})")
    return K


def cauchy_backward(om, x, s, coef, grad) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients (dx (H,), dcoef (H, N2, 10)) of :func:`cauchy_forward` for the upstream ``grad`` (H, F)."""
    arrays, Fp, F_ = _inputs(om, x, s, coef)
    H, N2 = coef.shape[:2]
    gK = torch.view_as_real(F.pad(grad, (0, Fp - F_)).contiguous())
    dcoef, dx = torch.empty_like(arrays[0]), torch.empty_like(arrays[1])
    rc = getattr(library(), f"cauchy_bwd_{_suffix(coef)}")(*(a.data_ptr() for a in arrays), H, N2, Fp, gK.data_ptr(),
                                                            dcoef.data_ptr(), dx.data_ptr(), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled Cauchy backward failed (code {rc})")
    return dx, dcoef


# The same kernel as torch.library ops for torch.compile: a ctypes call traced by dynamo would guard on raw data
# pointers, and behind torch.compiler.disable it broke the compiled S4-DPLR forward into six graphs. As ops (with
# fake kernels and the analytic backward registered) the kernel stays inside one graph. Eagerly the kernel is called
# directly (``dplr.CompiledWoodbury``); the ops' Python dispatch would add nothing there.
@torch.library.custom_op("ssmbench::s4_cauchy_woodbury", mutates_args=(),
                         schema="(Tensor om, Tensor x, Tensor s, Tensor coef) -> Tensor")
def _woodbury_op(om: torch.Tensor, x: torch.Tensor, s: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    return cauchy_forward(om, x, s, coef)


@_woodbury_op.register_fake
def _(om, x, s, coef):
    cdtype = torch.complex128 if coef.dtype == torch.float64 else torch.complex64
    return coef.new_empty(coef.shape[0], om.shape[0], dtype=cdtype)


@torch.library.custom_op("ssmbench::s4_cauchy_woodbury_backward", mutates_args=(),
                         schema="(Tensor om, Tensor x, Tensor s, Tensor coef, Tensor grad) -> (Tensor, Tensor)")
def _woodbury_backward_op(om: torch.Tensor, x: torch.Tensor, s: torch.Tensor, coef: torch.Tensor,
                          grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dx, dcoef = cauchy_backward(om, x, s, coef, grad)
    return dx.view(x.shape), dcoef.view(coef.shape)


@_woodbury_backward_op.register_fake
def _(om, x, s, coef, grad):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(coef, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    om, x, s, coef = ctx.saved_tensors
    dx, dcoef = torch.ops.ssmbench.s4_cauchy_woodbury_backward(om, x, s, coef, grad)
    return None, dx, None, dcoef


_woodbury_op.register_autograd(_backward, setup_context=_setup_context)

"""Compiled CPU SSD: the C++/OpenMP register-blocked recurrence in ``cpu_ssd.cpp``, built on first use.

The forward runs in C++ (float32, or float64 for the oracle tests) with no intermediates: memory is the inputs and
outputs. When a gradient is wanted the same forward also stores the state entering every chunk (the rows are in
registers at the chunk boundary), and ``backward.py``'s GEMM backward runs from those states: a recurrence backward
in C++ would need per-step cross-lane reductions for dB and dC, while the chunked backward is batched GEMMs.
Anything that stops the build (no compiler, no ninja, a compile error) makes :func:`probe` return the reason.
"""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmbench.kernels import _cpp
from ssmbench.kernels._ops import fake_outputs, op_outputs
from ssmbench.kernels.mamba2.backward import ssd_backward, ssd_trainable
from ssmbench.kernels.mamba2.reference import check_ssd_inputs, compute_dtype

_SOURCE = Path(__file__).with_name("cpu_ssd.cpp")
_NB = 16  # state rows per register tile (cpu_ssd.cpp)

_PTR, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_FWD_ARGS = [_PTR] * 6 + [_INT] + [_PTR] * 2 + [_I64] * 6 + [_PTR] * 3 + [_I64, _INT]


@cache
def library() -> ctypes.CDLL:
    """The loaded kernel library, built first if no cached build matches this source, flags and CPU."""
    lib = _cpp.load(_SOURCE, "ssmbench_cpu_ssd")
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"ssd_fwd_{suffix}")
        fn.argtypes, fn.restype = _FWD_ARGS, _INT
    return lib


def probe() -> str | None:
    """None when the kernel builds (or is cached) and loads here, else why not."""
    return _cpp.probe(library)


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def ssd_forward(x, dt, A, B, C, D=None, z=None, initial_states=None, chunk: int | None = None):
    """The C++ forward on compute-dtype tensors (dt already processed). Returns y (b, l, h, p), final (b, h, p, n)
    and, when ``chunk`` is given, the state entering every chunk, (b, ceil(l / chunk), h, n, p), else None.

    Head dims and state sizes that are not whole tiles are zero-padded (padded lanes and states stay zero).
    """
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    lanes = 64 // x.element_size()
    pp, nn = _round_up(p, lanes), _round_up(n, _NB)
    if pp != p:
        x = F.pad(x, (0, pp - p))
        z = None if z is None else F.pad(z, (0, pp - p))
        D = D if D is None or D.dim() == 1 else F.pad(D, (0, pp - p))
    if nn != n:
        B, C = F.pad(B, (0, nn - n)), F.pad(C, (0, nn - n))
    if initial_states is not None and (pp, nn) != (p, n):
        initial_states = F.pad(initial_states, (0, nn - n, 0, pp - p))
    x, dt, A, B, C = (t.contiguous() for t in (x, dt, A, B, C))
    D, z, S0 = (None if t is None else t.contiguous() for t in (D, z, initial_states))
    y = torch.empty_like(x)
    final = x.new_empty(b, h, pp, nn)
    ckpt = x.new_empty(b, -(-length // chunk), h, nn, pp) if chunk else None
    fn = getattr(library(), f"ssd_fwd_{'f64' if x.dtype == torch.float64 else 'f32'}")
    rc = fn(x.data_ptr(), dt.data_ptr(), A.data_ptr(), B.data_ptr(), C.data_ptr(),
            None if D is None else D.data_ptr(), int(D is not None and D.dim() == 2),
            None if z is None else z.data_ptr(), None if S0 is None else S0.data_ptr(),
            b, length, h, pp, g, nn, y.data_ptr(), final.data_ptr(), None if ckpt is None else ckpt.data_ptr(),
            chunk or 0, torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled SSD forward failed (code {rc})")
    if (pp, nn) != (p, n):
        y, final = y[..., :p], final[:, :, :p, :n]
        ckpt = None if ckpt is None else ckpt[..., :n, :p].contiguous()
    return y, final, ckpt


def forward_with_states(x, dt, A, B, C, D, S0, chunk: int):
    """The core op for ``backward.ssd_trainable``: y (D applied), final and the chunk-entry states, from C++."""
    return ssd_forward(x, dt, A, B, C, D=D, initial_states=S0, chunk=chunk)


# The same kernel as torch.library ops for torch.compile: traced by dynamo, the ctypes call would guard on raw data
# pointers, and behind torch.compiler.disable it split every compiled Mamba-2 / hybrid forward at each layer's SSD. As
# ops (fake kernels, and backward.py's GEMM backward as the op ssmbench::ssd_backward) the SSD stays inside one graph,
# forward and backward. ``chunk`` > 0 also returns the chunk-entry states for the backward (training), 0 returns an
# empty tensor there (inference, where z may be fused into the kernel); it is decided when tracing. Eagerly the kernel
# is called directly (no op dispatch). The ops take and return contiguous tensors (the fakes say so).
@torch.library.custom_op("ssmbench::ssd", mutates_args=(),
                         schema="(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
                                "Tensor? initial_states, int chunk) -> (Tensor, Tensor, Tensor)")
def _ssd_op(x, dt, A, B, C, D, z, initial_states, chunk: int):
    y, final, s_prev = ssd_forward(x, dt, A, B, C, D, z, initial_states, chunk or None)
    return y.contiguous(), final.contiguous(), x.new_empty(0) if s_prev is None else s_prev


@_ssd_op.register_fake
def _(x, dt, A, B, C, D, z, initial_states, chunk):
    b, length, h, p = x.shape
    n = B.shape[3]
    s_prev = x.new_empty(b, -(-length // chunk), h, n, p) if chunk else x.new_empty(0)
    return torch.empty(b, length, h, p, dtype=x.dtype, device=x.device), x.new_empty(b, h, p, n), s_prev


@torch.library.custom_op("ssmbench::ssd_backward", mutates_args=(),
                         schema="(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor s_prev, "
                                "Tensor? dy, Tensor? dfinal, int chunk) "
                                "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
def _ssd_backward_op(x, dt, A, B, C, D, s_prev, dy, dfinal, chunk: int):
    """(dx, ddt, dA, dB, dC, dD, d initial_states) by ``backward.ssd_backward``; dD is empty without D."""
    x, dt, A, B, C, s_prev = (t.contiguous() for t in (x, dt, A, B, C, s_prev))
    D = None if D is None else D.contiguous()
    dy = torch.zeros_like(x) if dy is None else dy.to(x.dtype).contiguous()
    grads = ssd_backward(x, dt, A, B, C, D, s_prev, dy, dfinal, chunk)
    return op_outputs(grads, x)


@_ssd_backward_op.register_fake
def _(x, dt, A, B, C, D, s_prev, dy, dfinal, chunk):
    b, _, h, p = x.shape
    return (*fake_outputs((x, dt, A, B, C, D), x), x.new_empty(b, h, p, B.shape[3]))


def _ssd_setup_context(ctx, inputs, output) -> None:
    x, dt, A, B, C, D, z, S0, chunk = inputs
    if any(ctx.needs_input_grad) and (z is not None or not chunk):
        raise RuntimeError("ssmbench::ssd is differentiable with chunk > 0 and no z only (ssd_trainable calls it so)")
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, dt, A, B, C, D, output[2])
    ctx.chunk, ctx.has_D, ctx.has_S0 = chunk, D is not None, S0 is not None


def _ssd_op_backward(ctx, dy, dfinal, _ds_prev):
    x, dt, A, B, C, D, s_prev = ctx.saved_tensors
    dx, ddt, dA, dB, dC, dD, dS0 = torch.ops.ssmbench.ssd_backward(x, dt, A, B, C, D, s_prev, dy, dfinal, ctx.chunk)
    return dx, ddt, dA, dB, dC, dD if ctx.has_D else None, None, dS0 if ctx.has_S0 else None, None


_ssd_op.register_autograd(_ssd_op_backward, setup_context=_ssd_setup_context)


def _op_core(x, dt, A, B, C, D, S0, chunk: int):
    """``ssd_trainable``'s core under torch.compile: the registered op, chunk-entry states saved for its backward."""
    y, final, _ = torch.ops.ssmbench.ssd(x, dt, A, B, C, D, None, S0, chunk)
    return y, final


def ssd_compiled(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
                 initial_states=None, return_final_states=False):
    """Compiled CPU SSD (signature of ``ssd_ref``; ``chunk_size`` is validated, the recurrence has no chunks).

    Returns y (b, l, h, p) in x's dtype [, final_states (b, h, p, n) in float32, float64 for float64 inputs].
    """
    check_ssd_inputs(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states)
    if x.device.type != "cpu":
        raise ValueError(f"the compiled SSD backend runs on CPU tensors, got {x.device}")
    tensors = (x, dt, A, B, C, D, z, dt_bias, initial_states)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        # Training: this forward, also storing the chunk-entry states, then the GEMM backward (backward.py); under
        # torch.compile both as the registered ops (above).
        return ssd_trainable(forward_with_states, x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                             dt_softplus=dt_softplus, initial_states=initial_states,
                             return_final_states=return_final_states,
                             core=_op_core if torch.compiler.is_compiling() else None)
    ct = compute_dtype(x)

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(ct)

    dtc = dt.to(ct) if dt_bias is None else dt.to(ct) + dt_bias.to(ct)
    dtc = F.softplus(dtc) if dt_softplus else dtc
    args = (x.to(ct), dtc, A.to(ct), B.to(ct), C.to(ct), cast(D), cast(z), cast(initial_states))
    # under torch.compile the registered op (above), without chunk states; eagerly the kernel itself
    y, final, _ = torch.ops.ssmbench.ssd(*args, 0) if torch.compiler.is_compiling() else ssd_forward(*args)
    y = y.to(x.dtype)
    return (y, final) if return_final_states else y

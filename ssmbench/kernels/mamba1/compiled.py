"""Compiled CPU selective scan: the C++/OpenMP kernel in ``cpu_scan.cpp``, built on first use.

Forward and backward run in C++ (float32 or float64), parallel over the b·d (batch, channel) rows with the
n-loop innermost and a vectorised polynomial exp. The backward re-runs the recurrence one 64-step chunk at a
time from state checkpoints saved by the forward ((b, d, ceil(l/64), n), 1/64 of the full state history), so
nothing of size (b, d, l, n) is ever stored.

Build: see ``ssmbench/kernels/_cpp.py`` (``-O3 -march=native -fopenmp``, cached per source, flags and CPU).
The kernel exposes a plain C ABI called through ctypes rather than a pybind module: without torch headers a
cold build takes ~5 s instead of ~45 s, and a later process loads the cached library in milliseconds.
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
from ssmbench.kernels.mamba1._common import as_groups, check_inputs, compute_dtype

_SOURCE = Path(__file__).with_name("cpu_scan.cpp")
_SPECIALISED_N = (4, 8, 16, 32, 64)  # the compile-time state sizes in cpu_scan.cpp's dispatch_n
CHECKPOINT_EVERY = 64  # steps between saved states; backward recomputes one such chunk at a time
build_root = _cpp.build_root


def _build(name: str, build_dir: Path) -> None:
    _cpp.build(_SOURCE, name, build_dir)


_PTR, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_FWD_ARGS = [_PTR] * 8 + [_INT] + [_I64] * 6 + [_PTR] * 3 + [_INT]
_BWD_ARGS = [_PTR] * 8 + [_INT] + [_I64] * 6 + [_PTR] * 3 + [_PTR] * 8 + [_INT]


@cache
def library() -> ctypes.CDLL:
    """The loaded kernel library, built first if no cached build matches this source, flags and CPU."""
    lib = _cpp.load(_SOURCE, "ssmbench_cpu_scan", _build)
    for suffix in ("f32", "f64"):
        for kind, argtypes in (("fwd", _FWD_ARGS), ("bwd", _BWD_ARGS)):
            fn = getattr(lib, f"ssm_scan_{kind}_{suffix}")
            fn.argtypes, fn.restype = argtypes, _INT
    lib.ssm_exp_sum_f32.argtypes, lib.ssm_exp_sum_f32.restype = [_PTR, _I64, _INT], ctypes.c_double
    return lib


def probe() -> str | None:
    """None when the kernel builds (or is cached) and loads here, else why not."""
    return _cpp.probe(library)


def padded_state_size(n: int) -> int:
    """The kernel is specialised for n in (4, 8, 16, 32, 64) (state kept in vector registers); other n are
    zero-padded up to the next of those, or to a multiple of 16 above 64 (generic loop, whole vectors)."""
    for size in _SPECIALISED_N:
        if n <= size:
            return size
    return -(-n // 16) * 16


def _ptr(x: torch.Tensor | None) -> int | None:
    return None if x is None else x.data_ptr()


def _contig(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.contiguous()


def _padded(A, B, C, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (d, npad), B and C as (b, g, l, npad), contiguous: the zero padding of the state (A = 0, B = C = 0) keeps
    the extra states at 0 and out of y."""
    npad = padded_state_size(n)
    return (F.pad(A, (0, npad - n)).contiguous(),
            *(F.pad(x.transpose(-1, -2), (0, npad - n)).contiguous() for x in (B, C)))


def _scan_forward(u, delta, A, Bt, Ct, D, z, bias, softplus: bool, save: bool):
    """The C++ forward on contiguous compute-dtype tensors, A / Bt / Ct padded (:func:`_padded`). Returns y (b, d, l),
    the last state (b, d, npad) and, when ``save``, the checkpoints (b, d, ceil(l / 64), npad), else None."""
    b, d, length = u.shape
    g, npad = Bt.shape[1], A.shape[1]
    y = torch.empty_like(u)
    last = u.new_empty(b, d, npad)
    ckpt = u.new_empty(b, d, -(-length // CHECKPOINT_EVERY), npad) if save else None
    fn = getattr(library(), f"ssm_scan_fwd_{'f64' if u.dtype == torch.float64 else 'f32'}")
    rc = fn(u.data_ptr(), delta.data_ptr(), A.data_ptr(), Bt.data_ptr(), Ct.data_ptr(), _ptr(D), _ptr(z),
            _ptr(bias), int(softplus), b, d, length, npad, g, CHECKPOINT_EVERY, y.data_ptr(), last.data_ptr(),
            _ptr(ckpt), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled selective scan forward failed (code {rc})")
    return y, last, ckpt


def _scan_backward(u, delta, A, Bt, Ct, D, z, bias, softplus: bool, ckpt, n: int, dy, dlast):
    """Gradients of :func:`_scan_forward` (same padded inputs, its checkpoints) for dy (b, d, l) and dlast (b, d, n)
    or None: du, ddelta, dA (d, n), dB, dC (b, g, n, l) views, dD, dz, dbias (None where the input is None)."""
    b, d, length = u.shape
    g, npad = Bt.shape[1], A.shape[1]
    dy = torch.zeros_like(u) if dy is None else dy.to(u.dtype).contiguous()
    dlast = None if dlast is None else F.pad(dlast.to(u.dtype), (0, npad - n)).contiguous()
    du, ddelta, dBt, dCt = torch.empty_like(u), torch.empty_like(u), torch.empty_like(Bt), torch.empty_like(Ct)
    dA = u.new_empty(b, d, npad)
    dD = u.new_empty(b, d) if D is not None else None
    dz = torch.empty_like(z) if z is not None else None
    dbias = u.new_empty(b, d) if bias is not None else None
    fn = getattr(library(), f"ssm_scan_bwd_{'f64' if u.dtype == torch.float64 else 'f32'}")
    rc = fn(u.data_ptr(), delta.data_ptr(), A.data_ptr(), Bt.data_ptr(), Ct.data_ptr(), _ptr(D), _ptr(z),
            _ptr(bias), int(softplus), b, d, length, npad, g, CHECKPOINT_EVERY, ckpt.data_ptr(), dy.data_ptr(),
            _ptr(dlast), du.data_ptr(), ddelta.data_ptr(), dA.data_ptr(), dBt.data_ptr(), dCt.data_ptr(),
            _ptr(dD), _ptr(dz), _ptr(dbias), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled selective scan backward failed (code {rc})")
    dB, dC = (x[..., :n].transpose(-1, -2) for x in (dBt, dCt))
    return (du, ddelta, dA.sum(0)[:, :n], dB, dC, None if dD is None else dD.sum(0), dz,
            None if dbias is None else dbias.sum(0))


class _CompiledScan(torch.autograd.Function):
    """Core op on compute-dtype tensors: u, delta (b, d, l); A (d, n); B, C (b, g, n, l); D, bias (d,); z (b, d, l).

    Returns y (b, d, l) (with D and the z gate applied) and the last state (b, d, n).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, bias, softplus: bool):
        n = A.shape[1]
        u, delta, D, z, bias = (_contig(x) for x in (u, delta, D, z, bias))
        A, Bt, Ct = _padded(A, B, C, n)
        need_grad = any(ctx.needs_input_grad)
        y, last, ckpt = _scan_forward(u, delta, A, Bt, Ct, D, z, bias, softplus, need_grad)
        if need_grad:
            ctx.save_for_backward(u, delta, A, Bt, Ct, D, z, bias, ckpt)
            ctx.softplus, ctx.n = softplus, n
        ctx.set_materialize_grads(False)
        return y, last[..., :n]

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, Bt, Ct, D, z, bias, ckpt = ctx.saved_tensors
        return (*_scan_backward(u, delta, A, Bt, Ct, D, z, bias, ctx.softplus, ckpt, ctx.n, dy, dlast), None)


# The same kernel as torch.library ops for torch.compile: traced by dynamo, the ctypes call would guard on raw data
# pointers, and behind torch.compiler.disable it split every compiled Mamba forward at each layer's scan. As ops (with
# fake kernels and the C++ backward registered) the scan stays inside one graph, forward and backward. ``save`` is
# decided when tracing (whether any input needs a gradient) and is part of the graph. Eagerly the scan runs through
# ``_CompiledScan`` (no op dispatch). The ops take and return contiguous tensors (the fakes say so); the backward
# op re-pads A, B, C from the saved inputs (O(b·g·n·l), small next to the scan's O(b·d·n·l)).
@torch.library.custom_op("ssmbench::selective_scan", mutates_args=(),
                         schema="(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
                                "Tensor? bias, bool softplus, bool save) -> (Tensor, Tensor, Tensor)")
def _scan_op(u, delta, A, B, C, D, z, bias, softplus: bool, save: bool):
    n = A.shape[1]
    u, delta, D, z, bias = (_contig(x) for x in (u, delta, D, z, bias))
    y, last, ckpt = _scan_forward(u, delta, *_padded(A, B, C, n), D, z, bias, softplus, save)
    return y, last[..., :n].contiguous(), u.new_empty(0) if ckpt is None else ckpt


@_scan_op.register_fake
def _(u, delta, A, B, C, D, z, bias, softplus, save):
    b, d, length = u.shape
    n = A.shape[1]
    ckpt = u.new_empty(b, d, -(-length // CHECKPOINT_EVERY), padded_state_size(n)) if save else u.new_empty(0)
    return torch.empty(b, d, length, dtype=u.dtype, device=u.device), u.new_empty(b, d, n), ckpt


@torch.library.custom_op("ssmbench::selective_scan_backward", mutates_args=(),
                         schema="(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, "
                                "Tensor? bias, bool softplus, Tensor ckpt, Tensor? dy, Tensor? dlast) "
                                "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)")
def _scan_backward_op(u, delta, A, B, C, D, z, bias, softplus: bool, ckpt, dy, dlast):
    """(du, ddelta, dA, dB, dC, dD, dz, dbias), contiguous; dD, dz, dbias are empty where the input is None."""
    u, delta, D, z, bias = (_contig(x) for x in (u, delta, D, z, bias))
    grads = _scan_backward(u, delta, *_padded(A, B, C, A.shape[1]), D, z, bias, softplus, ckpt.contiguous(),
                           A.shape[1], dy, dlast)
    return op_outputs(grads, u)


@_scan_backward_op.register_fake
def _(u, delta, A, B, C, D, z, bias, softplus, ckpt, dy, dlast):
    return fake_outputs((u, delta, A, B, C, D, z, bias), u)


def _scan_setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, bias, softplus, save = inputs
    if not save and any(ctx.needs_input_grad):
        raise RuntimeError("ssmbench::selective_scan was called with save=False on inputs that need gradients")
    ctx.mark_non_differentiable(output[2])
    ctx.set_materialize_grads(False)  # an unused y or last state: None, not a zero tensor (the C++ backward takes it)
    ctx.save_for_backward(u, delta, A, B, C, D, z, bias, output[2])
    ctx.softplus = softplus


def _scan_op_backward(ctx, dy, dlast, _dckpt):
    u, delta, A, B, C, D, z, bias, ckpt = ctx.saved_tensors
    grads = torch.ops.ssmbench.selective_scan_backward(u, delta, A, B, C, D, z, bias, ctx.softplus, ckpt, dy, dlast)
    given = (u, delta, A, B, C, D, z, bias)
    return (*(None if t is None else gr for t, gr in zip(given, grads, strict=True)), None, None)


_scan_op.register_autograd(_scan_op_backward, setup_context=_scan_setup_context)


def selective_scan_compiled(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False):
    """Same contract as ``reference.selective_scan_ref``; CPU tensors only.

    u, delta, z: (b, d, l); A: (d, n); B, C: (b, n, l) or (b, g, n, l); D, delta_bias: (d,).
    Returns y (b, d, l) in u's dtype [, last state (b, d, n) in float32, or float64 for float64 inputs].
    """
    shape = check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cpu":
        raise ValueError(f"the compiled backend runs on CPU tensors, got {u.device}")
    ct = compute_dtype(u)

    def cast(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(ct)

    args = (u.to(ct), delta.to(ct), A.to(ct), as_groups(B, shape.g).to(ct), as_groups(C, shape.g).to(ct), cast(D),
            cast(z), cast(delta_bias), bool(delta_softplus))
    if torch.compiler.is_compiling():  # the registered op (above); save: whether a backward can follow
        save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:8])
        # the (b, d, l) inputs made contiguous in the graph: inductor writes them in its own tiled kernels
        args = tuple(_contig(t) if i in (0, 1, 6) else t for i, t in enumerate(args))
        y, last, _ = torch.ops.ssmbench.selective_scan(*args, save)
    else:
        y, last = _CompiledScan.apply(*args)
    y = y.to(u.dtype)
    return (y, last) if return_last_state else y

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
from ssmbench.kernels.mamba2.backward import ssd_trainable
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
        # Training: this forward, also storing the chunk-entry states, then the GEMM backward (backward.py).
        return ssd_trainable(forward_with_states, x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                             dt_softplus=dt_softplus, initial_states=initial_states,
                             return_final_states=return_final_states)
    ct = compute_dtype(x)

    def cast(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(ct)

    dtc = dt.to(ct) if dt_bias is None else dt.to(ct) + dt_bias.to(ct)
    dtc = F.softplus(dtc) if dt_softplus else dtc
    y, final, _ = ssd_forward(x.to(ct), dtc, A.to(ct), B.to(ct), C.to(ct), cast(D), cast(z), cast(initial_states))
    y = y.to(x.dtype)
    return (y, final) if return_final_states else y

"""The C++ Cauchy sums + Woodbury (``cpu_cauchy.cpp``), built on first use like the other CPU kernels (``_cpp.py``).

Complex tensors cross the C ABI as planar real / imaginary arrays; frequencies are padded to whole SIMD vectors
(t = 1 on the padding keeps the reciprocals finite; the padded outputs are dropped).
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
_FWD_ARGS = [_PTR] * 9 + [_I64] * 3 + [_PTR] + [_INT]
_BWD_ARGS = [_PTR] * 9 + [_I64] * 3 + [_PTR] * 6 + [_INT]


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


def _planar(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.real.contiguous(), z.imag.contiguous()


def _inputs(om, x, s, lam, w) -> tuple[list[torch.Tensor], int, int]:
    """Planar, frequency-padded arrays in the C order (lam, w, om, x, s) and the padded frequency count."""
    F_ = om.shape[0]
    lanes = 64 // x.element_size()
    pad = -F_ % lanes
    if pad:  # om = 1, s = 0 on the padding keeps every reciprocal finite; the padded outputs are dropped
        om = torch.cat([om, torch.ones(pad, dtype=om.dtype, device=om.device)])
        s = F.pad(s, (0, pad))
    arrays = [*_planar(lam), *_planar(w), *_planar(om), x.contiguous(), *_planar(s)]
    return arrays, F_ + pad, F_


def _suffix(t: torch.Tensor) -> str:
    return "f64" if t.dtype == torch.complex128 else "f32"


def cauchy_forward(om, x, s, lam, w) -> torch.Tensor:
    """K (H, F) = k0 − s k1 k2 / (1 + s k3), k_q = Σ_n w[:, q, n] / (om x_h − s λ_n); om, s (F,) complex, x (H,)
    real, lam (H, N), w (H, 4, N) complex."""
    arrays, Fp, F_ = _inputs(om, x, s, lam, w)
    H, N = lam.shape
    K = torch.empty(H, Fp, dtype=lam.dtype, device=lam.device)
    rc = getattr(library(), f"cauchy_fwd_{_suffix(lam)}")(*(a.data_ptr() for a in arrays), H, N, Fp,
                                                           torch.view_as_real(K).data_ptr(), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled Cauchy forward failed (code {rc})")
    return K[:, :F_]


def cauchy_backward(om, x, s, lam, w, grad) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dx (H,), dlam (H, N), dw (H, 4, N)) of :func:`cauchy_forward` for the upstream ``grad``."""
    arrays, Fp, F_ = _inputs(om, x, s, lam, w)
    H, N = lam.shape
    gK = torch.view_as_real(F.pad(grad, (0, Fp - F_)).contiguous())
    real = arrays[0]
    dwr, dwi = real.new_empty(H, 4, N), real.new_empty(H, 4, N)
    dlr, dli = real.new_empty(H, N), real.new_empty(H, N)
    dx = real.new_empty(H)
    outs = (dwr, dwi, dlr, dli, dx)
    rc = getattr(library(), f"cauchy_bwd_{_suffix(lam)}")(*(a.data_ptr() for a in arrays), H, N, Fp, gK.data_ptr(),
                                                           *(o.data_ptr() for o in outs), torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled Cauchy backward failed (code {rc})")
    return dx, torch.complex(dlr, dli), torch.complex(dwr, dwi)

"""Mamba-1 decode step: one token through one mixer, the op ``kernels.mamba_step`` dispatches.

    mamba_step(hidden (b, dm), conv_state (b, di, k), ssm_state (b, di, n), weights: MambaStepWeights)
        -> out (b, dm); conv_state and ssm_state are updated in place.

``torch`` runs the step as PyTorch ops (the oracle: it is what the parallel forward is checked against in
float64); ``compiled`` runs all of it in one C++ call (``cpu_step.cpp``): at batch 1 the eager step is ~25
dispatches of a few microseconds around matvecs that take about as long, and bfloat16 matvecs in PyTorch are
slower than float32 ones on CPU. Under ``torch.compile`` the C++ step is a custom op with declared in-place
state updates, so a compiled function calling it stays one graph; the model itself decodes with the PyTorch step
there, which inductor fuses faster (``MambaMixer.step``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ssmbench.kernels import _cpp
from ssmbench.kernels.conv import causal_conv1d_step

_SOURCE = Path(__file__).with_name("cpu_step.cpp")
_SUFFIX = {torch.float64: "f64", torch.float32: "f32", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class MambaStepWeights:
    """A Mamba-1 mixer's parameters as the step reads them (shapes in the module docstring of cpu_step.cpp)."""

    w_in: torch.Tensor  # (2 di, dm)
    conv_w: torch.Tensor  # (di, k)
    conv_b: torch.Tensor  # (di,)
    w_x: torch.Tensor  # (r + 2n, di)
    w_dt: torch.Tensor  # (di, r)
    dt_bias: torch.Tensor  # (di,)
    A_log: torch.Tensor  # (di, n)
    D: torch.Tensor  # (di,)
    w_out: torch.Tensor  # (dm, di)

    @property
    def dt_rank(self) -> int:
        return self.w_dt.shape[1]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.w_in, self.conv_w, self.conv_b, self.w_x, self.w_dt, self.dt_bias, self.A_log, self.D,
                self.w_out)


def project_ssm_inputs(x: torch.Tensor, w_x: torch.Tensor, w_dt: torch.Tensor,
                       n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (..., di) after the conv -> delta before its bias (..., di), B (..., n), C (..., n): x_proj, then dt_proj
    of its first dt_rank columns (the parallel forward and the step share it)."""
    dt, B, C = F.linear(x, w_x).split([w_dt.shape[1], n, n], dim=-1)
    return F.linear(dt, w_dt), B, C


def mamba_step_torch(hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                     w: MambaStepWeights) -> torch.Tensor:
    """The step as PyTorch ops; the state math runs in the state's dtype (float32, or float64)."""
    x, z = F.linear(hidden, w.w_in).chunk(2, dim=-1)  # (b, di)
    x = causal_conv1d_step(x, conv_state, w.conv_w, w.conv_b, activation="silu")
    delta, B, C = project_ssm_inputs(x, w.w_x, w.w_dt, w.A_log.shape[1])
    st = ssm_state.dtype
    delta = F.softplus(delta.to(st) + w.dt_bias.to(st))
    A = -torch.exp(w.A_log.to(st))
    xs = x.to(st)
    ssm_state.mul_(torch.exp(delta[..., None] * A)).add_(delta[..., None] * xs[..., None] * B.to(st)[:, None, :])
    y = (ssm_state * C.to(st)[:, None, :]).sum(-1) + w.D.to(st) * xs
    y = y * F.silu(z.to(st))
    return F.linear(y.to(hidden.dtype), w.w_out)


@cache
def library() -> ctypes.CDLL:
    lib = _cpp.load(_SOURCE, "ssmbench_cpu_step")
    for suffix in _SUFFIX.values():
        fn = getattr(lib, f"mamba_step_{suffix}")
        fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int]
        fn.restype = ctypes.c_int
    return lib


def probe() -> str | None:
    """None when the kernel builds (or is cached) and loads here, else why not."""
    return _cpp.probe(library)


def _check(hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor, w: MambaStepWeights) -> None:
    if not all(t.is_cpu for t in (hidden, conv_state, ssm_state, *w.tensors())):
        raise ValueError(f"the compiled Mamba step runs on CPU tensors, got {hidden.device}")
    if hidden.dtype not in _SUFFIX:
        raise ValueError(f"the compiled Mamba step takes float64, float32 or bfloat16, not {hidden.dtype}")
    state_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    if ssm_state.dtype != state_dtype:
        raise ValueError(f"ssm_state must be {state_dtype} for {hidden.dtype} activations, got {ssm_state.dtype}")
    tensors = (hidden, conv_state, *w.tensors())
    if any(t.dtype != hidden.dtype for t in tensors):
        raise ValueError(f"hidden, conv_state and the weights must share one dtype, got "
                         f"{sorted({str(t.dtype) for t in tensors})}")
    if not all(t.is_contiguous() for t in (conv_state, ssm_state, *w.tensors())):
        raise ValueError("conv_state, ssm_state and the weights must be contiguous (the states are updated in place)")
    b, dm = hidden.shape
    di, k = w.conv_w.shape
    n = w.A_log.shape[1]
    expected = {"w_in": (2 * di, dm), "w_x": (w.dt_rank + 2 * n, di), "w_dt": (di, w.dt_rank), "w_out": (dm, di),
                "conv_b": (di,), "dt_bias": (di,), "A_log": (di, n), "D": (di,),
                "conv_state": (b, di, k), "ssm_state": (b, di, n)}
    actual = {"w_in": w.w_in, "w_x": w.w_x, "w_dt": w.w_dt, "w_out": w.w_out, "conv_b": w.conv_b, "dt_bias": w.dt_bias,
              "A_log": w.A_log, "D": w.D, "conv_state": conv_state, "ssm_state": ssm_state}
    for name, shape in expected.items():
        if tuple(actual[name].shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(actual[name].shape)}")


class _Call:
    """The checked, packed arguments of one (weights, input shape) combination. At batch 1 the C++ step takes ~30 us,
    and validating nine weights and converting twenty ctypes arguments per call cost about as much again."""

    def __init__(self, hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                 w: MambaStepWeights) -> None:
        _check(hidden, conv_state, ssm_state, w)
        di, k = w.conv_w.shape
        self.fn = getattr(library(), f"mamba_step_{_SUFFIX[hidden.dtype]}")
        self.weights = (ctypes.c_void_p * 9)(*(t.data_ptr() for t in w.tensors()))
        self.dims = (ctypes.c_int64 * 6)(hidden.shape[0], hidden.shape[1], di, k, w.dt_rank, w.A_log.shape[1])
        self.states = (conv_state.dtype, conv_state.shape, ssm_state.dtype, ssm_state.shape)


# (hidden's dtype and shape, then each weight's address, shape, strides, dtype and device) -> its _Call. The key holds
# everything the packed arguments and the checks depend on, so a new tensor at a freed one's address, with the same
# shape and dtype, reuses a _Call whose pointers are exactly its own: no tensor is kept alive here.
_CALLS: dict[tuple, _Call] = {}
_MAX_CALLS = 256


def _run(hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
         weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
    hidden = hidden.contiguous()  # a slice of a sequence (a step-by-step prefill) is strided
    key = (hidden.dtype, hidden.shape, *((t.data_ptr(), t.shape, t.stride(), t.dtype, t.device) for t in weights))
    call = _CALLS.get(key)
    states = (conv_state.dtype, conv_state.shape, ssm_state.dtype, ssm_state.shape)
    usable = all(t.is_cpu and t.is_contiguous() for t in (hidden, conv_state, ssm_state))
    if call is None or call.states != states or not usable:
        call = _Call(hidden, conv_state, ssm_state, MambaStepWeights(*weights))  # raises on anything wrong
        if len(_CALLS) >= _MAX_CALLS:
            _CALLS.clear()
        _CALLS[key] = call
    out = torch.empty_like(hidden)
    rc = call.fn(hidden.data_ptr(), call.weights, conv_state.data_ptr(), ssm_state.data_ptr(), out.data_ptr(),
                 call.dims, torch.get_num_threads())
    if rc:
        raise RuntimeError(f"compiled Mamba step failed (code {rc})")
    return out


# The op torch.compile sees: a schema with the in-place state updates declared, a CPU kernel and a fake (shape-only)
# kernel. Registered through torch.library.Library rather than the custom_op decorator, whose Python wrappers cost
# more per call than the whole C++ step at batch 1.
_LIB = torch.library.Library("ssmbench", "FRAGMENT")
_LIB.define("mamba1_step(Tensor hidden, Tensor(a!) conv_state, Tensor(b!) ssm_state, Tensor[] weights) -> Tensor")
_LIB.impl("mamba1_step", lambda hidden, conv_state, ssm_state, weights: _run(hidden, conv_state, ssm_state,
                                                                              tuple(weights)), "CPU")


@torch.library.register_fake("ssmbench::mamba1_step", lib=_LIB)
def _(hidden, conv_state, ssm_state, weights):
    # contiguous, as the real op's output (hidden may be a strided view)
    return torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)


def mamba_step_compiled(hidden: torch.Tensor, conv_state: torch.Tensor, ssm_state: torch.Tensor,
                        w: MambaStepWeights) -> torch.Tensor:
    """The C++ step. Eagerly a direct call (the custom op's Python dispatch would cost more than the step's
    overhead saved); under torch.compile the custom op, so the graph keeps it and its in-place updates."""
    if torch.compiler.is_compiling():
        return torch.ops.ssmbench.mamba1_step(hidden, conv_state, ssm_state, list(w.tensors()))
    return _run(hidden, conv_state, ssm_state, w.tensors())

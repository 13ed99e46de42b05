"""Compiled decode on CPU: the whole decode step exported once and compiled ahead of time (AOTInductor).

A CUDA decode step is captured in a CUDA graph and replayed. A CPU has no graphs, and a ``torch.compile``'d step
still runs Python on every call: dynamo's frame evaluation and cache lookup, AOTAutograd's runtime wrapper and
inductor's Python wrapper that calls each kernel in turn. Measured on the 2-core Sapphire Rapids VM (Mamba,
d_model 256 x 2 layers, batch 1, one thread), that is ~55 of the 146 us a bfloat16 step took. This module does
for the CPU what the graph does on CUDA: the step (every layer, the argmax, the token fed back) is traced by
``torch.export``, compiled by AOTInductor into a shared library whose wrapper is C++ (weights frozen into it and
GEMMs autotuned, as :data:`ssmbench.models.compile.CPU_INFERENCE_OPTIONS` does for ``torch.compile``), and then
replayed on the very same buffers: bfloat16 146 -> ~88 us, float32 229 -> ~175 us.

Same contract as a CUDA graph: the step may only update its tensors in place, no host-side state (the static,
graph-safe mixer steps that :func:`ssmbench.models.inference.enable_static` switches on guarantee that), and every
call passes the same argument objects. Every family's step takes this path, so no family gets a hand-fused step
the others lack. Where export or compilation fails, :func:`ssmbench.models.compile.compile_step` falls back to
``torch.compile`` and records why.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import _pytree as pytree

AOT_PATH = "aot_inductor"


class _BoundStep(nn.Module):
    """``fn(*args)`` as a module whose inputs are the tensors among ``args`` (in their flattening order): the
    modules among the arguments become submodules, so export sees their weights as parameters (frozen by
    AOTInductor), and every other leaf (Python numbers, flags, None) is a constant of the trace."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        super().__init__()
        self.fn = fn
        self.leaves, self.spec = pytree.tree_flatten(args)
        self.tensor_slots = [i for i, leaf in enumerate(self.leaves) if isinstance(leaf, torch.Tensor)]
        self.bound = nn.ModuleList([leaf for leaf in self.leaves if isinstance(leaf, nn.Module)])

    def tensors(self) -> list[torch.Tensor]:
        return [self.leaves[i] for i in self.tensor_slots]

    def forward(self, *tensors: torch.Tensor) -> None:
        leaves = list(self.leaves)
        for slot, tensor in zip(self.tensor_slots, tensors, strict=True):
            leaves[slot] = tensor
        self.fn(*pytree.tree_unflatten(leaves, self.spec))


def compile_ahead_of_time(fn: Callable[..., Any], args: tuple[Any, ...],
                          options: dict[str, Any]) -> Callable[[], None]:
    """Export ``fn(*args)`` (in-place updates of its tensors, nothing returned), compile it with AOTInductor and
    return a call that runs it once more on the same tensors. Raises whatever export or compilation raises."""
    bound = _BoundStep(fn, args)
    tensors = bound.tensors()
    program = torch.export.export(bound, tuple(tensors), strict=False)
    with tempfile.TemporaryDirectory(prefix="ssmbench-aot-") as tmp:
        package = torch._inductor.aoti_compile_and_package(
            program, package_path=str(Path(tmp) / "step.pt2"), inductor_configs={"freezing": True, **options})
        runner = torch._inductor.aoti_load_package(package)  # loads the library: the package file may go

    def call() -> None:
        runner(*tensors)

    return call


class AheadOfTimeStep:
    """``fn`` compiled ahead of time for one set of argument objects, called like ``fn(*args)``.

    The first call runs ``fn`` once eagerly (it resolves kernel backends outside the trace, as
    :class:`ssmbench.models.compile._Compiled` does), then exports and compiles, then runs the compiled step: two
    steps, which the caller undoes (``start_decoding`` rewinds the cache). Later calls must pass the same objects
    (checked by identity at the top level; the tensors inside are the ones seen at compile time)."""

    path = AOT_PATH

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn, self.options = fn, options
        self.args: tuple[Any, ...] = ()  # set with replay, by the compiling call
        self.replay: Callable[[], None] | None = None

    def __call__(self, *args: Any) -> None:
        if self.replay is None:
            with torch.no_grad():
                self.fn(*args)
                self.replay = compile_ahead_of_time(self.fn, args, self.options)
            self.args = args
        elif any(a is not b for a, b in zip(args, self.args, strict=True)):
            raise ValueError("an ahead-of-time compiled step runs on the argument objects it was compiled for")
        self.replay()

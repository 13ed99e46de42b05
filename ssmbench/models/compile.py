"""``torch.compile`` for every benchmark path (``--compile``): one way to compile, one way to report graph breaks.

A case's ``compile`` field is "eager" or "compiled". Compiled paths use inductor; on CUDA the compiled call runs in
CUDA graphs (``mode="reduce-overhead"``) unless the benchmark captures its own graph around it (decode with
``cuda_graphs``), where capturing a CUDA-graph-tree inside a capture would fail. Shapes are static
(``dynamic=False``): every benchmark call has the same shapes, so one graph per case and no recompiles.

A decode step on CPU is compiled ahead of time instead (:func:`compile_step`, :mod:`ssmbench.models.aot`): exported
once and replayed without Python per call, as a CUDA graph replays a step on CUDA.

Graph breaks (a region dynamo cannot trace, run eagerly between compiled graphs) are counted from dynamo's own
counters around the first (compiling) call: :class:`CompileStats` says how many graphs were compiled and why each
break happened, and results record both, so a compiled row that is no faster shows why.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ssmbench.case import COMPILED_SUFFIX

EAGER, COMPILED = "eager", "compiled"
COMPILE_MODES = (EAGER, COMPILED)

# Inductor's GEMM autotuning calls a deprecated storage API (torch 2.13): a warning per compile a user cannot act on.
warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)


# The torch.compile backend. Tests set "aot_eager" (same tracing, functionalisation and graph breaks, no code
# generation) to check the plumbing quickly; the slow tests and every benchmark use inductor.
BACKEND = "inductor"


def compile_mode(device: str, own_cuda_graph: bool = False) -> str | None:
    """Inductor mode: CUDA graphs via "reduce-overhead" on CUDA unless the caller captures its own graph."""
    return "reduce-overhead" if device == "cuda" and not own_cuda_graph else None


# Inductor settings for an inference-only function on CPU (the decode step): the weights are frozen into the graph
# (constant-folded, GEMM weights prepacked) and batch-1 matmuls use inductor's C++ GEMM templates, chosen by
# benchmarking at compile time. Measured on the 2-core Sapphire Rapids VM, Mamba d_model 256 x 2 layers, 1 thread:
# bfloat16 475 -> 146 us per token (PyTorch's bfloat16 matvec for the LM head alone took ~50 us), float32 315 -> 229.
# Training steps cannot freeze their parameters, so only inference callers ask for this.
# The two report settings keep inductor from printing every autotuning table (~30 lines per case) to the terminal.
CPU_INFERENCE_OPTIONS = {"max_autotune": True, "autotune_num_choices_displayed": 0,
                         "max_autotune_report_choices_stats": False}


class _Compiled:
    """``torch.compile(fn)`` whose first call runs ``fn`` once eagerly (without gradients) before the compiling
    call: the eager run resolves every kernel backend (imports, probes, C++ builds), cached from then on, outside the
    trace, where dynamo would break the graph at them. A caller that must not keep that run's side effects (a
    decode step advancing its cache) undoes them after the first call.

    ``freeze``: the compiling call runs with inductor's global ``freezing`` switched on. Passing it in ``options``
    is not enough: torch 2.13 reads it outside the per-compile patch (measured: no change), and patching the global
    config around every call would cost more than a decode step, so only the first call is wrapped."""

    def __init__(self, fn: Callable[..., Any], compiled: Callable[..., Any], freeze: bool = False) -> None:
        self.fn, self.compiled, self.freeze = fn, compiled, freeze
        self.first = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.first:
            return self.compiled(*args, **kwargs)
        self.first = False
        with torch.no_grad():
            self.fn(*args, **kwargs)
        if not self.freeze:
            return self.compiled(*args, **kwargs)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self.compiled(*args, **kwargs)


def fresh_compile_state() -> None:
    """Forget what dynamo compiled for earlier cases (a worker calls this before each case). A worker runs many cases
    in one process, and dynamo keeps compiled entries per code object (every model's forward shares
    SequenceModel.forward's, every decode step greedy_step's): past its recompile limit (8) it would run later cases
    eagerly without a word. Not per compile_fn call: a pair case compiles both sides before timing them alternately.
    Inductor's on-disk cache keeps recompiling quick."""
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None:  # nothing was ever compiled in this process otherwise
        dynamo.reset()


def compile_fn(fn: Callable[..., Any], device: str, own_cuda_graph: bool = False,
               inference: bool = False) -> Callable[..., Any]:
    """``fn`` compiled by inductor with static shapes (see the module docstring), its first call running ``fn``
    once eagerly first (:class:`_Compiled`). ``inference`` (no gradients, fixed parameters) on CPU freezes the
    weights and autotunes the GEMMs (:data:`CPU_INFERENCE_OPTIONS`)."""
    if BACKEND != "inductor":
        return _Compiled(fn, torch.compile(fn, backend=BACKEND, dynamic=False))
    if inference and device == "cpu":
        return _Compiled(fn, torch.compile(fn, dynamic=False, options=CPU_INFERENCE_OPTIONS), freeze=True)
    return _Compiled(fn, torch.compile(fn, mode=compile_mode(device, own_cuda_graph), dynamic=False))


def compile_step(fn: Callable[..., Any], device: str, own_cuda_graph: bool, stats: CompileStats
                 ) -> Callable[..., Any]:
    """A decode step ``fn(*args)`` (in-place updates, nothing returned) compiled for inference. On CPU with inductor
    it is compiled ahead of time (:mod:`ssmbench.models.aot`: no Python per call, the CPU's counterpart of a CUDA
    graph); if export or that compilation fails, the step falls back to :func:`compile_fn` and ``stats`` keeps
    why. Elsewhere (CUDA, the test backend) it is :func:`compile_fn`."""
    if BACKEND != "inductor" or device != "cpu" or own_cuda_graph:
        return compile_fn(fn, device, own_cuda_graph, inference=True)
    from ssmbench.models.aot import AheadOfTimeStep

    aot = AheadOfTimeStep(fn, CPU_INFERENCE_OPTIONS)
    compiled: Callable[..., Any] | None = None  # what calls after the first run: aot, or the fallback

    def call(*args: Any) -> Any:
        nonlocal compiled
        if compiled is not None:
            return compiled(*args)
        try:
            aot(*args)
        except Exception as exc:  # any export or compile failure: torch.compile instead, the reason kept
            stats.fallback = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or ['?'])[0][:200]}"
            compiled = compile_fn(fn, device, inference=True)
            return compiled(*args)
        stats.path, stats.graphs = aot.path, 1  # one exported graph: export cannot break it
        compiled = aot
        return None

    return call


@dataclass
class CompileStats:
    """What dynamo did during the calls made inside :meth:`watch`: graphs compiled, graph breaks and why; for a
    step compiled ahead of time (:func:`compile_step`), ``path`` says so, or ``fallback`` why it could not be."""

    graphs: int = 0
    graph_breaks: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the watched calls (compilation included)
    path: str = "torch.compile"
    fallback: str = ""

    def watch(self) -> _Watch:
        return _Watch(self)

    def info(self) -> dict[str, Any]:
        """For a result's info: counts and the distinct break reasons (first lines, at most 5), how it was compiled."""
        out = {"compiled_graphs": self.graphs, "graph_breaks": self.graph_breaks,
               "graph_break_reasons": self.reasons[:5], "compile_path": self.path}
        if self.fallback:
            out["aot_fallback"] = self.fallback
        return out


class _Watch:
    def __init__(self, stats: CompileStats) -> None:
        self.stats = stats

    def __enter__(self) -> CompileStats:
        from torch._dynamo.utils import counters

        self._counters = counters
        self._before_breaks = dict(counters["graph_break"])
        self._before_graphs = counters["stats"]["unique_graphs"]
        self._t0 = time.perf_counter()
        return self.stats

    def __exit__(self, *exc: object) -> None:
        self.stats.seconds += time.perf_counter() - self._t0
        counters = self._counters
        self.stats.graphs += counters["stats"]["unique_graphs"] - self._before_graphs
        for reason, n in counters["graph_break"].items():
            new = n - self._before_breaks.get(reason, 0)
            if new > 0:
                self.stats.graph_breaks += new
                line = _reason_line(str(reason))
                if line not in self.stats.reasons:
                    self.stats.reasons.append(line)


def _reason_line(reason: str) -> str:
    """One line per break: dynamo's explanation (it names the function) where it gives one, else its first line."""
    text = reason.strip()
    if "Explanation:" in text:
        text = text.split("Explanation:", 1)[1].strip()
    return (text.splitlines() or ["?"])[0][:200]


def compiled_label(backend: str, compiled: bool) -> str:
    return f"{backend}{COMPILED_SUFFIX}" if compiled else backend

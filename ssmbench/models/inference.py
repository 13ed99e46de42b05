"""Inference plumbing shared by the decode benchmark and ``ssmbench generate``: prefill, rewind, greedy decode.

The protocol a mixer may implement is documented in ``ssmbench/models/blocks.py``:

- ``prefill(x, cache)``: the parallel forward that also fills the cache. :func:`prefill` uses it where a mixer
  has it and otherwise runs the mixer's ``step`` token by token (correct, slow for long prompts); the path of
  every layer is returned so results can say which one ran.
- ``static_cache(cache)``: makes a step CUDA-graph-safe (attention). :class:`GreedyDecoder` calls it before
  capturing a step in a CUDA graph.

:class:`CacheSnapshot` rewinds a cache to an earlier point without copying append-only buffers (a KV cache), so a
benchmark can decode the same K tokens at context L several times at the cost of copying the fixed-size state.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ssmbench.models.aot import AOT_PATH
from ssmbench.models.blocks import SequenceModel, tensor_bytes
from ssmbench.models.compile import CompileStats, compile_step

NATIVE, STEP_LOOP, STATELESS = "native", "step_loop", "stateless"


def mixer_prefill(mixer: nn.Module, x: torch.Tensor, cache: Any) -> tuple[torch.Tensor, str]:
    """Run a mixer over a prompt x (b, l, d) from an empty cache; (outputs (b, l, d), path taken)."""
    if cache is None:  # stateless at decode (the MLP): the parallel forward is all there is
        return mixer(x), STATELESS
    if hasattr(mixer, "prefill"):
        return mixer.prefill(x, cache), NATIVE
    # Generic fallback: the recurrent step, one token at a time (O(l) Python-level steps).
    ys = [mixer.step(x[:, t], cache) for t in range(x.shape[1])]
    return torch.stack(ys, dim=1), STEP_LOOP


def prefill(model: SequenceModel, tokens: torch.Tensor, cache: list[Any],
            all_logits: bool = False) -> tuple[torch.Tensor, list[str]]:
    """Feed a prompt (b, l) through the model, filling ``cache`` (freshly allocated or rewound to empty).

    Returns the logits of the last position (b, vocab) — or of every position (b, l, vocab) with ``all_logits`` —
    and the prefill path of each block ("native", "step_loop" or "stateless").
    """
    if tokens.shape[1] < 1:
        raise ValueError("prefill needs a prompt of at least one token")
    x = model.embedding(tokens)
    paths = []
    for block, c in zip(model.blocks, cache, strict=True):
        y, path = mixer_prefill(block.mixer, block.norm(x), c)
        x = x + y
        paths.append(path)
    h = x if all_logits else x[:, -1]
    return model.head(model.norm(h)), paths


def summarize_paths(paths: list[str]) -> str:
    """'native' / 'step_loop' / 'native+step_loop' for the stateful layers ('stateless' if none has state)."""
    stateful = [p for p in paths if p != STATELESS]
    return "+".join(dict.fromkeys(stateful)) if stateful else STATELESS


def enable_static(model: SequenceModel, cache: list[Any]) -> list[str]:
    """Switch every mixer that has ``static_cache`` to its CUDA-graph-safe step; names of the switched mixers."""
    switched = []
    for block, c in zip(model.blocks, cache, strict=True):
        if c is not None and hasattr(block.mixer, "static_cache"):
            block.mixer.static_cache(c)
            switched.append(type(block.mixer).__name__)
    return switched


_GROWING = object()  # marks an append-only buffer in a snapshot: not copied, rewound by its position


def _snap(real: Any, small: Any, larger: Any) -> Any:
    """Walk a cache beside two probe caches (max_len 1 and 2): copy fixed tensors and scalars, skip growing ones."""
    if isinstance(real, torch.Tensor):
        return _GROWING if small.shape != larger.shape else real.detach().clone()
    if isinstance(real, dict):
        return {k: _snap(v, small[k], larger[k]) for k, v in real.items()}
    if isinstance(real, (list, tuple)):
        return [_snap(v, s, g) for v, s, g in zip(real, small, larger, strict=True)]
    return real  # Python scalars (positions, flags) and None


def _restore(real: Any, snap: Any) -> None:
    """Copy saved tensors back in place and reset scalars (scalars must sit in dicts or lists to be reset)."""
    items = real.items() if isinstance(real, dict) else enumerate(real)
    for key, value in list(items):
        saved = snap[key]
        if saved is _GROWING:
            continue
        if isinstance(value, torch.Tensor):
            value.copy_(saved)
        elif isinstance(value, (dict, list, tuple)):
            _restore(value, saved)
        elif not isinstance(real, tuple):
            real[key] = saved


def _growth_bytes(small: Any, larger: Any) -> int:
    """Bytes a cache gains per extra position of max_len (from two probes that differ by one position)."""
    return tensor_bytes(larger) - tensor_bytes(small)


@dataclass
class CacheSnapshot:
    """The fixed-size part of a cache at one moment; :meth:`restore` rewinds the cache to it in place.

    Buffers that grow with ``max_len`` are append-only (blocks.py), so restoring the positions rewinds them
    without a copy; everything else is copied. ``bytes_at(n)`` is the cache size at context n.
    """

    snap: Any
    fixed_bytes: int
    bytes_per_position: int

    @classmethod
    def take(cls, model: SequenceModel, cache: list[Any], batch: int, dtype: torch.dtype) -> CacheSnapshot:
        small = model.allocate_inference_cache(batch, 1, dtype)
        larger = model.allocate_inference_cache(batch, 2, dtype)
        snap = _snap(cache, small, larger)
        per_pos = _growth_bytes(small, larger)
        fixed = tensor_bytes(small) - per_pos  # a max_len-1 cache holds one position of each growing buffer
        return cls(snap, fixed, per_pos)

    def restore(self, cache: list[Any]) -> None:
        _restore(cache, self.snap)

    def bytes_at(self, context: int) -> int:
        return self.fixed_bytes + self.bytes_per_position * context


def greedy_step(model: SequenceModel, token: torch.Tensor, cache: list[Any]) -> None:
    """One decode step: the model step, the argmax written back into ``token`` (what ``--compile`` compiles)."""
    logits = model.step(token, cache)
    token.copy_(logits.argmax(-1))


class GreedyDecoder:
    """Greedy decoding, one token per :meth:`step`: the argmax feeds back through a static token buffer.

    With ``cuda_graphs`` the mixers are switched to their graph-safe step at construction, and :meth:`capture`
    records one step (model step + argmax + feedback) in a CUDA graph that :meth:`step` replays. Capturing runs
    warm-up steps, so the caller rewinds the cache afterwards — :func:`start_decoding` does it in the right order.
    With ``compiled`` the whole step (every layer, argmax and feedback) over the graph-safe (static-shape) mixers
    is compiled as one: ahead of time by AOTInductor on CPU, ``torch.compile`` on CUDA (``compile_step``); its
    first call compiles, so :func:`start_decoding` makes it and rewinds.
    """

    def __init__(self, model: SequenceModel, cache: list[Any], first_token: torch.Tensor,
                 cuda_graphs: bool = False, compiled: bool = False) -> None:
        self.model, self.cache = model, cache
        self.token = first_token.detach().clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_mixers: list[str] = []
        self.compile_stats: CompileStats | None = None
        self.first_step_s = 0.0  # the first step's time (compilation included), set by start_decoding
        self._compiled: Any = None
        self._guards_checked = False
        if cuda_graphs and self.token.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        if cuda_graphs or compiled:  # static shapes: no recompile per position, capturable
            self.static_mixers = enable_static(model, cache)
        if compiled:
            self.compile_stats = CompileStats()
            self._compiled = compile_step(greedy_step, self.token.device.type, cuda_graphs, self.compile_stats)

    def eager_step(self) -> None:
        greedy_step(self.model, self.token, self.cache)

    def _eager(self) -> None:
        if self._compiled is None:
            greedy_step(self.model, self.token, self.cache)
        elif not self._guards_checked:  # the compiling call (an eager step, then the compiled one: compile_fn);
            self._compiled(self.model, self.token, self.cache)  # start_decoding undoes both steps
            self._guards_checked = True
        else:
            self._compiled(self.model, self.token, self.cache)

    def steady(self) -> contextlib.AbstractContextManager:
        """Wrap a run of :meth:`step` calls: a compiled decoder skips dynamo's guard evaluation inside it. Every step
        after the compiling one passes the very same model, token and cache objects with static shapes, so those
        guards cannot fail; evaluating them took ~40 us per token (Mamba, d_model 256, 1 CPU thread). Entering the
        stance costs about as much again, so it is entered once per run of steps, not per step."""
        if self._compiled is None or not self._guards_checked or self.compile_stats.path == AOT_PATH:
            return contextlib.nullcontext()  # a step compiled ahead of time has no guards
        return torch.compiler.set_stance("default", skip_guard_eval_unsafe=True)

    def capture(self, warmup_steps: int = 2) -> None:
        # Warm up on a side stream (lazy init, allocator), then record one step; upstream mamba does the same.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._eager()
        torch.cuda.synchronize()

    def reset(self, token: torch.Tensor) -> None:
        self.token.copy_(token)

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self._eager()


CAPTURE_WARMUP_STEPS = 2  # the cache needs room for max(K, this + 1) decode positions when graphs are on


def start_decoding(model: SequenceModel, cache: list[Any], first_token: torch.Tensor, *, cuda_graphs: bool,
                   compiled: bool = False) -> tuple[GreedyDecoder, CacheSnapshot, float]:
    """A decoder ready at the cache's current point (just after a prefill), the snapshot that rewinds to it, and
    the seconds spent capturing the CUDA graph (0 without graphs). The first step runs here, timed in
    ``decoder.first_step_s`` (a compiled decoder compiles in it), and is undone."""
    decoder = GreedyDecoder(model, cache, first_token, cuda_graphs=cuda_graphs, compiled=compiled)  # static first
    batch = first_token.shape[0]
    snapshot = CacheSnapshot.take(model, cache, batch, model.embedding.weight.dtype)  # ...so the flags survive
    capture_s = 0.0
    # The first step, timed (it compiles a compiled decoder) and undone.
    with decoder.compile_stats.watch() if decoder.compile_stats is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        decoder.step()
        if first_token.device.type == "cuda":
            torch.cuda.synchronize()
        decoder.first_step_s = time.perf_counter() - t0
    snapshot.restore(cache)
    decoder.reset(first_token)
    if cuda_graphs:
        t0 = time.perf_counter()
        decoder.capture(CAPTURE_WARMUP_STEPS)
        capture_s = time.perf_counter() - t0
        snapshot.restore(cache)  # the capture's warm-up steps advanced the cache
        decoder.reset(first_token)
    return decoder, snapshot, capture_s

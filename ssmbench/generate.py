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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ssmbench.bench.timer import quantile
from ssmbench.models.blocks import SequenceModel, tensor_bytes

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


class GreedyDecoder:
    """Greedy decoding, one token per :meth:`step`: the argmax feeds back through a static token buffer.

    With ``cuda_graphs`` the mixers are switched to their graph-safe step at construction, and :meth:`capture`
    records one step (model step + argmax + feedback) in a CUDA graph that :meth:`step` replays. Capturing runs
    warm-up steps, so the caller rewinds the cache afterwards — :func:`start_decoding` does it in the right order.
    """

    def __init__(self, model: SequenceModel, cache: list[Any], first_token: torch.Tensor,
                 cuda_graphs: bool = False) -> None:
        self.model, self.cache = model, cache
        self.token = first_token.detach().clone()
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_mixers: list[str] = []
        if cuda_graphs:
            if self.token.device.type != "cuda":
                raise ValueError("CUDA graphs need a CUDA device")
            self.static_mixers = enable_static(model, cache)

    def _eager(self) -> None:
        logits = self.model.step(self.token, self.cache)
        self.token.copy_(logits.argmax(-1))

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


def start_decoding(model: SequenceModel, cache: list[Any], first_token: torch.Tensor, *, cuda_graphs: bool
                   ) -> tuple[GreedyDecoder, CacheSnapshot, float]:
    """A decoder ready at the cache's current point (just after a prefill), the snapshot that rewinds to it, and
    the seconds spent capturing the CUDA graph (0 without graphs)."""
    decoder = GreedyDecoder(model, cache, first_token, cuda_graphs=cuda_graphs)  # switches to static first...
    batch = first_token.shape[0]
    snapshot = CacheSnapshot.take(model, cache, batch, model.embedding.weight.dtype)  # ...so the flags survive
    capture_s = 0.0
    if cuda_graphs:
        t0 = time.perf_counter()
        decoder.capture(CAPTURE_WARMUP_STEPS)
        capture_s = time.perf_counter() - t0
        snapshot.restore(cache)  # the capture's warm-up steps advanced the cache
        decoder.reset(first_token)
    return decoder, snapshot, capture_s


def time_tokens(decoder: GreedyDecoder, n: int, device: str,
                on_token: Callable[[int], None] | None = None) -> tuple[list[float], float]:
    """Run n decode steps; (per-token latency in s, synchronised wall time of all n).

    CPU: perf_counter around each step (CPU ops are synchronous). CUDA: a CUDA event pair per step (device time,
    no sync between tokens, so the host may run ahead as in real serving) and one sync at the end.
    """
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(n):
        if cuda:
            events[i][0].record()
            decoder.step()
            events[i][1].record()
        else:
            s = time.perf_counter()
            decoder.step()
            lat.append(time.perf_counter() - s)
        if on_token is not None:
            on_token(i)
    if cuda:
        torch.cuda.synchronize()
        lat = [a.elapsed_time(b) / 1e3 for a, b in events]
    return lat, time.perf_counter() - t0


@dataclass
class GenerationResult:
    batch: int
    prompt_len: int
    ttft_s: float  # prefill + the first token's argmax, synchronised
    token_latencies_s: list[float]  # every token after the first
    decode_wall_s: float
    state_bytes: int  # cache/state at the end of generation
    prefill_path: str
    cuda_graphs: bool
    capture_s: float = 0.0
    tokens: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (b, new_tokens) generated

    def latency_quantile(self, q: float) -> float:
        """Per-token latency quantile, linearly interpolated (NaN with no decode steps)."""
        return quantile(self.token_latencies_s, q)

    @property
    def tokens_per_s(self) -> float:
        n = len(self.token_latencies_s)
        return self.batch * n / self.decode_wall_s if n and self.decode_wall_s > 0 else float("nan")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def generate(model: SequenceModel, prompt: torch.Tensor, new_tokens: int, *, cuda_graphs: bool = False,
             on_token: Callable[[int], None] | None = None) -> GenerationResult:
    """Greedy generation of ``new_tokens`` after ``prompt`` (b, l), timed: TTFT, then one step per token.

    A short untimed warm-up (a prefill of up to 64 tokens and two steps on a scratch cache) runs first so lazy
    initialisation does not land in the TTFT. ``on_token(i)`` is called after each generated token.
    """
    if new_tokens < 1:
        raise ValueError("new_tokens must be >= 1")
    model.eval()
    batch, length = prompt.shape
    dtype = model.embedding.weight.dtype
    scratch = model.allocate_inference_cache(batch, min(length, 64) + 2, dtype)
    logits, _ = prefill(model, prompt[:, :64], scratch)
    warm = GreedyDecoder(model, scratch, logits.argmax(-1))
    warm.step()
    warm.step()
    del scratch, warm

    cache = model.allocate_inference_cache(batch, length + max(new_tokens, CAPTURE_WARMUP_STEPS + 1), dtype)
    _sync(prompt.device)
    t0 = time.perf_counter()
    logits, paths = prefill(model, prompt, cache)
    first = logits.argmax(-1)
    _sync(prompt.device)
    ttft = time.perf_counter() - t0
    if on_token is not None:
        on_token(0)
    decoder, snapshot, capture = start_decoding(model, cache, first, cuda_graphs=cuda_graphs)
    out = [first]

    def record(i: int) -> None:
        out.append(decoder.token.clone())
        if on_token is not None:
            on_token(i + 1)

    lat, wall = time_tokens(decoder, new_tokens - 1, prompt.device.type, record)
    return GenerationResult(batch, length, ttft, lat, wall, snapshot.bytes_at(length + new_tokens - 1),
                            summarize_paths(paths), cuda_graphs, capture, torch.stack(out, dim=1))


def run_generation(model_name: str, *, backend: str = "auto", prompt_len: int = 1024, new_tokens: int = 256,
                   batch: int = 1, device: str = "cpu", dtype: str = "float32", d_model: int = 256,
                   n_layers: int = 2, vocab_size: int = 256, options: dict[str, Any] | None = None,
                   cuda_graphs: bool | None = None, seed: int = 0,
                   on_token: Callable[[int], None] | None = None) -> tuple[GenerationResult, dict[str, Any]]:
    """Build a randomly initialised model and :func:`generate` from a random prompt (``ssmbench generate``).

    ``cuda_graphs=None`` means on for CUDA, off elsewhere. Returns the result and a dict describing the model.
    """
    from ssmbench.bench.speed import DTYPES
    from ssmbench.models import make_config

    if cuda_graphs is None:
        cuda_graphs = device == "cuda"
    if cuda_graphs and device != "cuda":
        raise ValueError("CUDA graphs need --device cuda")
    torch.manual_seed(seed)
    config = make_config(model_name, backend=backend, d_model=d_model, n_layers=n_layers, vocab_size=vocab_size,
                         options=options)
    model = config.build().to(device=device, dtype=DTYPES[dtype])
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab_size, (batch, prompt_len), generator=g).to(device)
    result = generate(model, prompt, new_tokens, cuda_graphs=cuda_graphs, on_token=on_token)
    info = {"params": model.num_params(), "d_model": config.d_model, "n_layers": config.n_layers,
            "d_state": config.state_dim}
    return result, info

"""Inference cases: ``prefill`` (the prompt through the parallel path) and ``decode`` (K tokens, one step each).

Protocol (docs/harness.md §1.4):

- **prefill**: a length-L prompt through each mixer's ``prefill`` (or the step-by-step fallback, see
  ``ssmbench.models.inference``), filling a preallocated cache; timed like ``fwd`` (median/IQR), the cache rewound to
  empty before every call (untimed). Time to first token = prefill + the argmax of the last logits.
- **decode**: one warm-up prefill, one timed prefill (TTFT, a single sample: use ``--mode prefill`` for its
  median), then rounds of K greedy tokens (argmax fed back through a static buffer, cache preallocated for
  L + K positions, no per-token allocation of state). Before every round the cache is rewound to the end of the
  prompt (``CacheSnapshot``), so every sampled token is decoded at context L..L+K-1. Per-token latency: CPU
  perf_counter per step; CUDA an event pair per step (device time) with the host free to run ahead.
  tokens/s = batch * K / synchronised wall time of a round (what a user gets, host overhead included).
- CUDA: the step (model + argmax + feedback) runs in a CUDA graph unless the case sets ``cuda_graphs=false``
  (case option, or ``--option cuda_graphs=false`` in a sweep); graphs on/off is recorded as a metric.
- CPU: ``step_overhead_fraction`` = 1 − (time of the step's matmul-class ops replayed alone) / (step time),
  minima of alternating timings: the share of a decode step spent outside linear/matmul/attention/conv
  kernels — Python, dispatch and small element-wise ops. Near 1 means decode is overhead-bound (typical at
  small d_model and batch).
- ``state_bytes``: the cache/state at context L (KV cache grows with L, an SSM state does not);
  ``cache_bytes_allocated``: what the benchmark preallocated (L + K positions).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ssmbench import kernels
from ssmbench.bench.generate import time_tokens
from ssmbench.bench.measure import LAUNCH_BOUND_RATIO, build_case_model, compile_metrics, ran_backend, timing_metrics
from ssmbench.bench.memory import measure_peak
from ssmbench.bench.memory_model import estimate_metrics
from ssmbench.bench.timer import Timing, measure
from ssmbench.case import Case
from ssmbench.models.blocks import DTYPES, SequenceModel, tensor_bytes
from ssmbench.models.inference import (
    CAPTURE_WARMUP_STEPS,
    STEP_LOOP,
    CacheSnapshot,
    GreedyDecoder,
    prefill,
    start_decoding,
    summarize_paths,
)
from ssmbench.store import CaseResult, Metric

MAX_ROUNDS = 50
# ops whose time counts as the step's "real work" in step_overhead_fraction (matched by name: function and
# Tensor-method variants alike)
MATMUL_OPS = frozenset({"linear", "matmul", "__matmul__", "mm", "bmm", "addmm", "baddbmm", "einsum",
                        "scaled_dot_product_attention", "conv1d"})


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name} must be true or false (got '{value}')")


def use_cuda_graphs(case: Case) -> bool:
    """case.options["cuda_graphs"], else a sweep's --option cuda_graphs=..., else on for CUDA cases."""
    raw = case.option("cuda_graphs", dict(case.model_options).get("cuda_graphs", case.device == "cuda"))
    on = _flag(raw, "cuda_graphs")
    if on and case.device != "cuda":
        raise ValueError("cuda_graphs=true needs device cuda")
    return on


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class _RecordMatmuls(TorchFunctionMode):
    """Records (func, args, kwargs) of every matmul-class op called while active (the ops still run)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in MATMUL_OPS:
            self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def step_overhead(decoder: GreedyDecoder, rewind: Callable[[], None], repeats: int = 20
                  ) -> tuple[float, float, float, int]:
    """(overhead fraction, matmul seconds, step seconds, number of matmul-class ops) of one decode step.

    One step runs under a recorder; its matmul-class ops are then replayed with the very same tensors (they are
    pure, so replaying has no side effects). Step and replay are timed alternately, each after ``rewind()`` (so
    every step runs at the same position), and compared by their minima: on a shared machine the minimum is
    the least noisy estimate of a short call's own cost, and alternating exposes both to the same load.
    """
    rewind()
    recorder = _RecordMatmuls()
    with recorder:  # an eager step (dynamo must not trace the recorder); a compiled step runs the PyTorch ops it fuses
        getattr(decoder, "eager_step", decoder.step)()

    def replay() -> None:
        for func, args, kwargs in recorder.calls:
            func(*args, **kwargs)

    steps, replays = [], []
    with getattr(decoder, "steady", contextlib.nullcontext)():  # as time_tokens times the steps
        for _ in range(repeats):
            rewind()
            t0 = time.perf_counter()
            decoder.step()
            t1 = time.perf_counter()
            replay()
            t2 = time.perf_counter()
            steps.append(t1 - t0)
            replays.append(t2 - t1)
    mm, st = min(replays), min(steps)
    return min(1.0, max(0.0, 1.0 - mm / st)), mm, st, len(recorder.calls)


def _quantile_metrics(name: str, t: Timing) -> list[Metric]:
    n = len(t.samples)
    return [Metric(name, "p50", t.median, "s", n, samples=tuple(t.samples)),
            Metric(name, "p90", t.quantile(0.90), "s", n), Metric(name, "p99", t.quantile(0.99), "s", n)]


def _common_metrics(case: Case, info: dict[str, Any], snapshot: CacheSnapshot, cache: list[Any],
                    paths: list[str], model: SequenceModel | None = None) -> list[Metric]:
    n_loop = sum(p == STEP_LOOP for p in paths)
    info["prefill_path"] = summarize_paths(paths)
    if n_loop:  # a step-by-step prefill dispatches no kernel op: say what ran instead of "?"
        info["backend"] = info["backend"].replace("?", "step")
    return [Metric("state_bytes", "value", snapshot.bytes_at(case.seq_len), "B"),
            Metric("cache_bytes_allocated", "value", tensor_bytes(cache), "B"),
            Metric("prefill_step_loop_layers", "value", n_loop, "count"),
            Metric("params", "value", info["params"], "count"),
            # analytic: cache + the prefill's working set (the measured counterpart is cache + peak_mem_delta)
            *(estimate_metrics(model, case.mode, DTYPES[case.dtype], case.batch, case.seq_len,
                               int(case.option("decode_tokens", 0) or 0)) if model is not None else [])]


def run_prefill(case: Case, model: SequenceModel, prompt: torch.Tensor, info: dict[str, Any]) -> CaseResult:
    dtype = DTYPES[case.dtype]
    cache = model.allocate_inference_cache(case.batch, case.seq_len, dtype)
    empty = CacheSnapshot.take(model, cache, case.batch, dtype)
    paths: list[str] = []

    def call() -> torch.Tensor:
        logits, p = prefill(model, prompt, cache)
        paths[:] = p
        return logits.argmax(-1)

    rewind = lambda: empty.restore(cache)  # noqa: E731 - a one-line hook
    timing = measure(call, device=case.device, warmup=case.warmup, min_samples=case.samples,
                     budget_s=case.budget_s, before_each=rewind)
    info["backend"] = ran_backend(case)
    metrics = timing_metrics(timing, case.tokens)
    rewind()
    peak = measure_peak(call, case.device)
    if peak is not None:
        metrics += [Metric("peak_mem", "max", peak.peak_bytes, "B"),
                    Metric("peak_mem_delta", "max", peak.delta_bytes, "B")]
    metrics += _common_metrics(case, info, empty, cache, paths, model)
    return CaseResult(status="ok", metrics=metrics, info=info)


def run_decode(case: Case, model: SequenceModel, prompt: torch.Tensor, info: dict[str, Any]) -> CaseResult:
    dtype, device = DTYPES[case.dtype], case.device
    k = int(case.option("decode_tokens", 32))
    if k < 1:
        raise ValueError(f"decode_tokens must be >= 1 (got {k})")
    graphs = use_cuda_graphs(case)
    cache = model.allocate_inference_cache(case.batch, case.seq_len + max(k, CAPTURE_WARMUP_STEPS + 1), dtype)
    if case.warmup:  # a full-length warm-up prefill (lazy init, per-shape autotuning), then rewind to empty
        empty = CacheSnapshot.take(model, cache, case.batch, dtype)
        prefill(model, prompt, cache)
        empty.restore(cache)
    _sync(device)
    t0 = time.perf_counter()
    logits, paths = prefill(model, prompt, cache)
    first = logits.argmax(-1)
    _sync(device)
    ttft = time.perf_counter() - t0
    info["backend"] = ran_backend(case)

    kernels.forget_last_backends()  # so that last_backend("mamba_step") below says what this model's steps ran
    decoder, snapshot, capture_s = start_decoding(model, cache, first, cuda_graphs=graphs,
                                                  compiled=case.compile == "compiled")

    def round_() -> tuple[list[float], float]:
        snapshot.restore(cache)
        decoder.reset(first)
        return time_tokens(decoder, k, device)

    for _ in range(case.warmup):
        round_()
    lat: list[float] = []
    walls: list[float] = []
    while len(walls) < case.samples or (sum(walls) < case.budget_s and len(walls) < MAX_ROUNDS):
        round_lat, wall = round_()
        lat += round_lat
        walls.append(wall)
    t = Timing(samples=lat, first_call_s=ttft)
    wall_round = statistics.median(walls)
    n = len(lat)
    metrics = [*(m for m in timing_metrics(t, case.batch) if m.metric == "time"),
               *_quantile_metrics("token_latency", t),
               Metric("tokens_per_s", "median", case.batch * k / wall_round, "tok/s", len(walls)),
               Metric("ttft", "value", ttft, "s", 1),
               Metric("first_call", "value", decoder.first_step_s, "s", 1),  # the first step: compilation
               Metric("cuda_graphs", "value", float(graphs), "bool")]
    if graphs:
        metrics.append(Metric("graph_capture", "value", capture_s, "s"))
    if device == "cuda":
        metrics += [Metric("wall_time", "median", wall_round / k, "s", len(walls)),
                    Metric("launch_bound", "value", float(wall_round / k > LAUNCH_BOUND_RATIO * t.median), "bool", n)]
    elif kernels.last_backend("mamba_step") == "compiled":
        # The recorder replays the matmuls of an *eager* step, and the eager Mamba step is the fused C++ one, whose
        # matmuls run inside one call it cannot see: the fraction would count the whole mixer as overhead (for a
        # compiled case too, whose steps run inductor's fusion of the PyTorch step). Say so instead.
        info["step_overhead"] = ("not measured: the eager step it replays is the fused C++ Mamba step, which hides "
                                 "its matmuls from the recorder")
    else:
        def rewind() -> None:
            snapshot.restore(cache)
            decoder.reset(first)

        fraction, mm, step_s, n_ops = step_overhead(decoder, rewind)
        metrics += [Metric("step_matmul_time", "min", mm, "s", n_ops), Metric("step_time", "min", step_s, "s"),
                    Metric("step_overhead_fraction", "value", fraction, "fraction")]
    metrics += _common_metrics(case, info, snapshot, cache, paths, model)
    metrics += compile_metrics(case, info, decoder.compile_stats)
    info.update(cuda_graphs=graphs, decode_tokens=k, static_mixers=decoder.static_mixers)
    if kernels.last_backend("mamba_step") is not None:  # which Mamba-1 step ran: the fused C++ one or PyTorch ops
        # (a compiled step is always the PyTorch ops, compiled by inductor: see MambaMixer.step)
        stats = decoder.compile_stats  # set exactly when the case is compiled
        info["decode_step"] = stats.path if stats is not None else kernels.last_backend("mamba_step")
    return CaseResult(status="ok", metrics=metrics, info=info)


def run_decode_case(case: Case) -> CaseResult:
    """Entry point for modes "prefill" and "decode" (dispatched by ``bench.run.run_speed_case``)."""
    if case.mode not in ("prefill", "decode"):
        raise ValueError(f"mode '{case.mode}' is not an inference mode")
    torch.manual_seed(case.seed)
    _, model, info = build_case_model(case)
    model.eval()
    g = torch.Generator().manual_seed(case.seed)
    prompt = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), generator=g).to(case.device)
    with torch.inference_mode():
        if case.mode == "prefill":
            return run_prefill(case, model, prompt, info)
        return run_decode(case, model, prompt, info)

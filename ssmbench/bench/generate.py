"""``ssmbench generate``: prefill a random prompt, decode greedily, time each token (TTFT, latency, tokens/s).

The plumbing (prefill, cache snapshots, the greedy decoder, CUDA-graph capture) is in
:mod:`ssmbench.models.inference`, shared with the decode benchmark (:mod:`ssmbench.bench.decode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ssmbench.bench.timer import quantile
from ssmbench.models.blocks import SequenceModel
from ssmbench.models.inference import (
    CAPTURE_WARMUP_STEPS,
    GreedyDecoder,
    prefill,
    start_decoding,
    summarize_paths,
)


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
    with decoder.steady():  # guards skipped for the whole run (a compiled decoder)
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
    first_step_s: float = 0.0  # the first decode step (compilation included when compiled)
    graph_breaks: int = 0
    compile_path: str = ""  # how the step was compiled (--compile): aot_inductor (CPU) or torch.compile; "" eager
    tokens: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (b, new_tokens) generated

    @property
    def compiled(self) -> bool:
        return bool(self.compile_path)

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
             compiled: bool = False, on_token: Callable[[int], None] | None = None) -> GenerationResult:
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
    decoder, snapshot, capture = start_decoding(model, cache, first, cuda_graphs=cuda_graphs, compiled=compiled)
    out = [first]

    def record(i: int) -> None:
        out.append(decoder.token.clone())
        if on_token is not None:
            on_token(i + 1)

    lat, wall = time_tokens(decoder, new_tokens - 1, prompt.device.type, record)
    return GenerationResult(batch, length, ttft, lat, wall, snapshot.bytes_at(length + new_tokens - 1),
                            summarize_paths(paths), cuda_graphs, capture, decoder.first_step_s,
                            decoder.compile_stats.graph_breaks if decoder.compile_stats else 0,
                            decoder.compile_stats.path if decoder.compile_stats else "", torch.stack(out, dim=1))


def run_generation(model_name: str, *, backend: str = "auto", prompt_len: int = 1024, new_tokens: int = 256,
                   batch: int = 1, device: str = "cpu", dtype: str = "float32", d_model: int = 256,
                   n_layers: int = 2, vocab_size: int = 256, options: dict[str, Any] | None = None,
                   cuda_graphs: bool | None = None, compiled: bool = False, seed: int = 0,
                   on_token: Callable[[int], None] | None = None) -> tuple[GenerationResult, dict[str, Any]]:
    """Build a randomly initialised model and :func:`generate` from a random prompt (``ssmbench generate``).

    ``cuda_graphs=None`` means on for CUDA, off elsewhere. Returns the result and a dict describing the model.
    """
    from ssmbench.models import make_config
    from ssmbench.models.blocks import DTYPES

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
    result = generate(model, prompt, new_tokens, cuda_graphs=cuda_graphs, compiled=compiled, on_token=on_token)
    info = {"params": model.num_params(), "d_model": config.d_model, "n_layers": config.n_layers,
            "d_state": config.state_dim}
    return result, info

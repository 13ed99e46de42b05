"""Speed/memory cases: build the model, make inputs outside the timed region, time one mode, measure memory.

Modes: ``fwd`` (inference forward under ``torch.inference_mode``), ``fwdbwd`` (training-mode forward, cross-entropy
loss, backward). Time is per batch; tokens/s = batch * seq_len / median time. Memory is measured in a separate,
untimed pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ssmbench.bench.cost import case_bytes, case_flops
from ssmbench.bench.measure import build_case_model, compile_for_case, compile_metrics, ran_backend, timing_metrics
from ssmbench.bench.memory import measure_peak
from ssmbench.bench.memory_model import estimate_metrics
from ssmbench.bench.nvml import NvmlSampler, physical_index
from ssmbench.bench.timer import measure
from ssmbench.case import Case
from ssmbench.models.blocks import DTYPES
from ssmbench.store import CaseResult, Metric


def lm_loss(model: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Forward + cross-entropy: the part of a training step ``--compile`` compiles (its backward graph too)."""
    logits = model(tokens)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def make_step(case: Case, model: torch.nn.Module) -> tuple[Callable[[], object], Callable[[], None] | None]:
    """The timed call of a fwd/fwdbwd case and its untimed reset; a compiled case's call carries its
    ``compile_stats`` (graphs, graph breaks of the compiling first call)."""
    g = torch.Generator().manual_seed(case.seed)
    tokens = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), generator=g).to(case.device)
    if case.mode == "fwd":
        model.eval()
        run, stats = compile_for_case(case, model)

        def forward() -> object:
            with torch.inference_mode():
                return run(tokens)

        forward.compile_stats = stats  # type: ignore[attr-defined]
        return forward, None
    if case.mode == "fwdbwd":
        model.train()
        targets = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), generator=g).to(case.device)
        loss_fn, stats = compile_for_case(case, lm_loss)

        def forward_backward() -> object:
            loss = loss_fn(model, tokens, targets)
            loss.backward()
            return loss

        forward_backward.compile_stats = stats  # type: ignore[attr-defined]
        return forward_backward, lambda: model.zero_grad(set_to_none=True)
    raise ValueError(f"mode '{case.mode}' is not a speed mode here")


def run_training_mode_case(case: Case) -> CaseResult:
    """Modes ``fwd`` and ``fwdbwd`` (dispatched by :func:`ssmbench.bench.run.run_speed_case`)."""
    torch.manual_seed(case.seed)
    _, model, info = build_case_model(case)
    step, before = make_step(case, model)
    # CUDA: NVML sampled in a background thread while the calls run (energy per token, power, clock, temperature)
    sampler = NvmlSampler(physical_index()) if case.device == "cuda" else None
    with sampler or contextlib.nullcontext():
        timing = measure(step, device=case.device, warmup=case.warmup, min_samples=case.samples,
                         budget_s=case.budget_s, before_each=before)
    info["backend"] = ran_backend(case)
    metrics = timing_metrics(timing, case.tokens) + compile_metrics(case, info, getattr(step, "compile_stats", None))
    if sampler is not None:  # every call in the window did the same work: first call, warm-up and samples
        calls = 1 + max(0, case.warmup - 1) + len(timing.samples)
        metrics += sampler.readings.metrics(calls * case.tokens)
    if before is not None:
        before()
    # A crossover probe runs the same case many times and needs only its time: the untimed memory pass is skipped.
    peak = measure_peak(step, case.device) if case.option("measure_memory", True) else None
    if peak is not None:
        metrics += [Metric("peak_mem", "max", peak.peak_bytes, "B"), Metric("peak_mem_delta", "max",
                                                                             peak.delta_bytes, "B")]
    metrics.append(Metric("params", "value", info["params"], "count"))
    metrics += estimate_metrics(model, case.mode, DTYPES[case.dtype], case.batch, case.seq_len)
    flops = case_flops(model, case.batch, case.seq_len, case.mode)
    moved = case_bytes(model, case.batch, case.seq_len, case.mode, torch.empty((), dtype=DTYPES[case.dtype])
                       .element_size())
    metrics += [Metric("flops", "value", flops, "FLOP"),
                Metric("achieved_flops", "median", flops / timing.median, "FLOP/s", len(timing.samples)),
                Metric("bytes", "value", moved, "B"),
                Metric("achieved_bandwidth", "median", moved / timing.median, "B/s", len(timing.samples))]
    return CaseResult(status="ok", metrics=metrics, info=info)

"""Measurement helpers every benchmark mode shares: the case's model, the backend that ran, timing metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ssmbench import kernels
from ssmbench.bench.timer import Timing, quantile
from ssmbench.case import Case
from ssmbench.models import count_params, make_config, match_params
from ssmbench.models.blocks import DTYPES
from ssmbench.models.compile import COMPILED, CompileStats, compile_fn, compiled_label
from ssmbench.registry import MODELS
from ssmbench.store import Metric

# A case is flagged launch-bound when synchronised wall time exceeds device time by this factor (CUDA only).
LAUNCH_BOUND_RATIO = 1.5


def build_case_model(case: Case) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(config, model on the case's device/dtype, info) for a case; info has params, d_state, d_model."""
    opts = dict(case.model_options)
    config = make_config(case.model, backend=case.backend, d_model=case.d_model, n_layers=case.n_layers,
                         vocab_size=case.vocab_size, options=opts)
    if case.match_params and case.model != "transformer":
        target = count_params(make_config("transformer", d_model=case.d_model, n_layers=case.n_layers,
                                          vocab_size=case.vocab_size, options=opts))
        config = match_params(config, target)
    model = config.build().to(device=case.device, dtype=DTYPES[case.dtype])
    info = {"params": model.num_params(), "d_state": config.state_dim, "d_model": config.d_model,
            "n_layers": config.n_layers}
    return config, model, info


def ran_backend(case: Case) -> str:
    """The backend(s) that actually ran, from the kernels' dispatch record."""
    ops = MODELS.get(case.model).ops
    names = [kernels.last_backend(op) or "?" for op in ops]
    return "+".join(names) if names else "torch"


def compile_for_case(case: Case, fn: Callable[..., Any]) -> tuple[Callable[..., Any], CompileStats | None]:
    """``fn`` as the case runs it: itself (eager), or compiled with its first call (the compilation, timed as
    ``first_call`` by the timer; compile_fn runs ``fn`` once eagerly before it) watched for graph breaks."""
    if case.compile != COMPILED:
        return fn, None
    compiled, stats = compile_fn(fn, case.device), CompileStats()
    first = True

    def call(*args: Any) -> Any:
        nonlocal first
        if not first:
            return compiled(*args)
        first = False
        with stats.watch():
            return compiled(*args)

    return call, stats


def compile_metrics(case: Case, info: dict[str, Any], stats: CompileStats | None) -> list[Metric]:
    """Label the backend that ran as compiled and record graphs/graph breaks (nothing for an eager case)."""
    if stats is None:
        return []
    info["backend"] = compiled_label(info.get("backend", case.backend), True)
    info.update(stats.info())
    return [Metric("compiled_graphs", "value", stats.graphs, "count"),
            Metric("graph_breaks", "value", stats.graph_breaks, "count")]


def timing_metrics(t: Timing, tokens: int) -> list[Metric]:
    n = len(t.samples)
    out = [
        Metric("time", "median", t.median, "s", n, samples=tuple(t.samples)),
        Metric("time", "q25", t.quantile(0.25), "s", n),
        Metric("time", "q75", t.quantile(0.75), "s", n),
        Metric("time", "iqr", t.iqr, "s", n),
        Metric("time", "min", min(t.samples), "s", n),
        Metric("tokens_per_s", "median", tokens / t.median, "tok/s", n),
        Metric("first_call", "value", t.first_call_s, "s", 1),
    ]
    if t.host_samples:
        host = quantile(t.host_samples, 0.5)
        out.append(Metric("wall_time", "median", host, "s", n, samples=tuple(t.host_samples)))
        out.append(Metric("launch_bound", "value", float(host > LAUNCH_BOUND_RATIO * t.median), "bool", n))
    return out

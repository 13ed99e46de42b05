"""Speed/memory cases: build the model, make inputs outside the timed region, time one mode, measure memory.

Modes: ``fwd`` (inference forward under ``torch.inference_mode``), ``fwdbwd`` (training-mode forward, cross-entropy
loss, backward). Time is per batch; tokens/s = batch * seq_len / median time. Memory is measured in a separate,
untimed pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ssmbench import kernels
from ssmbench.bench.cost import case_flops
from ssmbench.bench.memory import measure_peak
from ssmbench.bench.timer import Timing, measure, quantile
from ssmbench.case import Case
from ssmbench.models import count_params, make_config, match_params
from ssmbench.registry import MODELS
from ssmbench.store import CaseResult, Metric

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
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


def make_step(case: Case, model: torch.nn.Module) -> tuple[Callable[[], object], Callable[[], None] | None]:
    g = torch.Generator().manual_seed(case.seed)
    tokens = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), generator=g).to(case.device)
    if case.mode == "fwd":
        model.eval()

        def forward() -> object:
            with torch.inference_mode():
                return model(tokens)

        return forward, None
    if case.mode == "fwdbwd":
        model.train()
        targets = torch.randint(0, case.vocab_size, (case.batch, case.seq_len), generator=g).to(case.device)

        def forward_backward() -> object:
            logits = model(tokens)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
            loss.backward()
            return loss

        return forward_backward, lambda: model.zero_grad(set_to_none=True)
    raise ValueError(f"mode '{case.mode}' is not a speed mode here")


def run_speed_case(case: Case) -> CaseResult:
    if case.mode in ("prefill", "decode"):
        from ssmbench.bench.decode import run_decode_case

        return run_decode_case(case)
    torch.manual_seed(case.seed)
    _, model, info = build_case_model(case)
    step, before = make_step(case, model)
    timing = measure(step, device=case.device, warmup=case.warmup, min_samples=case.samples,
                     budget_s=case.budget_s, before_each=before)
    info["backend"] = ran_backend(case)
    metrics = timing_metrics(timing, case.tokens)
    if before is not None:
        before()
    peak = measure_peak(step, case.device)
    if peak is not None:
        metrics += [Metric("peak_mem", "max", peak.peak_bytes, "B"), Metric("peak_mem_delta", "max",
                                                                             peak.delta_bytes, "B")]
    metrics.append(Metric("params", "value", info["params"], "count"))
    flops = case_flops(model, case.batch, case.seq_len, case.mode)
    metrics += [Metric("flops", "value", flops, "FLOP"),
                Metric("achieved_flops", "median", flops / timing.median, "FLOP/s", len(timing.samples))]
    return CaseResult(status="ok", metrics=metrics, info=info)

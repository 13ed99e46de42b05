"""Kernel benchmarks: one op's backends head to head on the same inputs (``ssmbench kernel``).

A kernel case is a speed case with ``scope="kernel"``: ``model`` holds the op (``ssd``, ``selective_scan``,
``s4_kernel``), ``backend`` the backend, and ``options`` the problem shape (defaults below, overridable with
``--option``). Modes: ``fwd`` (under ``torch.no_grad``) and ``fwdbwd`` (forward, then backward of the outputs with a
fixed upstream gradient into every floating input). Rows are the usual speed rows (time, tokens/s, peak memory)
plus ``input_bytes`` and ``io_bytes`` (inputs + outputs), so memory can be read as a multiple of the data the op
must touch. The peer implementations are backends of their op (``ssd:minimal`` = the Mamba-2 paper's listing,
``s4_kernel:cauchy_naive`` = S4's naive Cauchy product), so they run under the same timer in the same sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ssmbench.case import Case
from ssmbench.store import CaseResult, Metric

MODES = ("fwd", "fwdbwd")


@dataclass(frozen=True)
class KernelOp:
    defaults: dict[str, int]  # problem shape
    width: str  # the option that plays d_model in the rows
    summary: str


KERNEL_OPS: dict[str, KernelOp] = {
    "ssd": KernelOp({"heads": 8, "headdim": 64, "d_state": 64, "ngroups": 1, "chunk": 64}, "heads",
                    "Mamba-2 SSD: x (b, L, heads, headdim), B/C (b, L, ngroups, d_state), with D"),
    "selective_scan": KernelOp({"d": 256, "d_state": 16}, "d",
                               "Mamba-1 selective scan: u, delta, z (b, d, L); B, C (b, d_state, L); softplus, D"),
    "s4_kernel": KernelOp({"channels": 256, "d_state": 64}, "channels",
                          "S4 kernel K (channels, L): vandermonde = S4D (diag), cauchy* = S4 (DPLR, HiPPO-LegS)"),
}


def plan_kernel_cases(op: str, backends: tuple[str, ...], lengths: tuple[int, ...], modes: tuple[str, ...], *,
                      batch: int, options: dict[str, Any], device: str, dtype: str, warmup: int, samples: int,
                      budget_s: float, threads: int, timeout_s: float) -> list[Case]:
    """Every length x mode x backend, the backends of one (length, mode) adjacent so that they run back to back."""
    spec = KERNEL_OPS[op]
    shape = {**spec.defaults, **options}
    width = shape[spec.width] * (shape["headdim"] if op == "ssd" else 1)
    return [Case(kind="speed", scope="kernel", model=op, backend=backend, mode=mode, device=device, dtype=dtype,
                 batch=1 if op == "s4_kernel" else batch, seq_len=seq_len, d_model=width, n_layers=1,
                 warmup=warmup, samples=samples, budget_s=budget_s, threads=threads,
                 options=tuple(sorted(shape.items())), timeout_s=timeout_s)
            for seq_len in lengths for mode in modes for backend in backends]


def _inputs(case: Case):
    """(call, floating inputs) for the case: ``call()`` runs the op on the inputs and returns its output tensor."""
    import torch
    import torch.nn.functional as F

    from ssmbench import kernels
    from ssmbench.models.blocks import DTYPES

    o, b, L, dev, dtype = dict(case.options), case.batch, case.seq_len, case.device, DTYPES[case.dtype]
    g = torch.Generator().manual_seed(case.seed)

    def randn(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale + shift).to(device=dev, dtype=dtype)

    if case.model == "ssd":
        h, p, n, ng = o["heads"], o["headdim"], o["d_state"], o["ngroups"]
        x, B, C = randn(b, L, h, p), randn(b, L, ng, n), randn(b, L, ng, n)
        dt = F.softplus(randn(b, L, h, shift=-2.0))
        A, D = -torch.exp(torch.rand(h, generator=g)).to(dev, dtype), randn(h)
        args = [x, dt, A, B, C, D]
        return (lambda: kernels.ssd(x, dt, A, B, C, o["chunk"], D=D, backend=case.backend)), args
    if case.model == "selective_scan":
        d, n = o["d"], o["d_state"]
        u, delta, z = randn(b, d, L), randn(b, d, L, shift=-2.0), randn(b, d, L)
        A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(dev, dtype)  # Mamba's S4D-real init
        B, C, D, bias = randn(b, n, L), randn(b, n, L), randn(d), randn(d, scale=0.1)
        args = [u, delta, A, B, C, D, z, bias]
        return (lambda: kernels.selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True,
                                               backend=case.backend)), args
    if case.model == "s4_kernel":
        from ssmbench.kernels.s4.hippo import nplr_legs, s4d_init

        H, N = o["channels"], o["d_state"]
        mode = "diag" if case.backend == "vandermonde" else o.get("mode", "dplr")
        real = torch.float64 if dtype == torch.float64 else torch.float32
        cplx = torch.complex128 if real == torch.float64 else torch.complex64
        log_dt = torch.rand(H, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        dt = torch.exp(log_dt).to(dev, real)
        C = torch.randn(H, N // 2, generator=g, dtype=torch.complex64).to(dev, cplx)
        if mode == "diag":
            A = s4d_init(N, "lin").repeat(H, 1).to(dev, cplx)
            B, P = torch.ones_like(A), None
        else:
            Lam, P0, B0, _ = nplr_legs(N)
            A, P, B = (t.repeat(H, 1).to(dev, cplx) for t in (Lam, P0, B0))
        # mode dplr: C stands for C̃ (what the S4-DPLR model trains and its forward passes), so the cauchy backends
        # time exactly the model's kernel computation: Cauchy sums + Woodbury + the Δ-dependent terms + irfft.
        args = [t for t in (dt, A, B, C, P) if t is not None]
        return (lambda: kernels.s4_kernel(dt, A, B, C, L, P=P, mode=mode, backend=case.backend)), args
    raise ValueError(f"unknown kernel op '{case.model}'; known: {', '.join(KERNEL_OPS)}")


def run_kernel_case(case: Case) -> CaseResult:
    """Time one backend of one op (modes fwd / fwdbwd) and measure its memory."""
    import torch

    from ssmbench import kernels
    from ssmbench.bench.measure import timing_metrics
    from ssmbench.bench.memory import measure_peak
    from ssmbench.bench.timer import measure

    if case.mode not in MODES:
        raise ValueError(f"kernel cases run modes {', '.join(MODES)}, not '{case.mode}'")
    call, args = _inputs(case)
    out = call()
    in_bytes = sum(t.numel() * t.element_size() for t in args)
    io_bytes = in_bytes + out.numel() * out.element_size()
    before = None
    if case.mode == "fwd":
        def step() -> object:
            with torch.no_grad():
                return call()
    else:
        for t in args:
            t.requires_grad_(True)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.device, out.dtype)

        def step() -> object:
            y = call()
            y.backward(grad)
            return y

        def before() -> None:
            for t in args:
                t.grad = None
    del out
    timing = measure(step, device=case.device, warmup=case.warmup, min_samples=case.samples,
                     budget_s=case.budget_s, before_each=before)
    metrics = timing_metrics(timing, case.batch * case.seq_len)
    if before is not None:
        before()
    peak = measure_peak(step, case.device)
    if peak is not None:
        metrics += [Metric("peak_mem", "max", peak.peak_bytes, "B"),
                    Metric("peak_mem_delta", "max", peak.delta_bytes, "B")]
    metrics += [Metric("input_bytes", "value", in_bytes, "B"), Metric("io_bytes", "value", io_bytes, "B")]
    info = {"backend": kernels.last_backend(case.model) or case.backend, "op": case.model, **dict(case.options)}
    return CaseResult(status="ok", metrics=metrics, info=info)

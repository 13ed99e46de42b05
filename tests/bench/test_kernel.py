"""Kernel benchmark cases: every op's inputs run on its backends, in both modes, as normal speed rows."""

from __future__ import annotations

import pytest

from ssmbench import kernels
from ssmbench.bench.kernel import KERNEL_OPS, plan_kernel_cases, run_kernel_case

TINY = {"ssd": {"heads": 2, "headdim": 16, "d_state": 16, "chunk": 8}, "selective_scan": {"d": 8, "d_state": 16},
        "s4_kernel": {"channels": 4, "d_state": 8}}
BACKENDS = {"ssd": ("minimal", "chunked", "compiled"), "selective_scan": ("chunked", "compiled"),
            "s4_kernel": ("vandermonde", "cauchy", "cauchy_compiled", "cauchy_naive")}


def plan(op: str, backends: tuple[str, ...], modes: tuple[str, ...] = ("fwd",), lengths=(8, 37)) -> list:
    return plan_kernel_cases(op, backends, lengths, modes, batch=2, options=TINY[op], device="cpu",
                             dtype="float32", warmup=1, samples=2, budget_s=0.0, threads=1, timeout_s=60)


def test_plan_puts_backends_of_one_length_and_mode_side_by_side() -> None:
    cases = plan("ssd", ("minimal", "compiled"), ("fwd", "fwdbwd"))
    assert [(c.seq_len, c.mode, c.backend) for c in cases[:4]] == [
        (8, "fwd", "minimal"), (8, "fwd", "compiled"), (8, "fwdbwd", "minimal"), (8, "fwdbwd", "compiled")]
    assert {c.scope for c in cases} == {"kernel"} and {c.model for c in cases} == {"ssd"}
    shape = dict(cases[0].options)
    assert shape == {**KERNEL_OPS["ssd"].defaults, **TINY["ssd"]}
    assert cases[0].d_model == 2 * 16  # heads x headdim
    assert {c.batch for c in plan("s4_kernel", ("vandermonde",))} == {1}  # the S4 kernel has no batch


@pytest.mark.parametrize("op", KERNEL_OPS)
def test_every_backend_runs_both_modes(op: str) -> None:
    available = {b.name for b in kernels.backends(op, "cpu") if b.available}
    for case in plan(op, tuple(b for b in BACKENDS[op] if b in available), ("fwd", "fwdbwd"), lengths=(9,)):
        result = run_kernel_case(case)
        assert result.status == "ok"
        values = {(m.metric, m.stat): m.value for m in result.metrics}
        assert values[("time", "median")] > 0
        assert values[("io_bytes", "value")] > values[("input_bytes", "value")] > 0
        assert result.info["backend"] == case.backend and result.info["op"] == op


def test_ssd_compiled_records_the_backend_that_ran() -> None:
    # with gradients the compiled SSD runs the chunked path; the row still names the requested backend
    case = plan("ssd", ("compiled",), ("fwdbwd",))[0]
    if not {b.name: b for b in kernels.backends("ssd", "cpu")}["compiled"].available:
        pytest.skip("no C++ toolchain")
    assert run_kernel_case(case).info["backend"] == "compiled"

"""The one place where a speed case's mode picks its benchmark (the worker calls :func:`run_speed_case`)."""

from __future__ import annotations

from ssmbench.case import Case
from ssmbench.store import CaseResult

TRAINING_MODES = ("fwd", "fwdbwd")
INFERENCE_MODES = ("prefill", "decode")


def run_speed_case(case: Case) -> CaseResult:
    """Run one speed case: kernel-scope cases in :mod:`.kernel`; fwd/fwdbwd in :mod:`.speed`, prefill/decode in
    :mod:`.decode`."""
    if case.scope == "kernel":
        from ssmbench.bench.kernel import run_kernel_case

        return run_kernel_case(case)
    if case.mode in TRAINING_MODES:
        from ssmbench.bench.speed import run_training_mode_case

        return run_training_mode_case(case)
    if case.mode in INFERENCE_MODES:
        from ssmbench.bench.decode import run_decode_case

        return run_decode_case(case)
    raise ValueError(f"unknown mode '{case.mode}'; modes: {', '.join(TRAINING_MODES + INFERENCE_MODES)}")

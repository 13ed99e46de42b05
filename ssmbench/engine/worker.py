"""The worker side of the runner: executes cases one after another in a long-lived subprocess.

torch is imported once per worker, not once per case. Every exception becomes a :class:`CaseResult` with a
status (oom | error | skipped); only a hang or a dead process needs the parent's help (runner.py).
"""

from __future__ import annotations

import dataclasses
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ssmbench.case import Case
from ssmbench.store import CaseResult, Metric

# case.kind -> "module:function" taking a Case and returning a CaseResult
EXECUTORS = {
    "speed": "ssmbench.bench.run:run_speed_case",
    "accuracy": "ssmbench.train.loop:run_accuracy_case",
    "pair": "ssmbench.bench.pair:run_pair_case",  # a crossover probe: two speed cases timed round by round
}

_OOM_MARKERS = ("out of memory", "cannot allocate memory", "defaultcpuallocator: can't allocate")
_CUDA_FATAL_MARKERS = ("illegal memory access", "cuda error", "device-side assert", "unspecified launch failure")


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name})"


def classify(exc: BaseException) -> tuple[str, str, bool]:
    """(status, one-line error, device_suspect) for an exception raised by a case."""
    from ssmbench.kernels import BackendUnavailable

    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    low = text.lower()
    if isinstance(exc, BackendUnavailable):
        return "skipped", text, False
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(
            m in low for m in _OOM_MARKERS):
        return "oom", text, False
    suspect = any(m in low for m in _CUDA_FATAL_MARKERS)
    return "error", text + _where(exc), suspect


def configure(case: Case) -> None:
    import torch

    from ssmbench.models.compile import fresh_compile_state

    if case.threads > 0 and torch.get_num_threads() != case.threads:
        torch.set_num_threads(case.threads)
    fresh_compile_state()


def execute(case: Case) -> tuple[CaseResult, bool]:
    """Run one case in this process. Returns (result, device_suspect)."""
    from ssmbench.bench.memory import memory_cap
    from ssmbench.contention import LoadProbe
    from ssmbench.kernels._backend import load_target

    try:
        configure(case)
        if case.kind not in EXECUTORS:
            raise ValueError(f"unknown case kind '{case.kind}'")
        with memory_cap(case.max_memory, case.device), LoadProbe() as probe:
            result = load_target(EXECUTORS[case.kind])(case)
        if result.status == "ok":  # how busy the machine was meanwhile: contended timings get flagged
            result.metrics = [*(result.metrics or []), *probe.metrics()]
        return result, False
    except Exception as exc:  # every failure becomes a status row; the sweep goes on
        status, message, suspect = classify(exc)
        return CaseResult(status=status, error=message, metrics=_oom_estimate(case) if status == "oom" else None), \
            suspect
    finally:
        _release_memory(case.device)


def _oom_estimate(case: Case) -> list | None:
    """An out-of-memory row still carries the analytic memory estimate, so the report can say by how much the
    case missed the budget and predict the longest length that fits."""
    from ssmbench.bench.memory_model import case_estimate_metrics

    try:
        return case_estimate_metrics(case) or None
    except Exception:  # an estimate is a bonus; never let it hide the oom itself
        return None


def _release_memory(device: str) -> None:
    import gc

    gc.collect()
    # Survivors (torch, imported modules, caches) move out of the collector's view: with torch imported a full
    # collection otherwise costs ~0.2 s, twice per case (here and in measure_peak), more than a small case's timing.
    # Unfrozen at exit so that interpreter teardown still collects them (else nanobind/triton report leaks).
    if gc.get_freeze_count() == 0:
        import atexit

        atexit.register(gc.unfreeze)
    gc.freeze()
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def result_to_dict(result: CaseResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_dict(data: dict[str, Any]) -> CaseResult:
    metrics = [Metric(**m) for m in (data.get("metrics") or [])]
    return CaseResult(status=data["status"], error=data.get("error", ""), metrics=metrics, info=data.get("info"))


def worker_main(recv_conn: Connection, send_conn: Connection) -> None:
    """Receive case dicts, send back (result dict, device_suspect) until told to stop (None) or the pipe closes."""
    while True:
        try:
            message = recv_conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        result, suspect = execute(Case.from_dict(message))
        try:
            send_conn.send({"result": result_to_dict(result), "suspect": suspect})
        except OSError:  # the parent is gone (BrokenPipeError): nobody to report to, exit quietly
            return


def main(argv: list[str]) -> None:
    """Entry point of the worker process: ``python -m ssmbench.engine.worker READ_FD WRITE_FD``."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it kills us
    from multiprocessing.connection import Connection

    from ssmbench.engine.lifeline import tie_to_parent

    tie_to_parent(int(argv[0]))  # die with the parent however it dies (prctl + pipe hang-up)

    recv_conn = Connection(int(argv[0]), writable=False)
    send_conn = Connection(int(argv[1]), readable=False)
    worker_main(recv_conn, send_conn)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

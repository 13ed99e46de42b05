"""Plan cases and run them, each in a persistent worker subprocess with a timeout, resumably.

Isolation without waste: one worker process runs case after case (torch imported once) and is replaced only
when it dies (segfault, SIGKILL, host OOM), hangs past the case's timeout, or reports a suspect device state
(after a CUDA error). Each finished case is written at once as its own Parquet part, so a killed sweep loses at
most the case in flight, and re-running skips finished cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path

from ssmbench import store
from ssmbench.case import Case
from ssmbench.spec import SweepSpec
from ssmbench.store import CaseResult

_SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}


def resolve_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                from ssmbench.spec import SpecError

                raise SpecError("--device cuda requested but torch sees no CUDA device "
                                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plan_sweep(spec: SweepSpec) -> list[Case]:
    """Every model x mode x length (x batch) of a sweep, in a cheap-first order (short lengths first)."""
    device = resolve_device(spec.device)
    cases = []
    for seq_len in spec.lengths:
        batches = spec.batches or (max(1, spec.tokens // seq_len),)
        for batch in batches:
            for mode in spec.modes:
                for m in spec.models:
                    options = (("decode_tokens", spec.decode_tokens),) if mode in ("prefill", "decode") else ()
                    cases.append(Case(kind="speed", model=m.name, backend=m.backend, mode=mode, device=device,
                                      dtype=spec.dtype, batch=batch, seq_len=seq_len, d_model=spec.d_model,
                                      n_layers=spec.n_layers, vocab_size=spec.vocab_size,
                                      model_options=spec.model_options, match_params=spec.match_params,
                                      warmup=spec.warmup, samples=spec.samples, budget_s=spec.budget_s,
                                      threads=spec.threads, seed=spec.seed, options=options,
                                      timeout_s=spec.timeout_s))
    return cases


class WorkerProcess:
    """A persistent worker: ``python -m ssmbench.worker`` talking over two pipes.

    A fresh interpreter (not fork, not multiprocessing's spawn) so that no CUDA state is inherited and the
    caller's ``__main__`` is never re-imported.
    """

    def __init__(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ssmbench.worker", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)

    def run(self, case: Case) -> tuple[CaseResult, bool]:
        """(result, needs_restart)."""
        try:
            self.send_conn.send(dataclasses.asdict(case))
            if not self.recv_conn.poll(case.timeout_s):
                self.kill()
                return CaseResult(status="timeout", error=f"no result within {case.timeout_s:g} s; worker killed"), True
            reply = self.recv_conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self._wait(5)
            return CaseResult(status="error", error=self._death_reason()), True
        from ssmbench.worker import result_from_dict

        return result_from_dict(reply["result"]), bool(reply["suspect"])

    def _death_reason(self) -> str:
        code = self.proc.poll()
        if code is None:
            return "worker stopped answering"
        if code < 0:
            name = _SIGNAL_NAMES.get(-code, str(-code))
            hint = " (out of host memory? the kernel's OOM killer sends SIGKILL)" if name == "SIGKILL" else ""
            return f"worker process killed by {name}{hint}"
        return f"worker process exited with code {code}"

    def _wait(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._wait(10)
        self.send_conn.close()
        self.recv_conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send_conn.send(None)
            self._wait(5)
        self.kill()


@dataclass
class Outcome:
    case: Case
    result: CaseResult
    seconds: float
    skipped_existing: bool = False


@dataclass
class RunSummary:
    run_id: str
    root: Path
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def executed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.skipped_existing]

    def count(self, status: str) -> int:
        return sum(1 for o in self.executed if o.result.status == status)

    @property
    def failed(self) -> int:
        return sum(1 for o in self.executed if o.result.status not in ("ok", "skipped"))


def select_pending(cases: Sequence[Case], root: Path, *, resume: bool, force: bool,
                   retry_failed: bool) -> tuple[list[Case], list[Case]]:
    """(to_run, already_done). Duplicated cases in the plan run once."""
    unique = list(dict.fromkeys(cases))
    if force or not resume:
        return unique, []
    done = store.finished_cases(root)
    to_run, existing = [], []
    for c in unique:
        status = done.get(c.case_id)
        if status is None or (retry_failed and status != "ok"):
            to_run.append(c)
        else:
            existing.append(c)
    return to_run, existing


ProgressHook = Callable[[int, int, Case | None, Outcome | None], None]


def run_cases(cases: Iterable[Case], root: str | Path, *, run_id: str | None = None, resume: bool = True,
              force: bool = False, retry_failed: bool = False, command: str = "", suite: str = "",
              on_progress: ProgressHook | None = None, in_process: bool = False) -> RunSummary:
    """Run ``cases`` and write one part per finished case under ``root``.

    ``on_progress(done, total, current_case, last_outcome)`` is called before each case and after the last.
    ``in_process=True`` runs cases in this process (no isolation; for debugging with pdb).
    """
    root = Path(root)
    run_id = run_id or store.new_run_id()
    to_run, existing = select_pending(list(cases), root, resume=resume, force=force, retry_failed=retry_failed)
    summary = RunSummary(run_id, root, [Outcome(c, CaseResult(status="ok"), 0.0, True) for c in existing])
    if not to_run:
        return summary
    from ssmbench.env import fingerprint

    store.write_run(root, run_id, fingerprint(), command=command, suite=suite)
    worker: WorkerProcess | None = None
    total = len(to_run)
    last: Outcome | None = None
    try:
        for i, case in enumerate(to_run):
            if on_progress:
                on_progress(i, total, case, last)
            t0 = time.perf_counter()
            if in_process:
                from ssmbench.worker import execute

                result, _ = execute(case)
            else:
                worker = worker or WorkerProcess()
                result, restart = worker.run(case)
                if restart:
                    worker.kill()
                    worker = None
            store.write_case(root, run_id, case, result)
            last = Outcome(case, result, time.perf_counter() - t0)
            summary.outcomes.append(last)
        if on_progress:
            on_progress(total, total, None, last)
    finally:
        if worker is not None:
            worker.close()
    return summary


def with_timeout(cases: Iterable[Case], timeout_s: float) -> list[Case]:
    return [replace(c, timeout_s=timeout_s) for c in cases]

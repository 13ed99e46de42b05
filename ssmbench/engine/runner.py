"""Plan cases and run them, each in a persistent worker subprocess with a timeout, resumably.

Isolation without waste: one worker process runs case after case (torch imported once) and is replaced only
when it dies (segfault, SIGKILL, host OOM), hangs past the case's timeout, or reports a suspect device state
(after a CUDA error). Each finished case is written at once as its own Parquet part, so a killed sweep loses at
most the case in flight, and re-running skips finished cases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

from ssmbench import store
from ssmbench.case import Case
from ssmbench.engine.claims import ClaimedQueue, Claims
from ssmbench.engine.lifeline import PARENT_ENV
from ssmbench.engine.skipping import OomSkipper
from ssmbench.spec import SweepSpec, resolve_device
from ssmbench.store import CaseResult

_SIGNAL_NAMES = {s.value: s.name for s in signal.Signals}


def plan_sweep(spec: SweepSpec) -> list[Case]:
    """Every model x mode x length (x batch) of a sweep, in a cheap-first order (short lengths first)."""
    device = resolve_device(spec.device)
    cases = []
    for seq_len in spec.lengths:
        batches = spec.batches or (max(1, spec.tokens // seq_len),)
        for batch in batches:
            for mode in spec.modes:
                for m, compile_mode in itertools.product(spec.models, spec.compile):
                    options = (("decode_tokens", spec.decode_tokens),) if mode in ("prefill", "decode") else ()
                    cases.append(Case(kind="speed", model=m.name, backend=m.backend, mode=mode, device=device,
                                      dtype=spec.dtype, batch=batch, seq_len=seq_len, d_model=spec.d_model,
                                      n_layers=spec.n_layers, vocab_size=spec.vocab_size,
                                      model_options=spec.model_options, match_params=spec.match_params,
                                      warmup=spec.warmup, samples=spec.samples, budget_s=spec.budget_s,
                                      threads=spec.threads, seed=spec.seed, options=options,
                                      timeout_s=spec.timeout_s, max_memory=spec.max_memory,
                                      compile=compile_mode))
    return cases


def shard_cases(cases: Sequence[Case], shard: tuple[int, int] | None) -> list[Case]:
    """Share ``i`` of ``n`` (1-based) of the de-duplicated case list: every n-th case from the i-th.

    Round-robin over the planned order (short lengths first) gives each share a similar mix of cheap and
    expensive cases; the shares are disjoint and their union is the whole list, so n machines writing to one
    results directory produce exactly the unsharded sweep. Deterministic: it depends only on the plan, which
    depends only on the command line (and the resolved device, so give --device explicitly across machines).
    """
    unique = list(dict.fromkeys(cases))
    if shard is None:
        return unique
    index, count = shard
    return unique[index - 1::count]


def check_backends_available(cases: Iterable[Case]) -> None:
    """An explicitly requested backend that cannot run on the case's device is a usage error, before any case runs.

    (docs/harness.md §2: never a silent fallback; the message names what to install.)
    """
    from ssmbench import kernels
    from ssmbench.registry import MODELS
    from ssmbench.spec import SpecError

    wanted = {(c.model, c.backend, c.device, c.scope) for c in cases if c.backend != "auto"}
    for model, backend, device, scope in sorted(wanted):
        op = model if scope == "kernel" else MODELS.get(model).ops[0]  # kernel cases name the op itself
        status = {b.name: b for b in kernels.backends(op, device)}[backend]
        if not status.available:
            raise SpecError(f"backend '{backend}' of {model} ({op}) cannot run on {device}: {status.reason}")


class WorkerProcess:
    """A persistent worker: ``python -m ssmbench.engine.worker`` talking over two pipes.

    A fresh interpreter (not fork, not multiprocessing's spawn) so that no CUDA state is inherited and the
    caller's ``__main__`` is never re-imported.
    """

    def __init__(self, env: dict[str, str] | None = None, module: str = "ssmbench.engine.worker") -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), PARENT_ENV: str(os.getpid())})
        os.close(to_child_r)
        os.close(from_child_w)
        self.send_conn = Connection(to_child_w, readable=False)
        self.recv_conn = Connection(from_child_r, writable=False)

    def submit(self, case: Case) -> bool:
        """Hand a case to the worker; False if the worker is already dead."""
        try:
            self.send_conn.send(dataclasses.asdict(case))
            return True
        except OSError:
            return False

    def collect(self) -> tuple[CaseResult, bool]:
        """Read the result of the submitted case (call when ``recv_conn`` is ready). (result, needs_restart)."""
        try:
            reply = self.recv_conn.recv()
        except (EOFError, OSError):
            self._wait(5)
            return CaseResult(status="error", error=self._death_reason()), True
        from ssmbench.engine.worker import result_from_dict

        return result_from_dict(reply["result"]), bool(reply["suspect"])

    def run(self, case: Case) -> tuple[CaseResult, bool]:
        """Submit, wait up to the case's timeout, collect. (result, needs_restart)."""
        if not self.submit(case):
            return self.collect()
        if not self.recv_conn.poll(case.timeout_s):
            self.kill()
            return timeout_result(case), True
        return self.collect()

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


def timeout_result(case: Case) -> CaseResult:
    return CaseResult(status="timeout", error=f"no result within {case.timeout_s:g} s; worker killed")


class ResultsNotSaved(Exception):
    """A finished case's part could not be written: the run stops (the next write would fail too)."""

    def __init__(self, failure: store.WriteFailed, case: Case, saved: int, not_run: int) -> None:
        super().__init__(str(failure))
        self.failure, self.case, self.saved, self.not_run = failure, case, saved, not_run


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
        # Under --max-memory running out of memory is the answer being sought (the longest L that fits), not a failure.
        return sum(1 for o in self.executed if o.result.status not in ("ok", "skipped")
                   and not (o.result.status == "oom" and o.case.max_memory > 0))


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


def _measuring_fingerprint(cases: Sequence[Case], peaks: bool = False) -> dict:
    """The environment as the workers see it: their torch thread count comes from the cases (``--threads``), not
    from this parent process; with ``peaks``, the roofline's attained FLOP/s and bandwidth at that thread count."""
    from ssmbench.env import fingerprint

    info = fingerprint()
    threads = sorted({c.threads for c in cases if c.threads > 0})
    if threads and len(threads) == len({c.threads for c in cases}):
        info["torch_threads"] = ",".join(map(str, threads))
    if peaks and cases and cases[0].kind == "speed":
        from ssmbench.bench.peaks import measure_peaks

        info.update(measure_peaks(cases[0].device, cases[0].threads).to_env())
    return info


def run_cases(cases: Iterable[Case], root: str | Path, *, run_id: str | None = None, resume: bool = True,
              force: bool = False, retry_failed: bool = False, command: str = "", suite: str = "",
              on_progress: ProgressHook | None = None, in_process: bool = False,
              worker_envs: Sequence[dict[str, str]] = ({},), skip_after_oom: bool = True,
              notice: Callable[[str], None] | None = None, measure_peaks: bool = False) -> RunSummary:
    """Run ``cases`` and write one part per finished case under ``root``.

    ``on_progress(done, total, current_case, last_outcome)`` is called when a case starts and after the last.
    ``worker_envs`` gives one persistent worker per entry, with those environment overrides (``local-gpus``
    passes one ``CUDA_VISIBLE_DEVICES`` per GPU); cases are handed to whichever worker is free.
    ``in_process=True`` runs cases in this process (no isolation; for debugging with pdb).
    ``skip_after_oom``: see :class:`OomSkipper`. ``measure_peaks``: record this machine's attained FLOP/s and
    bandwidth with the run (``bench/peaks.py``; the report's roofline). Cases are claimed before they run (see
    ``engine/claims.py``): a case another sweep is measuring in ``root`` waits for it; ``notice(line)`` is told
    once per such sweep.
    A part that cannot be written ends the run with :class:`ResultsNotSaved` (finished parts stay).
    """
    root = Path(root)
    run_id = run_id or store.new_run_id()
    to_run, existing = select_pending(list(cases), root, resume=resume, force=force, retry_failed=retry_failed)
    summary = RunSummary(run_id, root, [Outcome(c, CaseResult(status="ok"), 0.0, True) for c in existing])
    if not to_run:
        return summary
    store.write_run(root, run_id, _measuring_fingerprint(to_run, measure_peaks), command=command, suite=suite)
    total = len(to_run)

    skipper = OomSkipper(skip_after_oom)
    claims = Claims(root, run_id)

    def finish(case: Case, result: CaseResult, started: float) -> None:
        skipper.record(case, result)
        try:
            store.write_case(root, run_id, case, result)
        except store.WriteFailed as exc:
            raise ResultsNotSaved(exc, case, saved=len(summary.executed),
                                  not_run=total - len(summary.executed) - 1) from exc
        finally:
            claims.release(case)
        summary.outcomes.append(Outcome(case, result, time.perf_counter() - started))

    if in_process:
        from ssmbench.engine.worker import execute

        for i, case in enumerate(to_run):
            if on_progress:
                on_progress(i, total, case, summary.outcomes[-1] if summary.executed else None)
            t0 = time.perf_counter()
            finish(case, skipper.skip(case) or execute(case)[0], t0)
    else:
        queue = ClaimedQueue(to_run, claims, lambda c: store.part_path(root, c), notice)
        try:
            _run_pool(queue, worker_envs, finish, lambda case: on_progress and on_progress(
                len(summary.executed), total, case, summary.executed[-1] if summary.executed else None),
                skipper.skip)
        finally:
            claims.release_all()
        # measured meanwhile by another sweep on the same directory: its part stands, like an existing one
        summary.outcomes += [Outcome(c, CaseResult(status="ok"), 0.0, True) for c in queue.done_elsewhere]
    if on_progress:
        on_progress(total, total, None, summary.executed[-1] if summary.executed else None)
    return summary


@dataclass
class _Slot:
    env: dict[str, str]
    worker: WorkerProcess | None = None
    case: Case | None = None
    started: float = 0.0

    def start(self, case: Case) -> None:
        self.worker = self.worker or WorkerProcess(self.env)
        self.case, self.started = case, time.perf_counter()
        if not self.worker.submit(case):  # died between cases: replace it once
            self.worker.kill()
            self.worker = WorkerProcess(self.env)
            self.worker.submit(case)

    def retire(self) -> None:
        if self.worker is not None:
            self.worker.kill()
        self.worker = None


def _run_pool(pending: ClaimedQueue, envs: Sequence[dict[str, str]],
              finish: Callable[[Case, CaseResult, float], None], on_start: Callable[[Case], object],
              skip: Callable[[Case], CaseResult | None] = lambda case: None) -> None:
    slots = [_Slot(dict(env)) for env in envs]
    try:
        while pending or any(s.case for s in slots):
            for slot in slots:
                while slot.case is None and pending:
                    case = pending.pop()
                    if case is None:  # every remaining case is being measured by another sweep
                        break
                    on_start(case)
                    skipped = skip(case)
                    if skipped is not None:  # decided without a worker: record it and take the next case
                        finish(case, skipped, time.perf_counter())
                        continue
                    slot.start(case)
            if not any(s.case for s in slots):
                if pending:
                    pending.wait()
                continue
            busy = [s for s in slots if s.case is not None]
            now = time.perf_counter()
            wait_s = max(0.0, min(s.started + s.case.timeout_s - now for s in busy))  # type: ignore[union-attr]
            ready = set(wait_connections([s.worker.recv_conn for s in busy], timeout=wait_s))  # type: ignore[union-attr]
            now = time.perf_counter()
            for slot in busy:
                case = slot.case
                assert case is not None and slot.worker is not None
                if slot.worker.recv_conn in ready:
                    result, restart = slot.worker.collect()
                elif now >= slot.started + case.timeout_s:
                    result, restart = timeout_result(case), True
                else:
                    continue
                if restart:
                    slot.retire()
                finish(case, result, slot.started)
                slot.case = None
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) or a write failure: kill at once, never wait on a case
        for slot in slots:
            slot.retire()
        raise
    for slot in slots:
        if slot.worker is not None:
            slot.worker.close()

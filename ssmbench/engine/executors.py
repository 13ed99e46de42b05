"""Where cases run: ``local`` (one worker), ``local-gpus`` (one worker per GPU), ``slurm`` (submitit jobs).

All three write the same Parquet parts under the results root, so a sweep can be resumed with any of them.
Slurm jobs each run a share of the cases with the ordinary runner (a worker subprocess per job, same timeouts
and failure rows) on a shared filesystem; submitit's ``local``/``debug`` clusters make this testable without
Slurm. No home-made scheduler: submitit does the queueing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssmbench import store
from ssmbench.case import Case
from ssmbench.engine.runner import Outcome, ProgressHook, RunSummary, run_cases, select_pending
from ssmbench.spec import SpecError
from ssmbench.store import CaseResult

EXECUTORS = ("local", "local-gpus", "slurm")


@dataclass(frozen=True)
class SlurmOptions:
    folder: str = "results/slurm"  # submitit logs and pickles
    partition: str | None = None
    timeout_min: int = 240
    jobs: int = 4  # cases are split round-robin over this many array tasks
    gpus_per_job: int = 1
    cpus_per_job: int = 8
    cluster: str | None = None  # None = auto (slurm if available); "local" / "debug" for testing


def gpu_worker_envs(count: int | None = None) -> list[dict[str, str]]:
    """One environment per visible GPU (CUDA_VISIBLE_DEVICES pinned), or a clear error if there is none."""
    import torch

    available = torch.cuda.device_count()
    if available == 0:
        raise SpecError("--executor local-gpus needs CUDA devices, and torch sees none; use --executor local")
    n = available if count is None else count
    if not 1 <= n <= available:
        raise SpecError(f"--gpus {n}: this machine has {available} GPU(s)")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",")[:n] if visible else [str(i) for i in range(n)]
    return [{"CUDA_VISIBLE_DEVICES": i} for i in ids]


def _slurm_task(cases: list[Case], root: str, run_id: str) -> dict[str, int]:
    """Runs inside one submitit job: the ordinary runner over this job's share of the cases."""
    summary = run_cases(cases, root, run_id=run_id)
    return {"ran": len(summary.executed), "failed": summary.failed}


def run_slurm(cases: Sequence[Case], root: Path, options: SlurmOptions, *, run_id: str | None = None,
              on_progress: ProgressHook | None = None, resume: bool = True, force: bool = False,
              retry_failed: bool = False) -> RunSummary:
    try:
        import submitit
    except ImportError:
        raise SpecError("--executor slurm needs submitit: pip install 'ssmbench[slurm]'") from None
    run_id = run_id or store.new_run_id()
    to_run, existing = select_pending(list(cases), root, resume=resume, force=force, retry_failed=retry_failed)
    summary = RunSummary(run_id, root, [Outcome(c, CaseResult(status="ok"), 0.0, True) for c in existing])
    if not to_run:
        return summary
    n_jobs = max(1, min(options.jobs, len(to_run)))
    shares = [to_run[i::n_jobs] for i in range(n_jobs)]
    executor = submitit.AutoExecutor(folder=options.folder, cluster=options.cluster)
    executor.update_parameters(timeout_min=options.timeout_min, gpus_per_node=options.gpus_per_job,
                               cpus_per_task=options.cpus_per_job, name="ssmbench")
    if options.partition:
        executor.update_parameters(slurm_partition=options.partition)
    jobs = executor.map_array(_slurm_task, shares, [str(root)] * n_jobs, [run_id] * n_jobs)
    done = 0
    for job in jobs:
        if on_progress:
            on_progress(done, len(to_run), None, None)
        try:
            job.result()
        except Exception as exc:  # a job that died: its unfinished cases stay pending for --resume
            print(f"slurm job {job.job_id} failed: {type(exc).__name__}: {str(exc)[:300]}")
        done = len(set(store.finished_cases(root)) & {c.case_id for c in to_run})
    finished = store.load(root)
    by_id = finished.drop_duplicates("case_id").set_index("case_id")
    for case in to_run:
        if case.case_id in by_id.index:
            row = by_id.loc[case.case_id]
            summary.outcomes.append(Outcome(case, CaseResult(status=row.status, error=row.error or ""), 0.0))
        else:
            summary.outcomes.append(Outcome(case, CaseResult(status="error", error="job died before the case ran"),
                                            0.0))
    return summary


def run_with_executor(cases: Sequence[Case], root: Path, executor: str = "local", *, gpus: int | None = None,
                      slurm: SlurmOptions | None = None, **kwargs) -> RunSummary:
    if executor == "local":
        return run_cases(cases, root, **kwargs)
    if executor == "local-gpus":
        return run_cases(cases, root, worker_envs=gpu_worker_envs(gpus), **kwargs)
    if executor == "slurm":
        allowed = {"run_id", "on_progress", "resume", "force", "retry_failed"}
        return run_slurm(cases, root, slurm or SlurmOptions(), **{k: v for k, v in kwargs.items() if k in allowed})
    raise SpecError(f"unknown executor '{executor}'; choose from {', '.join(EXECUTORS)}")

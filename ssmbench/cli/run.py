"""``ssmbench run SUITE``: a declarative suite file (its sweep and accuracy tables)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import (
    DryRun,
    Executor,
    Force,
    Gpus,
    MaxMemory,
    ResultsDir,
    RetryFailed,
    Shard,
    SkipAfterOom,
    SlurmJobs,
    SlurmPartition,
    console,
    run_sweeps,
    slurm_options,
)


def run(
    suite: Annotated[Path, typer.Argument(metavar="SUITE", help="A suite file, e.g. tasks/quick.toml.")],
    out: ResultsDir = Path("results"),
    force: Force = False,
    retry_failed: RetryFailed = False,
    dry_run: DryRun = False,
    executor: Executor = "local",
    gpus: Gpus = None,
    slurm_partition: SlurmPartition = None,
    slurm_jobs: SlurmJobs = 4,
    shard: Shard = None,
    max_memory: MaxMemory = None,
    skip_after_oom: SkipAfterOom = True,
) -> None:
    """Run a declarative suite file (tasks/*.toml): its sweep and accuracy tables."""
    from ssmbench.schema import load_suite

    s = load_suite(suite)
    screen = []
    if s.accuracy:
        from ssmbench.train.plan import plan_accuracy_tables

        screen = plan_accuracy_tables(s.accuracy, where=str(suite))
    console.print(f"[bold]{s.name}[/bold]: {s.description}" if s.description else f"[bold]{s.name}[/bold]")
    command = " ".join(["ssmbench", *sys.argv[1:]])
    if s.sweeps or not screen:
        run_sweeps(list(s.sweeps), out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=False,
                    command=command, suite=s.name, executor=executor, gpus=gpus,
                    slurm=slurm_options(out, slurm_partition, slurm_jobs, 600), shard=shard, max_memory=max_memory,
                    skip_after_oom=skip_after_oom)
    if screen:  # the accuracy protocol: screen, then the phases its validation rows call for (docs/tasks.md)
        from ssmbench.cli.protocol import run_accuracy_protocol

        run_accuracy_protocol(screen, out, force=force, retry_failed=retry_failed, dry_run=dry_run,
                              command=command, suite=s.name)

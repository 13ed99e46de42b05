"""What the commands share: consoles, the results-directory option, --option parsing, running cases with progress."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from ssmbench.spec import SpecError

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # messages stay one line, however long

ResultsDir = Annotated[Path, typer.Option("--out", "-o", "--results", "-r",
                                          help="Results directory (Parquet dataset).")]
Shard = Annotated[str | None, typer.Option(help="Run share I of N of the case list (e.g. 2/4): N machines, one "
                                           "results directory; the union of the shares is the whole sweep.")]
MaxMemory = Annotated[str | None, typer.Option(help="Cap each case's memory, e.g. 3GiB (CPU: address-space limit "
                                               "of the worker; CUDA: allocator fraction). Over it: an oom row.")]
SkipAfterOom = Annotated[bool, typer.Option(help="After a series runs out of memory, record its longer lengths "
                                            "as skipped instead of running them.")]
# The run options every command that runs cases shares (sweep, run, kernel, accuracy), declared once.
Force = Annotated[bool, typer.Option(help="Re-run cases that already have results.")]
RetryFailed = Annotated[bool, typer.Option(help="Re-run cases whose stored status is not ok.")]
DryRun = Annotated[bool, typer.Option(help="List the planned cases and exit.")]
Executor = Annotated[str, typer.Option(help="local (one worker), local-gpus (one worker per GPU) or slurm "
                                       "(submitit jobs).")]
Gpus = Annotated[int | None, typer.Option(help="local-gpus: how many GPUs (default all).")]
SlurmPartition = Annotated[str | None, typer.Option(help="slurm: partition.")]
SlurmJobs = Annotated[int, typer.Option(help="slurm: number of array jobs sharing the cases.")]


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so that they unwind exactly like Ctrl-C: workers killed, finished
    cases kept, a one-line "how to resume" message."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# The first interrupting signal of this process and whether a command already said what it saved. typer returns an
# exit code for an interrupt instead of raising it (standalone_mode=False), so app.main reads this afterwards.
INTERRUPT: dict[str, Any] = {"signal": None, "reported": False}


def handle_termination() -> None:
    """Make SIGTERM (kill, schedulers, systemd) and SIGHUP (closed terminal) behave like Ctrl-C, and make the first
    of these signals the one that counts.

    The first raises (KeyboardInterrupt, or :class:`Terminated`): the sweep kills its workers and prints what is
    saved. A second one while that clean-up runs is ignored, so it cannot cut the message short or interrupt an
    exit handler (a traceback); a third exits at once (the workers die with the process: engine/lifeline.py).
    """
    import contextlib
    import os
    import signal

    seen = [0]

    def on_signal(signum: int, frame: object) -> None:
        seen[0] += 1
        if seen[0] == 1:
            INTERRUPT["signal"] = signum
            raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)
        if seen[0] >= 3:
            os._exit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup` ignores SIGHUP on purpose: keep it ignored
            with contextlib.suppress(ValueError):  # not the main thread (the CLI called from a thread): leave it
                signal.signal(sig, on_signal)


def interrupted_by(exc: BaseException) -> str:
    """How the run was interrupted, for the one-line message."""
    import signal

    return f"interrupted by {signal.Signals(exc.signum).name}" if isinstance(exc, Terminated) else "interrupted"


def exit_code(exc: BaseException) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal (130 for Ctrl-C)."""
    return 128 + exc.signum if isinstance(exc, Terminated) else 130


def parse_options(pairs: list[str] | None) -> tuple[tuple[str, Any], ...]:
    """--option d_state=32 --option expand=1 -> (("d_state", 32), ("expand", 1)); values parsed as TOML."""
    import tomllib

    out = []
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"bad --option '{pair}': expected KEY=VALUE, e.g. --option d_state=32")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word such as a backend or init name
        out.append((key.strip(), value))
    return tuple(sorted(out))


def run_with_progress(cases: list, out: Path, *, force: bool, resume: bool, retry_failed: bool, command: str,
                       suite: str = "", in_process: bool = False, executor: str = "local", gpus: int | None = None,
                       slurm=None, skip_after_oom: bool = True, workers: int = 1):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ssmbench.engine.executors import run_with_executor
    from ssmbench.engine.runner import ResultsNotSaved

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                        transient=False)
    task_id = progress.add_task("planning", total=None)

    def on_progress(done: int, total: int, case, last) -> None:
        if last is not None:
            print_outcome(progress.console, last)
        progress.update(task_id, completed=done, total=total,
                        description=escape(case.label()) if case is not None else "done")

    try:
        with progress:
            kw = {"command": command, "suite": suite, "in_process": in_process, "skip_after_oom": skip_after_oom,
                  "measure_peaks": True,
                  "notice": lambda line: progress.console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False)
                  } if executor != "slurm" else {}
            if executor == "local" and workers > 1:
                kw["worker_envs"] = [{}] * workers  # one persistent worker per CPU share
            summary = run_with_executor(cases, out, executor, gpus=gpus, slurm=slurm, force=force, resume=resume,
                                        retry_failed=retry_failed, on_progress=on_progress, **kw)
    except ResultsNotSaved as exc:  # a full disk, a read-only remount... mid-sweep: what is saved, what is not
        from ssmbench.store import finished_cases

        err_console.print(f"[red]error:[/red] {escape(str(exc.failure))}: {len(finished_cases(out))} finished case(s) "
                          f"are saved in {escape(str(out))}; not saved: {escape(exc.case.label())} (measured, result "
                          f"lost) and {exc.not_run} case(s) not yet run; fix the directory (free space, permissions) "
                          "and run the same command again to resume", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP (see Terminated): the workers are killed already
        from ssmbench.store import finished_cases

        how, done = interrupted_by(exc), len(finished_cases(out))
        err_console.print(f"{how}: {done} finished case(s) are saved in {escape(str(out))} (the case "
                          "in flight is not); run the same command again to resume", highlight=False)
        INTERRUPT["reported"] = True
        raise typer.Exit(exit_code(exc)) from None
    skipped = len(summary.outcomes) - len(summary.executed)
    if skipped:
        err_console.print(f"[dim]{skipped} finished case(s) already in {escape(str(out))} were skipped "
                          "(--force re-runs them, --retry-failed re-runs failures).[/dim]")
    return summary


def print_outcome(con: Console, outcome) -> None:
    from ssmbench.report.common import format_seconds

    r = outcome.result
    if r.status == "ok":
        med = next((m.value for m in (r.metrics or []) if m.metric == "time" and m.stat == "median"), None)
        acc = next((m.value for m in (r.metrics or []) if m.metric == "accuracy" and m.stat == "train_len"), None)
        detail = format_seconds(med) if med is not None else (f"acc {acc:.3f}" if acc is not None else "")
        from ssmbench.contention import is_contended

        if is_contended(r.metrics or []):
            detail += " [yellow](contended)[/yellow]"
        breaks = (r.info or {}).get("graph_breaks")
        if breaks:  # a compiled case that dynamo could not trace whole: say where, once
            why = ((r.info or {}).get("graph_break_reasons") or ["?"])[0]
            detail += f" [yellow]{breaks} graph break(s): {escape(why[:90])}[/yellow]"
        fallback = (r.info or {}).get("aot_fallback")
        if fallback:  # a decode step that could not be compiled ahead of time ran through torch.compile
            detail += f" [yellow]torch.compile (ahead-of-time compile failed: {escape(fallback[:90])})[/yellow]"
        con.print(f"[green]✓[/green] {escape(outcome.case.label())}  {detail}  [dim]({outcome.seconds:.1f} s)[/dim]")
    else:
        con.print(f"[red]✗ {r.status}[/red] {escape(outcome.case.label())}: {escape(r.error or '')}", highlight=False)


def summary_table(summary) -> None:
    from rich.table import Table

    from ssmbench.report.common import format_bytes, format_seconds

    table = Table(title=f"run {summary.run_id}", show_lines=False)
    for col in ("model", "backend", "mode", "L", "batch", "status", "median time / accuracy", "tokens/s",
                "peak mem"):
        table.add_column(col, justify="left" if col in ("model", "backend", "mode", "status") else "right")
    for o in summary.executed:
        metrics = {(m.metric, m.stat): m.value for m in (o.result.metrics or [])}
        tps = metrics.get(("tokens_per_s", "median"))
        mem = metrics.get(("peak_mem_delta", "max"), float("nan"))
        acc = metrics.get(("accuracy", "train_len"))
        result = f"acc {acc:.3f}" if acc is not None else format_seconds(metrics.get(("time", "median"), float("nan")))
        status = o.result.status if o.result.status == "ok" else f"[red]{o.result.status}[/red]"
        backend = (o.result.info or {}).get("backend", o.case.backend)
        table.add_row(o.case.model, backend, o.case.mode, str(o.case.seq_len), str(o.case.batch), status, result,
                      f"{tps:,.0f}" if tps else "–", format_bytes(mem))
    if summary.executed:
        console.print(table)
    failed = summary.failed
    msg = escape(f"{len(summary.executed)} case(s) run, {failed} failed; results in {summary.root}")
    console.print(("[red]" if failed else "[green]") + msg + ("[/red]" if failed else "[/green]"))


def prepare_results_dir(out: Path) -> None:
    """Before measuring: the directory must take writes (else exit 2 now, not after an hour of measuring), and
    damaged or foreign part files are moved to parts/.quarantine/ with a warning (their cases are re-run)."""
    from ssmbench import store

    try:
        store.check_writable(out)
    except store.WriteFailed as exc:
        raise SpecError(f"results directory '{out}' cannot be written ({exc}); choose another --out or fix it "
                        "(permissions, free space)") from None
    for path, why in store.quarantine_damaged(out):
        err_console.print(f"[yellow]warning:[/yellow] damaged part {escape(path.name)} ({escape(why)}) moved to "
                          f"{escape(str(path.parent))}; a case it held will be re-run", highlight=False)


def slurm_options(out: Path, partition: str | None, jobs: int, timeout_s: float):
    from ssmbench.engine.executors import SlurmOptions

    return SlurmOptions(folder=str(out / "slurm"), partition=partition, jobs=jobs,
                        timeout_min=max(10, int(timeout_s / 60) * 4))


def run_sweeps(specs: list, out: Path, *, force: bool, retry_failed: bool, dry_run: bool, in_process: bool,
                command: str, suite: str = "", extra_cases: list | None = None, executor: str = "local",
                gpus: int | None = None, slurm=None, shard: str | None = None, max_memory: str | None = None,
                skip_after_oom: bool = True) -> None:
    from dataclasses import replace

    from ssmbench.engine.runner import plan_sweep, shard_cases
    from ssmbench.spec import check_output_dir, parse_bytes, parse_shard

    shares = parse_shard(shard)
    if max_memory is not None:
        cap = parse_bytes(max_memory)
        specs = [replace(s, max_memory=cap) for s in specs]
    from ssmbench.schema import token_warnings

    for spec in specs:
        for line in token_warnings(spec):
            err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", highlight=False)
    cases = shard_cases([c for s in specs for c in plan_sweep(s)] + list(extra_cases or []), shares)
    from ssmbench.engine.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise SpecError(f"unknown executor '{executor}'; choose from {', '.join(EXECUTORS)}")
    if dry_run:
        for c in cases:
            console.print(f"{c.case_id}  {c.label()}  device={c.device} dtype={c.dtype}")
        console.print(f"{len(cases)} case(s)")
        return
    check_output_dir(out)
    from ssmbench.engine.executors import gpu_worker_envs
    from ssmbench.engine.runner import check_backends_available

    check_backends_available(cases)
    if executor == "local-gpus":
        gpu_worker_envs(gpus)  # no GPU, or too few: a usage error now, before the progress display starts
    prepare_results_dir(out)
    summary = run_with_progress(cases, out, force=force, resume=True, retry_failed=retry_failed, command=command,
                                 suite=suite, in_process=in_process, executor=executor, gpus=gpus, slurm=slurm,
                                 skip_after_oom=skip_after_oom)
    summary_table(summary)
    if summary.failed:
        raise typer.Exit(1)



"""``ssmbench check``: the throughput regression gate against a stored baseline or a git ref."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import console, err_console, parse_options
from ssmbench.spec import SpecError


def check(
    baseline: Annotated[Path | None, typer.Option(help="Stored baseline (Parquet) to compare with.")] = None,
    suite: Annotated[Path, typer.Option(help="Suite whose speed cases are measured.")] = Path("tasks/ci.toml"),
    against: Annotated[str | None, typer.Option(help="Git ref measured in this job instead of a stored baseline "
                                                "(temporary worktree, interleaved rounds, each case stopped once "
                                                "decided); sees slowdowns of code every model shares.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Slowdown that fails, e.g. 0.10 = 10% (default: the "
                                                    "suite file's threshold, else 0.10).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the one-sided rank test, per case (with "
                                         "--against spent over the sequential test's looks).")] = 0.01,
    rounds: Annotated[int | None, typer.Option(help="Rounds per case and side (default: the suite's, else 10); "
                                               "--against: up to twice this, stopping once decided.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE injected into the "
                                                     "measured code only, e.g. work_factor=1.5 (slows the test "
                                                     "model 'faulty').")] = None,
    compile_: Annotated[str | None, typer.Option("--compile", help="eager, compiled or both: replaces the suite's "
                                                 "compile setting (gate torch.compile paths too).")] = None,
    update_baseline: Annotated[bool, typer.Option(help="Measure the suite and (over)write --baseline.")] = False,
    summary: Annotated[Path | None, typer.Option(help="Also write the Markdown summary here (it is appended to "
                                                 "$GITHUB_STEP_SUMMARY when that is set).")] = None,
    force: Annotated[bool, typer.Option(help="Compare even if the machine calibration moved more than 2x.")]
    = False,
    remeasure: Annotated[bool, typer.Option(help="Re-measure suspected regressions before reporting them "
                                            "(--baseline; --against decides sequentially).")] = True,
    normalize: Annotated[str, typer.Option(help="How baseline times are scaled to this machine: suite (= auto: by "
                                           "the median ratio of the suite's cases; robust to load, blind to "
                                           "changes that slow every case alike), calibration, or none.")]
    = "auto",
) -> None:
    """Throughput regression gate: compare the suite's speed with a baseline or a git ref (exit 1 on regression)."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ssmbench.gate import run as gate
    from ssmbench.gate.ab import run_against_ref
    from ssmbench.gate.summary import headline, publish_markdown, render_markdown, summary_rows

    if (baseline is None) == (against is None):
        raise SpecError("give exactly one of --baseline PATH (stored baseline) or --against REF (git ref)")
    if update_baseline and (baseline is None or option):
        raise SpecError("--update-baseline records --baseline PATH from the unmodified code (no --option)")
    if update_baseline:  # before measuring the whole suite: the baseline's directory must take the file
        _check_baseline_writable(baseline)
    from ssmbench.spec import parse_compile

    modes = parse_compile(compile_) if compile_ is not None else None
    plan = gate.plan_check(suite, rounds=rounds, threshold=threshold, alpha=alpha, compile_modes=modes)
    inject = parse_options(option)
    if inject:  # validated against the suite's models before anything is measured
        from ssmbench.schema import check_model_options

        check_model_options("--option", dict(inject), sorted({c.model for c in plan.cases}))
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True)
    task_id = progress.add_task("calibrating", total=None)

    def on_progress(done: int, total: int, what: str) -> None:
        progress.update(task_id, completed=done, total=total, description=what)

    with progress:
        if update_baseline:
            try:
                path, _, cal = gate.record_baseline(plan, baseline, command=" ".join(["ssmbench", *sys.argv[1:]]),
                                                    on_progress=on_progress)
            except (RuntimeError, OSError) as exc:  # a failed case, or the baseline file could not be written
                err_console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
                raise typer.Exit(1) from None
        elif baseline is not None:
            result = gate.run_against_baseline(plan, baseline, inject=inject, force=force, remeasure=remeasure,
                                               normalize=normalize, on_progress=on_progress)
        else:
            result = run_against_ref(plan, against, inject=inject, remeasure=remeasure, on_progress=on_progress)
    if update_baseline:
        console.print(f"[green]baseline written: {path}[/green] ({len(plan.cases)} cases x {plan.rounds} rounds; "
                      f"calibration matmul {cal.matmul_s * 1e3:.2f} ms, memory {cal.memory_s * 1e3:.2f} ms)")
        return
    table = Table(title=f"ssmbench check: suite {plan.suite.name} vs {result.reference}")
    for col in ("case", "baseline" if result.mode == "baseline" else "base", "current", "ratio", "95% CI", "p",
                "verdict"):
        table.add_column(col, justify="left" if col in ("case", "verdict") else "right")
    styles = {"regression": "red", "failed": "red", "unsure": "yellow", "faster": "cyan", "new": "cyan"}
    for r in summary_rows(result):
        style = styles.get(r["status"], "green")
        table.add_row(r["case"], r["baseline"], r["current"], r["ratio"], r["ci"], r["p"],
                      f"[{style}]{r['verdict']}[/{style}]")
    console.print(table)
    for note in ([f"normalisation: {result.normalisation.describe()}"] if result.normalisation else []) + result.notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    for p in publish_markdown(render_markdown(result), summary):
        console.print(f"[dim]summary: {p}[/dim]")
    console.print(f"{headline(result)}  (geomean ratio {result.geomean_ratio:.3f}, {result.seconds:.0f} s)")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def _check_baseline_writable(path: Path) -> None:
    from ssmbench import store

    if path.is_dir():
        raise SpecError(f"--baseline '{path}' is a directory; give a file path such as {path}/ci.parquet")
    try:
        store.check_writable(path.parent, subdirs=("",))
    except store.WriteFailed as exc:
        raise SpecError(f"cannot record the baseline at '{path}' ({exc}); choose another --baseline path") from None

"""Running accuracy protocols from the CLI (``accuracy`` and ``run``): phases, workers, the summary table."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ssmbench.cli.common import console, err_console, run_with_progress, summary_table


def cpu_workers(cases: list) -> int:
    """Persistent workers for the cases: on CPU one per ``threads`` share of the cores (one torch thread each
    by default), capped by the number of cases; on CUDA one."""
    if not cases or any(c.device != "cpu" for c in cases):
        return 1
    threads = max(1, max(c.threads for c in cases))
    return max(1, min((os.cpu_count() or 1) // threads, len(cases)))


def run_accuracy_protocol(screen: list, out: Path, *, force: bool, retry_failed: bool, dry_run: bool, command: str,
                          suite: str = "") -> None:
    """Screen, extension and seed phases (:mod:`ssmbench.train.protocol`), then the per-group summary."""
    from ssmbench.engine.runner import check_backends_available
    from ssmbench.spec import check_output_dir
    from ssmbench.train.protocol import describe, run_protocol

    if dry_run:
        for c in screen:
            console.print(f"{c.case_id}  {c.label()} lr={c.option('lr'):g} seed={c.seed}  device={c.device}")
        for line in describe(screen):
            console.print(f"[dim]{line}[/dim]")
        console.print(f"{len(screen)} screen case(s); further phases are planned from their validation rows")
        return
    check_output_dir(out)
    check_backends_available(screen)
    failed = 0
    forced: set[str] = set()

    def run(cases: list) -> None:
        nonlocal failed
        fresh = [c for c in cases if c.case_id not in forced]  # --force re-runs each case once, not every phase
        forced.update(c.case_id for c in fresh)
        summary = run_with_progress(cases, out, force=force and bool(fresh), resume=True, retry_failed=retry_failed,
                                    command=command, suite=suite, workers=cpu_workers(cases))
        if summary.executed:
            summary_table(summary)
        failed += summary.failed

    try:
        everything = run_protocol(screen, out, run)
    finally:
        if (out / "parts").is_dir():
            print_protocol_table(out, {c.case_id for c in screen})
    if failed:
        raise typer.Exit(1)
    err_console.print(f"[dim]{len(everything)} case(s) in the protocol; `ssmbench report {out}` adds figures and "
                      "the claims section[/dim]")


def print_protocol_table(out: Path, screen_ids: set[str]) -> None:
    """Per (model, setting): chosen lr, headline mean ± 95% t-interval half-width with per-seed values, token
    and sequence accuracy, seeds at the threshold, steps to it, training time, budget label."""
    from rich.table import Table

    from ssmbench import store
    from ssmbench.report.protocol import case_table, format_interval, summarise

    df = store.load(out)
    cases = case_table(df)
    if cases.empty:
        return
    groups = set(cases[cases.case_id.isin(screen_ids)].group)
    summary = summarise(df[df.case_id.isin(cases[cases.group.isin(groups)].case_id)])
    if summary.empty:
        return
    table = Table(title="accuracy protocol (test rows, in distribution; ± = 95% t-interval over seeds)")
    for col in ("task", "model", "L", "lr", "headline", "per seed", "token acc", "seq acc", "reached", "steps to",
                "train s", "verdict"):
        table.add_column(col, justify="left" if col in ("task", "model", "verdict", "per seed") else "right")
    for r in summary.itertuples():
        table.add_row(r.task, r.label, str(r.train_len), f"{r.lr:g}" + ("*" if r.extended else ""),
                      f"{r.metric} {format_interval(r.mean, r.lo, r.hi)}", " ".join(f"{v:.3f}" for v in r.values),
                      format_interval(r.acc_mean, r.acc_lo, r.acc_hi), format_interval(r.seq_mean, r.seq_lo, r.seq_hi),
                      f"{r.reached}/{r.n} ≥ {r.threshold:g}", "–" if r.steps_to != r.steps_to else f"{r.steps_to:.0f}",
                      f"{r.train_time:.0f}", r.budget)
    console.print(table)
    console.print("[dim]* = the grid was extended one step (the winner sat on an edge)[/dim]")

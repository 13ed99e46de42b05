"""``ssmbench accuracy``: train per (model, train length) on a synthetic task, evaluate across lengths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import ResultsDir, console, parse_options, run_sweeps


def accuracy(
    task: Annotated[str, typer.Option("--task", "-t", help="Synthetic task: copying, selective_copying, mqar "
                                      "(selective_recall), induction_heads.")],
    models: Annotated[str, typer.Option("--models", "-m", help="Models, comma-separated, each name[:backend].")],
    lengths: Annotated[str | None, typer.Option("--lengths", "-L", help="Train lengths, e.g. 64..256 (one model "
                                                "per length; default: the task's).")] = None,
    eval_lengths: Annotated[str | None, typer.Option(help="Also evaluate at these lengths, e.g. 64..1k "
                                                     "(extrapolation; default: the task's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (fresh batch each step).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = None,
    batch: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Number of layers.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (repeatable), "
                                                     "e.g. d_state=16 or head_dim=16.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Task parameter KEY=VALUE (repeatable), "
                                                    "e.g. num_kv_pairs=8.")] = None,
    stop_at: Annotated[float | None, typer.Option(help="Stop early once held-out accuracy reaches this.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the initialisation and the training stream.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads in the worker (0 = all cores).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a case is killed.")] = None,
    out: ResultsDir = Path("results"),
    force: Annotated[bool, typer.Option(help="Re-run cases that already have results.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Re-run cases whose stored status is not ok.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the planned cases and exit.")] = False,
) -> None:
    """Train a fresh model per (model, train length) on a synthetic task; report accuracy at each length."""
    from ssmbench.train.plan import plan_accuracy

    given = {"task": task, "models": models, "lengths": lengths, "eval_lengths": eval_lengths, "steps": steps,
             "lr": lr, "batch": batch, "d_model": d_model, "n_layers": n_layers, "stop_at": stop_at, "seed": seed,
             "device": device, "threads": threads, "timeout_s": timeout,
             "model_options": dict(parse_options(option)), "params": dict(parse_options(param))}
    cases = plan_accuracy({k: v for k, v in given.items() if v is not None}, where="accuracy")
    try:
        run_sweeps([], out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=False,
                    command=" ".join(["ssmbench", *sys.argv[1:]]), extra_cases=cases)
    finally:
        if not dry_run and (out / "parts").is_dir():
            _accuracy_table(out, {c.case_id for c in cases})


def _accuracy_table(out: Path, case_ids: set[str]) -> None:
    from rich.table import Table

    from ssmbench import store
    from ssmbench.report.accuracy import accuracy_frame, wide_table

    df = store.load(out)
    wide = wide_table(accuracy_frame(df[df.case_id.isin(case_ids)]))
    if wide.empty:
        return
    cols = [c for c in wide.columns if c.startswith("acc@")]
    table = Table(title="accuracy (held-out, supervised tokens) by evaluation length")
    for col in ("model", "train L", "steps", "train time", *(c.replace("acc@", "L=") for c in cols)):
        table.add_column(col, justify="left" if col == "model" else "right")
    for _, r in wide.iterrows():
        table.add_row(r.label, str(r.train_len), f"{r.steps:.0f}", f"{r.train_time:.0f} s",
                      *("–" if r[c] != r[c] else f"{r[c]:.3f}" for c in cols))
    console.print(table)

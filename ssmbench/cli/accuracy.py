"""``ssmbench accuracy``: the accuracy protocol on one synthetic task (lr grid on validation, seeds, intervals)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ssmbench.cli.common import ResultsDir, parse_options

Opt = typer.Option


def _per_model(text: str | None) -> Any:
    """'3e-3' -> 0.003; 'transformer=3e-3,default=1e-3' -> a table (per-family lr)."""
    from ssmbench.spec import SpecError

    if text is None or "=" not in text:
        try:
            return None if text is None else float(text)
        except ValueError:
            raise SpecError(f"bad --lr '{text}': a number, or per family e.g. transformer=3e-3,default=1e-3") from None
    return {k.strip(): v for k, v in parse_options(text.split(","))}


def accuracy(
    task: Annotated[str, Opt("--task", "-t", help="Synthetic task: copying, selective_copying, mqar "
                             "(selective_recall), induction_heads.")],
    models: Annotated[str, Opt("--models", "-m", help="Models, comma-separated, each name[:backend].")],
    lengths: Annotated[str | None, Opt("--lengths", "-L", help="Train lengths, e.g. 64..256 (default: the "
                                       "task's).")] = None,
    eval_lengths: Annotated[str | None, Opt(help="Also evaluate at these lengths, e.g. 64..1k.")] = None,
    steps: Annotated[int | None, Opt(help="Step cap (fresh batch each step; equal for every family).")] = None,
    lr: Annotated[str | None, Opt(help="Fixed lr instead of the grid: 3e-3, or per family "
                                  "transformer=3e-3,default=1e-3.")] = None,
    lr_grid: Annotated[str | None, Opt(help="lr grid screened on validation, e.g. 1e-3,3e-3,1e-2.")] = None,
    seeds: Annotated[int | None, Opt(help="Seeds in all at the chosen lr (default 3).")] = None,
    schedule: Annotated[str | None, Opt(help="cosine or constant (after the warm-up).")] = None,
    warmup: Annotated[float | None, Opt(help="Fraction of the steps in linear warm-up (any schedule).")] = None,
    weight_decay: Annotated[float | None, Opt(help="AdamW weight decay on weight matrices.")] = None,
    metric: Annotated[str | None, Opt(help="Selection/headline metric: accuracy or seq_accuracy.")] = None,
    threshold: Annotated[float | None, Opt(help="Validation score that counts as reaching the task.")] = None,
    stop_at: Annotated[float | None, Opt(help="Stop early once the validation score reaches this.")] = None,
    eval_every: Annotated[int | None, Opt(help="Validation cadence in steps (curve, early stop).")] = None,
    batch: Annotated[int | None, Opt(help="Training batch size.")] = None,
    d_model: Annotated[int | None, Opt(help="Model width (all families).")] = None,
    n_layers: Annotated[int | None, Opt(help="Number of layers.")] = None,
    option: Annotated[list[str] | None, Opt("--option", help="Model option KEY=VALUE (repeatable), "
                                            "e.g. d_state=16 or head_dim=16.")] = None,
    param: Annotated[list[str] | None, Opt("--param", help="Task parameter KEY=VALUE (repeatable), "
                                           "e.g. num_kv_pairs=8.")] = None,
    seed: Annotated[int | None, Opt(help="First seed (init and training stream).")] = None,
    device: Annotated[str | None, Opt(help="auto, cpu or cuda.")] = None,
    threads: Annotated[int | None, Opt(help="torch threads per worker (default 1; 0 = all cores).")] = None,
    timeout: Annotated[float | None, Opt(help="Seconds before a case is killed.")] = None,
    compile_: Annotated[str | None, Opt("--compile", help="eager, compiled (torch.compile of the model's forward "
                                        "in every step) or both.")] = None,
    out: ResultsDir = Path("results"),
    force: Annotated[bool, Opt(help="Re-run cases that already have results.")] = False,
    retry_failed: Annotated[bool, Opt(help="Re-run cases whose stored status is not ok.")] = False,
    dry_run: Annotated[bool, Opt(help="List the screen cases and the phases that follow, then exit.")] = False,
) -> None:
    """Train fresh models on a synthetic task with the task's calibrated protocol (docs/tasks.md): screen the
    lr grid on validation at one seed, run the other seeds at the chosen lr, report test accuracy ± 95% CI."""
    from ssmbench.cli.protocol import run_accuracy_protocol
    from ssmbench.train.plan import plan_accuracy

    given = {"task": task, "models": models, "lengths": lengths, "eval_lengths": eval_lengths, "steps": steps,
             "lr": _per_model(lr), "lr_grid": lr_grid, "seeds": seeds, "schedule": schedule, "warmup": warmup,
             "weight_decay": weight_decay, "metric": metric, "threshold": threshold, "stop_at": stop_at,
             "eval_every": eval_every, "batch": batch, "d_model": d_model, "n_layers": n_layers, "seed": seed,
             "device": device, "threads": threads, "timeout_s": timeout, "compile": compile_,
             "model_options": dict(parse_options(option)), "params": dict(parse_options(param))}
    screen = plan_accuracy({k: v for k, v in given.items() if v is not None}, where="accuracy")
    run_accuracy_protocol(screen, out, force=force, retry_failed=retry_failed, dry_run=dry_run,
                          command=" ".join(["ssmbench", *sys.argv[1:]]))

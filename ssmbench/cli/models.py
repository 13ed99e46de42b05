"""``ssmbench models``: the registered families, their backends and parameter counts."""

from __future__ import annotations

from typing import Annotated

import typer

from ssmbench.cli.common import console


def models(
    d_model: Annotated[int, typer.Option(help="Width for the parameter counts.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Layers for the parameter counts.")] = 2,
) -> None:
    """List the registered model families, their backends and parameter counts."""
    import torch
    from rich.table import Table

    from ssmbench import kernels
    from ssmbench.models import count_params, make_config
    from ssmbench.registry import MODELS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = Table(title=f"models (parameters at d_model={d_model}, n_layers={n_layers}, vocab 256; "
                        f"backends on {device})")
    for col in ("model", "aliases", "params", "d_state", "description", "backends (✓ available here)"):
        table.add_column(col, justify="right" if col in ("params", "d_state") else "left")
    for entry in MODELS:
        try:
            config = make_config(entry.name, d_model=d_model, n_layers=n_layers)
            params, d_state = f"{count_params(config):,}", str(config.state_dim or "–")
        except (ImportError, ValueError, RuntimeError) as exc:
            params, d_state = f"[red]{type(exc).__name__}[/red]", "–"
        backends = []
        for op in entry.ops:
            try:
                statuses = kernels.backends(op, device)
            except ImportError:
                continue
            marks = " ".join(f"{b.name}{'✓' if b.available else '✗'}" for b in statuses)
            backends.append(f"{op}: {marks}")
        table.add_row(entry.name, ", ".join(entry.aliases), params, d_state, entry.summary, "\n".join(backends))
    console.print(table)

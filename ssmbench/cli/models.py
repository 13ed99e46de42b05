"""``ssmbench models``: the registered families, their backends and parameter counts.

Nothing here imports torch (importing it takes longer than this listing may): parameter counts are analytic
(``ssmbench.models.configs``) and a backend's availability is whether its dependencies are installed, without
running its probe; ``ssmbench env`` runs the probes on this machine's device.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ssmbench.cli.common import console


def _backend_cell(op: str) -> str:
    from ssmbench import kernels

    marks = []
    for b in kernels.installed_backends(op):
        where = "" if set(b.devices) == {"cpu", "cuda"} else f"[dim]({','.join(b.devices)})[/dim]"
        marks.append(f"{b.name}{'✓' if b.available else '✗'}{where}")
    return f"{op}: {' '.join(marks)}"


def models(
    d_model: Annotated[int, typer.Option(help="Width for the parameter counts.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Layers for the parameter counts.")] = 2,
) -> None:
    """List the registered model families, their backends and parameter counts."""
    from ssmbench.schema import Layers, Width, check_flags

    check_flags(d_model=(Width, d_model), n_layers=(Layers, n_layers))
    from rich.table import Table

    from ssmbench.models import count_params, make_config
    from ssmbench.registry import MODELS

    table = Table(title=f"models (parameters at d_model={d_model}, n_layers={n_layers}, vocab 256)",
                  caption="✓ = dependencies installed, (device) = runs only there; `ssmbench env` probes which "
                          "backends run on this machine's device")
    for col in ("model", "aliases", "params", "d_state", "description", "backends"):
        table.add_column(col, justify="right" if col in ("params", "d_state") else "left")
    for entry in MODELS:
        try:
            config = make_config(entry.name, d_model=d_model, n_layers=n_layers)
            params, d_state = f"{count_params(config):,}", str(config.state_dim or "–")
        except (ImportError, ValueError, RuntimeError, ZeroDivisionError) as exc:  # a width the family can't take
            params, d_state = f"[red]{type(exc).__name__}[/red]", "–"
        backends = [_backend_cell(op) for op in entry.ops]
        table.add_row(entry.name, ", ".join(entry.aliases), params, d_state, entry.summary, "\n".join(backends))
    console.print(table)

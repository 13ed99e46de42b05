"""``ssmbench env``: the environment fingerprint and which kernel backends run here."""

from __future__ import annotations

from ssmbench.cli.common import console


def env() -> None:
    """Print the environment fingerprint and which kernel backends can run here (and why not)."""
    from rich.table import Table

    from ssmbench import kernels
    from ssmbench.env import fingerprint

    info = Table(title="environment", show_header=False)
    for k, v in fingerprint().items():
        if v is not None:
            info.add_row(k, str(v))
    console.print(info)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = Table(title=f"kernel backends on {device}")
    for col in ("op", "backend", "available", "reason / description"):
        table.add_column(col)
    for op in kernels.ops():
        try:
            statuses = kernels.backends(op, device)
        except ImportError as exc:
            table.add_row(op, "–", "[red]no[/red]", f"op not installed: {exc}")
            continue
        for b in statuses:
            table.add_row(op, b.name, "[green]yes[/green]" if b.available else "[red]no[/red]",
                          b.reason or b.description)
    console.print(table)

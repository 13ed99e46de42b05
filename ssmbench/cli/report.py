"""``ssmbench report``: figures and report.md from a results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import ResultsDir, console
from ssmbench.spec import SpecError


def report(
    results_arg: Annotated[Path | None, typer.Argument(metavar="RESULTS", help="Results directory to read "
                                                       "(default: results).")] = None,
    out: ResultsDir = Path("results"),
    report_dir: Annotated[Path | None, typer.Option(help="Where to write figures and report.md "
                                                    "(default: RESULTS/report).")] = None,
) -> None:
    """Write scaling figures (PNG) and a Markdown report from a results directory.

    The results directory is given like every other command's (--out/-o), or positionally."""
    results = results_arg if results_arg is not None else out
    from rich.table import Table

    from ssmbench.report.build import build_report
    from ssmbench.spec import check_output_dir

    if not (results / "parts").is_dir():
        raise SpecError(f"no results in '{results}' (expected {results}/parts/*.parquet); run `ssmbench sweep` "
                        "or `ssmbench run tasks/quick.toml` first")
    target = check_output_dir(report_dir if report_dir is not None else results / "report")
    res = build_report(results, target)
    if res.exponents:
        table = Table(title="scaling of time per sequence (fitted exponent over the last 3 lengths)")
        table.add_column("series")
        table.add_column("exponent", justify="right")
        for k, v in res.exponents.items():
            table.add_row(k, f"{v:.2f}")
        console.print(table)
    for c in res.crossovers:
        console.print(f"crossover: {c.describe()}")
    for p in res.figures:
        console.print(f"figure: {p}")
    console.print(f"[green]report: {res.markdown}[/green]")

"""``ssmbench report``: figures and report.md from a results directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import ResultsDir, console, err_console
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
    from rich.markup import escape

    from ssmbench import store

    damaged = store.damaged_parts(results)  # skipped by the report, named here (a sweep moves them aside)
    if len(damaged) == len(list((results / "parts").glob("*.parquet"))):
        what = f"only {len(damaged)} damaged or foreign file(s)" if damaged else "no part files"
        raise SpecError(f"no readable results in '{results}/parts' ({what}); run `ssmbench sweep` or "
                        "`ssmbench run tasks/quick.toml` first")
    if damaged:
        names = ", ".join(f"{p.name} ({why})" for p, why in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
        err_console.print(f"[yellow]warning:[/yellow] skipped {len(damaged)} unreadable part file(s) in "
                          f"{escape(str(results / 'parts'))}: {escape(names)}; the next sweep on this directory "
                          "moves them to parts/.quarantine and re-runs their cases", highlight=False)
    target = check_output_dir(report_dir if report_dir is not None else results / "report")
    res = build_report(results, target)
    from ssmbench.report.contention import contended_cases

    contended = contended_cases(store.load(results))
    if not contended.empty:
        err_console.print(f"[yellow]warning:[/yellow] {len(contended)} case(s) ran while other processes used the CPU "
                          "(times may be inflated); listed under 'Contended timings' in the report", highlight=False)
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

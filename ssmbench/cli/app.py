"""The ``ssmbench`` command line, composed from one module per command.

Each command module only parses, validates, calls the library and prints. Heavy imports (torch, matplotlib,
pandas) happen inside the commands, so ``ssmbench --help`` stays instant. Bad input exits with code 2 and one
line on stderr; failed cases or a regression exit with 1; an interrupt exits with 130.
"""

from __future__ import annotations

import sys

import typer

from ssmbench.cli import accuracy, check, env, generate, models, report, run, sweep
from ssmbench.cli.common import err_console
from ssmbench.spec import SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Benchmark state space models (S4, Mamba, Mamba-2) against attention: speed, memory, "
                       "accuracy.")
for command in (sweep.sweep, run.run, accuracy.accuracy, report.report, models.models, generate.generate, env.env,
                check.check):
    app.command()(command)


def main() -> None:
    from ssmbench.kernels import BackendUnavailable
    from ssmbench.registry import UnknownName

    try:
        app()
    except (SpecError, UnknownName, BackendUnavailable) as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished cases are saved; run the same command again to resume")
        sys.exit(130)



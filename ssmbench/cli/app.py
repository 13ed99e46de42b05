"""The ``ssmbench`` command line, composed from one module per command.

Each command module only parses, validates, calls the library and prints. Heavy imports (torch, matplotlib,
pandas) happen inside the commands, so ``ssmbench --help`` stays instant. Bad input exits with code 2 and one
line on stderr; failed cases or a regression exit with 1; an interrupt exits with 130.
"""

from __future__ import annotations

import signal
import sys

import typer

try:  # typer >= 0.2x vendors click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click.exceptions import UsageError

from ssmbench.cli import accuracy, check, crossover, env, generate, kernel, models, report, run, sweep
from ssmbench.cli.common import INTERRUPT, err_console, exit_code, handle_termination, interrupted_by
from ssmbench.spec import SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Benchmark state space models (S4, Mamba, Mamba-2) against attention: speed, memory, "
                       "accuracy.")
for command in (sweep.sweep, run.run, accuracy.accuracy, report.report, models.models, generate.generate, env.env,
                check.check, crossover.crossover, kernel.kernel):
    app.command()(command)


def main() -> None:
    from rich.markup import escape

    from ssmbench.kernels import BackendUnavailable
    from ssmbench.registry import UnknownName

    handle_termination()
    try:
        _run(escape, (SpecError, UnknownName, BackendUnavailable))
    finally:
        if INTERRUPT["signal"] is not None:
            # Exiting after an interrupt: ignore further ones. Python's finalisation puts back the default handler
            # of every signal it handled, so a second Ctrl-C arriving during exit would otherwise kill the process
            # by SIGINT (status -2) after the message and the exit code were already decided.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    signal.signal(sig, signal.SIG_IGN)


def _run(escape, usage_errors: tuple[type[BaseException], ...]) -> None:
    try:
        # standalone_mode=False: usage errors come back as exceptions, printed below as one line (not a panel)
        code = app(standalone_mode=False)
    except usage_errors as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ssmbench`: the help, as click would show it
            if exc.ctx is not None:
                exc.ctx.get_help()
            sys.exit(2)
        err_console.print(f"[red]error:[/red] {escape(_usage_line(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort) as exc:
        err_console.print(f"{interrupted_by(exc)}: finished cases are saved; run the same command again to resume")
        sys.exit(exit_code(exc))
    signum = INTERRUPT["signal"]
    if signum is not None and not INTERRUPT["reported"]:
        # a command without its own interrupt message (check, report, generate...): typer turned the interrupt
        # into an exit code; say what happened and exit as a shell reports that signal
        how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"
        err_console.print(f"{how}: stopped before finishing; nothing half-written was kept (sweeps resume with "
                          "the same command)", highlight=False)
        sys.exit(128 + signum)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(exc: UsageError) -> str:
    """A click usage error as one line, with where to find help."""
    message = " ".join(exc.format_message().split())
    command = exc.ctx.command_path if exc.ctx is not None else "ssmbench"
    return f"{message} (see `{command} --help`)"

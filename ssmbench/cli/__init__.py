"""The command line: ``app`` composes one module per command (sweep, run, accuracy, report, models, generate,
env, check); ``common`` holds what they share."""


def main() -> None:
    from ssmbench.cli.app import main as run_app

    run_app()

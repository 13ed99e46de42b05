"""Adaptive searches over the sequence length that answer one question each (``ssmbench crossover``).

:mod:`.crossover` is the search itself, pure (it is handed a function that measures two models at a length);
:mod:`.probe` measures for real in worker processes and stores every probe as ordinary speed rows.
This unit sits above the gate (it reuses the gate's paired bootstrap statistics) and below the CLI.
"""

"""``ssmbench crossover --models A,B``: the length from which A is faster than B (or B than A), with an interval."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import ResultsDir, console, err_console, parse_options
from ssmbench.spec import SpecError

_BUDGET_DEFAULT = {"cpu": 120.0, "cuda": 60.0}


def crossover(
    models: Annotated[str, typer.Option("--models", "-m", help="Exactly two models, name[:backend], e.g. "
                                        "mamba,transformer.")],
    lengths: Annotated[str, typer.Option("--lengths", "-L", help="Search range, powers of two (the bracketing "
                                         "grid), e.g. 128..16k.")] = "128..16k",
    mode: Annotated[str, typer.Option(help="fwd, fwdbwd, prefill or decode (decode: time per generated token).")]
    = "fwd",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 (CUDA) or float64.")] = "float32",
    tokens: Annotated[str, typer.Option(help="Tokens per batch: batch = tokens // L (the sweep's rule; a smaller "
                                        "default, since every probe runs many rounds).")] = "2k",
    d_model: Annotated[int, typer.Option(help="Model width.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Number of layers.")] = 2,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size of the LM head.")] = 256,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (repeatable).")]
    = None,
    match_params: Annotated[bool, typer.Option(help="Size each family to the transformer's parameter count.")]
    = False,
    decode_tokens: Annotated[int, typer.Option(help="decode mode: tokens generated per sample.")] = 32,
    threads: Annotated[int, typer.Option(help="torch CPU threads in the worker (0 = all cores).")] = 0,
    width: Annotated[float, typer.Option(help="Stop when the interval's hi / lo - 1 is at most this.")] = 0.15,
    budget: Annotated[float | None, typer.Option(help="Stop after this many seconds (default 120 on CPU, 60 on "
                                                 "CUDA); the interval is then wider.")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence of each probe's verdict (bootstrap CI and "
                                              "signed-rank test).")] = 0.99,
    samples: Annotated[int, typer.Option(help="Timed samples per case per round (the fastest counts).")] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds before a probe's case is killed.")] = 300,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
    out: ResultsDir = Path("results"),
) -> None:
    """Find the sequence length where one model overtakes the other, with a confidence interval."""
    from ssmbench.search.crossover import SearchSettings
    from ssmbench.search.probe import run_crossover
    from ssmbench.spec import (
        SweepSpec,
        check_device_dtype,
        check_output_dir,
        parse_lengths,
        parse_models,
        parse_modes,
        parse_size,
        resolve_device,
    )

    check_device_dtype(device, dtype)
    pair = parse_models(models)
    if len(pair) != 2:
        raise SpecError(f"--models needs exactly two different models, e.g. mamba,transformer (got {len(pair)})")
    modes = parse_modes(mode)
    if len(modes) != 1:
        raise SpecError("--mode takes one mode: the search compares the two models in one mode")
    grid = parse_lengths(lengths)
    if len(grid) < 2 or any(n & (n - 1) for n in grid):
        raise SpecError(f"--lengths must be a range of at least two powers of two, e.g. 128..16k (got '{lengths}')")
    from ssmbench.schema import Count, Layers, Threads, Vocab, Width, check_flags

    check_flags(d_model=(Width, d_model), n_layers=(Layers, n_layers), vocab_size=(Vocab, vocab_size),
                threads=(Threads, threads), decode_tokens=(Count, decode_tokens), samples=(Count, samples))
    if not 0 < width < 10 or not 0.5 < confidence < 1 or timeout <= 0:
        raise SpecError("--width must be in (0, 10), --confidence in (0.5, 1), --timeout > 0")
    if budget is not None and budget <= 0:
        raise SpecError(f"--budget must be > 0 seconds (got {budget:g})")
    check_output_dir(out)
    resolved = resolve_device(device)
    spec = SweepSpec(models=pair, lengths=grid, modes=modes, device=resolved, dtype=dtype,
                     tokens=parse_size(tokens, "token count"), d_model=d_model, n_layers=n_layers,
                     vocab_size=vocab_size, model_options=parse_options(option), match_params=match_params,
                     warmup=1, samples=samples, budget_s=0.0, decode_tokens=decode_tokens, timeout_s=timeout,
                     threads=threads)
    from ssmbench.engine.runner import check_backends_available, plan_sweep

    check_backends_available(plan_sweep(spec))
    settings = SearchSettings(rel_width=width, budget_s=budget or _BUDGET_DEFAULT[resolved], confidence=confidence)
    if not as_json:
        err_console.print(f"searching {pair[0]} vs {pair[1]} ({modes[0]}, {resolved}, {dtype}, d_model {d_model}) "
                          f"over L = {lengths}; budget {settings.budget_s:g} s")
    search_id, _, summary = run_crossover(spec, out, settings, command=" ".join(["ssmbench", *sys.argv[1:]]))
    if as_json:
        print(json.dumps(summary, default=str))
        return
    _print_text(summary, search_id, out)


def _print_text(s: dict, search_id: str, out: Path) -> None:
    from rich.table import Table

    from ssmbench.report.common import format_length
    from ssmbench.report.searches import answer_sentence

    a, b = s["models"]
    table = Table(title=f"probes ({a} time / {b} time; < 1: {a} faster)")
    for col in ("L", "rounds", "ratio", f"{s['confidence']:.0%} CI", "faster"):
        table.add_column(col, justify="right")
    for p in s["probes"]:
        table.add_row(format_length(p["length"]) if p["length"] >= 1024 else str(p["length"]), str(p["rounds"]),
                      f"{p['ratio']:.3f}", f"{p['ci'][0]:.3f} – {p['ci'][1]:.3f}", p["faster"] or "tie")
    console.print(table)
    console.print(answer_sentence(s), markup=False, highlight=False)
    console.print(f"[dim]{len(s['probes'])} probes in {s['wall_s']:.0f} s (stopped by {s['stopped_by']}); "
                  f"search {search_id} stored in {out}[/dim]")

"""``ssmbench generate``: prefill a random prompt and decode, printing TTFT, latency and tokens/s."""

from __future__ import annotations

from typing import Annotated

import typer

from ssmbench.cli.common import console, err_console, parse_options
from ssmbench.spec import SpecError


def generate(
    model: Annotated[str, typer.Option("--model", "-m", help="One model, name[:backend], e.g. mamba.")] = "mamba",
    prompt_len: Annotated[str, typer.Option(help="Prompt length, e.g. 1k.")] = "1k",
    new_tokens: Annotated[int, typer.Option(help="Tokens to generate (greedy).")] = 256,
    batch: Annotated[int, typer.Option(help="Sequences decoded together.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 (CUDA) or float64.")] = "float32",
    d_model: Annotated[int, typer.Option(help="Model width.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Number of layers.")] = 2,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (repeatable).")]
    = None,
    cuda_graphs: Annotated[bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs",
                                                     help="Decode steps in a CUDA graph (default: on for CUDA).")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of the random weights and prompt.")] = 0,
    compile_: Annotated[bool, typer.Option("--compile/--no-compile", help="Decode through torch.compile of the "
                                           "whole step (compare both with `ssmbench sweep --compile both`).")]
    = False,
) -> None:
    """Quick interactive decode check: prefill a random prompt, generate tokens, print TTFT and tokens/s."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ssmbench.bench.generate import run_generation
    from ssmbench.report.common import format_bytes, format_seconds
    from ssmbench.schema import Count, Layers, Seed, Width, check_flags, check_model_options
    from ssmbench.spec import MAX_LENGTH, check_device_dtype, parse_models, parse_size, resolve_device

    check_device_dtype(device, dtype)
    specs = parse_models(model)
    if len(specs) != 1:
        raise SpecError(f"generate takes one model (got {len(specs)}); use `ssmbench sweep --mode decode` to compare")
    length = parse_size(prompt_len, "prompt length", limit=MAX_LENGTH)
    check_flags(new_tokens=(Count, new_tokens), batch=(Count, batch), d_model=(Width, d_model),
                n_layers=(Layers, n_layers), seed=(Seed, seed))
    options = dict(parse_options(option))
    check_model_options("--option", options, [specs[0].name], d_model=d_model, n_layers=n_layers, strict=True)
    dev = resolve_device(device)
    if cuda_graphs and dev != "cuda":
        raise SpecError("--cuda-graphs needs a CUDA device (--device cuda)")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console)
    with progress:
        task = progress.add_task(f"prefill {length} tokens", total=new_tokens)

        def on_token(i: int) -> None:
            progress.update(task, completed=i + 1, description="decoding")

        try:
            res, info = run_generation(specs[0].name, backend=specs[0].backend, prompt_len=length,
                                       new_tokens=new_tokens, batch=batch, device=dev, dtype=dtype, d_model=d_model,
                                       n_layers=n_layers, options=options, cuda_graphs=cuda_graphs,
                                       compiled=compile_, seed=seed, on_token=on_token)
        except (MemoryError, RuntimeError) as exc:  # out of memory at this size: one line, not a traceback
            from ssmbench.engine.worker import classify

            status, message, _ = classify(exc)
            if status != "oom":
                raise
            progress.stop()
            err_console.print(f"[red]out of memory[/red] at prompt length {length}, batch {batch}: "
                              f"{escape(message)}; try a shorter --prompt-len or a smaller --batch", highlight=False)
            raise typer.Exit(1) from None
    table = Table(title=f"{specs[0]} generate on {dev} ({dtype}), d_model {info['d_model']}, "
                        f"{info['n_layers']} layers, {info['params']:,} params, batch {batch}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("time to first token (prefill of the prompt)", format_seconds(res.ttft_s))
    table.add_row("per-token latency p50 / p90 / p99",
                  " / ".join(format_seconds(res.latency_quantile(q)) for q in (0.5, 0.9, 0.99)))
    table.add_row("decode tokens/s (batch x tokens / wall time)", f"{res.tokens_per_s:,.1f}")
    table.add_row("cache / state size at the end", format_bytes(res.state_bytes))
    table.add_row("prefill path", res.prefill_path)
    table.add_row("decode step", f"{res.compile_path} (first step {format_seconds(res.first_step_s)}, "
                  f"{res.graph_breaks} graph break(s))" if res.compiled else "eager")
    table.add_row("CUDA graphs", f"on (capture {format_seconds(res.capture_s)})" if res.cuda_graphs else "off")
    console.print(table)
    console.print("[dim]Random weights: the generated tokens are meaningless; this checks decode speed and "
                  "plumbing. For measurements use `ssmbench sweep --mode decode`.[/dim]")

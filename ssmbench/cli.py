"""The ``ssmbench`` command line. Thin: parse, validate, call library functions, print with rich.

Heavy imports (torch, matplotlib, pandas) happen inside the commands that need them, so ``ssmbench --help``
stays instant. Bad input exits with code 2 and one line on stderr; failed cases or a regression exit with 1.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ssmbench.spec import SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="Benchmark state space models (S4, Mamba, Mamba-2) against attention: speed, memory, "
                       "accuracy.")
console = Console()
err_console = Console(stderr=True)

ResultsDir = Annotated[Path, typer.Option("--out", "-o", help="Results directory (Parquet dataset).")]


def _parse_options(pairs: list[str] | None) -> tuple[tuple[str, Any], ...]:
    """--option d_state=32 --option expand=1 -> (("d_state", 32), ("expand", 1)); values parsed as TOML."""
    import tomllib

    out = []
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"bad --option '{pair}': expected KEY=VALUE, e.g. --option d_state=32")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # a bare word such as a backend or init name
        out.append((key.strip(), value))
    return tuple(sorted(out))


def _run_with_progress(cases: list, out: Path, *, force: bool, resume: bool, retry_failed: bool, command: str,
                       suite: str = "", in_process: bool = False, executor: str = "local", gpus: int | None = None,
                       slurm=None):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ssmbench.executors import run_with_executor

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                        transient=False)
    task_id = progress.add_task("planning", total=None)

    def on_progress(done: int, total: int, case, last) -> None:
        if last is not None:
            _print_outcome(progress.console, last)
        progress.update(task_id, completed=done, total=total,
                        description=case.label() if case is not None else "done")

    try:
        with progress:
            kw = {"command": command, "suite": suite, "in_process": in_process} if executor != "slurm" else {}
            summary = run_with_executor(cases, out, executor, gpus=gpus, slurm=slurm, force=force, resume=resume,
                                        retry_failed=retry_failed, on_progress=on_progress, **kw)
    except KeyboardInterrupt:
        from ssmbench.store import finished_cases

        done = len(finished_cases(out))
        err_console.print(f"interrupted: {done} finished case(s) are saved in {out}; run the same command again "
                          "to resume")
        raise typer.Exit(130) from None
    skipped = len(summary.outcomes) - len(summary.executed)
    if skipped:
        err_console.print(f"[dim]{skipped} finished case(s) already in {out} were skipped "
                          "(--force re-runs them, --retry-failed re-runs failures).[/dim]")
    return summary


def _print_outcome(con: Console, outcome) -> None:
    r = outcome.result
    if r.status == "ok":
        med = next((m.value for m in (r.metrics or []) if m.metric == "time" and m.stat == "median"), None)
        acc = next((m.value for m in (r.metrics or []) if m.metric == "accuracy" and m.stat == "train_len"), None)
        detail = f"{med * 1e3:.3g} ms" if med is not None else (f"acc {acc:.3f}" if acc is not None else "")
        con.print(f"[green]✓[/green] {outcome.case.label()}  {detail}  [dim]({outcome.seconds:.1f} s)[/dim]")
    else:
        con.print(f"[red]✗ {r.status}[/red] {outcome.case.label()}: {r.error}")


def _summary_table(summary) -> None:
    from rich.table import Table

    from ssmbench.report import format_bytes, format_seconds

    table = Table(title=f"run {summary.run_id}", show_lines=False)
    for col in ("model", "backend", "mode", "L", "batch", "status", "median time / accuracy", "tokens/s",
                "peak mem"):
        table.add_column(col, justify="left" if col in ("model", "backend", "mode", "status") else "right")
    for o in summary.executed:
        metrics = {(m.metric, m.stat): m.value for m in (o.result.metrics or [])}
        tps = metrics.get(("tokens_per_s", "median"))
        mem = metrics.get(("peak_mem_delta", "max"), float("nan"))
        acc = metrics.get(("accuracy", "train_len"))
        result = f"acc {acc:.3f}" if acc is not None else format_seconds(metrics.get(("time", "median"), float("nan")))
        status = o.result.status if o.result.status == "ok" else f"[red]{o.result.status}[/red]"
        backend = (o.result.info or {}).get("backend", o.case.backend)
        table.add_row(o.case.model, backend, o.case.mode, str(o.case.seq_len), str(o.case.batch), status, result,
                      f"{tps:,.0f}" if tps else "–", format_bytes(mem))
    if summary.executed:
        console.print(table)
    failed = summary.failed
    msg = f"{len(summary.executed)} case(s) run, {failed} failed; results in {summary.root}"
    console.print(("[red]" if failed else "[green]") + msg + ("[/red]" if failed else "[/green]"))


@app.command()
def sweep(
    models: Annotated[str, typer.Option("--models", "-m", help="Models, comma-separated, each name[:backend], "
                                        "e.g. mamba,transformer or mamba:chunked.")],
    lengths: Annotated[str, typer.Option("--lengths", "-L", help="Lengths: 1k..64k (powers of two) or 512,2k.")]
    = "256..4k",
    mode: Annotated[str, typer.Option("--mode", help="fwd, fwdbwd, prefill, decode (comma-separated).")] = "fwd",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16, float16 (CUDA) or float64.")] = "float32",
    tokens: Annotated[str, typer.Option(help="Tokens per batch: batch = tokens // L.")] = "8k",
    batch: Annotated[str | None, typer.Option(help="Explicit batch size(s), e.g. 1,8,64 (overrides --tokens).")]
    = None,
    d_model: Annotated[int, typer.Option(help="Model width.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Number of layers.")] = 2,
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size of the LM head.")] = 256,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (repeatable), "
                                                     "e.g. d_state=32; ignored by families without it.")] = None,
    match_params: Annotated[bool, typer.Option(help="Size each family to the transformer's parameter count.")]
    = False,
    samples: Annotated[int, typer.Option(help="Minimum timed samples per case.")] = 5,
    warmup: Annotated[int, typer.Option(help="Warm-up calls before timing (the first is timed separately).")] = 2,
    budget: Annotated[float, typer.Option(help="Keep sampling up to this many seconds per case.")] = 2.0,
    decode_tokens: Annotated[int, typer.Option(help="decode mode: tokens generated per sample.")] = 32,
    timeout: Annotated[float, typer.Option(help="Seconds before a case is killed and recorded as timeout.")] = 600,
    threads: Annotated[int, typer.Option(help="torch CPU threads in the worker (0 = all cores).")] = 0,
    out: ResultsDir = Path("results"),
    force: Annotated[bool, typer.Option(help="Re-run cases that already have results.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Re-run cases whose stored status is not ok.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the planned cases and exit.")] = False,
    in_process: Annotated[bool, typer.Option(help="Run cases in this process (debugging; no isolation).")] = False,
    executor: Annotated[str, typer.Option(help="local (one worker), local-gpus (one worker per GPU) or slurm "
                                          "(submitit jobs).")] = "local",
    gpus: Annotated[int | None, typer.Option(help="local-gpus: how many GPUs (default all).")] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="slurm: partition.")] = None,
    slurm_jobs: Annotated[int, typer.Option(help="slurm: number of array jobs sharing the cases.")] = 4,
) -> None:
    """Time and measure memory of models over a sweep of sequence lengths."""
    from ssmbench.spec import (
        SweepSpec,
        check_device_dtype,
        parse_int_list,
        parse_lengths,
        parse_models,
        parse_modes,
        parse_size,
    )

    check_device_dtype(device, dtype)
    for name, value in (("--samples", samples), ("--d-model", d_model), ("--n-layers", n_layers),
                        ("--vocab-size", vocab_size), ("--decode-tokens", decode_tokens)):
        if value < 1:
            raise SpecError(f"{name} must be >= 1 (got {value})")
    if timeout <= 0 or budget < 0 or warmup < 0 or threads < 0:
        raise SpecError("--timeout must be > 0; --budget, --warmup and --threads must be >= 0")
    spec = SweepSpec(models=parse_models(models), lengths=parse_lengths(lengths), modes=parse_modes(mode),
                     device=device, dtype=dtype, tokens=parse_size(tokens, "token count"),
                     batches=parse_int_list(batch, "batch") if batch else (), d_model=d_model, n_layers=n_layers,
                     vocab_size=vocab_size, model_options=_parse_options(option), match_params=match_params,
                     warmup=warmup, samples=samples, budget_s=budget, decode_tokens=decode_tokens,
                     timeout_s=timeout, threads=threads)
    _run_sweeps([spec], out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=in_process,
                command=" ".join(["ssmbench", *sys.argv[1:]]), executor=executor, gpus=gpus,
                slurm=_slurm_options(out, slurm_partition, slurm_jobs, timeout))


def _slurm_options(out: Path, partition: str | None, jobs: int, timeout_s: float):
    from ssmbench.executors import SlurmOptions

    return SlurmOptions(folder=str(out / "slurm"), partition=partition, jobs=jobs,
                        timeout_min=max(10, int(timeout_s / 60) * 4))


def _run_sweeps(specs: list, out: Path, *, force: bool, retry_failed: bool, dry_run: bool, in_process: bool,
                command: str, suite: str = "", extra_cases: list | None = None, executor: str = "local",
                gpus: int | None = None, slurm=None) -> None:
    from ssmbench.runner import plan_sweep
    from ssmbench.spec import check_output_dir

    cases = [c for s in specs for c in plan_sweep(s)] + list(extra_cases or [])
    if dry_run:
        for c in cases:
            console.print(f"{c.case_id}  {c.label()}  device={c.device} dtype={c.dtype}")
        console.print(f"{len(cases)} case(s)")
        return
    check_output_dir(out)
    from ssmbench.executors import EXECUTORS
    from ssmbench.runner import check_backends_available

    check_backends_available(cases)
    if executor not in EXECUTORS:
        raise SpecError(f"unknown executor '{executor}'; choose from {', '.join(EXECUTORS)}")
    summary = _run_with_progress(cases, out, force=force, resume=True, retry_failed=retry_failed, command=command,
                                 suite=suite, in_process=in_process, executor=executor, gpus=gpus, slurm=slurm)
    _summary_table(summary)
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def run(
    suite: Annotated[Path, typer.Argument(help="A suite file, e.g. tasks/quick.toml.")],
    out: ResultsDir = Path("results"),
    force: Annotated[bool, typer.Option(help="Re-run cases that already have results.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Re-run cases whose stored status is not ok.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the planned cases and exit.")] = False,
    executor: Annotated[str, typer.Option(help="local, local-gpus or slurm.")] = "local",
    gpus: Annotated[int | None, typer.Option(help="local-gpus: how many GPUs (default all).")] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="slurm: partition.")] = None,
    slurm_jobs: Annotated[int, typer.Option(help="slurm: number of array jobs sharing the cases.")] = 4,
) -> None:
    """Run a declarative suite file (tasks/*.toml): its sweep and accuracy tables."""
    from ssmbench.spec import load_suite

    s = load_suite(suite)
    extra = []
    if s.accuracy:
        from ssmbench.train import plan_accuracy_tables

        extra = plan_accuracy_tables(s.accuracy, where=str(suite))
    console.print(f"[bold]{s.name}[/bold]: {s.description}" if s.description else f"[bold]{s.name}[/bold]")
    _run_sweeps(list(s.sweeps), out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=False,
                command=" ".join(["ssmbench", *sys.argv[1:]]), suite=s.name, extra_cases=extra, executor=executor,
                gpus=gpus, slurm=_slurm_options(out, slurm_partition, slurm_jobs, 600))


@app.command()
def accuracy(
    task: Annotated[str, typer.Option("--task", "-t", help="Synthetic task: copying, selective_copying, mqar "
                                      "(selective_recall), induction_heads.")],
    models: Annotated[str, typer.Option("--models", "-m", help="Models, comma-separated, each name[:backend].")],
    lengths: Annotated[str | None, typer.Option("--lengths", "-L", help="Train lengths, e.g. 64..256 (one model "
                                                "per length; default: the task's).")] = None,
    eval_lengths: Annotated[str | None, typer.Option(help="Also evaluate at these lengths, e.g. 64..1k "
                                                     "(extrapolation; default: the task's).")] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps (fresh batch each step).")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (AdamW, warm-up + cosine).")] = None,
    batch: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Number of layers.")] = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE (repeatable), "
                                                     "e.g. d_state=16 or head_dim=16.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="Task parameter KEY=VALUE (repeatable), "
                                                    "e.g. num_kv_pairs=8.")] = None,
    stop_at: Annotated[float | None, typer.Option(help="Stop early once held-out accuracy reaches this.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the initialisation and the training stream.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads in the worker (0 = all cores).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before a case is killed.")] = None,
    out: ResultsDir = Path("results"),
    force: Annotated[bool, typer.Option(help="Re-run cases that already have results.")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Re-run cases whose stored status is not ok.")] = False,
    dry_run: Annotated[bool, typer.Option(help="List the planned cases and exit.")] = False,
) -> None:
    """Train a fresh model per (model, train length) on a synthetic task; report accuracy at each length."""
    from ssmbench.train import plan_accuracy

    given = {"task": task, "models": models, "lengths": lengths, "eval_lengths": eval_lengths, "steps": steps,
             "lr": lr, "batch": batch, "d_model": d_model, "n_layers": n_layers, "stop_at": stop_at, "seed": seed,
             "device": device, "threads": threads, "timeout_s": timeout,
             "model_options": dict(_parse_options(option)), "params": dict(_parse_options(param))}
    cases = plan_accuracy({k: v for k, v in given.items() if v is not None}, where="accuracy")
    try:
        _run_sweeps([], out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=False,
                    command=" ".join(["ssmbench", *sys.argv[1:]]), extra_cases=cases)
    finally:
        if not dry_run and (out / "parts").is_dir():
            _accuracy_table(out, {c.case_id for c in cases})


def _accuracy_table(out: Path, case_ids: set[str]) -> None:
    from rich.table import Table

    from ssmbench import store
    from ssmbench.report_accuracy import accuracy_frame, wide_table

    df = store.load(out)
    wide = wide_table(accuracy_frame(df[df.case_id.isin(case_ids)]))
    if wide.empty:
        return
    cols = [c for c in wide.columns if c.startswith("acc@")]
    table = Table(title="accuracy (held-out, supervised tokens) by evaluation length")
    for col in ("model", "train L", "steps", "train time", *(c.replace("acc@", "L=") for c in cols)):
        table.add_column(col, justify="left" if col == "model" else "right")
    for _, r in wide.iterrows():
        table.add_row(r.label, str(r.train_len), f"{r.steps:.0f}", f"{r.train_time:.0f} s",
                      *("–" if r[c] != r[c] else f"{r[c]:.3f}" for c in cols))
    console.print(table)


@app.command()
def report(
    results: Annotated[Path, typer.Option("--results", "-r", help="Results directory to read.")] = Path("results"),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write figures and report.md "
                                             "(default: RESULTS/report).")] = None,
) -> None:
    """Write scaling figures (PNG) and a Markdown report from a results directory."""
    from rich.table import Table

    from ssmbench.report import build_report
    from ssmbench.spec import check_output_dir

    if not (results / "parts").is_dir():
        raise SpecError(f"no results in '{results}' (expected {results}/parts/*.parquet); run `ssmbench sweep` "
                        "or `ssmbench run tasks/quick.toml` first")
    target = check_output_dir(out if out is not None else results / "report")
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


@app.command()
def models(
    d_model: Annotated[int, typer.Option(help="Width for the parameter counts.")] = 256,
    n_layers: Annotated[int, typer.Option(help="Layers for the parameter counts.")] = 2,
) -> None:
    """List the registered model families, their backends and parameter counts."""
    import torch
    from rich.table import Table

    from ssmbench import kernels
    from ssmbench.models import count_params, make_config
    from ssmbench.registry import MODELS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = Table(title=f"models (parameters at d_model={d_model}, n_layers={n_layers}, vocab 256; "
                        f"backends on {device})")
    for col in ("model", "aliases", "params", "d_state", "description", "backends (✓ available here)"):
        table.add_column(col, justify="right" if col in ("params", "d_state") else "left")
    for entry in MODELS:
        try:
            config = make_config(entry.name, d_model=d_model, n_layers=n_layers)
            params, d_state = f"{count_params(config):,}", str(config.state_dim or "–")
        except (ImportError, ValueError, RuntimeError) as exc:
            params, d_state = f"[red]{type(exc).__name__}[/red]", "–"
        backends = []
        for op in entry.ops:
            try:
                statuses = kernels.backends(op, device)
            except ImportError:
                continue
            marks = " ".join(f"{b.name}{'✓' if b.available else '✗'}" for b in statuses)
            backends.append(f"{op}: {marks}")
        table.add_row(entry.name, ", ".join(entry.aliases), params, d_state, entry.summary, "\n".join(backends))
    console.print(table)


@app.command()
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
) -> None:
    """Quick interactive decode check: prefill a random prompt, generate tokens, print TTFT and tokens/s."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ssmbench.generate import run_generation
    from ssmbench.report import format_bytes, format_seconds
    from ssmbench.runner import resolve_device
    from ssmbench.spec import check_device_dtype, parse_models, parse_size

    check_device_dtype(device, dtype)
    specs = parse_models(model)
    if len(specs) != 1:
        raise SpecError(f"generate takes one model (got {len(specs)}); use `ssmbench sweep --mode decode` to compare")
    length = parse_size(prompt_len, "prompt length")
    for name, value in (("--new-tokens", new_tokens), ("--batch", batch), ("--d-model", d_model),
                        ("--n-layers", n_layers)):
        if value < 1:
            raise SpecError(f"{name} must be >= 1 (got {value})")
    dev = resolve_device(device)
    if cuda_graphs and dev != "cuda":
        raise SpecError("--cuda-graphs needs a CUDA device (--device cuda)")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console)
    with progress:
        task = progress.add_task(f"prefill {length} tokens", total=new_tokens)

        def on_token(i: int) -> None:
            progress.update(task, completed=i + 1, description="decoding")

        res, info = run_generation(specs[0].name, backend=specs[0].backend, prompt_len=length,
                                   new_tokens=new_tokens, batch=batch, device=dev, dtype=dtype, d_model=d_model,
                                   n_layers=n_layers, options=dict(_parse_options(option)), cuda_graphs=cuda_graphs,
                                   seed=seed, on_token=on_token)
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
    table.add_row("CUDA graphs", f"on (capture {format_seconds(res.capture_s)})" if res.cuda_graphs else "off")
    console.print(table)
    console.print("[dim]Random weights: the generated tokens are meaningless; this checks decode speed and "
                  "plumbing. For measurements use `ssmbench sweep --mode decode`.[/dim]")


@app.command()
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


@app.command()
def check(
    baseline: Annotated[Path | None, typer.Option(help="Stored baseline (Parquet) to compare with.")] = None,
    suite: Annotated[Path, typer.Option(help="Suite whose speed cases are measured.")] = Path("tasks/ci.toml"),
    against: Annotated[str | None, typer.Option(help="Git ref measured in this job instead of a stored baseline "
                                                "(temporary worktree, interleaved rounds).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Slowdown that fails, e.g. 0.10 = 10% (default: the "
                                                    "suite file's threshold, else 0.10).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the one-sided rank test.")] = 0.01,
    rounds: Annotated[int | None, typer.Option(help="Rounds per case and side (default: the suite's, else 10).")]
    = None,
    option: Annotated[list[str] | None, typer.Option("--option", help="Model option KEY=VALUE injected into the "
                                                     "measured code only, e.g. work_factor=1.5 (slows the test "
                                                     "model 'faulty').")] = None,
    update_baseline: Annotated[bool, typer.Option(help="Measure the suite and (over)write --baseline.")] = False,
    summary: Annotated[Path | None, typer.Option(help="Also write the Markdown summary here (it is appended to "
                                                 "$GITHUB_STEP_SUMMARY when that is set).")] = None,
    force: Annotated[bool, typer.Option(help="Compare even if the machine calibration moved more than 2x.")]
    = False,
    remeasure: Annotated[bool, typer.Option(help="Re-measure suspected regressions before reporting them.")] = True,
    normalize: Annotated[str, typer.Option(help="How baseline times are scaled to this machine: suite (= auto: by "
                                           "the median ratio of the suite's cases; robust to load, blind to "
                                           "changes that slow every case alike), calibration, or none.")]
    = "auto",
) -> None:
    """Throughput regression gate: compare the suite's speed with a baseline or a git ref (exit 1 on regression)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from ssmbench import check as gate
    from ssmbench.check_report import headline, publish_markdown, render_markdown, summary_rows

    if (baseline is None) == (against is None):
        raise SpecError("give exactly one of --baseline PATH (stored baseline) or --against REF (git ref)")
    if update_baseline and (baseline is None or option):
        raise SpecError("--update-baseline records --baseline PATH from the unmodified code (no --option)")
    plan = gate.plan_check(suite, rounds=rounds, threshold=threshold, alpha=alpha)
    inject = _parse_options(option)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True)
    task_id = progress.add_task("calibrating", total=None)

    def on_progress(done: int, total: int, what: str) -> None:
        progress.update(task_id, completed=done, total=total, description=what)

    with progress:
        if update_baseline:
            try:
                path, _, cal = gate.record_baseline(plan, baseline, command=" ".join(["ssmbench", *sys.argv[1:]]),
                                                    on_progress=on_progress)
            except RuntimeError as exc:
                err_console.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
        elif baseline is not None:
            result = gate.run_against_baseline(plan, baseline, inject=inject, force=force, remeasure=remeasure,
                                               normalize=normalize, on_progress=on_progress)
        else:
            result = gate.run_against_ref(plan, against, inject=inject, remeasure=remeasure, on_progress=on_progress)
    if update_baseline:
        console.print(f"[green]baseline written: {path}[/green] ({len(plan.cases)} cases x {plan.rounds} rounds; "
                      f"calibration matmul {cal.matmul_s * 1e3:.2f} ms, memory {cal.memory_s * 1e3:.2f} ms)")
        return
    table = Table(title=f"ssmbench check: suite {plan.suite.name} vs {result.reference}")
    for col in ("case", "baseline" if result.mode == "baseline" else "base", "current", "ratio", "95% CI", "p",
                "verdict"):
        table.add_column(col, justify="left" if col in ("case", "verdict") else "right")
    styles = {"regression": "red", "failed": "red", "unsure": "yellow", "faster": "cyan", "new": "cyan"}
    for r in summary_rows(result):
        style = styles.get(r["status"], "green")
        table.add_row(r["case"], r["baseline"], r["current"], r["ratio"], r["ci"], r["p"],
                      f"[{style}]{r['verdict']}[/{style}]")
    console.print(table)
    for note in ([f"normalisation: {result.normalisation.describe()}"] if result.normalisation else []) + result.notes:
        console.print(f"[dim]{note}[/dim]", highlight=False)
    for p in publish_markdown(render_markdown(result), summary):
        console.print(f"[dim]summary: {p}[/dim]")
    console.print(f"{headline(result)}  (geomean ratio {result.geomean_ratio:.3f}, {result.seconds:.0f} s)")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


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


if __name__ == "__main__":
    main()

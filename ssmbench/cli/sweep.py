"""``ssmbench sweep``: time and measure memory over a sweep of sequence lengths."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import (
    DryRun,
    Executor,
    Force,
    Gpus,
    MaxMemory,
    ResultsDir,
    RetryFailed,
    Shard,
    SkipAfterOom,
    SlurmJobs,
    SlurmPartition,
    parse_options,
    run_sweeps,
    slurm_options,
)


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
    compile_: Annotated[str, typer.Option("--compile", help="eager, compiled (torch.compile of the forward, "
                                          "training step or decode step) or both: one case each.")] = "eager",
    out: ResultsDir = Path("results"),
    force: Force = False,
    retry_failed: RetryFailed = False,
    dry_run: DryRun = False,
    in_process: Annotated[bool, typer.Option(help="Run cases in this process (debugging; no isolation).")] = False,
    executor: Executor = "local",
    gpus: Gpus = None,
    slurm_partition: SlurmPartition = None,
    slurm_jobs: SlurmJobs = 4,
    shard: Shard = None,
    max_memory: MaxMemory = None,
    skip_after_oom: SkipAfterOom = True,
) -> None:
    """Time and measure memory of models over a sweep of sequence lengths."""
    from ssmbench.schema import sweep_from_flags

    # The same schema as a suite's [[sweep]] table: one set of rules for flags and files.
    spec = sweep_from_flags(models=models, lengths=lengths, modes=mode, device=device, dtype=dtype, tokens=tokens,
                            batches=batch, d_model=d_model, n_layers=n_layers, vocab_size=vocab_size,
                            model_options=dict(parse_options(option)), match_params=match_params, warmup=warmup,
                            samples=samples, budget_s=budget, decode_tokens=decode_tokens, timeout_s=timeout,
                            threads=threads, compile=compile_)
    run_sweeps([spec], out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=in_process,
                command=" ".join(["ssmbench", *sys.argv[1:]]), executor=executor, gpus=gpus,
                slurm=slurm_options(out, slurm_partition, slurm_jobs, timeout), shard=shard, max_memory=max_memory,
                skip_after_oom=skip_after_oom)

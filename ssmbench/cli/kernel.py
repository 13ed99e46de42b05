"""``ssmbench kernel``: one kernel op's backends head to head (the peers included), recorded as speed rows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ssmbench.cli.common import DryRun, Force, ResultsDir, RetryFailed, Shard, parse_options, run_sweeps
from ssmbench.spec import SpecError, parse_choices


def kernel(
    op: Annotated[str, typer.Argument(help="Kernel op: ssd, selective_scan or s4_kernel.")],
    backends: Annotated[str | None, typer.Option("--backends", "-b", help="Backends, comma-separated "
                                                 "(default: every backend that runs on the device except the "
                                                 "sequential reference), e.g. minimal,chunked,compiled.")] = None,
    lengths: Annotated[str, typer.Option("--lengths", "-L", help="Lengths: 1k..16k or 4k,16k.")] = "1k..16k",
    mode: Annotated[str, typer.Option("--mode", help="fwd, fwdbwd (comma-separated).")] = "fwd",
    batch: Annotated[int, typer.Option(help="Batch size (s4_kernel has none).")] = 1,
    option: Annotated[list[str] | None, typer.Option("--option", help="Problem shape KEY=VALUE (repeatable). "
                                                     "Defaults: ssd heads=8 headdim=64 d_state=64 ngroups=1 "
                                                     "chunk=64; selective_scan d=256 d_state=16; s4_kernel "
                                                     "channels=256 d_state=64 (mode=dplr for reference).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, float64 (or bfloat16 / float16 on CUDA).")] = "float32",
    samples: Annotated[int, typer.Option(help="Minimum timed samples per case.")] = 5,
    warmup: Annotated[int, typer.Option(help="Warm-up calls before timing (the first is timed separately).")] = 2,
    budget: Annotated[float, typer.Option(help="Keep sampling up to this many seconds per case.")] = 2.0,
    timeout: Annotated[float, typer.Option(help="Seconds before a case is killed and recorded as timeout.")] = 600,
    threads: Annotated[int, typer.Option(help="torch CPU threads in the worker (0 = all cores).")] = 0,
    out: ResultsDir = Path("results"),
    force: Force = False,
    retry_failed: RetryFailed = False,
    dry_run: DryRun = False,
    in_process: Annotated[bool, typer.Option(help="Run cases in this process (debugging; no isolation).")] = False,
    shard: Shard = None,
) -> None:
    """Time one kernel op's backends on the same inputs, lengths and threads; `ssmbench report` compares them."""
    from ssmbench.bench.kernel import KERNEL_OPS, MODES, plan_kernel_cases
    from ssmbench.spec import check_device_dtype, parse_lengths, parse_modes, resolve_device

    if op not in KERNEL_OPS:
        raise SpecError(f"unknown kernel op '{op}'; known: {', '.join(KERNEL_OPS)}")
    check_device_dtype(device, dtype)
    modes = parse_modes(mode)
    if set(modes) - set(MODES):
        raise SpecError(f"kernel benchmarks run modes {', '.join(MODES)}, not {', '.join(set(modes) - set(MODES))}")
    for name, value in (("--samples", samples), ("--batch", batch)):
        if value < 1:
            raise SpecError(f"{name} must be >= 1 (got {value})")
    if timeout <= 0 or budget < 0 or warmup < 0 or threads < 0:
        raise SpecError("--timeout must be > 0; --budget, --warmup and --threads must be >= 0")
    options = dict(parse_options(option))
    defaults = KERNEL_OPS[op].defaults
    unknown = sorted(set(options) - set(defaults) - ({"mode"} if op == "s4_kernel" else set()))
    if unknown:
        raise SpecError(f"unknown --option {', '.join(unknown)} for {op}; known: {', '.join(defaults)}")
    bad = [k for k, v in options.items() if k != "mode" and (not isinstance(v, int) or v < 1)]
    if bad:
        raise SpecError(f"--option {', '.join(bad)} must be positive integers")
    dev = resolve_device(device)
    names = _backends(op, backends, dev)
    cases = plan_kernel_cases(op, names, parse_lengths(lengths), modes, batch=batch, options=options, device=dev,
                              dtype=dtype, warmup=warmup, samples=samples, budget_s=budget, threads=threads,
                              timeout_s=timeout)
    run_sweeps([], out, force=force, retry_failed=retry_failed, dry_run=dry_run, in_process=in_process,
               command=" ".join(["ssmbench", *sys.argv[1:]]), extra_cases=cases, shard=shard)


def _backends(op: str, text: str | None, device: str) -> tuple[str, ...]:
    """The requested backends (validated names; availability is checked before any case runs), or every backend
    of the op that runs on ``device``."""
    from ssmbench import kernels

    known = kernels.backend_names(op)
    if text is None:
        return tuple(b.name for b in kernels.backends(op, device) if b.available and b.name != "reference")
    return parse_choices(text, known, f"unknown backend '{{name}}' for {op}; known: {', '.join(known)}",
                         f"no backends given; known for {op}: {', '.join(known)}")

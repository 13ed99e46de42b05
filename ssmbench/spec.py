"""Parsing of user syntax into frozen dataclasses; every bad input raises :class:`SpecError` with one clear line.

- lengths: ``1k..64k`` (powers of two, inclusive), lists ``512,2k,8k``, suffixes k/m (1k = 1024), or a mix.
- models: ``name[:backend]``, comma-separated (``mamba:chunked,transformer``).
- suites: ``tasks/*.toml`` with ``[[sweep]]`` (and ``[[accuracy]]``) tables whose keys are the CLI's options;
  loaded and validated by ``ssmbench.schema.load_suite`` (the one typed schema of suite tables and flags).

Nothing here imports torch: validation must stay instant.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmbench.env import cpuinfo_line
from ssmbench.registry import MODELS, UnknownName

MODES = ("fwd", "fwdbwd", "prefill", "decode")
COMPILE_MODES = ("eager", "compiled")  # --compile: torch.compile of the forward / training step / decode step
DTYPES = ("float32", "bfloat16", "float16", "float64")
DEVICES = ("auto", "cpu", "cuda")
_SUFFIX = {"": 1, "k": 1024, "m": 1024 * 1024}
_NUMBER = re.compile(r"^(\d+)([km]?)$")
_BYTES = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)$")
_BYTE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
MAX_LENGTH = 1 << 24  # 16m tokens: far beyond any machine, small enough that no size computation overflows


class SpecError(ValueError):
    """Bad user input; the message is printed as is and the CLI exits with code 2."""


def parse_size(text: str, what: str = "length", limit: int = 1 << 40) -> int:
    """'4k' -> 4096, '512' -> 512, '1m' -> 1048576; at most ``limit``."""
    m = _NUMBER.match(text.strip().lower()[:40])
    if not m:
        raise SpecError(f"bad {what} '{text}': expected a positive integer with optional k/m suffix, e.g. 512, 4k")
    value = int(m.group(1)) * _SUFFIX[m.group(2)]
    if value <= 0:
        raise SpecError(f"bad {what} '{text}': must be positive")
    if value > limit:
        raise SpecError(f"bad {what} '{text}': at most {limit:,} ({limit >> 20}m)" if limit >= 1 << 20
                        else f"bad {what} '{text}': at most {limit:,}")
    return value


def parse_bytes(text: str | int, what: str = "--max-memory") -> int:
    """'3GiB' -> 3·2³⁰, '3GB' -> 3·10⁹, '3g' -> 3·2³⁰ (a bare letter is binary, like 4k lengths), '512' -> bytes."""
    m = _BYTES.match(str(text).strip().lower())
    if not m or (m.group(3) == "i" or (m.group(3) and not m.group(2) and m.group(3) != "b")):
        raise SpecError(f"bad {what} '{text}': expected a size such as 3GiB, 512MiB, 2GB or 3g")
    number, power, unit = float(m.group(1)), _BYTE_POWERS[m.group(2)], m.group(3)
    base = 1000 if unit == "b" and power else 1024
    value = int(number * base**power)
    if value <= 0:
        raise SpecError(f"bad {what} '{text}': must be positive")
    return value


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/4' -> (2, 4): this machine runs the second of four shares of the case list (1-based, 1 <= i <= n)."""
    if text is None or not str(text).strip():
        return None
    i_text, sep, n_text = str(text).strip().partition("/")
    if not sep or not i_text.isdigit() or not n_text.isdigit():
        raise SpecError(f"bad --shard '{text}': expected I/N, e.g. 1/4 (the first of four shares)")
    i, n = int(i_text), int(n_text)
    if not 1 <= i <= n:
        raise SpecError(f"bad --shard '{text}': need 1 <= I <= N (shares are numbered from 1)")
    return i, n


def parse_lengths(text: str) -> tuple[int, ...]:
    """'1k..8k' -> (1024, 2048, 4096, 8192); '512,2k' -> (512, 2048). Sorted, unique."""
    if not str(text).strip():
        raise SpecError("empty length list; give e.g. 256..4k or 512,2k,8k")
    out: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        if ".." in part:
            lo_text, _, hi_text = part.partition("..")
            lo, hi = parse_size(lo_text, limit=MAX_LENGTH), parse_size(hi_text, limit=MAX_LENGTH)
            if lo > hi:
                raise SpecError(f"bad length range '{part}': start {lo} is larger than end {hi}")
            if lo & (lo - 1):
                raise SpecError(f"bad length range '{part}': a range steps by powers of two, so its start "
                                f"must be one ({lo} is not); list lengths with commas instead")
            n = lo
            while n <= hi:
                out.add(n)
                n *= 2
        else:
            out.add(parse_size(part, limit=MAX_LENGTH))
    return tuple(sorted(out))


@dataclass(frozen=True)
class ModelSpec:
    name: str  # canonical registry name
    backend: str = "auto"

    def __str__(self) -> str:
        return self.name if self.backend == "auto" else f"{self.name}:{self.backend}"


def _known_backends(model: str) -> set[str]:
    """Backend names of the model's main op (its ``backend`` field); availability is checked after planning."""
    from ssmbench import kernels

    return {"auto", *kernels.backend_names(MODELS.get(model).ops[0])}


def parse_models(text: str) -> tuple[ModelSpec, ...]:
    """'mamba:chunked,transformer' -> (ModelSpec('mamba', 'chunked'), ModelSpec('transformer'))."""
    specs = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, _, backend = part.partition(":")
        try:
            entry = MODELS.get(name)
        except UnknownName as exc:
            raise SpecError(str(exc)) from None
        backend = backend.strip().lower() or "auto"
        if entry.ops:
            known = _known_backends(entry.name)
            if backend not in known:
                raise SpecError(f"unknown backend '{backend}' for model '{entry.name}'; "
                                f"known: {', '.join(sorted(known))} (see `ssmbench models`)")
        specs.append(ModelSpec(entry.name, backend))
    if not specs:
        raise SpecError("no models given; e.g. --models mamba,transformer (see `ssmbench models`)")
    return tuple(dict.fromkeys(specs))


def parse_choices(text: str | list[str] | tuple[str, ...], known: Sequence[str], unknown: str,
                  empty: str) -> tuple[str, ...]:
    """Comma-separated names (or a list of them), lower-cased, repeats dropped in order; each must be one of
    ``known``. ``unknown`` is the error for a name not known (``{name}`` in it is replaced), ``empty`` the error
    for no name at all."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    for name in names:
        if name not in known:
            raise SpecError(unknown.replace("{name}", name))
    if not names:
        raise SpecError(empty)
    return names


def parse_modes(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    choose = f"choose from {', '.join(MODES)}"
    return parse_choices(text, MODES, f"unknown mode '{{name}}'; {choose}", f"no mode given; {choose}")


def parse_compile(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'eager' | 'compiled' | 'both' | 'eager,compiled' -> the compile modes to run (each a case dimension)."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for part in (str(p).strip().lower() for p in parts):
        if not part:
            continue
        if part not in (*COMPILE_MODES, "both"):
            raise SpecError(f"unknown compile mode '{part}'; choose from eager, compiled, both")
        out += list(COMPILE_MODES) if part == "both" else [part]
    if not out:
        raise SpecError("no compile mode given; choose from eager, compiled, both")
    return tuple(dict.fromkeys(out))


def parse_int_list(text: str | int | list[int], what: str) -> tuple[int, ...]:
    if isinstance(text, int):
        return (text,)
    parts = text.split(",") if isinstance(text, str) else [str(p) for p in text]
    return tuple(parse_size(p, what) for p in parts if str(p).strip())


# The CPU instruction sets on which PyTorch's half-precision matmuls run natively (x86: oneDNN's bfloat16 kernels use
# AVX512-BF16 or AMX, its float16 ones AMX-FP16; Arm: the BF16 extension, "bf16" in /proc/cpuinfo): without one, the
# timings measure an emulation, not the model.
NATIVE_HALF_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16", "bf16"), "float16": ("amx_fp16",)}


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine (Linux /proc/cpuinfo; empty where it cannot be read)."""
    line = cpuinfo_line("flags", "Features")
    return set(line.split(":", 1)[1].split()) if line else set()


def check_device_dtype(device: str, dtype: str, flags: set[str] | None = None) -> None:
    if device not in DEVICES:
        raise SpecError(f"unknown device '{device}'; choose from {', '.join(DEVICES)}")
    if dtype not in DTYPES:
        raise SpecError(f"unknown dtype '{dtype}'; choose from {', '.join(DTYPES)}")
    if device == "cpu" and dtype in NATIVE_HALF_FLAGS:
        needs = NATIVE_HALF_FLAGS[dtype]
        if not set(needs) & (cpu_flags() if flags is None else flags):
            raise SpecError(f"dtype {dtype} is not supported on this cpu: it has none of {', '.join(needs)}, so "
                            "its half-precision kernels are emulated and their timings mislead; use --dtype "
                            "float32, or --device cuda")


def check_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output directory (or fail with one line if it cannot be written)."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"cannot create output directory '{out}': {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise SpecError(f"output directory '{out}' is not writable")
    return out


@dataclass(frozen=True)
class SweepSpec:
    """A speed/memory sweep: every model x mode x length (x batch) is one case."""

    models: tuple[ModelSpec, ...]
    lengths: tuple[int, ...]
    modes: tuple[str, ...] = ("fwd",)
    device: str = "auto"
    dtype: str = "float32"
    tokens: int = 8192  # tokens per batch; batch = tokens // L unless ``batches`` is given
    batches: tuple[int, ...] = ()  # explicit batch sizes (override tokens)
    d_model: int = 256
    n_layers: int = 2
    vocab_size: int = 256
    model_options: tuple[tuple[str, Any], ...] = ()  # extra config fields, e.g. (("d_state", 32),)
    match_params: bool = False  # size each family to the transformer's parameter count
    warmup: int = 2
    samples: int = 5  # at least this many timed samples ...
    budget_s: float = 2.0  # ... and keep sampling while under this budget (max 50)
    decode_tokens: int = 32  # decode mode: tokens generated per sample
    timeout_s: float = 600.0
    threads: int = 0  # torch CPU threads in the worker; 0 = all cores
    seed: int = 0
    max_memory: int = 0  # bytes a case may allocate (CPU: address-space limit; CUDA: allocator fraction); 0 = none
    compile: tuple[str, ...] = ("eager",)  # eager and/or compiled (torch.compile), each a separate case
    name: str = "sweep"


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    description: str = ""
    sweeps: tuple[SweepSpec, ...] = ()
    accuracy: tuple[dict[str, Any], ...] = ()  # raw [[accuracy]] tables, parsed by ssmbench.train
    options: dict[str, Any] = field(default_factory=dict, hash=False)


def resolve_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise SpecError("--device cuda requested but torch sees no CUDA device "
                                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

"""One typed schema (pydantic) for what a user types: ``[[sweep]]`` tables of suite files and the CLI's flags alike.

Everything is validated before any case runs, and every failure is a :class:`~ssmbench.spec.SpecError` with one
line naming where the value came from (``tasks/x.toml [[sweep]] #2: d_model ...`` or ``--d-model ...``), so the
CLI exits 2 without a traceback. Sizes and counts are bounded (:data:`LIMITS`) so that an absurd value fails here
and not with an OverflowError after a case ran.

- :class:`SweepInput` is a ``[[sweep]]`` table; ``ssmbench sweep`` builds the same object from its flags
  (:func:`sweep_from_flags`), so a suite and the command line accept exactly the same values.
- :func:`check_model_options` validates ``--option``/``model_options`` keys and values against the model config
  dataclasses (unknown key: "did you mean"; a value of the wrong type or out of range: the field's rule).
- ``[[accuracy]]`` tables keep their key table in ``ssmbench.train.plan.TABLE_KEYS`` (semantics live there); that
  planner uses :func:`check_keys`, :func:`check_model_options` and :data:`LIMITS` from here.
- :func:`check_flags` validates loose flags of other commands (``models``, ``generate``) with the same types.

Adding a key: add a field to :class:`SweepInput` with its type and bounds (reuse the ``Annotated`` aliases below,
e.g. ``my_knob: Count = 4``), give it the same field in ``spec.SweepSpec`` (what the planner reads), and if the CLI
has a flag for it whose name is not ``--my-knob``, add it to :data:`FLAG_NAMES`. A new model option needs nothing
here: options are read from the config dataclasses (``ssmbench/options.py``; an int option that may be 0 gets an
entry in its ``OPTION_MINIMUM``).

No torch at import time (``check_model_options`` loads the config classes, which does import it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ssmbench.options import check_model_options, did_you_mean
from ssmbench.spec import (
    MAX_LENGTH,
    MODES,
    ModelSpec,
    SpecError,
    Suite,
    SweepSpec,
    check_device_dtype,
    parse_bytes,
    parse_compile,
    parse_int_list,
    parse_lengths,
    parse_models,
    parse_modes,
    parse_size,
)

# Upper bounds of user-given sizes (generous: far beyond any machine, small enough to never overflow).
LIMITS = {"length": MAX_LENGTH, "tokens": 1 << 32, "batch": 1 << 20, "width": 1 << 16, "layers": 1 << 12,
          "vocab": 1 << 24, "count": 1 << 20, "seconds": 7 * 86400.0, "threads": 4096, "seed": (1 << 63) - 1}
# CLI flag of a schema key, where it is not ``--`` + the key with dashes.
FLAG_NAMES = {"modes": "--mode", "batches": "--batch", "budget_s": "--budget", "timeout_s": "--timeout",
              "model_options": "--option"}


def _text_list(value: Any, what: str) -> str:
    """A TOML string, integer or list of them as the comma-separated text the parsers take."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                          for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise ValueError(f"must be {what}, got {value!r}")


def _models(value: Any) -> tuple[ModelSpec, ...]:
    return parse_models(_text_list(value, 'a model list such as "mamba,transformer"'))


def _lengths(value: Any) -> tuple[int, ...]:
    return parse_lengths(_text_list(value, 'a length list such as "256..4k" or [512, 2048]'))


def _modes(value: Any) -> tuple[str, ...]:
    return parse_modes(_text_list(value, f"a mode or list of modes ({', '.join(MODES)})"))


def _size(what: str) -> BeforeValidator:
    def parse(value: Any) -> int:
        return parse_size(_text_list(value, f"a {what} such as 8192 or 8k"), what)

    return BeforeValidator(parse)


def _bytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"must be a size such as 3GiB or 512MiB, got {value!r}")
    return parse_bytes(value, "max_memory")


def _compile(value: Any) -> tuple[str, ...]:
    return parse_compile(_text_list(value, 'a compile mode or list of them ("eager", "compiled", "both")'))


def _batches(value: Any) -> tuple[int, ...]:
    return parse_int_list(_text_list(value, "a batch size or list of them such as [1, 8]"), "batch")


Count = Annotated[int, Field(ge=1, le=LIMITS["count"])]
Width = Annotated[int, Field(ge=1, le=LIMITS["width"])]
Layers = Annotated[int, Field(ge=1, le=LIMITS["layers"])]
Vocab = Annotated[int, Field(ge=2, le=LIMITS["vocab"])]
Threads = Annotated[int, Field(ge=0, le=LIMITS["threads"])]
Seed = Annotated[int, Field(ge=0, le=LIMITS["seed"])]
Seconds = Annotated[float, Field(gt=0, le=LIMITS["seconds"], allow_inf_nan=False)]
Budget = Annotated[float, Field(ge=0, le=LIMITS["seconds"], allow_inf_nan=False)]
Warmup = Annotated[int, Field(ge=0, le=LIMITS["count"])]
Length = Annotated[int, _size("length"), Field(ge=1, le=LIMITS["length"])]
Tokens = Annotated[int, _size("token count"), Field(ge=1, le=LIMITS["tokens"])]
Batches = Annotated[tuple[Annotated[int, Field(ge=1, le=LIMITS["batch"])], ...], BeforeValidator(_batches)]
Lengths = Annotated[tuple[Annotated[int, Field(le=LIMITS["length"])], ...], BeforeValidator(_lengths)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SweepInput(_Strict):
    """A ``[[sweep]]`` table, or the flags of ``ssmbench sweep``; :meth:`to_spec` gives the planner's SweepSpec."""

    models: Annotated[tuple[ModelSpec, ...], BeforeValidator(_models)]
    lengths: Lengths
    modes: Annotated[tuple[str, ...], BeforeValidator(_modes)] = ("fwd",)
    device: Annotated[str, Field(max_length=20)] = "auto"  # one of spec.DEVICES (checked with the dtype)
    dtype: Annotated[str, Field(max_length=20)] = "float32"  # one of spec.DTYPES
    tokens: Tokens = 8192
    batches: Batches = ()
    d_model: Width = 256
    n_layers: Layers = 2
    vocab_size: Vocab = 256
    model_options: dict[str, Any] = Field(default_factory=dict)
    match_params: bool = False
    warmup: Warmup = 2
    samples: Count = 5
    budget_s: Budget = 2.0
    decode_tokens: Count = 32
    timeout_s: Seconds = 600.0
    threads: Threads = 0
    seed: Seed = 0
    max_memory: Annotated[int, BeforeValidator(_bytes), Field(ge=0)] = 0  # bytes a case may allocate; 0 = no cap
    compile: Annotated[tuple[str, ...], BeforeValidator(_compile)] = ("eager",)  # torch.compile: a case dimension
    name: Annotated[str, Field(max_length=200)] = "sweep"

    def to_spec(self) -> SweepSpec:
        names = {f.name for f in fields(SweepSpec)} - {"model_options"}
        data = {k: getattr(self, k) for k in type(self).model_fields if k in names}
        return SweepSpec(**data, model_options=tuple(sorted(self.model_options.items())))


_ALIASES = {"mode": "modes", "batch": "batches"}  # singular spellings a table may use


def _flag(key: str) -> str:
    return FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


def check_keys(where: str, table: Any, valid: Iterable[str], *, required: Sequence[str] = (),
               what: str = "table") -> None:
    """A TOML table (a mapping) whose keys are all valid and that has the required ones."""
    valid = set(valid)
    if not isinstance(table, Mapping):
        raise SpecError(f"{where}: expected a {what} of keys, got {_kind(table)}")
    unknown = sorted(set(table) - valid)
    if unknown:
        key = unknown[0]
        raise SpecError(f"{where}: unknown key '{key}'{did_you_mean(key, valid)} (valid: {', '.join(sorted(valid))})")
    missing = [k for k in required if k not in table]
    if missing:
        raise SpecError(f"{where}: needs {' and '.join(repr(k) for k in missing)}")


def _kind(value: Any) -> str:
    return {list: "a list", dict: "a table", str: "a string", bool: "a boolean"}.get(type(value), repr(value))


_RULES = {"int_type": "must be an integer", "float_type": "must be a number", "bool_type": "must be true or false",
          "finite_number": "must be a finite number", "string_type": "must be a string",
          "dict_type": "must be a table, e.g. { d_state = 32 }", "missing": "is required"}


def _describe(err: Mapping[str, Any]) -> str:
    """pydantic's error as a short rule ('must be >= 1'), with the value that broke it."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "missing":
        return _RULES[kind]
    bounds = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"), "less_than_equal": ("<=", "le"),
              "less_than": ("<", "lt")}
    if kind in bounds:
        op, key = bounds[kind]
        limit = ctx.get(key)
        rule = f"must be {op} {limit:,}" if isinstance(limit, int) else f"must be {op} {limit}"
    elif kind == "string_too_long":
        rule = f"must be at most {ctx.get('max_length')} characters"
    elif kind == "string_too_short":
        rule = "must not be empty"
    else:
        rule = _RULES.get(kind, err["msg"][0].lower() + err["msg"][1:])
    shown = repr(value)
    return f"{rule}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"


def format_errors(exc: ValidationError, where: str, *, flags: bool = False, spelled: Mapping[str, str] = {}) -> str:
    """The first error of a ValidationError as one line: '<where>: <key> <rule>' ('--key' for CLI flags).

    ``spelled`` maps a field to the key the user wrote (``batch`` for ``batches``)."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    key = loc[0] if loc else ""
    name = _flag(key) if flags else ".".join([spelled.get(key, key), *loc[1:]])
    detail = _describe(err)
    if err["type"] == "value_error" and detail.startswith(("bad ", "unknown ", "empty ", "no ")):
        return f"{where}: {name}: {detail}" if where else f"{name}: {detail}"
    return f"{where}: {name} {detail}" if where else f"{name} {detail}"


def sweep_from_table(table: Any, where: str) -> SweepSpec:
    """A ``[[sweep]]`` table of a suite file -> SweepSpec (SpecError naming file, table and key)."""
    valid = {n for n in SweepInput.model_fields} | set(_ALIASES)
    check_keys(where, table, valid, required=("models", "lengths"))
    data, spelled = dict(table), {}
    for alias, key in _ALIASES.items():
        if alias in data:
            if key in data:
                raise SpecError(f"{where}: give '{key}' or '{alias}', not both")
            data[key], spelled[key] = data.pop(alias), alias
    try:
        spec = SweepInput.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc, where, spelled=spelled)) from None
    _cross_checks(spec, where)
    return spec.to_spec()


def sweep_from_flags(**flags: Any) -> SweepSpec:
    """``ssmbench sweep``'s flags (keys as in :class:`SweepInput`) -> SweepSpec, with the suite's rules."""
    try:
        spec = SweepInput.model_validate({k: v for k, v in flags.items() if v is not None})
    except ValidationError as exc:
        raise SpecError(format_errors(exc, "", flags=True)) from None
    _cross_checks(spec, "")
    return spec.to_spec()


def _cross_checks(spec: SweepInput, where: str) -> None:
    prefix = f"{where}: " if where else ""
    try:
        check_device_dtype(spec.device, spec.dtype)
    except SpecError as exc:
        raise SpecError(prefix + str(exc)) from None
    if spec.model_options:
        check_model_options(where or "--option", spec.model_options, [m.name for m in spec.models],
                            d_model=spec.d_model, n_layers=spec.n_layers, vocab_size=spec.vocab_size)


def token_warnings(spec: SweepSpec) -> list[str]:
    """Lengths at which ``tokens`` per batch cannot hold: batch = tokens // L would be 0, so those cases run one
    sequence (L tokens) and the promise of equal tokens per batch across lengths breaks."""
    short = [n for n in spec.lengths if n > spec.tokens] if not spec.batches else []
    if not short:
        return []
    return [f"tokens per batch ({spec.tokens}) is smaller than L = {', '.join(map(str, short))}: those cases run "
            f"batch 1 (L tokens each), so tokens per batch differ across lengths; use --tokens {max(short)} or more "
            "(tokens = ... in a suite), or give --batch explicitly"]


def check_flags(**flags: tuple[Any, Any]) -> None:
    """Loose flags of a command: ``check_flags(d_model=(Width, value), ...)``; SpecError names the flag."""
    from pydantic import TypeAdapter

    for key, (kind, value) in flags.items():
        try:
            TypeAdapter(kind).validate_python(value, strict=True)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise SpecError(f"{_flag(key)} {_describe(err)}") from None


class SuiteMeta(BaseModel):
    """The ``[suite]`` table: its name and description, and the regression gate's settings (``ssmbench check``)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    description: Annotated[str, Field(max_length=2000)] = ""
    rounds: Annotated[int, Field(ge=3, le=10_000)] | None = None  # gate: rounds per case and side
    threshold: Annotated[float, Field(gt=0, lt=10, allow_inf_nan=False)] | None = None  # gate: failing slowdown


MAX_SUITE_BYTES = 1 << 20  # a suite file is a few hundred bytes; refuse to parse anything absurd


def _read_suite(p: Path) -> dict[str, Any]:
    import tomllib

    path = str(p)
    if not p.is_file():
        hint = ""
        candidate = Path("tasks") / (p.name if p.suffix else f"{p.name}.toml")
        if candidate.is_file() and candidate != p:
            hint = f"; did you mean '{candidate}'?"
        raise SpecError(f"suite file '{path}' not found{hint}")
    try:
        if p.stat().st_size > MAX_SUITE_BYTES:
            raise SpecError(f"{path}: {p.stat().st_size:,} bytes is too large for a suite file (limit 1 MiB)")
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); save the suite file as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"cannot read suite file '{path}': {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: invalid TOML: {exc}") from None


def _table_array(path: str, data: dict[str, Any], key: str) -> list[Any]:
    value = data.pop(key, [])
    if isinstance(value, dict):  # [sweep] (one table) instead of [[sweep]] (an array of tables)
        raise SpecError(f"{path}: [{key}] must be written [[{key}]] (double brackets: a suite holds a list of "
                        f"{key} tables)")
    if not isinstance(value, list):
        raise SpecError(f"{path}: '{key}' must be [[{key}]] tables, got {_kind(value)}")
    return value


def load_suite(path: str | os.PathLike[str]) -> Suite:
    """A suite file -> Suite; every [[sweep]] is validated here (SpecError naming the file, table and key).

    ``[[accuracy]]`` tables are checked to be tables here and planned (validated key by key) by
    ``ssmbench.train.plan.plan_accuracy_tables``, before any case runs.
    """
    p = Path(path)
    data = _read_suite(p)
    meta = data.pop("suite", {})
    if isinstance(meta, list):
        raise SpecError(f"{p}: [[suite]] must be written [suite] (a suite has one header table)")
    check_keys(f"{p} [suite]", meta, SuiteMeta.model_fields)
    try:
        header = SuiteMeta.model_validate(meta)
    except ValidationError as exc:
        raise SpecError(format_errors(exc, f"{p} [suite]")) from None
    sweeps_raw = _table_array(str(p), data, "sweep")
    accuracy_raw = _table_array(str(p), data, "accuracy")
    if data:
        raise SpecError(f"{p}: unknown table(s) {', '.join(data)}; expected [suite], [[sweep]], [[accuracy]]")
    name = header.name or p.stem
    sweeps = []
    for i, table in enumerate(sweeps_raw):
        spec = sweep_from_table(table, f"{p} [[sweep]] #{i + 1}")
        sweeps.append(replace(spec, name=table.get("name", name)))
    for i, table in enumerate(accuracy_raw):
        if not isinstance(table, Mapping):
            raise SpecError(f"{p} [[accuracy]] #{i + 1}: expected a table of keys, got {_kind(table)}")
    if not sweeps and not accuracy_raw:
        raise SpecError(f"{p}: no [[sweep]] or [[accuracy]] tables")
    return Suite(name=name, path=str(p), description=header.description, sweeps=tuple(sweeps),
                 accuracy=tuple(accuracy_raw), options=dict(meta))

"""Planning accuracy runs: validate ``[[accuracy]]`` tables and CLI flags, turn them into screen cases.

Suites declare ``[[accuracy]]`` tables (see :data:`TABLE_KEYS`; unset keys come from the task's calibrated protocol
in :mod:`ssmbench.train.defaults`). ``plan_accuracy`` returns the *screen*: one case per (train length, model,
lr of the grid) at the first seed; :mod:`ssmbench.train.protocol` plans the rest (grid extension, further seeds)
from the stored screen rows. ``ssmbench.train.loop.run_accuracy_case`` runs one case in the worker.
Formats, protocol and expected results: docs/tasks.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ssmbench.case import Case
from ssmbench.schema import check_keys, check_model_options
from ssmbench.spec import SpecError, check_device_dtype, parse_compile, parse_lengths, parse_models
from ssmbench.train.defaults import merge_options, task_defaults
from ssmbench.train.optim import SCHEDULES

# Every key an [[accuracy]] table (or the `ssmbench accuracy` command) accepts, with its default.
TABLE_KEYS: dict[str, Any] = {
    "task": None,  # required: a registered task (ssmbench.registry.TASKS)
    "models": None,  # required: "transformer,mamba" or a list
    "lengths": None,  # train lengths; default: the task's train_length, else its CPU lengths
    "eval_lengths": None,  # extra evaluation lengths; default: the task's lengths for extrapolation tasks
    "steps": 1500,
    "lr": None,  # a fixed lr (no grid): a number, or a table per model: { transformer = 3e-3, default = 1e-3 }
    "lr_grid": [1e-3, 3e-3, 1e-2],  # screened at the first seed, the same for every family (docs/tasks.md)
    "seeds": 3,  # seeds in all at the chosen lr (the screen's seed counts as the first)
    "metric": "accuracy",  # selection/headline metric: "accuracy" (tokens) or "seq_accuracy" (whole answers)
    "threshold": 0.9,  # a seed "reached" the task when its validation metric got there
    "eval_every": 100,  # validation cadence in steps (learning curve, early stop, best checkpoint)
    "val_examples": 256,  # validation rows at the train length (own seed stream, never the test rows)
    "batch": 64,
    "d_model": 64,  # a number, or a table per model: { transformer = 128, default = 64 }
    "n_layers": 2,
    "model_options": {},  # config fields, e.g. { head_dim = 16, mamba = { d_state = 16 } } (see _model_options)
    "params": {},  # task parameters, e.g. { num_kv_pairs = 8 }
    "warmup": 0.0,  # fraction of the steps spent in linear warm-up (its own knob; any schedule)
    "schedule": "cosine",  # after the warm-up: "cosine" (to 0 at the last step) or "constant" (the Mamba paper's)
    "weight_decay": 0.1,
    "grad_clip": 1.0,
    "eval_examples": 512,  # rows of the fixed held-out set per length
    "eval_tokens": 32768,  # evaluation batch = eval_tokens // length rows (bounds attention memory)
    "stop_at": None,  # stop early once the validation metric reaches this (checked every eval_every steps)
    "seed": 0,
    "device": "auto",
    "dtype": "float32",
    "threads": 1,  # torch threads per worker on CPU: one (two contend on a small machine); 0 = all cores
    "timeout_s": 1800.0,
    "compile": "eager",  # eager | compiled | both: torch.compile of the model's forward in every step
    "name": "",
}
DTYPES = ("float32", "float64")
METRICS = ("accuracy", "seq_accuracy")


def _check_number(where: str, key: str, value: Any, *, integer: bool, minimum: float, open_min: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if ok and math.isfinite(value):
        ok = value > minimum if open_min else value >= minimum
    if not ok:
        kind = "an integer" if integer else "a number"
        raise SpecError(f"{where}: {key} must be {kind} {'>' if open_min else '>='} {minimum:g}, got {value!r}")


def _length_list(where: str, key: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    if not isinstance(value, str):
        raise SpecError(f"{where}: {key} must be a length list such as \"64..256\" or [64, 128], got {value!r}")
    try:
        return parse_lengths(value)
    except SpecError as exc:
        raise SpecError(f"{where}: {key}: {exc}") from None


def _per_model(where: str, key: str, value: Any, models: Sequence[str], *, integer: bool = False
               ) -> dict[str, float]:
    """A number for every model, or a table ``{ transformer = 3e-3, default = 1e-3 }`` (model names or 'default')."""
    from ssmbench.registry import MODELS, UnknownName

    minimum = 1 if integer else 0
    if not isinstance(value, Mapping):
        _check_number(where, key, value, integer=integer, minimum=minimum, open_min=not integer)
        return dict.fromkeys(models, value)
    table: dict[str, Any] = {}
    for name, v in value.items():
        _check_number(where, f"{key}.{name}", v, integer=integer, minimum=minimum, open_min=not integer)
        try:
            table[name if name == "default" else MODELS.get(name).name] = v
        except UnknownName as exc:
            raise SpecError(f"{where}: {key}: {exc}") from None
    missing = [m for m in models if m not in table and "default" not in table]
    if missing:
        raise SpecError(f"{where}: {key} table has no entry for {', '.join(missing)} (add one, or a 'default')")
    return {m: table.get(m, table.get("default")) for m in models}


def _lr_grid(where: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise SpecError(f"{where}: lr_grid must be numbers such as 1e-3,3e-3,1e-2, got {value!r}") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise SpecError(f"{where}: lr_grid must be a non-empty list of learning rates, got {value!r}")
    for v in value:
        _check_number(where, "lr_grid", v, integer=False, minimum=0, open_min=True)
    return tuple(sorted({float(v) for v in value}))


def _model_options(where: str, options: Mapping[str, Any], models: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-model config options. Plain keys apply to every model that has the field (``d_state`` skips the
    transformer); a key naming a model holds options for that model only: ``{ head_dim = 16, mamba = { d_state =
    16 }, s4 = { d_state = 64 } }``. A plain key no registered model has, or a per-model key its model lacks, is an
    error (typos fail at planning, not in the worker)."""
    from ssmbench.models import config_fields
    from ssmbench.registry import MODELS

    frame = {"d_model", "n_layers", "vocab_size", "backend"}  # set by their own keys, not as model options
    fields = {m: config_fields(MODELS.load(m)) - frame for m in models}
    shared = {k: v for k, v in options.items() if not (k in MODELS and isinstance(v, Mapping))}
    own = {MODELS.get(k).name: dict(v) for k, v in options.items() if k in MODELS and isinstance(v, Mapping)}
    anywhere = set().union(*(config_fields(e.load()) for e in MODELS)) - frame  # so one table serves many runs
    unknown = sorted(set(shared) - anywhere)
    if unknown:
        raise SpecError(f"{where}: model_options {', '.join(unknown)} is no option of any model; "
                        f"known: {', '.join(sorted(anywhere))}")
    out = {}
    for m in models:
        bad = sorted(set(own.get(m, {})) - fields[m])
        if bad:
            raise SpecError(f"{where}: model_options.{m}: {m} has no option(s) {', '.join(bad)}; "
                            f"it has: {', '.join(sorted(fields[m]))}")
        out[m] = {**{k: v for k, v in shared.items() if k in fields[m]}, **own.get(m, {})}
    return out  # tables for models not in this run are ignored, so one options table can serve several runs


def task_params(task: Any, seq_len: int, overrides: Mapping[str, Any], *, evaluation: bool) -> dict[str, Any]:
    """Resolved task parameters at ``seq_len``. For copying evaluation every string has the longest length that
    fits the row (Jelassi et al. evaluate one string length at a time), so a longer eval row means longer strings."""
    params = dict(overrides)
    if evaluation and task.name == "copying":
        params = {k: v for k, v in params.items() if k not in ("min_len", "max_len")}
        longest = task.params(seq_len, **params)["max_len"]
        params.update(min_len=longest, max_len=longest)
    return task.params(seq_len, **params)


def _check_scalars(where: str, t: Mapping[str, Any]) -> None:
    """The numeric and enumerated keys of an [[accuracy]] table (defaults filled in)."""
    for key in ("steps", "batch", "n_layers", "eval_examples", "eval_tokens", "seeds", "eval_every", "val_examples"):
        _check_number(where, key, t[key], integer=True, minimum=1)
    _check_number(where, "seed", t["seed"], integer=True, minimum=0)
    _check_number(where, "threads", t["threads"], integer=True, minimum=0)
    for key in ("weight_decay", "grad_clip"):
        _check_number(where, key, t[key], integer=False, minimum=0)
    _check_number(where, "timeout_s", t["timeout_s"], integer=False, minimum=0, open_min=True)
    if not (isinstance(t["warmup"], (int, float)) and not isinstance(t["warmup"], bool) and 0 <= t["warmup"] < 1):
        raise SpecError(f"{where}: warmup is a fraction of the steps in [0, 1), got {t['warmup']!r}")
    if t["schedule"] not in SCHEDULES:
        raise SpecError(f"{where}: schedule must be one of {', '.join(SCHEDULES)}, got {t['schedule']!r}")
    if t["stop_at"] is not None:
        _check_number(where, "stop_at", t["stop_at"], integer=False, minimum=0, open_min=True)
    _check_number(where, "threshold", t["threshold"], integer=False, minimum=0, open_min=True)
    if t["metric"] not in METRICS:
        raise SpecError(f"{where}: metric must be one of {', '.join(METRICS)}, got {t['metric']!r}")
    if t["dtype"] not in DTYPES:
        raise SpecError(f"{where}: accuracy runs train in {' or '.join(DTYPES)}, got dtype {t['dtype']!r}")
    try:
        check_device_dtype(t["device"], t["dtype"])
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _resolved_table(table: Mapping[str, Any], where: str) -> tuple[Any, dict[str, Any]]:
    """(task, table with the task's calibrated protocol and the generic defaults filled in)."""
    from ssmbench.registry import TASKS, UnknownName

    check_keys(where, table, TABLE_KEYS, required=("task", "models"))  # the shared schema's key check
    try:
        task = TASKS.load(str(table["task"]))
    except UnknownName as exc:
        raise SpecError(f"{where}: {exc}") from None
    calibrated = task_defaults(task.name)
    given = {k: v for k, v in table.items() if v is not None}
    t = {**TABLE_KEYS, **calibrated, **given}
    for key in ("model_options", "params"):
        if not isinstance(t[key], Mapping):
            raise SpecError(f"{where}: {key} must be a table, e.g. {{ d_state = 16 }}")
    t["model_options"] = merge_options(dict(calibrated.get("model_options", {})), dict(given.get("model_options", {})))
    t["params"] = {**calibrated.get("params", {}), **given.get("params", {})}
    return task, t


def plan_accuracy(table: Mapping[str, Any], where: str = "accuracy") -> list[Case]:
    """Screen cases of one [[accuracy]] table: one per (train length, model, lr) at the first seed (a fixed
    ``lr`` makes a one-point grid). Raises SpecError on bad input."""
    from ssmbench.spec import resolve_device

    task, t = _resolved_table(table, where)
    models_text = ",".join(t["models"]) if isinstance(t["models"], (list, tuple)) else str(t["models"])
    try:
        models = parse_models(models_text)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    default_train = (task.train_length,) if task.train_length else task.lengths
    lengths = _length_list(where, "lengths", t["lengths"]) if t.get("lengths") is not None else default_train
    if t.get("eval_lengths") is not None:
        eval_lengths = _length_list(where, "eval_lengths", t["eval_lengths"])
    else:
        eval_lengths = task.lengths if task.train_length else ()
    _check_scalars(where, t)
    names = [m.name for m in models]
    if t["lr"] is not None:  # a fixed lr per family: a one-point grid, nothing to select
        fixed = _per_model(where, "lr", t["lr"], names)
        grids = {m: (float(fixed[m]),) for m in names}
    else:
        grid = _lr_grid(where, t["lr_grid"])
        grids = dict.fromkeys(names, grid)
    widths = _per_model(where, "d_model", t["d_model"], names, integer=True)
    model_options = _model_options(where, t["model_options"], names)
    for m in names:  # option values against the config fields' types and ranges (the shared schema's rule)
        check_model_options(f"{where}: model_options", model_options[m], [m], d_model=int(widths[m]),
                            n_layers=t["n_layers"])
    params = {**task.defaults, **t["params"]}
    vocab = None
    for seq_len in sorted(set(lengths) | set(eval_lengths)):
        try:
            if seq_len in lengths:
                vocab = task.vocab_size(task_params(task, seq_len, t["params"], evaluation=False))
            task_params(task, seq_len, t["params"], evaluation=True)
        except ValueError as exc:
            raise SpecError(f"{where}: at length {seq_len}: {exc}") from None
    from ssmbench.models import make_config

    for m in models:  # build each config now: a bad option value fails here, not in the worker an hour later
        try:
            make_config(m.name, backend=m.backend, d_model=widths[m.name], n_layers=t["n_layers"],
                        vocab_size=vocab or 2, options=model_options[m.name], strict=True)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"{where}: model {m.name}: {exc}") from None
    try:
        device = resolve_device(t["device"])
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    common = (("eval_examples", t["eval_examples"]), ("eval_tokens", t["eval_tokens"]),
              ("eval_every", t["eval_every"]), ("grad_clip", float(t["grad_clip"])), ("metric", t["metric"]),
              ("params", tuple(sorted(params.items()))), ("role", "screen"), ("schedule", t["schedule"]),
              ("seeds", t["seeds"]), ("steps", t["steps"]), ("stop_at", t["stop_at"]),
              ("threshold", float(t["threshold"])), ("val_examples", t["val_examples"]),
              ("warmup", float(t["warmup"])), ("weight_decay", float(t["weight_decay"])))
    try:
        compile_modes = parse_compile(str(t["compile"]))
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    cases = []
    for seq_len in lengths:
        evals = tuple(sorted(set(eval_lengths) | {seq_len}))
        for m, compile_mode in itertools.product(models, compile_modes):
            for lr in grids[m.name]:
                options = tuple(sorted((*common, ("eval_lengths", evals), ("lr", lr),
                                        ("lr_grid", grids[m.name]))))
                cases.append(Case(kind="accuracy", model=m.name, backend=m.backend, mode="train", device=device,
                                  dtype=t["dtype"], batch=t["batch"], seq_len=seq_len, d_model=int(widths[m.name]),
                                  n_layers=t["n_layers"], vocab_size=vocab or task.vocab_size(params),
                                  model_options=tuple(sorted(model_options[m.name].items())),
                                  threads=t["threads"], seed=t["seed"], task=task.name, options=options,
                                  timeout_s=float(t["timeout_s"]), compile=compile_mode))
    return cases


def plan_accuracy_tables(tables: Iterable[Mapping[str, Any]], where: str = "suite") -> list[Case]:
    """Cases of a suite's raw [[accuracy]] tables (``ssmbench run``); SpecError names the table at fault."""
    return [c for i, table in enumerate(tables) for c in plan_accuracy(table, f"{where} [[accuracy]] #{i + 1}")]
